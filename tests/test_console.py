"""The console (/console) through FastAPI's TestClient over a real Fiduciary on
examples/filelocker: SQLite files, and the real PostgreSQL for sessions, roles, the lookup
and the metrics.

Sign-in with argon2 passwords, server-side sessions behind a signed cookie (sign-out ends
them), CSRF on every form, the login limits per IP and per username, roles (a viewer
cannot approve), the lookup refused without a purpose and audited with it, the LAW-13 CSV
equal to the API's, the audit chain's status after tampering, the outbox and the data map.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.requests.lifecycle import RequestDesk
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from fiduciary.web.auth import create_api_key, create_user, disable_user, set_password
from fiduciary.web.center.routes import AttemptLimiter
from fiduciary.web.console import session as console_session
from fiduciary.web.console.base import NAV, _business_days_between, safe_next
from fiduciary.web.console.datamap import build
from tests.conftest import Stores

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

FILELOCKER = example_policy("filelocker")
PASSWORD = "a long enough password"
USERS = {"ada": "admin", "otto": "operator", "vera": "viewer"}
PURPOSE = "support"


@dataclass
class Console:
    fid: Fiduciary
    app: Any
    outbox: OutboxMailer
    desk: RequestDesk
    users: set[str] = field(default_factory=set)

    def user(self, username: str) -> str:
        """Made on first use: an argon2id hash costs a quarter second here."""
        if username not in self.users:
            create_user(self.fid, username, PASSWORD, USERS[username])
            self.users.add(username)
        return username

    def client(self, ip: str = "testclient") -> TestClient:
        return TestClient(self.app, client=(ip, 50000), follow_redirects=False)

    def sign_in(self, username: str, ip: str = "testclient") -> tuple[TestClient, str]:
        """A client signed in as ``username``, and its session's CSRF token."""
        tc = self.client(ip)
        r = login(tc, self.user(username), PASSWORD)
        assert r.status_code == 303, r.text
        page = tc.get("/console/requests")
        assert page.status_code == 200
        return tc, csrf_of(page.text)

    def verified_request(self, email: str, type: str = "access", region: str = "DE") -> str:
        sub = self.desk.submit(type, contact={"email": email}, region=region)
        code = code_for(self.outbox, sub.request_id)
        assert self.desk.verify_code(sub.request_id, code) == "verified"
        return sub.request_id

    def audit(self, action: str) -> list[Any]:
        return self.fid.audit.query(action=action, limit=1000)


def code_for(outbox: OutboxMailer, request_id: str) -> str:
    for m in reversed(outbox.outbox_messages()):
        found = re.search(r"verification code: (\d+)", m.subject)
        if found and request_id in m.text:
            return found.group(1)
    raise AssertionError(f"no code mailed for {request_id}")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "form without a CSRF token"
    return found.group(1)


def login(tc: TestClient, username: str, password: str, next: str = "") -> Any:
    form = tc.get("/console/login")
    assert form.status_code == 200
    return tc.post(
        "/console/login",
        data={"csrf": csrf_of(form.text), "username": username, "password": password, "next": next},
    )


def _console(fid: Fiduciary, tmp: Path) -> Iterator[Console]:
    outbox = OutboxMailer(tmp / "outbox")
    app = create_app(fid, settings=Settings(data_dir=tmp / "data"), mailer=outbox)
    with TestClient(app):  # runs the lifespan: the app's writers are closed at the end
        yield Console(fid, app, outbox, app.state.web.desk)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Console]:
    """examples/filelocker on SQLite files."""
    fid = Fiduciary.open(FILELOCKER, data_dir=tmp_path / "data", keyring=Keyring.generate())
    try:
        yield from _console(fid, tmp_path)
    finally:
        fid.close()


@pytest.fixture
def both(stores: Stores, tmp_path: Path) -> Iterator[Console]:
    """examples/filelocker on SQLite and on the real PostgreSQL."""
    fid = Fiduciary.open(
        FILELOCKER,
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )
    try:
        yield from _console(fid, tmp_path)
    finally:
        fid.close()


# ------------------------------------------------------------------------ sign-in, pages
def test_sign_in_pages_and_sign_out(both: Console) -> None:
    tc = both.client()
    # Not signed in: every page sends to the sign-in form, remembering where to return.
    r = tc.get("/console/requests?status=all")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?next=%2Fconsole%2Frequests%3Fstatus%3Dall"
    r = login(tc, both.user("ada"), PASSWORD, next="/console/requests?status=all")
    assert r.status_code == 303 and r.headers["location"] == "/console/requests?status=all"
    cookie = r.headers["set-cookie"]
    assert "fid_console=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/console" in cookie and "Secure" not in cookie  # plain http here
    (row,) = both.audit("console.signed_in")
    assert row.actor == "console:ada" and row.detail == {"role": "admin"}
    # The cookie names a session row by the token's hash, never the token itself.
    token = tc.cookies["fid_console"].split(".")[0]
    with both.fid.data.connect() as conn:
        ids = list(conn.execute(select(T.console_sessions.c.id)).scalars())
    assert token not in ids and len(ids) == 1

    rid = both.verified_request("pages@example.com")
    both.fid.sign_up("customer", identities={"email": "shown@example.com"}, region="DE")
    for item in NAV:
        page = tc.get("/console" + item.path)
        assert page.status_code == 200, (item.path, page.text)
        assert '<html lang="en">' in page.text and 'aria-current="page"' in page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert "<script" not in page.text
    queue = tc.get("/console/requests").text
    assert f'href="/console/requests/{rid}"' in queue
    detail = tc.get(f"/console/requests/{rid}").text
    assert "Events" in detail and "Approve" in detail and "Extend the deadline" in detail
    assert tc.get("/console/console.css").headers["content-type"].startswith("text/css")
    assert tc.get("/console").headers["location"] == "/console/requests"
    # Signed in, the sign-in page sends on; a foreign `next` is never followed.
    assert tc.get("/console/login?next=https://evil.example/").headers["location"] == "/console/requests"
    assert safe_next("//evil.example/console/x") == "/console/requests"

    # Sign out: the session row ends, so even a copy of the old cookie opens nothing.
    stolen = tc.cookies["fid_console"]
    r = tc.post("/console/logout", data={"csrf": csrf_of(queue)})
    assert r.status_code == 303 and r.headers["location"] == "/console/login?out=1"
    other = both.client()
    other.cookies.set("fid_console", stolen, path="/console")
    assert other.get("/console/requests").status_code == 303
    assert both.audit("console.signed_out")[0].actor == "console:ada"
    # A forged or altered cookie is no session either.
    other.cookies.set("fid_console", stolen[:-2] + "xx", path="/console")
    assert other.get("/console/requests").status_code == 303


def test_disabled_user_or_new_password_ends_sessions(site: Console) -> None:
    tc, _ = site.sign_in("otto")
    set_password(site.fid, "otto", "another long password")
    assert tc.get("/console/requests").status_code == 303
    tc, _ = site.sign_in("vera")
    disable_user(site.fid, "vera")
    assert tc.get("/console/requests").status_code == 303
    assert login(site.client(), "vera", PASSWORD).status_code == 401


# ------------------------------------------------------------------------------- roles
def test_viewer_cannot_approve_operator_can(both: Console) -> None:
    rid = both.verified_request("roles@example.com")
    viewer, vcsrf = both.sign_in("vera")
    page = viewer.get(f"/console/requests/{rid}")
    assert page.status_code == 200 and "/approve" not in page.text
    assert "can read requests but not act" in page.text
    r = viewer.post(f"/console/requests/{rid}/approve", data={"csrf": vcsrf})
    assert r.status_code == 403 and "Your role does not allow this" in r.text
    for action, data in (("deny", {"reason": "excessive"}), ("extend", {"reason": "busy"}), ("run", {})):
        assert (
            viewer.post(f"/console/requests/{rid}/{action}", data={"csrf": vcsrf, **data}).status_code == 403
        )
    assert both.desk.status(rid).status == "verified"
    # The outbox holds codes and addresses: not for viewers; nor is it in their navigation.
    assert viewer.get("/console/outbox").status_code == 403
    assert 'href="/console/outbox"' not in page.text

    operator, ocsrf = both.sign_in("otto")
    assert 'href="/console/outbox"' in operator.get("/console/requests").text
    r = operator.post(f"/console/requests/{rid}/approve", data={"csrf": ocsrf})
    assert r.status_code == 303 and r.headers["location"] == f"/console/requests/{rid}?done=approved"
    assert both.desk.status(rid).status == "approved"
    assert "Approved." in operator.get(r.headers["location"]).text
    (entry,) = both.audit("request.approved")
    assert entry.actor == "console:otto"
    # Approving twice is refused with the reason, and changes nothing.
    r = operator.post(f"/console/requests/{rid}/approve", data={"csrf": ocsrf})
    assert r.status_code == 409 and "cannot approve a request that is approved" in r.text
    # Approve and start: this server has no connection to the example's datastore, so the
    # approval stands and the page says why fulfilment did not start.
    other = both.verified_request("roles2@example.com")
    r = operator.post(f"/console/requests/{other}/approve", data={"csrf": ocsrf, "run": "1"})
    assert r.status_code == 409 and "Approved, but fulfilment could not start" in r.text
    assert "no connection for datastore(s) filelocker_db" in r.text
    assert both.desk.status(other).status == "approved"
    # A form posted without a session goes to sign-in, then back to the page it was on.
    r = both.client().post(f"/console/requests/{other}/deny", data={"reason": "excessive"})
    assert r.status_code == 303
    assert r.headers["location"] == f"/console/login?next=%2Fconsole%2Frequests%2F{other}"
    assert both.desk.status(other).status == "approved"


def test_csrf_refused(site: Console) -> None:
    rid = site.verified_request("csrf@example.com")
    operator, csrf = site.sign_in("otto")
    _, viewer_csrf = site.sign_in("vera")
    for token in ("", "forged", viewer_csrf):  # another session's token does not fit this one
        r = operator.post(f"/console/requests/{rid}/approve", data={"csrf": token})
        assert r.status_code == 403 and "This form has expired" in r.text
    assert site.desk.status(rid).status == "verified"
    r = operator.post(
        "/console/subjects", data={"purpose": PURPOSE, "kind": "email", "value": "x@example.com"}
    )
    assert r.status_code == 403 and not site.audit("subject.find")
    r = operator.post("/console/logout", data={"csrf": "forged"})
    assert r.status_code == 403 and operator.get("/console/requests").status_code == 200
    # The sign-in form has its token too (the privacy center's browser token).
    fresh = site.client()
    fresh.get("/console/login")
    r = fresh.post("/console/login", data={"username": "otto", "password": PASSWORD})
    assert r.status_code == 403 and "fid_console" not in fresh.cookies
    assert operator.post(f"/console/requests/{rid}/approve", data={"csrf": csrf}).status_code == 303


def test_login_rate_limits(site: Console) -> None:
    for name in ("otto", "ada"):
        site.user(name)
    per_user, per_ip = console_session.LOGIN_ATTEMPTS_PER_USER, 8
    # The per-IP allowance is lowered for the test: each attempt costs an argon2 check.
    site.app.state.console_login_limits = console_session.LoginLimits(
        AttemptLimiter(per_ip, console_session.LOGIN_WINDOW_SECONDS),
        AttemptLimiter(per_user, console_session.LOGIN_WINDOW_SECONDS),
    )
    attacker = site.client("192.0.2.7")
    for _ in range(per_user):
        assert login(attacker, "otto", "not the password").status_code == 401
    # The username is locked for the window: the right password is refused too, from
    # anywhere, without a password check.
    r = login(site.client("198.51.100.1"), "otto", PASSWORD)
    assert r.status_code == 429 and "Too many sign-in attempts" in r.text
    # Other users are not affected.
    assert login(site.client("198.51.100.1"), "ada", PASSWORD).status_code == 303
    refused = site.audit("console.sign_in_refused")
    assert [e.result for e in refused].count("bad_credentials") == per_user
    assert [e.result for e in refused].count("rate_limited") == 1
    assert all(e.actor == "console" for e in refused)

    # Per IP: many usernames from one address.
    spray = site.client("203.0.113.9")
    allowed = per_ip
    statuses = [login(spray, f"user{i}", "not the password").status_code for i in range(allowed + 1)]
    assert statuses[:allowed] == [401] * allowed and statuses[-1] == 429
    assert login(spray, "ada", PASSWORD).status_code == 429
    # One audit entry per address and window for refusals past the limit, not one each.
    limited = [e for e in site.audit("console.sign_in_refused") if e.result == "rate_limited"]
    assert len(limited) == 2


# ------------------------------------------------------------------------------ lookup
def test_lookup_requires_purpose_and_is_audited(both: Console) -> None:
    sid = both.fid.sign_up(
        "customer",
        identities={"email": "lookup@example.com"},
        attributes={"user.contact.email": "lookup@example.com"},
        region="DE",
        age=30,
    )
    rid = both.verified_request("lookup@example.com")
    tc, csrf = both.sign_in("vera")  # a viewer may look up
    form = tc.get("/console/subjects").text
    assert 'name="purpose"' in form and 'value="support"' in form

    r = tc.post("/console/subjects", data={"csrf": csrf, "kind": "email", "value": "lookup@example.com"})
    assert r.status_code == 422 and "Choose the purpose of this lookup" in r.text
    r = tc.post(
        "/console/subjects",
        data={"csrf": csrf, "kind": "email", "value": "lookup@example.com", "purpose": "made_up"},
    )
    assert r.status_code == 422 and not both.audit("subject.find")

    r = tc.post(
        "/console/subjects",
        data={"csrf": csrf, "kind": "email", "value": " LOOKUP@example.com ", "purpose": PURPOSE},
    )
    assert r.status_code == 200, r.text
    assert f'Subject <span class="ref">{sid}</span>' in r.text
    assert "user.contact.email" in r.text and "lookup@example.com" not in r.text  # no values
    assert "May use now" in r.text and f'href="/console/requests/{rid}"' in r.text
    (entry,) = both.audit("subject.find")
    assert entry.actor == "console:vera" and entry.purpose == PURPOSE and entry.result == "found"
    assert entry.subject == both.fid.audit.pseudonym(sid) and entry.detail == {"kind": "email"}

    r = tc.post(
        "/console/subjects",
        data={"csrf": csrf, "kind": "email", "value": "nobody@example.com", "purpose": PURPOSE},
    )
    assert r.status_code == 404 and "No subject has this identity" in r.text
    assert [e.result for e in both.audit("subject.find")] == ["found", "not_found"]
    r = tc.post(
        "/console/subjects", data={"csrf": csrf, "kind": "email", "value": "not an email", "purpose": PURPOSE}
    )
    assert r.status_code == 422 and len(both.audit("subject.find")) == 2

    # From a link (a request's page): the purpose is asked first; then the view is audited.
    r = tc.get(f"/console/subjects/{sid}")
    assert r.status_code == 200 and "Why are you opening" in r.text and not both.audit("subject.view")
    r = tc.get(f"/console/subjects/{sid}", params={"purpose": PURPOSE})
    assert r.status_code == 200 and "user.contact.email" in r.text
    (view,) = both.audit("subject.view")
    assert view.purpose == PURPOSE and view.actor == "console:vera"


# ---------------------------------------------------------------------------- requests
def test_deny_and_extend(site: Console) -> None:
    rid = site.verified_request("deny@example.com")
    tc, csrf = site.sign_in("otto")
    due = site.desk.status(rid).due_at
    r = tc.post(f"/console/requests/{rid}/extend", data={"csrf": csrf, "reason": "  "})
    assert r.status_code == 422 and "Say why" in r.text
    r = tc.post(f"/console/requests/{rid}/extend", data={"csrf": csrf, "reason": "many systems to search"})
    assert r.status_code == 303
    view = site.desk.status(rid)
    assert view.extended and view.due_at > due + timedelta(days=27)
    page = tc.get(f"/console/requests/{rid}").text
    assert "Extend the deadline" not in page and "(taken)" in page and "many systems to search" in page
    r = tc.post(f"/console/requests/{rid}/extend", data={"csrf": csrf, "reason": "again"})
    assert r.status_code == 409 and "already extended once" in r.text

    r = tc.post(f"/console/requests/{rid}/deny", data={"csrf": csrf})
    assert r.status_code == 422 and "Choose the reason" in r.text
    r = tc.post(f"/console/requests/{rid}/deny", data={"csrf": csrf, "reason": "other"})
    assert r.status_code == 422 and "note: required" in r.text
    r = tc.post(
        f"/console/requests/{rid}/deny",
        data={"csrf": csrf, "reason": "other", "note": "write to ann@example.com"},
    )
    assert r.status_code == 422 and "personal data" in r.text  # the note is kept in clear
    assert site.desk.status(rid).status == "verified"
    r = tc.post(
        f"/console/requests/{rid}/deny",
        data={"csrf": csrf, "reason": "excessive", "note": "third this month"},
    )
    assert r.status_code == 303
    assert site.desk.status(rid).status == "denied"
    assert any("denied" in m.subject.lower() or "excessive" in m.text for m in site.outbox.outbox_messages())
    (entry,) = site.audit("request.denied")
    assert (
        entry.actor == "console:otto" and entry.detail is not None and entry.detail["reason"] == "excessive"
    )
    assert tc.get("/console/requests/nope!").status_code == 404
    assert tc.get("/console/requests/unknown123").status_code == 404


def test_queue_countdown_filters_and_overdue(site: Console) -> None:
    now = datetime.now(UTC)
    late = site.desk.submit(
        "access", contact={"email": "late@example.com"}, region="DE", now=now - timedelta(days=40)
    )
    fresh = site.verified_request("fresh@example.com")
    # California's opt-out of sale: 15 business days, taken without verification.
    optout = site.desk.submit("opt_out_of_sale", contact={"email": "ca@example.com"}, region="US-CA")
    tc, _ = site.sign_in("vera")
    page = tc.get("/console/requests").text
    row = r'<tr class="([a-z]*)">\s*<td data-label="Reference"><a class="ref" href="/console/requests/(\w+)"'
    rows = re.findall(row, page)
    assert next(rid for _, rid in rows) == late.request_id  # soonest due first
    assert {rid: cls for cls, rid in rows}[late.request_id] == "overdue"
    assert re.search(r"overdue by \d+ days", page) and "1 overdue" in page
    assert "business days left" in page  # the CCPA deadline counts business days
    assert f"/console/requests/{optout.request_id}" in page and f"/console/requests/{fresh}" in page

    only = tc.get("/console/requests", params={"overdue": "1"}).text
    assert late.request_id in only and fresh not in only
    typed = tc.get("/console/requests", params={"type": "opt_out_of_sale"}).text
    assert optout.request_id in typed and fresh not in typed
    by_status = tc.get("/console/requests", params={"status": "received"}).text
    assert late.request_id in by_status and fresh not in by_status
    bad = tc.get("/console/requests", params={"status": "nonsense", "type": "dance"}).text
    assert "Unknown status" in bad and "Unknown request type" in bad and fresh in bad


def test_business_days() -> None:
    fri, mon = date(2026, 1, 2), date(2026, 1, 5)
    assert _business_days_between(fri, mon) == 1
    assert _business_days_between(mon, fri) == -1
    assert _business_days_between(mon, mon) == 0
    assert _business_days_between(mon, date(2026, 1, 26)) == 15
    for n in range(40):
        d = fri + timedelta(days=n)
        assert _business_days_between(fri, d) == sum(
            1 for i in range(1, n + 1) if (fri + timedelta(days=i)).weekday() < 5
        )


# ----------------------------------------------------------------------------- metrics
def test_metrics_page_and_csv_equal_the_api(both: Console) -> None:
    a = both.verified_request("m1@example.com")
    both.verified_request("m2@example.com", type="erase")
    both.desk.deny(a, "excessive", "test")
    tc, _ = both.sign_in("vera")
    year = datetime.now(UTC).year
    page = tc.get("/console/metrics").text
    assert f"Request metrics, {year}" in page and page.count('<svg class="chart"') == 2
    assert "Download the LAW-13 report (CSV)" in page
    r = tc.get(f"/console/metrics/requests-{year}.csv")
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="requests-{year}.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    by_type = {row["type"]: row for row in rows}
    assert by_type["access"]["received"] == "1" and by_type["access"]["denied"] == "1"
    assert by_type["erase"]["open"] == "1" and by_type["erase"]["median_days"] == ""
    assert rows[0]["year"] == str(year) and rows[0]["jurisdiction"] == "all"
    _, key = create_api_key(both.fid, "metrics", ["metrics:read"])
    api = both.client().get(
        "/api/v1/metrics/requests.csv", params={"year": year}, headers={"Authorization": f"Bearer {key}"}
    )
    assert api.status_code == 200 and api.text == r.text
    (entry,) = both.audit("metrics.exported")
    assert entry.actor == "console:vera" and entry.detail == {"year": year, "jurisdiction": "all"}
    eu = tc.get(f"/console/metrics/requests-{year}.csv", params={"jurisdiction": "eu"})
    assert eu.status_code == 200 and ",eu," in eu.text
    assert tc.get("/console/metrics/requests-20x6.csv").status_code == 422


# ------------------------------------------------------------------------------- audit
def test_audit_search_and_chain_status(site: Console) -> None:
    rid = site.verified_request("audit@example.com")
    tc, csrf = site.sign_in("otto")
    assert tc.post(f"/console/requests/{rid}/approve", data={"csrf": csrf}).status_code == 303
    page = tc.get("/console/audit").text
    assert "Intact" in page
    found = tc.get("/console/audit", params={"actor": "console:otto", "action": "request.approved"}).text
    assert "1 entry" in found and rid in found
    assert "0 entries" in tc.get("/console/audit", params={"actor": "console:nobody"}).text
    today = datetime.now(UTC).date()
    ranged = tc.get("/console/audit", params={"since": today.isoformat(), "until": today.isoformat()}).text
    assert "request.approved" in ranged
    bad = tc.get("/console/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and "is not a date" in bad.text

    # Someone edits an entry in the database: the page names where the chain breaks.
    seq = site.audit("request.approved")[0].seq
    with site.fid.data.begin() as conn:
        conn.execute(update(T.audit_log).where(T.audit_log.c.seq == seq).values(actor="console:ada"))
    broken = tc.get("/console/audit", params={"verify": "1"}).text
    assert f"Broken at entry {seq}" in broken and "edited" in broken


# ---------------------------------------------------------------------- outbox, data map
def test_outbox_shows_codes(site: Console) -> None:
    sub = site.desk.submit("access", contact={"email": "outbox@example.com"}, region="DE")
    code = code_for(site.outbox, sub.request_id)
    tc, _ = site.sign_in("otto")
    page = tc.get("/console/outbox").text
    assert f'<strong class="code">{code}</strong>' in page and "outbox@example.com" in page
    name = re.search(r'href="/console/outbox/([^"]+\.eml)"', page)
    assert name
    message = tc.get(f"/console/outbox/{name.group(1)}").text
    assert f'Verification code: <strong class="code">{code}</strong>' in message
    assert f"/console/requests/{sub.request_id}" in message and "Message-ID" in message
    (entry,) = site.audit("console.outbox_read")
    assert entry.actor == "console:otto"
    for bad in ("..%2Fdata%2Ffiduciary.db", "nothing.eml", "20260101T000000000000Z-x.eml"):
        assert tc.get(f"/console/outbox/{bad}").status_code == 404


def test_data_map(site: Console) -> None:
    cp = site.fid.policy
    m = build(cp)
    datastores = {c.datastore for c in cp.collections.values()}
    assert {n.label for n in m.columns[0]} == datastores
    assert len(m.columns[1]) == len(cp.purposes) and len(m.columns[2]) == len(cp.recipients)
    for _, b in m.edges:
        assert b[0] in "pr"
    tc, _ = site.sign_in("vera")
    page = tc.get("/console/data-map").text
    assert page.count('<g class="node datastore') == len(datastores)
    assert page.count('<g class="node recipient') == len(cp.recipients)
    assert page.count("<path d=") == len(m.edges)
    flagged = [r for r in cp.recipients.values() if r.outside_eea]
    assert page.count("node recipient flag") == len(flagged)
    for r in cp.recipients.values():
        assert r.source.name[:20] in page


def test_sessions_are_swept(site: Console) -> None:
    for _ in range(3):
        tc, csrf = site.sign_in("ada")
        tc.post("/console/logout", data={"csrf": csrf})
    # Each sign-in removes ended and expired rows: only the newest ended one is left.
    with site.fid.data.connect() as conn:
        count = conn.execute(select(func.count()).select_from(T.console_sessions)).scalar_one()
    assert count == 1
