"""The privacy center's pages through FastAPI's TestClient over a real SQLite Fiduciary on
examples/filelocker: every page renders, forms work without JavaScript (plain form
posts), CSRF and ownership are enforced, and one-click unsubscribe withdraws consent."""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fiduciary.consent.tokens import make_unsubscribe_token
from fiduciary.store import tables as T
from fiduciary.web.center.routes import CODE_ATTEMPTS_PER_IP, COOKIE
from tests.center_support import PURPOSE, Center, center


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Center]:
    with center(tmp_path) as c:
        yield c


def client(c: Center) -> TestClient:
    return TestClient(c.app, follow_redirects=True)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "form without a CSRF token"
    return found.group(1)


def submit(tc: TestClient, email: str, type: str = "access", region: str = "DE") -> str:
    form = tc.get("/requests/new", params={"region": region})
    assert form.status_code == 200
    r = tc.post(
        "/requests/new",
        data={"csrf": csrf_of(form.text), "type": type, "email": email, "region": region},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    found = re.fullmatch(r"/requests/([A-Za-z0-9]+)/verify\?sent=1", r.headers["location"])
    assert found
    return found.group(1)


def verify(tc: TestClient, c: Center, request_id: str) -> None:
    page = tc.get(f"/requests/{request_id}/verify")
    assert page.status_code == 200 and "Verification code" in page.text
    r = tc.post(
        f"/requests/{request_id}/verify",
        data={"csrf": csrf_of(page.text), "code": c.code_for(request_id)},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/requests/{request_id}"


def wait_done(tc: TestClient, request_id: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = tc.get(f"/requests/{request_id}")
        assert page.status_code == 200
        if "Download your data" in page.text:
            return page.text
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} not done: {page.text}")


def test_pages_render(site: Center) -> None:
    tc = client(site)
    org = site.fid.policy.policy.organization.name
    for path in (
        "/",
        "/notice",
        "/notice/versions",
        "/requests/new",
        "/requests/new?region=US-CA",
        "/center.css",
    ):
        r = tc.get(path)
        assert r.status_code == 200, path
    home = client(site).get("/")
    assert '<html lang="en">' in home.text and "<main" in home.text and "<nav" in home.text
    assert org in home.text and 'href="/notice"' in home.text and 'href="/requests/new"' in home.text
    assert home.cookies.get(COOKIE)
    cookie_header = home.headers["set-cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=lax" in cookie_header
    assert "Secure" not in cookie_header  # plain http here
    assert "<h1" in tc.get("/notice").text
    versions = tc.get("/notice/versions").text
    vid = site.fid.version_seq
    assert f'href="/notice/versions/{vid}"' in versions and "(current)" in versions
    assert tc.get(f"/notice/versions/{vid}").status_code == 200
    assert tc.get("/notice/versions/99999").status_code == 404
    assert tc.get("/.well-known/gpc.json").json()["gpc"] is True
    # Rights differ by region: California offers opt-out of sale, the EU does not.
    assert "Do not sell or share" in tc.get("/requests/new?region=US-CA").text
    assert "Do not sell or share" not in tc.get("/requests/new?region=DE").text
    assert "Global Privacy Control signal" in tc.get("/", headers={"Sec-GPC": "1"}).text
    assert "Global Privacy Control signal" not in tc.get("/").text


def test_access_request_journey(site: Center) -> None:
    tc = client(site)
    rid = submit(tc, site.emails[0])
    assert "emailed you a code" in tc.get(f"/requests/{rid}/verify?sent=1").text
    # Before verification this browser may not see the status.
    assert tc.get(f"/requests/{rid}").status_code == 403
    verify(tc, site, rid)
    page = wait_done(tc, rid)
    assert "Get a copy of my data" in page and "We received your request." in page
    z = tc.get(f"/requests/{rid}/download")
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    names = set(zipfile.ZipFile(io.BytesIO(z.content)).namelist())
    assert {"data.json", "report.html"} <= names
    assert site.fid.policy.policy.organization.name  # branded pages, see test_pages_render


def test_another_persons_request_is_refused(site: Center) -> None:
    alice, mallory = client(site), client(site)
    rid = submit(alice, site.emails[1])
    verify(alice, site, rid)
    wait_done(alice, rid)
    mallory.get("/")
    assert mallory.get(f"/requests/{rid}").status_code == 403
    assert mallory.get(f"/requests/{rid}/download").status_code == 403
    # A forged session cookie naming the request is not accepted either.
    mallory.cookies.set(COOKIE, alice.cookies[COOKIE][:-3] + "AAA")
    assert mallory.get(f"/requests/{rid}/download").status_code == 403
    # Mallory's own verification proves nothing about Alice's request: its code is used.
    page = mallory.get(f"/requests/{rid}/verify", follow_redirects=False)
    assert page.status_code == 303


def test_csrf_required(site: Center) -> None:
    tc = client(site)
    tc.get("/requests/new?region=DE")
    r = tc.post("/requests/new", data={"type": "access", "email": site.emails[2], "region": "DE"})
    assert r.status_code == 403
    r = tc.post(
        "/requests/new", data={"csrf": "forged", "type": "access", "email": site.emails[2], "region": "DE"}
    )
    assert r.status_code == 403
    rid = submit(tc, site.emails[2])
    assert tc.post(f"/requests/{rid}/verify", data={"code": site.code_for(rid)}).status_code == 403
    # Another browser's token does not work in this one.
    other = client(site)
    token = csrf_of(other.get("/requests/new?region=DE").text)
    assert (
        tc.post(f"/requests/{rid}/verify", data={"csrf": token, "code": site.code_for(rid)}).status_code
        == 403
    )


def test_form_errors_and_wrong_codes(site: Center) -> None:
    tc = client(site)
    form = tc.get("/requests/new?region=DE")
    r = tc.post(
        "/requests/new", data={"csrf": csrf_of(form.text), "type": "", "email": "nope", "region": "DE"}
    )
    assert r.status_code == 422 and 'aria-invalid="true"' in r.text and 'role="alert"' in r.text
    rid = submit(tc, site.emails[3])
    token = csrf_of(tc.get(f"/requests/{rid}/verify").text)
    real = site.code_for(rid)
    wrong = "0" * len(real) if real != "0" * len(real) else "1" * len(real)
    r = tc.post(f"/requests/{rid}/verify", data={"csrf": token, "code": wrong})
    assert r.status_code == 422 and "code-error" in r.text
    # The per-IP limit: after CODE_ATTEMPTS_PER_IP attempts, even the right code waits.
    for _ in range(CODE_ATTEMPTS_PER_IP - 1):
        tc.post(f"/requests/{rid}/verify", data={"csrf": token, "code": wrong})
    r = tc.post(f"/requests/{rid}/verify", data={"csrf": token, "code": real})
    assert r.status_code == 429


def test_unsubscribe(site: Center) -> None:
    fid = site.fid
    sid = fid.sign_up(
        "customer", identities={"email": "unsub@example.com"}, region="US-CA", consents=[PURPOSE]
    )
    assert fid.decide(sid, PURPOSE).allowed
    token = make_unsubscribe_token(fid.keyring, sid, PURPOSE)
    tc = client(site)
    page = tc.get("/unsubscribe", params={"token": token})
    assert page.status_code == 200 and "<button" in page.text and "One-Click" in page.text
    # RFC 8058: what a mail client sends — no cookie, no CSRF token.
    r = TestClient(site.app).post(
        "/unsubscribe", params={"token": token}, data={"List-Unsubscribe": "One-Click"}
    )
    assert r.status_code == 200 and "You are unsubscribed" in r.text
    fid.forget_state(sid)
    assert not fid.decide(sid, PURPOSE).allowed


def test_tampered_unsubscribe_token(site: Center) -> None:
    fid = site.fid
    sid = fid.sign_up("customer", identities={"email": "tamper@example.com"}, region="DE", consents=[PURPOSE])
    token = make_unsubscribe_token(fid.keyring, sid, PURPOSE)
    tampered = ("B" if token[0] != "B" else "C") + token[1:]
    tc = client(site)
    for bad in (tampered, "", "garbage"):
        assert tc.get("/unsubscribe", params={"token": bad}).status_code == 400
        r = tc.post("/unsubscribe", params={"token": bad}, data={"List-Unsubscribe": "One-Click"})
        assert r.status_code == 400 and "does not work" in r.text
    assert fid.decide(sid, PURPOSE).allowed


def test_gpc_honoured_for_a_californian(site: Center) -> None:
    """LAW-12: in California (gpc: opt_out) a request the policy takes without verification
    (opt-out of sale) goes straight to its status page, and a browser sending Sec-GPC: 1
    also has the signal recorded as the person's opt-out (channel gpc_signal)."""
    fid = site.fid
    emails = ("on@x.org", "off@x.org")
    sids = {e: fid.sign_up("customer", identities={"email": e}, region="US-CA") for e in emails}
    for email, headers in zip(emails, ({"Sec-GPC": "1"}, {}), strict=True):
        tc = TestClient(site.app, headers=headers)
        form = tc.get("/requests/new", params={"region": "US-CA"})
        r = tc.post(
            "/requests/new",
            data={"csrf": csrf_of(form.text), "type": "opt_out_of_sale", "email": email, "region": "US-CA"},
        )
        assert r.status_code == 200 and "Do not sell or share my data" in r.text
        assert re.search(r"/requests/[A-Za-z0-9]+$", str(r.url))
    ce = T.consent_events.c
    with fid.data.connect() as conn:
        gpc_events = {
            sid: conn.execute(
                select(func.count()).where(ce.subject_id == sid, ce.channel == "gpc_signal")
            ).scalar_one()
            for sid in sids.values()
        }
    assert gpc_events == {sids["on@x.org"]: 1, sids["off@x.org"]: 0}


def test_data_point_verification_gets_a_receipt(site: Center) -> None:
    """California access requests are verified by data points (not on this site yet): the
    person gets a receipt, not a status page."""
    tc = client(site)
    form = tc.get("/requests/new", params={"region": "US-CA"})
    r = tc.post(
        "/requests/new",
        data={"csrf": csrf_of(form.text), "type": "access", "email": site.emails[4], "region": "US-CA"},
    )
    assert r.status_code == 200 and "We received your request" in r.text
    rid = re.search(r"Your reference is ([A-Za-z0-9]+)", r.text)
    assert rid
    assert tc.get(f"/requests/{rid.group(1)}").status_code == 403
    assert tc.get(f"/requests/{rid.group(1)}/verify").status_code == 404
