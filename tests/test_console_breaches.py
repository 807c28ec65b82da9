"""The console's breach register (/console/breaches, LAW-10) through FastAPI's TestClient
over a real Fiduciary on examples/filelocker, on SQLite and the real PostgreSQL.

Recording a breach from the form, the 72-hour clock on the list and the page (red under
12 hours and when overdue), the steps through the library (assess, mail the people, record
the authority's notification with the reasons when late, close) audited as
``console:<username>``, the drafted notices, a viewer reading but refused every step, CSRF
refusals, and bad input answered with the library's words and nothing changed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fiduciary.core import Fiduciary
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web.console.breaches import span
from tests.conftest import Stores
from tests.test_console import FILELOCKER, Console, _console

NATURE = "A storage bucket holding a database backup could be read without a password."


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Console]:
    """examples/filelocker on SQLite files (as tests/test_console.py's)."""
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


def field_time(at: datetime) -> str:
    """As a browser's datetime-local input sends it (read as UTC)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def customers(c: Console, n: int) -> list[str]:
    return [
        c.fid.sign_up("customer", identities={"email": f"b{i}@example.com"}, region="DE", age=30)
        for i in range(n)
    ]


def breach_count(c: Console) -> int:
    with c.fid.data.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(T.breaches)).scalar_one())


def rows_of(html: str) -> list[str]:
    """The open table's rows, in order."""
    body = html.split('id="open-h"', 1)[1].split('id="closed-h"', 1)[0]
    return re.findall(r"<tr class=\"[^\"]*\">.*?</tr>", body, re.S)


def test_record_assess_notify_and_close(both: Console) -> None:
    ids = customers(both, 3)
    tc, csrf = both.sign_in("otto")
    page = tc.get("/console/breaches")
    assert page.status_code == 200 and "No open breach." in page.text
    assert 'href="/console/breaches/new"' in page.text and 'aria-current="page"' in page.text
    form = tc.get("/console/breaches/new")
    assert form.status_code == 200
    assert 'name="categories" value="user.contact.email"' in form.text and "Email address" in form.text

    detected = datetime.now(UTC) - timedelta(hours=2)
    r = tc.post(
        "/console/breaches",
        data={
            "csrf": csrf,
            "title": "Backup bucket readable",
            "nature": NATURE,
            "detected_at": field_time(detected),
            "occurred_at": field_time(detected - timedelta(days=2)),
            "categories": ["user.contact.email", "user.device.ip_address"],
            "subject_ids": f"{ids[0]}\n{ids[1]}, {ids[1]}",
            "records_estimate": "5,000",
        },
    )
    assert r.status_code == 303, r.text
    bid = r.headers["location"].split("/")[-1].split("?")[0]
    b = both.fid.breaches.get(bid)
    assert b.title == "Backup bucket readable" and b.created_by == "console:otto"
    assert b.categories == ("user.contact.email", "user.device.ip_address")
    assert b.subjects == 2 and b.subjects_estimate == 2 and b.records_estimate == 5000
    assert b.detected_at == detected.replace(second=0, microsecond=0)
    (entry,) = both.audit("breach.detected")
    assert entry.actor == "console:otto"

    # The page: the clock counting down from awareness (not red yet), state, notices.
    page = tc.get(r.headers["location"])
    assert page.status_code == 200 and "Breach recorded." in page.text
    assert re.search(r'<p class="clock">.*69 h \d+ min left', page.text, re.S)
    assert "Not assessed" in page.text and "Email address" in page.text
    assert "Notification of a personal data breach (GDPR Article 33)" in page.text
    assert "Autoriteit Persoonsgegevens" in page.text  # the policy's authority, in the notice
    assert "a security incident at" in page.text  # the people's notice
    assert "<script" not in page.text
    # The list: open, its state and its clock.
    (row,) = rows_of(tc.get("/console/breaches").text)
    assert f'href="/console/breaches/{bid}"' in row and "Detected" in row and "69 h" in row
    assert 'class="overdue"' not in row
    # The notice as plain text, to paste into the authority's portal.
    txt = tc.get(f"/console/breaches/{bid}/notice-authority.txt")
    assert txt.status_code == 200 and txt.headers["content-type"].startswith("text/plain")
    assert txt.text.startswith("Subject: Personal data breach notification") and NATURE in txt.text

    # Mailing people before an assessment says consequences and measures: refused.
    r = tc.post(f"/console/breaches/{bid}/notify-subjects", data={"csrf": csrf})
    assert r.status_code == 409 and "assess it first" in r.text
    assert not [m for m in both.outbox.outbox_messages() if "security incident" in m.subject]
    # Assess: high risk, one more person, one more category.
    r = tc.post(
        f"/console/breaches/{bid}/assess",
        data={
            "csrf": csrf,
            "risk": "high",
            "consequences": "Phishing mails may follow.",
            "measures": "We closed access and rotated the keys.",
            "advice": "Be wary of mails asking for your password.",
            "categories": ["user.contact.address.city"],
            "subject_ids": ids[2],
        },
    )
    assert r.status_code == 303, r.text
    b = both.fid.breaches.get(bid)
    assert b.risk == "high" and b.subjects == 3 and "user.contact.address.city" in b.categories
    page = tc.get(f"/console/breaches/{bid}").text
    assert "Phishing mails may follow." in page and "High risk" in page and "Assess again" in page

    # Tell the people: the library mails each linked subject once.
    r = tc.post(f"/console/breaches/{bid}/notify-subjects", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=notified-subjects")
    mailed = [m for m in both.outbox.outbox_messages() if "security incident" in m.subject]
    assert len(mailed) == 3 and all("Phishing mails may follow." in m.text for m in mailed)
    assert "Sent: 3" in tc.get(r.headers["location"]).text
    r = tc.post(f"/console/breaches/{bid}/notify-subjects", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"].endswith("?done=nobody")
    assert len([m for m in both.outbox.outbox_messages() if "security incident" in m.subject]) == 3

    # Closing before the authority is notified: refused with the library's reason.
    r = tc.post(f"/console/breaches/{bid}/close", data={"csrf": csrf, "summary": "done"})
    assert r.status_code == 409 and "the authority was not notified" in r.text
    # In time: no reasons asked.
    assert 'name="delay_reason"' not in tc.get(f"/console/breaches/{bid}").text
    r = tc.post(f"/console/breaches/{bid}/notify-authority", data={"csrf": csrf, "reference": "EDPB-2026-1"})
    assert r.status_code == 303
    b = both.fid.breaches.get(bid)
    assert b.authority_notified_at is not None
    page = tc.get(f"/console/breaches/{bid}").text
    assert "authority notified" in page and "(in time)" in page and "phase 2" in page
    r = tc.post(f"/console/breaches/{bid}/close", data={"csrf": csrf, "summary": "Keys rotated."})
    assert r.status_code == 303
    assert both.fid.breaches.get(bid).status == "closed"

    listing = tc.get("/console/breaches").text
    assert "No open breach." in listing and f'href="/console/breaches/{bid}"' in listing
    page = tc.get(f"/console/breaches/{bid}").text
    assert "/assess" not in page and "/close" not in page  # no forms on a closed breach
    for kind in (
        "Detected and registered",
        "Assessed",
        "Notice mailed to the people",
        "Authority notified",
        "Closed",
    ):
        assert kind in page
    assert "EDPB-2026-1" in page and "Keys rotated." in page
    events = both.fid.breaches.get(bid).events
    assert [e.kind for e in events] == [
        "detected",
        "assessed",
        "notified_subjects",
        "notified_authority",
        "closed",
    ]
    assert {e.actor for e in events} == {"console:otto"}


def test_clock_red_under_12_hours_and_late_reasons(site: Console) -> None:
    now = datetime.now(UTC)
    reg = site.fid.breaches
    calm = reg.detect("Laptop lost", "An encrypted laptop was lost.", detected_at=now - timedelta(hours=10))
    soon = reg.detect(
        "Mail misdirected", "A mail went to the wrong list.", detected_at=now - timedelta(hours=62)
    )
    late = reg.detect("Backup readable", NATURE, detected_at=now - timedelta(hours=80))
    quiet = reg.detect(
        "Old log", "A log with pseudonyms was readable.", detected_at=now - timedelta(hours=100)
    )
    reg.assess(quiet.id, risk="unlikely")
    tc, csrf = site.sign_in("otto")

    rows = rows_of(tc.get("/console/breaches").text)
    # Running clocks soonest due first (the overdue one leads); then those with none.
    assert [re.search(r'href="/console/breaches/(\w+)"', r).group(1) for r in rows] == [  # type: ignore[union-attr]
        late.id,
        soon.id,
        calm.id,
        quiet.id,
    ]
    assert 'class="overdue"' in rows[0] and "overdue by 8 h" in rows[0]
    assert 'class="overdue"' in rows[1] and re.search(r"9 h \d+ min left", rows[1])
    assert 'class="overdue"' not in rows[2] and re.search(r"61 h \d+ min left", rows[2])
    assert "no notification due" in rows[3]
    listing = tc.get("/console/breaches").text
    assert "1 overdue" in listing and "1 due within 12 hours" in listing

    page = tc.get(f"/console/breaches/{late.id}").text
    assert 'class="clock urgent"' in page and "overdue by 8 h" in page
    assert 'name="delay_reason"' in page and "4. Reasons for the delay" in page  # in the draft too
    r = tc.post(f"/console/breaches/{late.id}/notify-authority", data={"csrf": csrf, "reference": "X-1"})
    assert r.status_code == 422 and "Give the reasons for the delay" in r.text
    assert 'id="a-delay_reason-error"' in r.text and 'aria-invalid="true"' in r.text
    assert 'value="X-1"' in r.text  # the form keeps what was typed
    assert reg.get(late.id).authority_notified_at is None
    r = tc.post(
        f"/console/breaches/{late.id}/notify-authority",
        data={"csrf": csrf, "reference": "X-1", "delay_reason": "The scope took four days to establish."},
    )
    assert r.status_code == 303
    (event,) = [e for e in reg.get(late.id).events if e.kind == "notified_authority"]
    assert event.detail is not None and event.detail["late"] is True
    assert event.detail["delay_reason"] == "The scope took four days to establish."
    page = tc.get(f"/console/breaches/{late.id}").text
    assert "(late)" in page and 'class="clock urgent"' not in page
    # Notified at a moment before it was due (backdated): no reasons needed.
    r = tc.post(
        f"/console/breaches/{soon.id}/notify-authority",
        data={"csrf": csrf, "at": field_time(now - timedelta(hours=1))},
    )
    assert r.status_code == 303


def test_viewer_reads_but_cannot_act(both: Console) -> None:
    ids = customers(both, 1)
    b = both.fid.breaches.detect("Backup readable", NATURE, subject_ids=ids)
    viewer, vcsrf = both.sign_in("vera")
    listing = viewer.get("/console/breaches")
    assert listing.status_code == 200 and f'href="/console/breaches/{b.id}"' in listing.text
    assert "/console/breaches/new" not in listing.text
    page = viewer.get(f"/console/breaches/{b.id}")
    assert page.status_code == 200 and "can read the register but not act" in page.text
    assert "/assess" not in page.text and "/notify-" not in page.text and "/close" not in page.text
    assert "Notification of a personal data breach" in page.text  # notices are readable
    assert viewer.get("/console/breaches/new").status_code == 403
    posts: list[tuple[str, dict[str, Any]]] = [
        ("/console/breaches", {"title": "x", "nature": "y", "detected_at": field_time(datetime.now(UTC))}),
        (f"/console/breaches/{b.id}/assess", {"risk": "high", "consequences": "c", "measures": "m"}),
        (f"/console/breaches/{b.id}/notify-authority", {}),
        (f"/console/breaches/{b.id}/notify-subjects", {"force": "1"}),
        (f"/console/breaches/{b.id}/close", {}),
    ]
    for path, data in posts:
        r = viewer.post(path, data={"csrf": vcsrf, **data})
        assert r.status_code == 403 and "Your role does not allow this" in r.text, path
    after = both.fid.breaches.get(b.id)
    assert after.risk == "unassessed" and len(after.events) == 1 and breach_count(both) == 1
    # Not signed in: to the sign-in form, back to the breach afterwards.
    r = both.client().post(f"/console/breaches/{b.id}/close", data={})
    assert r.status_code == 303
    assert r.headers["location"] == f"/console/login?next=%2Fconsole%2Fbreaches%2F{b.id}"


def test_csrf_refused(site: Console) -> None:
    b = site.fid.breaches.detect("Backup readable", NATURE)
    operator, csrf = site.sign_in("otto")
    _, other = site.sign_in("ada")
    for token in ("", "forged", other):  # another session's token does not fit this one
        r = operator.post(
            "/console/breaches",
            data={"csrf": token, "title": "t", "nature": "n", "detected_at": field_time(datetime.now(UTC))},
        )
        assert r.status_code == 403 and "This form has expired" in r.text
        r = operator.post(f"/console/breaches/{b.id}/assess", data={"csrf": token, "risk": "unlikely"})
        assert r.status_code == 403
    assert breach_count(site) == 1 and site.fid.breaches.get(b.id).risk == "unassessed"
    r = operator.post(f"/console/breaches/{b.id}/assess", data={"csrf": csrf, "risk": "unlikely"})
    assert r.status_code == 303 and site.fid.breaches.get(b.id).risk == "unlikely"


def test_bad_input_changes_nothing(site: Console) -> None:
    tc, csrf = site.sign_in("otto")
    base = {
        "csrf": csrf,
        "title": "Backup readable",
        "nature": NATURE,
        "detected_at": field_time(datetime.now(UTC)),
    }
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"title": "  "}, "title", "Give the breach a short title."),
        ({"nature": "Mail ann@example.com about it"}, "nature", "personal data"),
        ({"detected_at": "yesterday"}, "detected_at", "enter a date and time"),
        ({"detected_at": ""}, "detected_at", "the clock starts then"),
        (
            {"detected_at": field_time(datetime.now(UTC) + timedelta(days=1))},
            "detected_at",
            "detected_at is in the future",
        ),
        ({"subjects_estimate": "-3"}, "subjects_estimate", "a whole number"),
        ({"categories": ["user.contact.emial"]}, "categories", "did you mean &#39;user.contact.email&#39;"),
        ({"subject_ids": "nobody123"}, "subject_ids", "unknown subject(s): nobody123"),
    ]
    for change, field, words in cases:
        r = tc.post("/console/breaches", data={**base, **change})
        assert r.status_code == 422, (change, r.status_code)
        assert words in r.text and f'id="b-{field}-error"' in r.text, (change, field)
        assert "The breach was not recorded" in r.text
    assert breach_count(site) == 0

    b = site.fid.breaches.detect("Backup readable", NATURE)
    r = tc.post(f"/console/breaches/{b.id}/assess", data={"csrf": csrf})
    assert r.status_code == 422 and "Choose the risk to people." in r.text
    r = tc.post(
        f"/console/breaches/{b.id}/assess", data={"csrf": csrf, "risk": "high", "measures": "+31 20 555 0100"}
    )
    assert r.status_code == 422 and "personal data" in r.text and 'id="a-measures-error"' in r.text
    r = tc.post(f"/console/breaches/{b.id}/close", data={"csrf": csrf})
    assert r.status_code == 409 and "assess it before closing it" in r.text
    assert len(site.fid.breaches.get(b.id).events) == 1
    assert tc.get("/console/breaches/nope!").status_code == 404
    assert tc.get("/console/breaches/unknown123").status_code == 404
    assert tc.post("/console/breaches/unknown123/close", data={"csrf": csrf}).status_code == 404
    assert tc.get("/console/breaches/unknown123/notice-people.txt").status_code == 404
    assert tc.get(f"/console/breaches/{b.id}/notice-other.txt").status_code == 404


@pytest.mark.parametrize(
    ("hours", "text"),
    [(0.5, "30 min"), (71.99, "71 h 59 min"), (-8.2, "8 h 12 min"), (100, "4 d 4 h"), (72, "3 d 0 h")],
)
def test_span(hours: float, text: str) -> None:
    assert span(timedelta(hours=hours)) == text
