"""The privacy center's preferences pages and the consent banner's endpoint, through
FastAPI's TestClient over a real Fiduciary on SQLite and on PostgreSQL.

A person signs in with a code mailed to the address the vault knows, and then sees and
changes only their own choices; every change is a consent-ledger event with its proof
(LAW-8); GPC is honoured on every request where the person's law gives it effect (LAW-12);
a material policy change waits for acceptance (PUT-3); the banner's public endpoint keeps
a visitor's cookie choices as proof, only from allowed origins."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fiduciary.config import Settings
from fiduciary.consent.ledger import ConsentEvent, notice_digest
from fiduciary.core import Fiduciary
from fiduciary.decide import Reason
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from fiduciary.web.center import signin
from fiduciary.web.center.banner import banner_config, visitor_token
from fiduciary.web.center.routes import COOKIE, AttemptLimiter
from tests.conftest import Stores

SHOP = "http://shop.example"
# Pages and wording: the storage they touch is the same as the tests on both backends.
SQLITE_ONLY = pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
IP = ("203.0.113.7", 50000)  # a documentation address: the proof keeps 203.0.113.0/24


@dataclass
class Site:
    fid: Fiduciary
    app: Any
    outbox: OutboxMailer

    def client(self, **kw: Any) -> TestClient:
        return TestClient(self.app, client=IP, **kw)

    def code(self, to: str) -> str:
        for m in reversed(self.outbox.outbox_messages()):
            found = re.search(r"sign-in code: (\d+)", m.subject)
            if found and m.to.lower() == to.lower():
                return found.group(1)
        raise AssertionError(f"no sign-in code mailed to {to}")

    def events(self, sid: str) -> list[ConsentEvent]:
        return self.fid.consent.events(sid)


@contextmanager
def serve(stores: Stores, policy: Path, keyring: Keyring, tmp: Path) -> Iterator[Site]:
    fid = Fiduciary.open(
        policy, database_url=stores.data_url, keys_database_url=stores.keys_url, keyring=keyring
    )
    outbox = OutboxMailer(tmp / "outbox")
    app = create_app(fid, settings=Settings(data_dir=tmp, banner_origins=[SHOP]), mailer=outbox)
    try:
        yield Site(fid, app, outbox)
    finally:
        app.state.web.close()
        fid.close()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def social(stores: Stores, keyring: Keyring, tmp_path: Path) -> Iterator[Site]:
    with serve(stores, example_policy("social"), keyring, tmp_path) as site:
        yield site


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "form without a CSRF token"
    return found.group(1)


def sign_in(site: Site, tc: TestClient, email: str) -> str:
    """Sign ``tc`` in as the owner of ``email``; returns the preferences page."""
    form = tc.get("/preferences")
    assert form.status_code == 200 and "Email me a code" in form.text
    r = tc.post(
        "/preferences/sign-in", data={"csrf": csrf_of(form.text), "email": email}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/preferences/code"
    page = tc.get("/preferences/code")
    r = tc.post("/preferences/code", data={"csrf": csrf_of(page.text), "code": site.code(email)})
    assert r.status_code == 200 and "Sign out" in r.text, r.text
    return r.text


def save(tc: TestClient, page: str, section: str, **fields: str) -> str:
    r = tc.post(
        "/preferences", data={"csrf": csrf_of(page), "section": section, **fields}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith(f"/preferences?saved={section}")
    return tc.get(r.headers["location"]).text


def member(fid: Fiduciary, email: str, region: str) -> str:
    return fid.sign_up("member", identities={"email": email}, region=region, age=30)


def test_a_person_sees_and_changes_only_their_own_choices(social: Site) -> None:
    fid = social.fid
    ann = member(fid, "ann@example.com", "DE")
    bob = member(fid, "bob@example.com", "DE")
    fid.set_setting(bob, "visibility:user.name", "members")
    tc = social.client()
    page = sign_in(social, tc, "ann@example.com")
    assert "Who can see your information" in page and "Linked services" in page
    # The form names no subject: one smuggled in changes nothing about anyone else.
    save(tc, page, "visibility", **{"visibility:user.name": "self", "subject_id": bob, "subject": bob})
    assert [e.scope for e in social.events(ann)] == ["visibility:user.name"]
    assert [e.value for e in social.events(bob)] == ["members"]
    assert fid.state(ann).settings["visibility:user.name"] == "self"

    # Another browser, without the session: the sign-in form, and a post records nothing.
    stranger = social.client()
    assert "Email me a code" in stranger.get("/preferences").text
    page2 = stranger.get("/preferences").text
    r = stranger.post(
        "/preferences",
        data={"csrf": csrf_of(page2), "section": "visibility", "visibility:user.name": "public"},
    )
    assert "Email me a code" in r.text
    # A cookie whose payload was altered (another session id) is not accepted.
    value = tc.cookies.get(COOKIE)
    assert value is not None
    body, mac = value.split(".")
    forged = TestClient(social.app, client=IP, cookies={COOKIE: body[:-2] + "AA." + mac})
    assert "Email me a code" in forged.get("/preferences").text
    assert len(social.events(ann)) == 1 and len(social.events(bob)) == 1

    # Signing out ends the session itself: the old cookie no longer opens it.
    page = tc.get("/preferences").text
    old = dict(tc.cookies)
    r = tc.post("/preferences/sign-out", data={"csrf": csrf_of(page)})
    assert "You are signed out" in r.text
    replay = TestClient(social.app, client=IP, cookies=old)
    assert "Email me a code" in replay.get("/preferences").text


def test_every_change_is_a_ledger_event_with_proof(social: Site) -> None:
    fid = social.fid
    ann = member(fid, "ann@example.com", "GB")
    fid.set_setting(ann, "linked:linked_services", "true")
    fid.give_consent(ann, "linked_services")
    before = len(social.events(ann))
    tc = social.client()
    page = sign_in(social, tc, "ann@example.com")
    assert 'name="purpose:promotional_messages" value="on" checked' in page

    page = save(tc, page, "marketing")  # the box unticked: promotional messages off
    assert "Your choices are saved (1 change)" in page
    page = save(tc, page, "cookies", **{"cookies:analytics": "on", "cookies:functional": "on"})
    assert fid.decide(ann, "provide_service", ["user.name"], audience="public").ok
    page = save(tc, page, "visibility", **{"visibility:user.name": "members"})
    page = save(tc, page, "linked", unlink="linked:linked_services")
    assert "Services you link to your account: not linked" in page
    again = save(tc, page, "marketing")
    assert "Nothing changed" in again

    new = social.events(ann)[before:]
    assert [(e.kind.value, e.scope, e.value) for e in new] == [
        ("consent_withdrawn", "promotional_messages", None),
        ("setting", "cookies:analytics", "granted"),
        ("setting", "visibility:user.name", "members"),
        ("setting", "linked:linked_services", "false"),
        ("consent_withdrawn", "linked_services", None),
    ]
    notice = tc.get("/notice").text
    for e in new:
        proof = fid.consent.proof(e.id)
        assert proof["notice_hash"] == notice_digest(notice)
        assert proof["policy_version"] == fid.policy.version
        assert (proof["method"], proof["channel"], proof["ip"]) == (
            "web_form",
            "privacy_center",
            "203.0.113.0/24",
        )
        assert proof["actor"] == "subject" and proof["language"] == "en"
    # The decisions follow at once (LAW-7, PLU-3, PLU-7).
    assert fid.decide(ann, "promotional_messages").reason == Reason.withdrawn
    name = fid.decide(ann, "provide_service", ["user.name"], audience="public")
    assert dict(name.refused) == {"user.name": Reason.visibility}
    assert fid.decide(ann, "provide_service", ["user.name"], audience="members").ok
    assert fid.decide(ann, "linked_services", recipient="linked_services").reason == Reason.withdrawn

    # Ticking the box again gives the consent back: withdrawing was exactly as easy (LAW-8).
    save(tc, tc.get("/preferences").text, "marketing", **{"purpose:promotional_messages": "on"})
    assert social.events(ann)[-1].kind.value == "consent_given"
    assert fid.decide(ann, "promotional_messages").reason is None


@SQLITE_ONLY
def test_bad_input_and_csrf_change_nothing(social: Site) -> None:
    fid = social.fid
    ann = member(fid, "ann@example.com", "DE")
    tc = social.client()
    page = sign_in(social, tc, "ann@example.com")
    for data in (
        {"section": "visibility", "visibility:user.name": "public"},  # no token
        {"csrf": "forged", "section": "visibility", "visibility:user.name": "public"},
    ):
        r = tc.post("/preferences", data=data)
        assert r.status_code == 403 and "This form has expired" in r.text
    r = tc.post(
        "/preferences",
        data={"csrf": csrf_of(page), "section": "visibility", "visibility:user.name": "the whole world"},
    )
    assert r.status_code == 422 and "Nothing was saved" in r.text
    r = tc.post("/preferences", data={"csrf": csrf_of(page), "section": "nonsense"})
    assert r.status_code == 400
    assert social.events(ann) == []
    # The sign-in and code forms check the token too.
    fresh = social.client()
    fresh.get("/preferences")
    assert fresh.post("/preferences/sign-in", data={"email": "ann@example.com"}).status_code == 403
    assert fresh.post("/preferences/code", data={"code": "123456"}).status_code == 403


def test_unknown_addresses_and_wrong_codes(social: Site) -> None:
    fid = social.fid
    member(fid, "ann@example.com", "DE")
    tc = social.client()
    form = tc.get("/preferences").text
    r = tc.post("/preferences/sign-in", data={"csrf": csrf_of(form), "email": "nobody@example.com"})
    # The same page as for a known address, and no mail to anyone.
    assert r.status_code == 200 and "If we know the address you gave" in r.text
    assert social.outbox.outbox_messages() == []
    r = tc.post("/preferences/code", data={"csrf": csrf_of(r.text), "code": "000000"})
    assert r.status_code == 422 and "does not match" in r.text

    page = tc.get("/preferences").text
    r = tc.post("/preferences/sign-in", data={"csrf": csrf_of(page), "email": "ANN@example.com "})
    code = social.code("ann@example.com")
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1):
        r = tc.post("/preferences/code", data={"csrf": csrf_of(r.text), "code": wrong})
        assert r.status_code == 422 and f"{left} attempt" in r.text
    r = tc.post("/preferences/code", data={"csrf": csrf_of(r.text), "code": wrong})
    assert "no attempts left" in r.text
    # Locked: even the right code no longer works.
    r = tc.post("/preferences/code", data={"csrf": csrf_of(r.text), "code": code})
    assert r.status_code == 422 and "no longer works" in r.text
    assert "Email me a code" in tc.get("/preferences").text


def test_sign_in_codes_expire_and_sessions_end(social: Site) -> None:
    fid = social.fid
    ann = member(fid, "ann@example.com", "DE")
    key = signin.derive_key(fid.keyring.token_key)
    now = datetime.now(UTC)
    started = signin.start(fid.data, key, ann, now=now)
    assert started.code is not None
    with pytest.raises(signin.CodeExpired):
        signin.verify(fid.data, key, started.id, started.code, now=now + signin.CODE_TTL)
    started = signin.start(fid.data, key, ann, now=now)
    assert started.code is not None
    assert signin.verify(fid.data, key, started.id, started.code, now=now) == ann
    assert signin.session_subject(fid.data, started.id, now=now + timedelta(minutes=59)) == ann
    assert signin.session_subject(fid.data, started.id, now=now + signin.SESSION_TTL) is None
    with pytest.raises(signin.CodeLocked):  # a code works once
        signin.verify(fid.data, key, started.id, started.code, now=now)
    # Too many codes for one person in an hour: the next sign-ins mail nothing.
    for _ in range(signin.MAX_PER_SUBJECT):
        signin.start(fid.data, key, ann, now=now)
    assert signin.start(fid.data, key, ann, now=now).throttled


@SQLITE_ONLY
def test_gpc_is_honoured_on_every_request_and_shown(stores: Stores, keyring: Keyring, tmp_path: Path) -> None:
    with serve(stores, example_policy("dataplatform"), keyring, tmp_path) as site:
        fid = site.fid
        cal = fid.sign_up("user", identities={"email": "cal@example.com"}, region="US-CA", age=40)
        dee = fid.sign_up("user", identities={"email": "dee@example.com"}, region="DE", age=40)
        tc = site.client(headers={"Sec-GPC": "1"})
        page = sign_in(site, tc, "cal@example.com")
        assert "Do not sell or share" in page and "On: your browser sends the Global Privacy Control" in page
        assert re.search(r'name="sale" value="on" checked disabled', page)
        events = site.events(cal)
        assert [(e.kind.value, e.channel, e.method) for e in events] == [
            ("sale_opt_out", "gpc_signal", "signal")
        ]
        assert fid.consent.proof(events[0].id)["ip"] == "203.0.113.0/24"
        # Advertising cookies all carry gpc: opt_out: locked off.
        assert re.search(r'name="cookies:advertising" value="on" disabled', page)
        # Recorded once; a form cannot opt back in while the signal is on.
        page = save(tc, tc.get("/preferences").text, "sale")
        page = save(tc, page, "cookies", **{"cookies:advertising": "on", "cookies:analytics": "on"})
        assert [e.kind.value for e in site.events(cal)] == ["sale_opt_out", "setting"]  # functional: off
        assert not any(e.scope == "cookies:advertising" for e in site.events(cal))
        assert fid.decide(cal, "sale_of_additional_information").reason == Reason.sale_opt_out

        # In Germany GPC has no legal effect here: shown, not recorded; the choice stays hers.
        tc2 = site.client(headers={"Sec-GPC": "1"})
        page = sign_in(site, tc2, "dee@example.com")
        assert "Global Privacy Control signal" in page and site.events(dee) == []
        page = save(tc2, page, "sale", sale="on")
        assert [e.kind.value for e in site.events(dee)] == ["sale_opt_out"]


@SQLITE_ONLY
def test_sections_follow_the_policy(stores: Stores, keyring: Keyring, tmp_path: Path) -> None:
    with serve(stores, example_policy("filelocker"), keyring, tmp_path) as site:
        site.fid.sign_up("customer", identities={"email": "eve@example.com"}, region="NL", age=30)
        page = sign_in(site, site.client(), "eve@example.com")
        # Marketing per channel and the processor one can refuse (PUT-11); no visibility,
        # no linked services, nothing sold: those sections are absent.
        assert "Marketing messages" in page and "By email" in page and "Share with Intercom" in page
        for absent in ("Who can see your information", "Linked services", "Do not sell or share"):
            assert absent not in page


def test_material_change_waits_for_acceptance(stores: Stores, keyring: Keyring, tmp_path: Path) -> None:
    v1 = example_policy("filelocker")
    fid = Fiduciary.open(v1, database_url=stores.data_url, keys_database_url=stores.keys_url, keyring=keyring)
    sid = fid.sign_up("customer", identities={"email": "bo@example.com"}, region="NL", age=30)
    fid.close()
    # Version 2 adds a category to quality assurance: a new use of data already held (PUT-3).
    text = v1.read_text()
    head, tail = text.split("  quality_assurance:", 1)
    line = next(x for x in tail.splitlines() if x.strip().startswith("categories:"))
    v2 = head + "  quality_assurance:" + tail.replace(line, line.replace("]", ", user.device.ip_address]"), 1)
    v2 = v2.replace('version: "2011-12-01"', 'version: "2026-12-01"', 1)
    path = tmp_path / "policy.yaml"
    path.write_text(v2)
    with serve(stores, path, keyring, tmp_path) as site:
        assert site.fid.decide(sid, "quality_assurance").reason == Reason.needs_acceptance
        tc = site.client()
        home = tc.get("/").text
        assert "We changed our privacy notice" in home and "review and accept" in home
        page = sign_in(site, tc, "bo@example.com")
        assert "Our privacy notice has changed" in page and "See what changed" in page
        changes = tc.get("/preferences/changes").text
        assert "IP address" in changes and "Quality assurance" in changes
        r = tc.post("/preferences/changes", data={"csrf": csrf_of(changes)})
        assert "you accepted the changes" in r.text and "Our privacy notice has changed" not in r.text
        event = site.events(sid)[-1]
        assert (event.kind.value, event.scope, event.value) == (
            "version_accepted",
            "*",
            str(site.fid.version_seq),
        )
        proof = site.fid.consent.proof(event.id)
        assert (proof["method"], proof["channel"], proof["policy_version"]) == (
            "web_form",
            "privacy_center",
            "2026-12-01",
        )
        assert proof["notice_hash"] == notice_digest(tc.get("/notice").text)
        assert site.fid.decide(sid, "quality_assurance").reason is None
        assert "nothing for you to accept" in tc.get("/preferences/changes").text


def test_banner_endpoint_keeps_visitor_choices_as_proof(social: Site) -> None:
    fid = social.fid
    ann = member(fid, "ann@example.com", "DE")
    tc = social.client()
    url = "/api/v1/banner/choices"
    pre = tc.options(url, headers={"Origin": SHOP, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == SHOP
    assert tc.options(url, headers={"Origin": "https://evil.example"}).status_code == 403

    digest = banner_config(fid.policy, "*strictest*")["digest"]
    body = {"choices": {"analytics": True, "functional": False}, "config": digest}
    r = tc.post(url, json=body, headers={"Origin": SHOP})
    assert r.status_code == 201 and r.headers["access-control-allow-origin"] == SHOP
    out = r.json()
    visitor = out["visitor"].split(".")[0]
    assert fid.vault.subject(visitor).kind == "visitor"
    events = social.events(visitor)
    assert sorted((e.scope, e.value) for e in events) == [
        ("cookies:analytics", "granted"),
        ("cookies:functional", "denied"),
    ]
    proof = fid.consent.proof(events[0].id)
    assert (proof["notice_hash"], proof["method"], proof["channel"], proof["ip"]) == (
        digest,
        "cookie_banner",
        "web_form",
        "203.0.113.0/24",
    )
    # The same choice again records nothing; a change records only what changed.
    assert tc.post(url, json={**body, "visitor": out["visitor"]}).json()["event_ids"] == []
    r = tc.post(url, json={**body, "visitor": out["visitor"], "choices": {"analytics": False}})
    assert len(r.json()["event_ids"]) == 1 and social.events(visitor)[-1].value == "denied"

    # A token naming a member without the server's MAC makes a new visitor, never touches ann.
    forged = visitor_token(b"\x00" * 32, ann)
    r = tc.post(url, json={**body, "visitor": forged})
    assert r.status_code == 201 and not r.json()["visitor"].startswith(ann)
    assert social.events(ann) == []

    # Bad input: a clear problem, with CORS headers so the script can read it; nothing stored.
    with fid.data.connect() as conn:
        count = conn.execute(select(func.count()).select_from(T.subjects)).scalar_one()
    for bad, status in (
        ({"choices": {"strictly_necessary": False}}, 422),
        ({"choices": {"analytics": True}, "config": "0" * 64}, 422),
        ({"choices": "all"}, 422),
    ):
        r = tc.post(url, json=bad, headers={"Origin": SHOP})
        assert r.status_code == status and r.headers["access-control-allow-origin"] == SHOP, r.text
        assert r.headers["content-type"] == "application/problem+json"
    r = tc.post(url, json=body, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    with fid.data.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T.subjects)).scalar_one() == count

    # Rate-limited per IP.
    social.app.state.banner_limiter = AttemptLimiter(1, 60)
    assert tc.post(url, json=body).status_code == 201
    r = tc.post(url, json=body, headers={"Origin": SHOP})
    assert r.status_code == 429 and r.headers["access-control-allow-origin"] == SHOP


@SQLITE_ONLY
def test_banner_honours_gpc_and_region(stores: Stores, keyring: Keyring, tmp_path: Path) -> None:
    with serve(stores, example_policy("projects"), keyring, tmp_path) as site:
        tc = site.client()
        js = tc.get("/banner.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert '"key":"advertising"' in js.text and "__FIDUCIARY_CONFIG__" not in js.text
        assert tc.get("/banner.css").headers["content-type"].startswith("text/css")
        cp = site.fid.policy
        strict = {c["key"]: c for c in banner_config(cp, "*strictest*")["categories"]}
        row = {c["key"]: c for c in banner_config(cp, cp.jurisdiction_for("US"))["categories"]}
        # Without a region every category that needs opt-in somewhere starts off; in the
        # rest of the world analytics works by opt-out (social buttons ask everywhere).
        assert not strict["analytics"]["default"] and row["analytics"]["default"]
        assert not row["advertising"]["default"] and strict["advertising"]["gpc"] == "all"
        assert '"default":true,"gpc":"none"' in tc.get("/banner.js?region=US").text

        r = tc.post(
            "/api/v1/banner/choices",
            json={"choices": {"analytics": True, "advertising": True, "functional": True}},
            headers={"Sec-GPC": "1"},
        )
        out = r.json()
        assert out["gpc"] and out["choices"] == {"analytics": True, "advertising": False, "functional": True}
        visitor = out["visitor"].split(".")[0]
        kinds = [(e.kind.value, e.scope, e.value, e.channel) for e in site.events(visitor)]
        assert ("setting", "cookies:advertising", "denied", "web_form") in kinds
        assert ("sale_opt_out", "sale", None, "gpc_signal") in kinds
        shared = site.fid.decide(visitor, "retargeting", recipient="adroll")
        assert not shared.allowed and set(shared.refused.values()) == {Reason.sale_opt_out}
