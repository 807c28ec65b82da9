"""The `fiduciary` command: a thin adapter over the library.

Exit codes: 0 ok, 1 invalid policy (or a failed check), 2 usage error.
"""

from __future__ import annotations

import json
import os
import sys
import time

# The CLI loads no pydantic plugins; looking them up scans every installed package's
# metadata (~15 ms of a 300 ms budget). Set the variable yourself to override.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console

from fiduciary.cli_common import store_settings
from fiduciary.cli_web import Actor
from fiduciary.policy import (
    CompiledPolicy,
    LoadedPolicy,
    PolicyError,
    Problem,
    compile_policy,
    load_policy_text,
)
from fiduciary.policy import load_policy as _load

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fiduciary.audit import AuditLog
    from fiduciary.config import Settings
    from fiduciary.vault.keyring import Keyring

EXIT_INVALID = 1
EXIT_USAGE = 2


def _root() -> typer.Typer:
    return typer.Typer(
        name="fiduciary",
        help="Privacy promises as code: check, render and enforce one policy.yaml.",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
    )


app = _root()
policy_app = typer.Typer(
    help="Check, render and compare policy.yaml files; move them to and from fideslang; draft one "
    "from a privacy policy's text.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")
keys_app = typer.Typer(
    help="Keys: the keyring (init, rotate) and API keys (create, list, revoke).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(
    help="The audit trail: verify the chain and its signed checkpoints.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


def _mount_web() -> None:
    from fiduciary import cli_web

    app.command("serve")(cli_web.serve)
    keys_app.command("create")(cli_web.keys_create)
    keys_app.command("list")(cli_web.keys_list)
    keys_app.command("revoke")(cli_web.keys_revoke)
    app.add_typer(cli_web.users_app, name="users")
    from fiduciary import cli_demo  # Typer and Rich only: the runtime loads when it runs

    app.command("demo")(cli_demo.demo)


_mount_web()


def _mount_ledgers() -> None:
    # Typer and Rich only at import (the runtime loads inside each command): mounted always.
    from fiduciary import cli_ledgers

    policy_app.command("publish")(cli_ledgers.policy_publish)
    app.add_typer(cli_ledgers.disclosures_app, name="disclosures")
    app.add_typer(cli_ledgers.breach_app, name="breach")


# Commands whose modules import the whole runtime (SQLAlchemy, cryptography, jobs) are
# mounted only when the command line may need them, so that `fiduciary policy check`
# keeps its start-up time (docs/benchmarks.md).
_LIGHT = frozenset({"policy", "keys", "audit", "worker", "example", "serve", "users"})


def _mount_heavy(argv: list[str]) -> None:
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in _LIGHT:
        return
    from fiduciary.cli_request import request_app

    app.add_typer(request_app, name="request")
    from fiduciary.cli_screening import screening_app

    app.add_typer(screening_app, name="screening")
    from fiduciary.cli_retention import retention_app

    app.add_typer(retention_app, name="retention")


out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _print_problem(p: Problem) -> None:
    style = "red" if p.severity == "error" else "yellow"
    err.print(f"[bold]{p.location()}[/bold]: [{style}]{p.severity}[/{style}]: {p.message}", markup=True)
    if p.path:
        err.print(f"    at {p.path_text()}", markup=False)
    if p.suggestion:
        err.print(f"    hint: {p.suggestion}", markup=False)


def _fail_usage(message: str) -> NoReturn:
    err.print(f"[red]error[/red]: {message}")
    raise typer.Exit(EXIT_USAGE)


def _require_files(files: list[Path]) -> None:
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        _fail_usage(f"no such file: {', '.join(missing)}")


def _load_or_exit(path: Path) -> tuple[LoadedPolicy, CompiledPolicy]:
    try:
        loaded = _load(path)
    except PolicyError as exc:
        for p in exc.problems:
            _print_problem(p)
        err.print(f"[red]{path}: invalid policy ({len(exc.errors)} error(s))[/red]")
        raise typer.Exit(EXIT_INVALID) from None
    for w in loaded.warnings:
        _print_problem(w)
    return loaded, compile_policy(loaded)


def _example_name(path: Path) -> str:
    """examples/filelocker/policy.yaml -> filelocker; my-policy.yaml -> my-policy."""
    return path.parent.name if path.stem == "policy" and path.parent.name else path.stem


PolicyFiles = Annotated[
    list[Path],
    typer.Argument(help="One or more policy.yaml files.", show_default=False, metavar="POLICY.yaml..."),
]
OutDir = Annotated[Path, typer.Option("--output", "-o", help="Directory to write into (created if missing).")]


@policy_app.command("check")
def policy_check(
    files: PolicyFiles,
    as_json: Annotated[bool, typer.Option("--json", help="Print problems as JSON.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as errors.")] = False,
) -> None:
    """Check policy files: syntax, schema, taxonomy keys, references, transfers, retention.

    Every problem names file:line:column, the offending value and, where it can, a fix.
    """
    _require_files(files)
    report: list[dict[str, object]] = []
    failed = False
    for path in files:
        started = time.perf_counter()
        try:
            loaded = _load(path)
            problems = loaded.warnings
            cp = compile_policy(loaded)
            ok = not (strict and problems)
            summary = (
                f"{len(cp.purposes)} purposes, {len(cp.declared_categories)} categories, "
                f"{len(cp.recipients)} recipients, {len(cp.collections)} collections"
            )
        except PolicyError as exc:
            problems, ok, summary = exc.problems, False, ""
        ms = (time.perf_counter() - started) * 1000
        failed |= not ok
        if as_json:
            report.append({"file": str(path), "ok": ok, "problems": [p.to_dict() for p in problems]})
            continue
        for p in problems:
            _print_problem(p)
        if ok:
            out.print(f"[green]ok[/green] {path}: {summary} ({ms:.0f} ms)")
        else:
            n = sum(1 for p in problems if p.severity == "error" or strict)
            err.print(f"[red]invalid[/red] {path}: {n} error(s)")
    if as_json:
        print(json.dumps(report, indent=2))
    raise typer.Exit(EXIT_INVALID if failed else 0)


@policy_app.command("render")
def policy_render(
    files: PolicyFiles,
    output: OutDir = Path("out"),
    fmt: Annotated[str, typer.Option("--format", "-f", help="html, md or both.", show_default=True)] = "both",
) -> None:
    """Render the public privacy notice (HTML and Markdown) of each policy."""
    from fiduciary.policy.render import render_notice_html, render_notice_markdown

    if fmt not in ("html", "md", "both"):
        _fail_usage(f"--format must be html, md or both, not {fmt!r}")
    _require_files(files)
    for path in files:
        _, cp = _load_or_exit(path)
        target = output / _example_name(path) if len(files) > 1 else output
        target.mkdir(parents=True, exist_ok=True)
        written = []
        if fmt in ("html", "both"):
            (target / "notice.html").write_text(render_notice_html(cp), encoding="utf-8")
            written.append(target / "notice.html")
        if fmt in ("md", "both"):
            (target / "notice.md").write_text(render_notice_markdown(cp), encoding="utf-8")
            written.append(target / "notice.md")
        for w in written:
            out.print(f"wrote {w}")


@policy_app.command("record")
def policy_record(
    files: PolicyFiles,
    output: OutDir = Path("out"),
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, json or both.")] = "both",
) -> None:
    """Write the GDPR Art. 30 record of processing activities (CSV and JSON)."""
    from fiduciary.policy.record import record_csv, record_json

    if fmt not in ("csv", "json", "both"):
        _fail_usage(f"--format must be csv, json or both, not {fmt!r}")
    _require_files(files)
    for path in files:
        _, cp = _load_or_exit(path)
        target = output / _example_name(path) if len(files) > 1 else output
        target.mkdir(parents=True, exist_ok=True)
        if fmt in ("csv", "both"):
            (target / "record.csv").write_text(record_csv(cp), encoding="utf-8")
            out.print(f"wrote {target / 'record.csv'}")
        if fmt in ("json", "both"):
            data = json.dumps(record_json(cp), indent=2, ensure_ascii=False)
            (target / "record.json").write_text(data + "\n", encoding="utf-8")
            out.print(f"wrote {target / 'record.json'}")


@policy_app.command("diff")
def policy_diff(
    old: Annotated[Path, typer.Argument(help="The published version.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="The proposed version.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the changes as JSON.")] = False,
) -> None:
    """Compare two versions and classify each change as material or not (PUT-3, PLO-17).

    Material changes (new purpose for existing data, new recipient, new category, longer
    retention, weaker basis ...) need people's acceptance before they apply to their data.
    """
    from fiduciary.policy.diff import diff_policies

    _require_files([old, new])
    _, a = _load_or_exit(old)
    _, b = _load_or_exit(new)
    d = diff_policies(a, b)
    if as_json:
        print(json.dumps(d.to_dict(), indent=2, ensure_ascii=False))
    else:
        out.print(d.to_text(), markup=False)


@policy_app.command("export")
def policy_export(
    file: Annotated[Path, typer.Argument(help="The policy.yaml to export.", show_default=False)],
    fideslang: Annotated[
        bool, typer.Option("--fideslang", help="Write fideslang System, Dataset, Organization.")
    ] = False,
    output: OutDir = Path("out/fideslang"),
) -> None:
    """Export a policy as fideslang manifests that Fides and the fideslang package accept."""
    import yaml

    from fiduciary.policy.interop import export_fideslang

    if not fideslang:
        _fail_usage("choose an export format: --fideslang")
    _require_files([file])
    _, cp = _load_or_exit(file)
    manifests = export_fideslang(cp)
    output.mkdir(parents=True, exist_ok=True)
    for kind, resources in manifests.items():
        if not resources:
            continue
        target = output / f"{kind}.yml"
        target.write_text(
            yaml.safe_dump({kind: resources}, sort_keys=False, allow_unicode=True),
            encoding="utf-8",
        )
        out.print(f"wrote {target} ({len(resources)} {kind})")


@policy_app.command("import")
def policy_import(
    files: Annotated[list[Path], typer.Argument(help="fideslang manifest files (YAML).", show_default=False)],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the draft policy.yaml.")
    ] = Path("policy.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Draft a policy.yaml from fideslang manifests (System, Dataset, Organization)."""
    from fiduciary.policy.interop import import_fideslang

    _require_files(files)
    if output.exists() and not force:
        _fail_usage(f"{output} exists; pass --force to overwrite it")
    try:
        text = import_fideslang(files)
    except PolicyError as exc:
        for p in exc.problems:
            _print_problem(p)
        raise typer.Exit(EXIT_INVALID) from None
    output.write_text(text, encoding="utf-8")
    out.print(f"wrote {output}; review the TODO comments, then run: fiduciary policy check {output}")


@policy_app.command("import-text")
def policy_import_text(
    file: Annotated[
        Path, typer.Argument(help="A privacy policy: plain text, Markdown or HTML.", show_default=False)
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the draft policy.yaml here (default: print it)."),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the review page (HTML) here.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    encoding: Annotated[
        str | None,
        typer.Option("--encoding", help="The file's text encoding (default: as declared, else UTF-8)."),
    ] = None,
) -> None:
    """Draft a policy.yaml from a privacy policy's text, every element under its passage.

    What the text does not say is a TODO that `policy check` reports (docs/importer.md)."""
    from rich.markup import escape

    from fiduciary.cli_common import refused, usage

    name = escape(str(file))
    if not file.exists():
        usage(f"no such file: {name}")
    if not file.is_file():
        usage(f"{name} is not a file")
    try:
        with file.open("rb") as fh:
            head = fh.read(8192)
    except OSError as exc:
        usage(f"cannot read {name}: {escape(exc.strerror or str(exc))}")
    # PDF, zip (docx, odt) and OLE (doc) files may have no NUL byte in their first bytes.
    if b"\0" in head or head.startswith((b"%PDF-", b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        usage(f"{name} is a binary file, not a privacy policy's text: convert it to text or HTML")
    for target in (output, html):
        if target is None:
            continue
        if target.is_dir():
            usage(f"{escape(str(target))} is a directory; name the file to write")
        if target.exists() and not force:
            usage(f"{escape(str(target))} exists; pass --force to overwrite it")
    from fiduciary.importer.draft import build_draft
    from fiduciary.importer.extract import extract
    from fiduciary.importer.text import PolicyTextError

    try:
        extraction = extract(file, source=file.name, encoding=encoding)
        draft = build_draft(extraction)
    except PolicyTextError as exc:  # undecodable text: the message names the file
        refused(escape(str(exc)))
    except (ValueError, OSError) as exc:  # an extraction the draft cannot read
        refused(f"{name}: {escape(str(exc))}")
    try:
        # The draft is meant to pass the checker; if it does not, write nothing.
        loaded = load_policy_text(draft.yaml, str(output or "<draft>"))
    except PolicyError as exc:
        for p in exc.problems:
            _print_problem(p)
        refused(f"{name}: the draft does not pass the checker (a bug in the importer)")
    summary = (
        f"{len(extraction.claims)} claims, {sum(c.needs_review for c in extraction.claims)} to review, "
        f"{len(loaded.policy.todo)} to do"
    )
    if html is not None:
        from fiduciary.importer.review import review_html

        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(review_html(extraction, draft), encoding="utf-8")
        err.print(f"wrote {html}", markup=False)
    if output is None:
        sys.stdout.write(draft.yaml)
        err.print(f"{file}: {summary}", markup=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(draft.yaml, encoding="utf-8")
    out.print(f"wrote {output}: {summary}; then run: fiduciary policy check {output}", markup=False)


_mount_ledgers()  # after the commands above, so `policy --help` lists check first


# --------------------------------------------------------------------------- stores & keys

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: FIDUCIARY_DATA_DIR or ./fiduciary-data)."),
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Data store URL (default: FIDUCIARY_DATABASE_URL).")
]
KeysUrl = Annotated[
    str | None,
    typer.Option("--keys-database-url", help="Key store URL (default: FIDUCIARY_KEYS_DATABASE_URL)."),
]
KeyringFile = Annotated[
    Path | None, typer.Option("--keyring", help="Keyring file (default: DATA_DIR/keyring.json).")
]


def _keyring_or_exit(s: Settings) -> Keyring:
    from fiduciary.vault.keyring import Keyring, KeyringError

    try:
        if s.keyring:
            return Keyring.from_json(s.keyring, "FIDUCIARY_KEYRING")
        return Keyring.load(s.resolved_keyring_file())
    except KeyringError as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(EXIT_INVALID) from None


def _opened(s: Settings, store: Literal["data", "keys"]) -> Engine:
    """The data or key store of these settings, migrated."""
    from fiduciary.store import make_engine, upgrade

    if store == "data":
        engine = make_engine(s.resolved_database_url())
    else:  # the key store overwrites what it deletes (a destroyed key must not linger)
        engine = make_engine(s.resolved_keys_database_url(), secure_delete=True)
    upgrade(engine, store)
    return engine


def _audit_log(s: Settings, data: Engine, ring: Keyring) -> AuditLog:
    from fiduciary.audit import AuditLog

    return AuditLog(data, ring, checkpoint_every=s.checkpoint_every)


@keys_app.command("init")
def keys_init(data_dir: DataDir = None, keyring: KeyringFile = None) -> None:
    """Create a new keyring file (mode 0600). Refuses to overwrite one."""
    from fiduciary.vault.keyring import Keyring

    path = store_settings(data_dir, keyring=keyring).resolved_keyring_file()
    if path.exists():
        _fail_usage(f"{path} exists; a new keyring would make every encrypted value unreadable")
    Keyring.generate().save(path)
    out.print(f"wrote {path}: back it up apart from the databases")


@keys_app.command("rotate")
def keys_rotate(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keys_database_url: KeysUrl = None,
    keyring: KeyringFile = None,
    drop_old: Annotated[
        bool, typer.Option("--drop-old", help="Remove KEKs no key uses any more from the keyring.")
    ] = False,
    actor: Actor = "cli",
) -> None:
    """Add a key-encryption key and re-wrap every data key under it; the data is not touched.

    The keyring with both keys is saved first, so an interrupted rotation can be run again.
    """
    from fiduciary.vault.rotate import rotate_keys

    s = store_settings(data_dir, database_url, keys_database_url, keyring)
    if s.keyring:
        _fail_usage("the keyring comes from FIDUCIARY_KEYRING; rotate a keyring file instead")
    path = s.resolved_keyring_file()
    ring = _keyring_or_exit(s)
    keys = _opened(s, "keys")
    new = ring.with_new_kek()
    new.save(path)
    done, usage = rotate_keys(keys, ring, new)
    out.print(f"re-wrapped {done} data keys under {new.active_kek}; keys per KEK: {usage}")
    unused: list[str] = []
    if drop_old:
        unused = [k for k in new.keks if k != new.active_kek and usage.get(k, 0) == 0]
        new.without_keks_except(set(new.keks) - set(unused)).save(path)
        out.print(f"dropped unused KEKs: {', '.join(unused) or 'none'}")
    keys.dispose()
    data = _opened(s, "data")
    detail = {"kek": new.active_kek, "rewrapped": done, "dropped": unused}
    _audit_log(s, data, new).append(None, actor=actor, action="keys.rotate", detail=detail)
    data.dispose()


@keys_app.command("reconcile")
def keys_reconcile(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keys_database_url: KeysUrl = None,
    keyring: KeyringFile = None,
    actor: Actor = "cli",
) -> None:
    """After restoring the key store from a backup: destroy again the data keys of subjects
    the data store says are erased.

    A key restored from before an erasure makes that person's data readable again in every
    backup of the data store. Keys whose subject the data store does not have are counted
    and left alone. Safe to run at any time; recorded in the audit trail.
    """
    from fiduciary.vault.reconcile import reconcile_keys

    s = store_settings(data_dir, database_url, keys_database_url, keyring)
    ring = _keyring_or_exit(s)
    data, keys = _opened(s, "data"), _opened(s, "keys")
    done = reconcile_keys(data, keys)
    _audit_log(s, data, ring).append(None, actor=actor, action="keys.reconcile", detail=done.detail())
    data.dispose()
    keys.dispose()
    out.print(
        f"looked at {done.keys} data keys: destroyed {done.destroyed} of erased subjects again; "
        f"{done.without_subject} belong to no subject of the data store (kept)"
    )


@audit_app.command("verify")
def audit_verify(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keyring: KeyringFile = None,
) -> None:
    """Recompute the hash chain and check every signed checkpoint.

    Names each edited, deleted, reordered or inserted entry by its sequence number.
    Exit 0 when the trail is intact, 1 when it is not.
    """
    s = store_settings(data_dir, database_url, None, keyring)
    ring = _keyring_or_exit(s)
    data = _opened(s, "data")
    report = _audit_log(s, data, ring).verify(ring.verify_key())
    data.dispose()
    (out if report.ok else err).print(report.to_text(), markup=False)
    raise typer.Exit(0 if report.ok else EXIT_INVALID)


example_app = typer.Typer(
    help="The example services' app databases: create them with generated data.", no_args_is_help=True
)
app.add_typer(example_app, name="example")


@example_app.command("create")
def example_create(
    name: Annotated[str, typer.Argument(help="filelocker, social, projects, dataplatform or voiceapi.")],
    database_url: Annotated[
        str, typer.Option("--database-url", help="Where to create the app's tables (SQLAlchemy URL).")
    ],
    size: Annotated[int, typer.Option(help="How many people (subjects) to generate.", min=1)] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same rows.")] = 0,
) -> None:
    """Create an example service's database and fill it with deterministic generated data."""
    from fiduciary.examples import example_dir, load_example_app
    from fiduciary.store import make_engine

    try:
        example_dir(name)
    except (FileNotFoundError, LookupError) as exc:
        _fail_usage(str(exc))
    module = load_example_app(name)
    engine = make_engine(database_url)
    counts = module.create(engine, size, seed)
    engine.dispose()
    rows = sum(counts.values())
    out.print(f"created {name} at {database_url}: {rows:,} rows in {len(counts)} tables")


@app.command("worker")
def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once in this worker.")] = 1,
) -> None:
    """Run a Celery worker for jobs: rights requests and retention sweeps (needs FIDUCIARY_BROKER_URL)."""
    from fiduciary.jobs import start_worker

    s = store_settings()
    if not s.broker_url:
        _fail_usage("no broker: set FIDUCIARY_BROKER_URL to redis://... or amqp://...")
    start_worker(s, concurrency, imports=["fiduciary.requests.runner", "fiduciary.retention"])


def _group_alone(argv: list[str]) -> typer.Typer:
    """The tree to run. Typer builds every command of the tree before it runs one (75 ms of
    `fiduciary policy check`'s 300 ms budget on a slow day); a command line that names a
    group runs under a root holding that group alone, which gives the same usage lines,
    help, errors and exit codes. Anything else (no group, top-level help) gets all."""
    first = next((a for a in argv if not a.startswith("-")), None)
    for group in app.registered_groups:
        if group.name == first and group.typer_instance is not None:
            root = _root()
            root.add_typer(group.typer_instance, name=group.name)
            return root
    return app


def _database_trouble(exc: BaseException) -> str | None:
    """What to tell a person whose database URL does not parse, names no installed driver,
    or reaches no server; None for anything else. SQLAlchemy is looked up, not imported:
    a command that never opened a store cannot have failed in one."""
    sa: Any = sys.modules.get("sqlalchemy.exc")
    if sa is None:
        return None
    if isinstance(exc, sa.ArgumentError):  # includes NoSuchModuleError (unknown scheme)
        return f"database URL: {exc}"
    # Operational: refused, unreachable, locked, shutting down. Not ProgrammingError or
    # IntegrityError: those are our bugs, and their traceback is what fixes them.
    if isinstance(exc, (sa.OperationalError, sa.InterfaceError)):
        first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        return f"the database refused or could not be reached: {first}"
    return None


def main() -> None:
    _mount_heavy(sys.argv[1:])
    try:
        _group_alone(sys.argv[1:])(prog_name="fiduciary")
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)
    except Exception as exc:
        message = _database_trouble(exc)
        if message is None:
            raise
        err.print(f"[red]error[/red]: {message}", highlight=False)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":  # pragma: no cover
    main()
