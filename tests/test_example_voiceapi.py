"""The Plivo example (examples/voiceapi): its policy keeps PLV-1..PLV-14 and LAW-1..LAW-14,
and its app database matches the datastore the policy describes."""

from __future__ import annotations

import tracemalloc
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from sqlalchemy import Connection, Engine, func, select

from fiduciary import CompiledPolicy
from fiduciary.examples import example_policy
from fiduciary.policy.load import LoadedPolicy
from fiduciary.policy.model import (
    Basis,
    ChildAction,
    ConsentMode,
    DataForm,
    GpcEffect,
    RequestType,
    Role,
    Verification,
)
from fiduciary.policy.period import Period
from tests.example_support import (
    assert_every_promise_kept,
    assert_foreign_keys_match_references,
    assert_schema_matches_datastore,
    assert_seed_deterministic,
    assert_set_based_inserts,
    example_fixtures,
    seeded_sqlite,
)

POLICY = example_policy("voiceapi")
DB = "voiceapi_db"


def P(text: str) -> Period:
    return Period.parse(text)


lp, cp, app = example_fixtures("voiceapi")


@pytest.fixture(scope="module")
def engine(app: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return seeded_sqlite(app, tmp_path_factory.mktemp("voiceapi") / "app.db")


def rows(engine: Engine, table: str, app: ModuleType) -> list[dict[str, Any]]:
    t = app.metadata.tables[table]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(t).order_by(t.c.id))]


# --------------------------------------------------------------------------- the file


def test_policy_loads_and_compiles_without_errors_or_warnings(
    lp: LoadedPolicy, cp: CompiledPolicy
) -> None:
    assert lp.warnings == []
    assert cp.version == "2012-03-30"  # the seed's "Last Updated: March 30, 2012"
    assert cp.effective == date(2012, 3, 30)
    assert {c.split(".")[0] for c in cp.collections} == {"voiceapi_db"}


def test_every_promise_is_named_on_an_element_and_none_is_a_gap() -> None:
    assert_every_promise_kept(POLICY, "PLV", 14)


def test_law9_record_of_processing_named_at_the_top() -> None:
    head = POLICY.read_text(encoding="utf-8").splitlines()[:12]
    assert any("keeps LAW-9" in line for line in head)


# --------------------------------------------------------------------------- PLV


def test_plv1_pii_collected_per_activity_with_mandatory_and_voluntary(
    lp: LoadedPolicy, cp: CompiledPolicy
) -> None:
    acts = lp.policy.activities
    seed_pii = {
        "user.name",
        "user.contact.address",
        "user.contact.email",
        "user.contact.phone_number",
        "user.demographic.date_of_birth",
        "user.financial.credit_card",
    }
    collected = {c for a in acts.values() for c in (*a.mandatory, *a.voluntary)}
    assert seed_pii <= collected
    # Each activity the person takes part in has mandatory fields to refuse it without.
    for key, act in acts.items():
        if act.source == "subject":
            assert act.mandatory, key
        assert not set(act.mandatory) & set(act.voluntary), key
    assert "user.financial.credit_card" in acts["enroll"].mandatory
    assert "user.demographic.date_of_birth" in acts["create_account"].voluntary
    assert {"user.name", "user.contact.email"} <= set(acts["create_account"].mandatory)
    for cat in seed_pii:
        assert lp.policy.category_info(cat).class_ == "Personally Identifiable Information"


def test_plv2_referral_contact_kept_only_to_send_the_invitation(
    lp: LoadedPolicy, cp: CompiledPolicy, engine: Engine, app: ModuleType
) -> None:
    friend = lp.policy.subjects["referral_contact"]
    assert friend.account is False
    invite = cp.purposes["referral_invitation"]
    assert invite.subjects == {"referral_contact"}
    assert set(invite.declared_categories) == {"user.name", "user.contact.email"}
    # No other purpose is about the friend.
    others = [k for k, p in cp.purposes.items() if "referral_contact" in p.subjects]
    assert others == ["referral_invitation"]
    rule = lp.policy.retention["referrals"]
    assert rule.trigger == "purpose_fulfilled" and rule.period is None
    assert rule.collections == ["voiceapi_db.referrals"]
    # The friend is found by their own email, without an account, and can have it removed.
    refs = cp.collections["voiceapi_db.referrals"]
    assert refs.identities["email"] == "friend_email"
    assert refs.delete_rows
    erase = cp.right("row", RequestType.erase)
    assert erase is not None and erase.verification == Verification.email_code
    account_emails = {r["email"] for r in rows(engine, "accounts", app)}
    friend_emails = {r["friend_email"] for r in rows(engine, "referrals", app)}
    assert friend_emails and not friend_emails & account_emails


def test_plv3_uses_include_call_history_contests_marketing_analytics_support_legal(
    cp: CompiledPolicy,
) -> None:
    p = cp.purposes
    assert "user.behavior.call_history" in p["call_history"].categories
    assert "user.content.private.contest_entry" in p["contests"].categories
    assert p["promotional_email"].use == "marketing.communications.email"
    assert p["analytics"].use.startswith("analytics")
    assert p["campaign_measurement"].use == "analytics.reporting.campaign_insights"
    assert p["support"].use == "essential.service.operations.support"
    assert p["legal"].use == "essential.legal_obligation"
    assert p["legal"].basis == Basis.legal_obligation
    assert "authorities" in cp.recipients_by_purpose["legal"]


def test_plv4_cache_only_when_allowed_notification_log_kept_logging_can_be_off(
    cp: CompiledPolicy, engine: Engine, app: ModuleType
) -> None:
    cache = cp.purposes["content_cache"]
    logging_ = cp.purposes["application_logging"]
    notes = cp.purposes["notification_log"]
    assert cache.condition == "setting:cache_allowed"
    assert logging_.condition == "setting:application_logging"
    assert notes.condition is None and notes.essential
    assert not cache.essential and not logging_.essential
    # The settings the conditions name are columns of the identity root.
    cols = set(app.metadata.tables["accounts"].c.keys())
    assert {"cache_allowed", "application_logging"} <= cols
    # And the seed data obeys them: no cache or application log without the setting,
    # while notification logs exist for accounts whose server forbids caching.
    accts = {r["id"]: r for r in rows(engine, "accounts", app)}
    cached = rows(engine, "cached_media", app)
    logs = rows(engine, "application_logs", app)
    notifications = rows(engine, "notification_logs", app)
    assert cached and logs
    assert all(accts[r["account_id"]]["cache_allowed"] for r in cached)
    assert all(accts[r["account_id"]]["application_logging"] for r in logs)
    assert any(not accts[r["account_id"]]["cache_allowed"] for r in notifications)


def test_plv5_non_pii_to_providers_and_advertisers_aggregated(
    lp: LoadedPolicy, cp: CompiledPolicy
) -> None:
    non_pii = {
        "user.behavior.browsing_history",
        "user.device.browser_type",
        "user.device.ip_address",
        "user.location.imprecise",
    }
    for cat in non_pii:
        info = lp.policy.category_info(cat)
        assert info.personal is False and info.class_ == "Non-Personally Identifiable Information"
    adv = cp.recipients["advertisers"]
    assert adv.source.role == Role.advertiser and adv.source.form == DataForm.aggregate
    assert cp.purposes["ad_measurement"].form == DataForm.aggregate
    # Whatever goes to advertisers is not personal by the policy's own classes.
    for key in ("advertisers", "ad_companies"):
        for cat in cp.recipients[key].categories:
            assert lp.policy.category_info(cat).personal is False, (key, cat)
    assert non_pii & cp.recipients["service_providers"].categories


def test_plv6_no_sale_and_pii_only_to_providers_successor_or_by_law(
    lp: LoadedPolicy, cp: CompiledPolicy
) -> None:
    assert not any(p.sale for p in cp.purposes.values())
    assert not any(r.source.sale for r in cp.recipients.values())
    allowed_roles = {Role.processor, Role.successor, Role.authority, Role.other_users, Role.public}
    for key, rec in cp.recipients.items():
        personal = {c for c in rec.categories if lp.policy.category_info(c).personal}
        if personal and rec.source.role not in allowed_roles:
            # Only apps the person chose themselves receive PII otherwise.
            assert rec.source.condition == "person_authorised", key
    assert cp.recipients["successor"].source.condition == "business_transfer"
    assert cp.recipients["successor"].source.bound_by_policy
    assert cp.recipients["authorities"].source.condition == "legal_demand"


def test_plv7_update_in_profile_delete_except_past_transactions_backups(
    lp: LoadedPolicy, cp: CompiledPolicy
) -> None:
    from fiduciary.policy.model import Channel

    for j in ("eu", "us-ca", "row"):
        rectify = cp.right(j, RequestType.rectify)
        assert rectify is not None and Channel.account_settings in rectify.channels, j
        assert cp.right(j, RequestType.erase) is not None, j
    ex = lp.policy.exemptions["past_transactions"]
    assert ex.basis == "legal_obligation" and RequestType.erase in ex.suspends
    assert ex.categories == ["user.behavior.purchase_history"]
    assert cp.legal_minimums["user.behavior.purchase_history"]
    # The legal minimum does not leak to the account's other data.
    assert cp.legal_minimums["user.contact.email"] == ()
    assert cp.legal_minimums["user.name"] == ()
    inv = cp.collections["voiceapi_db.invoices"]
    assert not inv.delete_rows
    assert {f.masking for f in inv.fields.values() if f.categories} == {"keep"}
    assert lp.policy.backups is not None and lp.policy.backups.retention == P("90 days")


def test_plv8_admin_email_essential_promotional_email_unsubscribe(cp: CompiledPolicy) -> None:
    from fiduciary.policy.model import Channel

    admin = cp.purposes["admin_email"]
    assert admin.essential and "admin_email" in cp.essential_purposes
    assert all(admin.consent_mode(j) == ConsentMode.notice_only for j in ("eu", "us-ca", "row"))
    promo = cp.purposes["promotional_email"]
    assert not promo.essential
    assert promo.consent_mode("eu") == ConsentMode.opt_in
    assert promo.consent_mode("us-ca") == ConsentMode.opt_out
    assert promo.consent_mode("row") == ConsentMode.opt_out
    for j in ("eu", "us-ca", "row"):
        right = cp.right(j, RequestType.opt_out_of_marketing)
        assert right is not None and Channel.unsubscribe_link in right.channels, j


def test_plv9_password_hashed_restricted_servers_tls(
    lp: LoadedPolicy, cp: CompiledPolicy, engine: Engine, app: ModuleType
) -> None:
    assert lp.policy.category_info("user.authorization.password").protection == "hashed"
    field = cp.collections["voiceapi_db.accounts"].fields["password_hash"]
    assert field.categories == ("user.authorization.password",)
    measures = {s.measure for s in lp.policy.security}
    assert {"password_hashing", "restricted_servers", "tls"} <= measures
    hashes = [r["password_hash"] for r in rows(engine, "accounts", app)]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)


def test_plv10_cookies_and_pixel_tags_including_in_emails(lp: LoadedPolicy) -> None:
    cookies = lp.policy.cookies
    assert any(c.kind == "cookie" for c in cookies)
    email_pixels = [c for c in cookies if c.kind == "pixel" and c.email]
    assert email_pixels and all(c.purpose == "campaign_measurement" for c in email_pixels)
    assert any(c.kind == "pixel" and not c.email for c in cookies)
    # Outside the strictly necessary, EU visitors are asked first.
    for c in cookies:
        if c.category != "strictly_necessary":
            assert c.consent.get("eu") == ConsentMode.opt_in, c.name


def test_plv11_privacy_settings_hide_profile_from_other_users_or_public(
    cp: CompiledPolicy, engine: Engine, app: ModuleType
) -> None:
    vis = cp.visibility["user.name"]
    assert vis.settable and vis.default == "self"
    assert {"other_users", "public"} <= set(vis.audiences)
    assert cp.visibility["user.contact.organization"] is vis
    for j in ("eu", "us-ca", "row"):
        assert cp.right(j, RequestType.visibility) is not None, j
    seen = {r["profile_visibility"] for r in rows(engine, "accounts", app)}
    assert seen <= set(vis.audiences) and len(seen) > 1


def test_plv12_public_areas_visible_to_everyone(cp: CompiledPolicy) -> None:
    vis = cp.visibility["user.content.public"]
    assert list(vis.audiences) == ["public"] and not vis.settable and vis.searchable
    assert cp.visibility["user.content.public.location"] is vis
    public = cp.recipients["public"]
    assert public.source.role == Role.public
    assert "user.content.public" in public.categories
    assert "post_publicly" in cp.policy.activities


def test_plv13_shine_the_light_answered_free_within_30_days(cp: CompiledPolicy) -> None:
    from fiduciary.policy.model import Channel

    stl = cp.right("us-ca", RequestType.shine_the_light)
    assert stl is not None
    assert stl.deadline == P("30 days") and stl.free
    assert {Channel.email, Channel.postal_mail} <= set(stl.channels)
    assert stl.note and "California Customer Choice Notice" in stl.note
    # Only Californians have it.
    assert cp.right("row", RequestType.shine_the_light) is None
    marketers = [r for r in cp.recipients.values() if r.source.direct_marketing]
    assert marketers
    for r in marketers:
        assert r.source.address and r.source.products and r.categories
        assert r.source.opt_out  # the person says whom not to share with


def test_plv14_under_13_removed_and_account_closed(
    lp: LoadedPolicy, cp: CompiledPolicy, engine: Engine, app: ModuleType
) -> None:
    children = lp.policy.children
    assert children is not None
    assert children.on_discovery == ChildAction.delete_account
    assert cp.min_age("row") == 13 and cp.min_age("us-ca") == 13
    assert cp.min_age("eu") == 16
    births = [r["date_of_birth"] for r in rows(engine, "accounts", app) if r["date_of_birth"]]
    assert births and all((date(2012, 3, 30) - b).days // 365 >= 13 for b in births)


# --------------------------------------------------------------------------- LAW


def test_law1_law4_law6_gdpr_deadlines_and_rights(cp: CompiledPolicy) -> None:
    for rt in ("access", "portability", "rectify", "erase", "restrict", "object"):
        right = cp.right("eu", rt)
        assert right is not None, rt
        assert right.deadline == P("1 month") and right.extension == P("2 months"), rt
        assert right.free, rt
    assert cp.jurisdiction_for("DE") == "eu" and cp.jurisdiction_for("GB") == "eu"


def test_law2_transfers_safeguarded_and_every_category_retained(cp: CompiledPolicy) -> None:
    for key, rec in cp.recipients.items():
        if rec.outside_eea:
            assert rec.source.transfer is not None, key
    for cat in cp.declared_categories:
        assert cp.retention_by_category[cat], cat


def test_law3_erasure_exemption_recorded(cp: CompiledPolicy) -> None:
    ex = cp.exemptions["past_transactions"]
    assert ex.basis == "legal_obligation" and ex.categories


def test_law5_recipients_are_notified(cp: CompiledPolicy) -> None:
    for key, rec in cp.recipients.items():
        if rec.source.role in (Role.processor, Role.third_party):
            assert rec.source.webhook, key


def test_law7_objection_to_legitimate_interests(cp: CompiledPolicy) -> None:
    for key, p in cp.purposes.items():
        if p.basis == Basis.legitimate_interest and p.direct_marketing:
            assert p.objection, key
    assert cp.purposes["referral_invitation"].objection
    assert cp.purposes["analytics"].objection


def test_law8_consent_purposes_ask_first_in_the_eu(cp: CompiledPolicy) -> None:
    consent = [p for p in cp.purposes.values() if p.basis == Basis.consent]
    assert consent
    for p in consent:
        assert p.consent_mode("eu") == ConsentMode.opt_in, p.key
    withdraw = cp.right("eu", RequestType.withdraw_consent)
    assert withdraw is not None and withdraw.verification == Verification.none


def test_law10_breaches(lp: LoadedPolicy) -> None:
    b = lp.policy.breaches
    assert b is not None and b.authority_within == P("72 hours")
    assert b.notify_subjects == "high_risk"


def test_law11_law12_law13_ccpa(cp: CompiledPolicy) -> None:
    ca = cp.jurisdictions["us-ca"]
    assert cp.jurisdiction_for("US-CA") == "us-ca" and cp.jurisdiction_for("US-NY") == "row"
    assert ca.acknowledge == P("10 business days")
    access = cp.right("us-ca", "access")
    assert access and access.deadline == P("45 days") and access.extension == P("45 days")
    assert access.verification == Verification.two_data_points
    sale = cp.right("us-ca", "opt_out_of_sale")
    assert sale and sale.deadline == P("15 business days")
    assert sale.verification == Verification.none
    assert ca.gpc == GpcEffect.opt_out
    shared = [r for r in cp.recipients.values() if r.source.share]
    assert shared and all(r.source.opt_out for r in shared)
    ads = [c for c in cp.policy.cookies if c.category == "advertising"]
    assert ads and all(c.gpc == GpcEffect.opt_out for c in ads)
    assert ca.records_kept == P("24 months")


def test_law14_unsubscribe_honoured_within_two_days(cp: CompiledPolicy) -> None:
    for key in ("promotional_email", "referral_invitation"):
        p = cp.purposes[key]
        assert p.source.opt_out_effective == P("2 days"), key
        assert "email" in p.source.channels


# --------------------------------------------------------------------------- app database


def test_app_tables_and_columns_match_the_datastore(cp: CompiledPolicy, app: ModuleType) -> None:
    assert 8 <= len(app.metadata.tables) <= 12
    assert_schema_matches_datastore(cp, app, DB)


def test_foreign_keys_match_datastore_references(cp: CompiledPolicy, app: ModuleType) -> None:
    assert_foreign_keys_match_references(cp, app, DB)
    assert all(r.direction == "from" for r in cp.references)
    root = cp.collections["voiceapi_db.accounts"]
    assert dict(root.identities) == {
        "email": "email",
        "phone_number": "phone_number",
        "user_id": "auth_id",
    }


def test_seed_creates_rows_on_sqlite(engine: Engine, app: ModuleType) -> None:
    with engine.connect() as conn:
        counts = {
            name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for name, t in app.metadata.tables.items()
        }
    assert counts["accounts"] == 50
    assert all(n > 0 for n in counts.values()), counts
    assert counts["call_logs"] == 200  # proportional: four calls per account
    emails = [r["email"] for r in rows(engine, "accounts", app)]
    assert emails[:3] == ["user1@example.com", "user2@example.com", "user3@example.com"]


def test_seed_is_deterministic(app: ModuleType, tmp_path: Path) -> None:
    assert_seed_deterministic(app, tmp_path, root="accounts")


def test_seed_is_set_based(app: ModuleType, tmp_path: Path) -> None:
    log = assert_set_based_inserts(app, tmp_path / "batches.db", 600)
    assert len(log.statements) <= 2 * len(app.metadata.tables)  # set-based, not row by row


class _CountingConnection:
    """Stands in for a Connection: records batch sizes, keeps nothing."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def execute(self, _stmt: object, params: list[dict[str, Any]]) -> None:
        self.batches.append(len(params))


def test_seed_inserts_in_bounded_batches_and_memory(
    app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert app.BATCH <= 5_000
    # A scale model (tracemalloc is slow): batches of 500, rounds of 100 customers.
    monkeypatch.setattr(app, "BATCH", 500)
    monkeypatch.setattr(app, "_CHUNK", 100)

    def peak(size: int) -> tuple[int, _CountingConnection]:
        conn = _CountingConnection()
        tracemalloc.start()
        counts = app.seed(cast(Connection, conn), size)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert sum(conn.batches) == sum(counts.values())  # every row written, once
        return top, conn

    small, _ = peak(600)
    big, conn = peak(2_400)
    assert max(conn.batches) <= 500
    assert len(conn.batches) > len(app.metadata.tables)  # more than one batch per table
    # Four times the customers, nowhere near four times the memory.
    assert big < small * 2
