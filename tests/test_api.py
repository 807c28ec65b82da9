"""The JSON API (/api/v1) over a real Fiduciary: SQLite files in a temp directory (and the
real PostgreSQL for the core paths), examples/filelocker and examples/dataplatform.

Each endpoint's happy path; RFC 9457 problems for bad input (content type, the failing
field and where it was); API key scopes (401 without or with a revoked key, 403 without
the scope), keys stored hashed, console users with argon2; GPC honoured; the CLI for keys
and users.
"""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from fiduciary import cli_web
from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy, load_example_app
from fiduciary.mail import OutboxMailer
from fiduciary.requests.plan import build_plan
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from fiduciary.web.auth import (
    authenticate,
    create_api_key,
    create_user,
    disable_user,
    list_api_keys,
    revoke_api_key,
    verify_password,
)
from tests.conftest import Stores
from tests.test_requests_e2e import code_for

with warnings.catch_warnings():
    # Starlette's TestClient would rather have httpx2; httpx works the same here.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

FILELOCKER = example_policy("filelocker")
DATAPLATFORM = example_policy("dataplatform")
PROBLEM = "application/problem+json"
V1 = "/api/v1"


@dataclass
class Server:
    fid: Fiduciary
    client: TestClient
    admin: str  # an API key with the admin scope
    outbox: OutboxMailer
    tmp: Path

    def key(self, *scopes: str, name: str = "test") -> str:
        return create_api_key(self.fid, name, scopes)[1]

    def h(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin}", **extra}

    def post(self, path: str, body: Any = None, key: str | None = None, **headers: str) -> Any:
        return self.client.post(V1 + path, json=body, headers=self.h(key, **headers))

    def get(self, path: str, key: str | None = None, **params: Any) -> Any:
        return self.client.get(V1 + path, params=params, headers=self.h(key))

    def sign_up(self, email: str, region: str = "DE", kind: str = "customer", **body: Any) -> str:
        r = self.post(
            "/subjects",
            {
                "kind": kind,
                "identities": {"email": email},
                "attributes": {"user.contact.email": email},
                "region": region,
                "age": 30,
                **body,
            },
        )
        assert r.status_code == 201, r.text
        return str(r.json()["subject_id"])

    def audit_count(self, action: str | None = None) -> int:
        q = select(func.count()).select_from(T.audit_log)
        if action:
            q = q.where(T.audit_log.c.action == action)
        with self.fid.data.connect() as conn:
            return int(conn.execute(q).scalar_one())


def _serve(fid: Fiduciary, tmp: Path, **settings: Any) -> Iterator[Server]:
    outbox = OutboxMailer(tmp / "outbox")
    s = Settings(data_dir=tmp / "data", **settings)
    # key_cache_ttl=0: a revoked key is refused on the very next request.
    app = create_app(fid, settings=s, mailer=outbox, key_cache_ttl=0)
    _, admin = create_api_key(fid, "test-admin", ["admin"])
    with TestClient(app) as client:
        yield Server(fid, client, admin, outbox, tmp)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """examples/filelocker on SQLite files."""
    fid = Fiduciary.open(FILELOCKER, data_dir=tmp_path / "data", keyring=Keyring.generate())
    try:
        yield from _serve(fid, tmp_path)
    finally:
        fid.close()


@pytest.fixture
def both(stores: Stores, tmp_path: Path) -> Iterator[Server]:
    """examples/filelocker on SQLite and on the real PostgreSQL."""
    fid = Fiduciary.open(
        FILELOCKER,
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )
    try:
        yield from _serve(fid, tmp_path)
    finally:
        fid.close()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Server]:
    """examples/dataplatform (California: GPC is an opt-out of sale) on SQLite files."""
    fid = Fiduciary.open(DATAPLATFORM, data_dir=tmp_path / "data", keyring=Keyring.generate())
    try:
        yield from _serve(fid, tmp_path)
    finally:
        fid.close()


def assert_problem(r: Any, status: int, type_: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["instance"]
    if type_ is not None:
        assert body["type"] == f"/problems/{type_}"
    assert "Traceback" not in r.text
    return body


# --------------------------------------------------------------------------- subjects


def test_sign_up_find_read_and_erase(both: Server) -> None:
    s = both
    sid = s.sign_up("ada@example.com")
    r = s.post("/subjects/find", {"kind": "email", "value": "ADA@example.com", "purpose": "support"})
    assert r.status_code == 200 and r.json() == {"subject_id": sid}
    # The lookup is audited with its purpose; the log holds no address.
    entries = s.get("/audit", action="subject.find").json()["entries"]
    assert entries[-1]["purpose"] == "support" and entries[-1]["result"] == "found"
    assert "ada@" not in str(entries)
    missing = s.post("/subjects/find", {"kind": "email", "value": "nobody@example.com", "purpose": "support"})
    assert "nobody" not in assert_problem(missing, 404, "unknown-subject")["detail"]

    info = s.get(f"/subjects/{sid}").json()
    assert (info["kind"], info["jurisdiction"], info["status"], info["age_status"]) == (
        "customer",
        "eu",
        "active",
        "adult",
    )

    # Offers from partners are opt-in in the EU: refused, explained, no value.
    refused = s.post(
        f"/subjects/{sid}/read", {"purpose": "partner_offers", "categories": ["user.contact.email"]}
    )
    assert refused.status_code == 200
    assert refused.json()["values"] == {}
    assert refused.json()["decision"]["refused"] == {"user.contact.email": "no_consent"}
    assert refused.json()["decision"]["reasons"] == {"user.contact.email": "no consent given"}
    r = s.post(f"/subjects/{sid}/consent/give", {"purpose": "partner_offers", "notice_text": "Offers?"})
    assert r.status_code == 201
    allowed = s.post(
        f"/subjects/{sid}/read", {"purpose": "partner_offers", "categories": ["user.contact.email"]}
    )
    body = allowed.json()
    assert body["decision"]["ok"] is True
    assert body["values"]["user.contact.email"]["value"] == "ada@example.com"
    assert body["values"]["user.contact.email"]["source"] == "subject"

    r = s.client.delete(f"{V1}/subjects/{sid}", headers=s.h())
    assert r.status_code == 204
    assert s.get(f"/subjects/{sid}").json()["status"] == "erased"
    after = s.post(
        f"/subjects/{sid}/read", {"purpose": "account", "categories": ["user.contact.email"]}
    ).json()
    assert after["values"] == {} and after["decision"]["reason"] == "erased"
    assert s.client.delete(f"{V1}/subjects/{sid}", headers=s.h()).status_code == 204  # again: harmless
    assert s.get("/audit/verify").json()["ok"] is True


def test_under_age_sign_up_is_a_422_problem_and_nothing_is_stored(server: Server) -> None:
    r = server.post(
        "/subjects",
        {
            "kind": "customer",
            "identities": {"email": "kid@example.com"},
            "region": "NL",
            "birth_date": "2015-05-01",
        },
    )
    body = assert_problem(r, 422, "under-age")
    assert body["minimum_age"] >= 13
    with server.fid.data.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T.subjects)).scalar_one() == 0
    assert server.fid.find("email", "kid@example.com") is None


def test_sign_up_refuses_unknown_consents_before_storing_anything(server: Server) -> None:
    r = server.post(
        "/subjects",
        {"kind": "customer", "identities": {"email": "bo@example.com"}, "consents": ["newsletter", "nope"]},
    )
    body = assert_problem(r, 422)
    assert body["errors"][0]["pointer"] == "#/consents/1"
    assert server.fid.find("email", "bo@example.com") is None


# --------------------------------------------------------------------------- problems


def test_bad_payloads_are_problems_naming_each_field_and_where(server: Server) -> None:
    r = server.post("/subjects", {"kind": "customer", "identities": {"email": 5}, "regio": "DE", "age": -1})
    body = assert_problem(r, 422, "validation")
    by_field = {e["field"]: e for e in body["errors"]}
    assert by_field["identities.email"]["location"] == "body"
    assert by_field["identities.email"]["pointer"] == "#/identities/email"
    assert by_field["regio"]["type"] == "extra_forbidden"
    assert by_field["age"]["pointer"] == "#/age"
    assert body["detail"].startswith("body ")

    q = assert_problem(server.get("/audit", limit=0), 422, "validation")
    assert q["errors"][0]["location"] == "query" and q["errors"][0]["parameter"] == "limit"
    p = assert_problem(server.get("/subjects/not a subject!"), 422, "validation")
    assert p["errors"][0]["location"] == "path" and p["errors"][0]["parameter"] == "subject_id"
    raw = server.client.post(
        f"{V1}/decisions", content=b"{not json", headers=server.h(**{"content-type": "application/json"})
    )
    assert assert_problem(raw, 422, "validation")["errors"][0]["location"] == "body"


def test_domain_errors_are_clear_4xx_problems(server: Server) -> None:
    assert_problem(server.get("/subjects/0123456789abcdef"), 404, "unknown-subject")
    assert_problem(
        server.post("/subjects/0123456789abcdef/read", {"purpose": "account"}), 404, "unknown-subject"
    )
    sid = server.sign_up("cy@example.com")
    bad = assert_problem(
        server.post(f"/subjects/{sid}/consent/give", {"purpose": "newsleter"}), 422, "invalid-choice"
    )
    assert "did you mean 'newsletter'" in bad["detail"]
    not_objectable = server.post(f"/subjects/{sid}/consent/object", {"purpose": "account"})
    assert_problem(not_objectable, 422, "invalid-choice")
    dup = server.post("/subjects", {"kind": "customer", "identities": {"email": "cy@example.com"}})
    assert_problem(dup, 409, "duplicate-identity")
    assert_problem(server.post("/subjects", {"kind": "robot", "identities": {"email": "r@example.com"}}), 422)
    sub = server.post(
        "/requests", {"type": "access", "contact": {"email": "cy@example.com"}, "region": "DE"}
    ).json()
    assert_problem(server.post(f"/requests/{sub['request_id']}/approve"), 409, "invalid-transition")
    not_given = server.post(
        "/requests", {"type": "opt_out_of_sale", "contact": {"email": "cy@example.com"}, "region": "DE"}
    )
    assert "access" in assert_problem(not_given, 422, "right-not-given")["available"]
    assert_problem(server.get("/requests/ffffffffffffffffffffffffffffffff"), 404, "unknown-request")
    assert_problem(server.get("/consent/events/999999/proof"), 404, "unknown-event")
    assert assert_problem(server.client.get("/nowhere"), 404)["type"] == "about:blank"
    assert_problem(server.client.put(f"{V1}/decisions", headers=server.h()), 405)
    # Each problem type explains itself at its URI.
    assert "minimum age" in server.client.get("/problems/under-age").text


# --------------------------------------------------------------------------- consent


def test_consent_choices_events_proof_and_state(both: Server) -> None:
    s = both
    sid = s.sign_up("di@example.com")
    notice = "May we send you offers from our partners?"
    given = s.post(
        f"/subjects/{sid}/consent/give",
        {
            "purpose": "partner_offers",
            "notice_text": notice,
            "language": "en",
            "ip": "203.0.113.77",
            "channel": "web_form",
        },
    )
    assert given.status_code == 201
    event_id = given.json()["event_id"]
    assert s.get(f"/subjects/{sid}/consent").json()["consents"] == {"partner_offers": "given"}
    for path, body in [
        ("withdraw", {"purpose": "partner_offers"}),
        ("object", {"purpose": "quality_assurance"}),
        ("restrict", {}),
        ("opt-out-of-sale", {}),
    ]:
        r = s.post(f"/subjects/{sid}/consent/{path}", body)
        assert r.status_code == 201, (path, r.text)
    state = s.get(f"/subjects/{sid}/consent").json()
    assert state["consents"] == {"partner_offers": "withdrawn"}
    assert state["objections"] == ["quality_assurance"] and state["restricted"] and state["sale_opt_out"]
    # Restricted: only legal obligations remain (LAW-4).
    assert state["allowed_purposes"] == ["legal_duties"]
    kinds = [e["kind"] for e in s.get(f"/subjects/{sid}/consent/events").json()]
    assert kinds == ["consent_given", "consent_withdrawn", "objection", "restriction", "sale_opt_out"]
    proof = s.get(f"/consent/events/{event_id}/proof").json()
    assert proof["purpose"] == "partner_offers" and proof["basis"] == "consent"
    assert proof["ip"] == "203.0.113.0/24" and proof["language"] == "en" and proof["channel"] == "web_form"
    assert len(proof["notice_hash"]) == 64 and notice not in str(proof)
    assert_problem(s.get("/subjects/0123456789abcdef/consent/events"), 404, "unknown-subject")


def test_settings_follow_the_policy(tmp_path: Path) -> None:
    fid = Fiduciary.open(example_policy("social"), data_dir=tmp_path / "data", keyring=Keyring.generate())
    try:
        for s in _serve(fid, tmp_path):
            sid = s.sign_up("eve@example.com", kind="member", region="DE")
            r = s.post(
                f"/subjects/{sid}/consent/settings", {"name": "visibility:user.name", "value": "public"}
            )
            assert r.status_code == 201, r.text
            assert s.get(f"/subjects/{sid}/consent").json()["settings"] == {"visibility:user.name": "public"}
            fixed = s.post(
                f"/subjects/{sid}/consent/settings",
                {"name": "visibility:user.account.username", "value": "self"},
            )
            assert "fixed by the policy" in assert_problem(fixed, 422, "invalid-choice")["detail"]
            offered = s.post(
                f"/subjects/{sid}/consent/settings",
                {"name": "visibility:user.behavior.messaging", "value": "public"},
            )
            assert_problem(offered, 422, "invalid-choice")
    finally:
        fid.close()


# --------------------------------------------------------------------------- decisions


def test_decisions_one_and_batch_are_audited(both: Server) -> None:
    s = both
    a = s.sign_up("fa@example.com")
    b = s.sign_up("gu@example.com", region="FR")
    s.post(f"/subjects/{a}/consent/give", {"purpose": "partner_offers"})
    one = s.post(
        "/decisions", {"subject_id": a, "purpose": "partner_offers", "categories": ["user.contact.email"]}
    )
    assert one.status_code == 200
    assert one.json()["ok"] is True and one.json()["allowed"] == ["user.contact.email"]
    before = s.audit_count("decide")
    items = [
        {"subject_id": a, "purpose": "partner_offers", "categories": ["user.contact.email"]},
        {"subject_id": b, "purpose": "partner_offers", "categories": ["user.contact.email"]},
        {"subject_id": a, "purpose": "no_such_purpose"},
        {"subject_id": b, "purpose": "account", "recipient": "paypal"},
    ]
    r = s.post("/decisions/batch", {"items": items})
    assert r.status_code == 200, r.text
    got = r.json()["decisions"]
    assert [(d["subject_id"], d["purpose"]) for d in got] == [(i["subject_id"], i["purpose"]) for i in items]
    assert got[0]["ok"] is True
    assert got[1]["ok"] is False and got[1]["refused"] == {"user.contact.email": "no_consent"}
    assert got[2]["reason"] == "unknown_purpose" and got[2]["reason_text"]
    assert s.audit_count("decide") == before + len(items)
    # An unknown subject refuses the whole batch, naming where, and records nothing.
    bad = s.post(
        "/decisions/batch", {"items": [items[0], {"subject_id": "0123456789abcdef", "purpose": "account"}]}
    )
    body = assert_problem(bad, 422)
    assert body["errors"] == [
        {
            "location": "body",
            "field": "items.1.subject_id",
            "pointer": "#/items/1/subject_id",
            "detail": "unknown subject '0123456789abcdef'",
            "type": "unknown_subject",
        }
    ]
    assert s.audit_count("decide") == before + len(items)
    single = assert_problem(
        s.post("/decisions", {"subject_id": "0123456789abcdef", "purpose": "account"}), 422
    )
    assert single["errors"][0]["pointer"] == "#/subject_id"
    assert_problem(s.post("/decisions/batch", {"items": []}), 422, "validation")


def test_a_withdrawal_is_seen_by_the_next_decision(server: Server) -> None:
    sid = server.sign_up("hal@example.com")
    q = {"subject_id": sid, "purpose": "partner_offers", "categories": ["user.contact.email"]}
    server.post(f"/subjects/{sid}/consent/give", {"purpose": "partner_offers"})
    assert server.post("/decisions", q).json()["ok"] is True
    server.post(f"/subjects/{sid}/consent/withdraw", {"purpose": "partner_offers"})
    assert server.post("/decisions", q).json()["refused"] == {"user.contact.email": "withdrawn"}


def test_gpc_header_is_honoured_where_the_law_makes_it_an_opt_out(platform: Server) -> None:
    s = platform
    sale = next(k for k, p in s.fid.policy.purposes.items() if p.sale)
    ca = s.sign_up("ida@example.com", kind="user", region="US-CA")
    eu = s.sign_up("jo@example.com", kind="user", region="DE")
    s.post(f"/subjects/{ca}/consent/give", {"purpose": sale})
    s.post(f"/subjects/{eu}/consent/give", {"purpose": sale})
    assert s.post("/decisions", {"subject_id": ca, "purpose": sale}).json()["ok"] is True
    state = s.client.get(f"{V1}/subjects/{ca}/consent", headers=s.h(**{"Sec-GPC": "1"})).json()
    assert state["gpc"] is True and sale not in state["allowed_purposes"]
    assert s.get(f"/subjects/{ca}/consent").json()["sale_opt_out"] is False  # a read records nothing

    r = s.post("/decisions", {"subject_id": ca, "purpose": sale}, **{"Sec-GPC": "1"}).json()
    assert r["gpc"] is True and r["reason"] == "sale_opt_out"
    # Recorded (LAW-12): later requests without the header stay opted out.
    assert s.post("/decisions", {"subject_id": ca, "purpose": sale}).json()["reason"] == "sale_opt_out"
    events = s.get(f"/subjects/{ca}/consent/events").json()
    assert events[-1]["kind"] == "sale_opt_out" and events[-1]["channel"] == "gpc_signal"
    # In the EU the policy gives GPC no such effect.
    r = s.post("/decisions", {"subject_id": eu, "purpose": sale}, **{"Sec-GPC": "1"}).json()
    assert r["gpc"] is False and r["ok"] is True

    batch = s.post("/decisions/batch", {"items": [{"subject_id": eu, "purpose": sale}]}, **{"Sec-GPC": "1"})
    assert batch.json()["decisions"][0]["ok"] is True
    new = s.post(
        "/subjects",
        {"kind": "user", "identities": {"email": "kim@example.com"}, "region": "US-CA", "age": 30},
        **{"Sec-GPC": "1"},
    ).json()
    assert new["gpc_opt_out"] is True
    assert s.get(f"/subjects/{new['subject_id']}/consent").json()["sale_opt_out"] is True
    read = s.post(f"/subjects/{new['subject_id']}/read", {"purpose": sale}, **{"Sec-GPC": "1"}).json()
    assert read["decision"]["gpc"] is True and read["decision"]["reason"] == "sale_opt_out"

    gpc = s.client.get("/.well-known/gpc.json")
    assert gpc.json() == {"gpc": True, "lastUpdate": s.fid.policy.effective.isoformat()}


# --------------------------------------------------------------------------- requests


def test_request_lifecycle_queue_and_metrics(server: Server) -> None:
    s = server
    s.sign_up("kai@example.com")
    sub = s.post("/requests", {"type": "access", "contact": {"email": "kai@example.com"}, "region": "DE"})
    assert sub.status_code == 201, sub.text
    rid = sub.json()["request_id"]
    assert sub.json()["verification"] == "email_code" and sub.json()["code_sent"] is True
    assert sub.json()["subject_matched"] is True
    again = s.post(
        "/requests", {"type": "access", "contact": {"email": "KAI@example.com"}, "region": "DE"}
    ).json()
    assert again["duplicate_of"] == rid

    wrong = assert_problem(s.post(f"/requests/{rid}/verify", {"code": "000000"}), 422, "code-rejected")
    assert wrong["attempts_left"] == 4
    assert s.post(f"/requests/{rid}/resend-code").json() == {"request_id": rid, "code_sent": True}
    code = code_for(s.outbox, rid)
    assert s.post(f"/requests/{rid}/verify", {"code": code}).json() == {
        "request_id": rid,
        "status": "verified",
    }

    view = s.get(f"/requests/{rid}").json()
    assert view["status"] == "verified" and 25 <= view["days_left"] <= 31 and view["overdue"] is False
    assert [e["kind"] for e in view["events"]][:2] == ["received", "code_sent"]
    extended = s.post(f"/requests/{rid}/extend", {"reason": "many datastores to search"}).json()
    assert datetime.fromisoformat(extended["due_at"]) > datetime.fromisoformat(view["due_at"])
    assert_problem(s.post(f"/requests/{rid}/extend", {"reason": "again"}), 409, "invalid-transition")
    assert s.post(f"/requests/{rid}/approve").json()["status"] == "approved"

    other = s.post(
        "/requests", {"type": "erase", "contact": {"email": "lu@example.com"}, "region": "DE"}
    ).json()
    assert_problem(
        s.post(f"/requests/{other['request_id']}/deny", {"reason": "other"}), 422, "invalid-request"
    )
    denied = s.post(f"/requests/{other['request_id']}/deny", {"reason": "identity_not_verified"}).json()
    assert denied["status"] == "denied"

    queue = s.get("/requests", status=["approved", "received"]).json()["requests"]
    assert [q["id"] for q in queue] == [rid]
    assert len(s.get("/requests").json()["requests"]) == 2
    assert s.get("/requests", overdue=True).json()["requests"] == []

    year = datetime.now(UTC).year
    rows = {r["type"]: r for r in s.get("/metrics/requests", year=year).json()["rows"]}
    assert rows["access"]["received"] == 1 and rows["access"]["open"] == 1
    assert rows["erase"]["denied"] == 1 and rows["erase"]["median_days"] is not None
    text = s.client.get(f"{V1}/metrics/requests.csv", params={"year": year}, headers=s.h())
    assert text.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(text.text)))
    assert {r["type"] for r in parsed} == {"access", "erase"} and parsed[0]["year"] == str(year)


def test_a_verified_request_runs_and_its_package_downloads(tmp_path: Path) -> None:
    app = load_example_app("filelocker")
    app_url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(app_url)
    app.create(engine, 10, seed=0)
    engine.dispose()
    fid = Fiduciary.open(FILELOCKER, data_dir=tmp_path / "data", keyring=Keyring.generate())
    datastores = build_plan(fid.policy, ["email"]).datastores
    try:
        for s in _serve(fid, tmp_path, connections=dict.fromkeys(datastores, app_url)):
            sub = s.post(
                "/requests", {"type": "access", "contact": {"email": "mo@example.com"}, "region": "DE"}
            ).json()
            rid = sub["request_id"]
            assert_problem(s.post(f"/requests/{rid}/run"), 409, "invalid-transition")  # not verified yet
            s.post(f"/requests/{rid}/verify", {"code": code_for(s.outbox, rid)})
            run = s.post(f"/requests/{rid}/run")
            assert run.status_code == 202, run.text
            job = run.json()["job_id"]
            s.client.app.state.web.runner().wait(job, timeout=60)  # type: ignore[attr-defined]
            assert s.get(f"/requests/{rid}").json()["status"] in ("done", "partial")
            package = s.client.get(f"{V1}/requests/{rid}/package", headers=s.h())
            assert package.status_code == 200 and package.headers["content-type"] == "application/zip"
            assert zipfile.ZipFile(io.BytesIO(package.content)).namelist()
            assert s.audit_count("request.package_downloaded") == 1
    finally:
        fid.close()


# --------------------------------------------------------------------------- policy, audit


def test_policy_notice_versions_and_record(server: Server) -> None:
    s = server
    html = s.client.get(f"{V1}/policy/notice")  # public: no key
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert s.fid.policy.policy.organization.name in html.text
    md = s.client.get(f"{V1}/policy/notice", params={"format": "markdown"})
    assert md.headers["content-type"].startswith("text/markdown") and md.text.startswith("# ")
    versions = s.client.get(f"{V1}/policy/versions").json()
    assert [(v["version"], v["current"]) for v in versions] == [(s.fid.policy.version, True)]
    vid = versions[0]["id"]
    assert s.client.get(f"{V1}/policy/versions/{vid}/notice").text == html.text
    assert_problem(s.client.get(f"{V1}/policy/versions/{vid}"), 401)  # the text needs policy:read
    key = s.key("policy:read")
    text = s.get(f"/policy/versions/{vid}", key=key).json()["text"]
    assert text == FILELOCKER.read_text(encoding="utf-8")
    record = s.get("/policy/record", key=key).json()
    assert record["generated_from"]["digest"] == s.fid.policy.digest and record["activities"]
    rec_csv = s.client.get(f"{V1}/policy/record.csv", headers=s.h(key))
    assert rec_csv.headers["content-type"].startswith("text/csv") and rec_csv.text.count("\n") > 1
    assert_problem(s.client.get(f"{V1}/policy/versions/999/notice"), 404)


def test_audit_query_pages_and_verify(server: Server) -> None:
    s = server
    sid = s.sign_up("ned@example.com")
    other = s.sign_up("ola@example.com")
    for _ in range(3):
        s.post("/decisions", {"subject_id": sid, "purpose": "account"})
    s.post("/decisions", {"subject_id": other, "purpose": "account"})
    key = s.key("audit:read")
    mine = s.get("/audit", key=key, subject_id=sid, action="decide").json()
    assert len(mine["entries"]) == 3 and mine["next_after_seq"] is None
    assert {e["subject"] for e in mine["entries"]} == {s.fid.audit.pseudonym(sid)}
    assert sid not in str(mine)  # the log holds a pseudonym, never the id
    page = s.get("/audit", key=key, action="decide", limit=2).json()
    assert len(page["entries"]) == 2 and page["next_after_seq"] == page["entries"][-1]["seq"]
    rest = s.get("/audit", key=key, action="decide", limit=2, after_seq=page["next_after_seq"]).json()
    assert len(rest["entries"]) == 2 and rest["entries"][0]["seq"] > page["next_after_seq"]
    since = s.get("/audit", key=key, since="2000-01-01T00:00:00Z").json()["entries"]
    assert since
    report = s.get("/audit/verify", key=key).json()
    assert report["ok"] is True and report["problems"] == [] and report["entries"] == s.audit_count()
    assert_problem(s.get("/audit", key=key, since="yesterday"), 422, "validation")


# --------------------------------------------------------------------------- access


def test_keys_scopes_revocation_and_hashing(both: Server) -> None:
    s = both
    sid = s.sign_up("pia@example.com")
    no_key = s.client.post(
        f"{V1}/subjects/find", json={"kind": "email", "value": "pia@example.com", "purpose": "support"}
    )
    assert assert_problem(no_key, 401, "unauthenticated")
    assert no_key.headers["www-authenticate"].startswith("Bearer")
    for bad in ("fid_nonsense", "Basic abc", s.admin[:-2] + "xx"):
        hdr = {"Authorization": bad if bad.startswith("Basic") else f"Bearer {bad}"}
        assert s.client.get(f"{V1}/subjects/{sid}", headers=hdr).status_code == 401

    decide_only = s.key("decisions", "consent:write", name="marketing")
    # This key can ask decisions and record choices, but reaches no one's data.
    assert s.post("/decisions", {"subject_id": sid, "purpose": "account"}, key=decide_only).status_code == 200
    for r in (
        s.post(f"/subjects/{sid}/read", {"purpose": "account"}, key=decide_only),
        s.post(
            "/subjects/find",
            {"kind": "email", "value": "pia@example.com", "purpose": "support"},
            key=decide_only,
        ),
        s.get(f"/subjects/{sid}", key=decide_only),
        s.get(f"/subjects/{sid}/consent/events", key=decide_only),
        s.get("/audit", key=decide_only),
        s.get("/api-keys", key=decide_only),
    ):
        body = assert_problem(r, 403 if r.status_code != 404 else 404)
        if r.status_code == 403:
            assert body["type"] == "/problems/insufficient-scope" and body["required_scope"]
            assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert s.get("/admin/api-keys", key=decide_only).status_code == 403

    # Keys through the admin API: shown once, listed without secrets, revoked.
    created = s.post("/admin/api-keys", {"name": "reader", "scopes": ["subjects:read"]})
    assert created.status_code == 201
    new_key, new_id = created.json()["key"], created.json()["key_id"]
    assert s.get(f"/subjects/{sid}", key=new_key).status_code == 200
    listed = s.get("/admin/api-keys").json()
    assert new_key not in str(listed) and {k["id"] for k in listed} >= {new_id}
    assert s.client.delete(f"{V1}/admin/api-keys/{new_id}", headers=s.h()).status_code == 204
    assert_problem(s.get(f"/subjects/{sid}", key=new_key), 401, "unauthenticated")
    assert_problem(s.client.delete(f"{V1}/admin/api-keys/{'0' * 16}", headers=s.h()), 404, "unknown-api-key")
    # Revoked by the library (the CLI) in another place: refused too.
    revoke_api_key(s.fid, decide_only.split("_")[1], actor="cli")
    assert s.post("/decisions", {"subject_id": sid, "purpose": "account"}, key=decide_only).status_code == 401

    # Stored hashed: no key's secret is anywhere in the store.
    with s.fid.data.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(T.api_keys))]
    for secret in (s.admin, new_key, decide_only):
        assert secret not in str(rows) and secret.split("_", 2)[2] not in str(rows)
    assert all(len(r["secret_hash"]) == 64 for r in rows)
    if s.fid.data.dialect.name == "sqlite":
        db = Path(str(s.fid.data.url.database)).read_bytes()
        assert new_key.split("_", 2)[2].encode() not in db
    # Every admin action is in the audit trail, with the key that did it.
    actions = [e["action"] for e in s.get("/audit", action="admin.api_key_revoked").json()["entries"]]
    assert len(actions) == 2
    created_entries = s.get("/audit", action="admin.api_key_created").json()["entries"]
    assert any(e["actor"].startswith("api-key:") and e["detail"]["name"] == "reader" for e in created_entries)


def test_api_key_library(server: Server) -> None:
    key_id, secret = create_api_key(server.fid, "crm-sync", ["consent:write", "decisions"])
    assert secret.startswith(f"fid_{key_id}_") and len(secret) == 4 + 16 + 1 + 43
    found = authenticate(server.fid, secret)
    assert (
        found is not None
        and found.scopes == {"consent:write", "decisions"}
        and found.actor == f"api-key:{key_id}"
    )
    assert authenticate(server.fid, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    with pytest.raises(ValueError, match="did you mean 'decisions'"):
        create_api_key(server.fid, "x", ["decisons"])
    with pytest.raises(ValueError, match="not a person's address"):
        create_api_key(server.fid, "ann@example.com", ["decisions"])
    assert revoke_api_key(server.fid, key_id) is True
    assert revoke_api_key(server.fid, key_id) is False
    assert authenticate(server.fid, secret) is None
    assert [k.active for k in list_api_keys(server.fid) if k.id == key_id] == [False]


def test_console_users_argon2_and_roles(server: Server) -> None:
    user = create_user(server.fid, "priya", "correct horse battery", "operator", actor="cli")
    assert user.scopes >= {"requests:write", "requests:read"} and "admin" not in user.scopes
    with server.fid.data.connect() as conn:
        stored = conn.execute(select(T.console_users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    ok = verify_password(server.fid, "priya", "correct horse battery")
    assert ok is not None and ok.role == "operator" and ok.last_login_at is not None
    assert verify_password(server.fid, "priya", "wrong horse battery") is None
    assert verify_password(server.fid, "nobody", "correct horse battery") is None
    with pytest.raises(ValueError, match="taken"):
        create_user(server.fid, "priya", "another long password", "viewer")
    for bad in (
        ("ann@example.com", "a long enough password", "viewer"),
        ("zed", "short", "viewer"),
        ("zed", "a long enough password", "root"),
    ):
        with pytest.raises(ValueError):
            create_user(server.fid, *bad)
    assert disable_user(server.fid, "priya") is True
    assert verify_password(server.fid, "priya", "correct horse battery") is None
    r = server.post(
        "/admin/users", {"username": "quinn", "password": "a long enough password", "role": "viewer"}
    )
    assert r.status_code == 201 and "password" not in r.json()
    assert {u["username"] for u in server.get("/admin/users").json()} == {"priya", "quinn"}
    assert server.audit_count("admin.user_created") == 2 and server.audit_count("admin.user_disabled") == 1


def test_cli_keys_and_users(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path / "data")]
    made = runner.invoke(
        cli_web.app,
        ["keys", "create", "--name", "crm", "--scope", "decisions", "--scope", "consent:write", *data],
    )
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("fid_")
    listed = runner.invoke(cli_web.app, ["keys", "list", *data])
    key_id = secret.split("_")[1]
    assert (
        key_id in listed.stdout and "consent:write decisions" in listed.stdout and secret not in listed.stdout
    )
    bad = runner.invoke(cli_web.app, ["keys", "create", "--name", "x", "--scope", "everything", *data])
    assert bad.exit_code == 2 and "unknown" in bad.output
    assert runner.invoke(cli_web.app, ["keys", "revoke", key_id, *data]).exit_code == 0
    assert "revoked already" in runner.invoke(cli_web.app, ["keys", "revoke", key_id, *data]).stdout
    assert runner.invoke(cli_web.app, ["keys", "revoke", "0" * 16, *data]).exit_code == 1
    user = runner.invoke(
        cli_web.app,
        ["users", "create", "rosa", "--role", "admin", *data],
        input="a long enough password\na long enough password\n",
    )
    assert user.exit_code == 0, user.output
    assert "rosa  admin" in runner.invoke(cli_web.app, ["users", "list", *data]).stdout
    no_policy = runner.invoke(cli_web.app, ["serve", *data], env={"FIDUCIARY_POLICY": ""})
    assert no_policy.exit_code == 2


def test_group_commit_answers_each_request_on_its_own(server: Server) -> None:
    """Writes queued together share a transaction; a bad one fails alone."""
    from fiduciary.consent import ConsentError, NewEvent

    web = server.client.app.state.web  # type: ignore[attr-defined]
    sid = server.sign_up("uma@example.com")
    version = server.fid.policy.version

    def event(purpose: str) -> NewEvent:
        return NewEvent(
            subject_id=sid, kind="consent_given", scope=purpose, channel="api", policy_version=version
        )

    futures = [web.writer.submit(event(p)) for p in ("partner_offers", "no_such_purpose", "site_statistics")]
    futures.append(web.writer.submit({"actor": "test", "action": "test.entry"}))
    assert isinstance(futures[0].result(10), int) and isinstance(futures[2].result(10), int)
    with pytest.raises(ConsentError, match="unknown purpose"):
        futures[1].result(10)
    assert futures[3].result(10) is None
    assert server.get(f"/subjects/{sid}/consent").json()["consents"] == {
        "partner_offers": "given",
        "site_statistics": "given",
    }
    assert server.audit_count("test.entry") == 1
    assert web.writer.items >= 4
