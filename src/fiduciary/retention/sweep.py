"""The sweep: a retention plan run as one job of idempotent steps (``fiduciary.jobs``).

    retention = Retention(fid, connections={"filelocker_db": "postgresql://..."})
    print(retention.plan().to_text())        # what would change (fiduciary retention plan)
    status = retention.run()                 # do it (fiduciary retention run)

``start`` turns the plan into ONE job of kind ``retention`` with a step per batch, in
this order: inactivity notices (``ret.notice``), inactivity deletions (``ret.inactive``),
closure stages (``ret.closure``, shortest period first), the vault's values
(``ret.vault``), the datastores' rows (``ret.rows``, deletions before truncations), and
``ret.finish``, which records how far each rule has swept (``retention_marks``), the
sweep's counts, and one audit entry for the whole sweep.

Resumable. Every step is one batch, keyed by its key range, and idempotent; the jobs
runner records each step done. A sweep killed at any point (a SIGKILLed worker, a power
cut) resumes where it stopped when its job runs again — ``start`` resubmits the unfinished
sweep rather than planning a new one, and the jobs' recover pass does the same for a
Celery worker — and a step whose effect committed just before the kill finds nothing left
to do: no row is touched twice. One sweep runs at a time (``retention_sweeps.active``).

Personal data never travels in the plan: steps carry rule keys, collection names, cutoffs
and key ranges (primary keys, opaque subject ids) only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fiduciary.connectors.sql import SQLConnector
from fiduciary.jobs import (
    DATA,
    FAILED,
    KEYRING,
    KEYS,
    InlineExecutor,
    JobEnd,
    JobStatus,
    PermanentStepError,
    StepContext,
    StepSpec,
    create_job,
    job_status,
    register_job_end,
    register_step,
    wait_for,
)
from fiduciary.jobs.model import FINAL
from fiduciary.mail import Mailer, MailError
from fiduciary.policy.period import Period
from fiduciary.requests.runner import connector_map, erasure_key
from fiduciary.retention.accounts import (
    ACTOR,
    erase_accounts,
    identities_of,
    inactivity_letter,
    select_subjects,
)
from fiduciary.retention.plan import (
    ACCOUNT_BATCH,
    BATCH,
    SESSION_IDLE,
    RetentionPlan,
    Task,
    closure_where,
    db_time,
    inactive_where,
    notice_where,
    plan_sweep,
)
from fiduciary.retention.rows import sweep_rows
from fiduciary.store import tables as T

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary
    from fiduciary.jobs import Executor

log = logging.getLogger("fiduciary.retention")

__all__ = ["JOB_KIND", "Retention", "SweepRunning", "build_steps"]

JOB_KIND: Final = "retention"
# Resource names the steps read (the same as the request runner's, so one worker serves both).
R_FIDUCIARY, R_CONNECTIONS, R_MAILER = "fiduciary", "connections", "retention_mailer"
_ORDER: Final = {"notice": 0, "inactive": 1, "closure": 2, "vault": 3, "rows": 4}
_STEP: Final = {
    "notice": "ret.notice",
    "inactive": "ret.inactive",
    "closure": "ret.closure",
    "vault": "ret.vault",
    "rows": "ret.rows",
}


class SweepRunning(RuntimeError):
    """Another sweep started meanwhile (another process); its job id is ``job_id``."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"a retention sweep is already running: job {job_id}")
        self.job_id = job_id


# --------------------------------------------------------------------------- steps


def _fid(ctx: StepContext) -> Fiduciary:
    fid = ctx.resources.get(R_FIDUCIARY)
    if fid is None:
        raise PermanentStepError(
            "this worker has no policy: set FIDUCIARY_POLICY (and FIDUCIARY_CONNECTIONS)"
        )
    from fiduciary.core import Fiduciary

    assert isinstance(fid, Fiduciary)
    if ctx.params.get("policy") != fid.policy.digest:
        raise PermanentStepError(
            "the policy changed since the sweep was planned; the next sweep plans under the new one"
        )
    return fid


def _connectors(ctx: StepContext) -> Mapping[str, SQLConnector]:
    conns = ctx.resources.get(R_CONNECTIONS) or {}
    assert isinstance(conns, Mapping)
    return conns


def _mailer(ctx: StepContext) -> Mailer:
    m = ctx.resources.get(R_MAILER)
    if isinstance(m, Mailer):
        return m
    desk_mailer = getattr(ctx.resources.get("request_desk"), "mailer", None)
    if isinstance(desk_mailer, Mailer):
        return desk_mailer
    settings = ctx.resources.get("settings")
    if settings is not None:
        return Mailer.from_settings(settings)  # type: ignore[arg-type]
    raise PermanentStepError("this worker has no mailer for inactivity notices")


def _at(ctx: StepContext, name: str) -> datetime:
    return datetime.fromisoformat(ctx.params[name])


def step_rows(ctx: StepContext) -> dict[str, Any]:
    fid = _fid(ctx)
    connector = _connectors(ctx).get(ctx.params["datastore"])
    if connector is None:
        raise PermanentStepError(f"no connection for datastore {ctx.params['datastore']} in this worker")
    return sweep_rows(
        connector, ctx.params, key=erasure_key(fid.keyring), data=fid.data, job_id=ctx.job_id, seq=ctx.seq
    )


def step_vault(ctx: StepContext) -> dict[str, Any]:
    fid = _fid(ctx)
    p = ctx.params
    a = T.attributes.c
    where = [
        a.category.in_(list(p["categories"])),
        a.collected_at < db_time(fid.data, _at(ctx, "cutoff")),
        a.subject_id <= p["hi"],
    ]
    if p.get("lo") is not None:
        where.append(a.subject_id > p["lo"])
    with fid.data.begin() as conn:
        n = conn.execute(delete(T.attributes).where(*where)).rowcount
        if n:
            fid.audit.append(
                conn,
                actor=ACTOR,
                action="retention.delete_values",
                purpose="retention",
                detail={"rule": p["rule"], "values": n},
            )
    return {"deleted": n}


def step_notice(ctx: StepContext) -> dict[str, Any]:
    """PLO-9: record a notice per silent account (keyed by the silence), then mail every
    notice of the range still pending. A re-run never records twice; a notice is mailed
    at least once (a kill between the mail and its record mails it again)."""
    fid = _fid(ctx)
    p = ctx.params
    rule = p["rule"]
    at = _at(ctx, "at")
    period = Period.parse(p["period"])
    notice = Period.parse(p["notice_before"])
    n_ = T.retention_notices.c
    s = T.subjects.c
    with fid.data.begin() as conn:
        where = notice_where(fid.policy, rule, _at(ctx, "cutoff"), conn)
        ids = select_subjects(conn, where, p.get("lo"), p["hi"])
        if ids:
            rows = conn.execute(select(s.id, s.last_activity_at, s.created_at).where(s.id.in_(ids))).all()
            new = []
            for row in rows:
                since = _utc(row.last_activity_at or row.created_at)
                due = max(notice.add_to(at), period.add_to(since))
                new.append(
                    {
                        "subject_id": row.id,
                        "rule": rule,
                        "since": db_time(conn, since),
                        "noticed_at": db_time(conn, at),
                        "delete_after": db_time(conn, due),  # type: ignore[arg-type]
                        "status": "pending",
                        "job_id": ctx.job_id,
                    }
                )
            conn.execute(insert(T.retention_notices), new)
    range_ = [n_.rule == rule, n_.status == "pending", n_.subject_id <= p["hi"]]
    if p.get("lo") is not None:
        range_.append(n_.subject_id > p["lo"])
    with fid.data.connect() as conn:
        pending = conn.execute(select(n_.id, n_.subject_id, n_.since, n_.delete_after).where(*range_)).all()
    if not pending:
        return {"notices": 0}
    found = identities_of(fid, [str(r.subject_id) for r in pending])
    mailer = _mailer(ctx)
    org = fid.policy.policy.organization.name
    sent: list[int] = []
    unreachable: list[int] = []
    error: MailError | None = None
    for r in pending:
        emails = found.get(str(r.subject_id), {}).get("email") or []
        if not emails:
            unreachable.append(int(r.id))
            continue
        letter = inactivity_letter(
            organization=org,
            since=_utc(r.since),
            delete_after=_utc(r.delete_after),
            period=str(period),
        )
        try:
            mailer.send(emails[0], letter.subject, letter.text)
        except MailError as exc:  # record what went out, then let the step be retried
            error = exc
            break
        sent.append(int(r.id))
    with fid.data.begin() as conn:
        for status, ids_ in (("sent", sent), ("no_address", unreachable)):
            if ids_:
                conn.execute(update(T.retention_notices).where(n_.id.in_(ids_)).values(status=status))
        done = {int(r.id): str(r.subject_id) for r in pending}
        entries = [
            {
                "actor": ACTOR,
                "action": "retention.notice",
                "purpose": "retention",
                "subject_id": done[i],
                "result": "sent" if i in sent else "no_address",
                "detail": {"rule": rule},
            }
            for i in (*sent, *unreachable)
        ]
        if entries:
            fid.audit.append_many(conn, entries)
    if error is not None:
        raise error
    return {"notices": len(sent), "unreachable": len(unreachable)}


def _accounts(
    ctx: StepContext, where_of: Callable[[Any], Sequence[Any]], rules: Sequence[str]
) -> dict[str, Any]:
    fid = _fid(ctx)
    p = ctx.params
    with fid.data.connect() as conn:
        ids = select_subjects(conn, where_of(conn), p.get("lo"), p["hi"])
    days = Period.parse(p["period"]).approx_days() if p.get("period") else 0.0
    return erase_accounts(
        fid,
        _connectors(ctx),
        ids,
        rules,
        final=bool(p.get("final", True)),
        stage_days=days,
        key=erasure_key(fid.keyring),
    )


def step_closure(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    since = _at(ctx, "since") if p.get("since") else None
    cutoff = _at(ctx, "cutoff")
    return _accounts(ctx, lambda conn: closure_where(cutoff, since, conn), list(p["rules"]))


def step_inactive(ctx: StepContext) -> dict[str, Any]:
    p = ctx.params
    fid = _fid(ctx)
    noticed_by = _at(ctx, "noticed_by") if p.get("noticed_by") else None
    cutoff = _at(ctx, "cutoff")
    rule = str(p["rule"])
    return _accounts(ctx, lambda conn: inactive_where(fid.policy, rule, cutoff, noticed_by, conn), [rule])


_COUNTS: Final = (
    "deleted",
    "updated",
    "rows",
    "notices",
    "unreachable",
    "subjects",
    "shredded",
    "values_deleted",
)


def step_finish(ctx: StepContext) -> dict[str, Any]:
    """Marks, the sweep's counts, one audit entry: written once (guarded by the sweep's
    record), so a re-run of this step changes nothing."""
    fid = _fid(ctx)
    summary: dict[str, dict[str, dict[str, int]]] = {}
    for seq in sorted(ctx.results):
        spec = ctx.plan[seq]
        res = ctx.results[seq] or {}
        per = summary.setdefault(str(spec.params.get("rule")), {}).setdefault(str(spec.target), {})
        for k in _COUNTS:
            if isinstance(res.get(k), int):
                per[k] = per.get(k, 0) + int(res[k])
    now = datetime.now(UTC)
    sw, m = T.retention_sweeps.c, T.retention_marks.c
    with fid.data.begin() as conn:
        first = conn.execute(
            update(T.retention_sweeps)
            .where(sw.job_id == ctx.job_id, sw.summary.is_(None))
            .values(summary=json.dumps(summary, sort_keys=True))
        ).rowcount
        for rule, target, cutoff in ctx.params.get("marks", []):
            conn.execute(delete(T.retention_marks).where(m.rule == rule, m.target == target))
            conn.execute(
                insert(T.retention_marks).values(
                    rule=rule,
                    target=target,
                    cutoff=db_time(conn, datetime.fromisoformat(cutoff)),
                    job_id=ctx.job_id,
                    at=db_time(conn, now),
                )
            )
        if first:
            fid.audit.append(
                conn,
                actor=ACTOR,
                action="retention.sweep",
                purpose="retention",
                detail={"job": ctx.job_id, "at": ctx.params["at"], "rules": summary},
            )
    return {"rules": len(summary)}


STEPS: Final = {
    "ret.rows": step_rows,
    "ret.vault": step_vault,
    "ret.notice": step_notice,
    "ret.inactive": step_inactive,
    "ret.closure": step_closure,
    "ret.finish": step_finish,
}
for _kind, _handler in STEPS.items():
    register_step(_kind, _handler, replace=True)


def on_job_end(end: JobEnd) -> None:
    """The sweep's record follows its job: done or failed, and no longer active."""
    data = end.resources.get(DATA)
    if not isinstance(data, Engine):
        return
    sw = T.retention_sweeps.c
    with data.begin() as conn:
        conn.execute(
            update(T.retention_sweeps)
            .where(sw.job_id == end.job_id, sw.active.is_not(None))
            .values(status=end.status, active=None, finished_at=db_time(conn, datetime.now(UTC)))
        )
    if end.status == FAILED:
        log.warning("retention sweep %s failed: %s", end.job_id, end.error)


register_job_end(JOB_KIND, on_job_end)


# --------------------------------------------------------------------------- the job


def _step_order(t: Task) -> tuple[Any, ...]:
    op = t.params.get("op")
    period = t.params.get("period")
    days = Period.parse(period).approx_days() if t.kind == "closure" and period else 0.0
    return (_ORDER[t.kind], days, 0 if op in ("delete", "aggregate") else 1, t.rule, t.target)


def build_steps(plan: RetentionPlan) -> list[StepSpec]:
    """One step per batch of every task, in the order the module doc gives, then finish."""
    steps: list[StepSpec] = []
    base = {"policy": plan.policy_digest, "at": plan.at.isoformat()}
    for t in sorted(plan.tasks, key=_step_order):
        for lo, hi in t.batches:
            params = {
                **t.params,
                **base,
                "rule": t.rule,
                "cutoff": t.cutoff.isoformat(),
                "since": t.since.isoformat() if t.since else None,
                "lo": lo,
                "hi": hi,
            }
            steps.append(StepSpec(_STEP[t.kind], t.target, params))
    marks = [[t.rule, t.target, t.cutoff.isoformat()] for t in plan.tasks]
    steps.append(StepSpec("ret.finish", None, {**base, "rule": None, "marks": marks}))
    return steps


def _utc(at: datetime | None) -> datetime:
    assert at is not None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class Retention:
    """The policy's retention rules, swept over the vault and the connected datastores."""

    def __init__(
        self,
        fid: Fiduciary,
        *,
        connections: Mapping[str, SQLConnector | Engine | str] | None = None,
        mailer: Mailer | None = None,
        executor: Executor | None = None,
        clocks: Mapping[str, str] | None = None,
        batch_size: int = BATCH,
        account_batch: int = ACCOUNT_BATCH,
        session_idle: timedelta = SESSION_IDLE,
        lease_seconds: float = 30.0,
    ) -> None:
        self.fid = fid
        given = dict(connections or {})
        self.connectors = connector_map(given)
        self._made = {ds: c for ds, c in self.connectors.items() if c is not given[ds]}
        self.mailer = mailer
        self.clocks = dict(clocks or {})
        self.batch_size = batch_size
        self.account_batch = account_batch
        self.session_idle = session_idle
        self.resources: dict[str, object] = {
            DATA: fid.data,
            KEYS: fid.keys,
            KEYRING: fid.keyring,
            R_FIDUCIARY: fid,
            R_CONNECTIONS: self.connectors,
        }
        if mailer is not None:
            self.resources[R_MAILER] = mailer
        self._owns_executor = executor is None
        # No recover pass here: this executor has the sweep's resources only, and other
        # kinds of jobs (rights requests) need theirs. Unfinished sweeps are resumed by
        # start() instead.
        self.executor: Executor = (
            executor
            if executor is not None
            else InlineExecutor(
                self.resources,
                lease_seconds=lease_seconds,
                recover_on_start=False,
                recover_every=None,
                name="retention",
            )
        )

    def close(self) -> None:
        if self._owns_executor:
            self.executor.close()
        for c in {id(c): c for c in self._made.values()}.values():
            c.close()

    def __enter__(self) -> Retention:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- what would change
    def plan(self, at: datetime | None = None) -> RetentionPlan:
        return plan_sweep(
            self.fid.policy,
            self.fid.data,
            self.connectors,
            at=at,
            clocks=self.clocks,
            batch_size=self.batch_size,
            account_batch=self.account_batch,
            session_idle=self.session_idle,
        )

    # -- doing it
    def active(self) -> str | None:
        """The job of the sweep still running, if any (a sweep whose job ended without
        its record catching up — a cancel — is let go here)."""
        sw = T.retention_sweeps.c
        with self.fid.data.connect() as conn:
            job = conn.execute(select(sw.job_id).where(sw.active == 1)).scalar()
        if job is None:
            return None
        st = job_status(self.fid.data, str(job))
        if st.status in FINAL:
            with self.fid.data.begin() as conn:
                conn.execute(
                    update(T.retention_sweeps)
                    .where(sw.job_id == job, sw.active.is_not(None))
                    .values(status=st.status, active=None, finished_at=db_time(conn, datetime.now(UTC)))
                )
            return None
        return str(job)

    def start(self, at: datetime | None = None, *, actor: str = ACTOR) -> str:
        """Start a sweep (or resume the unfinished one) and return its job id."""
        running = self.active()
        if running is not None:
            self.executor.submit(running)  # resumed where it stopped
            return running
        plan = self.plan(at)
        steps = build_steps(plan)
        now = datetime.now(UTC)

        def record(conn: Any, job_id: str) -> None:
            conn.execute(
                insert(T.retention_sweeps).values(
                    job_id=job_id,
                    at=db_time(conn, plan.at),
                    status="running",
                    active=1,
                    created_at=db_time(conn, now),
                    created_by=actor,
                )
            )

        try:
            job_id = create_job(
                self.fid.data, self.fid.keys, self.fid.keyring, JOB_KIND, steps, within=record
            )
        except IntegrityError:
            other = self.active()
            if other is None:
                raise
            raise SweepRunning(other) from None
        self.executor.submit(job_id)
        return job_id

    def wait(self, job_id: str, *, timeout: float | None = None, on_progress: Any = None) -> JobStatus:
        return wait_for(self.fid.data, job_id, timeout=timeout, on_progress=on_progress)

    def run(
        self,
        at: datetime | None = None,
        *,
        actor: str = ACTOR,
        timeout: float | None = None,
        on_progress: Any = None,
    ) -> JobStatus:
        """Start (or resume) a sweep and wait for it to end."""
        return self.wait(self.start(at, actor=actor), timeout=timeout, on_progress=on_progress)

    def sweeps(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest sweeps, newest first: when, status, counts per rule and target."""
        sw = T.retention_sweeps.c
        with self.fid.data.connect() as conn:
            rows = conn.execute(select(T.retention_sweeps).order_by(sw.created_at.desc()).limit(limit)).all()
        return [
            {
                "job_id": r.job_id,
                "at": _utc(r.at).isoformat(),
                "status": r.status,
                "created_at": _utc(r.created_at).isoformat(),
                "finished_at": _utc(r.finished_at).isoformat() if r.finished_at else None,
                "summary": json.loads(r.summary) if r.summary else None,
            }
            for r in rows
        ]

    def last_sweep_at(self) -> datetime | None:
        """When the latest sweep was started (for schedulers)."""
        sw = T.retention_sweeps.c
        with self.fid.data.connect() as conn:
            got = conn.execute(select(sw.created_at).order_by(sw.created_at.desc()).limit(1)).scalar()
        return _utc(got) if got is not None else None
