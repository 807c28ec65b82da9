"""Preferences and the consent banner in a real browser: Debian's headless Chromium driven by
Playwright, a real uvicorn server on loopback (127.0.0.1), and a shop site on another origin
(localhost, a plain HTTP server) that embeds the banner.

- the preferences journey without JavaScript: sign in with the mailed code, change choices,
  unlink a service; each change is in the ledger and the decisions follow;
- the banner keeps a tagged analytics script, an ad script and a social iframe inert until
  their category is allowed (PLA-6: the shop's server sees no request for them), runs them
  after "Accept all", remembers the choice, and withdrawing reloads without them;
- with Global Privacy Control (the Sec-GPC header and navigator.globalPrivacyControl) the
  sale/share category is off without asking, its tags never load, and the proof records it.

Screenshots go to FIDUCIARY_SCREENSHOTS (a folder) when set, else the test's tmp folder."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.decide import Reason
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from tests.conftest import service_missing
from tests.serving_support import free_port
from tests.test_center_browser import ARGS, CHROMIUM

pytestmark = pytest.mark.browser

GPC_SCRIPT = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"


@dataclass
class Shop:
    """The company's own site: a few pages, and every path the browser asked for."""

    pages: dict[str, tuple[str, str]]
    requested: list[str] = field(default_factory=list)
    url: str = ""

    def asked(self, path: str) -> bool:
        return any(p.split("?")[0] == path for p in self.requested)


@contextmanager
def shop_server(shop: Shop) -> Iterator[Shop]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API's name
            shop.requested.append(self.path)
            found = shop.pages.get(self.path.split("?")[0])
            if found is None:
                self.send_error(404)
                return
            ctype, body = found
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    shop.url = f"http://localhost:{port}"
    try:
        yield shop
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Served:
    base: str
    fid: Fiduciary
    outbox: OutboxMailer


@contextmanager
def fiduciary_server(tmp: Path, example: str, origins: list[str]) -> Iterator[Served]:
    fid = Fiduciary.open(example_policy(example), data_dir=tmp / "data", keyring=Keyring.generate())
    outbox = OutboxMailer(tmp / "outbox")
    app = create_app(fid, settings=Settings(data_dir=tmp / "data", banner_origins=origins), mailer=outbox)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", fid, outbox)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        fid.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        service_missing(f"Chromium not at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FIDUCIARY_SCREENSHOTS", tmp_path / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_preferences_through_the_pages(browser: Any, tmp_path: Path, shots: Path) -> None:
    with fiduciary_server(tmp_path, "social", []) as site:
        fid = site.fid
        ann = fid.sign_up("member", identities={"email": "ann@example.com"}, region="DE", age=30)
        fid.set_setting(ann, "linked:linked_services", "true")
        fid.give_consent(ann, "linked_services")
        # Forms and links only: the pages must work without JavaScript.
        page = browser.new_context(java_script_enabled=False).new_page()
        page.goto(site.base + "/")
        page.get_by_role("link", name="Your preferences").first.click()
        page.get_by_label("Your email address").fill("ann@example.com")
        page.screenshot(path=shots / "pref-01-sign-in.png", full_page=True)
        page.get_by_role("button", name="Email me a code").click()
        page.wait_for_url("**/preferences/code")
        code = next(
            m.subject.rsplit(" ", 1)[1] for m in site.outbox.outbox_messages() if "sign-in code" in m.subject
        )
        page.get_by_label("Sign-in code").fill(code)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Your preferences").wait_for(timeout=10000)
        page.screenshot(path=shots / "pref-02-signed-in.png", full_page=True)

        page.get_by_label("Promotional messages").uncheck()
        page.get_by_role("button", name="Save my marketing choices").click()
        page.get_by_text("Your choices are saved (1 change)").wait_for(timeout=10000)
        page.get_by_role("group", name="Name", exact=True).get_by_label("Only me").check()
        page.get_by_role("button", name="Save who can see my information").click()
        page.get_by_text("Your choices are saved (1 change)").wait_for(timeout=10000)
        page.get_by_role("button", name="Unlink Services you link to your account").click()
        page.get_by_text("Your choices are saved (2 changes)").wait_for(timeout=10000)
        page.screenshot(path=shots / "pref-03-saved.png", full_page=True)

        changed = [(e.kind.value, e.scope, e.value, e.channel) for e in fid.consent.events(ann)[2:]]
        assert changed == [
            ("consent_withdrawn", "promotional_messages", None, "privacy_center"),
            ("setting", "visibility:user.name", "self", "privacy_center"),
            ("setting", "linked:linked_services", "false", "privacy_center"),
            ("consent_withdrawn", "linked_services", None, "privacy_center"),
        ]
        fid.forget_state(ann)
        assert fid.decide(ann, "promotional_messages").reason == Reason.withdrawn
        name = fid.decide(ann, "provide_service", ["user.name"], audience="members")
        assert dict(name.refused) == {"user.name": Reason.visibility}
        assert fid.decide(ann, "linked_services", recipient="linked_services").reason == Reason.withdrawn

        # Narrow screens: usable without horizontal scrolling.
        phone = browser.new_context(viewport={"width": 360, "height": 740}, java_script_enabled=False)
        phone.add_cookies(page.context.cookies())
        p2 = phone.new_page()
        p2.goto(site.base + "/preferences")
        assert "Sign out" in p2.content()
        width = p2.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, width
        p2.screenshot(path=shots / "pref-04-phone.png", full_page=True)


def _shop(fiduciary_base: str) -> Shop:
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Planio shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script src="{fiduciary_base}/banner.js" defer></script>
</head><body style="font-family: sans-serif; margin: 2rem">
<h1>Project management, made easy</h1>
<p>Our site's own content runs at once.</p>
<script>window.ownRan = true;</script>
<script type="text/plain" data-fiduciary-category="analytics" src="/analytics.js"></script>
<script type="text/plain" data-fiduciary-category="advertising" data-fiduciary-cookie="__adroll">
  window.adsRan = true;
</script>
<iframe title="Like us" data-fiduciary-category="advertising" data-fiduciary-cookie="Facebook Like button"
        data-src="/like.html" width="300" height="60"></iframe>
<p><a href="#" data-fiduciary-open>Cookie settings</a></p>
</body></html>"""
    return Shop(
        {
            "/": ("text/html; charset=utf-8", page),
            "/analytics.js": (
                "text/javascript",
                "window.analyticsRan = (window.analyticsRan || 0) + 1;"
                " document.cookie = '_ga=GA1.1; path=/';",
            ),
            "/like.html": ("text/html; charset=utf-8", "<!doctype html><p>Like</p>"),
        }
    )


def _visitors(fid: Fiduciary) -> list[str]:
    with fid.data.connect() as conn:
        return list(conn.execute(select(T.subjects.c.id).where(T.subjects.c.kind == "visitor")).scalars())


def test_banner_blocks_until_consent(browser: Any, tmp_path: Path, shots: Path) -> None:
    shop = _shop("")  # its pages need the server's address, known once it runs
    with shop_server(shop) as shop, fiduciary_server(tmp_path, "projects", [shop.url]) as site:
        shop.pages = _shop(site.base).pages
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(shop.url + "/")
        banner = page.get_by_role("region", name="Cookies on Planio")
        banner.wait_for(timeout=10000)
        assert page.evaluate("window.ownRan") is True
        # Nothing of the blocked categories has run or even connected (PLA-6).
        assert page.evaluate("window.analyticsRan") is None and page.evaluate("window.adsRan") is None
        assert not shop.asked("/analytics.js") and not shop.asked("/like.html")
        assert page.get_by_text("“Like us” is blocked until you allow advertising cookies").is_visible()
        page.screenshot(path=shots / "banner-01-first-visit.png", full_page=True)

        banner.get_by_role("button", name="Choose").click()
        page.screenshot(path=shots / "banner-02-choose.png", full_page=True)
        banner.get_by_role("button", name="Accept all").click()
        page.wait_for_function("window.analyticsRan === 1 && window.adsRan === true", timeout=10000)
        page.wait_for_function(
            "document.querySelector('iframe[title=\"Like us\"]').src.endsWith('/like.html')"
        )
        assert shop.asked("/analytics.js")
        assert not banner.is_visible()
        page.screenshot(path=shots / "banner-03-accepted.png", full_page=True)

        # The choice is proof in the ledger: a visitor subject, one event per category.
        deadline = time.monotonic() + 10
        while not _visitors(site.fid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (visitor,) = _visitors(site.fid)
        events = site.fid.consent.events(visitor)
        assert {(e.scope, e.value, e.method) for e in events} == {
            ("cookies:functional", "granted", "cookie_banner"),
            ("cookies:analytics", "granted", "cookie_banner"),
            ("cookies:advertising", "granted", "cookie_banner"),
        }
        assert context.cookies(shop.url)  # fid_consent and fid_visitor, first-party
        names = {c["name"] for c in context.cookies(shop.url)}
        assert {"fid_consent", "fid_visitor", "_ga"} <= names

        # Next page: no banner, the stored choice applies at once.
        page.reload()
        page.wait_for_function("window.analyticsRan === 1", timeout=10000)
        assert not banner.is_visible()

        # Withdrawing is as easy: the site's own link reopens the banner (LAW-8).
        page.get_by_role("link", name="Cookie settings").click()
        banner.wait_for(timeout=5000)
        banner.get_by_role("button", name="Reject all").click()
        page.wait_for_load_state("load")
        page.wait_for_function("window.ownRan === true && document.readyState === 'complete'", timeout=10000)
        time.sleep(0.5)
        assert page.evaluate("window.analyticsRan") is None and page.evaluate("window.adsRan") is None
        assert "_ga" not in {c["name"] for c in context.cookies(shop.url)}
        deadline = time.monotonic() + 10
        while len(site.fid.consent.events(visitor)) < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [e.value for e in site.fid.consent.events(visitor)[3:]] == ["denied"] * 3
        assert _visitors(site.fid) == [visitor]  # the same visitor, by its token
        assert errors == []


def test_banner_with_gpc_keeps_sale_and_sharing_off(browser: Any, tmp_path: Path, shots: Path) -> None:
    shop = _shop("")
    with shop_server(shop) as shop, fiduciary_server(tmp_path, "projects", [shop.url]) as site:
        shop.pages = _shop(site.base).pages
        context = browser.new_context(extra_http_headers={"Sec-GPC": "1"})
        context.add_init_script(GPC_SCRIPT)
        page = context.new_page()
        page.goto(shop.url + "/")
        banner = page.get_by_role("region", name="Cookies on Planio")
        banner.wait_for(timeout=10000)
        assert banner.get_by_text("Global Privacy Control").first.is_visible()
        banner.get_by_role("button", name="Choose").click()
        advertising = banner.get_by_role("checkbox", name="Advertising")
        assert advertising.is_disabled() and not advertising.is_checked()
        # Social buttons under GPC: blocked, and no button offers to load them.
        assert page.get_by_text("“Like us” stays blocked").is_visible()
        assert page.get_by_role("button", name="Allow advertising cookies").count() == 0
        page.screenshot(path=shots / "banner-04-gpc.png", full_page=True)

        banner.get_by_role("button", name="Accept all").click()
        page.wait_for_function("window.analyticsRan === 1", timeout=10000)
        time.sleep(0.3)
        assert page.evaluate("window.adsRan") is None
        assert not shop.asked("/like.html")
        page.screenshot(path=shots / "banner-05-gpc-accepted.png", full_page=True)

        deadline = time.monotonic() + 10
        while not _visitors(site.fid) and time.monotonic() < deadline:
            time.sleep(0.1)
        (visitor,) = _visitors(site.fid)
        deadline = time.monotonic() + 10
        while len(site.fid.consent.events(visitor)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        seen = {(e.kind.value, e.scope, e.value, e.channel) for e in site.fid.consent.events(visitor)}
        assert ("setting", "cookies:advertising", "denied", "web_form") in seen
        assert ("setting", "cookies:analytics", "granted", "web_form") in seen
        assert ("sale_opt_out", "sale", None, "gpc_signal") in seen

        # Phone width: the banner fits without horizontal scrolling.
        phone = browser.new_context(
            viewport={"width": 360, "height": 740}, extra_http_headers={"Sec-GPC": "1"}
        )
        phone.add_init_script(GPC_SCRIPT)
        p2 = phone.new_page()
        p2.goto(shop.url + "/")
        p2.get_by_role("region", name="Cookies on Planio").wait_for(timeout=10000)
        assert p2.evaluate("document.documentElement.scrollWidth") <= 360
        p2.screenshot(path=shots / "banner-06-phone.png")
