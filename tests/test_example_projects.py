"""The Planio example (examples/projects): its policy keeps PLA-1..PLA-7 and LAW-1..LAW-14,
and its app database matches the datastore the policy describes."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import Engine, func, select, update

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

POLICY = example_policy("projects")
DB = "projects_db"
US_PROCESSORS = ("google_analytics", "adroll", "snapengage")
SOCIAL = ("facebook", "twitter", "google_plus")

lp, cp, app = example_fixtures("projects")


@pytest.fixture
def engine(app: ModuleType, tmp_path: Path) -> Engine:
    return seeded_sqlite(app, tmp_path / "projects.db")


# --------------------------------------------------------------------------- loading


def test_policy_loads_and_compiles_without_warnings(lp: LoadedPolicy, cp: CompiledPolicy) -> None:
    assert lp.warnings == []
    assert cp.version == "2014-06-30"
    assert cp.effective == date(2014, 6, 30)
    assert len(cp.collections) == 11


def test_every_promise_is_named_in_a_keeps_comment() -> None:
    assert_every_promise_kept(POLICY, "PLA", 7)


# --------------------------------------------------------------------------- PLA-*


def test_pla1_personal_data_only_where_needed(cp: CompiledPolicy) -> None:
    for cat in (
        "user.name",
        "user.contact.address",
        "user.contact.phone_number",
        "user.contact.fax_number",
        "user.financial.credit_card",
        "user.financial.bank_account",
        "user.contact.email",
    ):
        assert cat in cp.declared_categories, cat
    # card and bank details serve billing only, and billing is essential to the contract
    for cat in ("user.financial.credit_card", "user.financial.bank_account"):
        assert purposes_using(cp, cat) == {"billing"}
    billing = cp.purposes["billing"]
    assert billing.essential and billing.basis == "contract"
    assert "user.contact.fax_number" not in cp.purposes["service"].categories


def test_pla2_no_third_party_unless_authorised_or_law(cp: CompiledPolicy) -> None:
    for key, rec in cp.recipients.items():
        if rec.source.role != "processor":
            assert rec.source.condition in ("person_authorised", "legal_demand"), key
        assert not rec.source.sale, key
    assert cp.recipients["other_users"].source.role == "other_users"
    assert cp.recipients["the_public"].source.role == "public"
    assert cp.recipients["authorities"].source.condition == "legal_demand"
    content = cp.visibility["user.content.private"]
    assert content.settable and {"members", "public"} <= set(content.audiences)
    assert content.default == "members"  # public only when the person makes it so


def test_pla3_logs_kept_statistics_only_anonymised(cp: CompiledPolicy, app: ModuleType) -> None:
    logs = cp.collections[f"{DB}.access_logs"]
    assert logs.fields["requested_at"].categories == ("user.behavior.browsing_history",)
    assert logs.fields["user_agent"].categories == ("user.device.user_agent",)
    assert logs.fields["referrer"].categories == ("user.behavior.browsing_history",)
    assert cp.purposes["statistics"].form == "anonymized"
    assert cp.purposes["log_files"].form == "identified"
    rule = cp.retention["log_truncate"]
    assert rule.action == "truncate" and rule.truncate is not None
    assert rule.truncate.ipv4_prefix == 24
    assert "log_truncate" in cp.retention_by_category["user.device.ip_address"]
    assert {"requested_at", "user_agent", "referrer"} <= set(app.access_logs.c.keys())


def test_pla4_login_cookie_deleted_at_end_of_visit(cp: CompiledPolicy) -> None:
    cookie = next(c for c in cp.policy.cookies if c.name == "_planio_session")
    assert cookie.category == "strictly_necessary"
    assert cookie.lifetime.is_session
    assert cookie.purpose == "login"
    assert cp.purposes["login"].essential


def test_pla5_us_processors_with_transfer_mechanisms(cp: CompiledPolicy) -> None:
    for key in US_PROCESSORS:
        rec = cp.recipients[key]
        assert rec.source.role == "processor", key
        assert rec.source.country == "US" and rec.outside_eea, key
        assert rec.source.transfer not in (None, "none_needed"), key
        assert rec.source.address and "USA" in rec.source.address, key
    adroll = cp.recipients["adroll"].source
    assert adroll.opt_out and adroll.share  # opt-out of targeted ads; CCPA "sharing"
    for key in ("web_analytics", "retargeting", "chat"):
        assert cp.purposes[key].consent_mode("eu") == "opt_in", key
    ad_cookie = next(c for c in cp.policy.cookies if c.name == "__adroll")
    assert ad_cookie.gpc == "opt_out"
    assert cp.jurisdictions["us-ca"].gpc == "opt_out"


def test_pla6_social_buttons_blocked_until_consent(cp: CompiledPolicy) -> None:
    plugins = [c for c in cp.policy.cookies if c.kind == "social_plugin"]
    assert {c.provider for c in plugins} == set(SOCIAL)
    for cookie in plugins:
        assert set(cookie.consent.values()) == {"opt_in"}, cookie.name
    buttons = cp.purposes["social_buttons"]
    for j in (*cp.jurisdictions, "*"):
        assert buttons.consent_mode(j) == "opt_in", j
    for key in SOCIAL:
        rec = cp.recipients[key].source
        assert rec.condition == "person_authorised" and rec.transfer == "consent", key
        assert cp.recipients_by_purpose["social_buttons"] >= {key}


def test_pla7_amendments_posted(cp: CompiledPolicy) -> None:
    changes = cp.policy.changes
    assert changes.material == "notice"
    assert "privacy_center" in changes.announce and changes.archive


# --------------------------------------------------------------------------- LAW-*


def test_law1_gdpr_deadlines(cp: CompiledPolicy) -> None:
    for rt in ("access", "portability", "rectify", "erase", "restrict", "object"):
        right = cp.right("eu", rt)
        assert right is not None, rt
        assert str(right.deadline) == "1 month" and str(right.extension) == "2 months"
        assert right.free
    assert cp.jurisdiction_for("DE") == "eu" and cp.jurisdiction_for("US-CA") == "us-ca"
    assert cp.jurisdiction_for("BR") == "row"
    authority = cp.jurisdictions["eu"].supervisory_authority
    assert authority is not None and "Berlin" in authority.name


def test_law2_law6_access_and_portability(cp: CompiledPolicy) -> None:
    access = cp.right("eu", "access")
    assert access is not None and access.note and "transfers" in access.note
    portability = cp.right("eu", "portability")
    assert portability is not None and portability.note and "machine-readable" in portability.note


def test_law3_invoices_exempt_from_erasure(cp: CompiledPolicy) -> None:
    exemption = cp.exemptions["invoices"]
    assert exemption.basis == "legal_obligation" and RequestType.erase in exemption.suspends
    minimums = cp.legal_minimums["user.behavior.purchase_history"]
    assert minimums and str(minimums[0].period) == "10 years"
    invoices = cp.collections[f"{DB}.invoices"]
    assert invoices.fields["billing_name"].masking == "keep"
    assert cp.collections[f"{DB}.payment_methods"].delete_rows


def test_law3_erasure_cuts_the_link_but_keeps_shared_content(
    cp: CompiledPolicy, engine: Engine, app: ModuleType
) -> None:
    for coll in ("issues", "comments", "wiki_pages", "attachments"):
        assert cp.collections[f"{DB}.{coll}"].fields["author_id"].masking == "unlink", coll
    i = app.issues
    with engine.begin() as conn:
        author = conn.scalar(select(i.c.author_id).order_by(i.c.id).limit(1))
        before = conn.scalar(select(func.count()).select_from(i))
        conn.execute(update(i).where(i.c.author_id == author).values(author_id=None))
        assert conn.scalar(select(func.count()).select_from(i)) == before
        assert conn.scalar(select(func.count()).where(i.c.author_id == author)) == 0


def test_law4_law7_restrict_and_object(cp: CompiledPolicy) -> None:
    assert cp.right("eu", "restrict") is not None
    assert cp.right("eu", "object") is not None
    assert cp.purposes["statistics"].objection
    for p in cp.purposes.values():
        if p.basis == "legitimate_interest" and p.direct_marketing:
            assert p.objection, p.key


def test_law5_processors_are_notified(cp: CompiledPolicy) -> None:
    for key in US_PROCESSORS:
        assert cp.recipients[key].source.webhook, key


def test_law8_consent_purposes_are_opt_in_under_gdpr(cp: CompiledPolicy) -> None:
    consent = [p for p in cp.purposes.values() if p.basis == "consent"]
    assert {p.key for p in consent} == {"web_analytics", "retargeting", "chat", "social_buttons"}
    for p in consent:
        assert p.consent_mode("eu") == "opt_in", p.key
        assert not p.essential
    withdraw = cp.right("eu", "withdraw_consent")
    assert withdraw is not None and withdraw.verification == "none"


def test_law9_record_of_processing_named() -> None:
    head = POLICY.read_text(encoding="utf-8").splitlines()[:6]
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
    for rt in ("access", "erase", "rectify"):
        right = cp.right("us-ca", rt)
        assert right is not None and str(right.deadline) == "45 days", rt
        assert right.verification == "two_data_points", rt
    sale = cp.right("us-ca", "opt_out_of_sale")
    assert sale is not None and str(sale.deadline) == "15 business days"
    assert sale.verification == "none" and "gpc_signal" in sale.channels


def test_law14_unsubscribe(cp: CompiledPolicy) -> None:
    # The seed sends no marketing email; should one be added it must unsubscribe in 2 days.
    for p in cp.purposes.values():
        if p.use.startswith("marketing.communications"):
            effective = p.source.opt_out_effective
            assert effective is not None and effective.approx_days() <= 2, p.key
    withdraw = cp.right("eu", "withdraw_consent")
    assert withdraw is not None and "unsubscribe_link" in withdraw.channels


# --------------------------------------------------------------------------- app database


def test_schema_matches_datastore(cp: CompiledPolicy, app: ModuleType) -> None:
    # policy.yaml declares no string lengths, nor a data_type for every field, yet
    assert_schema_matches_datastore(cp, app, DB, require_types=False, require_lengths=False)
    assert cp.collections[f"{DB}.users"].identities["email"] == "email"


def test_seed_counts_and_determinism(app: ModuleType, tmp_path: Path) -> None:
    run, other = assert_seed_deterministic(app, tmp_path, root="users", seed=7, other_seed=8)
    assert run.counts["accounts"] == 10
    assert run.counts["issues"] > 50
    assert run.column("users", "hashed_password") != other.column("users", "hashed_password")


def test_seed_writes_in_batches(app: ModuleType, tmp_path: Path) -> None:
    log = assert_set_based_inserts(app, tmp_path / "batches.db", 50)
    assert len(log.statements) <= 2 * len(app.metadata.tables)  # set-based, not row by row
    with log.engine.connect() as conn:
        owners = conn.execute(select(app.accounts.c.owner_id).order_by(app.accounts.c.id)).scalars()
        assert list(owners)[:2] == [1, 6]
