"""The consent ledger, signals and unsubscribe tokens, on SQLite and PostgreSQL.

Each test checks a promise: LAW-8 (provable consent, withdrawal as easy as giving),
LAW-12 (GPC opt-out at once), LAW-7 (objection), LAW-4 (restriction), LAW-14 (one-click
unsubscribe without lookup), and the ledger's own rules (state derived and rebuildable,
bad input changes nothing, no full IP stored).
"""

from __future__ import annotations

import hashlib
import inspect
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, delete, event, func, insert, select

from fiduciary.consent import (
    BadToken,
    ConsentError,
    ConsentLedger,
    EventKind,
    NewEvent,
    UnknownEvent,
    UnknownSubject,
    dnt,
    gpc,
    make_unsubscribe_token,
    read_unsubscribe_token,
    truncate_ip,
)
from fiduciary.decide import Decider, Reason
from fiduciary.policy import CompiledPolicy, compile_policy, load_policy
from fiduciary.store import tables
from fiduciary.vault.keyring import Keyring

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
V = "2022-07-02"  # dataplatform's policy version
NOTICE = "We send a monthly newsletter. You can unsubscribe at any time."


@pytest.fixture(scope="module")
def cp() -> CompiledPolicy:
    return compile_policy(load_policy(EXAMPLES / "dataplatform" / "policy.yaml"))


@pytest.fixture(scope="module")
def social() -> CompiledPolicy:
    return compile_policy(load_policy(EXAMPLES / "social" / "policy.yaml"))


def add_subjects(engine: Engine, *specs: tuple[str, str, str], policy_version: str = V) -> None:
    """Subjects rows as the vault would create them: (id, kind, jurisdiction)."""
    with engine.begin() as conn:
        conn.execute(
            insert(tables.subjects),
            [
                {"id": i, "kind": k, "jurisdiction": j, "policy_version": policy_version, "created_at": T0}
                for i, k, j in specs
            ],
        )


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(tables.consent_events)).scalar_one()
        state = conn.execute(select(func.count()).select_from(tables.consent_state)).scalar_one()
    return int(events), int(state)


def state_rows(engine: Engine) -> list[tuple[Any, ...]]:
    cs = tables.consent_state
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(cs).order_by(cs.c.subject_id, cs.c.scope))]


@pytest.fixture
def ledger(stores: Any, cp: CompiledPolicy) -> ConsentLedger:
    add_subjects(stores.data, ("eu1", "user", "eu"), ("ca1", "user", "us-ca"), ("row1", "user", "row"))
    return ConsentLedger(stores.data, cp)


KW: dict[str, Any] = {"channel": "web_form", "policy_version": V}


# --------------------------------------------------------------------------- LAW-8


def test_proof_has_what_law8_needs(ledger: ConsentLedger, stores: Any) -> None:
    expires = T0 + timedelta(days=365)
    event_id = ledger.give(
        "eu1",
        "newsletter",
        channel="web_form",
        policy_version=V,
        method="checkbox",
        notice_text=NOTICE,
        language="de",
        ip="203.0.113.77",
        expires_at=expires,
        actor="subject",
        now=T0,
    )
    proof = ledger.proof(event_id)
    assert proof["subject_id"] == "eu1"  # who
    assert proof["at"] == T0.isoformat()  # when
    assert proof["purpose"] == "newsletter"  # what
    assert proof["purpose_name"] == ledger.cp.purposes["newsletter"].name
    assert proof["notice_hash"] == hashlib.sha256(NOTICE.encode()).hexdigest()
    assert proof["policy_version"] == V
    assert proof["language"] == "de"
    assert (proof["method"], proof["channel"]) == ("checkbox", "web_form")  # how
    assert proof["ip"] == "203.0.113.0/24"
    assert proof["expires_at"] == expires.isoformat()
    assert proof["kind"] == "consent_given"

    # The full address and the notice text are nowhere in the ledger's tables.
    with stores.data.connect() as conn:
        stored = [conn.execute(select(t)).all() for t in (tables.consent_events, tables.consent_state)]
    flat = repr(stored)
    assert "203.0.113.77" not in flat
    assert "monthly newsletter" not in flat

    assert ledger.proofs("eu1") == [proof]
    [ev] = ledger.events("eu1")
    assert ev.id == event_id and ev.kind is EventKind.consent_given and ev.at == T0
    with pytest.raises(UnknownEvent, match="no consent event with id 999999"):
        ledger.proof(999999)


def test_ipv6_is_kept_to_its_48(ledger: ConsentLedger) -> None:
    event_id = ledger.give("eu1", "newsletter", **KW, ip="2001:db8:85a3:8d3:1319:8a2e:370:7348")
    assert ledger.proof(event_id)["ip"] == "2001:db8:85a3::/48"


def test_withdrawal_is_as_easy_as_giving(ledger: ConsentLedger, cp: CompiledPolicy) -> None:
    # Same call shape: the same parameters, nothing extra to withdraw.
    assert inspect.signature(ledger.give).parameters == inspect.signature(ledger.withdraw).parameters
    decider = Decider(cp)
    # ad_targeting needs opt-in consent in the EU.
    assert decider.purpose_reason(ledger.state("eu1"), "ad_targeting") is Reason.no_consent
    ledger.give("eu1", "ad_targeting", **KW)
    assert decider.purpose_reason(ledger.state("eu1"), "ad_targeting") is None
    ledger.withdraw("eu1", "ad_targeting", **KW)
    state = ledger.state("eu1")
    assert state.consents == {"ad_targeting": "withdrawn"}
    assert decider.decide(state, "ad_targeting", ["user.behavior"]).refused == {
        "user.behavior": Reason.withdrawn
    }
    assert [e.kind for e in ledger.events("eu1")] == [EventKind.consent_given, EventKind.consent_withdrawn]


# --------------------------------------------------------------------------- LAW-12


def test_gpc_opt_out_takes_effect_at_once(ledger: ConsentLedger, cp: CompiledPolicy) -> None:
    sale = "sale_of_additional_information"
    assert cp.purposes[sale].sale
    decider = Decider(cp)
    category = "user.behavior.browsing_history"
    before = decider.decide(ledger.state("ca1"), sale, [category], "advertising_partners")
    assert before.ok  # California: opt-out mode, so selling is allowed until the person says no

    headers = {"sec-gpc": "1", "User-Agent": "x"}
    assert gpc(headers)
    event_id = ledger.opt_out_of_sale("ca1", channel="gpc_signal", policy_version=V)

    state = ledger.state("ca1")  # the very next read sees it: no batch, no delay
    assert state.sale_opt_out
    after = decider.decide(state, sale, [category], "advertising_partners")
    assert after.refused == {category: Reason.sale_opt_out}
    assert decider.purpose_reason(state, sale) is Reason.sale_opt_out
    proof = ledger.proof(event_id)
    assert (proof["channel"], proof["method"], proof["scope"]) == ("gpc_signal", "signal", "sale")
    # Opting back in is one call too.
    ledger.opt_in_to_sale("ca1", channel="privacy_center", policy_version=V)
    assert not ledger.state("ca1").sale_opt_out


# --------------------------------------------------------------------------- LAW-7 / LAW-4


def test_objection_stops_legitimate_interest_and_direct_marketing(
    ledger: ConsentLedger, cp: CompiledPolicy
) -> None:
    decider = Decider(cp)
    ledger.give("eu1", "newsletter", **KW)
    state = ledger.state("eu1")
    for purpose in ("usage_analytics", "improve_service", "newsletter", "provide_service", "support"):
        assert decider.purpose_reason(state, purpose) is None, purpose

    # One purpose: only that one stops.
    ledger.object("eu1", "usage_analytics", **KW)
    state = ledger.state("eu1")
    assert decider.purpose_reason(state, "usage_analytics") is Reason.objection
    assert decider.purpose_reason(state, "improve_service") is None

    # Everything objectionable: legitimate interests and direct marketing, even with consent.
    ledger.object("eu1", **KW)
    state = ledger.state("eu1")
    assert state.objections == {"usage_analytics", "*"}
    assert state.consents["newsletter"] == "given"
    for purpose in ("usage_analytics", "improve_service", "personalization", "newsletter"):
        assert decider.purpose_reason(state, purpose) is Reason.objection, purpose
    # The contract and essential purposes go on.
    for purpose in ("provide_service", "support", "security"):
        assert decider.purpose_reason(state, purpose) is None, purpose

    ledger.withdraw_objection("eu1", **KW)
    ledger.withdraw_objection("eu1", "usage_analytics", **KW)
    state = ledger.state("eu1")
    assert state.objections == frozenset()
    assert decider.purpose_reason(state, "usage_analytics") is None


def test_restriction_blocks_all_but_legal_obligations(ledger: ConsentLedger, cp: CompiledPolicy) -> None:
    decider = Decider(cp)
    ledger.restrict("eu1", **KW)
    state = ledger.state("eu1")
    assert state.restricted
    for purpose in ("usage_analytics", "provide_service", "support"):
        assert decider.purpose_reason(state, purpose) is Reason.restricted, purpose
    assert decider.purpose_reason(state, "legal_obligations") is None
    ledger.lift_restriction("eu1", **KW)
    assert decider.purpose_reason(ledger.state("eu1"), "provide_service") is None


# --------------------------------------------------------------------------- state


def test_state_reads_every_choice_in_two_selects(ledger: ConsentLedger, stores: Any) -> None:
    ledger.opt_out_of_recipient("row1", "advertising_partners", **KW)
    ledger.set_setting("row1", "linked:integrations", "true", **KW)
    ledger.set_setting("row1", "cache_allowed", "yes", **KW)
    ledger.accept_version("row1", "*", 3, **KW)
    ledger.accept_version("row1", "newsletter", 2, **KW)
    ledger.give("row1", "newsletter", **KW)
    ledger.object("row1", "newsletter", **KW)  # same purpose as a consent: both kept

    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(stores.data, "before_cursor_execute", count)
    try:
        found = ledger.states(["row1", "eu1", "nobody"], {V: 7})
    finally:
        event.remove(stores.data, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2
    assert set(found) == {"row1", "eu1"}  # unknown ids are left out
    s = found["row1"]
    assert (s.kind, s.jurisdiction, s.status, s.age_status) == ("user", "row", "active", "unknown")
    assert s.recipient_opt_outs == {"advertising_partners"}
    assert s.settings == {"linked:integrations": "true", "cache_allowed": "yes"}
    assert s.accepted == {"*": 3, "newsletter": 2}
    assert s.consents == {"newsletter": "given"}
    assert s.objections == {"newsletter"}
    assert s.data_since == 7
    assert found["eu1"].consents == {} and not found["eu1"].restricted
    with pytest.raises(UnknownSubject, match="unknown subject 'nobody'"):
        ledger.state("nobody")


def test_visibility_setting_is_checked_against_the_policy(stores: Any, social: CompiledPolicy) -> None:
    add_subjects(stores.data, ("m1", "member", "eu"), policy_version=social.version)
    ledger = ConsentLedger(stores.data, social)
    kw: dict[str, Any] = {"channel": "account_settings", "policy_version": social.version}
    ledger.set_setting("m1", "visibility:user.contact.address.city", "members", **kw)
    assert ledger.state("m1").settings == {"visibility:user.contact.address.city": "members"}
    with pytest.raises(ConsentError, match="audience 'other_users' is not offered"):
        ledger.set_setting("m1", "visibility:user.contact.address.city", "other_users", **kw)
    with pytest.raises(ConsentError, match="fixed by the policy"):
        ledger.set_setting("m1", "visibility:user.account.username", "self", **kw)


def test_rebuild_gives_exactly_the_incremental_state(ledger: ConsentLedger, stores: Any) -> None:
    add_subjects(stores.data, *((f"b{i}", "user", "eu") for i in range(30)))
    kinds = [
        ("consent_given", "newsletter", None),
        ("consent_withdrawn", "newsletter", None),
        ("objection", "*", None),
        ("objection", "usage_analytics", None),
        ("objection_withdrawn", "*", None),
        ("restriction", "*", None),
        ("sale_opt_out", "sale", None),
        ("recipient_opt_out", "advertising_partners", None),
        ("version_accepted", "*", "4"),
        ("setting", "cache_allowed", "true"),
        ("consent_given", "ad_targeting", None),
    ]
    batch = [
        NewEvent(
            subject_id=f"b{i % 30}",
            kind=kinds[(i * 7) % len(kinds)][0],
            scope=kinds[(i * 7) % len(kinds)][1],
            value=kinds[(i * 7) % len(kinds)][2],
            channel="import",
            policy_version=V,
            # Times go back and forth, with ties, so "latest" is tested on (at, id).
            at=T0 + timedelta(minutes=(i * 13) % 17),
        )
        for i in range(400)
    ]
    ledger.record_many(batch[:250])
    for e in batch[250:300]:  # one transaction each
        ledger.record(
            e.subject_id, e.kind, e.scope, value=e.value, channel=e.channel, policy_version=V, now=e.at
        )
    ledger.record_many(batch[300:])

    # An older event imported after a newer one does not override it.
    ledger.withdraw("eu1", "newsletter", **KW, now=T0 + timedelta(days=2))
    ledger.give("eu1", "newsletter", channel="import", policy_version=V, now=T0)
    assert ledger.state("eu1").consents["newsletter"] == "withdrawn"

    incremental = state_rows(stores.data)
    assert len(incremental) > 30 * 3
    assert ledger.rebuild() == len(incremental)
    assert state_rows(stores.data) == incremental

    with stores.data.begin() as conn:
        conn.execute(delete(tables.consent_state))
    assert state_rows(stores.data) == []
    assert ledger.rebuild() == len(incremental)
    assert state_rows(stores.data) == incremental

    # Some subjects only: the others are left untouched.
    with stores.data.begin() as conn:
        conn.execute(delete(tables.consent_state).where(tables.consent_state.c.subject_id.in_(["b1", "b2"])))
    written = ledger.rebuild(["b1", "b2"])
    assert written == len([r for r in incremental if r[0] in ("b1", "b2")]) > 0
    assert state_rows(stores.data) == incremental


def test_concurrent_appends_keep_the_latest(ledger: ConsentLedger, stores: Any) -> None:
    """Writers racing on the same slots (PostgreSQL interleaves their ids) still leave the
    state a rebuild would give."""
    subjects = [f"c{i}" for i in range(4)]
    add_subjects(stores.data, *((sid, "user", "eu") for sid in subjects))
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for b in range(6):
                ledger.record_many(
                    NewEvent(
                        subject_id=subjects[(w + i) % 4],
                        kind="consent_given" if (w + b + i) % 2 else "consent_withdrawn",
                        scope="newsletter",
                        channel="api",
                        policy_version=V,
                        at=T0 + timedelta(seconds=(w * 31 + b * 7 + i * 3) % 23),
                    )
                    for i in range(40)
                )
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counts(stores.data)[0] == 4 * 6 * 40
    incremental = state_rows(stores.data)
    ledger.rebuild()
    assert state_rows(stores.data) == incremental


EVENT = st.sampled_from(
    [
        ("consent_given", "newsletter", None),
        ("consent_withdrawn", "newsletter", None),
        ("consent_given", "ad_targeting", None),
        ("objection", "*", None),
        ("objection_withdrawn", "*", None),
        ("objection", "personalization", None),
        ("restriction", "*", None),
        ("restriction_lifted", "*", None),
        ("sale_opt_out", "sale", None),
        ("sale_opt_in", "sale", None),
        ("recipient_opt_out", "advertising_partners", None),
        ("recipient_opt_in", "advertising_partners", None),
        ("version_accepted", "*", "2"),
        ("version_accepted", "*", "5"),
        ("setting", "cache_allowed", "true"),
        ("setting", "cache_allowed", "false"),
    ]
)


def expected_state(events: list[tuple[int, str, str, str | None, int]]) -> dict[str, Any]:
    """A plain-Python reading of the rules: the latest (at, order) event per family+scope."""
    latest: dict[tuple[str, str], tuple[int, int, str, str | None]] = {}
    for order, (_, kind, scope, value, minute) in enumerate(events):
        # Opposites replace each other: given/withdrawn, objection/objection_withdrawn ...
        key = (kind.split("_")[0], scope)
        if key not in latest or (minute, order) > latest[key][:2]:
            latest[key] = (minute, order, kind, value)
    out: dict[str, Any] = {"consents": {}, "objections": set(), "restricted": False, "sale": False}
    out.update({"recipients": set(), "settings": {}, "accepted": {}})
    for (_, scope), (_, _, kind, value) in latest.items():
        if kind.startswith("consent_"):
            out["consents"][scope] = kind.removeprefix("consent_")
        elif kind == "objection":
            out["objections"].add(scope)
        elif kind == "restriction":
            out["restricted"] = True
        elif kind == "sale_opt_out":
            out["sale"] = True
        elif kind == "recipient_opt_out":
            out["recipients"].add(scope)
        elif kind == "setting":
            out["settings"][scope] = value
        elif kind == "version_accepted":
            out["accepted"][scope] = int(value or 0)
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(
        st.tuples(st.integers(0, 1), EVENT, st.integers(0, 5), st.booleans()).map(
            lambda t: (t[0], t[1][0], t[1][1], t[1][2], t[2], t[3])
        ),
        max_size=25,
    )
)
def test_state_follows_the_rules_for_any_history(
    ledger: ConsentLedger, stores: Any, events: list[tuple[int, str, str, str | None, int, bool]]
) -> None:
    with stores.data.begin() as conn:
        conn.execute(delete(tables.consent_events))
        conn.execute(delete(tables.consent_state))
    subjects = ["eu1", "ca1"]
    # Some events one per transaction, the rest in batches: both paths must agree.
    batch: list[NewEvent] = []
    for who, kind, scope, value, minute, alone in events:
        e = NewEvent(
            subject_id=subjects[who],
            kind=kind,
            scope=scope,
            value=value,
            channel="api",
            policy_version=V,
            at=T0 + timedelta(minutes=minute),
        )
        if alone:
            ledger.record_many(batch)
            batch = []
            ledger.record(
                e.subject_id, e.kind, e.scope, value=value, channel="api", policy_version=V, now=e.at
            )
        else:
            batch.append(e)
    ledger.record_many(batch)

    found = ledger.states(subjects, now=T0)
    for who, sid in enumerate(subjects):
        want = expected_state([(w, k, sc, v, m) for w, k, sc, v, m, _ in events if w == who])
        got = found[sid]
        assert dict(got.consents) == want["consents"]
        assert got.objections == want["objections"]
        assert (got.restricted, got.sale_opt_out) == (want["restricted"], want["sale"])
        assert got.recipient_opt_outs == want["recipients"]
        assert dict(got.settings) == want["settings"]
        assert dict(got.accepted) == want["accepted"]
    incremental = state_rows(stores.data)
    ledger.rebuild()
    assert state_rows(stores.data) == incremental


def test_expiry(ledger: ConsentLedger, cp: CompiledPolicy) -> None:
    decider = Decider(cp)
    ledger.give("eu1", "ad_targeting", **KW, expires_at=T0 + timedelta(days=30), now=T0)
    ledger.give("eu1", "newsletter", **KW, now=T0)  # no expiry
    assert decider.purpose_reason(ledger.state("eu1", now=T0 + timedelta(days=29)), "ad_targeting") is None
    # Past the expiry the state says so at once, before expire_due has run.
    late = ledger.state("eu1", now=T0 + timedelta(days=31))
    assert late.consents == {"ad_targeting": "expired", "newsletter": "given"}
    assert decider.purpose_reason(late, "ad_targeting") is Reason.expired

    assert ledger.expire_due(T0 + timedelta(days=29)) == 0
    assert ledger.expire_due(T0 + timedelta(days=31)) == 1
    assert ledger.expire_due(T0 + timedelta(days=32)) == 0  # idempotent
    last = ledger.events("eu1")[-1]
    assert (last.kind, last.scope, last.channel) == (EventKind.consent_expired, "ad_targeting", "system")
    assert last.expires_at == T0 + timedelta(days=30)
    assert ledger.state("eu1").consents == {"ad_targeting": "expired", "newsletter": "given"}
    # Renewing is an ordinary consent.
    ledger.give("eu1", "ad_targeting", **KW)
    assert ledger.state("eu1").consents["ad_targeting"] == "given"


def test_times_in_any_zone_are_stored_as_utc(ledger: ConsentLedger) -> None:
    paris = timezone(timedelta(hours=1))
    event_id = ledger.give("eu1", "newsletter", **KW, now=datetime(2024, 3, 1, 13, 0, tzinfo=paris))
    assert ledger.proof(event_id)["at"] == T0.isoformat()


# --------------------------------------------------------------------------- bad input


BAD: list[tuple[str, Callable[[ConsentLedger], object], str]] = [
    (
        "unknown purpose",
        lambda lg: lg.give("eu1", "newsleter", **KW),
        r"unknown purpose 'newsleter'.*'newsletter'",
    ),
    (
        "bad channel",
        lambda lg: lg.give("eu1", "newsletter", channel="fax", policy_version=V),
        "unknown channel",
    ),
    ("objection to contract", lambda lg: lg.object("eu1", "account", **KW), r"'account' \(basis contract\)"),
    (
        "unknown recipient",
        lambda lg: lg.opt_out_of_recipient("eu1", "acme", **KW),
        "unknown recipient 'acme'",
    ),
    ("unknown subject", lambda lg: lg.give("ghost", "newsletter", **KW), "unknown subject 'ghost'"),
    ("garbage ip", lambda lg: lg.give("eu1", "newsletter", **KW, ip="1.2.3"), "not an IP address"),
    ("naive time", lambda lg: lg.give("eu1", "newsletter", **KW, now=datetime(2024, 1, 1)), "timezone-aware"),
    ("unknown kind", lambda lg: lg.record("eu1", "consent_maybe", "newsletter", **KW), "unknown event kind"),
    (
        "value on consent",
        lambda lg: lg.record("eu1", "consent_given", "newsletter", value="x", **KW),
        "value",
    ),
    ("restriction scope", lambda lg: lg.record("eu1", "restriction", "newsletter", **KW), "scope is '\\*'"),
    ("expiry on objection", lambda lg: lg.object("eu1", **KW, expires_at=T0), "consent_given only"),
    (
        "expiry before event",
        lambda lg: lg.give("eu1", "newsletter", **KW, expires_at=T0, now=T0),
        "not after",
    ),
    ("free-text setting", lambda lg: lg.set_setting("eu1", "nickname", "Jane Doe", **KW), "not free text"),
    (
        "version not a number",
        lambda lg: lg.record("eu1", "version_accepted", "*", value="v2", **KW),
        "positive",
    ),
    (
        "notice twice",
        lambda lg: lg.give("eu1", "newsletter", **KW, notice_text="a", notice_hash="0" * 64),
        "not both",
    ),
    (
        "bad language",
        lambda lg: lg.give("eu1", "newsletter", **KW, language="english please"),
        "language tag",
    ),
]


def test_bad_input_is_refused_and_changes_nothing(ledger: ConsentLedger, stores: Any) -> None:
    # One database for all cases (a PostgreSQL database per case costs seconds each).
    ledger.give("eu1", "ad_targeting", **KW)
    before, rows = counts(stores.data), state_rows(stores.data)
    for case, call, message in BAD:
        try:
            call(ledger)
        except ConsentError as exc:
            assert re.search(message, str(exc)), f"{case}: {exc}"
        else:
            pytest.fail(f"{case}: accepted, a ConsentError was expected")
        assert counts(stores.data) == before, case
        assert state_rows(stores.data) == rows, case


def test_one_bad_event_refuses_the_whole_batch(ledger: ConsentLedger, stores: Any) -> None:
    good = NewEvent(subject_id="eu1", kind="consent_given", scope="newsletter", **KW)
    before = counts(stores.data)
    with pytest.raises(ConsentError, match=r"consent event #2 \(objection 'account'"):
        ledger.record_many([good, good, NewEvent(subject_id="eu1", kind="objection", scope="account", **KW)])
    with pytest.raises(UnknownSubject, match="#1: unknown subject 'ghost'"):
        ledger.record_many(
            [good, NewEvent(subject_id="ghost", kind="consent_given", scope="newsletter", **KW)]
        )
    assert counts(stores.data) == before
    assert ledger.record_many([]) == []
    ids = ledger.record_many([good, good])
    assert len(ids) == 2 and ids[0] < ids[1]
    assert counts(stores.data) == (before[0] + 2, before[1] + 1)


# --------------------------------------------------------------------------- audit


class FakeAudit:
    """Records entries with the connection they came with; can be made to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.entries: list[dict[str, Any]] = []
        self.conns: list[Connection] = []
        self.fail = fail

    def append(self, conn: Connection, **entry: Any) -> int:
        return self.append_many(conn, [entry])

    def append_many(self, conn: Connection, entries: list[dict[str, Any]]) -> int:
        if self.fail:
            raise RuntimeError("audit log unavailable")
        self.conns.append(conn)
        self.entries.extend(entries)
        return len(self.entries)


def test_each_event_is_audited_in_its_transaction(stores: Any, cp: CompiledPolicy) -> None:
    add_subjects(stores.data, ("eu1", "user", "eu"))
    audit = FakeAudit()
    ledger = ConsentLedger(stores.data, cp, audit=audit)
    event_id = ledger.give("eu1", "newsletter", **KW, ip="198.51.100.23", notice_text=NOTICE, actor="subject")
    ledger.record_many([NewEvent(subject_id="eu1", kind="objection", scope="*", **KW)] * 3)
    assert len(audit.entries) == 4
    first = audit.entries[0]
    assert first["action"] == "consent.consent_given" and first["purpose"] == "newsletter"
    assert first["subject_id"] == "eu1" and first["actor"] == "subject" and first["result"] == "ok"
    assert first["detail"]["event_id"] == event_id
    assert "198.51.100" not in repr(audit.entries)
    assert hashlib.sha256(NOTICE.encode()).hexdigest() not in repr(audit.entries)

    # The audit entry is part of the same transaction: if it fails, the event is gone too.
    before = counts(stores.data)
    failing = ConsentLedger(stores.data, cp, audit=FakeAudit(fail=True))
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        failing.give("eu1", "ad_targeting", **KW)
    assert counts(stores.data) == before


def test_with_the_real_audit_log(stores: Any, cp: CompiledPolicy) -> None:
    from fiduciary.audit import AuditLog

    add_subjects(stores.data, ("eu1", "user", "eu"))
    audit = AuditLog(stores.data, Keyring.generate())
    ledger = ConsentLedger(stores.data, cp, audit=audit)
    ledger.give("eu1", "newsletter", **KW, ip="198.51.100.23", notice_text=NOTICE)
    ledger.record_many([NewEvent(subject_id="eu1", kind="objection", scope="*", **KW)] * 3)
    al = tables.audit_log
    with stores.data.connect() as conn:
        rows = conn.execute(select(al).order_by(al.c.seq)).mappings().all()
    assert [r["action"] for r in rows] == ["consent.consent_given"] + ["consent.objection"] * 3
    assert {r["subject"] for r in rows} == {audit.pseudonym("eu1")}
    assert "eu1" not in repr(rows) and "198.51.100" not in repr(rows)
    assert audit.verify().ok


def test_caller_transaction_is_used(ledger: ConsentLedger, stores: Any) -> None:
    before = counts(stores.data)
    with pytest.raises(RuntimeError), stores.data.begin() as conn:
        ledger.give("eu1", "newsletter", **KW, conn=conn)
        seen = conn.execute(select(func.count()).select_from(tables.consent_events)).scalar_one()
        assert seen == before[0] + 1
        raise RuntimeError("the caller's work failed")
    assert counts(stores.data) == before


# --------------------------------------------------------------------------- LAW-14


@pytest.fixture(scope="module")
def ring() -> Keyring:
    return Keyring.generate()


def test_token_round_trip(ring: Keyring) -> None:
    token = make_unsubscribe_token(ring, "s_1a2b", "newsletter", now=T0)
    assert token.replace("-", "").replace("_", "").replace(".", "").isalnum()  # URL-safe as is
    assert read_unsubscribe_token(ring, token, now=T0) == ("s_1a2b", "newsletter")
    assert read_unsubscribe_token(ring, token, max_age=timedelta(days=60), now=T0 + timedelta(days=59))
    with pytest.raises(BadToken, match="expired"):
        read_unsubscribe_token(ring, token, max_age=timedelta(days=60), now=T0 + timedelta(days=61))
    with pytest.raises(BadToken, match="future"):
        read_unsubscribe_token(ring, token, now=T0 - timedelta(hours=1))


def test_token_tampering_is_detected(ring: Keyring) -> None:
    token = make_unsubscribe_token(ring, "s1", "newsletter", now=T0)
    payload, mac = token.split(".")
    for i in range(len(token)):
        if token[i] == ".":
            continue
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        with pytest.raises(BadToken):
            read_unsubscribe_token(ring, changed, now=T0)
    # Someone else's subject with our signature, and our token under another key.
    other = make_unsubscribe_token(ring, "s2", "newsletter", now=T0)
    with pytest.raises(BadToken, match="signature"):
        read_unsubscribe_token(ring, f"{other.split('.')[0]}.{mac}", now=T0)
    with pytest.raises(BadToken, match="signature"):
        read_unsubscribe_token(Keyring.generate(), token, now=T0)
    for garbage in ["", ".", "abc", "a.b.c", f"{payload}.", "é.é", f"{payload}.{mac}=", "x" * 600]:
        with pytest.raises(BadToken):
            read_unsubscribe_token(ring, garbage, now=T0)
    with pytest.raises(ValueError, match="subject id"):
        make_unsubscribe_token(ring, "a|b", "newsletter")


def test_unsubscribe_link_withdraws_without_lookup(
    ledger: ConsentLedger, ring: Keyring, cp: CompiledPolicy
) -> None:
    ledger.give("eu1", "newsletter", **KW, now=T0)
    token = make_unsubscribe_token(ring, "eu1", "newsletter", now=T0)
    before = len(ledger.events("eu1"))
    with pytest.raises(BadToken):
        ledger.unsubscribe(ring, token[:-2] + "AA", policy_version=V, now=T0)
    assert len(ledger.events("eu1")) == before
    event_id = ledger.unsubscribe(ring, token, policy_version=V, now=T0 + timedelta(days=3))
    proof = ledger.proof(event_id)
    assert (proof["kind"], proof["channel"], proof["method"]) == ("consent_withdrawn", "email_link", "link")
    assert Decider(cp).purpose_reason(ledger.state("eu1"), "newsletter") is Reason.withdrawn


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        (" 10.1.2.3 ", "10.1.2.0/24"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::/48"),
        ("::1", "::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),  # IPv4-mapped: truncated as IPv4
        ("fe80::1:2:3:4%eth0", "fe80::/48"),
        ("203.0.113.0/24", "203.0.113.0/24"),  # truncating twice changes nothing
        ("10.0.0.0/8", "10.0.0.0/8"),  # already coarser: kept
    ],
)
def test_truncate_ip(ip: str, expected: str) -> None:
    assert truncate_ip(ip) == expected


@pytest.mark.parametrize(
    "garbage", ["", "   ", "1.2.3", "256.1.1.1", "203.0.113.777", "not-an-ip", "1.2.3.4/33", "::g"]
)
def test_truncate_ip_refuses_garbage(garbage: str) -> None:
    with pytest.raises(ValueError, match="IP address") as caught:
        truncate_ip(garbage)
    # A mistyped address is still someone's address: the message does not repeat it.
    assert not garbage.strip() or garbage.strip() not in str(caught.value)


def test_gpc_and_dnt_headers() -> None:
    assert gpc({"Sec-GPC": "1"}) and gpc({"sec-gpc": " 1"}) and gpc({"SEC-GPC": "1"})
    assert not gpc({"Sec-GPC": "0"}) and not gpc({}) and not gpc({"DNT": "1"})
    assert dnt({"dnt": "1"}) and not dnt({"DNT": "0"}) and not dnt({"Sec-GPC": "1"})
