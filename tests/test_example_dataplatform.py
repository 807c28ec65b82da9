"""The Ploomber example (examples/dataplatform): its policy keeps PLO-1..17 and LAW-1..14,
and its app database matches the datastore the policy describes.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import func, select

from fiduciary.policy import CompiledPolicy, LoadedPolicy, Policy
from fiduciary.policy.model import (
    ChildAction,
    ConsentMode,
    GpcEffect,
    RequestType,
    RetentionAction,
    Role,
    Trigger,
    Verification,
)
from fiduciary.policy.period import Period
from tests.example_support import (
    assert_schema_matches_datastore,
    assert_seed_deterministic,
    assert_set_based_inserts,
    example_fixtures,
    seeded_sqlite,
)

PI = "Personal Information"
AI = "Additional Information"

lp, cp, app = example_fixtures("dataplatform")


@pytest.fixture(scope="module")
def policy(lp: LoadedPolicy) -> Policy:
    return lp.policy


def _days(p: Period | None) -> float:
    assert p is not None
    return p.approx_days()


def _personal(policy: Policy, keys: frozenset[str]) -> set[str]:
    """Declared categories among ``keys`` that the policy treats as personal."""
    return {c for c in keys if c in policy.categories and policy.category_info(c).personal}


# --------------------------------------------------------------------------- loading


def test_loads_and_compiles_without_problems(lp: LoadedPolicy, cp: CompiledPolicy) -> None:
    assert lp.warnings == []
    assert cp.version == "2022-07-02"
    assert str(cp.effective) == "2022-07-02"
    assert "dataplatform_db.users" in cp.collections


# --------------------------------------------------------------------------- PLO promises


def test_plo1_two_classes_of_information(policy: Policy) -> None:
    classes = {k: policy.category_info(k).class_ for k in policy.categories}
    assert set(classes.values()) == {PI, AI}
    for key in ("user.name", "user.contact.email", "user.contact.phone_number",
                "user.contact.organization", "user.contact.address", "user.financial.credit_card"):
        assert classes[key] == PI, key
        assert policy.category_info(key).personal
    # the ten kinds the Privacy Policy lists as Additional Information, (i) to (x)
    additional = ["user.behavior.usage", "user.device.browser", "user.device.system",
                  "user.behavior.access_times", "user.behavior.browsing_history",
                  "user.behavior.search_history", "user.device.ip_address", "user.device.cookie_id",
                  "user.behavior.browsing_history.referrer", "user.location.imprecise",
                  "user.content.private"]
    for key in additional:
        assert classes[key] == AI, key
    # treated as not identifying, except Content, which can hold anything
    assert all(not policy.category_info(k).personal for k in additional[:-1])
    assert policy.category_info("user.content.private").personal


def test_plo2_registration_and_payment_data(policy: Policy, cp: CompiledPolicy) -> None:
    reg = policy.activities["registration"]
    assert "user.contact.email" in reg.mandatory and "user.name" in reg.mandatory
    assert {"user.contact.phone_number", "user.contact.organization"} <= set(reg.voluntary)
    paid = policy.activities["paid_plan"]
    assert {"user.financial.credit_card", "user.contact.address"} <= set(paid.mandatory)
    # card and address are needed only for paid features, not to register
    assert "user.financial.credit_card" not in reg.mandatory + reg.voluntary
    assert cp.purpose_covers("paid_features", "user.financial.credit_card")
    fraud = cp.purposes["fraud_prevention"]
    assert fraud.use == "essential.fraud_detection"
    assert {"user.contact.email", "user.financial.credit_card"} <= fraud.categories
    assert cp.purposes["account"].essential


def test_plo3_uses_i_to_vii(cp: CompiledPolicy) -> None:
    uses = {p.use for p in cp.purposes.values()}
    expected = {
        "essential.service",  # (i) operate and deliver
        "functional.service.improve",  # (i) improve
        "analytics.reporting",  # (ii)
        "personalize.content",  # (iii)
        "marketing.advertising.third_party.targeted",  # (iv) ad targeting
        "analytics.reporting.ad_performance",  # (iv) measurement
        "essential.service.security",  # (v)
        "essential.fraud_detection",  # (vi)
        "essential.service.operations",  # (vii) enforce Terms
    }
    assert expected <= uses


def test_plo4_newsletter_only_after_sign_up(cp: CompiledPolicy) -> None:
    news = cp.purposes["newsletter"]
    for j in [*cp.jurisdictions, "*"]:
        assert news.consent_mode(j) == ConsentMode.opt_in, j
    assert news.direct_marketing
    # "a reasonable amount of time", held to the mail providers' 2 days (LAW-14)
    assert _days(news.source.opt_out_effective) <= 2
    for j in cp.jurisdictions:
        right = cp.right(j, RequestType.opt_out_of_marketing)
        assert right is not None, j
        assert {"unsubscribe_link", "email"} <= set(right.channels)
        assert right.verification == Verification.none
    row = cp.right("row", RequestType.opt_out_of_marketing)
    assert row is not None and "cannot be retrieved" in (row.note or "")


def test_plo4_seeded_subscriptions_all_signed_up(app: ModuleType, tmp_path: Path) -> None:
    engine = seeded_sqlite(app, tmp_path / "db.sqlite", 200)
    t = app.newsletter_subscriptions
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).select_from(t))
        no_signup = conn.scalar(select(func.count()).select_from(t).where(t.c.subscribed_at.is_(None)))
        no_version = conn.scalar(select(func.count()).select_from(t).where(t.c.consent_version.is_(None)))
    assert total and no_signup == 0 and no_version == 0


def test_plo5_cookies_beacons_and_tailored_ads(policy: Policy, cp: CompiledPolicy) -> None:
    kinds = {c.kind for c in policy.cookies}
    assert {"cookie", "pixel", "local_storage"} <= kinds
    ads = [c for c in policy.cookies if c.category == "advertising"]
    assert ads
    for c in ads + [c for c in policy.cookies if c.category == "analytics"]:
        # refusable everywhere; in the EU not set before consent
        assert c.consent["eu"] == ConsentMode.opt_in
        assert all(m != ConsentMode.notice_only for m in c.consent.values())
    tailored = cp.purposes["ad_targeting"]
    assert tailored.consent_mode("us-ca") == ConsentMode.opt_out
    assert tailored.consent_mode("row") == ConsentMode.opt_out
    assert "combine" in (tailored.source.description or "")
    assert policy.activities["using_the_service"].source == "observed"


def test_plo6_personal_information_never_sold(policy: Policy, cp: CompiledPolicy) -> None:
    sellers = [r for r in cp.recipients.values() if r.source.sale or r.source.share]
    assert sellers, "the Privacy Policy sells Additional Information"
    for r in sellers:
        assert _personal(policy, r.categories) == set(), r.key
        assert not any(policy.category_info(c).class_ == PI for c in r.categories if c in policy.categories)
    sale = cp.purposes["sale_of_additional_information"]
    assert sale.sale
    assert _personal(policy, sale.categories) == set()
    assert sale.consent_mode("us-ca") == ConsentMode.opt_out  # Californians may opt out (PLO-16)
    agg = cp.recipients["aggregate_recipients"].source
    assert agg.form == "aggregate" and agg.min_group is not None


def test_plo7_service_providers_affiliates_transfers_legal(cp: CompiledPolicy) -> None:
    processors = [r.source for r in cp.recipients.values() if r.source.role == Role.processor]
    assert processors and all(r.bound_by_policy for r in processors)
    affiliates = [r.source for r in cp.recipients.values() if r.source.role == Role.affiliate]
    assert affiliates and all(r.bound_by_policy for r in affiliates)
    assert cp.recipients["successor"].source.condition == "business_transfer"
    authorities = cp.recipients["authorities"].source
    assert authorities.role == Role.authority and authorities.condition == "legal_demand"
    assert cp.purposes["legal_obligations"].basis == "legal_obligation"


def test_plo8_retention(cp: CompiledPolicy) -> None:
    account = cp.retention["account"]
    assert account.trigger == Trigger.account_closed and account.period is None
    assert "account" in cp.retention_by_category["user.contact.email"]
    extra = cp.retention["additional_information"]
    assert extra.trigger == Trigger.collected and extra.action == RetentionAction.aggregate
    assert "additional_information" in cp.retention_by_category["user.device.ip_address"]
    # longer where the law requires
    minimums = cp.legal_minimums["user.financial.invoice"]
    assert minimums and minimums[0].basis == "legal_obligation"
    assert _days(minimums[0].period) >= 365 * 7
    # every category the policy knows has a retention rule
    assert all(cp.retention_by_category[c] for c in cp.declared_categories)


def test_plo9_self_service_and_inactive_accounts(cp: CompiledPolicy) -> None:
    for j in cp.jurisdictions:
        for request in ("access", "rectify", "erase"):
            right = cp.right(j, request)
            assert right is not None and "account_settings" in right.channels, (j, request)
        erase = cp.right(j, "erase")
        assert erase is not None and "email" in erase.channels
    inactive = cp.retention["inactive_accounts"]
    assert inactive.trigger == Trigger.last_activity
    assert inactive.notice_before is not None
    assert 0 < _days(inactive.notice_before) < _days(inactive.period)
    assert "dataplatform_db.users" in inactive.collections


def test_plo9_seeded_inactive_accounts_were_contacted(app: ModuleType, tmp_path: Path) -> None:
    engine = seeded_sqlite(app, tmp_path / "db.sqlite", 400)
    u = app.users
    with engine.connect() as conn:
        rows = conn.execute(select(u.c.last_active_at, u.c.inactivity_notice_sent_at)).all()
    long_idle = [r for r in rows if (app.BASE - r.last_active_at).days >= 700]
    assert long_idle and all(r.inactivity_notice_sent_at is not None for r in long_idle)


def test_plo10_legal_hold_abuse_and_backups(policy: Policy, cp: CompiledPolicy) -> None:
    for key in ("legal_hold", "abuse_report"):
        ex = cp.exemptions[key]
        assert RequestType.erase in ex.suspends and RequestType.close_account in ex.suspends
    assert policy.backups is not None
    assert 0 < _days(policy.backups.retention) <= 90  # "a limited period of time"


def test_plo11_portability_after_verification_may_be_refused(cp: CompiledPolicy) -> None:
    for j in ("eu", "row"):
        right = cp.right(j, RequestType.portability)
        assert right is not None and right.verification != Verification.none
        assert "email" in right.channels
    others = cp.exemptions["other_users_privacy"]
    assert others.basis == "rights_of_others"
    assert RequestType.portability in others.suspends
    assert RequestType.erase not in others.suspends


def test_plo12_only_authorised_access(policy: Policy, cp: CompiledPolicy) -> None:
    texts = " ".join(f"{s.measure} {s.description}" for s in policy.security).lower()
    assert "authorized" in texts or "authorised" in texts
    assert policy.category_info("user.authorization.credentials").protection == "hashed"


def test_plo13_children_under_13(policy: Policy, cp: CompiledPolicy, app: ModuleType,
                                 tmp_path: Path) -> None:
    kids = policy.children
    assert kids is not None
    assert kids.minimum_age["*"] == 13 and kids.minimum_age["us-ca"] == 13
    assert cp.min_age("row") == 13 and cp.min_age("eu") == 16
    assert kids.at_signup == ChildAction.refuse
    assert kids.on_discovery == ChildAction.delete_account
    assert "email" in kids.report
    assert policy.activities["registration"].age_gate
    engine = seeded_sqlite(app, tmp_path / "db.sqlite", 50)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(app.users.c.age_confirmed.is_(False))) == 0


def test_plo14_fraudulent_entries_rejected(cp: CompiledPolicy) -> None:
    fraud = cp.purposes["fraud_prevention"]
    assert fraud.essential and not fraud.objection
    assert "reject and delete" in (fraud.source.description or "")
    assert "status" in cp.collections["dataplatform_db.users"].fields


def test_plo15_eu_section(policy: Policy, cp: CompiledPolicy) -> None:
    assert policy.organization.controller.name == "Ploomber, Inc."
    assert {p.basis for p in cp.purposes.values()} == {
        "contract", "legitimate_interest", "consent", "legal_obligation"
    }
    assert cp.right("eu", RequestType.object) is not None
    assert cp.jurisdiction_for("DE") == "eu" and cp.jurisdiction_for("GB") == "eu"
    outside = [r for r in cp.recipients.values() if r.outside_eea]
    assert outside and all(r.source.transfer is not None for r in outside)
    assert "US" in policy.organization.storage
    authority = cp.jurisdictions["eu"].supervisory_authority
    assert authority is not None and authority.url


def test_plo16_california_rights(cp: CompiledPolicy) -> None:
    ca = cp.jurisdictions["us-ca"]
    assert cp.jurisdiction_for("US-CA") == "us-ca" and cp.jurisdiction_for("US-NY") == "row"
    assert ca.non_discrimination
    know = cp.right("us-ca", RequestType.access)
    assert know is not None and know.verification == Verification.two_data_points
    assert know.note is not None and "specific pieces" in know.note
    delete = cp.right("us-ca", RequestType.erase)
    assert delete is not None and "de-identifying" in (delete.note or "")
    opt_out = cp.right("us-ca", RequestType.opt_out_of_sale)
    assert opt_out is not None and opt_out.verification == Verification.none
    assert {"gpc_signal", "email"} <= set(opt_out.channels)
    for right in (know, delete):
        assert _days(right.deadline) == 45 and right.extension is not None
    # deletion may de-identify: usage events are unlinked, not deleted
    events = cp.collections["dataplatform_db.usage_events"]
    assert events.fields["user_id"].masking == "unlink" and not events.delete_rows
    assert RequestType.erase in cp.exemptions["fraud_and_legal"].suspends


def test_plo17_changes_and_archive(policy: Policy) -> None:
    assert policy.changes.archive
    assert "revision_date" in policy.changes.announce
    assert {"site_banner", "privacy_center"} & set(policy.changes.announce)
    assert policy.changes.notice_period is None  # effective upon posting
    assert policy.version in {c.version for c in policy.changelog}


# --------------------------------------------------------------------------- LAW promises


def test_law1_gdpr_deadlines(cp: CompiledPolicy) -> None:
    for request in ("access", "portability", "rectify", "erase", "restrict", "object"):
        right = cp.right("eu", request)
        assert right is not None and right.free
        assert str(right.deadline) == "1 month" and str(right.extension) == "2 months"


def test_law2_to_law6_gdpr_rights_present(cp: CompiledPolicy) -> None:
    for request in ("access", "erase", "restrict", "portability"):  # LAW-2, 3, 4, 6
        assert cp.right("eu", request) is not None
    assert any(e.basis == "legal_obligation" for e in cp.exemptions.values())  # LAW-3
    assert cp.recipients  # LAW-5: the recipients to tell


def test_law7_objection_to_legitimate_interests(cp: CompiledPolicy) -> None:
    for p in cp.purposes.values():
        if p.basis == "legitimate_interest" and not p.essential:
            assert p.objection, p.key


def test_law8_consent_purposes_opt_in_in_eu(cp: CompiledPolicy) -> None:
    consent = [p for p in cp.purposes.values() if p.basis == "consent"]
    assert {"newsletter", "ad_targeting", "sale_of_additional_information"} <= {p.key for p in consent}
    for p in consent:
        assert p.consent_mode("eu") == ConsentMode.opt_in, p.key
        assert not p.essential
    withdraw = cp.right("eu", RequestType.withdraw_consent)
    assert withdraw is not None and withdraw.verification == Verification.none


def test_law9_record_has_every_purpose_described(cp: CompiledPolicy) -> None:
    for p in cp.purposes.values():
        assert p.source.description and p.categories, p.key


def test_law10_to_law14(policy: Policy, cp: CompiledPolicy) -> None:
    assert policy.breaches is not None  # LAW-10
    assert _days(policy.breaches.authority_within) == 3
    assert policy.breaches.notify_subjects == "high_risk"
    ca = cp.jurisdictions["us-ca"]
    assert str(ca.acknowledge) == "10 business days"  # LAW-11
    sale = cp.right("us-ca", RequestType.opt_out_of_sale)
    assert sale is not None and str(sale.deadline) == "15 business days"
    assert ca.gpc == GpcEffect.opt_out  # LAW-12
    assert all(c.gpc == GpcEffect.opt_out for c in policy.cookies if c.category == "advertising")
    assert str(ca.records_kept) == "24 months"  # LAW-13
    for p in cp.purposes.values():  # LAW-14
        if p.use.startswith("marketing.communications"):
            assert p.source.opt_out_effective is not None and _days(p.source.opt_out_effective) <= 2


# --------------------------------------------------------------------------- app database


def test_schema_matches_datastore(app: ModuleType, cp: CompiledPolicy) -> None:
    (ds,) = cp.policy.datastores
    assert ds.fides_key == "dataplatform_db"
    assert 8 <= len(ds.collections) <= 12
    # policy.yaml declares no string lengths yet
    assert_schema_matches_datastore(cp, app, "dataplatform_db", require_lengths=False)


def test_identity_root_and_children(cp: CompiledPolicy) -> None:
    users = cp.collections["dataplatform_db.users"]
    assert dict(users.identities) == {"user_id": "id", "email": "email", "phone_number": "phone"}
    # every child of users is reached from it, in the direction data flows
    children = {r.collection for r in cp.references if r.target == "dataplatform_db.users"}
    assert all(r.direction == "from" for r in cp.references if r.target == "dataplatform_db.users")
    assert len(children) >= 8
    # a team is reached from a membership, so erasing one member never reaches the others
    (team,) = [r for r in cp.references if r.target == "dataplatform_db.organizations"]
    assert team.direction == "to"


def test_seed_counts_and_determinism(app: ModuleType, tmp_path: Path) -> None:
    run, other = assert_seed_deterministic(app, tmp_path, root="users")
    assert run.column("users", "name") != other.column("users", "name")


def test_seed_is_set_based(app: ModuleType, tmp_path: Path) -> None:
    log = assert_set_based_inserts(app, tmp_path / "db.sqlite", 2_500)
    # one statement per table per chunk of users, never one per row
    assert len(log.statements) <= len(app.metadata.tables) * 3 + log.rows // app.BATCH
