"""Children, on SQLite and the real PostgreSQL. The age gate (PUT-2, PLO-13, PLV-14): a
sign-up below the policy's minimum age for the person's jurisdiction, by date of birth or
by age, is refused and leaves nothing about the child in either store (data and keys);
the audit entry it leaves names no one. A child report (PLO-13, PLV-14) runs only once the
privacy team approved it, then deletes the child's account in the service's database and
crypto-shreds them in the vault."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fiduciary.core import Fiduciary, UnderAge
from fiduciary.examples import example_policy
from fiduciary.requests.lifecycle import InvalidTransition
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.vault.vault import SubjectErased
from tests.conftest import Stores
from tests.test_requests_types import app_url, env

__all__ = ["app_url"]  # the fixture, imported for its use here

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
CHILD = "kid@example.com"


def footprint(fid: Fiduciary) -> tuple[int, ...]:
    """Rows that could hold anything about a person, in both stores."""
    with fid.data.connect() as conn:
        data = tuple(
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (T.subjects, T.identities, T.attributes, T.consent_events, T.consent_state)
        )
    with fid.keys.connect() as conn:
        keys = int(conn.execute(select(func.count()).select_from(T.subject_keys)).scalar_one())
    return (*data, keys)


def born(years_ago: int, *, tomorrow: bool = False) -> date:
    """A birth date making the person ``years_ago`` old on NOW (or a day short of it)."""
    d = date(NOW.year - years_ago, NOW.month, NOW.day)
    return d.replace(day=d.day + 1) if tomorrow else d


@pytest.mark.parametrize(
    ("example", "kind", "region", "minimum", "promise"),
    [
        ("filelocker", "customer", "NL", 16, "PUT-2"),
        ("filelocker", "customer", "US", 13, "PUT-2"),
        ("dataplatform", "user", "DE", 16, "PLO-13"),
        ("voiceapi", "customer", "US-CA", 13, "PLV-14"),
    ],
)
def test_age_gate_refuses_and_stores_nothing(
    stores: Stores, example: str, kind: str, region: str, minimum: int, promise: str
) -> None:
    with Fiduciary.open(
        example_policy(example),
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    ) as fid:
        assert fid.policy.min_age(fid.policy.jurisdiction_for(region)) == minimum, promise
        before = footprint(fid)
        attempts: list[dict[str, Any]] = [
            {"birth_date": born(minimum, tomorrow=True)},  # the birthday is tomorrow
            {"age": minimum - 1},
            {"age": 0},
        ]
        for attempt in attempts:
            with pytest.raises(UnderAge) as info:
                fid.sign_up(
                    kind,
                    identities={"email": CHILD},
                    attributes={"user.contact.email": CHILD},
                    region=region,
                    consents=[p for p, cp in fid.policy.purposes.items() if not cp.essential][:1],
                    now=NOW,
                    **attempt,
                )
            assert info.value.minimum == minimum and "nothing was stored" in str(info.value)
        assert footprint(fid) == before, promise  # nothing in the data store, nothing in the keys
        assert fid.find("email", CHILD) is None
        with fid.data.connect() as conn:
            refusals = conn.execute(
                select(T.audit_log).where(T.audit_log.c.result == "refused_under_age")
            ).all()
        assert len(refusals) == len(attempts)
        assert all(r.subject is None for r in refusals)  # no pseudonym either: there is no subject
        assert "kid" not in str(refusals) and str(born(minimum, tomorrow=True)) not in str(refusals)

        # On the birthday itself the gate opens.
        sid = fid.sign_up(kind, identities={"email": CHILD}, region=region, birth_date=born(minimum), now=NOW)
        assert fid.vault.subject(sid).age_status == "adult"


@pytest.mark.parametrize(("example", "promise"), [("dataplatform", "PLO-13"), ("voiceapi", "PLV-14")])
def test_child_report_deletes_account_and_shreds_the_child(
    stores: Stores, app_url: str, tmp_path: Path, example: str, promise: str
) -> None:
    with env(example, stores, app_url, tmp_path) as e:
        child = e.email(5)
        kind = "user" if example == "dataplatform" else "customer"
        sid = e.fid.sign_up(kind, identities={"email": child}, region="US")  # age not asked then
        reporter = "parent@example.org"
        rid = e.verified(
            "erase", reporter, region="US", details={"child_report": True, "account": {"email": child}}
        )
        view = e.desk.status(rid)
        assert view.child_report and view.subject_id == sid, promise
        # A report is checked by a person before anything is deleted.
        with pytest.raises(InvalidTransition, match="approved"):
            e.runner.run([rid], actor="test")
        assert e.fid.vault.subject(sid).status == "active"
        e.desk.approve(rid, actor="privacy_team")
        e.run(rid)

        root = next(n for n in e.plan.nodes if any(i.identity == "email" for i in n.inputs))
        field = next(i.field for i in root.inputs if i.identity == "email")
        col = e.app.metadata.tables[root.name].c[field]
        with e.engine.connect() as conn:
            left = conn.execute(select(func.count()).where(func.lower(col) == child.lower())).scalar()
        assert left == 0, promise  # the child's account is gone from the service
        assert e.fid.vault.subject(sid).status == "erased"
        with pytest.raises(SubjectErased):
            e.fid.vault.read(sid)
        with e.fid.keys.connect() as conn:
            key = conn.execute(select(T.subject_keys).where(T.subject_keys.c.subject_id == sid)).first()
        assert key is None  # crypto-shredded: every copy, backups included, is unreadable
        kinds = [ev.kind for ev in e.desk.status(rid).events]
        assert kinds[:2] == ["received", "child_report"] and "approved" in kinds
        assert e.desk.status(rid).status == "done"  # the verified deletion, with its proof
