"""Rights requests end to end on every example's generated app database, on SQLite and on
the real PostgreSQL: submit -> code by mail -> verify -> run (one job) -> export / erase.

Expectations are computed independently of the connector: the user's rows by direct,
one-value-at-a-time SELECTs following the policy's references, and a scan of every text
column of every table for the user's email after the erasure.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, String, Text, create_engine, func, select, text
from typer.testing import CliRunner

from fiduciary.cli_request import request_app
from fiduciary.connectors.webhook import SIGNATURE_HEADER, WebhookConnector, verify_signature
from fiduciary.core import Fiduciary
from fiduciary.examples import EXAMPLES, example_policy, load_example_app
from fiduciary.mail import OutboxMailer
from fiduciary.requests.lifecycle import RequestDesk, RequestInputError
from fiduciary.requests.masking import field_rules
from fiduciary.requests.plan import Plan, build_plan
from fiduciary.requests.runner import RequestRunner, RunError
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores

SIZE = 100
SECRET = "whsec-test"


# --------------------------------------------------------------------------- helpers


def code_for(outbox: OutboxMailer, request_id: str) -> str:
    for m in reversed(outbox.outbox_messages()):
        found = re.search(r"Your verification code: (\d+)", m.subject)
        if found and f"Request reference: {request_id}" in m.text:
            return found.group(1)
    raise AssertionError(f"no code mailed for {request_id}")


def oracle(engine: Engine, plan: Plan, email: str) -> dict[str, dict[Any, dict[str, Any]]]:
    """The rows an access request for ``email`` must return: the slow obvious way, one
    query per value, following the plan's inputs (case-insensitive email match)."""
    found: dict[str, dict[Any, dict[str, Any]]] = {}
    with engine.connect() as conn:
        for node in plan.nodes:
            pk = node.primary_key[0]
            rows: dict[Any, dict[str, Any]] = {}
            for inp in node.inputs:
                if inp.identity == "email":
                    q = text(f"SELECT * FROM {node.name} WHERE lower({inp.field}) = :v")
                    values: list[Any] = [email.lower()]
                elif inp.identity is not None:
                    continue
                else:
                    assert inp.source is not None and inp.source_field is not None
                    q = text(f"SELECT * FROM {node.name} WHERE {inp.field} = :v")
                    values = sorted(
                        {
                            r[inp.source_field]
                            for r in found[inp.source].values()
                            if r[inp.source_field] is not None
                        },
                        key=str,
                    )
                for v in values:
                    for r in conn.execute(q, {"v": v}).mappings():
                        rows[r[pk]] = dict(r)
            found[node.collection] = rows
    return found


def pick_email(engine: Engine, app: Any, plan: Plan, offset: int) -> str:
    root = next(n for n in plan.nodes if any(i.identity == "email" for i in n.inputs))
    field = next(i.field for i in root.inputs if i.identity == "email")
    col = app.metadata.tables[root.name].c[field]
    with engine.connect() as conn:
        value = conn.execute(
            select(col)
            .where(col.is_not(None))
            .order_by(*app.metadata.tables[root.name].primary_key)
            .offset(offset)
        ).scalar()
    assert isinstance(value, str)
    return value


def snapshot(engine: Engine, app: Any) -> dict[str, dict[Any, dict[str, Any]]]:
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    with engine.connect() as conn:
        for t in app.metadata.sorted_tables:
            pk = next(iter(t.primary_key.columns)).name
            out[t.name] = {r[pk]: dict(r) for r in conn.execute(select(t)).mappings()}
    return out


class Hooks:
    """A local webhook receiver that checks every signature."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify_signature(SECRET, self.headers.get(SIGNATURE_HEADER), body)
                hooks.calls.append(
                    {"ok": ok, "body": json.loads(body), "key": self.headers["Idempotency-Key"]}
                )
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.close()


@pytest.fixture
def app_url(stores: Stores, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The example app's database on the same backend as the stores."""
    if stores.backend == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


# --------------------------------------------------------------------------- every example


@pytest.mark.parametrize("example", EXAMPLES)
def test_access_and_erasure_end_to_end(
    example: str, stores: Stores, app_url: str, tmp_path: Path, hooks: Hooks
) -> None:
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
    cp = fid.policy
    plan = build_plan(cp, ["email"])
    datastore = plan.nodes[0].datastore
    webhooks = {}
    if example == "filelocker":  # Intercom receives emails: it must hear of the erasure (LAW-5)
        webhooks["intercom"] = WebhookConnector(hooks.url, SECRET, max_attempts=2, backoff=0.01)
    runner = RequestRunner(fid, desk, connections={datastore: engine}, webhooks=webhooks)
    try:
        email = pick_email(engine, app, plan, offset=6)
        # The person also has an account in the vault: access shows it, erasure shreds it.
        kind = next(iter(cp.policy.subjects))
        sid = fid.sign_up(kind, identities={"email": email}, region="DE")

        # ------------------------------------------------------------------ access
        expected = oracle(engine, plan, email)
        assert sum(len(r) for r in expected.values()) > 1
        sub = desk.submit("access", contact={"email": email}, region="DE")
        assert sub.subject_matched
        desk.verify_code(sub.request_id, code_for(outbox, sub.request_id))
        job = runner.run([sub.request_id], actor="test")
        st = runner.wait(job, timeout=120)
        assert st.status == "done", st.error
        assert desk.status(sub.request_id).status == "done"
        z = zipfile.ZipFile(io.BytesIO(runner.export(sub.request_id)))
        assert {"data.json", "report.html"} <= set(z.namelist())
        doc = json.loads(z.read("data.json"))
        for node in plan.nodes:
            pk = node.primary_key[0]
            got = {str(r[pk]) for r in doc["collections"][node.collection]["rows"]}
            assert got == {str(k) for k in expected[node.collection]}, node.collection
            assert f"collections/{node.collection}.csv" in z.namelist()
        assert doc["request"]["reference"] == sub.request_id
        # The stored package is encrypted: the email is not in it in clear.
        with fid.data.connect() as conn:
            blob = conn.execute(select(T.request_files.c.content)).scalar_one()
        assert email.lower().encode() not in bytes(blob).lower()

        # ------------------------------------------------------------------ erase
        before = snapshot(engine, app)
        mine = oracle(engine, plan, email)
        sub = desk.submit("erase", contact={"email": email}, region="DE")
        desk.verify_code(sub.request_id, code_for(outbox, sub.request_id))
        job = runner.run([sub.request_id], actor="test")
        st = runner.wait(job, timeout=120)
        assert st.status == "done", st.error
        view = desk.status(sub.request_id)
        assert view.status in ("done", "partial")
        closing = [e for e in view.events if e.kind == view.status][-1]
        assert closing.detail is not None and closing.detail["job"] == job
        if view.status == "partial":
            assert closing.detail["exemptions"], "a partial erasure names the exemptions applied (LAW-3)"

        # Nothing identifying left but in fields the policy keeps.
        kept = {
            (node.name, name)
            for node in plan.nodes
            for name, rule in field_rules(node, plan.exemptions, (), "erase").fields.items()
            if rule.kept
        }
        with engine.connect() as conn:
            for t in app.metadata.sorted_tables:
                for c in t.columns:
                    if not isinstance(c.type, String | Text):
                        continue
                    n = conn.execute(select(func.count()).where(func.lower(c) == email.lower())).scalar()
                    if n:
                        assert (t.name, c.name) in kept, f"{t.name}.{c.name} still holds the email"
        # Other people's rows in the collections erased are untouched.
        after = snapshot(engine, app)
        for node in plan.nodes:
            own = set(mine[node.collection])
            for pk, row in before[node.name].items():
                if pk not in own and pk in after[node.name]:
                    assert after[node.name][pk] == row, f"{node.name} row {pk} of someone else changed"
        # The vault subject is crypto-shredded.
        assert fid.vault.subject(sid).status == "erased"
        with fid.keys.connect() as kconn:
            assert not kconn.execute(select(T.subject_keys).where(T.subject_keys.c.subject_id == sid)).first()
        if example == "filelocker":
            assert hooks.calls, "intercom was told"
            call = hooks.calls[0]
            assert call["ok"] and call["body"]["request_type"] == "erase"
            assert call["body"]["identities"]["email"] == [email.lower()]
            assert call["body"]["request_id"] == sub.request_id
    finally:
        runner.close()
        fid.close()
        engine.dispose()


# --------------------------------------------------------------------------- refusals


def test_unverified_requests_and_missing_connections_are_refused(tmp_path: Path) -> None:
    app = load_example_app("filelocker")
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    app.create(engine, 20, seed=0)
    fid = Fiduciary.open(example_policy("filelocker"), data_dir=tmp_path / "fid", keyring=Keyring.generate())
    outbox = OutboxMailer(tmp_path / "outbox")
    desk = RequestDesk.from_fiduciary(fid, outbox)
    with RequestRunner(fid, desk, connections={}) as runner:
        sub = desk.submit("erase", contact={"email": "user3@example.com"}, region="DE")
        with pytest.raises(Exception, match="verify it first"):
            runner.run([sub.request_id], actor="test")
        desk.verify_code(sub.request_id, code_for(outbox, sub.request_id))
        with pytest.raises(RunError, match="no connection for datastore"):
            runner.run([sub.request_id], actor="test")
        assert desk.status(sub.request_id).status == "verified"  # nothing started
        with pytest.raises(RunError, match="not in the policy"):
            runner.run([sub.request_id], actor="test", holds={sub.request_id: ["no_such_hold"]})
    fid.close()
    engine.dispose()


def test_batch_of_many_requests_is_one_job_and_legal_hold_keeps_data(tmp_path: Path) -> None:
    app = load_example_app("filelocker")
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    app.create(engine, 40, seed=0)
    fid = Fiduciary.open(example_policy("filelocker"), data_dir=tmp_path / "fid", keyring=Keyring.generate())
    outbox = OutboxMailer(tmp_path / "outbox")
    desk = RequestDesk.from_fiduciary(fid, outbox)
    plan = build_plan(fid.policy, ["email"])
    emails = [pick_email(engine, app, plan, offset=i) for i in (1, 2, 3, 4)]
    ids = []
    for i, email in enumerate(emails):
        sub = desk.submit("access" if i % 2 else "erase", contact={"email": email}, region="DE")
        desk.verify_code(sub.request_id, code_for(outbox, sub.request_id))
        ids.append(sub.request_id)
    with RequestRunner(fid, desk, connections={"filelocker_db": engine}) as runner:
        job = runner.run(ids, actor="test", holds={ids[0]: ["abuse_reports"]})
        st = runner.wait(job, timeout=60)
        assert st.status == "done", st.error
        assert {s.kind for s in st.steps} >= {"req.fetch", "req.package", "req.erase", "req.finish"}
        assert {desk.status(r).job_id for r in ids} == {job}
        held = desk.status(ids[0])
        assert held.status == "partial"
        detail = [e for e in held.events if e.kind == "partial"][-1].detail
        assert detail is not None and "abuse_reports" in detail["exemptions"]
        users = app.metadata.tables["users"]
        with engine.connect() as conn:
            kept = conn.execute(
                select(func.count()).where(func.lower(users.c.email) == emails[0].lower())
            ).scalar()
            gone = conn.execute(
                select(func.count()).where(func.lower(users.c.email) == emails[2].lower())
            ).scalar()
        assert kept == 1 and gone == 0
        with pytest.raises(RequestInputError, match="no package"):
            runner.export(ids[0])  # an erasure has nothing to export
        assert zipfile.ZipFile(io.BytesIO(runner.export(ids[1]))).testzip() is None
    fid.close()
    engine.dispose()


# --------------------------------------------------------------------------- the CLI


def test_cli_submit_verify_run_status_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = load_example_app("filelocker")
    app_db = tmp_path / "app.db"
    engine = create_engine(f"sqlite:///{app_db}")
    app.create(engine, 30, seed=0)
    plan = build_plan(load_policy_cp("filelocker"), ["email"])
    email = pick_email(engine, app, plan, offset=2)
    engine.dispose()
    for var in (
        "FIDUCIARY_CONNECTIONS",
        "FIDUCIARY_DATABASE_URL",
        "FIDUCIARY_KEYS_DATABASE_URL",
        "FIDUCIARY_BROKER_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FIDUCIARY_POLICY", str(example_policy("filelocker")))
    monkeypatch.setenv("FIDUCIARY_DATA_DIR", str(tmp_path / "data"))
    cli = CliRunner()

    r = cli.invoke(request_app, ["submit", "access", "--email", email, "--region", "DE"])
    assert r.exit_code == 0, r.output
    rid = r.stdout.strip().splitlines()[0]
    r = cli.invoke(request_app, ["run", rid, "--connection", f"filelocker_db=sqlite:///{app_db}"])
    assert r.exit_code == 1 and "verify it first" in r.output  # refused: not verified

    code = code_for(OutboxMailer(tmp_path / "data" / "outbox"), rid)
    r = cli.invoke(request_app, ["verify", rid, "--code", code])
    assert r.exit_code == 0 and "verified" in r.stdout, r.output
    r = cli.invoke(request_app, ["verify", rid])
    assert r.exit_code == 2  # usage: neither a code nor data points

    r = cli.invoke(request_app, ["run", "--all-ready", "--connection", f"filelocker_db=sqlite:///{app_db}"])
    assert r.exit_code == 0, r.output
    assert f"{rid}: done" in r.stdout

    r = cli.invoke(request_app, ["status", rid])
    assert r.exit_code == 0 and "done" in r.stdout
    r = cli.invoke(request_app, ["status"])
    assert r.exit_code == 0 and rid in r.stdout

    target = tmp_path / "package.zip"
    r = cli.invoke(request_app, ["export", rid, "-o", str(target)])
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(target) as z:
        doc = json.loads(z.read("data.json"))
    users = doc["collections"]["filelocker_db.users"]["rows"]
    assert [u["email"].lower() for u in users] == [email.lower()]

    r = cli.invoke(request_app, ["export", "nosuchrequest", "-o", str(target)])
    assert r.exit_code == 1


def load_policy_cp(example: str) -> Any:
    from fiduciary.policy import compile_policy, load_policy

    return compile_policy(load_policy(example_policy(example)))
