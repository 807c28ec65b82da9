"""`fiduciary request ...`: rights requests from the command line (a thin adapter).

    fiduciary request submit access --email ann@example.com --region DE
    fiduciary request verify <id> --code 123456
    fiduciary request run <id> | --all-ready
    fiduciary request status [<id>]
    fiduciary request export <id> -o package.zip

Every command is library calls (RequestDesk, RequestRunner); exit status 1 for an
operation the library refused, 2 for a usage error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fiduciary.cli_common import (
    ActorOpt,
    ConnectionOpt,
    DatabaseOpt,
    DataDirOpt,
    KeysDatabaseOpt,
    PolicyOpt,
    err,
    out,
)
from fiduciary.cli_common import (
    refused as _refused,
)
from fiduciary.cli_common import (
    usage as _usage,
)
from fiduciary.config import Settings
from fiduciary.connectors import ConnectorError
from fiduciary.jobs import JobError
from fiduciary.mail import Mailer
from fiduciary.policy import PolicyError
from fiduciary.requests.lifecycle import DenyReason, RequestDesk, RequestError
from fiduciary.requests.plan import PlanError

request_app = typer.Typer(
    help="Rights requests: submit, verify, approve or deny, run, follow and export.",
    no_args_is_help=True,
)


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out_: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _usage(f"{what} {item!r}: expected key=value")
        out_[key.strip()] = value.strip()
    return out_


@dataclass
class _World:
    settings: Settings
    connections: dict[str, str]

    @contextmanager
    def desk(self) -> Iterator[tuple[Any, RequestDesk]]:
        from fiduciary.core import Fiduciary

        policy = self.settings.policy
        if policy is None:
            _usage("no policy: give --policy or set FIDUCIARY_POLICY")
        if not Path(policy).is_file():
            _usage(f"no such policy file: {policy}")
        try:
            fid = Fiduciary.open(policy, settings=self.settings)
        except PolicyError as exc:
            _refused(f"the policy {policy} has errors: {exc}")
        try:
            yield fid, RequestDesk.from_fiduciary(fid, Mailer.from_settings(self.settings))
        finally:
            fid.close()


def _world(
    policy: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    keys_database_url: str | None,
    connection: list[str] | None = None,
) -> _World:
    update: dict[str, Any] = {}
    if policy is not None:
        update["policy"] = policy
    if data_dir is not None:
        update["data_dir"] = data_dir
    if database_url is not None:
        update["database_url"] = database_url
    if keys_database_url is not None:
        update["keys_database_url"] = keys_database_url
    try:
        s = Settings().model_copy(update=update)
    except ValueError as exc:  # a FIDUCIARY_* variable that does not parse
        _usage(f"settings: {exc}")
    conns = dict(s.connections)
    conns.update(_pairs(connection, "--connection"))
    return _World(s, conns)


@contextmanager
def _refusals() -> Iterator[None]:
    """The library's refusals as exit status 1 with their message."""
    try:
        yield
    except (RequestError, PlanError, JobError, ConnectorError) as exc:
        _refused(str(exc))


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@request_app.command("submit")
def submit(
    type: Annotated[str, typer.Argument(help="access, erase, portability, rectify, restrict ...")],
    email: Annotated[str | None, typer.Option("--email", help="The requester's email.")] = None,
    phone: Annotated[str | None, typer.Option("--phone", help="The requester's phone number.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="ISO region (DE, US-CA ...).")] = None,
    data_point: Annotated[
        list[str] | None, typer.Option("--data-point", help="category=value, for CCPA verification.")
    ] = None,
    detail: Annotated[
        str | None, typer.Option("--details", help="Request details as JSON (purpose, values ...).")
    ] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Receive a request; the requester gets a code (or an acknowledgement) by mail."""
    contact = {k: v for k, v in (("email", email), ("phone_number", phone)) if v}
    if not contact:
        _usage("give --email (or --phone): the requester's contact")
    details: dict[str, Any] | None = None
    if detail is not None:
        try:
            details = json.loads(detail)
        except json.JSONDecodeError as exc:
            _usage(f"--details: not JSON ({exc.msg})")
    w = _world(policy, data_dir, database_url, keys_database_url)
    with w.desk() as (_fid, desk), _refusals():
        sub = desk.submit(
            type,
            contact=contact,
            region=region,
            details=details,
            data_points=_pairs(data_point, "--data-point") or None,
            actor=actor,
        )
    if sub.duplicate_of:
        out.print(f"{sub.request_id}  (duplicate of an open request: {sub.status})")
        return
    out.print(sub.request_id)
    err.print(
        f"{type} request received: {sub.status}, due {_when(sub.due_at)}; "
        f"verification {sub.verification.value}" + ("; a code was mailed" if sub.code_sent else "")
    )


@request_app.command("verify")
def verify(
    request_id: Annotated[str, typer.Argument(help="The request reference.")],
    code: Annotated[str | None, typer.Option("--code", help="The code mailed to the requester.")] = None,
    data_point: Annotated[
        list[str] | None, typer.Option("--data-point", help="category=value (repeatable).")
    ] = None,
    declaration: Annotated[bool, typer.Option(help="A signed declaration was given.")] = False,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Verify the requester: a one-time code, or data points (CCPA)."""
    if (code is None) == (not data_point):
        _usage("give either --code or --data-point (not both)")
    w = _world(policy, data_dir, database_url, keys_database_url)
    with w.desk() as (_fid, desk), _refusals():
        if code is not None:
            status = desk.verify_code(request_id, code, actor=actor)
        else:
            status = desk.verify_data_points(
                request_id, _pairs(data_point, "--data-point"), declaration=declaration, actor=actor
            )
    out.print(f"{request_id}: {status}")


@request_app.command("approve")
def approve(
    request_id: Annotated[str, typer.Argument(help="The request reference.")],
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Approve a verified request (child reports need it before they run)."""
    w = _world(policy, data_dir, database_url, keys_database_url)
    with w.desk() as (_fid, desk), _refusals():
        status = desk.approve(request_id, actor)
    out.print(f"{request_id}: {status}")


@request_app.command("deny")
def deny(
    request_id: Annotated[str, typer.Argument(help="The request reference.")],
    reason: Annotated[
        str, typer.Option("--reason", help=f"One of: {', '.join(r.value for r in DenyReason)}.")
    ],
    note: Annotated[str | None, typer.Option("--note", help="Free text, no personal data.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Refuse a request with a legal reason; the requester is told."""
    if reason not in {r.value for r in DenyReason}:
        _usage(f"--reason {reason!r}: one of {', '.join(r.value for r in DenyReason)}")
    w = _world(policy, data_dir, database_url, keys_database_url)
    with w.desk() as (_fid, desk), _refusals():
        status = desk.deny(request_id, reason, actor, note=note)
    out.print(f"{request_id}: {status}")


@request_app.command("run")
def run(
    request_ids: Annotated[list[str] | None, typer.Argument(help="Request references.")] = None,
    all_ready: Annotated[
        bool, typer.Option("--all-ready", help="Every verified or approved request.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the job, with a progress bar.")] = True,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait at most.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    connection: ConnectionOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Run requests as one job over the company's datastores."""
    from fiduciary.jobs import executor_from_settings
    from fiduciary.requests.runner import RequestRunner

    if bool(request_ids) == all_ready:
        _usage("give request references, or --all-ready (not both)")
    w = _world(policy, data_dir, database_url, keys_database_url, connection)
    with w.desk() as (fid, desk), _refusals():
        executor = None
        if w.settings.broker_url:
            executor = executor_from_settings(w.settings)
        with RequestRunner(fid, desk, connections=w.connections, executor=executor) as runner:
            ids = list(request_ids or []) or runner.ready()
            if not ids:
                out.print("no request is ready to run")
                return
            job_id = runner.run(ids, actor=actor)
            err.print(f"job {job_id}: {len(ids)} request(s)")
            if not wait:
                out.print(job_id)
                return
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=False,
            ) as bar:
                task = bar.add_task("steps", total=None)

                def on_progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                st = runner.wait(job_id, timeout=timeout, on_progress=on_progress)
            if st.status != "done":
                _refused(f"job {job_id} {st.status}: {st.error}")
            for rid in ids:
                out.print(f"{rid}: {desk.status(rid).status}")


@request_app.command("status")
def status(
    request_id: Annotated[str | None, typer.Argument(help="A request; none: the queue.")] = None,
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
) -> None:
    """One request and its events, or the queue by due date (overdue in red)."""
    w = _world(policy, data_dir, database_url, keys_database_url)
    with w.desk() as (_fid, desk), _refusals():
        if request_id is not None:
            v = desk.status(request_id)
            out.print(f"{v.id}  {v.type}  {v.status}  ({v.jurisdiction})")
            due = f"due {_when(v.due_at)}" + (" [red]OVERDUE[/red]" if v.overdue else "")
            out.print(due + ("  (extended)" if v.extended else ""), markup=True)
            if v.job_id:
                out.print(f"job {v.job_id}")
            for e in v.events:
                detail = f"  {json.dumps(e.detail, sort_keys=True)}" if e.detail else ""
                out.print(f"  {_when(e.at)}  {e.kind}  by {e.actor}{detail}")
            return
        views = desk.queue()
        table = Table()
        # The reference is what people copy into the next command: never cut or wrapped.
        table.add_column("reference", no_wrap=True, min_width=32)
        for name in ("type", "status", "jurisdiction", "due"):
            table.add_column(name)
        for v in views:
            style = "red" if v.overdue else None
            table.add_row(v.id, v.type, v.status, v.jurisdiction, _when(v.due_at), style=style)
        out.print(table)
        if not views:
            out.print("no requests")


@request_app.command("export")
def export(
    request_id: Annotated[str, typer.Argument(help="A done access or portability request.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the ZIP.")],
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
) -> None:
    """Write a done request's package (ZIP) to a file."""
    from fiduciary.requests.runner import export_package

    w = _world(policy, data_dir, database_url, keys_database_url)
    with w.desk() as (fid, desk), _refusals():
        content = export_package(fid, desk, request_id)
    output.write_bytes(content)
    out.print(f"{output} ({len(content)} bytes)")
