"""The Plutro example (examples/social): its policy keeps PLU-1..PLU-16 and LAW-1..LAW-14,
and its app database matches the datastore the policy describes."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa

from fiduciary.examples import example_policy
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.load import LoadedPolicy
from fiduciary.policy.model import Basis, ConsentMode, GpcEffect, RequestType, Role
from tests.example_support import (
    assert_schema_matches_datastore,
    assert_seed_deterministic,
    assert_set_based_inserts,
    example_fixtures,
)

POLICY = example_policy("social")

lp, cp, app = example_fixtures("social")


# --------------------------------------------------------------------------- the file


def test_loads_without_errors_or_warnings(lp: LoadedPolicy, cp: CompiledPolicy) -> None:
    assert lp.warnings == []
    assert cp.policy.organization.name == "Plutro"
    assert cp.version == "2020"


def test_every_promise_is_named_in_a_keeps_comment() -> None:
    ids: set[str] = set()
    for line in POLICY.read_text(encoding="utf-8").splitlines():
        _, hash_, comment = line.partition("#")
        m = re.search(r"keeps ((?:(?:PLU|LAW)-\d+(?:, )?)+)", comment) if hash_ else None
        if m:
            ids.update(x.strip() for x in m.group(1).split(","))
    expected = {f"PLU-{i}" for i in range(1, 17)} | {f"LAW-{i}" for i in range(1, 15)}
    assert expected <= ids, sorted(expected - ids)
    assert "# gap" not in POLICY.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- PLU-*


def test_plu1_members_and_visitors_are_different_subjects(cp: CompiledPolicy) -> None:
    subjects = cp.policy.subjects
    assert subjects["member"].account and not subjects["visitor"].account
    assert subjects["member"].fideslang == "customer"
    assert subjects["visitor"].fideslang == "visitor"
    # Different data: visitors are never asked to register or build a profile.
    for key in ("registration", "profile", "messaging"):
        assert cp.policy.activities[key].subjects == ["member"]
    assert "visitor" in cp.policy.activities["service_use"].subjects
    # Promotional messages and the account are for members only.
    assert cp.purposes["promotional_messages"].subjects == {"member"}
    assert cp.purposes["account"].subjects == {"member"}


def test_plu16_visitors_read_but_cannot_publish(cp: CompiledPolicy) -> None:
    visitor = cp.policy.subjects["visitor"].can
    member = cp.policy.subjects["member"].can
    assert "read" in visitor and "share" in visitor
    assert "publish" not in visitor and "comment" not in visitor
    assert {"publish", "comment"} <= set(member)
    assert cp.policy.activities["publishing"].subjects == ["member"]


def test_plu2_registration_mandatory_profile_voluntary(cp: CompiledPolicy) -> None:
    reg = cp.policy.activities["registration"]
    assert set(reg.mandatory) == {"user.name", "user.contact.email", "user.authorization.password"}
    assert reg.voluntary == []
    profile = cp.policy.activities["profile"]
    assert profile.mandatory == []
    assert "user.demographic.profile" in profile.voluntary
    assert "user.demographic.profile.sensitive" in profile.voluntary
    assert cp.policy.categories["user.authorization.password"].protection == "hashed"  # type: ignore[union-attr]


def test_plu2_username_is_not_the_real_name(cp: CompiledPolicy, app: ModuleType) -> None:
    username = cp.policy.categories["user.account.username"]
    assert username is not None and "not mandatory" in (username.description or "")
    # The username is shown with every post; the real name follows the profile setting.
    assert cp.visibility["user.account.username"].default == "public"
    assert cp.visibility["user.account.username"].settable is False
    assert cp.visibility["user.name"].settable is True
    engine = sa.create_engine("sqlite://")
    app.create(engine, 30)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(app.members.c.name, app.members.c.username)).all()
    assert rows and all(
        not any(part.lower() in username.lower() for part in name.split()) for name, username in rows
    )


def test_plu3_posts_public_and_searchable_profile_per_settings(cp: CompiledPolicy) -> None:
    posts = cp.visibility["user.content.public"]
    assert posts.default == "public" and posts.searchable
    profile = cp.visibility["user.demographic.profile"]
    assert profile.default == "public" and profile.settable
    assert {"members", "public", "self"} <= set(profile.audiences)
    sensitive = cp.visibility["user.demographic.profile.sensitive"]
    assert sensitive.default == "self" and sensitive.settable
    right = cp.right("eu", RequestType.visibility)
    assert right is not None and right.deadline.approx_days() == 0  # applies on the next read
    profiles = cp.collections["social_db.profiles"]
    assert profiles.fields["visibility"].categories == ("user.account.settings",)


def test_plu4_collected_data_is_declared_and_stored(cp: CompiledPolicy) -> None:
    wanted = {
        "user.social.connections": "social_db.connections",
        "user.social.follows": "social_db.follows",
        "user.behavior.messaging": "social_db.messages",
        "user.device.device_id": "social_db.devices",
        "user.location.precise": "social_db.devices",
        "user.behavior.browsing_history.referrer": "social_db.visit_logs",
        "user.device.cookie_id": "social_db.visit_logs",
    }
    for category, collection in wanted.items():
        assert category in cp.declared_categories
        assert category in cp.collections[collection].categories, (category, collection)
    logs = cp.collections["social_db.visit_logs"].fields
    assert logs["referrer_url"].categories == logs["next_url"].categories
    assert {c.name for c in cp.policy.cookies} >= {"plutro_session", "plutro_analytics"}


def test_plu5_uses(cp: CompiledPolicy) -> None:
    uses = {p.use for p in cp.purposes.values()}
    assert {
        "essential.service",
        "personalize.content.profiling",
        "personalize.content",
        "essential.service.notifications.email",
        "functional.service.improve",
        "essential.service.operations.support",
        "essential.service.security",
        "essential.fraud_detection",
    } <= uses
    topics = cp.purposes["personalize_topics"]
    assert cp.purpose_covers("personalize_topics", "user.behavior.media_consumption")
    assert cp.purpose_covers("personalize_topics", "user.content.public")
    assert topics.basis == Basis.legitimate_interest


def test_plu6_service_messages_essential_promotions_can_be_stopped(cp: CompiledPolicy) -> None:
    service = cp.purposes["service_messages"]
    assert service.essential and "service_messages" in cp.essential_purposes
    assert all(service.consent_mode(j) == ConsentMode.notice_only for j in cp.jurisdictions)
    promo = cp.purposes["promotional_messages"]
    assert not promo.essential and promo.direct_marketing
    assert all(promo.consent_mode(j) == ConsentMode.opt_out for j in cp.jurisdictions)
    for j in cp.jurisdictions:
        right = cp.right(j, RequestType.opt_out_of_marketing)
        assert right is not None and "unsubscribe_link" in right.channels


def test_plu7_linked_services_only_after_linking(cp: CompiledPolicy) -> None:
    rec = cp.recipients["linked_services"].source
    assert rec.role == Role.third_party and rec.condition == "linked_account"
    assert rec.opt_out  # unlinking stops the flow
    purpose = cp.purposes["linked_services"]
    assert purpose.basis == Basis.consent
    assert all(purpose.consent_mode(j) == ConsentMode.opt_in for j in cp.jurisdictions)
    assert "user.demographic.profile" in cp.recipients["linked_services"].categories
    assert "unlinked_at" in cp.collections["social_db.linked_services"].fields


def test_plu8_affiliates_and_providers_bound_to_purpose(cp: CompiledPolicy) -> None:
    for key, role in (("affiliates", Role.affiliate), ("service_providers", Role.processor)):
        rec = cp.recipients[key]
        assert rec.source.role == role and rec.source.bound_by_policy
        assert rec.purposes and rec.purposes <= set(cp.purposes)
        assert "linked_services" not in rec.purposes and "legal_disclosures" not in rec.purposes


def test_plu9_legal_demands_notified_unless_prohibited(cp: CompiledPolicy) -> None:
    rec = cp.recipients["authorities"].source
    assert rec.role == Role.authority and rec.condition == "legal_demand"
    assert rec.notify_subject == "unless_prohibited"
    assert cp.recipients_by_purpose["legal_disclosures"] == {"authorities"}
    assert cp.purposes["legal_disclosures"].basis == Basis.legal_obligation


def test_plu10_buyer_bound_by_policy(cp: CompiledPolicy) -> None:
    rec = cp.recipients["buyer"].source
    assert rec.role == Role.successor and rec.condition == "business_transfer"
    assert rec.bound_by_policy


def test_plu11_retention_while_account_exists_and_after(cp: CompiledPolicy) -> None:
    account = cp.retention["account"]
    assert account.trigger == "account_closed" and account.period is None
    assert "account" in cp.retention_by_category["user.demographic.profile"]
    after = cp.retention["after_closure"]
    assert after.legal_minimum is not None and after.legal_minimum.basis == "legal_claims"
    assert cp.legal_minimums["user.contact.email"]
    assert not cp.legal_minimums["user.demographic.profile"]  # the profile goes at closure
    # Shared content stays visible: the rows are kept, only the link to the person goes.
    assert cp.retention["shared_content"].action == "anonymize"
    for coll, fld in (("posts", "member_id"), ("comments", "member_id"), ("messages", "sender_id")):
        info = cp.collections[f"social_db.{coll}"]
        assert info.fields[fld].masking == "unlink"
        assert info.fields["body"].masking == "keep"
        assert not info.delete_rows
    assert cp.collections["social_db.profiles"].delete_rows
    assert cp.exemptions["shared_with_others"].categories == [
        "user.content.public",
        "user.content.private",
    ]


def test_plu12_rights_to_access_correct_delete_and_control(cp: CompiledPolicy) -> None:
    for j in cp.jurisdictions:
        for request in (
            RequestType.access,
            RequestType.rectify,
            RequestType.erase,
            RequestType.visibility,
            RequestType.close_account,
        ):
            assert cp.right(j, request) is not None, (j, request)
    closing = cp.right("row", RequestType.close_account)
    assert closing is not None and "account_settings" in closing.channels


def test_plu13_bases_consent_withdrawable_and_objection(cp: CompiledPolicy) -> None:
    bases = {p.basis for p in cp.purposes.values()}
    assert {Basis.consent, Basis.contract, Basis.legitimate_interest} <= bases
    for key, p in cp.purposes.items():
        if p.basis == Basis.legitimate_interest and not p.essential:
            assert p.objection, key
    for j in cp.jurisdictions:
        assert cp.right(j, RequestType.withdraw_consent) is not None
    assert cp.right("eu", RequestType.object) is not None
    assert cp.right("row", RequestType.object) is not None


def test_plu14_breach_monitoring_and_https(cp: CompiledPolicy) -> None:
    assert cp.policy.breaches is not None and cp.policy.breaches.monitoring
    measures = {s.measure for s in cp.policy.security}
    assert {"breach_monitoring", "https"} <= measures


def test_plu15_cross_border_transfers_disclosed(cp: CompiledPolicy) -> None:
    org = cp.policy.organization
    assert org.transfers and "outside your country" in org.transfers
    for key in ("affiliates", "service_providers"):
        assert cp.recipients[key].source.transfer == "scc"


# --------------------------------------------------------------------------- LAW-*


def test_law1_gdpr_deadlines(cp: CompiledPolicy) -> None:
    for request in (RequestType.access, RequestType.erase, RequestType.rectify):
        right = cp.right("eu", request)
        assert right is not None and str(right.deadline) == "1 month"
        assert right.extension is not None and str(right.extension) == "2 months"
        assert right.free
    assert cp.jurisdiction_for("DE") == "eu" and cp.jurisdiction_for("GB") == "eu"


def test_law2_access_copy_has_what_art15_needs(cp: CompiledPolicy) -> None:
    assert cp.right("eu", RequestType.access) is not None
    for key, p in cp.purposes.items():
        assert p.source.description, key  # purposes
        assert p.categories, key  # categories
    assert all(cp.retention_by_category[c] for c in cp.declared_categories)  # retention
    assert all(r.source.description for r in cp.recipients.values())  # recipients
    assert {a.source for a in cp.policy.activities.values()} >= {"subject", "observed"}


def test_law3_erasure_exemptions_per_field(cp: CompiledPolicy) -> None:
    bases = {e.basis for e in cp.exemptions.values()}
    assert {"legal_obligation", "legal_claims"} <= bases
    assert all(RequestType.erase in e.suspends for e in cp.exemptions.values())
    assert "user.contact.email" in cp.exemptions["disputes_and_fraud"].categories


def test_law4_law6_restriction_and_portability(cp: CompiledPolicy) -> None:
    assert cp.right("eu", RequestType.restrict) is not None
    assert cp.right("eu", RequestType.portability) is not None


def test_law5_recipients_known_for_notification(cp: CompiledPolicy) -> None:
    # Every recipient that gets data for a purpose is named, so it can be told of changes.
    named = {k for ks in cp.recipients_by_purpose.values() for k in ks}
    assert {"affiliates", "service_providers", "linked_services"} <= named


def test_law7_objection_for_legitimate_interest_marketing(cp: CompiledPolicy) -> None:
    promo = cp.purposes["promotional_messages"]
    assert promo.basis == Basis.legitimate_interest and promo.objection
    assert cp.right("eu", RequestType.object) is not None


def test_law8_consent_purposes_need_a_yes_in_the_eu(cp: CompiledPolicy) -> None:
    consent = [p for p in cp.purposes.values() if p.basis == Basis.consent]
    assert {p.key for p in consent} == {
        "mobile_location",
        "sensitive_profile",
        "offsite_activity",
        "linked_services",
    }
    for p in consent:
        assert p.consent_mode("eu") == ConsentMode.opt_in, p.key
        assert not p.essential
    withdraw = cp.right("eu", RequestType.withdraw_consent)
    assert withdraw is not None and withdraw.verification == "none"


def test_law9_record_inputs_present(cp: CompiledPolicy) -> None:
    # Art. 30(1): controller, purposes, categories of subjects and data, recipients,
    # transfers, time limits, security measures.
    assert cp.policy.organization.controller.url
    for key, p in cp.purposes.items():
        assert p.subjects and p.subjects <= set(cp.policy.subjects), key
    assert all(r.source.role for r in cp.recipients.values())
    assert cp.policy.security and cp.policy.retention


def test_law10_breaches(cp: CompiledPolicy) -> None:
    breaches = cp.policy.breaches
    assert breaches is not None
    assert str(breaches.authority_within) == "72 hours"
    assert breaches.notify_subjects == "high_risk"


def test_law11_law12_law13_california(cp: CompiledPolicy) -> None:
    ca = cp.jurisdictions["us-ca"]
    assert cp.jurisdiction_for("US-CA") == "us-ca" and cp.jurisdiction_for("US-NY") == "row"
    assert ca.acknowledge is not None and str(ca.acknowledge) == "10 business days"
    access = cp.right("us-ca", RequestType.access)
    assert access is not None and str(access.deadline) == "45 days"
    assert access.verification == "two_data_points"
    sale = cp.right("us-ca", RequestType.opt_out_of_sale)
    assert sale is not None and str(sale.deadline) == "15 business days"
    assert sale.verification == "none" and "gpc_signal" in sale.channels
    assert ca.gpc == GpcEffect.opt_out  # LAW-12
    assert ca.records_kept is not None and str(ca.records_kept) == "24 months"  # LAW-13


def test_law14_unsubscribe_within_two_days(cp: CompiledPolicy) -> None:
    promo = cp.purposes["promotional_messages"].source
    assert promo.opt_out_effective is not None and str(promo.opt_out_effective) == "2 days"
    assert "email" in promo.channels


# --------------------------------------------------------------------------- app database


def test_schema_matches_datastore(cp: CompiledPolicy, app: ModuleType) -> None:
    # policy.yaml declares no string lengths yet
    assert_schema_matches_datastore(cp, app, "social_db", require_lengths=False)
    assert 8 <= len(app.metadata.tables) <= 12
    assert all(ref.direction == "from" for ref in cp.references)
    assert cp.collections["social_db.members"].identities == {"email": "email", "user_id": "id"}


def test_seed_is_deterministic_and_proportional(tmp_path: Path, app: ModuleType) -> None:
    run, _ = assert_seed_deterministic(app, tmp_path, root="members")
    # Visitors show up in the visit logs without a member (PLU-1).
    assert any(member is None for member in run.column("visit_logs", "member_id"))
    assert any(member is not None for member in run.column("visit_logs", "member_id"))


def test_seed_inserts_in_batches(app: ModuleType, tmp_path: Path) -> None:
    log = assert_set_based_inserts(app, tmp_path / "batches.db", 600)
    # Set-based: far fewer statements than rows, and none larger than the batch size.
    assert len(log.statements) < log.rows / 50
