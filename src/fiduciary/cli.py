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
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from fiduciary.policy import CompiledPolicy, LoadedPolicy, PolicyError, Problem, compile_policy
from fiduciary.policy import load_policy as _load

EXIT_INVALID = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="fiduciary",
    help="Privacy promises as code: check, render and enforce one policy.yaml.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
policy_app = typer.Typer(
    help="Check, render and compare policy.yaml files; move them to and from fideslang.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")

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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
