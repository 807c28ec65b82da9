"""The privacy center in a real browser: Debian's headless Chromium, driven by Playwright,
against a real uvicorn server on loopback over a SQLite Fiduciary on examples/filelocker.

The journey: submit an access request (no JavaScript needed: plain forms), read the code
from the outbox folder, verify, wait for the package, download the ZIP; then unsubscribe
through a signed link. Screenshots are saved along the way (FIDUCIARY_SCREENSHOTS names a
folder to keep them; else the test's tmp folder)."""

from __future__ import annotations

import io
import os
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from fiduciary.consent.tokens import make_unsubscribe_token
from tests.center_support import PURPOSE, Center, center
from tests.conftest import service_missing
from tests.serving_support import free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Center]]:
    with center(tmp_path) as c:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(c.app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}", c
        finally:
            server.should_exit = True
            thread.join(timeout=20)


def test_request_journey_and_unsubscribe(served: tuple[str, Center], tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        service_missing(f"Chromium not at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install -e '.[dev]')")
    base, site = served
    shots = Path(os.environ.get("FIDUCIARY_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    org = site.fid.policy.policy.organization.name

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            # No JavaScript at all: the center must work with forms and links alone.
            context = browser.new_context(java_script_enabled=False, accept_downloads=True)
            page = context.new_page()
            page.goto(base + "/")
            assert org in page.title()
            # The first Tab reaches the skip link, which leads to the main content.
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"
            page.keyboard.press("Enter")
            # Fragment navigation lands asynchronously; wait for it rather than race it.
            page.wait_for_url("**#main", timeout=5000)
            page.screenshot(path=shots / "01-home.png", full_page=True)

            page.get_by_role("link", name="Make a request").first.click()
            page.get_by_label("Where do you live?").select_option("DE")
            page.get_by_role("button", name="Show my rights").click()
            page.get_by_label("Get a copy of my data").check()
            page.get_by_label("Your email address").fill(site.emails[0])
            page.screenshot(path=shots / "02-request-form.png", full_page=True)
            page.get_by_role("button", name="Send my request").click()
            page.wait_for_url(re.compile(r"/requests/[A-Za-z0-9]+/verify"), timeout=10000)
            found = re.search(r"/requests/([A-Za-z0-9]+)/verify", page.url)
            assert found, page.url
            rid = found.group(1)
            assert "emailed you a code" in page.content()
            page.get_by_label("Verification code").fill(site.code_for(rid))
            page.screenshot(path=shots / "03-verify.png", full_page=True)
            page.get_by_role("button", name="Confirm").click()
            page.wait_for_url(f"{base}/requests/{rid}", timeout=10000)

            deadline = time.monotonic() + 90
            while "Download your data" not in page.content():
                assert time.monotonic() < deadline, page.content()
                time.sleep(0.3)
                page.reload()
            page.screenshot(path=shots / "04-status-done.png", full_page=True)
            with page.expect_download() as info:
                page.get_by_role("link", name="Download your data (ZIP)").click()
            saved = tmp_path / "package.zip"
            info.value.save_as(saved)
            names = set(zipfile.ZipFile(io.BytesIO(saved.read_bytes())).namelist())
            assert {"data.json", "report.html"} <= names

            # Another browser (no session) cannot see the request.
            stranger = browser.new_context(java_script_enabled=False).new_page()
            response = stranger.goto(f"{base}/requests/{rid}")
            assert response is not None and response.status == 403

            # One-click unsubscribe from a mail's link.
            sid = site.fid.sign_up(
                "customer", identities={"email": "browser@example.com"}, region="DE", consents=[PURPOSE]
            )
            assert site.fid.decide(sid, PURPOSE).allowed
            token = make_unsubscribe_token(site.fid.keyring, sid, PURPOSE)
            page.goto(f"{base}/unsubscribe?token={token}")
            page.screenshot(path=shots / "05-unsubscribe.png", full_page=True)
            page.get_by_role("button", name="Unsubscribe").click()
            page.get_by_role("heading", name="You are unsubscribed").wait_for(timeout=10000)
            page.screenshot(path=shots / "06-unsubscribed.png", full_page=True)
            site.fid.forget_state(sid)
            assert not site.fid.decide(sid, PURPOSE).allowed

            # Narrow screens: the same page stays usable (no horizontal scrolling).
            phone = browser.new_context(viewport={"width": 360, "height": 740}).new_page()
            phone.goto(base + "/requests/new?region=US-CA")
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, width
            phone.screenshot(path=shots / "07-phone.png", full_page=True)
        finally:
            browser.close()
