"""The console in a real browser: Debian's headless Chromium, driven by Playwright, with
JavaScript off (LAW-1: deadlines counted down, overdue shown), against a real uvicorn
server over a SQLite Fiduciary on
examples/filelocker (the request runner reaching the example's app database).

The journey: sign in as an operator, find a verified request in the queue, open it,
approve it (fulfilment starts) and watch it finish; then the other pages, and the queue on
a phone-sized screen. Screenshots are saved along the way (FIDUCIARY_SCREENSHOTS names a
folder to keep them; else the test's tmp folder)."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fiduciary.web.auth import create_user
from tests.center_support import Center
from tests.conftest import service_missing
from tests.test_center_browser import ARGS, CHROMIUM, served  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser

PASSWORD = "operator password 1"


def test_sign_in_find_and_approve(served: tuple[str, Center], tmp_path: Path) -> None:  # noqa: F811
    if not os.path.exists(CHROMIUM):
        service_missing(f"Chromium not at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install -e '.[dev]')")
    base, site = served
    shots = Path(os.environ.get("FIDUCIARY_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    create_user(site.fid, "otto", PASSWORD, "operator")
    desk = site.app.state.web.desk
    # Two requests: one overdue (received long ago), one verified and waiting for approval.
    desk.submit(
        "erase",
        contact={"email": site.emails[1]},
        region="DE",
        now=datetime.now(UTC) - timedelta(days=40),
    )
    sub = desk.submit("access", contact={"email": site.emails[0]}, region="DE")
    rid = sub.request_id
    assert desk.verify_code(rid, site.code_for(rid)) == "verified"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(base + "/console/requests")
            page.wait_for_url("**/console/login?next=*")
            # The form starts in its first field; every field has a label.
            assert page.evaluate("document.activeElement.id") == "username"
            page.get_by_label("Username").fill("otto")
            page.get_by_label("Password").fill(PASSWORD)
            page.screenshot(path=shots / "01-sign-in.png", full_page=True)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/console/requests", timeout=20000)
            page.get_by_role("heading", name="Requests").wait_for()
            # The first Tab reaches the skip link, which leads to the main content.
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"
            page.screenshot(path=shots / "02-queue.png", full_page=True)
            assert page.locator("tr.overdue").count() == 1

            page.get_by_role("link", name=rid).click()
            page.wait_for_url(f"{base}/console/requests/{rid}")
            page.screenshot(path=shots / "03-request.png", full_page=True)
            assert page.get_by_label("Start fulfilling it now").is_checked()
            page.get_by_role("button", name="Approve").click()
            page.wait_for_url(re.compile(r".*\?done=approved-started$"), timeout=20000)
            assert "Approved, and fulfilment started." in page.content()
            deadline = time.monotonic() + 90
            while desk.status(rid).status not in ("done", "partial"):
                assert time.monotonic() < deadline, desk.status(rid)
                time.sleep(0.3)
            page.goto(f"{base}/console/requests/{rid}")
            assert "Step log" in page.content()
            page.screenshot(path=shots / "04-approved-done.png", full_page=True)
            assert desk.status(rid).status in ("done", "partial")

            for i, (path, heading) in enumerate(
                (
                    ("/console/subjects", "Subject lookup"),
                    ("/console/data-map", "Data map"),
                    ("/console/audit", "Audit trail"),
                    ("/console/metrics", "Request metrics"),
                    ("/console/outbox", "Mail outbox"),
                ),
                start=5,
            ):
                page.goto(base + path)
                page.get_by_role("heading", name=heading).first.wait_for()
                page.screenshot(path=shots / f"{i:02d}-{path.rsplit('/', 1)[1]}.png", full_page=True)
            assert "Intact" in page.goto(base + "/console/audit").text()  # type: ignore[union-attr]

            # The breach register: one breach near its deadline (red), one recorded through
            # the form with the browser's own date and time field.
            site.fid.breaches.detect(
                "Mail sent to the wrong list",
                "A newsletter went to a list of other customers' addresses.",
                detected_at=datetime.now(UTC) - timedelta(hours=65),
                categories=["user.contact.email"],
            )
            page.goto(base + "/console/breaches/new")
            page.get_by_label("Title", exact=True).fill("Backup bucket readable")
            page.get_by_label("What happened").fill("A database backup could be read without a password.")
            page.get_by_label("Email address user.contact.email", exact=True).check()
            page.get_by_label("Records affected (about)").fill("5000")
            page.get_by_role("button", name="Record the breach").click()
            page.wait_for_url(re.compile(r".*/console/breaches/\w+\?done=recorded$"))
            breach_url = page.url.split("?")[0]
            assert "71 h" in page.locator("p.clock").text_content()  # type: ignore[operator]
            page.screenshot(path=shots / "11-breach.png", full_page=True)
            page.goto(base + "/console/breaches")
            assert page.locator("tr.overdue").count() == 1
            page.screenshot(path=shots / "12-breaches.png", full_page=True)

            # A narrow screen: the page itself never scrolls sideways (tables and the map
            # scroll inside their own regions).
            phone = browser.new_context(
                java_script_enabled=False,
                viewport={"width": 360, "height": 740},
                storage_state=context.storage_state(),
            ).new_page()
            for path in (
                "/console/requests",
                f"/console/requests/{rid}",
                "/console/data-map",
                "/console/metrics",
                "/console/breaches",
                breach_url.removeprefix(base),
            ):
                phone.goto(base + path)
                width = phone.evaluate("document.documentElement.scrollWidth")
                assert width <= 360, (path, width)
            phone.goto(base + "/console/requests")
            phone.screenshot(path=shots / "10-phone-queue.png", full_page=True)
            phone.goto(breach_url)
            phone.screenshot(path=shots / "13-phone-breach.png", full_page=True)
            phone.goto(base + "/console/breaches")
            phone.screenshot(path=shots / "14-phone-breaches.png", full_page=True)

            # Sign out: back to the form, and the queue needs signing in again.
            page.goto(base + "/console/requests")
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url("**/console/login?out=1")
            page.goto(base + "/console/requests")
            page.wait_for_url("**/console/login?next=*")
        finally:
            browser.close()
