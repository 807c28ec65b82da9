"""The put.io example (examples/filelocker): its policy keeps PUT-1..PUT-14 and LAW-1..LAW-14,
and its app database matches the datastore the policy describes."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import Engine, delete, func, select

from fiduciary.examples import example_policy
from fiduciary.policy import CompiledPolicy, LoadedPolicy
from fiduciary.policy.model import RequestType
from tests.example_support import (
    assert_every_promise_kept,
    assert_schema_matches_datastore,
    assert_seed_deterministic,
    assert_set_based_inserts,
    example_fixtures,
    purposes_using,
    seeded_sqlite,
)

POLICY = example_policy("filelocker")
DB = "filelocker_db"

lp, cp, app = example_fixtures("filelocker")


@pytest.fixture
def engine(app: ModuleType, tmp_path: Path) -> Engine:
    return seeded_sqlite(app, tmp_path / "filelocker.db")


# --------------------------------------------------------------------------- loading


def test_policy_loads_and_compiles_without_warnings(lp: LoadedPolicy, cp: CompiledPolicy) -> None:
    assert lp.warnings == []
    assert cp.version == "2011-12-01"
    assert cp.effective == date(2011, 12, 1)
    assert len(cp.collections) == 10


def test_every_promise_is_named_in_a_keeps_comment() -> None:
    assert_every_promise_kept(POLICY, "PUT", 14)


# --------------------------------------------------------------------------- PUT-*


def test_put1_collected_categories(cp: CompiledPolicy) -> None:
    for cat in (
        "user.contact.email",
        "user.device.ip_address",
        "user.financial.paypal_email",
        "user.contact.address.postal_code",
        "user.contact.address.city",
        "user.demographic.gender",
        "user.behavior.purchase_history",
        "user.demographic.date_of_birth",
    ):
        assert cat in cp.declared_categories, cat
    info = cp.policy.category_info("user.contact.address.city")
    assert info.name == "Hometown" and info.class_ == "demographic information"


def test_put2_children_refused_at_signup(cp: CompiledPolicy, engine: Engine, app: ModuleType) -> None:
    children = cp.policy.children
    assert children is not None
    assert children.at_signup == "refuse"
    assert children.categories == []  # empty: nothing about the child is stored
    assert cp.min_age("row") == 13 and cp.min_age("us-ca") == 13 and cp.min_age("eu") == 16
    assert cp.policy.activities["signup"].age_gate
    assert "user.demographic.date_of_birth" in cp.policy.activities["signup"].mandatory
    with engine.connect() as conn:
        for created, born in conn.execute(select(app.users.c.created_at, app.users.c.birth_date)):
            assert (created.date() - born).days >= 13 * 365


def test_put3_material_change_needs_opt_in(cp: CompiledPolicy) -> None:
    changes = cp.policy.changes
    assert changes.material == "opt_in"
    assert "site_banner" in changes.announce  # announced prominently
    assert cp.policy.changelog[-1].version == cp.version


def test_put4_email_uses_and_financial_data_only_for_payment_and_law(cp: CompiledPolicy) -> None:
    email_uses = purposes_using(cp, "user.contact.email")
    assert {"account", "service", "quality_assurance", "business_analyses", "order_contact"} <= email_uses
    assert purposes_using(cp, "user.financial.paypal_email") == {"payments", "legal_duties"}
    assert cp.purposes["legal_duties"].basis == "legal_obligation"
    assert cp.purposes["account"].use == "essential.service.authentication"


def test_put5_marketing_email_and_no_sale(cp: CompiledPolicy) -> None:
    for key in ("newsletter", "partner_offers"):
        p = cp.purposes[key]
        assert p.use == "marketing.communications.email" and p.direct_marketing
        assert not p.sale
    assert not any(p.sale for p in cp.purposes.values())
    assert not any(r.source.sale or r.source.share for r in cp.recipients.values())
    assert not any(r.source.direct_marketing for r in cp.recipients.values())


def test_put6_authorities_and_successor(cp: CompiledPolicy) -> None:
    authorities = cp.recipients["authorities"].source
    assert authorities.role == "authority" and authorities.condition == "legal_demand"
    successor = cp.recipients["successor"].source
    assert successor.role == "successor" and successor.condition == "business_transfer"
    assert "user.contact.email" in cp.recipients["successor"].categories


def test_put7_session_cookie_and_refusable_cookies(cp: CompiledPolicy) -> None:
    necessary = cp.cookies_by_category["strictly_necessary"]
    session = next(c for c in necessary if c.name == "putio_session")
    assert session.lifetime.is_session
    assert cp.retention["sessions"].trigger == "session_end"
    for cookie in cp.cookies_by_category["analytics"]:
        assert cookie.consent["eu"] == "opt_in", cookie.name
    channels = cp.right("eu", RequestType.withdraw_consent)
    assert channels is not None and "browser_settings" in channels.channels


def test_put8_pixels_yield_only_aggregates(cp: CompiledPolicy) -> None:
    pixels = [c for c in cp.policy.cookies if c.kind == "pixel"]
    assert pixels and all(c.purpose == "site_statistics" for c in pixels)
    assert cp.purposes["site_statistics"].form == "aggregate"
    for key in cp.recipients_by_purpose["site_statistics"]:
        rec = cp.recipients[key].source
        assert rec.form == "aggregate" and (rec.min_group or 0) >= 2


def test_put9_uploads_screened_at_write(cp: CompiledPolicy, engine: Engine, app: ModuleType) -> None:
    screening = cp.policy.screening
    assert screening is not None
    assert screening.at == "write" and screening.algorithms == ["md5"]
    assert set(screening.on_match) == {"block", "report"}
    assert any("NCMEC" in name for name in screening.lists)
    assert cp.recipients["child_protection"].source.condition == "screening_match"
    s = app.upload_screenings
    with engine.connect() as conn:
        clean = conn.scalar(select(func.count()).where(s.c.matched.is_(False)))
        stored = conn.scalar(select(func.count()).select_from(app.files))
        assert clean == stored  # every stored file passed a screening first


def test_put10_ip_and_referrer_on_every_visit(cp: CompiledPolicy) -> None:
    logs = cp.collections[f"{DB}.access_logs"]
    assert logs.fields["ip_address"].categories == ("user.device.ip_address",)
    assert logs.fields["referrer"].categories == ("user.behavior.browsing_history",)
    visit = cp.policy.activities["visit"]
    assert visit.source == "observed"
    assert {"administration", "demographics"} <= set(visit.purposes)
    assert cp.purposes["demographics"].form == "aggregate"
    assert "user.behavior.browsing_history" in cp.purposes["administration"].categories


def test_put11_intercom_gets_only_email_and_signup_date(cp: CompiledPolicy) -> None:
    intercom = cp.recipients["intercom"]
    assert intercom.source.role == "processor"
    assert intercom.categories == {"user.contact.email", "user.account.created"}
    assert intercom.source.opt_out
    assert intercom.outside_eea and intercom.source.transfer == "scc"
    assert cp.policy.category_info("user.account.created").name == "Sign-up date"
    assert cp.purposes["intercom_analytics"].objection


def test_put12_stored_in_the_netherlands(cp: CompiledPolicy) -> None:
    org = cp.policy.organization
    assert org.storage == ["NL"]
    assert org.transfers and "Netherlands" in org.transfers
    ap = cp.jurisdictions["eu"].supervisory_authority
    assert ap is not None and ap.name == "Autoriteit Persoonsgegevens"


def test_put13_deleting_a_file_leaves_no_link(cp: CompiledPolicy, engine: Engine, app: ModuleType) -> None:
    files = cp.collections[f"{DB}.files"]
    assert files.delete_rows
    assert files.fields["blob_id"].masking == "unlink"
    blobs = cp.collections[f"{DB}.content_blobs"]
    assert blobs.categories == frozenset()
    assert not any(r.collection == f"{DB}.content_blobs" for r in cp.references)
    link = next(r for r in cp.references if r.collection == f"{DB}.files" and r.field == "blob_id")
    assert link.direction == "to"  # never followed from a blob to the people who share it

    f, t = app.files, app.transfers
    with engine.begin() as conn:
        file_id, user_id, blob_id = conn.execute(
            select(f.c.id, f.c.user_id, f.c.blob_id).order_by(f.c.id).limit(1)
        ).one()
        blobs_before = conn.scalar(select(func.count()).select_from(app.content_blobs))
        # deleting the file: its transfer row, then the link row (set-based, children first)
        conn.execute(delete(t).where(t.c.file_id == file_id))
        conn.execute(delete(f).where(f.c.id == file_id))
        assert conn.scalar(select(func.count()).select_from(app.content_blobs)) == blobs_before
        assert conn.scalar(
            select(func.count()).where(f.c.user_id == user_id, f.c.blob_id == blob_id, f.c.id == file_id)
        ) == 0
        md5 = conn.scalar(select(app.content_blobs.c.md5).where(app.content_blobs.c.id == blob_id))
        s = app.upload_screenings
        assert conn.scalar(
            select(func.count()).where(s.c.user_id == user_id, s.c.file_md5 == md5)
        ) == 0


def test_put14_contact_point(cp: CompiledPolicy) -> None:
    assert cp.policy.organization.contact.email == "support@put.io"


# --------------------------------------------------------------------------- LAW-*


def test_law1_gdpr_deadlines(cp: CompiledPolicy) -> None:
    for rt in ("access", "portability", "rectify", "erase", "restrict", "object"):
        right = cp.right("eu", rt)
        assert right is not None, rt
        assert str(right.deadline) == "1 month" and str(right.extension) == "2 months"
        assert right.free
    assert cp.jurisdiction_for("NL") == "eu" and cp.jurisdiction_for("US-CA") == "us-ca"
    assert cp.jurisdiction_for("JP") == "row"


def test_law2_law6_access_and_portability(cp: CompiledPolicy) -> None:
    access = cp.right("eu", "access")
    assert access is not None and access.note and "transfers" in access.note
    portability = cp.right("eu", "portability")
    assert portability is not None and portability.note and "machine-readable" in portability.note


def test_law3_exemptions_recorded(cp: CompiledPolicy) -> None:
    assert cp.exemptions["tax_records"].basis == "legal_obligation"
    assert cp.exemptions["abuse_reports"].basis == "legal_claims"
    minimums = cp.legal_minimums["user.financial.paypal_email"]
    assert minimums and str(minimums[0].period) == "7 years"
    payments = cp.collections[f"{DB}.payments"]
    assert payments.fields["paypal_email"].masking == "keep"


def test_law4_law7_restrict_and_object(cp: CompiledPolicy) -> None:
    assert cp.right("eu", "restrict") is not None
    assert cp.right("eu", "object") is not None
    for p in cp.purposes.values():
        if p.basis == "legitimate_interest" and p.direct_marketing:
            assert p.objection, p.key


def test_law5_recipients_are_notified(cp: CompiledPolicy) -> None:
    assert cp.recipients["intercom"].source.webhook == "intercom"


def test_law8_consent_purposes_are_opt_in_under_gdpr(cp: CompiledPolicy) -> None:
    consent = [p for p in cp.purposes.values() if p.basis == "consent"]
    assert consent
    for p in consent:
        assert p.consent_mode("eu") == "opt_in", p.key
        assert not p.essential


def test_law9_record_of_processing_named() -> None:
    head = POLICY.read_text(encoding="utf-8").splitlines()[:5]
    assert any("keeps LAW-9" in line for line in head)


def test_law10_breaches(cp: CompiledPolicy) -> None:
    breaches = cp.policy.breaches
    assert breaches is not None
    assert str(breaches.authority_within) == "72 hours" and breaches.notify_subjects == "high_risk"


def test_law11_law12_law13_california(cp: CompiledPolicy) -> None:
    ca = cp.jurisdictions["us-ca"]
    assert str(ca.acknowledge) == "10 business days"
    assert ca.gpc == "opt_out" and str(ca.records_kept) == "24 months"
    assert ca.non_discrimination
    access = cp.right("us-ca", "access")
    assert access is not None and str(access.deadline) == "45 days"
    assert str(access.extension) == "45 days" and access.verification == "two_data_points"
    sale = cp.right("us-ca", "opt_out_of_sale")
    assert sale is not None and str(sale.deadline) == "15 business days"
    assert sale.verification == "none" and "gpc_signal" in sale.channels


def test_law14_unsubscribe_within_two_days(cp: CompiledPolicy) -> None:
    marketing = [p for p in cp.purposes.values() if p.use == "marketing.communications.email"]
    assert marketing
    for p in marketing:
        effective = p.source.opt_out_effective
        assert effective is not None and effective.approx_days() <= 2, p.key
        assert "email" in p.source.channels
    withdraw = cp.right("eu", "withdraw_consent")
    assert withdraw is not None and "unsubscribe_link" in withdraw.channels


# --------------------------------------------------------------------------- app database


def test_schema_matches_datastore(cp: CompiledPolicy, app: ModuleType) -> None:
    # policy.yaml declares no string lengths, nor a data_type for every field, yet
    assert_schema_matches_datastore(cp, app, DB, require_types=False, require_lengths=False)


def test_seed_counts_and_determinism(app: ModuleType, tmp_path: Path) -> None:
    run, other = assert_seed_deterministic(app, tmp_path, root="users", seed=7, other_seed=8)
    assert run.counts["content_blobs"] == 100
    assert run.counts["files"] > 50 and run.counts["access_logs"] > 50
    assert run.column("users", "password_hash") != other.column("users", "password_hash")


def test_seed_writes_in_batches(app: ModuleType, tmp_path: Path) -> None:
    log = assert_set_based_inserts(app, tmp_path / "batches.db", 50)
    assert len(log.statements) <= 2 * len(app.metadata.tables)  # set-based, not row by row
