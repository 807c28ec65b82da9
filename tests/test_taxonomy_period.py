"""The shipped taxonomy snapshot equals the installed fideslang; periods read as law writes them."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from fiduciary.policy.period import Period, PeriodError
from fiduciary.policy.taxonomy import SNAPSHOT, label, snapshot_from_fideslang, suggest, taxonomy


def test_snapshot_matches_installed_fideslang() -> None:
    shipped = json.loads(SNAPSHOT.read_text())
    assert shipped == json.loads(json.dumps(snapshot_from_fideslang())), (
        "fideslang changed: regenerate src/fiduciary/policy/taxonomy.json with "
        "snapshot_from_fideslang()"
    )


def test_taxonomy_lookups() -> None:
    t = taxonomy()
    assert t.categories["user.contact.email"].parent == "user.contact"
    assert "marketing.communications.email" in t.uses
    assert label("user.device.ip_address") == "IP Address"
    assert label("user.content.private.file_link") == "File link"
    assert suggest("user.contact.emial", t.categories) == ["user.contact.email"]


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("1 month", date(2024, 1, 31), date(2024, 2, 29)),  # GDPR month: clamp to month end
        ("2 months", date(2024, 1, 15), date(2024, 3, 15)),
        ("45 days", date(2024, 1, 1), date(2024, 2, 15)),
        ("10 business days", date(2024, 11, 22), date(2024, 12, 6)),  # Fri -> Fri, 2 weekends
        ("15 business days", date(2024, 1, 1), date(2024, 1, 22)),
        ("1 year", date(2024, 2, 29), date(2025, 2, 28)),
        ("P30D", date(2024, 1, 1), date(2024, 1, 31)),
        ("P1Y6M", date(2024, 1, 1), date(2025, 7, 1)),
    ],
)
def test_period_arithmetic(text: str, start: date, end: date) -> None:
    assert Period.parse(text).add_to(start) == end


def test_hours_on_datetimes() -> None:
    assert Period.parse("72 hours").add_to(datetime(2024, 1, 1, 9)) == datetime(2024, 1, 4, 9)


def test_session_and_ordering() -> None:
    assert Period.parse("session").is_session
    assert str(Period.parse("session")) == "session"
    assert Period.parse("13 months").approx_days() > Period.parse("1 year").approx_days()
    assert str(Period.parse("15 business days")) == "15 business days"
    assert str(Period.parse("1 month")) == "1 month"


@pytest.mark.parametrize("bad", ["30", "30 dayz", "soon", "", "P", 30, None, True, 1.5])
def test_bad_periods_say_what_to_write(bad: object) -> None:
    with pytest.raises(PeriodError) as info:
        Period.parse(bad)
    assert "period" in str(info.value) or "unit" in str(info.value)
