"""Running jobs: create a plan, lease its steps one by one, store encrypted results.

How a worker runs a job (``run_job``):

1. lease the first step not done, in ``seq`` order: a pending step whose retry time has
   come, or a running step whose lease expired (its worker died). The lease is one guarded
   UPDATE (``WHERE status = <seen> AND attempts = <seen>``), so two workers never both win
   it, on PostgreSQL (row lock, re-checked WHERE) as on SQLite (BEGIN IMMEDIATE);
2. run the step's handler while a heartbeat thread extends the lease every third of its
   length;
3. store the result (AES-GCM under the job key) and ``done`` in one UPDATE guarded by the
   lease (``leased_by`` and ``attempts``): a worker whose lease expired and was taken over
   changes nothing — its late result is discarded. The same statement claims the next
   step (``RETURNING`` says which rows it changed; the transaction is rolled back unless
   the completed step is among them), so a step costs one statement, not a lease read, a
   lease write and a completion;
4. a handler that raises is retried with exponential backoff up to ``max_attempts`` runs
   (a worker lost mid-step counts as a run), then the step and the job fail with the
   error's first line (SQL parameter dumps and DETAIL lines, which can hold personal data,
   are never stored);
5. when no step is left: job-end hooks, the job key is destroyed, the job marked final and
   the result blobs cleared. Each of these is idempotent, so a worker dying between them
   is followed by another that finishes the end. A job whose end no hook waits for (see
   ``register_job_end(on=...)``) is marked final, with its results cleared, in the
   transaction that completes its last step; its key is destroyed right after (the
   ``recover`` sweep destroys it if the worker dies in between).

Costs, for a job of n steps run by one worker: create 3 statements (the key, the job, all
steps in one executemany), start 2 (the job running, step 0 claimed), one per step, then
1 for the job row and 1 for the key. A job created with ``local=True`` hands its plan and
key to a run in the same process (an inline executor), which then reads neither.

Steps may therefore run twice; see the idempotency contract in ``fiduciary.jobs.model``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, and_, bindparam, case, delete, func, insert, or_, select, update

from fiduciary.jobs.model import (
    CANCELLED,
    DATA,
    DONE,
    FAILED,
    FINAL,
    KEYRING,
    KEYS,
    PENDING,
    RUNNING,
    JobEnd,
    JobError,
    JobNotFound,
    JobStatus,
    LeaseLost,
    PermanentStepError,
    PlanError,
    StepContext,
    StepSpec,
    StepState,
    UnknownStep,
    end_hooks,
    handler_for,
    registered_steps,
)
from fiduciary.store.tables import job_steps, jobs, request_keys
from fiduciary.vault.crypto import (
    KEY_SIZE,
    decode_value,
    encode_value,
    new_data_key,
    owner_key_aad,
    seal,
    unseal,
)
from fiduciary.vault.keyring import Keyring

log = logging.getLogger("fiduciary.jobs")

PLAN_FORMAT = 1
ERROR_LIMIT = 500

# Purpose tags: a job's ciphertexts can never be mistaken for a subject's or a request's,
# and each is bound to its job (and step), so a blob copied elsewhere fails to decrypt.
_RESULT = b"fiduciary/job-result\x00"
_INPUTS = b"fiduciary/job-inputs\x00"


# --------------------------------------------------------------------------- time


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _stored(engine: Engine | Connection, at: datetime) -> datetime:
    # SQLite keeps times as naive UTC text: compare like with like there.
    utc = at.astimezone(UTC)
    return utc.replace(tzinfo=None) if engine.dialect.name == "sqlite" else utc


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """A connection for one read; on PostgreSQL in autocommit, which saves the BEGIN and
    ROLLBACK round trips (a single statement sees one snapshot anyway)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


# --------------------------------------------------------------------------- the job key


class JobCipher:
    """Seals and opens one job's step results and inputs under its data key."""

    __slots__ = ("_aead", "job_id")

    def __init__(self, job_id: str, key: bytes) -> None:
        self.job_id = job_id
        self._aead = AESGCM(key)

    def seal_result(self, seq: int, value: Mapping[str, Any]) -> bytes:
        plain = encode_value(dict(value), f"job {self.job_id} step {seq} result")
        return seal(self._aead, plain, _RESULT + f"{self.job_id}\x00{seq}".encode())

    def open_result(self, seq: int, blob: bytes) -> Mapping[str, Any]:
        aad = _RESULT + f"{self.job_id}\x00{seq}".encode()
        value = decode_value(unseal(self._aead, blob, aad, f"job {self.job_id} step {seq} result"))
        assert isinstance(value, dict)
        return value

    def seal_inputs(self, value: Mapping[str, Any]) -> bytes:
        plain = encode_value(dict(value), f"job {self.job_id} inputs")
        return seal(self._aead, plain, _INPUTS + self.job_id.encode())

    def open_inputs(self, blob: bytes) -> Mapping[str, Any]:
        value = decode_value(unseal(self._aead, blob, _INPUTS + self.job_id.encode(), "job inputs"))
        assert isinstance(value, dict)
        return value


def _key_aad(job_id: str, kek_id: str) -> bytes:
    return owner_key_aad(job_id, kek_id)


def _store_key(keys: Engine, keyring: Keyring, job_id: str) -> JobCipher:
    key = new_data_key()
    kek_id, kek = keyring.kek
    wrapped = seal(AESGCM(kek), key, _key_aad(job_id, kek_id))
    with keys.begin() as conn:
        conn.execute(
            insert(request_keys).values(owner_id=job_id, kek_id=kek_id, wrapped=wrapped, created_at=_now())
        )
    return JobCipher(job_id, key)


def load_cipher(keys: Engine, keyring: Keyring, job_id: str) -> JobCipher | None:
    """The job's cipher; None once the key was destroyed (the job ended)."""
    with _reading(keys) as conn:
        row = conn.execute(
            select(request_keys.c.kek_id, request_keys.c.wrapped).where(request_keys.c.owner_id == job_id)
        ).first()
    if row is None:
        return None
    aead = AESGCM(keyring.kek_by_id(row.kek_id))
    key = unseal(aead, row.wrapped, _key_aad(job_id, row.kek_id), f"data key of job {job_id}")
    if len(key) != KEY_SIZE:
        raise JobError(f"data key of job {job_id}: {len(key)} bytes, {KEY_SIZE} expected")
    return JobCipher(job_id, key)


def destroy_key(keys: Engine, job_id: str) -> None:
    """Crypto-shred the job's results and inputs (idempotent)."""
    _take_local(job_id)
    with keys.begin() as conn:
        conn.execute(delete(request_keys).where(request_keys.c.owner_id == job_id))


# Plans and keys of jobs created with local=True, for a run in this process (an inline
# executor): taken once by run_job. Bounded: a job this process never runs (its executor
# closed first) falls out, and is then read from the stores like any other.
_LOCAL_MAX = 256
_local: OrderedDict[str, tuple[_Plan, JobCipher, Lease | None]] = OrderedDict()
_local_lock = threading.Lock()


def _keep_local(job_id: str, plan: _Plan, cipher: JobCipher, lease: Lease | None = None) -> None:
    with _local_lock:
        _local[job_id] = (plan, cipher, lease)
        while len(_local) > _LOCAL_MAX:
            _local.popitem(last=False)


def _take_local(job_id: str) -> tuple[_Plan, JobCipher, Lease | None] | None:
    with _local_lock:
        return _local.pop(job_id, None)


# --------------------------------------------------------------------------- creating


def _check_json(value: object, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PlanError(f"{what}: not JSON-serialisable ({exc})") from None


def create_job(
    data: Engine,
    keys: Engine,
    keyring: Keyring,
    kind: str,
    steps: Sequence[StepSpec],
    *,
    inputs: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    require_handlers: bool = True,
    within: Callable[[Connection, str], None] | None = None,
    conn: Connection | None = None,
    local: bool = False,
    claim: tuple[str, float] | None = None,
) -> str:
    """Persist a plan and return the job id. Nothing runs yet: hand the id to an executor.

    ``inputs`` (personal data a plan needs, e.g. identity values to look up) is encrypted
    under the job key and reaches every handler as ``ctx.inputs``. Bad input raises
    PlanError naming the step and stores nothing.

    ``within(conn, job_id)`` runs in the transaction that inserts the job rows: whatever
    must exist together with the job or not at all (the requests it serves marked running)
    commits or rolls back with it, so no crash can leave one without the other. If it
    raises, no job is stored.

    ``conn``: insert the job rows in the caller's transaction on the data store instead of
    one of this call's own. The key is committed at once (it lives in the key store): a
    caller whose transaction then fails calls ``destroy_key`` (an orphan key is harmless
    random bytes, but noise). ``local``: the job will run in this process (an inline
    executor): its plan and key are kept in memory for that run, saving it two reads.
    ``claim`` (with ``local``): (worker id, lease seconds) of the inline executor that will
    run it: the job is stored already running with its step 0 leased to that worker (as
    ``run_job`` would claim it first thing), saving the two UPDATEs of that claim. A
    process that dies before running it leaves a running step whose lease expires:
    ``recover`` hands the job on as any other whose worker died."""
    if not isinstance(kind, str) or not 0 < len(kind) <= 24:
        raise PlanError(f"job kind {kind!r}: 1 to 24 characters expected")
    if not steps:
        raise PlanError(f"job {kind!r}: a plan needs at least one step")
    known = registered_steps()
    plan_steps: list[dict[str, Any]] = []
    for seq, spec in enumerate(steps):
        where = f"job {kind!r} step {seq}"
        if not isinstance(spec, StepSpec):
            raise PlanError(f"{where}: a StepSpec expected, got {type(spec).__name__}")
        if not isinstance(spec.kind, str) or not 0 < len(spec.kind) <= 24:
            raise PlanError(f"{where}: step kind {spec.kind!r}: 1 to 24 characters expected")
        if require_handlers and spec.kind not in known:
            raise PlanError(
                f"{where}: no handler registered for step kind {spec.kind!r} "
                f"(registered: {', '.join(sorted(known)) or 'none'})"
            )
        if spec.target is not None and (not isinstance(spec.target, str) or len(spec.target) > 256):
            raise PlanError(f"{where}: target must be a string of at most 256 characters")
        if not isinstance(spec.params, Mapping):
            raise PlanError(f"{where}: params must be a mapping, got {type(spec.params).__name__}")
        plan_steps.append({"kind": spec.kind, "target": spec.target, "params": dict(spec.params)})
    if inputs is not None and not isinstance(inputs, Mapping):
        raise PlanError(f"job {kind!r}: inputs must be a mapping, got {type(inputs).__name__}")
    try:
        # One serialisation checks every step's params at once; only a failure looks
        # for the step to name.
        steps_json = json.dumps(plan_steps, allow_nan=False)
    except (TypeError, ValueError):
        for seq, st in enumerate(plan_steps):
            _check_json(st["params"], f"job {kind!r} step {seq} params")
        raise  # pragma: no cover - one of the steps raised above
    if inputs is not None:
        _check_json(dict(inputs), f"job {kind!r} inputs")

    jid = job_id or secrets.token_hex(16)
    # The key first: a job row whose key is missing could never run, while a key whose job
    # insert failed is only an orphan random key (removed below on the way out).
    cipher = _store_key(keys, keyring, jid)
    sealed = None if inputs is None else cipher.seal_inputs(inputs)
    # {"format", "steps", "inputs"}, around the steps' JSON made above (not made twice).
    extra = "" if sealed is None else f', "inputs": "{base64.b64encode(sealed).decode()}"'
    plan_json = f'{{"format": {PLAN_FORMAT}, "steps": {steps_json}{extra}}}'
    now = _now()
    claimed = claim if local else None
    until = now + timedelta(seconds=claimed[1]) if claimed else now

    def insert_rows(c: Connection) -> None:
        status = RUNNING if claimed else PENDING
        c.execute(insert(jobs).values(id=jid, kind=kind, status=status, created_at=now, plan=plan_json))
        step_rows: list[dict[str, Any]] = [
            {
                "job_id": jid,
                "seq": seq,
                "kind": st["kind"],
                "target": st["target"],
                "status": PENDING,
                "leased_by": None,
                "leased_until": None,
                "attempts": 0,
            }
            for seq, st in enumerate(plan_steps)
        ]
        if claimed:
            step_rows[0].update(
                status=RUNNING, leased_by=claimed[0], leased_until=_stored(c, until), attempts=1
            )
        c.execute(insert(job_steps), step_rows)
        if within is not None:
            within(c, jid)

    try:
        if conn is None:
            with data.begin() as own:
                insert_rows(own)
        else:
            insert_rows(conn)
    except BaseException:
        destroy_key(keys, jid)
        raise
    if local:
        specs = tuple(StepSpec(st["kind"], st["target"], st["params"]) for st in json.loads(steps_json))
        lease = None
        if claimed:
            lease = Lease(jid, 0, specs[0].kind, specs[0].target, claimed[0], 1, until)
        _keep_local(jid, _Plan(kind, RUNNING if claimed else PENDING, specs, sealed), cipher, lease)
    return jid


@dataclass(frozen=True)
class _Plan:
    kind: str
    status: str
    steps: tuple[StepSpec, ...]
    inputs: bytes | None


def _load_plan(data: Engine, job_id: str) -> _Plan:
    with _reading(data) as conn:
        row = conn.execute(select(jobs.c.kind, jobs.c.status, jobs.c.plan).where(jobs.c.id == job_id)).first()
    if row is None:
        raise JobNotFound(job_id)
    plan = json.loads(row.plan)
    if plan.get("format") != PLAN_FORMAT:
        raise JobError(f"job {job_id}: plan format {plan.get('format')!r} is not {PLAN_FORMAT}")
    specs = tuple(StepSpec(s["kind"], s["target"], s["params"]) for s in plan["steps"])
    sealed = plan.get("inputs")
    return _Plan(row.kind, row.status, specs, base64.b64decode(sealed) if sealed else None)


# --------------------------------------------------------------------------- status


def _step_state(r: Any) -> StepState:
    return StepState(
        seq=r.seq,
        kind=r.kind,
        target=r.target,
        status=r.status,
        attempts=r.attempts,
        leased_by=r.leased_by,
        leased_until=_utc(r.leased_until),
        error=r.error,
        finished_at=_utc(r.finished_at),
    )


def job_status(data: Engine, job_id: str) -> JobStatus:
    """The job and each of its steps (one SELECT)."""
    j, s = jobs.c, job_steps.c
    with _reading(data) as conn:
        rows = conn.execute(
            select(
                j.id.label("job_id"),
                j.kind.label("job_kind"),
                j.status.label("job_status"),
                j.created_at.label("job_created_at"),
                j.finished_at.label("job_finished_at"),
                s.seq,
                s.kind,
                s.target,
                s.status,
                s.attempts,
                s.leased_by,
                s.leased_until,
                s.error,
                s.finished_at,
            )
            .select_from(jobs.outerjoin(job_steps, s.job_id == j.id))
            .where(j.id == job_id)
            .order_by(s.seq)
        ).all()
    if not rows:
        raise JobNotFound(job_id)
    job = rows[0]
    created = _utc(job.job_created_at)
    assert created is not None
    return JobStatus(
        id=job.job_id,
        kind=job.job_kind,
        status=job.job_status,
        created_at=created,
        finished_at=_utc(job.job_finished_at),
        steps=tuple(_step_state(r) for r in rows if r.seq is not None),
    )


def progress(data: Engine, job_id: str) -> tuple[int, int]:
    """(steps done, steps in total): one aggregate SELECT, cheap enough to poll."""
    with _reading(data) as conn:
        row = conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((job_steps.c.status == DONE, 1), else_=0)), 0),
            ).where(job_steps.c.job_id == job_id)
        ).one()
    total, done = int(row[0]), int(row[1])
    if total == 0:
        raise JobNotFound(job_id)
    return done, total


def wait_for(
    data: Engine,
    job_id: str,
    *,
    timeout: float | None = None,
    poll: float = 0.2,
    on_progress: Callable[[int, int], None] | None = None,
) -> JobStatus:
    """Poll until the job ends (or ``timeout`` seconds pass: TimeoutError). For the CLI,
    with ``on_progress(done, total)`` called whenever the count changes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen: tuple[int, int] | None = None
    while True:
        st = job_status(data, job_id)
        if on_progress is not None and st.progress != seen:
            seen = st.progress
            on_progress(*seen)
        if st.finished:
            return st
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} not finished after {timeout} s ({st.done}/{st.total} steps)")
        time.sleep(poll)


def cancel(data: Engine, keys: Engine, job_id: str) -> JobStatus:
    """Stop a job: steps not done become cancelled (a worker running one loses its lease:
    its result is discarded), results are cleared and the job key destroyed. A job that has
    already ended is left as it is."""
    with data.begin() as conn:
        found = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).first()
        if found is None:
            raise JobNotFound(job_id)
        cancelled = conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_((PENDING, RUNNING)))
            .values(status=CANCELLED, finished_at=_now())
        ).rowcount
        if cancelled:
            conn.execute(
                update(job_steps)
                .where(job_steps.c.job_id == job_id, job_steps.c.status.in_((PENDING, RUNNING)))
                .values(status=CANCELLED, leased_by=None, leased_until=None)
            )
            conn.execute(update(job_steps).where(job_steps.c.job_id == job_id).values(result=None))
    if cancelled:
        # After the commit: were this to die in between, recover() sweeps the key.
        destroy_key(keys, job_id)
    return job_status(data, job_id)


# --------------------------------------------------------------------------- leases


@dataclass
class Lease:
    """A worker's claim on one step: valid while ``leased_by``/``attempts`` in the row
    still match and the row is running."""

    job_id: str
    seq: int
    kind: str
    target: str | None
    worker_id: str
    attempt: int
    until: datetime


@dataclass(frozen=True)
class _Blocked:
    until: datetime
    holder: str | None  # a live lease of another worker; None: waiting for a retry time


@dataclass(frozen=True)
class _Ended:
    status: str  # done|failed: all steps settled, the end may still be due; or final already
    final: bool  # the job row already says so


def lease_step(
    data: Engine, job_id: str, worker_id: str, lease_seconds: float = 30, *, max_attempts: int = 3
) -> Lease | _Blocked | _Ended:
    """Claim the next runnable step of the job, or say why there is none."""
    if len(worker_id) > 64:
        raise ValueError(f"worker id {worker_id!r}: at most 64 characters")
    s = job_steps.c
    while True:
        now = _now()
        with data.begin() as conn:
            job = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).first()
            if job is None:
                raise JobNotFound(job_id)
            if job.status in FINAL:
                return _Ended(job.status, True)
            row = conn.execute(
                select(s.seq, s.kind, s.target, s.status, s.attempts, s.leased_by, s.leased_until)
                .where(s.job_id == job_id, s.status != DONE)
                .order_by(s.seq)
                .limit(1)
            ).first()
            if row is None:
                return _Ended(DONE, False)
            if row.status in (FAILED, CANCELLED):
                return _Ended(FAILED if row.status == FAILED else CANCELLED, False)
            until = _utc(row.leased_until)
            if until is not None and until > now:
                # Running: another worker's live lease. Pending: the retry time to wait for.
                return _Blocked(until, row.leased_by if row.status == RUNNING else None)
            if row.status == RUNNING and row.attempts >= max_attempts:
                conn.execute(
                    update(job_steps)
                    .where(
                        s.job_id == job_id, s.seq == row.seq, s.status == RUNNING, s.attempts == row.attempts
                    )
                    .values(
                        status=FAILED,
                        leased_by=None,
                        leased_until=None,
                        finished_at=now,
                        error=f"no worker finished the step in {row.attempts} attempts "
                        f"(the last one, {row.leased_by}, lost its lease)",
                    )
                )
                continue
            if job.status == PENDING:
                # The job row before the step row, as everywhere else (cancel, the end):
                # one lock order, no deadlock on PostgreSQL.
                conn.execute(
                    update(jobs).where(jobs.c.id == job_id, jobs.c.status == PENDING).values(status=RUNNING)
                )
            lease_end = now + timedelta(seconds=lease_seconds)
            claimed = conn.execute(
                update(job_steps)
                .where(
                    s.job_id == job_id, s.seq == row.seq, s.status == row.status, s.attempts == row.attempts
                )
                .values(
                    status=RUNNING,
                    leased_by=worker_id,
                    leased_until=_stored(conn, lease_end),
                    attempts=row.attempts + 1,
                )
            ).rowcount
            if claimed != 1:
                continue  # another worker got there first: look again
            if row.status == RUNNING:
                log.warning(
                    "job %s step %d: lease of %s expired, taken over by %s (attempt %d)",
                    job_id,
                    row.seq,
                    row.leased_by,
                    worker_id,
                    row.attempts + 1,
                )
            return Lease(job_id, row.seq, row.kind, row.target, worker_id, row.attempts + 1, lease_end)


def _held(lease: Lease) -> Any:
    s = job_steps.c
    return and_(
        s.job_id == lease.job_id,
        s.seq == lease.seq,
        s.status == RUNNING,
        s.leased_by == lease.worker_id,
        s.attempts == lease.attempt,
    )


def renew_lease(data: Engine, lease: Lease, lease_seconds: float = 30) -> bool:
    """Extend the lease; False when it was lost (taken over, or the job cancelled)."""
    until = _now() + timedelta(seconds=lease_seconds)
    with data.begin() as conn:
        ok = conn.execute(
            update(job_steps).where(_held(lease)).values(leased_until=_stored(conn, until))
        ).rowcount
    if ok:
        lease.until = until
    return bool(ok)


def complete_step(data: Engine, cipher: JobCipher, lease: Lease, result: Mapping[str, Any] | None) -> bool:
    """Store the result and mark the step done, if the lease still holds: one guarded
    UPDATE. False (nothing changed) when another worker took the step over."""
    blob = None if result is None else cipher.seal_result(lease.seq, result)
    return complete_step_blob(data, lease, blob)


# The statements of the one-worker path, built once (with bind parameters): building an
# UPDATE with its CASEs costs more in Python than the database takes to run it.
_s = job_steps.c
_TS = _s.leased_until.type


def _for_step(done: Any, other: Any) -> Any:
    """A value for the row of step ``:p_seq`` (``done``) and for the other row(s)."""
    return case((_s.seq == bindparam("p_seq"), done), else_=other)


_START_JOB = (
    update(jobs).where(jobs.c.id == bindparam("p_job"), jobs.c.status == PENDING).values(status=RUNNING)
)
_CLAIM_FIRST = (
    update(job_steps)
    .where(_s.job_id == bindparam("p_job"), _s.seq == 0, _s.status == PENDING, _s.attempts == 0)
    .values(
        status=RUNNING,
        leased_by=bindparam("p_worker"),
        leased_until=bindparam("p_until", type_=_TS),
        attempts=1,
    )
)
_HELD = and_(
    _s.status == RUNNING, _s.leased_by == bindparam("p_worker"), _s.attempts == bindparam("p_attempt")
)
_ADVANCE = (
    update(job_steps)
    .where(
        _s.job_id == bindparam("p_job"),
        or_(
            and_(_s.seq == bindparam("p_seq"), _HELD),
            and_(
                _s.seq == bindparam("p_next"),
                _s.status == PENDING,
                or_(_s.leased_until.is_(None), _s.leased_until <= bindparam("p_at", type_=_TS)),
            ),
        ),
    )
    .values(
        status=_for_step(DONE, RUNNING),
        result=_for_step(bindparam("p_result", type_=_s.result.type), _s.result),
        error=_for_step(None, _s.error),
        leased_by=_for_step(None, bindparam("p_worker")),
        leased_until=_for_step(None, bindparam("p_until", type_=_TS)),
        attempts=_for_step(_s.attempts, _s.attempts + 1),
        finished_at=_for_step(bindparam("p_at", type_=_TS), _s.finished_at),
    )
    .returning(_s.seq, _s.attempts)
)
_END_JOB = (
    update(jobs)
    .where(jobs.c.id == bindparam("p_job"), jobs.c.status == RUNNING)
    .values(status=DONE, finished_at=bindparam("p_at", type_=jobs.c.finished_at.type))
)
_COMPLETE_LAST = (
    update(job_steps)
    .where(_s.job_id == bindparam("p_job"), or_(_s.seq != bindparam("p_seq"), _HELD))
    .values(
        result=None,
        status=_for_step(DONE, _s.status),
        error=_for_step(None, _s.error),
        leased_by=_for_step(None, _s.leased_by),
        leased_until=_for_step(None, _s.leased_until),
        finished_at=_for_step(bindparam("p_at", type_=_TS), _s.finished_at),
    )
)


def _claim_first(
    data: Engine, job_id: str, worker_id: str, lease_seconds: float, plan: _Plan
) -> Lease | None:
    """Start a job no one has started: the job running and step 0 claimed, in one
    transaction of two guarded UPDATEs (a job still pending has no step claimed ever, so
    step 0 is pending with no attempt). None, with nothing changed, when the job is not
    pending any more: lease_step then looks at it properly."""
    until = _now() + timedelta(seconds=lease_seconds)
    with data.connect() as conn, conn.begin() as trans:
        if conn.execute(_START_JOB, {"p_job": job_id}).rowcount != 1:
            return None
        params = {"p_job": job_id, "p_worker": worker_id, "p_until": _stored(conn, until)}
        if conn.execute(_CLAIM_FIRST, params).rowcount != 1:  # pragma: no cover - a pending
            trans.rollback()  # job whose first step moved: lease_step looks again
            return None
    first = plan.steps[0]
    return Lease(job_id, 0, first.kind, first.target, worker_id, 1, until)


def _complete_and_claim(
    data: Engine, lease: Lease, blob: bytes | None, nxt: StepSpec, lease_seconds: float
) -> Lease | bool:
    """Complete the leased step and claim the next one with one UPDATE of both rows.

    The step is guarded by the lease as in complete_step; the next one must be pending
    and due. ``RETURNING`` names the rows changed: both -> the next step's Lease; only
    the completed one -> True (the next step is not ours to take now: lease_step finds
    out why); anything without the completed step -> rolled back, False (the lease was
    lost). Stores without ``UPDATE ... RETURNING`` take the two statements of
    complete_step and lease_step."""
    if not data.dialect.update_returning:  # pragma: no cover - PostgreSQL and SQLite have it
        return complete_step_blob(data, lease, blob)
    n, now = lease.seq, _now()
    until = now + timedelta(seconds=lease_seconds)
    with data.connect() as conn, conn.begin() as trans:
        params = {
            "p_job": lease.job_id,
            "p_seq": n,
            "p_next": n + 1,
            "p_worker": lease.worker_id,
            "p_attempt": lease.attempt,
            "p_at": _stored(conn, now),
            "p_until": _stored(conn, until),
            "p_result": blob,
        }
        changed = {r.seq: r.attempts for r in conn.execute(_ADVANCE, params)}
        if n not in changed:
            trans.rollback()
            return False
    if n + 1 not in changed:
        return True
    return Lease(lease.job_id, n + 1, nxt.kind, nxt.target, lease.worker_id, changed[n + 1], until)


def complete_step_blob(data: Engine, lease: Lease, blob: bytes | None) -> bool:
    """complete_step with the result already sealed."""
    with data.begin() as conn:
        ok = conn.execute(
            update(job_steps)
            .where(_held(lease))
            .values(
                status=DONE, result=blob, error=None, leased_by=None, leased_until=None, finished_at=_now()
            )
        ).rowcount
    return bool(ok)


def _complete_last(data: Engine, lease: Lease, steps: int) -> bool | None:
    """Complete the job's last step and end the job in one transaction: the job row done
    (first, as cancel locks it: one lock order), then one UPDATE of the step rows that
    completes the last (guarded by the lease) and clears every result. The guard held
    when every row changed; else nothing is kept. For jobs no end hook waits for (the
    hooks run before the job is marked final). True: the job ended (its key is still to
    destroy); False: the lease was lost; None: the job is not running (cancelled): nothing
    changed, the ordinary path takes over."""
    now = _now()
    with data.connect() as conn, conn.begin() as trans:
        at = _stored(conn, now)
        if conn.execute(_END_JOB, {"p_job": lease.job_id, "p_at": now}).rowcount != 1:
            trans.rollback()
            return None
        params = {
            "p_job": lease.job_id,
            "p_seq": lease.seq,
            "p_worker": lease.worker_id,
            "p_attempt": lease.attempt,
            "p_at": at,
        }
        if conn.execute(_COMPLETE_LAST, params).rowcount != steps:
            trans.rollback()
            return False
    return True


def error_text(exc: BaseException) -> str:
    """What is stored of an error: its type and the first line of its message. SQLAlchemy
    appends the SQL and its parameters, and PostgreSQL a DETAIL line with key values, on
    later lines: personal data stays out of the job record."""
    orig = getattr(exc, "orig", None)  # a DBAPI error wrapped by SQLAlchemy
    inner = orig if isinstance(orig, BaseException) else exc
    first = (str(inner).strip().splitlines() or [""])[0]
    text = f"{type(inner).__name__}: {first}" if first else type(inner).__name__
    return text[:ERROR_LIMIT]


def fail_step(
    data: Engine,
    lease: Lease,
    error: str,
    *,
    retry: bool,
    max_attempts: int = 3,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
) -> str:
    """Record a failed run: back to pending after a backoff while attempts remain
    (returns "retry"), else failed ("failed"); "lost" if the lease was already lost."""
    now = _now()
    with data.begin() as conn:
        if retry and lease.attempt < max_attempts:
            delay = min(backoff * 2 ** (lease.attempt - 1), max_backoff)
            ok = conn.execute(
                update(job_steps)
                .where(_held(lease))
                .values(
                    status=PENDING,
                    leased_by=None,
                    # For a pending step, leased_until is the time before which it must not
                    # run again: any worker may retry it from then on.
                    leased_until=_stored(conn, now + timedelta(seconds=delay)),
                    error=error,
                )
            ).rowcount
            return "retry" if ok else "lost"
        ok = conn.execute(
            update(job_steps)
            .where(_held(lease))
            .values(status=FAILED, leased_by=None, leased_until=None, error=error, finished_at=now)
        ).rowcount
        return "failed" if ok else "lost"


# --------------------------------------------------------------------------- the end


def finish_job(data: Engine, keys: Engine, job_id: str, status: str, resources: Mapping[str, object]) -> None:
    """End a job whose steps are settled: hooks, destroy the key, mark it final, clear
    results. Idempotent, in this order so that a crash anywhere is finished by a re-run."""
    st = job_status(data, job_id)
    if st.finished:
        destroy_key(keys, job_id)
        return
    for hook in end_hooks(st.kind, status):
        hook(JobEnd(job_id, st.kind, status, st.error, resources))
    destroy_key(keys, job_id)
    with data.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_((PENDING, RUNNING)))
            .values(status=status, finished_at=_now())
        )
        conn.execute(update(job_steps).where(job_steps.c.job_id == job_id).values(result=None))
    log.info("job %s (%s) %s", job_id, st.kind, status)


# --------------------------------------------------------------------------- running


def default_worker_id(prefix: str = "w") -> str:
    """host:pid:thread:random, unique per run_job caller; at most 64 characters."""
    host = socket.gethostname()[:24]
    return f"{prefix}@{host}:{os.getpid()}:{threading.get_ident() % 100000}:{secrets.token_hex(3)}"[:64]


@dataclass
class _Beat:
    data: Engine
    lease: Lease
    lease_seconds: float
    lost: threading.Event
    interval: float
    due: float  # time.monotonic() of the next renewal


class _Heartbeats:
    """One thread per process renews the leases of every step running in it, each every
    third of its lease; a renewal that finds the lease gone sets the step's ``lost``
    event. (A thread per step cost about a millisecond to start and join, more than a
    short step's own bookkeeping.)"""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child: the parent's thread is not there, and its lock may have
        # been held at the fork.
        self._cond = threading.Condition()
        self._held: dict[int, _Beat] = {}
        self._next = 0
        self._thread: threading.Thread | None = None
        self._wake_at: float | None = None  # when the thread wakes next; None: when told

    @contextmanager
    def keep(self, data: Engine, lease: Lease, lease_seconds: float, lost: threading.Event) -> Iterator[None]:
        interval = max(lease_seconds / 3, 0.05)
        beat = _Beat(data, lease, lease_seconds, lost, interval, time.monotonic() + interval)
        with self._cond:
            key = self._next = self._next + 1
            self._held[key] = beat
            if self._thread is None or not self._thread.is_alive():  # started on first use
                self._thread = threading.Thread(target=self._run, name="fiduciary-leases", daemon=True)
                self._thread.start()
            if self._wake_at is None or beat.due < self._wake_at:
                self._cond.notify()  # else it wakes in time anyway: no thread switch per step
        try:
            yield
        finally:
            with self._cond:
                self._held.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [(k, b) for k, b in self._held.items() if b.due <= now]
                if not due:
                    self._wake_at = min((b.due for b in self._held.values()), default=None)
                    self._cond.wait(None if self._wake_at is None else self._wake_at - now)
                    self._wake_at = None
                    continue
            for key, b in due:
                try:
                    ok = renew_lease(b.data, b.lease, b.lease_seconds)
                except Exception:  # the store briefly unreachable: the next beat tries again
                    log.warning(
                        "job %s step %d: lease renewal failed", b.lease.job_id, b.lease.seq, exc_info=True
                    )
                    ok = True
                with self._cond:
                    if self._held.get(key) is not b:
                        continue  # the step ended meanwhile
                    if ok:
                        b.due = time.monotonic() + b.interval
                    else:
                        b.lost.set()
                        del self._held[key]


_BEATS = _Heartbeats()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_BEATS._reset)


def _heartbeat(data: Engine, lease: Lease, lease_seconds: float, lost: threading.Event) -> Any:
    """Renew ``lease`` while the block runs (see _Heartbeats)."""
    return _BEATS.keep(data, lease, lease_seconds, lost)


def _engines(resources: Mapping[str, object]) -> tuple[Engine, Engine, Keyring]:
    data, keys, keyring = resources.get(DATA), resources.get(KEYS), resources.get(KEYRING)
    if not isinstance(data, Engine) or not isinstance(keys, Engine) or not isinstance(keyring, Keyring):
        raise TypeError(
            f"run_job resources need {DATA!r} and {KEYS!r} (SQLAlchemy engines) and {KEYRING!r} "
            f"(a Keyring); got {sorted(resources)}"
        )
    return data, keys, keyring


def _load_results(data: Engine, cipher: JobCipher, job_id: str, after: int, before: int) -> dict[int, Any]:
    s = job_steps.c
    with _reading(data) as conn:
        rows = conn.execute(
            select(s.seq, s.result)
            .where(s.job_id == job_id, s.seq > after, s.seq < before, s.status == DONE)
            .order_by(s.seq)
        ).all()
    return {r.seq: None if r.result is None else cipher.open_result(r.seq, r.result) for r in rows}


def run_job(
    job_id: str,
    worker_id: str,
    resources: Mapping[str, object],
    lease_seconds: float = 30,
    *,
    max_attempts: int = 3,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    wait_for_lease: float | None = None,
    heartbeat: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> JobStatus:
    """Run the job's remaining steps in this thread until it ends, and return its status.

    ``resources`` must hold ``data`` and ``keys`` (engines) and ``keyring``; all of it is
    handed to the handlers. When another worker holds a live lease on the next step, this
    waits up to ``wait_for_lease`` seconds (default: 1.5 leases) for it to end — a dead
    worker's lease expires and is taken over — then returns the status as it is: a live
    worker is still on the job."""
    drive_job(
        job_id,
        worker_id,
        resources,
        lease_seconds,
        max_attempts=max_attempts,
        backoff=backoff,
        max_backoff=max_backoff,
        wait_for_lease=wait_for_lease,
        heartbeat=heartbeat,
        on_progress=on_progress,
    )
    data, _, _ = _engines(resources)
    return job_status(data, job_id)


def drive_job(
    job_id: str,
    worker_id: str,
    resources: Mapping[str, object],
    lease_seconds: float = 30,
    *,
    max_attempts: int = 3,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    wait_for_lease: float | None = None,
    heartbeat: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """``run_job`` without reading the status at the end (executors do not need it)."""
    data, keys, keyring = _engines(resources)
    if max_attempts < 1 or lease_seconds <= 0:
        raise ValueError("max_attempts >= 1 and lease_seconds > 0 expected")
    patience = 1.5 * lease_seconds if wait_for_lease is None else wait_for_lease
    handed = _take_local(job_id)
    cipher: JobCipher | None
    claimed: Lease | None = None
    if handed is not None:
        plan, cipher, claimed = handed
        if claimed is not None and claimed.worker_id != worker_id:
            claimed = None  # stored for another worker: lease_step sorts it out
    else:
        plan = _load_plan(data, job_id)
        if plan.status in FINAL:
            return
        cipher = load_cipher(keys, keyring, job_id)
    inputs: Mapping[str, Any] = {}
    if cipher is not None and plan.inputs is not None:
        inputs = cipher.open_inputs(plan.inputs)
    last = len(plan.steps) - 1
    # Ending in the last step's transaction skips the hooks: only when none waits for "done".
    quick_end = not end_hooks(plan.kind, DONE)
    results: dict[int, Any] = {}
    waiting_since: float | None = None
    ahead: Lease | None = None  # the next step, claimed with the completion of the previous
    if cipher is not None and plan.status == PENDING:
        ahead = _claim_first(data, job_id, worker_id, lease_seconds, plan)
    elif claimed is not None:
        # Created with step 0 leased to us; a lease that ran out while the job waited in
        # the queue is renewed first (False: taken over or cancelled; lease_step looks).
        ahead = claimed if claimed.until > _now() or renew_lease(data, claimed, lease_seconds) else None
    while True:
        got: Lease | _Blocked | _Ended
        if ahead is not None:
            got, ahead = ahead, None
        else:
            got = lease_step(data, job_id, worker_id, lease_seconds, max_attempts=max_attempts)
        if isinstance(got, _Ended):
            if not got.final:
                finish_job(data, keys, job_id, DONE if got.status == DONE else FAILED, resources)
            return
        if isinstance(got, _Blocked):
            now = time.monotonic()
            if got.holder is not None:
                waiting_since = now if waiting_since is None else waiting_since
                if now - waiting_since > patience:
                    return
            left = (got.until - _now()).total_seconds()
            time.sleep(min(max(left, 0.02), 1.0))
            continue
        waiting_since = None
        lease = got
        if cipher is None:
            fail_step(data, lease, "the job key is gone (job ended or cancelled)", retry=False)
            continue
        try:
            handler = handler_for(lease.kind)
        except UnknownStep as exc:
            # This process lacks the module registering the kind: another worker may
            # have it, so this counts as a failed attempt rather than failing the job.
            fail_step(data, lease, str(exc), retry=True, max_attempts=max_attempts, backoff=backoff)
            continue
        loaded = max(results, default=-1)
        if loaded < lease.seq - 1:
            results.update(_load_results(data, cipher, job_id, loaded, lease.seq))
        ctx = StepContext(
            job_id=job_id,
            job_kind=plan.kind,
            seq=lease.seq,
            kind=lease.kind,
            target=lease.target,
            params=plan.steps[lease.seq].params,
            results={k: v for k, v in results.items() if k < lease.seq},
            resources=resources,
            inputs=inputs,
            attempt=lease.attempt,
            worker_id=worker_id,
            plan=plan.steps,
            _renew=functools.partial(renew_lease, data, lease, lease_seconds),
        )
        try:
            if heartbeat:
                with _heartbeat(data, lease, lease_seconds, ctx._lost):
                    result = handler(ctx)
            else:
                result = handler(ctx)
            if result is not None and not isinstance(result, Mapping):
                raise PermanentStepError(
                    f"handler of step kind {lease.kind!r} returned {type(result).__name__}, "
                    "a mapping or None expected"
                )
        except LeaseLost:
            log.warning("job %s step %d: %s lost its lease; result discarded", job_id, lease.seq, worker_id)
            continue
        except Exception as exc:
            permanent = isinstance(exc, PermanentStepError)
            outcome = fail_step(
                data,
                lease,
                str(exc)[:ERROR_LIMIT] if permanent else error_text(exc),
                retry=not permanent,
                max_attempts=max_attempts,
                backoff=backoff,
                max_backoff=max_backoff,
            )
            log.warning(
                "job %s step %d (%s) attempt %d raised %s: %s",
                job_id,
                lease.seq,
                lease.kind,
                lease.attempt,
                type(exc).__name__,
                outcome,
            )
            continue
        kept: Lease | bool | None
        if lease.seq == last and quick_end:
            # The last result is never stored: the job's end clears every result.
            kept = _complete_last(data, lease, len(plan.steps))
            if kept is True:
                destroy_key(keys, job_id)
                log.info("job %s (%s) %s", job_id, plan.kind, DONE)
                if on_progress is not None:
                    on_progress(len(plan.steps), len(plan.steps))
                return
            if kept is None:  # not running any more (cancelled): the ordinary completion
                kept = complete_step_blob(data, lease, None)
        else:
            blob = None if result is None else cipher.seal_result(lease.seq, result)
            if lease.seq < last:
                kept = _complete_and_claim(data, lease, blob, plan.steps[lease.seq + 1], lease_seconds)
            else:
                kept = complete_step_blob(data, lease, blob)
        if kept is False:
            log.warning(
                "job %s step %d: %s finished after losing its lease; its result was rejected",
                job_id,
                lease.seq,
                worker_id,
            )
            continue
        results[lease.seq] = None if result is None else dict(result)
        if isinstance(kept, Lease):
            ahead = kept
        if on_progress is not None:
            on_progress(*progress(data, job_id))


# --------------------------------------------------------------------------- recovery


def recover(
    data: Engine,
    keys: Engine | None = None,
    *,
    grace: float = 30.0,
    stale_after: float = 600.0,
    include_pending: bool = False,
    include_live: bool = False,
) -> list[str]:
    """Ids of unfinished jobs that no live worker is running, to be submitted again:

    - a step ``running`` whose lease expired (its worker died);
    - a started job with no step running and nothing happening for ``grace`` seconds (its
      worker died between two steps, or while ending the job);
    - a job never started, created more than ``stale_after`` seconds ago (its broker
      message was lost), or any never-started job with ``include_pending`` (an inline
      executor starting up: its queue died with the previous process);
    - with ``include_live``, jobs whose step leases are still live too.

    Also sweeps the keys of jobs that ended in the last day (a worker that died between
    marking a job cancelled and destroying its key). Submitting a job twice is harmless:
    run_job finds it done, or waits for the other worker's lease."""
    now = _now()
    s = job_steps.c
    with data.connect() as conn:
        rows = conn.execute(
            select(
                jobs.c.id,
                jobs.c.status,
                jobs.c.created_at,
                func.min(case((s.status == RUNNING, s.leased_until))).label("running_min"),
                func.max(case((s.status == PENDING, s.leased_until))).label("retry_at"),
                func.max(s.finished_at).label("last_done"),
            )
            .select_from(jobs.join(job_steps, s.job_id == jobs.c.id))
            .where(jobs.c.status.in_((PENDING, RUNNING)))
            .group_by(jobs.c.id, jobs.c.status, jobs.c.created_at)
            .order_by(jobs.c.created_at)
        ).all()
        ended = []
        if keys is not None:
            since = _stored(conn, now - timedelta(days=1))
            ended = list(
                conn.execute(
                    select(jobs.c.id).where(
                        jobs.c.status.in_(tuple(FINAL)),
                        or_(jobs.c.finished_at >= since, jobs.c.finished_at.is_(None)),
                    )
                ).scalars()
            )
    for i in range(0, len(ended), 500):
        assert keys is not None
        with keys.begin() as kconn:
            kconn.execute(delete(request_keys).where(request_keys.c.owner_id.in_(ended[i : i + 500])))
    out: list[str] = []
    for r in rows:
        running_min = _utc(r.running_min)
        if running_min is not None:
            if include_live or running_min <= now:
                out.append(r.id)
            continue
        if r.status == PENDING:
            created = _utc(r.created_at)
            assert created is not None
            if include_pending or include_live or (now - created).total_seconds() > stale_after:
                out.append(r.id)
            continue
        moments = [t for t in (_utc(r.retry_at), _utc(r.last_done), _utc(r.created_at)) if t is not None]
        if include_live or (now - max(moments)).total_seconds() > grace:
            out.append(r.id)
    return out


__all__ = [
    "JobCipher",
    "Lease",
    "cancel",
    "complete_step",
    "create_job",
    "default_worker_id",
    "destroy_key",
    "drive_job",
    "error_text",
    "fail_step",
    "finish_job",
    "job_status",
    "lease_step",
    "load_cipher",
    "progress",
    "recover",
    "renew_lease",
    "run_job",
    "wait_for",
]
