"""`fiduciary screening ...`: upload screening (PUT-9) from the command line (a thin adapter).

    fiduciary screening load ncmec-md5.txt --name NCMEC [--algorithm md5] [--skip-bad]
    fiduciary screening lists
    fiduciary screening check upload.bin [--digest HEX]
    fiduciary screening matches | reports [--status queued]
    fiduciary screening send
    fiduciary screening destroy <match id>

Lists are parsed once into binary caches in ``<screening dir>/lists`` (default
``DATA_DIR/screening``), which the screener maps at start-up. Exit status 1 for a refusal
(bad list lines, a match found by ``check``, a report not sent), 2 for a usage error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fiduciary.cli_common import (
    EXIT_REFUSED,
    ActorOpt,
    DatabaseOpt,
    DataDirOpt,
    KeysDatabaseOpt,
    PolicyOpt,
    err,
    out,
    settings,
)
from fiduciary.cli_common import (
    refused as _refused,
)
from fiduciary.cli_common import (
    usage as _usage,
)
from fiduciary.config import Settings
from fiduciary.screening import (
    CACHE_SUFFIX,
    HashList,
    HashListError,
    HashLists,
    MatchRecord,
    ReportRecord,
    Screener,
    ScreeningError,
    load_hash_list,
)
from fiduciary.screening.lists import ALGORITHMS, normalize_algorithm

screening_app = typer.Typer(
    help="Upload screening: load hash lists, check files, follow matches and send their reports.",
    no_args_is_help=True,
)


ScreeningDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--screening-dir",
        help="Hash-list caches and quarantine (env FIDUCIARY_SCREENING_DIR; default DATA_DIR/screening).",
        show_default=False,
    ),
]


def _lists_dir(s: Settings) -> Path:
    return s.resolved_screening_dir() / "lists"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name).strip("-.") or "list"


@contextmanager
def _screener(s: Settings) -> Iterator[Screener]:
    from fiduciary.core import Fiduciary
    from fiduciary.policy import PolicyError

    if s.policy is None:
        _usage("no policy: give --policy or set FIDUCIARY_POLICY")
    if not Path(s.policy).is_file():
        _usage(f"no such policy file: {s.policy}")
    try:
        lists = HashLists.open_dir(_lists_dir(s))
        fid = Fiduciary.open(s.policy, settings=s)
    except PolicyError as exc:
        _refused(f"the policy {s.policy} has errors: {exc}")
    except HashListError as exc:
        _refused(str(exc))
    try:
        yield Screener.from_fiduciary(fid, lists, s)
    except ScreeningError as exc:
        _refused(str(exc))
    finally:
        fid.close()


@screening_app.command("load")
def load(
    files: Annotated[list[Path], typer.Argument(help="Hash-list text files (hex per line, or CSV).")],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="The list's name (default: the first file's name).")
    ] = None,
    algorithm: Annotated[
        list[str] | None,
        typer.Option("--algorithm", "-a", help="Keep only this algorithm: md5, sha1, sha256 (repeatable)."),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip bad lines (each is listed) instead of refusing the file.")
    ] = False,
    data_dir: DataDirOpt = None,
    screening_dir: ScreeningDirOpt = None,
) -> None:
    """Parse hash lists into a binary cache that the screener maps at start-up.

    A bad line refuses the load, naming each one as file:line; nothing changes. A list of
    the same name is replaced.
    """
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        _usage(f"no such file: {', '.join(missing)}")
    try:
        algorithms = [normalize_algorithm(a) for a in algorithm] if algorithm else None
    except ValueError as exc:
        _usage(f"--algorithm: {exc}")
    list_name = name or files[0].stem
    s = settings(data_dir=data_dir, screening_dir=screening_dir)
    started = time.perf_counter()
    try:
        hl, report = load_hash_list(list_name, files, algorithms=algorithms, skip_bad=skip_bad)
    except HashListError as exc:
        _refused(str(exc))
    for p in report.problems:
        err.print(f"[yellow]skipped[/yellow] {p}", markup=True)
    if report.bad_lines > len(report.problems):
        err.print(f"[yellow]skipped[/yellow] ... {report.bad_lines - len(report.problems):,} more bad lines")
    target = hl.save(_lists_dir(s) / f"{_slug(hl.name)}{CACHE_SUFFIX}")
    took = time.perf_counter() - started
    for alg, hs in hl.sets.items():
        dropped = report.added.get(alg, 0) - hs.count
        extra = f" ({dropped:,} duplicates dropped)" if dropped else ""
        out.print(f"{hl.name}: {alg} {hs.count:,} digests{extra}")
    out.print(f"wrote {target} ({target.stat().st_size / 2**20:.1f} MiB) in {took:.1f} s")


@screening_app.command("lists")
def lists_(
    as_json: Annotated[bool, typer.Option("--json", help="Print the lists as JSON.")] = False,
    data_dir: DataDirOpt = None,
    screening_dir: ScreeningDirOpt = None,
) -> None:
    """The loaded hash lists: algorithms, digest counts, sources."""
    s = settings(data_dir=data_dir, screening_dir=screening_dir)
    try:
        loaded = HashLists.open_dir(_lists_dir(s))
    except HashListError as exc:
        _refused(str(exc))
    rows: list[dict[str, Any]] = [
        {
            "name": hl.name,
            "digests": {a: hs.count for a, hs in hl.sets.items()},
            "sources": hl.sources,
            "created_at": hl.created_at.isoformat(),
            "file": str(hl.path),
        }
        for hl in loaded
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(f"no hash list in {_lists_dir(s)}; load one with `fiduciary screening load`")
        return
    table = Table("name", "digests", "sources", "loaded")
    for r in rows:
        counts = ", ".join(f"{a} {n:,}" for a, n in r["digests"].items())
        table.add_row(r["name"], counts, ", ".join(r["sources"]), r["created_at"][:19].replace("T", " "))
    out.print(table)


@screening_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The list's name.")],
    data_dir: DataDirOpt = None,
    screening_dir: ScreeningDirOpt = None,
) -> None:
    """Remove a hash list (its cache file)."""
    s = settings(data_dir=data_dir, screening_dir=screening_dir)
    for path in sorted(_lists_dir(s).glob(f"*{CACHE_SUFFIX}")):
        try:
            hl = HashList.open(path, verify=False)
        except HashListError:
            continue
        if hl.name == name:
            path.unlink()
            out.print(f"removed {name} ({path})")
            return
    _refused(f"no hash list named {name!r} in {_lists_dir(s)}")


@screening_app.command("check")
def check(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files to check.", show_default=False)] = None,
    digest: Annotated[
        list[str] | None, typer.Option("--digest", "-d", help="A hex digest to look up (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print verdicts as JSON.")] = False,
    data_dir: DataDirOpt = None,
    screening_dir: ScreeningDirOpt = None,
) -> None:
    """Check files (or digests) against the lists; nothing is recorded. Exit 1 on a match."""
    if not paths and not digest:
        _usage("give files to check, or --digest HEX")
    missing = [str(p) for p in paths or [] if not p.is_file()]
    if missing:
        _usage(f"no such file: {', '.join(missing)}")
    by_length = {2 * w: a for a, w in ALGORITHMS.items()}
    lookups: list[tuple[str, dict[str, bytes]]] = []
    for d in digest or []:
        h = d.strip().lower()
        if len(h) not in by_length:
            _usage(f"--digest {d!r}: 32 (MD5), 40 (SHA-1) or 64 (SHA-256) hex digits expected")
        try:
            lookups.append((h, {by_length[len(h)]: bytes.fromhex(h)}))
        except ValueError:
            _usage(f"--digest {d!r}: not hexadecimal")
    s = settings(data_dir=data_dir, screening_dir=screening_dir)
    try:
        loaded = HashLists.open_dir(_lists_dir(s))
    except HashListError as exc:
        _refused(str(exc))
    if not len(loaded):
        _refused(f"no hash list in {_lists_dir(s)}; load one with `fiduciary screening load`")
    report: list[dict[str, Any]] = []
    for p in paths or []:
        v = loaded.check(p)
        report.append({"file": str(p), "size": v.size, "digests": dict(v.digests), "matches": v.matches})
    for h, ds in lookups:
        report.append({"digest": h, "matches": loaded.lookup(ds)})
    matched = any(r["matches"] for r in report)
    if as_json:
        for r in report:
            r["matches"] = [m.to_dict() for m in r["matches"]]
        print(json.dumps(report, indent=2))
    else:
        for r in report:
            what = r.get("file") or r["digest"]
            if r["matches"]:
                found = "; ".join(f"{m.list} ({m.algorithm} {m.digest})" for m in r["matches"])
                out.print(f"[red]MATCH[/red] {what}: {found}", markup=True)
            else:
                out.print(f"[green]clean[/green] {what}", markup=True)
    raise typer.Exit(EXIT_REFUSED if matched else 0)


@screening_app.command("matches")
def matches(
    limit: Annotated[int, typer.Option(help="How many, newest first.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the matches as JSON.")] = False,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    screening_dir: ScreeningDirOpt = None,
) -> None:
    """Recorded matches (no personal data shown: the uploader's details stay encrypted)."""
    s = settings(
        policy=policy,
        data_dir=data_dir,
        database_url=database_url,
        keys_database_url=keys_database_url,
        screening_dir=screening_dir,
    )
    with _screener(s) as sc:
        records = sc.matches(limit=limit)
    if as_json:
        print(json.dumps([_match_json(m) for m in records], indent=2))
        return
    if not records:
        out.print("no match recorded")
        return
    for m in records:
        lists = ", ".join(dict.fromkeys(x.list for x in m.matches))
        kept = "quarantined" if m.quarantined else "not quarantined"
        out.print(f"{m.id}  {m.at:%Y-%m-%d %H:%M} UTC  {lists}  {m.size:,} bytes  {kept}  {m.status}")


def _match_json(m: MatchRecord) -> dict[str, Any]:
    return {
        "id": m.id,
        "at": m.at.isoformat(),
        "matches": [x.to_dict() for x in m.matches],
        "size": m.size,
        "actions": list(m.actions),
        "quarantined": m.quarantined,
        "status": m.status,
    }


@screening_app.command("reports")
def reports(
    status: Annotated[str | None, typer.Option(help="queued or sent.")] = None,
    limit: Annotated[int, typer.Option(help="How many, oldest first.", min=1)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    screening_dir: ScreeningDirOpt = None,
) -> None:
    """Reports for the designated organisation: queued and sent."""
    if status not in (None, "queued", "sent"):
        _usage(f"--status {status!r}: queued or sent")
    s = settings(
        policy=policy,
        data_dir=data_dir,
        database_url=database_url,
        keys_database_url=keys_database_url,
        screening_dir=screening_dir,
    )
    with _screener(s) as sc:
        records = sc.reports(status=status, limit=limit)
    if as_json:
        print(json.dumps([_report_json(r) for r in records], indent=2))
        return
    if not records:
        out.print("no report" + (f" {status}" if status else ""))
        return
    for r in records:
        to = r.organization + (f" <{r.address}>" if r.address else " (no address yet)")
        line = f"{r.id}  {r.status}  to {to}  match {r.match_id}  created {r.created_at:%Y-%m-%d %H:%M} UTC"
        if r.attempts:
            line += f"  attempts {r.attempts}"
        if r.last_error:
            line += f"  last error: {r.last_error}"
        out.print(line)


def _report_json(r: ReportRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "match": r.match_id,
        "organization": r.organization,
        "recipient": r.recipient,
        "address": r.address,
        "status": r.status,
        "created_at": r.created_at.isoformat(),
        "attempts": r.attempts,
        "last_error": r.last_error,
        "sent_at": r.sent_at.isoformat() if r.sent_at else None,
    }


@screening_app.command("send")
def send(
    limit: Annotated[int, typer.Option(help="At most this many reports.", min=1)] = 100,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    screening_dir: ScreeningDirOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Send the queued reports by mail (FIDUCIARY_SMTP_URL, or the outbox folder), to
    FIDUCIARY_SCREENING_REPORT_EMAIL. Exit 1 when one could not be sent."""
    from fiduciary.mail import Mailer, MailError

    s = settings(
        policy=policy,
        data_dir=data_dir,
        database_url=database_url,
        keys_database_url=keys_database_url,
        screening_dir=screening_dir,
    )
    try:
        mailer = Mailer.from_settings(s)
    except MailError as exc:
        _usage(str(exc))
    with _screener(s) as sc:
        summary = sc.send_reports(mailer, limit=limit, actor=actor)
    out.print(f"{summary.to_text()} (through {mailer.describe})")
    raise typer.Exit(EXIT_REFUSED if summary.failed or summary.waiting else 0)


@screening_app.command("destroy")
def destroy(
    match_id: Annotated[str, typer.Argument(help="The match record's id.")],
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    screening_dir: ScreeningDirOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Crypto-shred a match: the quarantined copy and the uploader's details become
    unreadable; the record that there was a match stays."""
    s = settings(
        policy=policy,
        data_dir=data_dir,
        database_url=database_url,
        keys_database_url=keys_database_url,
        screening_dir=screening_dir,
    )
    with _screener(s) as sc:
        sc.destroy(match_id, actor=actor)
    out.print(f"destroyed the key of match {match_id}")
