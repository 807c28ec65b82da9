"""The whole journey on the real demo server, in a real browser (issue 5): `fiduciary demo`
started as a person starts it (a subprocess on a free port), Debian's headless Chromium
driven by Playwright, JavaScript off (every page works with forms and links alone).
Promises shown on the way: LAW-2 (the package), LAW-8 (choices with proof), LAW-14
(one-click unsubscribe), PLO-13 (a child report approved by the team).

A person whose email is in the generated data makes an access request on the privacy
center, reads the code from the newest mail in the outbox, enters it and follows the
status page. In a second browser the privacy team signs in to the console with the demo's
credentials, finds that request in the queue, and approves the request that waits for
their approval. The person downloads the package (a ZIP with the report, their email and
no one else's), signs in to their preferences with a mailed code, changes a marketing
choice and a cookie category (the ledger holds the events), and unsubscribes through a
signed link (the consent state changes).

Every step is a screenshot in the test's tmp folder, copied to /tmp/journey-shots
(FIDUCIARY_JOURNEY_SHOTS names another folder)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from fiduciary.consent.ledger import ConsentEvent
from fiduciary.consent.tokens import make_unsubscribe_token
from fiduciary.core import Fiduciary
from fiduciary.demo import APP_DB, Demo, load_demo
from fiduciary.examples import load_example_app
from fiduciary.mail import OutboxMessage, read_eml
from tests.conftest import service_missing
from tests.serving_support import free_port, serving
from tests.test_center_browser import ARGS, CHROMIUM

pytestmark = pytest.mark.browser

PEOPLE = 40  # enough for the demo's requests (user11 .. user18) and a mix of regions
KEEP = Path(os.environ.get("FIDUCIARY_JOURNEY_SHOTS", "/tmp/journey-shots"))
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@dataclass
class Served:
    base: str
    demo: Demo
    log: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """`fiduciary demo --dir ... --port ...` in a subprocess, until SIGINT (Ctrl+C)."""
    port = free_port()
    d = tmp_path / "fiduciary-demo"
    log_path = tmp_path / "demo.log"
    command = ["demo", "--dir", str(d), "--port", str(port), "--subjects", str(PEOPLE)]
    with serving(command, port, cwd=tmp_path, log=log_path) as base:
        demo = load_demo(d)
        assert demo is not None, "the demo served without demo.json"
        yield Served(base, demo, log_path)


def newest_mail(demo: Demo, to: str, pattern: str, after: set[Path]) -> tuple[OutboxMessage, str]:
    """The newest mail to ``to`` not in ``after`` whose subject matches ``pattern`` (its
    group 1 returned), as the person finds it in their inbox; waits for it."""
    deadline = time.monotonic() + 30
    while True:
        for path in sorted(demo.outbox.glob("*.eml"), reverse=True):  # names sort by time
            if path in after:
                continue
            m = read_eml(path)
            found = re.search(pattern, m.subject)
            if found and m.to.lower() == to.lower():
                return m, found.group(1)
        assert time.monotonic() < deadline, f"no mail to {to} matching {pattern!r}"
        time.sleep(0.1)


def pick_person(fid: Fiduciary, demo: Demo) -> tuple[str, str, set[str]]:
    """A person of the generated data no demo request is about, living in the EU and
    receiving the newsletter: (email, subject id, every other app user's email)."""
    app = load_example_app("filelocker")
    engine = create_engine(f"sqlite:///{demo.directory / APP_DB}")
    try:
        with engine.connect() as conn:
            users = conn.execute(select(app.users.c.id, app.users.c.email).order_by(app.users.c.id)).all()
    finally:
        engine.dispose()
    for uid, email in users:
        if 11 <= uid <= 18:  # the demo's own requesters
            continue
        sid = fid.find("email", email)
        assert sid is not None, email
        state = fid.state(sid)
        if state.jurisdiction != "eu":
            continue
        # In the EU statistics need a consent (opt-in): who accepted the statistics cookies
        # has them on in the center's cookie section too.
        statistics = bool(fid.decide(sid, "site_statistics").allowed)
        assert (state.settings.get("cookies:analytics") == "granted") == statistics, email
        if statistics:
            continue
        if fid.decide(sid, "newsletter").allowed and not fid.decide(sid, "partner_offers").allowed:
            return email, sid, {str(e) for _, e in users if e != email}
    raise AssertionError("no EU person with the newsletter, without partner offers and statistics")


def scopes(events: list[ConsentEvent]) -> list[tuple[str, str, str | None, str]]:
    return [(e.kind.value, e.scope, e.value, e.channel) for e in events]


def test_public_and_privacy_team_journey(served: Served, tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        service_missing(f"Chromium not at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import Page, sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install -e '.[dev]')")
    base, demo = served.base, served.demo
    shots = tmp_path / "journey-shots"
    shots.mkdir()
    cred = json.loads((demo.directory / "credentials.json").read_text())["console"]
    with Fiduciary.open(demo.policy, settings=demo.settings()) as fid:
        email, sid, others = pick_person(fid, demo)
        before = len(fid.consent.events(sid))
    n = 0

    def shot(page: Page, name: str) -> None:
        nonlocal n
        n += 1
        page.screenshot(path=shots / f"{n:02d}-{name}.png", full_page=True)

    seen = set(demo.outbox.glob("*.eml"))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                person = browser.new_context(
                    java_script_enabled=False, accept_downloads=True, viewport={"width": 1024, "height": 800}
                ).new_page()
                team = browser.new_context(
                    java_script_enabled=False, viewport={"width": 1280, "height": 900}
                ).new_page()

                # -- the person: an access request, verified with the mailed code
                person.goto(base + "/")
                assert "put.io" in person.title()
                shot(person, "center-home")
                person.get_by_role("link", name="Make a request").first.click()
                person.get_by_label("Where do you live?").select_option("NL")
                person.get_by_role("button", name="Show my rights").click()
                person.get_by_label("Get a copy of my data").check()
                person.get_by_label("Your email address").fill(email)
                shot(person, "request-form")
                person.get_by_role("button", name="Send my request").click()
                person.wait_for_url(re.compile(r"/requests/[A-Za-z0-9]+/verify"), timeout=10000)
                found = re.search(r"/requests/([A-Za-z0-9]+)/verify", person.url)
                assert found, person.url
                rid = found.group(1)
                mail, code = newest_mail(demo, email, r"verification code: (\d{6,})", seen)
                seen.add(mail.path)
                assert f"Request reference: {rid}" in mail.text
                person.get_by_label("Verification code").fill(code)
                shot(person, "verify")
                person.get_by_role("button", name="Confirm").click()
                person.wait_for_url(f"{base}/requests/{rid}", timeout=10000)
                assert "Get a copy of my data" in person.content()
                shot(person, "status")

                # -- the privacy team: sign in, find the request, approve the one waiting
                team.goto(base + "/console")
                team.wait_for_url("**/console/login**")
                team.get_by_label("Username").fill(cred["username"])
                team.get_by_label("Password").fill(cred["password"])
                shot(team, "console-sign-in")
                team.get_by_role("button", name="Sign in").click()
                team.get_by_role("heading", name="Requests").wait_for(timeout=10000)
                team.get_by_label("Status").select_option("all")
                team.get_by_role("button", name="Show").click()
                team.get_by_role("link", name=rid).wait_for(timeout=10000)
                shot(team, "console-queue")
                team.get_by_role("link", name=rid).click()
                team.wait_for_url(f"{base}/console/requests/{rid}")
                # Matched to the person's subject in the vault, by the email they typed.
                assert team.get_by_role("link", name=sid).count() == 1
                shot(team, "console-person-request")

                child = demo.requests["child_report"]
                team.goto(base + "/console/requests?status=verified")
                row = team.locator("tr", has=team.get_by_role("link", name=child))
                assert "child report" in (row.text_content() or "")
                row.get_by_role("link", name=child).click()
                team.wait_for_url(f"{base}/console/requests/{child}")
                assert team.get_by_label("Start fulfilling it now").is_checked()
                shot(team, "console-child-report")
                team.get_by_role("button", name="Approve").click()
                team.wait_for_url(re.compile(r".*\?done=approved-started$"), timeout=20000)
                assert "Approved, and fulfilment started." in team.content()
                shot(team, "console-approved")

                # -- the person: told by mail that it is done, the link leads to the package
                mail, _ = newest_mail(demo, email, r"(is done)$", seen)
                seen.add(mail.path)
                link = re.search(r"See the result here: (\S+)", mail.text)
                assert link and link.group(1) == f"{base}/requests/{rid}", mail.text
                person.goto(link.group(1))
                assert "Download your data" in person.content() and "Answered" in person.content()
                shot(person, "status-done")
                with person.expect_download() as info:
                    person.get_by_role("link", name="Download your data (ZIP)").click()
                saved = tmp_path / "package.zip"
                info.value.save_as(saved)
                with zipfile.ZipFile(saved) as z:
                    names = z.namelist()
                    text = "\n".join(z.read(name).decode("utf-8", "replace") for name in names)
                assert {"data.json", "report.html"} <= set(names), names
                assert email in text
                leaked = {e for e in EMAIL.findall(text) if e.lower() in others}
                assert not leaked, f"the package holds other people's addresses: {sorted(leaked)}"
                for stranger in ("parent@example.org", "someone@example.net"):
                    assert stranger not in text
                # The report itself, as the person opens it from the ZIP.
                report = person.context.new_page()
                with zipfile.ZipFile(saved) as z:
                    (tmp_path / "report.html").write_bytes(z.read("report.html"))
                report.goto((tmp_path / "report.html").as_uri())
                assert email in report.content()
                n += 1  # the report is long: its first screen shows what it is
                report.screenshot(path=shots / f"{n:02d}-package-report.png")
                report.close()

                # The team's view of the same request: done, with its step log.
                team.goto(f"{base}/console/requests/{rid}")
                assert "Step log" in team.content() and "Done" in team.content()

                # -- the person: preferences, signed in with a mailed code
                person.goto(base + "/preferences")
                person.get_by_label("Your email address").fill(email)
                shot(person, "preferences-sign-in")
                person.get_by_role("button", name="Email me a code").click()
                person.wait_for_url("**/preferences/code")
                mail, code = newest_mail(demo, email, r"sign-in code: (\d+)", seen)
                seen.add(mail.path)
                person.get_by_label("Sign-in code").fill(code)
                shot(person, "preferences-code")
                person.get_by_role("button", name="Sign in").click()
                person.get_by_role("button", name="Sign out").wait_for(timeout=10000)
                shot(person, "preferences")

                partner = person.locator('input[name="purpose:partner_offers"]')
                newsletter = person.locator('input[name="purpose:newsletter"]')
                analytics = person.locator('input[name="cookies:analytics"]')
                assert newsletter.is_checked() and not partner.is_checked() and not analytics.is_checked()
                partner.check()
                partner.locator("xpath=ancestor::form").get_by_role("button").click()
                person.wait_for_url("**/preferences?saved=marketing**")
                assert "Your choices are saved (1 change)" in person.content()
                assert partner.is_checked() and newsletter.is_checked()
                analytics.check()
                analytics.locator("xpath=ancestor::form").get_by_role("button").click()
                person.wait_for_url("**/preferences?saved=cookies**")
                assert "Your choices are saved (1 change)" in person.content()
                assert analytics.is_checked() and partner.is_checked()
                shot(person, "preferences-saved")

                # -- the person: unsubscribe from the newsletter through a signed link
                # No mail of the demo is marketing, so none carries a List-Unsubscribe link:
                # the token is made as the company's mailing would make it.
                with Fiduciary.open(demo.policy, settings=demo.settings()) as fid:
                    token = make_unsubscribe_token(fid.keyring, sid, "newsletter")
                person.goto(f"{base}/unsubscribe?token={token}")
                assert "Newsletters and put.io offers" in person.content()
                shot(person, "unsubscribe")
                person.get_by_role("button", name="Unsubscribe").click()
                person.get_by_role("heading", name="You are unsubscribed").wait_for(timeout=10000)
                shot(person, "unsubscribed")
                person.goto(base + "/preferences")
                person.get_by_role("button", name="Sign out").wait_for()
                assert not newsletter.is_checked() and partner.is_checked() and analytics.is_checked()
                shot(person, "preferences-after-unsubscribe")
            finally:
                browser.close()

        # The ledger holds every change, and the decisions follow.
        with Fiduciary.open(demo.policy, settings=demo.settings()) as fid:
            new = fid.consent.events(sid)[before:]
            assert scopes(new) == [
                ("consent_given", "partner_offers", None, "privacy_center"),
                ("setting", "cookies:analytics", "granted", "privacy_center"),
                ("consent_withdrawn", "newsletter", None, new[-1].channel),
            ], scopes(new)
            assert not fid.decide(sid, "newsletter").allowed
            assert fid.decide(sid, "partner_offers").allowed
            assert fid.state(sid).settings["cookies:analytics"] == "granted"
            from fiduciary.requests.lifecycle import RequestDesk

            desk = RequestDesk.from_fiduciary(fid, None)
            assert desk.status(rid).status == "done"
            assert desk.status(demo.requests["child_report"]).status in ("done", "partial")
    finally:
        KEEP.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy2(png, KEEP / png.name)
