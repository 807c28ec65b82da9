"""`fiduciary retention ...`: the policy's retention rules from the command line (a thin adapter).

    fiduciary retention plan --connection projects_db=postgresql://... [--json]
    fiduciary retention run  --connection projects_db=postgresql://... [--every "1 day"]

``plan`` changes nothing and says, per rule and target, what a sweep would do now (or at
``--at``). ``run`` sweeps (resuming an unfinished sweep first), with a progress bar;
with ``--every`` it keeps sweeping at that interval (the inline scheduler). With
FIDUCIARY_BROKER_URL set the sweep's job runs on the Celery workers. Exit status 1 for a
sweep that failed or a refusal, 2 for a usage error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fiduciary.cli_common import (
    ConnectionOpt,
    DatabaseOpt,
    DataDirOpt,
    KeysDatabaseOpt,
    PolicyOpt,
    err,
    moment,
    out,
)
from fiduciary.cli_common import (
    refused as _refused,
)
from fiduciary.cli_common import (
    usage as _usage,
)
from fiduciary.config import Settings

retention_app = typer.Typer(
    help="Retention: what the policy's rules would change now (plan), and sweeping (run).",
    no_args_is_help=True,
)


ClockOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--clock",
        help="The time column of a collection: datastore.collection=COLUMN, or "
        "rule:datastore.collection=COLUMN for one rule; COLUMN|FALLBACK for the first that is set.",
    ),
]
AtOpt = Annotated[
    str | None,
    typer.Option("--at", help="Sweep as of this moment (ISO 8601, UTC if no zone); default: now."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Rows per batch (one statement each).")]


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            _usage(f"{what} {item!r}: expected name=value")
        found[key.strip()] = value.strip()
    return found


def _interval(every: str) -> timedelta:
    from fiduciary.policy.period import Period, PeriodError

    try:
        period = Period.parse(every)
        now = datetime.now(UTC)
        end = period.add_to(now)
    except (PeriodError, ValueError) as exc:
        _usage(f"--every {every!r}: {exc}")
    assert isinstance(end, datetime)
    if end <= now:
        _usage(f"--every {every!r}: must be longer than nothing")
    return end - now


@contextmanager
def _retention(
    policy: Path | None,
    data_dir: Path | None,
    database_url: str | None,
    keys_database_url: str | None,
    connection: list[str] | None,
    clock: list[str] | None,
    batch_size: int,
) -> Iterator[Any]:
    from fiduciary.core import Fiduciary
    from fiduciary.mail import Mailer
    from fiduciary.policy import PolicyError
    from fiduciary.retention import Retention

    try:
        s = Settings().override(
            policy=policy, data_dir=data_dir, database_url=database_url, keys_database_url=keys_database_url
        )
    except ValueError as exc:  # a FIDUCIARY_* variable that does not parse
        _usage(f"settings: {exc}")
    if s.policy is None:
        _usage("no policy: give --policy or set FIDUCIARY_POLICY")
    if not Path(s.policy).is_file():
        _usage(f"no such policy file: {s.policy}")
    conns = {**s.connections, **_pairs(connection, "--connection")}
    clocks = _pairs(clock, "--clock")
    try:
        fid = Fiduciary.open(s.policy, settings=s)
    except PolicyError as exc:
        _refused(f"the policy {s.policy} has errors: {exc}")
    executor = None
    try:
        if s.broker_url:
            from fiduciary.jobs import executor_from_settings

            executor = executor_from_settings(s)
        try:
            retention = Retention(
                fid,
                connections=conns,
                mailer=Mailer.from_settings(s),
                executor=executor,
                clocks=clocks,
                batch_size=batch_size,
            )
        except ValueError as exc:
            _usage(str(exc))
        with retention:
            yield retention
    finally:
        if executor is not None:
            executor.close()
        fid.close()


@retention_app.command("plan")
def plan(
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    connection: ConnectionOpt = None,
    clock: ClockOpt = None,
    at: AtOpt = None,
    batch_size: BatchOpt = 20_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Say what a sweep would change, per rule and target; change nothing."""
    as_of = moment(at, "--at")
    with _retention(policy, data_dir, database_url, keys_database_url, connection, clock, batch_size) as r:
        try:
            p = r.plan(as_of)
        except ValueError as exc:
            _usage(str(exc))
    if as_json:
        print(p.to_json())
    else:
        out.print(p.to_text(), markup=False)


@retention_app.command("run")
def run(
    policy: PolicyOpt = None,
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    keys_database_url: KeysDatabaseOpt = None,
    connection: ConnectionOpt = None,
    clock: ClockOpt = None,
    at: AtOpt = None,
    batch_size: BatchOpt = 20_000,
    wait: Annotated[bool, typer.Option(help="Wait for the sweep, with a progress bar.")] = True,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait at most.")] = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="Keep sweeping at this interval ('1 day', '12 hours'), until stopped."),
    ] = None,
    actor: Annotated[str, typer.Option("--actor", help="Who sweeps (recorded in the audit trail).")] = "cli",
) -> None:
    """Sweep: carry the retention rules out now (resuming an unfinished sweep first)."""
    from fiduciary.retention import RetentionScheduler, SweepRunning

    as_of = moment(at, "--at")
    interval = _interval(every) if every is not None else None
    if interval is not None and as_of is not None:
        _usage("--at and --every exclude each other: a schedule sweeps as of each moment it runs")
    with _retention(policy, data_dir, database_url, keys_database_url, connection, clock, batch_size) as r:
        if interval is not None:
            err.print(f"sweeping every {every}; stop with Ctrl-C")
            scheduler = RetentionScheduler(r, interval, check_every=min(60.0, interval.total_seconds() / 4))
            try:
                scheduler.run_forever()
            except KeyboardInterrupt:
                scheduler.stop()
            return
        try:
            job_id = r.start(as_of, actor=actor)
        except SweepRunning as exc:
            job_id = exc.job_id
        except ValueError as exc:
            _usage(str(exc))
        err.print(f"sweep: job {job_id}")
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
            task = bar.add_task("batches", total=None)

            def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            try:
                st = r.wait(job_id, timeout=timeout, on_progress=on_progress)
            except TimeoutError as exc:
                _refused(str(exc))
        if st.status != "done":
            _refused(f"sweep {job_id} {st.status}: {st.error}")
        summary = next((s["summary"] for s in r.sweeps(5) if s["job_id"] == job_id), None) or {}
        for rule, targets in sorted(summary.items()):
            for target, counts in sorted(targets.items()):
                shown = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()) if v)
                if shown:
                    out.print(f"{rule:<24} {target:<36} {shown}")
        out.print(json.dumps({"job": job_id, "status": st.status}))
