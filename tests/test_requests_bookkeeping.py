"""What running rights requests costs Fiduciary's own stores (SQLite and the real
PostgreSQL), and that the batched bookkeeping keeps its guarantees: every request gets its
events and audit entries, reads are audited even when a run is refused, the audit chain
verifies, and a finish step that runs twice finishes (and mails) nothing twice.

Statements are counted as bench/requests.py counts them: every statement SQLAlchemy sends
to the data and key stores (SQLite's BEGIN is not one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from fiduciary.requests.lifecycle import DONE
from fiduciary.requests.runner import RunError
from fiduciary.store import tables as T
from tests.conftest import Stores
from tests.test_requests_types import Env, app_url, env

__all__ = ["app_url"]  # the fixture, imported for its use here

# One request run (RequestRunner.run and its job, not the intake), statements on our stores.
# Access: 4 reads (requests, their keys, vault identities + values, subject keys), the job
# (key, job and steps stored already running, step 0 claimed) and the start (requests,
# events, audit x2: the head follows by trigger), the job's run (a statement per step, the
# last one ending the job: 2), the package (consents, disclosures, files: the request's key
# is in the job's inputs) and the finish (requests, events, audit x2, mail events), the job
# key's delete: 24, of which 4 on the person's own data (bench/requests.py's split), so 20
# bookkeeping. Erasure: the same reads and start, the erase and notify steps, and the
# finish, which crypto-shreds (vault.erase_many: 6 on the person's data) in the
# transaction that closes the request, one audit extension for both: 27, 19 bookkeeping.
ACCESS_BUDGET = 24
ERASE_BUDGET = 27


@contextmanager
def statements(e: Env) -> Iterator[list[str]]:
    seen: list[str] = []

    def on(_c: object, _cur: object, statement: str, *_: object) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(" ".join(statement.split())[:120])

    engines = (e.fid.data, e.fid.keys)
    for eng in engines:
        event.listen(eng, "before_cursor_execute", on)
    try:
        yield seen
    finally:
        for eng in engines:
            event.remove(eng, "before_cursor_execute", on)


def run_counted(e: Env, ids: list[str]) -> tuple[str, list[str]]:
    with statements(e) as seen:
        job = e.runner.run(ids, actor="test")
        e.runner.executor.wait_idle()  # type: ignore[attr-defined]
    st = e.runner.wait(job, timeout=60)
    assert st.status == "done", st.error
    return job, seen


def customers(e: Env, offsets: range) -> list[str]:
    emails = [e.email(i) for i in offsets]
    kind = next(iter(e.fid.policy.policy.subjects))
    for email in emails:
        e.fid.sign_up(kind, identities={"email": email}, region="DE")
    return emails


def test_one_request_costs_a_bounded_number_of_statements(
    stores: Stores, app_url: str, tmp_path: Path
) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        emails = customers(e, range(1, 4))
        e.run(e.verified("access", emails[0]))  # warm: the first run builds caches
        _, access = run_counted(e, [e.verified("access", emails[1])])
        _, erase = run_counted(e, [e.verified("erase", emails[2])])
    assert len(access) <= ACCESS_BUDGET, "\n".join(access)
    assert len(erase) <= ERASE_BUDGET, "\n".join(erase)
    # One extension of the audit chain per transaction that writes entries: the start
    # (the reads with it) and the finish (with an erasure's crypto-shred): a locked read of
    # the head and the rows; the head follows the rows by trigger.
    for run in (access, erase):
        assert sum("FROM audit_head" in s for s in run) == 2, "\n".join(run)
        assert not any("UPDATE audit_head" in s for s in run)
    # The shred is in the finish's transaction: no step of its own.
    assert sum(s.startswith("UPDATE job_steps") for s in erase) == 3, "\n".join(erase)
    # The request's key is read once (the package step takes it from the job's inputs);
    # the job is stored already running (no claim of step 0); the finish writes the closing
    # events, then the mails' events after the commit.
    assert sum(s.startswith("SELECT") and "FROM request_keys" in s for s in access) == 1, "\n".join(access)
    assert not any(s.startswith("UPDATE jobs SET status=") and "finished_at" not in s for s in access)
    assert sum(s.startswith("INSERT INTO request_events") for s in access) == 3


def test_a_batch_costs_what_one_request_costs(stores: Stores, app_url: str, tmp_path: Path) -> None:
    """Set-based bookkeeping: a job for five erasures sends as many statements to our
    stores as a job for one; and every request gets its events and its audit entries."""
    with env("filelocker", stores, app_url, tmp_path) as e:
        emails = customers(e, range(1, 8))
        e.run(e.verified("erase", emails[0]))  # warm
        _, one = run_counted(e, [e.verified("erase", emails[1])])
        ids = [e.verified("erase", email) for email in emails[2:]]
        job, five = run_counted(e, ids)
        # One UPDATE per outcome: a batch whose requests end both done and partial has two.
        outcomes = {e.desk.status(rid).status for rid in ids}
        assert len(five) == len(one) + len(outcomes) - 1, "\n".join(five)
        for rid in ids:
            view = e.desk.status(rid)
            kinds = [ev.kind for ev in view.events]
            assert kinds[-3:] == ["running", view.status, "mailed"], kinds
            closing = next(ev for ev in view.events if ev.kind == view.status)
            assert closing.detail is not None and closing.detail["job"] == job
            assert view.subject_id is not None
            audited = [a.action for a in e.fid.audit.query(subject_id=view.subject_id, limit=1000)]
            for action in (
                "request.read_requester",
                "vault.read_identities",
                "request.running",
                "vault.erase",
                f"request.{view.status}",
            ):
                assert action in audited, (rid, action, audited)
        assert e.fid.audit.verify().ok
        # Each requester was told once, at the address they gave.
        answers = [m for m in e.outbox.outbox_messages() if "(reference " in m.text]
        for rid, email in zip(ids, emails[2:], strict=True):
            to_them = [m for m in answers if f"(reference {rid})" in m.text]
            assert len(to_them) == 1 and to_them[0].to.lower() == email.lower(), to_them


def test_a_refused_run_still_audits_what_it_read(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("social", stores, app_url, tmp_path) as e:
        email = e.email(2)
        sid = e.fid.sign_up("member", identities={"email": email}, region="DE")
        sub = e.desk.submit("rectify", contact={"email": email}, region="DE")  # without values
        e.desk.verify_signed_in(sub.request_id, sid)
        with pytest.raises(RunError, match=r"details\.values"):
            e.runner.run([sub.request_id], actor="test")
        view = e.desk.status(sub.request_id)
        assert view.status == "verified" and "running" not in [ev.kind for ev in view.events]
        with e.fid.data.connect() as conn:
            assert conn.execute(select(func.count()).select_from(T.jobs)).scalar() == 0
        with e.fid.keys.connect() as kconn:  # no orphan job key
            owners = set(kconn.execute(select(T.request_keys.c.owner_id)).scalars())
        assert owners == {sub.request_id}
        audited = [a.action for a in e.fid.audit.query(subject_id=sid, limit=100)]
        assert "request.read_requester" in audited and "vault.read_identities" in audited
        assert "request.running" not in audited
        assert e.fid.audit.verify().ok


def test_finishing_again_under_the_same_job_changes_nothing(
    stores: Stores, app_url: str, tmp_path: Path
) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        a, b = (e.verified("access", e.email(i)) for i in (1, 2))
        job = "j" * 32
        e.desk.start_many([a, b], job_id=job)
        details: dict[str, Any] = {b: {"exemptions": ["abuse_reports"], "kept_fields": 1}}
        first = e.desk.finish_many({a: False, b: True}, detail={"job": job}, details=details, job_id=job)
        assert first == {a: DONE, b: "partial"}
        mails = len(e.outbox.outbox_messages())
        # An attempt that died after its commit runs again: nothing is finished twice.
        assert e.desk.finish_many({a: False, b: True}, detail={"job": job}, job_id=job) == {}
        assert len(e.outbox.outbox_messages()) == mails
        for rid in (a, b):
            kinds = [ev.kind for ev in e.desk.status(rid).events]
            assert kinds.count("done") + kinds.count("partial") == 1 and kinds.count("mailed") == 1
        closing = next(ev for ev in e.desk.status(b).events if ev.kind == "partial")
        assert closing.detail == {"job": job, "exemptions": ["abuse_reports"], "kept_fields": 1}
        # Without a job, a request not running is an error and nothing is finished.
        c = e.verified("access", e.email(3))
        with pytest.raises(Exception, match="not running"):
            e.desk.finish_many({c: False})
        assert e.desk.status(c).status == "verified"
        with pytest.raises(Exception, match="personal data"):
            e.desk.finish_many({a: False}, details={a: {"note": "ann@example.com"}}, job_id=job)


def _bk_step(ctx: Any) -> dict[str, Any]:
    return {"seen": ctx.inputs.get("n"), "attempt": ctx.attempt}


def test_a_job_stored_claimed_by_a_dead_worker_is_recovered(stores: Stores) -> None:
    """A job stored already running, its step 0 leased to the process that created it
    (RequestRunner on an inline executor), whose process died before running it: once
    the lease ran out, ``recover`` names it and another worker runs it to the end."""
    from fiduciary.jobs import StepSpec, create_job, job_status, recover, register_step, run_job
    from fiduciary.jobs.runner import _take_local
    from fiduciary.vault.keyring import Keyring

    register_step("bk.step", _bk_step, replace=True)
    ring = Keyring.generate()
    data, keys = stores.data, stores.keys
    job = create_job(
        data,
        keys,
        ring,
        "bk",
        [StepSpec("bk.step"), StepSpec("bk.step")],
        inputs={"n": 7},
        local=True,
        claim=("dead-worker", 0.3),
    )
    assert _take_local(job) is not None  # the dead process's memory: gone with it
    st = job_status(data, job)
    assert st.status == "running" and [s.status for s in st.steps] == ["running", "pending"]
    assert job not in recover(data, keys, grace=0)  # its lease is still live
    time.sleep(0.4)
    assert job in recover(data, keys, grace=0)
    done = run_job(job, "w2", {"data": data, "keys": keys, "keyring": ring}, lease_seconds=5)
    assert done.status == "done", done.error
