"""The request types beyond access and erasure, each submit -> verify -> run -> done on an
example's generated app database (SQLite and the real PostgreSQL); a failed job puts its
requests back; a crash between creating a job and starting its requests leaves neither.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, select

from fiduciary.connectors.webhook import WebhookConnector
from fiduciary.core import Fiduciary
from fiduciary.decide import Reason
from fiduciary.examples import example_policy, load_example_app
from fiduciary.jobs import recover, run_job
from fiduciary.mail import OutboxMailer
from fiduciary.requests.lifecycle import InvalidTransition, RequestDesk, RequestInputError
from fiduciary.requests.plan import Plan, build_plan
from fiduciary.requests.runner import RequestRunner, RunError
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores
from tests.test_requests_e2e import SECRET, Hooks, code_for, hooks, pick_email

__all__ = ["hooks"]  # the fixture, imported for its use here

SIZE = 40


@dataclass
class Env:
    fid: Fiduciary
    desk: RequestDesk
    runner: RequestRunner
    outbox: OutboxMailer
    engine: Engine
    app: Any
    plan: Plan

    def email(self, offset: int) -> str:
        return pick_email(self.engine, self.app, self.plan, offset)

    def verified(self, rtype: str, email: str, region: str = "DE", **kw: Any) -> str:
        sub = self.desk.submit(rtype, contact={"email": email}, region=region, **kw)
        if self.desk.status(sub.request_id).status == "received":
            self.desk.verify_code(sub.request_id, code_for(self.outbox, sub.request_id))
        return sub.request_id

    def run(self, *ids: str) -> str:
        job = self.runner.run(list(ids), actor="test")
        st = self.runner.wait(job, timeout=60)
        assert st.status == "done", st.error
        for rid in ids:
            assert self.desk.status(rid).status in ("done", "partial")
        return job


@pytest.fixture
def app_url(stores: Stores, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if stores.backend == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


@contextmanager
def env(
    example: str,
    stores: Stores,
    app_url: str,
    tmp_path: Path,
    *,
    connections: dict[str, Any] | None = None,
    webhooks: dict[str, WebhookConnector] | None = None,
) -> Iterator[Env]:
    app = load_example_app(example)
    engine = create_engine(app_url)
    app.create(engine, SIZE, seed=0)
    fid = Fiduciary.open(
        example_policy(example),
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )
    outbox = OutboxMailer(tmp_path / "outbox")
    desk = RequestDesk.from_fiduciary(fid, outbox)
    plan = build_plan(fid.policy, ["email"])
    conns = connections if connections is not None else dict.fromkeys(plan.datastores, engine)
    runner = RequestRunner(fid, desk, connections=conns, webhooks=webhooks)
    try:
        yield Env(fid, desk, runner, outbox, engine, app, plan)
    finally:
        runner.close()
        fid.close()
        engine.dispose()


def decisions(fid: Fiduciary, sid: str) -> dict[str, Any]:
    return {p: fid.decide(sid, p, audit=False) for p in sorted(fid.policy.purposes)}


def basis(fid: Fiduciary, purpose: str) -> str:
    return str(fid.policy.purposes[purpose].basis.value)


# --------------------------------------------------------------------------- choices


def test_restrict_stops_all_but_legal_obligations_and_tells_recipients(
    stores: Stores, app_url: str, tmp_path: Path, hooks: Hooks
) -> None:
    hook = WebhookConnector(hooks.url, SECRET, max_attempts=2, backoff=0.01)
    with env("filelocker", stores, app_url, tmp_path, webhooks={"intercom": hook}) as e:
        email = e.email(3)
        sid = e.fid.sign_up("customer", identities={"email": email}, region="DE")
        rid = e.verified("restrict", email)
        e.run(rid)
        e.fid.forget_state(sid)
        after = decisions(e.fid, sid)
        for p, d in after.items():
            if basis(e.fid, p) == "legal_obligation":
                assert d.reason is not Reason.restricted, p
            else:
                assert d.reason is Reason.restricted, p  # LAW-4
        assert any(basis(e.fid, p) == "legal_obligation" for p in after)
        # LAW-5: intercom through its webhook, the others as manual tasks.
        assert [c["body"]["request_type"] for c in hooks.calls if c["ok"]] == ["restrict"]
        done = [ev for ev in e.desk.status(rid).events if ev.kind == "done"][-1]
        assert done.detail is not None and done.detail["manual_tasks"] >= 1


def test_object_stops_legitimate_interest_purposes(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        email = e.email(4)
        sid = e.fid.sign_up("customer", identities={"email": email}, region="DE")
        before = decisions(e.fid, sid)
        rid = e.verified("object", email)
        e.run(rid)
        e.fid.forget_state(sid)
        after = decisions(e.fid, sid)
        # Legitimate-interest purposes the policy lets people object to (``objection``
        # defaults to true for them; compelling grounds such as security say false).
        li = [p for p, cp in e.fid.policy.purposes.items() if cp.objection and before[p].reason is None]
        assert li and all(
            basis(e.fid, p) == "legitimate_interest"
            for p in li
            if not e.fid.policy.purposes[p].direct_marketing
        )
        for p in li:
            assert after[p].reason is Reason.objection, p  # LAW-7
        for p, cp in e.fid.policy.purposes.items():
            if not cp.objection:
                assert after[p].reason is not Reason.objection, p
        for p in after:
            if basis(e.fid, p) == "contract":
                assert after[p].reason == before[p].reason, p  # a contract is not objected to


def test_opt_out_of_sale_needs_no_verification_and_stops_sale(
    stores: Stores, app_url: str, tmp_path: Path
) -> None:
    with env("dataplatform", stores, app_url, tmp_path) as e:
        email = e.email(2)
        sid = e.fid.sign_up(
            "user",
            identities={"email": email},
            region="US-CA",
            consents=[p for p, cp in e.fid.policy.purposes.items() if cp.sale],
        )
        sale = [p for p, cp in e.fid.policy.purposes.items() if cp.sale]
        assert sale
        sub = e.desk.submit("opt_out_of_sale", contact={"email": email}, region="US-CA")
        assert e.desk.status(sub.request_id).status == "verified"  # LAW-11: no verification
        e.run(sub.request_id)
        e.fid.forget_state(sid)
        for p in sale:
            assert e.fid.decide(sid, p, audit=False).reason is Reason.sale_opt_out, p


def test_withdraw_consent(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        email = e.email(5)
        sid = e.fid.sign_up("customer", identities={"email": email}, region="DE", consents=["partner_offers"])
        assert e.fid.decide(sid, "partner_offers", audit=False).reason is None
        rid = e.verified("withdraw_consent", email, details={"purpose": "partner_offers"})
        e.run(rid)
        e.fid.forget_state(sid)
        assert e.fid.decide(sid, "partner_offers", audit=False).reason is Reason.withdrawn


# --------------------------------------------------------------------------- data changes


def test_rectify_writes_the_vault_and_refuses_unknown_categories(
    stores: Stores, app_url: str, tmp_path: Path
) -> None:
    with env("social", stores, app_url, tmp_path) as e:
        email = e.email(2)
        sid = e.fid.sign_up(
            "member", identities={"email": email}, attributes={"user.name": "Ada Lovelaec"}, region="DE"
        )
        with pytest.raises(RequestInputError, match=r"'user\.nickname_x' is not a category of the policy"):
            e.desk.submit(
                "rectify", contact={"email": email}, region="DE", details={"values": {"user.nickname_x": "A"}}
            )
        with e.fid.data.connect() as conn:
            assert conn.execute(select(func.count()).select_from(T.requests)).scalar() == 0
        # Taken without values (the team asks), but not run until it says what to correct.
        vague = e.desk.submit("rectify", contact={"email": email}, region="DE")
        e.desk.verify_signed_in(vague.request_id, sid)
        with pytest.raises(RunError, match=r"details\.values"):
            e.runner.run([vague.request_id], actor="test")
        assert e.desk.status(vague.request_id).status == "verified"
        e.desk.deny(vague.request_id, "other", "test", note="no correction given")
        sub = e.desk.submit(
            "rectify",
            contact={"email": email},
            region="DE",
            details={"values": {"user.name": "Ada Lovelace"}},
        )
        e.desk.verify_signed_in(sub.request_id, sid)
        e.run(sub.request_id)
        held = e.fid.vault.read(sid, purpose="request_fulfilment", actor="test")
        assert held["user.name"].value == "Ada Lovelace"


def test_close_account(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("social", stores, app_url, tmp_path) as e:
        email = e.email(3)
        sid = e.fid.sign_up("member", identities={"email": email}, region="DE")
        sub = e.desk.submit("close_account", contact={"email": email}, region="DE")
        e.desk.verify_signed_in(sub.request_id, sid)
        e.run(sub.request_id)
        assert e.fid.vault.subject(sid).status == "closed"


# --------------------------------------------------------------------------- packages


def test_shine_the_light_lists_direct_marketing_recipients(
    stores: Stores, app_url: str, tmp_path: Path
) -> None:
    with env("voiceapi", stores, app_url, tmp_path) as e:
        sub = e.desk.submit("shine_the_light", contact={"email": e.email(1)}, region="US-CA")
        e.run(sub.request_id)
        z = zipfile.ZipFile(io.BytesIO(e.runner.export(sub.request_id)))
        doc = json.loads(z.read("data.json"))
        recips = {r["key"]: r for r in doc["recipients"]}
        expected = {
            k for k, r in e.fid.policy.recipients.items() if r.source.direct_marketing or r.source.sale
        }
        assert set(recips) == expected and "marketing_partners" in recips  # PLV-13
        mp = recips["marketing_partners"]
        assert mp["name"] and mp["address"] and mp["products"]
        assert mp["name"] in z.read("report.txt").decode()


def test_portability_package_is_machine_readable(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        email = e.email(6)
        rid = e.verified("portability", email)
        e.run(rid)
        z = zipfile.ZipFile(io.BytesIO(e.runner.export(rid)))
        doc = json.loads(z.read("data.json"))  # LAW-6: structured, machine-readable
        users = doc["collections"]["filelocker_db.users"]["rows"]
        assert [u["email"].lower() for u in users] == [email.lower()]


def test_child_report_runs_only_after_approval(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        child = e.email(7)
        reporter = "parent@example.org"
        rid = e.verified("erase", reporter, details={"child_report": True, "account": {"email": child}})
        with pytest.raises(InvalidTransition, match="approved"):
            e.runner.run([rid], actor="test")
        assert e.desk.status(rid).status == "verified"
        with e.fid.data.connect() as conn:
            assert conn.execute(select(func.count()).select_from(T.jobs)).scalar() == 0  # no job left
        e.desk.approve(rid, actor="privacy_team")
        e.run(rid)
        users = e.app.metadata.tables["users"]
        with e.engine.connect() as conn:
            n = conn.execute(select(func.count()).where(func.lower(users.c.email) == child.lower())).scalar()
        assert n == 0  # PLO-13 / PLV-14: the child's account is erased


# --------------------------------------------------------------------------- failures


def test_failed_job_puts_its_requests_back(stores: Stores, app_url: str, tmp_path: Path) -> None:
    missing = (
        f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'app.db'}"
        if stores.backend == "sqlite"
        else app_url.rsplit("/", 1)[0] + "/fiduciary_no_such_database"
    )
    with env("filelocker", stores, app_url, tmp_path, connections={"filelocker_db": missing}) as e:
        executor = e.runner.executor
        assert hasattr(executor, "backoff")
        executor.backoff = 0.01
        email = e.email(2)
        ids = [e.verified("erase", email), e.verified("access", e.email(3))]
        job = e.runner.run(ids, actor="test")
        st = e.runner.wait(job, timeout=60)
        assert st.status == "failed"
        failed_step = next(s for s in st.steps if s.status == "failed")
        for rid in ids:
            view = e.desk.status(rid)
            assert view.status == "verified" and view.job_id is None
            ev = [x for x in view.events if x.kind == "failed"][-1]
            assert ev.detail == {"job": job, "step": failed_step.kind, "status": "verified"}
        with e.fid.data.connect() as conn:
            audit = " ".join(
                str(r)
                for r in conn.execute(
                    select(T.audit_log.c.detail).where(T.audit_log.c.action == "request.failed")
                )
            )
        assert audit and email.lower() not in audit.lower()

        # From there the privacy team runs them again (here with the right connection).
        with RequestRunner(e.fid, e.desk, connections={"filelocker_db": e.engine}) as fixed:
            job2 = fixed.run(ids, actor="test")
            assert fixed.wait(job2, timeout=60).status == "done"
        assert {e.desk.status(r).status for r in ids} <= {"done", "partial"}


class Crash(BaseException):
    """A process dying: nothing after it runs."""


class NoExecutor:
    """An executor whose process died before the job reached it."""

    def submit(self, job_id: str) -> None:
        raise Crash

    def recover(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def test_crash_between_job_and_requests_leaves_nothing_half_done(
    stores: Stores, app_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        rid = e.verified("erase", e.email(2))
        real = e.desk.start_many_in

        def dies_after_start(*a: Any, **kw: Any) -> None:
            real(*a, **kw)
            raise Crash  # the job rows and the requests' start are written, not committed

        monkeypatch.setattr(e.desk, "start_many_in", dies_after_start)
        with pytest.raises(Crash):
            e.runner.run([rid], actor="test")
        monkeypatch.undo()
        view = e.desk.status(rid)
        assert view.status == "verified" and not [x for x in view.events if x.kind == "running"]
        with e.fid.data.connect() as conn:
            assert conn.execute(select(func.count()).select_from(T.jobs)).scalar() == 0
            assert conn.execute(select(func.count()).select_from(T.job_steps)).scalar() == 0
        with e.fid.keys.connect() as kconn:  # only the request's own key: no orphan job key
            owners = set(kconn.execute(select(T.request_keys.c.owner_id)).scalars())
        assert owners == {rid}

        # Committed but never handed to an executor: the recover pass finds it.
        e.runner.executor = NoExecutor()
        with pytest.raises(Crash):
            e.runner.run([rid], actor="test")
        view = e.desk.status(rid)
        assert view.status == "running" and view.job_id is not None
        assert recover(e.fid.data, e.fid.keys, include_pending=True) == [view.job_id]
        st = run_job(view.job_id, "recovering-worker", e.runner.resources, backoff=0.01)
        assert st.status == "done", st.error
        assert e.desk.status(rid).status in ("done", "partial")
