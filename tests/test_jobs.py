"""Jobs on the real stores (SQLite and PostgreSQL): ordered steps, encrypted results,
retries, lease takeover, cancel, recovery and the inline executor."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from fiduciary.config import Settings
from fiduciary.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    CeleryExecutor,
    InlineExecutor,
    JobEnd,
    PermanentStepError,
    PlanError,
    StepContext,
    StepSpec,
    cancel,
    complete_step,
    create_job,
    drive_job,
    executor_from_settings,
    job_status,
    lease_step,
    progress,
    recover,
    register_job_end,
    register_step,
    run_job,
    unregister_job_end,
    wait_for,
)
from fiduciary.jobs.runner import Lease, _complete_and_claim, error_text, load_cipher
from fiduciary.store import make_engine, upgrade
from fiduciary.store.tables import job_steps, jobs, request_keys
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores

SECRET = "alice.secret@example.com"


# --------------------------------------------------------------------------- handlers
# Handlers record what they saw in resources["log"], a list the test owns.


def _log(ctx: StepContext) -> list[Any]:
    out = ctx.resources["log"]
    assert isinstance(out, list)
    return out


def h_emit(ctx: StepContext) -> Mapping[str, Any]:
    _log(ctx).append(("emit", ctx.seq, ctx.worker_id))
    return {"email": SECRET, "n": ctx.params.get("n", 0)}


def h_append(ctx: StepContext) -> Mapping[str, Any]:
    earlier = [r for r in ctx.results.values() if r is not None]
    _log(ctx).append(("append", ctx.seq, [r.get("n") for r in earlier]))
    return {"email": SECRET, "n": ctx.params["n"], "seen": [r.get("n") for r in earlier]}


def h_peek(ctx: StepContext) -> Mapping[str, Any] | None:
    """Reads the raw stored results of the earlier steps while the job still runs."""
    data = ctx.resources["data"]
    with data.connect() as conn:  # type: ignore[attr-defined]
        raw = conn.execute(
            select(job_steps.c.seq, job_steps.c.result).where(
                job_steps.c.job_id == ctx.job_id, job_steps.c.seq < ctx.seq
            )
        ).all()
    _log(ctx).append(("peek", {r.seq: bytes(r.result) if r.result is not None else None for r in raw}))
    _log(ctx).append(("results", dict(ctx.results), dict(ctx.inputs)))
    return None


def h_flaky(ctx: StepContext) -> Mapping[str, Any]:
    _log(ctx).append(("flaky", ctx.attempt))
    if ctx.attempt < ctx.params["succeed_on"]:
        raise ConnectionError(f"store unreachable (attempt {ctx.attempt})\nparameters: {SECRET}")
    return {"ok": ctx.attempt}


def h_permanent(ctx: StepContext) -> Mapping[str, Any]:
    _log(ctx).append(("permanent", ctx.attempt))
    raise PermanentStepError("collection app.ghosts is unreachable from any identity")


def h_gate(ctx: StepContext) -> Mapping[str, Any]:
    """Blocks on resources["gate"] when params say so (a worker that freezes mid-step)."""
    _log(ctx).append(("gate", ctx.worker_id, ctx.attempt))
    if ctx.attempt == 1:
        started = ctx.resources["started"]
        gate = ctx.resources["gate"]
        assert isinstance(started, threading.Event) and isinstance(gate, threading.Event)
        started.set()
        assert gate.wait(30)
    return {"by": ctx.worker_id}


def h_slow(ctx: StepContext) -> Mapping[str, Any]:
    _log(ctx).append(("slow", ctx.worker_id, ctx.attempt))
    time.sleep(ctx.params["seconds"])
    return {"by": ctx.worker_id}


def h_noop(ctx: StepContext) -> Mapping[str, Any]:
    return {"settings": type(ctx.resources["settings"]).__name__}


for _kind, _handler in {
    "t_noop": h_noop,
    "t_emit": h_emit,
    "t_append": h_append,
    "t_peek": h_peek,
    "t_flaky": h_flaky,
    "t_permanent": h_permanent,
    "t_gate": h_gate,
    "t_slow": h_slow,
}.items():
    register_step(_kind, _handler, replace=True)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


def res(stores: Stores, keyring: Keyring, **extra: object) -> dict[str, object]:
    return {"data": stores.data, "keys": stores.keys, "keyring": keyring, "log": [], **extra}


def key_count(stores: Stores, job_id: str) -> int:
    with stores.keys.connect() as conn:
        return int(conn.execute(select(func.count()).where(request_keys.c.owner_id == job_id)).scalar_one())


# --------------------------------------------------------------------------- tests


def test_steps_run_in_order_with_encrypted_results(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)
    job = create_job(
        stores.data,
        stores.keys,
        keyring,
        "erase",
        [StepSpec("t_emit", "app.users", {"n": 1}), StepSpec("t_append", None, {"n": 2}), StepSpec("t_peek")],
        inputs={"identity": SECRET},
    )
    assert job_status(stores.data, job).status == "pending"
    assert progress(stores.data, job) == (0, 3)
    assert key_count(stores, job) == 1
    with stores.data.connect() as conn:
        plan = conn.execute(select(jobs.c.plan).where(jobs.c.id == job)).scalar_one()
    assert SECRET not in plan and json.loads(plan)["steps"][0]["target"] == "app.users"

    seen: list[tuple[int, int]] = []
    st = run_job(job, "w1", r, on_progress=lambda d, t: seen.append((d, t)))

    assert st.status == DONE and st.progress == (3, 3) and st.finished_at is not None
    assert seen == [(1, 3), (2, 3), (3, 3)]
    log = r["log"]
    assert isinstance(log, list)
    assert [e[0] for e in log] == ["emit", "append", "peek", "results"]
    assert log[1] == ("append", 1, [1])  # step 1 saw step 0's result
    raw = log[2][1]
    # While the job ran, the stored results were ciphertexts: no plaintext in the column.
    assert set(raw) == {0, 1}
    for blob in raw.values():
        assert blob is not None and SECRET.encode() not in blob and b"email" not in blob
    _, results, inputs = log[3]
    assert results[0] == {"email": SECRET, "n": 1}
    assert results[1] == {"email": SECRET, "n": 2, "seen": [1]}
    assert inputs == {"identity": SECRET}
    assert [(s.status, s.attempts) for s in st.steps] == [(DONE, 1)] * 3
    # The end: key destroyed (crypto-shred), result blobs cleared.
    assert key_count(stores, job) == 0
    assert load_cipher(stores.keys, keyring, job) is None
    with stores.data.connect() as conn:
        assert (
            conn.execute(
                select(func.count()).where(job_steps.c.job_id == job, job_steps.c.result.is_not(None))
            ).scalar_one()
            == 0
        )
    # Running a finished job again does nothing.
    assert run_job(job, "w2", r).status == DONE
    assert len(log) == 4


def test_failing_step_retries_then_fails_the_job(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)
    job = create_job(
        stores.data,
        stores.keys,
        keyring,
        "erase",
        [StepSpec("t_emit"), StepSpec("t_flaky", "app.orders", {"succeed_on": 99}), StepSpec("t_emit")],
    )
    t0 = time.monotonic()
    st = run_job(job, "w1", r, max_attempts=3, backoff=0.05)
    elapsed = time.monotonic() - t0
    assert st.status == FAILED
    assert [s.status for s in st.steps] == [DONE, FAILED, "pending"]
    assert st.steps[1].attempts == 3
    assert r["log"] == [("emit", 0, "w1"), ("flaky", 1), ("flaky", 2), ("flaky", 3)]
    assert elapsed >= 0.05 + 0.1  # backoff 0.05 then 0.1 s between the attempts
    # The error names the step; only the message's first line is kept (no personal data).
    assert st.error == "step 1 (t_flaky app.orders): ConnectionError: store unreachable (attempt 3)"
    assert SECRET not in (st.steps[1].error or "")
    assert key_count(stores, job) == 0


def test_transient_failure_recovers(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)
    job = create_job(
        stores.data, stores.keys, keyring, "erase", [StepSpec("t_flaky", None, {"succeed_on": 2})]
    )
    st = run_job(job, "w1", r, backoff=0.01)
    assert st.status == DONE and st.steps[0].attempts == 2 and st.steps[0].error is None


def test_permanent_error_fails_at_once(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)
    job = create_job(stores.data, stores.keys, keyring, "access", [StepSpec("t_permanent", "app.ghosts")])
    st = run_job(job, "w1", r, backoff=0.01)
    assert st.status == FAILED and st.steps[0].attempts == 1
    assert (
        st.error == "step 0 (t_permanent app.ghosts): collection app.ghosts is unreachable from any identity"
    )


def test_expired_lease_is_taken_over_and_late_completion_rejected(stores: Stores, keyring: Keyring) -> None:
    job = create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit"), StepSpec("t_emit")])
    a = lease_step(stores.data, job, "worker-a", lease_seconds=1.0)
    assert isinstance(a, Lease) and a.seq == 0 and a.attempt == 1
    # While A's lease is live, B is told to wait.
    blocked = lease_step(stores.data, job, "worker-b", lease_seconds=30)
    assert not isinstance(blocked, Lease)
    time.sleep(1.2)  # A freezes past its lease
    b = lease_step(stores.data, job, "worker-b", lease_seconds=30)
    assert isinstance(b, Lease) and b.seq == 0 and b.attempt == 2
    cipher = load_cipher(stores.keys, keyring, job)
    assert cipher is not None
    assert complete_step(stores.data, cipher, b, {"by": "b"})
    assert not complete_step(stores.data, cipher, a, {"by": "a"})  # late: rejected
    with stores.data.connect() as conn:
        row = conn.execute(
            select(job_steps.c.status, job_steps.c.result, job_steps.c.attempts).where(
                job_steps.c.job_id == job, job_steps.c.seq == 0
            )
        ).one()
    assert row.status == DONE and row.attempts == 2
    assert cipher.open_result(0, row.result) == {"by": "b"}


def test_frozen_worker_is_taken_over_by_run_job(stores: Stores, keyring: Keyring) -> None:
    started, gate = threading.Event(), threading.Event()
    r = res(stores, keyring, started=started, gate=gate)
    job = create_job(
        stores.data, stores.keys, keyring, "erase", [StepSpec("t_gate"), StepSpec("t_append", None, {"n": 5})]
    )
    out: dict[str, Any] = {}

    def worker_a() -> None:
        # No heartbeat: a worker frozen (GC pause, stopped VM) stops renewing its lease.
        out["a"] = run_job(job, "worker-a", r, lease_seconds=0.5, heartbeat=False)

    ta = threading.Thread(target=worker_a)
    ta.start()
    assert started.wait(10)
    st_b = run_job(job, "worker-b", r, lease_seconds=5)  # waits out A's lease, takes over
    assert st_b.status == DONE
    gate.set()  # A wakes up and tries to complete its (stale) step
    ta.join(10)
    assert out["a"].status == DONE
    steps = job_status(stores.data, job).steps
    assert steps[0].attempts == 2 and steps[1].attempts == 1
    log = r["log"]
    assert isinstance(log, list)
    assert log[0] == ("gate", "worker-a", 1) and log[1] == ("gate", "worker-b", 2)
    assert log[2] == ("append", 1, [None])  # step 1 ran once, on B's result (no "n" in it)
    assert len(log) == 3


def test_heartbeat_keeps_a_long_step_leased(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)
    job = create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_slow", None, {"seconds": 2.5})])
    out: dict[str, Any] = {}
    ta = threading.Thread(target=lambda: out.setdefault("a", run_job(job, "worker-a", r, lease_seconds=1.0)))
    ta.start()
    time.sleep(1.5)  # past the first lease: only the heartbeat keeps it
    st = run_job(job, "worker-b", r, lease_seconds=1.0, wait_for_lease=0.2)
    assert st.status == "running"  # B saw a live lease and left the job to A
    ta.join(10)
    assert out["a"].status == DONE
    assert r["log"] == [("slow", "worker-a", 1)]
    assert job_status(stores.data, job).steps[0].attempts == 1


def test_cancel_stops_and_shreds(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)
    job = create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit"), StepSpec("t_emit")])
    lease = lease_step(stores.data, job, "worker-a")
    assert isinstance(lease, Lease)
    cipher = load_cipher(stores.keys, keyring, job)
    assert cipher is not None
    st = cancel(stores.data, stores.keys, job)
    assert st.status == CANCELLED and [s.status for s in st.steps] == [CANCELLED, CANCELLED]
    assert key_count(stores, job) == 0
    assert not complete_step(stores.data, cipher, lease, {"x": 1})  # the running worker loses
    assert run_job(job, "w", r).status == CANCELLED and r["log"] == []
    assert cancel(stores.data, stores.keys, job).status == CANCELLED  # idempotent


def test_bad_plans_change_nothing(stores: Stores, keyring: Keyring) -> None:
    with pytest.raises(PlanError, match=r"job 'erase' step 1: no handler registered for step kind 'nope'"):
        create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit"), StepSpec("nope")])
    with pytest.raises(PlanError, match=r"step 0 params: not JSON-serialisable"):
        create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit", None, {"x": object()})])
    with pytest.raises(PlanError, match="at least one step"):
        create_job(stores.data, stores.keys, keyring, "erase", [])
    with stores.data.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jobs)).scalar_one() == 0
    with stores.keys.connect() as conn:
        assert conn.execute(select(func.count()).select_from(request_keys)).scalar_one() == 0


def test_recover_finds_orphans(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)

    def mk() -> str:
        return create_job(
            stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit"), StepSpec("t_emit")]
        )

    fresh, dead, live, finished = mk(), mk(), mk(), mk()
    assert isinstance(lease_step(stores.data, dead, "gone", lease_seconds=0.01), Lease)
    live_lease = lease_step(stores.data, live, "alive", lease_seconds=60)
    assert isinstance(live_lease, Lease)
    assert run_job(finished, "w", r).status == DONE
    # A job that ended but whose key survived (its worker died in between) gets swept.
    with stores.keys.begin() as conn:
        conn.execute(
            insert(request_keys).values(
                owner_id=finished, kek_id="k1", wrapped=b"x" * 60, created_at=func.now()
            )
        )
    time.sleep(0.05)
    assert recover(stores.data, stores.keys, grace=30) == [dead]
    assert key_count(stores, finished) == 0
    assert key_count(stores, fresh) == 1  # unfinished jobs keep theirs
    assert sorted(recover(stores.data, include_pending=True)) == sorted([fresh, dead])
    assert sorted(recover(stores.data, stale_after=0.0)) == sorted([fresh, dead])
    assert sorted(recover(stores.data, include_live=True)) == sorted([fresh, dead, live])
    # A started job with nothing running for longer than the grace: its worker died
    # between two steps.
    cipher = load_cipher(stores.keys, keyring, live)
    assert cipher is not None
    assert complete_step(stores.data, cipher, live_lease, None) is True
    assert live not in recover(stores.data, grace=30)
    time.sleep(0.2)
    assert live in recover(stores.data, grace=0.1)
    # The dead worker's step is taken over by the next run.
    st = run_job(dead, "w2", r)
    assert st.status == DONE and st.steps[0].attempts == 2


def test_inline_executor_runs_jobs_in_the_background(stores: Stores, keyring: Keyring) -> None:
    r = res(stores, keyring)
    # A job left behind by a process that died mid-step: recovered when the executor starts.
    orphan = create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit")])
    assert isinstance(lease_step(stores.data, orphan, "dead-process", lease_seconds=0.01), Lease)
    time.sleep(0.05)
    ex = InlineExecutor(r, lease_seconds=2, recover_every=None)
    try:
        jobs_ = [
            create_job(
                stores.data,
                stores.keys,
                keyring,
                "access",
                [StepSpec("t_emit"), StepSpec("t_append", None, {"n": i})],
            )
            for i in range(3)
        ]
        for j in jobs_:
            ex.submit(j)
        assert ex.wait_idle(30)
        for j in [orphan, *jobs_]:
            st = wait_for(stores.data, j, timeout=5)
            assert st.status == DONE, st
        log = r["log"]
        assert isinstance(log, list)
        assert all(e[2].startswith("inline@") for e in log if e[0] == "emit")
        assert ex._thread.is_alive()
    finally:
        ex.close(timeout=10)
    assert not ex._thread.is_alive()


def test_error_text_keeps_no_parameters(stores: Stores) -> None:
    with stores.data.begin() as conn:
        conn.execute(text("CREATE TABLE t_people (email VARCHAR(100) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t_people VALUES (:e)"), {"e": SECRET})
    with pytest.raises(IntegrityError) as info, stores.data.begin() as conn:
        conn.execute(text("INSERT INTO t_people VALUES (:e)"), {"e": SECRET})
    assert SECRET in str(info.value)  # SQLAlchemy's own message carries the value ...
    kept = error_text(info.value)
    assert SECRET not in kept and "\n" not in kept  # ... what the job stores does not
    assert kept.split(":")[0] in ("IntegrityError", "UniqueViolation")


def test_job_end_hooks_run_once_the_steps_are_settled(stores: Stores, keyring: Keyring) -> None:
    ended: list[tuple[str, str, str | None, bool]] = []

    def hook(end: JobEnd) -> None:
        # Still before the key is destroyed and the job marked: the record says running.
        ended.append((end.job_id, end.status, end.error, job_status(stores.data, end.job_id).finished))

    register_job_end("t_hooked", hook)
    try:
        r = res(stores, keyring)
        ok = create_job(stores.data, stores.keys, keyring, "t_hooked", [StepSpec("t_emit")])
        bad = create_job(stores.data, stores.keys, keyring, "t_hooked", [StepSpec("t_permanent", "app.x")])
        other = create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit")])
        for j in (ok, bad, other):
            run_job(j, "w", r)
    finally:
        unregister_job_end("t_hooked", hook)
    assert ended == [
        (ok, DONE, None, False),
        (
            bad,
            FAILED,
            "step 0 (t_permanent app.x): collection app.ghosts is unreachable from any identity",
            False,
        ),
    ]


def test_executor_from_settings(tmp_path: Path) -> None:
    ring = Keyring.generate()
    settings = Settings(data_dir=tmp_path / "d", keyring=ring.to_json())
    data = make_engine(settings.resolved_database_url())
    keys = make_engine(settings.resolved_keys_database_url(), secure_delete=True)
    upgrade(data, "data")
    upgrade(keys, "keys")
    job = create_job(data, keys, ring, "erase", [StepSpec("t_noop")])
    ex = executor_from_settings(settings)  # no broker: inline, resources from the settings
    try:
        assert isinstance(ex, InlineExecutor)
        assert ex.resources["keyring"] == ring
        ex.submit(job)
        assert ex.wait_idle(30)
        assert job_status(data, job).status == DONE
    finally:
        ex.close(timeout=10)
        data.dispose()
        keys.dispose()
    celery = executor_from_settings(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    assert isinstance(celery, CeleryExecutor)  # nothing is sent until a submit
    celery.close()


# --------------------------------------------------------------------------- bookkeeping


@contextmanager
def statements(*engines: Any) -> Iterator[list[str]]:
    """The statements sent to the engines during the block (SQLite's BEGIN not counted)."""
    seen: list[str] = []

    def on(_c: object, _cur: object, statement: str, *_: object) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    for e in engines:
        event.listen(e, "before_cursor_execute", on)
    try:
        yield seen
    finally:
        for e in engines:
            event.remove(e, "before_cursor_execute", on)


@pytest.mark.parametrize("local", [False, True])
def test_a_step_costs_one_statement(stores: Stores, keyring: Keyring, local: bool) -> None:
    """Create 3 (key, job, steps), start 2 (job running, step 0 claimed), one per step
    (completion and the next claim together), end 2 (job row, key); a job handed over in
    the same process (local) reads neither its plan nor its key."""
    r = res(stores, keyring)
    specs = [StepSpec("t_emit"), StepSpec("t_append", None, {"n": 1}), StepSpec("t_append", None, {"n": 2})]
    with statements(stores.data, stores.keys) as created:
        job = create_job(stores.data, stores.keys, keyring, "erase", specs, inputs={"x": 1}, local=local)
    with statements(stores.data, stores.keys) as ran:
        drive_job(job, "w", r)
    assert len(created) == 3
    assert len(ran) == (2 if local else 4) + len(specs) + 2, ran
    st = job_status(stores.data, job)
    assert st.status == DONE and [s.attempts for s in st.steps] == [1, 1, 1]
    assert r["log"] == [("emit", 0, "w"), ("append", 1, [0]), ("append", 2, [0, 1])]
    with stores.data.connect() as conn:  # the results are cleared with the job's end ...
        assert conn.execute(select(func.count()).where(job_steps.c.result.is_not(None))).scalar() == 0
    assert key_count(stores, job) == 0  # ... and the key is gone


def test_a_job_no_hook_waits_for_ends_with_its_last_step(stores: Stores, keyring: Keyring) -> None:
    ended: list[tuple[str, str]] = []

    def hook(end: JobEnd) -> None:
        ended.append((end.job_id, end.status))

    register_job_end("t_failhook", hook, on=(FAILED,))
    try:
        r = res(stores, keyring)
        ok = create_job(stores.data, stores.keys, keyring, "t_failhook", [StepSpec("t_emit")])
        bad = create_job(stores.data, stores.keys, keyring, "t_failhook", [StepSpec("t_permanent", "app.x")])
        assert run_job(ok, "w", r).status == DONE
        assert run_job(bad, "w", r).status == FAILED
    finally:
        unregister_job_end("t_failhook", hook)
    assert ended == [(bad, FAILED)]
    with pytest.raises(ValueError, match="done and/or failed"):
        register_job_end("t_failhook", hook, on=("cancelled",))


def test_a_completion_after_a_takeover_claims_nothing(stores: Stores, keyring: Keyring) -> None:
    """A worker whose lease was taken over completes nothing and does not claim the next
    step: the row of the step it held is guarded, and the transaction rolled back."""
    job = create_job(stores.data, stores.keys, keyring, "erase", [StepSpec("t_emit"), StepSpec("t_emit")])
    a = lease_step(stores.data, job, "worker-a", lease_seconds=0.2)
    assert isinstance(a, Lease)
    time.sleep(0.3)
    b = lease_step(stores.data, job, "worker-b", lease_seconds=30)
    assert isinstance(b, Lease) and b.attempt == 2
    nxt = StepSpec("t_emit")
    assert _complete_and_claim(stores.data, a, None, nxt, 30) is False
    st = job_status(stores.data, job)
    assert [(s.status, s.leased_by) for s in st.steps] == [("running", "worker-b"), ("pending", None)]
    claimed = _complete_and_claim(stores.data, b, None, nxt, 30)
    assert isinstance(claimed, Lease)
    assert (claimed.seq, claimed.attempt, claimed.worker_id) == (1, 1, "worker-b")
    st = job_status(stores.data, job)
    assert [(s.status, s.leased_by) for s in st.steps] == [("done", None), ("running", "worker-b")]
