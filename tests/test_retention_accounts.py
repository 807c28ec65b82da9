"""Accounts on the dataplatform example (SQLite and PostgreSQL): an inactive account gets
an email, and is deleted a month later unless the person came back (PLO-9); a legal hold
suspends it (PLO-10); the backups' horizon is in the plan (PLO-10)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from fiduciary.retention import HoldError, place_hold, record_activity, release_hold
from fiduciary.store import tables as T
from tests.retention_support import World, utc, world_of

__all__ = ["world_of"]

T0 = utc(2026, 1, 1)
TWO_YEARS = timedelta(days=731)  # 2024-01-01 .. 2026-01-01 spans a leap day


def _owned(w: World, table: str, user_id: int) -> set[Any]:
    return {pk for pk, r in w.rows(table).items() if r.get("user_id") == user_id}


def test_plo9_inactive_accounts_are_warned_then_deleted_unless_they_come_back(world_of: Any) -> None:
    w: World = world_of("dataplatform", 40)
    users = w.rows("users")
    having = {r["user_id"] for r in w.rows("memberships").values()} & {
        r["user_id"] for r in w.rows("api_keys").values()
    }
    chosen = sorted(having)[:4]
    assert len(chosen) == 4
    silence = {
        "soon": T0 - TWO_YEARS + timedelta(days=20),  # past the notice point, 20 days to go
        "overdue": T0 - TWO_YEARS - timedelta(days=40),  # past both, never told
        "recent": T0 - timedelta(days=365),
        "held": T0 - TWO_YEARS - timedelta(days=40),
    }
    who: dict[str, tuple[int, str, str]] = {}
    for (name, since), uid in zip(silence.items(), chosen, strict=True):
        email = str(users[uid]["email"])
        sid = w.fid.sign_up("user", identities={"email": email}, region="US-CA", now=since)
        who[name] = (uid, email, sid)
    assert place_hold(w.fid, who["held"][2], "legal_hold", actor="counsel")
    assert not place_hold(w.fid, who["held"][2], "legal_hold", actor="counsel")  # already there
    with pytest.raises(HoldError, match="not in the policy"):
        place_hold(w.fid, who["recent"][2], "whim", actor="counsel")

    plan = w.retention.plan(T0)
    tasks = {t.kind: t for t in plan.tasks if t.rule == "inactive_accounts"}
    assert tasks["notice"].count == 2 and tasks["inactive"].count == 0
    assert plan.holds == 1

    # Sweep 1: the two silent accounts are told; nobody is deleted yet.
    assert w.retention.run(T0, timeout=120).status == "done"
    mails = w.outbox.outbox_messages()
    assert sorted(m.to for m in mails) == sorted([who["soon"][1], who["overdue"][1]])
    for m in mails:
        # Deletion a month after the notice at the earliest (notice_before: 30 days).
        assert "31 January 2026" in m.subject and "sign in" in m.text
    for name in who:
        assert w.fid.vault.subject(who[name][2]).status == "active"
    assert w.rows("users") == users

    # The first one signs in again a few days later.
    assert record_activity(w.fid.data, [who["soon"][2]], at=T0 + timedelta(days=5)) == 1

    # Sweep 2, a month on: the one who stayed silent is deleted, everywhere.
    later = T0 + timedelta(days=31)
    assert w.retention.run(later, timeout=120).status == "done"
    uid, email, sid = who["overdue"]
    assert w.fid.vault.subject(sid).status == "erased"
    after = w.rows("users")
    assert after[uid]["email"] is None and after[uid]["name"] is None
    assert not _owned(w, "memberships", uid) and not _owned(w, "api_keys", uid)
    for name in ("soon", "recent", "held"):
        uid_, _, sid_ = who[name]
        assert w.fid.vault.subject(sid_).status == "active", name
        assert after[uid_] == users[uid_], name
        assert _owned(w, "memberships", uid_), name
    assert len(w.outbox.outbox_messages()) == 2  # nobody told twice, the held one not at all

    # The same sweep again: nothing more happens.
    assert w.retention.run(later, timeout=120).status == "done"
    assert len(w.outbox.outbox_messages()) == 2
    assert w.rows("users") == after

    # The hold is lifted: the silent account is told at the next sweep (PLO-10 then PLO-9).
    assert release_hold(w.fid, who["held"][2], "legal_hold", actor="counsel")
    assert w.retention.run(later + timedelta(days=1), timeout=120).status == "done"
    assert w.outbox.outbox_messages()[-1].to == who["held"][1]
    with w.fid.data.connect() as conn:
        notices = conn.execute(select(T.retention_notices.c.status)).scalars().all()
    assert sorted(notices) == ["sent", "sent", "sent"]
    actions = [e.action for e in w.fid.audit.query(limit=1000)]
    assert actions.count("retention.notice") == 3 and "retention.hold" in actions
    assert "retention.release" in actions and actions.count("retention.sweep") == 4


def test_plo10_backups_horizon_of_erasures(world_of: Any) -> None:
    w: World = world_of("dataplatform", 5)
    sid = w.fid.sign_up("user", identities={"email": "gone@example.com"}, region="US-CA")
    w.fid.erase(sid)
    plan = w.retention.plan()
    assert plan.backups is not None
    assert plan.backups["retention"] == "35 days" and plan.backups["erased_recently"] == 1
    assert plan.backups["clear_by"] is not None
    assert re.search(r"backups: kept 35 days; 1 erasure\(s\) may still be in backups until", plan.to_text())
