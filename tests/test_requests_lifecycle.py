"""The request lifecycle on SQLite and the real PostgreSQL (the ``stores`` fixture).

Policy: examples/dataplatform (jurisdictions eu: GDPR, us-ca: CCPA with acknowledgement
and data-point verification, row: the rest). Mails go to a real outbox folder.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import Engine, func, inspect, select, text, update

from fiduciary.audit import AuditLog
from fiduciary.mail import OutboxMailer, SmtpMailer
from fiduciary.policy import CompiledPolicy, compile_policy, load_policy
from fiduciary.policy.model import RequestType, Verification
from fiduciary.requests.lifecycle import (
    CodeExpired,
    CodeLocked,
    CodeRejected,
    ContactForgotten,
    InvalidTransition,
    RequestDesk,
    RequestInputError,
    RightNotGiven,
    TooManyCodes,
    UnknownRequest,
    VerificationFailed,
    VerificationLocked,
)
from fiduciary.store import tables as T
from fiduciary.vault import Keyring, Vault
from tests.conftest import Stores

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2022-07-02"
STATUS_URL = "https://ploomber.io/privacy/requests/{request_id}"
# 2026-01-02 is a Friday.
FRI = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def cp() -> CompiledPolicy:
    return compile_policy(load_policy(ROOT / "examples/dataplatform/policy.yaml"))


@dataclasses.dataclass
class World:
    desk: RequestDesk
    vault: Vault
    audit: AuditLog
    outbox: OutboxMailer
    stores: Stores

    def codes(self) -> list[tuple[str, str]]:
        """(reference, code) of every code mail in the outbox, oldest first."""
        out = []
        for m in self.outbox.outbox_messages():
            found = re.search(r"Your verification code: (\d+)", m.subject)
            if found:
                ref = re.search(r"Request reference: (\w+)", m.text)
                assert ref is not None
                out.append((ref.group(1), found.group(1)))
        return out

    def code(self, request_id: str) -> str:
        return [c for r, c in self.codes() if r == request_id][-1]

    def kinds(self, request_id: str) -> list[str]:
        return [e.kind for e in self.desk.events(request_id)]


def make_world(stores: Stores, cp: CompiledPolicy, folder: Path, **kw: Any) -> World:
    ring = Keyring.generate()
    audit = AuditLog(stores.data, ring)
    vault = Vault(stores.data, stores.keys, ring, cp, audit=audit, default_region="US")
    outbox = OutboxMailer(folder)
    desk = RequestDesk(
        stores.data,
        stores.keys,
        ring,
        cp,
        vault,
        audit,
        outbox,
        status_url=STATUS_URL,
        default_region="US",
        **kw,
    )
    return World(desk, vault, audit, outbox, stores)


@pytest.fixture
def w(stores: Stores, cp: CompiledPolicy, tmp_path: Path) -> World:
    return make_world(stores, cp, tmp_path / "outbox")


def user(w: World, email: str, name: str, phone: str | None = None, **more: object) -> str:
    identities = {"email": email}
    attributes: dict[str, object] = {
        "user.contact.email": email,
        "user.name": name,
        "user.authorization.credentials": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        **more,
    }
    if phone:
        identities["phone_number"] = phone
        attributes["user.contact.phone_number"] = phone
    return w.vault.create_subject(
        "user",
        "us-ca",
        identities=identities,
        attributes=attributes,
        activity="registration",
        policy_version=VERSION,
        now=FRI - timedelta(days=100),
    )


def rows(engine: Engine, table: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(f'SELECT * FROM "{table}"'))]


def counts(w: World) -> dict[str, int]:
    out = {}
    for engine in (w.stores.data, w.stores.keys):
        with engine.connect() as conn:
            for name in inspect(conn).get_table_names():
                out[name] = conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
    return out


# ------------------------------------------------------------------------------ deadlines
def test_gdpr_one_month_with_month_ends(w: World) -> None:
    jan31 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    sub = w.desk.submit("access", contact={"email": "ann@example.com"}, region="DE", now=jan31)
    assert sub.due_at == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)  # no Feb 31: the month's last day
    assert sub.verification is Verification.email_code
    assert sub.status == "received" and sub.code_sent and sub.duplicate_of is None
    assert sub.acknowledge_by is None  # GDPR has no separate acknowledgement
    leap = w.desk.submit(
        "erase", contact={"email": "ann@example.com"}, region="FR", now=datetime(2028, 1, 31, tzinfo=UTC)
    )
    assert leap.due_at == datetime(2028, 2, 29, tzinfo=UTC)
    mid = w.desk.submit("portability", contact={"email": "ann@example.com"}, region="GB", now=FRI)
    assert mid.due_at == datetime(2026, 2, 2, 9, 30, tzinfo=UTC)

    view = w.desk.status(sub.request_id, now=jan31)
    assert (view.type, view.jurisdiction, view.status, view.verification) == (
        "access",
        "eu",
        "received",
        "email_code",
    )
    assert view.due_at == sub.due_at and view.received_at == jan31 and not view.extended
    assert [e.kind for e in view.events] == ["received", "code_sent"]
    assert view.events[0].detail is not None and view.events[0].detail["due"] == "2026-02-28T10:00:00+00:00"
    assert w.code(sub.request_id).isdigit() and len(w.code(sub.request_id)) == 6


def test_ccpa_45_days_acknowledgement_and_opt_out_in_15_business_days(w: World) -> None:
    sub = w.desk.submit("access", contact={"email": "bo@example.com"}, region="US-CA", now=FRI)
    assert sub.due_at == FRI + timedelta(days=45)
    assert sub.verification is Verification.two_data_points
    assert not sub.code_sent  # data points, not a code
    assert sub.acknowledge_by == datetime(2026, 1, 16, 9, 30, tzinfo=UTC)  # 10 business days (LAW-11)
    assert w.kinds(sub.request_id) == ["received", "acknowledged"]
    (ack,) = w.outbox.outbox_messages()
    assert ack.to == "bo@example.com" and "We received your request for a copy of your data" in ack.subject
    assert sub.request_id in ack.text and "16 February 2026" in ack.text
    assert STATUS_URL.format(request_id=sub.request_id) in ack.text

    opt = w.desk.submit("opt_out_of_sale", contact={"email": "bo@example.com"}, region="us-ca", now=FRI)
    assert opt.due_at == datetime(2026, 1, 23, 9, 30, tzinfo=UTC)  # 15 business days: 3 weekends skipped
    assert opt.status == "verified" and opt.verification is Verification.none  # opt-outs need none
    assert w.kinds(opt.request_id) == ["received", "verified", "acknowledged"]
    # A Saturday submission: the weekend does not count, so it is due the same Friday.
    sat = w.desk.submit(
        "opt_out_of_sale", contact={"email": "cy@example.com"}, region="US-CA", now=FRI + timedelta(days=1)
    )
    assert sat.due_at == datetime(2026, 1, 23, 9, 30, tzinfo=UTC)


def test_extension_once_with_a_reason(w: World) -> None:
    sub = w.desk.submit("access", contact={"email": "di@example.com"}, region="DE", now=FRI)
    before = w.desk.status(sub.request_id)
    with pytest.raises(RequestInputError, match="reason: required"):
        w.desk.extend(sub.request_id, "  ", "console:alice")
    with pytest.raises(RequestInputError, match="email address"):
        w.desk.extend(sub.request_id, "asked di@example.com again", "console:alice")
    due = w.desk.extend(
        sub.request_id, "Data sits in 14 systems", "console:alice", now=FRI + timedelta(days=3)
    )
    assert due == datetime(2026, 4, 2, 9, 30, tzinfo=UTC)  # Feb 2 + two further months
    view = w.desk.status(sub.request_id)
    assert view.extended and view.due_at == due
    assert [e.kind for e in view.events][-2:] == ["extended", "mailed"]
    ext = view.events[-2]
    assert ext.actor == "console:alice"
    assert ext.detail == {"reason": "Data sits in 14 systems", "due": due.isoformat(), "by": "2 months"}
    mail = w.outbox.outbox_messages()[-1]
    assert (
        "more time" in mail.subject and "Data sits in 14 systems" in mail.text and "2 April 2026" in mail.text
    )

    n = counts(w)
    with pytest.raises(InvalidTransition, match="already extended once"):
        w.desk.extend(sub.request_id, "Still busy", "console:alice")
    assert counts(w) == n and w.desk.status(sub.request_id).due_at == due
    assert before.due_at != due

    ca = w.desk.submit("erase", contact={"email": "di@example.com"}, region="US-CA", now=FRI)
    assert w.desk.extend(ca.request_id, "Backups to check", "console:alice") == FRI + timedelta(days=90)
    # No extension in the policy for this right: refused.
    wc = w.desk.submit("withdraw_consent", contact={"email": "di@example.com"}, region="DE", now=FRI)
    with pytest.raises(InvalidTransition, match="no extension for 'withdraw_consent' in 'eu'"):
        w.desk.extend(wc.request_id, "Busy", "console:alice")


# ------------------------------------------------------------------------------ intake
def test_right_not_given_lists_what_is_available(w: World) -> None:
    n = counts(w)
    with pytest.raises(RightNotGiven) as err:
        w.desk.submit("opt_out_of_sale", contact={"email": "ed@example.com"}, region="DE")
    msg = str(err.value)
    assert "'opt_out_of_sale' is not a right given in jurisdiction 'eu'" in msg
    assert "available there: access, close_account, erase, object, opt_out_of_marketing, portability, " in msg
    assert err.value.available == tuple(
        sorted(
            [
                "access",
                "portability",
                "rectify",
                "erase",
                "restrict",
                "object",
                "withdraw_consent",
                "opt_out_of_marketing",
                "close_account",
            ]
        )
    )
    with pytest.raises(RightNotGiven, match="'shine_the_light' is not a right given in jurisdiction 'row'"):
        w.desk.submit(RequestType.shine_the_light, contact={"email": "ed@example.com"}, region="BR")
    with pytest.raises(RequestInputError, match="request type 'delete_me' is unknown"):
        w.desk.submit("delete_me", contact={"email": "ed@example.com"}, region="DE")
    with pytest.raises(RequestInputError, match="contact email: not a valid email address"):
        w.desk.submit("erase", contact={"email": "ed@"}, region="DE")
    with pytest.raises(RequestInputError, match="unknown field"):
        w.desk.submit("erase", contact={"mail": "ed@example.com"}, region="DE")
    with pytest.raises(RequestInputError, match="an email address is needed"):
        w.desk.submit("erase", contact={"phone": "+33 1 23 45 67 89"}, region="DE")
    with pytest.raises(RequestInputError, match="subject_kind 'martian'"):
        w.desk.submit("erase", contact={"email": "ed@example.com"}, region="DE", subject_kind="martian")
    assert counts(w) == n  # nothing stored, no mail
    assert w.outbox.outbox_messages() == []


def test_duplicates_return_the_open_request(w: World) -> None:
    first = w.desk.submit("erase", contact={"email": "Fay@Example.com"}, region="DE", now=FRI)
    again = w.desk.submit(
        "erase", contact={"email": " fay@example.COM"}, region="AT", now=FRI + timedelta(hours=2)
    )
    assert again.duplicate_of == first.request_id == again.request_id
    assert again.due_at == first.due_at and again.status == "received"
    assert len(rows(w.stores.data, "requests")) == 1
    assert len(w.codes()) == 1  # no second code
    other = w.desk.submit("access", contact={"email": "fay@example.com"}, region="DE", now=FRI)
    assert other.duplicate_of is None and other.request_id != first.request_id
    # Once the first is closed, the same request is new again.
    w.desk.deny(first.request_id, "identity_not_verified", "console:alice")
    later = w.desk.submit(
        "erase", contact={"email": "fay@example.com"}, region="DE", now=FRI + timedelta(days=2)
    )
    assert later.duplicate_of is None and later.request_id != first.request_id
    assert len(rows(w.stores.data, "requests")) == 3


def test_referred_friend_without_account_is_accepted(w: World) -> None:
    sub = w.desk.submit(
        "erase", contact={"email": "friend@example.org"}, region="DE", subject_kind="subscriber", now=FRI
    )
    assert not sub.subject_matched
    view = w.desk.status(sub.request_id)
    assert view.subject_id is None
    assert view.events[0].detail is not None and view.events[0].detail["subject_kind"] == "subscriber"
    w.desk.verify_code(sub.request_id, w.code(sub.request_id), now=FRI)
    w.desk.start(sub.request_id, job_id="j" * 32)
    assert w.desk.finish(sub.request_id) == "done"


# -------------------------------------------------------------------------- email codes
def test_code_brute_force_lockout_then_a_new_code(w: World) -> None:
    sub = w.desk.submit("erase", contact={"email": "gil@example.com"}, region="DE", now=FRI)
    rid = sub.request_id
    right = w.code(rid)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    for left in (4, 3, 2, 1, 0):
        with pytest.raises(CodeRejected) as err:
            w.desk.verify_code(rid, wrong, now=FRI + timedelta(minutes=1))
        assert err.value.attempts_left == left
    with pytest.raises(CodeLocked, match="ask for a new code"):
        w.desk.verify_code(rid, right, now=FRI + timedelta(minutes=2))  # even the right one
    assert w.desk.status(rid).status == "received"
    assert w.kinds(rid) == ["received", "code_sent", "code_locked"]

    assert w.desk.resend_code(rid, now=FRI + timedelta(minutes=3))
    fresh = w.code(rid)
    with pytest.raises(CodeRejected):
        w.desk.verify_code(rid, right if right != fresh else wrong, now=FRI + timedelta(minutes=4))
    assert w.desk.verify_code(rid, f"{fresh[:3]} {fresh[3:]}", now=FRI + timedelta(minutes=4)) == "verified"
    assert w.desk.status(rid).status == "verified"
    with pytest.raises(InvalidTransition, match="cannot verify a request that is verified"):
        w.desk.verify_code(rid, fresh)


def test_wrong_code_changes_only_the_attempt_count(w: World) -> None:
    sub = w.desk.submit("erase", contact={"email": "hal@example.com"}, region="DE", now=FRI)
    right = w.code(sub.request_id)
    wrong = "000000" if right != "000000" else "111111"
    snapshot = {t: rows(w.stores.data, t) for t in ("requests", "request_events", "audit_log", "subjects")}
    code_before = rows(w.stores.data, "request_codes")
    with pytest.raises(CodeRejected):
        w.desk.verify_code(sub.request_id, wrong, now=FRI + timedelta(minutes=5))
    assert {t: rows(w.stores.data, t) for t in snapshot} == snapshot
    code_after = rows(w.stores.data, "request_codes")
    assert code_after == [{**code_before[0], "attempts": 1}]
    with pytest.raises(RequestInputError, match="6 digits"):
        w.desk.verify_code(sub.request_id, "12ab56")
    assert rows(w.stores.data, "request_codes") == code_after  # malformed input is not an attempt


def test_code_expires_and_codes_are_limited(w: World) -> None:
    sub = w.desk.submit("erase", contact={"email": "ida@example.com"}, region="DE", now=FRI)
    with pytest.raises(CodeExpired):
        w.desk.verify_code(sub.request_id, w.code(sub.request_id), now=FRI + timedelta(minutes=31))
    for _ in range(4):
        assert w.desk.resend_code(sub.request_id, now=FRI + timedelta(minutes=40))
    with pytest.raises(TooManyCodes):
        w.desk.resend_code(sub.request_id, now=FRI + timedelta(minutes=41))
    assert len(w.codes()) == 5
    w.desk.verify_code(sub.request_id, w.code(sub.request_id), now=FRI + timedelta(minutes=42))
    opt = w.desk.submit("opt_out_of_marketing", contact={"email": "ida@example.com"}, region="DE", now=FRI)
    with pytest.raises(InvalidTransition, match="verified by none, not by an email code"):
        w.desk.verify_code(opt.request_id, "123456")


# ------------------------------------------------------------------------- data points
def three_points(cp: CompiledPolicy) -> CompiledPolicy:
    """The policy with CCPA access at three data points (specific pieces: section 7062)."""
    rights = dict(cp.rights)
    key = ("us-ca", RequestType.access)
    rights[key] = rights[key].model_copy(update={"verification": Verification.three_data_points})
    return dataclasses.replace(cp, rights=MappingProxyType(rights))


def test_two_data_points(w: World) -> None:
    sid = user(
        w,
        "jo@example.com",
        "Jo Ann Lee",
        phone="+1 415 555 0132",
        **{"user.contact.organization": "Acme, Inc."},
    )
    sub = w.desk.submit("access", contact={"email": "jo@example.com"}, region="US-CA", now=FRI)
    assert sub.subject_matched and w.desk.status(sub.request_id).subject_id == sid
    rid = sub.request_id

    # The contact itself does not count: anyone can type an address.
    with pytest.raises(VerificationFailed) as err:
        w.desk.verify_data_points(rid, {"user.contact.email": "JO@example.com", "user.name": "jo ann lee"})
    assert str(err.value) == "the details given do not match our records"
    # One right, one wrong: refused without saying which.
    with pytest.raises(VerificationFailed) as err:
        w.desk.verify_data_points(rid, {"user.name": "Jo Ann Lee", "user.contact.organization": "Initech"})
    assert "organization" not in str(err.value) and "name" not in str(err.value)
    assert w.desk.status(rid).status == "received"
    failed = [e for e in w.desk.events(rid) if e.kind == "verification_failed"]
    assert len(failed) == 2 and failed[0].detail == {"method": "two_data_points", "declaration": False}

    with pytest.raises(RequestInputError, match=r"data point 'user\.nmae': not a category or identity kind"):
        w.desk.verify_data_points(rid, {"user.nmae": "Jo"})
    # One fact given twice (identity kind and category) is one point.
    with pytest.raises(VerificationFailed):
        w.desk.verify_data_points(
            rid, {"phone_number": "+14155550132", "user.contact.phone_number": "4155550132"}
        )
    # Normalized: case, spacing, punctuation; the phone in any notation.
    assert (
        w.desk.verify_data_points(rid, {"user.name": "  JO ANN  lee ", "phone_number": "(415) 555-0132"})
        == "verified"
    )
    assert w.kinds(rid)[-1] == "verified"
    with pytest.raises(InvalidTransition):
        w.desk.verify_data_points(rid, {"user.name": "Jo Ann Lee", "phone_number": "(415) 555-0132"})

    # Points given at submit are used when none are passed.
    w.desk.deny(rid, "other", "console:alice", note="test done")
    sub2 = w.desk.submit(
        "erase",
        contact={"email": "jo@example.com"},
        region="US-CA",
        data_points={"user.contact.organization": "ACME inc", "user.contact.phone_number": "415.555.0132"},
    )
    assert w.desk.verify_data_points(sub2.request_id) == "verified"


def test_three_data_points_need_a_declaration(stores: Stores, cp: CompiledPolicy, tmp_path: Path) -> None:
    w = make_world(stores, three_points(cp), tmp_path)
    user(w, "kim@example.com", "Kim Park", phone="+14155550199", **{"user.contact.organization": "Globex"})
    sub = w.desk.submit("access", contact={"email": "kim@example.com"}, region="US-CA", now=FRI)
    assert sub.verification is Verification.three_data_points
    good = {
        "user.name": "kim park",
        "phone_number": "+1 (415) 555-0199",
        "user.contact.organization": "GLOBEX",
    }
    with pytest.raises(RequestInputError, match="signed declaration"):
        w.desk.verify_data_points(sub.request_id, good)
    with pytest.raises(VerificationFailed):  # two of three are not enough at this level
        w.desk.verify_data_points(
            sub.request_id, {**good, "user.contact.organization": "Initech"}, declaration=True
        )
    assert w.desk.verify_data_points(sub.request_id, good, declaration=True) == "verified"


def test_data_point_failures_lock_and_unknown_people_fail(w: World) -> None:
    user(w, "lu@example.com", "Lu Chen")
    sub = w.desk.submit("access", contact={"email": "lu@example.com"}, region="US-CA", now=FRI)
    for _ in range(5):
        with pytest.raises(VerificationFailed):
            w.desk.verify_data_points(
                sub.request_id, {"user.name": "Someone Else", "phone_number": "+14155550100"}
            )
    with pytest.raises(VerificationLocked):
        w.desk.verify_data_points(sub.request_id, {"user.name": "Lu Chen", "phone_number": "+14155550100"})
    stranger = w.desk.submit("access", contact={"email": "nobody@example.com"}, region="US-CA", now=FRI)
    with pytest.raises(VerificationFailed):
        w.desk.verify_data_points(
            stranger.request_id, {"user.name": "Lu Chen", "phone_number": "+14155550100"}
        )


def test_signed_in_verification(w: World) -> None:
    sid = user(w, "mo@example.com", "Mo Diaz")
    other = user(w, "ned@example.com", "Ned Fox")
    sub = w.desk.submit("rectify", contact={"email": "mo@example.com"}, region="DE", now=FRI)
    assert sub.verification is Verification.signed_in and not sub.code_sent
    with pytest.raises(VerificationFailed):
        w.desk.verify_signed_in(sub.request_id, other)
    assert w.desk.status(sub.request_id).status == "received"
    with pytest.raises(RequestInputError, match="subject_id"):
        w.desk.verify_signed_in(sub.request_id, "0" * 32)
    assert w.desk.verify_signed_in(sub.request_id, sid) == "verified"
    assert w.desk.status(sub.request_id).events[-1].detail == {"method": "signed_in"}


# ------------------------------------------------------------------------- decisions
def test_full_run_and_invalid_transitions(w: World) -> None:
    sub = w.desk.submit("erase", contact={"email": "ola@example.com"}, region="DE", now=FRI)
    rid = sub.request_id
    n = counts(w)
    for call, message in [
        (lambda: w.desk.start(rid), "cannot run a request that is received (verify it first)"),
        (lambda: w.desk.approve(rid, "console:alice"), "cannot approve a request that is received"),
        (lambda: w.desk.finish(rid), "cannot finish a request that is received"),
        (lambda: w.desk.forget_contact(rid), "still needed"),
    ]:
        with pytest.raises(InvalidTransition, match=re.escape(message)):
            call()
    assert counts(w) == n
    with pytest.raises(UnknownRequest):
        w.desk.approve("f" * 32, "console:alice")

    w.desk.verify_code(rid, w.code(rid), now=FRI + timedelta(minutes=1))
    assert w.desk.approve(rid, "console:alice", now=FRI + timedelta(hours=1)) == "approved"
    assert w.desk.start(rid, job_id="a" * 32, now=FRI + timedelta(hours=2)) == "running"
    assert (
        w.desk.finish(
            rid, partial=True, detail={"exempted": ["billing.invoices"]}, now=FRI + timedelta(days=3)
        )
        == "partial"
    )
    view = w.desk.status(rid)
    assert view.status == "partial" and view.job_id == "a" * 32 and view.closed_at == FRI + timedelta(days=3)
    assert w.kinds(rid) == ["received", "code_sent", "verified", "approved", "running", "partial", "mailed"]
    assert view.events[5].detail == {"exempted": ["billing.invoices"]}
    done = w.outbox.outbox_messages()[-1]
    assert "partly done" in done.subject and STATUS_URL.format(request_id=rid) in done.text

    for call, message in [
        (lambda: w.desk.deny(rid, "excessive", "console:alice"), "cannot deny a request that is partial"),
        (lambda: w.desk.start(rid), "cannot run a request that is partial"),
        (lambda: w.desk.extend(rid, "More", "console:alice"), "cannot extend a request that is partial"),
    ]:
        with pytest.raises(InvalidTransition, match=message):
            call()
    # A batch with one request not ready starts none.
    a = w.desk.submit("opt_out_of_marketing", contact={"email": "p1@example.com"}, region="DE", now=FRI)
    b = w.desk.submit("erase", contact={"email": "p2@example.com"}, region="DE", now=FRI)
    with pytest.raises(InvalidTransition, match=b.request_id):
        w.desk.start_many([a.request_id, b.request_id], job_id="b" * 32)
    assert w.desk.status(a.request_id).status == "verified"
    # A running request is not denied by a person halfway through (its job may have erased
    # data already), but its job may end it denied (it found a legal hold on everything).
    w.desk.start(a.request_id)
    with pytest.raises(InvalidTransition, match="running: its job decides"):
        w.desk.deny(a.request_id, "excessive", "console:alice")
    assert w.desk.status(a.request_id).status == "running"
    assert (
        w.desk.deny(a.request_id, "legal_exemption", "system", note="Legal hold", from_job=True) == "denied"
    )


def test_denial_needs_a_reason(w: World) -> None:
    sub = w.desk.submit("erase", contact={"email": "pat@example.com"}, region="DE", now=FRI)
    rid = sub.request_id
    n = counts(w)
    with pytest.raises(RequestInputError, match="reason: required"):
        w.desk.deny(rid, "", "console:alice")
    with pytest.raises(RequestInputError, match="reason 'because': one of identity_not_verified"):
        w.desk.deny(rid, "because", "console:alice")
    with pytest.raises(RequestInputError, match="note: required"):
        w.desk.deny(rid, "other", "console:alice")
    with pytest.raises(RequestInputError, match="phone number"):
        w.desk.deny(rid, "legal_exemption", "console:alice", note="call +1 415 555 0132")
    assert counts(w) == n
    assert (
        w.desk.deny(rid, "legal_exemption", "console:alice", note="Invoices are kept 10 years", now=FRI)
        == "denied"
    )
    view = w.desk.status(rid)
    assert view.status == "denied" and view.closed_at == FRI
    assert view.events[-2].detail == {"reason": "legal_exemption", "note": "Invoices are kept 10 years"}
    mail = w.outbox.outbox_messages()[-1]
    assert "We cannot act on your request to delete your data" in mail.subject
    assert "legal exemption" in mail.text and "Invoices are kept 10 years" in mail.text
    assert "supervisory authority" in mail.text  # the eu jurisdiction names where to complain
    with pytest.raises(InvalidTransition, match="cannot approve a request that is denied"):
        w.desk.approve(rid, "console:alice")


def test_child_report_needs_approval_before_deletion(w: World) -> None:
    child = user(w, "kid@example.com", "Kid Young")
    with pytest.raises(RequestInputError, match="a child report is an 'erase' request"):
        w.desk.submit(
            "access", contact={"email": "parent@example.com"}, region="DE", details={"child_report": True}
        )
    with pytest.raises(RequestInputError, match=r"details\.account"):
        w.desk.submit(
            "erase", contact={"email": "parent@example.com"}, region="DE", details={"child_report": True}
        )
    sub = w.desk.submit(
        "erase",
        contact={"email": "parent@example.com"},
        region="DE",
        details={"child_report": True, "account": {"email": "KID@example.com"}},
        now=FRI,
    )
    view = w.desk.status(sub.request_id)
    assert view.child_report and view.subject_id == child
    assert view.events[1].kind == "child_report"
    assert view.events[1].detail == {"on_discovery": "delete_account", "needs_approval": True}
    w.desk.verify_code(sub.request_id, w.code(sub.request_id), now=FRI)
    with pytest.raises(InvalidTransition, match="child report runs only once the privacy team approved it"):
        w.desk.start(sub.request_id)
    w.desk.approve(sub.request_id, "console:alice")
    assert w.desk.start(sub.request_id) == "running"


def test_queue_sorted_by_due_date_and_overdue(w: World) -> None:
    a = w.desk.submit("erase", contact={"email": "q1@example.com"}, region="US-CA", now=FRI)  # +45 days
    b = w.desk.submit("erase", contact={"email": "q2@example.com"}, region="DE", now=FRI)  # +1 month
    c = w.desk.submit(
        "opt_out_of_sale", contact={"email": "q3@example.com"}, region="US-CA", now=FRI
    )  # +15 bd
    assert [v.id for v in w.desk.queue()] == [c.request_id, b.request_id, a.request_id]
    assert [v.id for v in w.desk.queue(status="verified")] == [c.request_id]
    late = FRI + timedelta(days=40)
    overdue = w.desk.queue(overdue=True, now=late)
    assert [v.id for v in overdue] == [c.request_id, b.request_id] and all(v.overdue for v in overdue)
    assert [e.kind for e in overdue[0].events] == ["received", "verified", "acknowledged"]
    w.desk.start(c.request_id)
    w.desk.finish(c.request_id)
    assert [v.id for v in w.desk.queue(overdue=True, now=late)] == [b.request_id]
    with pytest.raises(RequestInputError, match="status lost: one of"):
        w.desk.queue(status="lost")


# ------------------------------------------------------------------- personal data at rest
def all_cells(engine: Engine, tables: list[str]) -> Iterator[tuple[str, str, object]]:
    with engine.connect() as conn:
        for name in tables:
            result = conn.execute(text(f'SELECT * FROM "{name}"'))
            cols = list(result.keys())
            for row in result:
                for col, cell in zip(cols, row, strict=True):
                    yield name, col, cell


def test_no_personal_data_in_clear(w: World) -> None:
    user(w, "quinn.secret@example.com", "Quinn Hidden", phone="+14155550177")
    subs = [
        w.desk.submit(
            "access",
            contact={"email": "quinn.secret@example.com"},
            region="US-CA",
            details={"message": "I am Quinn Hidden"},
            data_points={"user.name": "Quinn Hidden", "phone_number": "+14155550177"},
        ),
        w.desk.submit("erase", contact={"email": "quinn.secret@example.com"}, region="DE"),
        w.desk.submit("opt_out_of_sale", contact={"phone": "(415) 555-0177"}, region="US-CA"),
    ]
    w.desk.verify_data_points(subs[0].request_id)
    code = w.code(subs[1].request_id)
    w.desk.verify_code(subs[1].request_id, code)
    w.desk.deny(subs[1].request_id, "excessive", "console:alice")
    w.desk.contact(subs[0].request_id)
    needles = ["quinn.secret", "Quinn", "Hidden", "5550177", "555 0177", "555-0177", code]
    checked = 0
    for engine, tables in (
        (w.stores.data, ["requests", "request_events", "request_codes", "audit_log"]),
        (w.stores.keys, ["request_keys"]),
    ):
        for table, col, cell in all_cells(engine, tables):
            checked += 1
            blob = bytes(cell) if isinstance(cell, bytes | memoryview) else str(cell).encode()
            for needle in needles:
                assert needle.encode() not in blob, f"{needle!r} in clear in {table}.{col}"
    assert checked > 50
    # ... while the desk still knows how to reach them.
    assert w.desk.contact(subs[0].request_id) == {"email": "quinn.secret@example.com"}
    assert w.desk.contact(subs[2].request_id) == {"phone_number": "+14155550177"}
    assert w.desk.requester(subs[0].request_id).details == {"message": "I am Quinn Hidden"}


def test_forget_contact_shreds_the_key_and_keeps_metrics(w: World) -> None:
    sub = w.desk.submit("erase", contact={"email": "rae@example.com"}, region="DE", now=FRI)
    w.desk.verify_code(sub.request_id, w.code(sub.request_id), now=FRI)
    w.desk.start(sub.request_id, now=FRI)
    w.desk.finish(sub.request_id, now=FRI + timedelta(days=2))
    assert w.desk.contact(sub.request_id) == {"email": "rae@example.com"}
    w.desk.forget_contact(sub.request_id, actor="console:alice")
    with pytest.raises(ContactForgotten):
        w.desk.contact(sub.request_id)
    with w.stores.keys.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T.request_keys)).scalar_one() == 0
    view = w.desk.status(sub.request_id)
    assert view.status == "done" and view.events[-1].kind == "contact_forgotten"
    assert w.desk.metrics(2026) == [
        {"type": "erase", "received": 1, "done": 1, "partial": 0, "denied": 0, "open": 0, "median_days": 2.0}
    ]
    # The same person may ask again: the forgotten request links to nobody.
    again = w.desk.submit("erase", contact={"email": "rae@example.com"}, region="DE")
    assert again.duplicate_of is None
    n = counts(w)
    w.desk.forget_contact(sub.request_id)  # idempotent
    assert counts(w) == n


def test_forget_expired_after_the_record_retention(w: World) -> None:
    old = w.desk.submit("opt_out_of_sale", contact={"email": "sam@example.com"}, region="US-CA", now=FRI)
    new = w.desk.submit("opt_out_of_sale", contact={"email": "tia@example.com"}, region="US-CA", now=FRI)
    opened = w.desk.submit("erase", contact={"email": "uma@example.com"}, region="DE", now=FRI)
    w.desk.start(old.request_id, now=FRI)
    w.desk.finish(old.request_id, now=FRI)
    w.desk.start(new.request_id, now=FRI)
    w.desk.finish(new.request_id, now=FRI + timedelta(days=400))
    at = datetime(2028, 1, 3, tzinfo=UTC)  # 24 months after the first closed, not the second
    assert w.desk.forget_expired(now=at) == 1
    with pytest.raises(ContactForgotten):
        w.desk.contact(old.request_id)
    assert w.desk.contact(new.request_id) == {"email": "tia@example.com"}
    assert w.desk.contact(opened.request_id) == {"email": "uma@example.com"}
    assert w.desk.forget_expired(now=at) == 0


def test_metrics_per_request_type(w: World) -> None:
    def closed(kind: str, region: str, email: str, received: datetime, days: float, outcome: str) -> str:
        sub = w.desk.submit(kind, contact={"email": email}, region=region, now=received)
        rid = sub.request_id
        with w.stores.data.begin() as conn:  # verified by whatever means: not under test here
            conn.execute(update(T.requests).where(T.requests.c.id == rid).values(status="verified"))
        end = received + timedelta(days=days)
        if outcome == "denied":
            w.desk.deny(rid, "identity_not_verified", "console:alice", now=end)
        elif outcome != "open":
            w.desk.start(rid, now=received)
            w.desk.finish(rid, partial=outcome == "partial", now=end)
        return rid

    t = datetime(2026, 3, 2, tzinfo=UTC)
    closed("access", "US-CA", "a1@example.com", t, 10, "done")
    closed("access", "US-CA", "a2@example.com", t, 20, "partial")
    closed("access", "US-CA", "a3@example.com", t, 41, "denied")
    closed("access", "DE", "a4@example.com", t, 3, "done")
    closed("erase", "US-CA", "e1@example.com", t, 5, "done")
    closed("erase", "US-CA", "e2@example.com", t, 0, "open")
    closed("opt_out_of_sale", "US-CA", "o1@example.com", t, 1.5, "done")
    closed("access", "US-CA", "old@example.com", datetime(2025, 12, 31, 23, 0, tzinfo=UTC), 4, "done")

    assert w.desk.metrics(2026, jurisdiction="us-ca") == [
        {
            "type": "access",
            "received": 3,
            "done": 1,
            "partial": 1,
            "denied": 1,
            "open": 0,
            "median_days": 20.0,
        },
        {"type": "erase", "received": 2, "done": 1, "partial": 0, "denied": 0, "open": 1, "median_days": 5.0},
        {
            "type": "opt_out_of_sale",
            "received": 1,
            "done": 1,
            "partial": 0,
            "denied": 0,
            "open": 0,
            "median_days": 1.5,
        },
    ]
    everywhere = {m["type"]: m for m in w.desk.metrics(2026)}
    assert everywhere["access"]["received"] == 4 and everywhere["access"]["median_days"] == 15.0
    assert w.desk.metrics(2025) == [
        {"type": "access", "received": 1, "done": 1, "partial": 0, "denied": 0, "open": 0, "median_days": 4.0}
    ]
    assert w.desk.metrics(2024) == []


# ------------------------------------------------------------------------------- mails
def test_a_mail_failure_does_not_lose_the_request(stores: Stores, cp: CompiledPolicy, tmp_path: Path) -> None:
    w = make_world(stores, cp, tmp_path)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w.desk.mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}?timeout=2")
    sub = w.desk.submit("erase", contact={"email": "vic@example.com"}, region="DE", now=FRI)
    assert not sub.code_sent
    view = w.desk.status(sub.request_id)
    assert view.status == "received"
    assert [e.kind for e in view.events] == ["received", "code_sent", "mail_failed"]
    assert view.events[-1].detail == {"template": "code", "error": "MailError"}
    w.desk.mailer = w.outbox  # the server is back: a new code goes out
    assert w.desk.resend_code(sub.request_id, now=FRI + timedelta(minutes=1))
    assert (
        w.desk.verify_code(sub.request_id, w.code(sub.request_id), now=FRI + timedelta(minutes=2))
        == "verified"
    )


def test_from_fiduciary(stores: Stores, tmp_path: Path) -> None:
    from fiduciary.core import Fiduciary

    with Fiduciary.open(
        ROOT / "examples/dataplatform/policy.yaml",
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    ) as fid:
        outbox = OutboxMailer(tmp_path)
        desk = RequestDesk.from_fiduciary(fid, outbox, status_url=STATUS_URL)
        sid = fid.sign_up(
            "user",
            identities={"email": "wu@example.com"},
            attributes={
                "user.contact.email": "wu@example.com",
                "user.name": "Wu",
                "user.authorization.credentials": "x",
            },
            activity="registration",
            region="DE",
            age=30,
        )
        sub = desk.submit("erase", contact={"email": "wu@example.com"}, region="DE")
        assert desk.status(sub.request_id).subject_id == sid
        (mail,) = outbox.outbox_messages()
        assert mail.headers["From"] == "Ploomber <contact@ploomber.io>"
