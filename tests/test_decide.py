"""The decision engine (src/fiduciary/decide.py) against the five reference policies.

The table tests compute the expected answer from each policy's own data with a small
oracle written here from docs/policy.md ("Consent modes resolve", LAW-7 defaults), not from
the engine's internals; the focused tests name the promise they keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fiduciary import compile_policy, load_policy
from fiduciary.decide import Decider, Decision, Reason, SubjectState
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import Basis, ConsentMode, Jurisdiction, Purpose

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
POLICIES = ("dataplatform", "filelocker", "projects", "social", "voiceapi")
CONSENT_STATES = ("none", "given", "withdrawn", "expired")


@cache
def compiled(name: str) -> CompiledPolicy:
    return compile_policy(load_policy(EXAMPLES / name / "policy.yaml"))


def state(cp: CompiledPolicy, purpose: str | None = None, **kw: object) -> SubjectState:
    """A subject the purpose is declared for, whose purpose condition holds, unless told."""
    kind = next(iter(cp.policy.subjects))
    settings_: dict[str, str] = {}
    if purpose is not None:
        p = cp.policy.purposes[purpose]
        kind = p.subjects[0] if p.subjects else kind
        if p.condition:
            settings_[p.condition.removeprefix("setting:")] = "true"
    fields: dict[str, object] = {
        "subject_id": "s",
        "kind": kind,
        "jurisdiction": cp.default_jurisdiction,
        "age_status": "adult",
        "settings": settings_,
    }
    fields.update(kw)
    return SubjectState(**fields)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the oracle


def oracle_mode(p: Purpose, jkey: str, jurisdiction: Jurisdiction) -> ConsentMode:
    """docs/policy.md, part 5: the first rule that applies wins."""
    if p.essential:
        return ConsentMode.notice_only
    return (
        p.consent.get(jkey)
        or p.consent.get("*")
        or (
            jurisdiction.default_consent
            if p.basis == Basis.consent
            else ConsentMode.opt_out
            if p.basis == Basis.legitimate_interest and p.use.split(".")[0] == "marketing"
            else ConsentMode.notice_only
        )
    )


def oracle(p: Purpose, jkey: str, jurisdiction: Jurisdiction, consent: str, objected: bool) -> Reason | None:
    """The expected refusal (or None) for an adult, unrestricted subject of the right kind."""
    if p.essential:
        return None  # PLU-6, PLV-8: no opt-out, withdrawal or objection reaches it
    mode = oracle_mode(p, jkey, jurisdiction)
    if mode == ConsentMode.opt_in and consent != "given":
        return {"none": Reason.no_consent, "withdrawn": Reason.withdrawn, "expired": Reason.expired}[consent]
    if mode == ConsentMode.opt_out and consent == "withdrawn":
        return Reason.withdrawn
    may_object = p.objection if p.objection is not None else p.basis == Basis.legitimate_interest
    direct_marketing = p.direct_marketing or p.use.split(".")[0] == "marketing"
    if objected and (may_object or direct_marketing):
        return Reason.objection  # LAW-7
    return None


@dataclass(frozen=True)
class Case:
    policy: str
    purpose: str
    jurisdiction: str
    consent: str
    objected: bool

    @property
    def id(self) -> str:
        obj = "objected" if self.objected else "no-objection"
        return f"{self.policy}/{self.purpose}/{self.jurisdiction}/{self.consent}/{obj}"


def table() -> Iterator[Case]:
    for name in POLICIES:
        cp = compiled(name)
        for purpose in cp.policy.purposes:
            for jk in cp.jurisdictions:
                for consent in CONSENT_STATES:
                    for objected in (False, True):
                        yield Case(name, purpose, jk, consent, objected)


CASES = list(table())


def test_the_table_covers_every_policy_purpose_and_basis() -> None:
    bases = {compiled(c.policy).policy.purposes[c.purpose].basis for c in CASES}
    assert {c.policy for c in CASES} == set(POLICIES)
    assert bases >= {Basis.consent, Basis.contract, Basis.legitimate_interest, Basis.legal_obligation}
    # every mode shows up, so the table is not trivially one-sided
    modes = {oracle_mode(*_oracle_args(c)[:3]) for c in CASES}
    assert modes == set(ConsentMode)
    expected = [oracle(*_oracle_args(c)) for c in CASES]
    assert None in expected and {
        Reason.no_consent,
        Reason.withdrawn,
        Reason.expired,
        Reason.objection,
    } <= set(expected)


def _oracle_args(c: Case) -> tuple[Purpose, str, Jurisdiction, str, bool]:
    cp = compiled(c.policy)
    p, j = cp.policy.purposes[c.purpose], cp.jurisdictions[c.jurisdiction]
    return p, c.jurisdiction, j, c.consent, c.objected


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision_follows_basis_essential_and_consent_mode(case: Case) -> None:
    cp = compiled(case.policy)
    decider = Decider(cp)
    consents = {} if case.consent == "none" else {case.purpose: case.consent}
    objections = frozenset({case.purpose}) if case.objected else frozenset()
    s = state(cp, case.purpose, jurisdiction=case.jurisdiction, consents=consents, objections=objections)

    expected = oracle(*_oracle_args(case))
    d = decider.decide(s, case.purpose)

    assert d.reason == expected, d.reasons()
    assert d.ok is (expected is None)
    if expected is None:
        assert d.allowed == cp.purposes[case.purpose].categories and not d.refused
    else:
        assert not d.allowed
        assert set(d.refused.values()) == {expected}
    assert (case.purpose in decider.allowed_purposes(s)) is (expected is None)
    assert decider.decide_many([(s, case.purpose)]) == [expected is None]


@pytest.mark.parametrize("name", POLICIES)
def test_essential_purposes_ignore_every_opt_out(name: str) -> None:
    """PLU-6, PLV-8: service, security and legal purposes cannot be opted out of."""
    cp = compiled(name)
    essential = [k for k, p in cp.policy.purposes.items() if p.essential]
    assert essential
    for purpose in essential:
        for jk in cp.jurisdictions:
            s = state(
                cp,
                purpose,
                jurisdiction=jk,
                consents=dict.fromkeys(cp.purposes, "withdrawn"),
                objections=frozenset({"*"}),
                sale_opt_out=True,
                recipient_opt_outs=frozenset(cp.recipients),
            )
            d = Decider(cp).decide(s, purpose, gpc=True)
            assert d.ok, (purpose, jk, d.reasons())


@pytest.mark.parametrize("name", ["dataplatform", "filelocker", "projects", "social"])
def test_essential_ignores_objection_even_where_objection_is_open(name: str) -> None:
    """An essential legitimate-interest purpose that leaves `objection` unwritten compiles
    as objectionable (the LI default); being essential, it still goes on (PLU-6, PLV-8)."""
    cp = compiled(name)
    purposes = {
        k: p.model_copy(update={"objection": None}) if p.essential else p
        for k, p in cp.policy.purposes.items()
    }
    open_cp = compile_policy(cp.policy.model_copy(update={"purposes": purposes}))
    li = [k for k, p in open_cp.purposes.items() if p.essential and p.objection]
    assert li, f"{name} has no essential legitimate-interest purpose"
    decider = Decider(open_cp)
    for purpose in li:
        s = state(open_cp, purpose, objections=frozenset({purpose}))
        assert decider.decide(s, purpose).ok, purpose


# --------------------------------------------------------------------------- promises


@pytest.mark.parametrize("name", POLICIES)
def test_restriction_blocks_all_but_legal_obligations(name: str) -> None:
    """LAW-4: restriction blocks all processing but storage and legal claims."""
    cp = compiled(name)
    decider = Decider(cp)
    legal = {k for k, p in cp.policy.purposes.items() if p.basis == Basis.legal_obligation}
    assert legal
    for purpose, p in cp.policy.purposes.items():
        s = state(cp, purpose, restricted=True, consents=dict.fromkeys(cp.purposes, "given"))
        d = decider.decide(s, purpose)
        if purpose in legal:
            assert d.ok, d.reasons()
        else:
            assert d.reason == Reason.restricted, (purpose, p.basis)
            assert set(d.refused.values()) == {Reason.restricted}


@pytest.mark.parametrize("name", POLICIES)
def test_objection_stops_legitimate_interest_and_direct_marketing(name: str) -> None:
    """LAW-7: objection stops legitimate interests; direct marketing unconditionally, even
    with consent given."""
    cp = compiled(name)
    decider = Decider(cp)
    stopped = 0
    for purpose, p in cp.policy.purposes.items():
        if p.essential:
            continue
        given_ = dict.fromkeys(cp.purposes, "given")
        before = decider.decide(state(cp, purpose, consents=given_), purpose)
        after = decider.decide(state(cp, purpose, consents=given_, objections=frozenset({"*"})), purpose)
        assert before.ok, (purpose, before.reasons())
        marketing = p.direct_marketing or p.use.startswith("marketing")
        li = p.basis == Basis.legitimate_interest and p.objection is not False
        if marketing or li:
            assert after.reason == Reason.objection, purpose
            stopped += 1
        else:
            assert after.ok, purpose
    assert stopped


def test_objection_to_one_purpose_leaves_the_others() -> None:
    cp = compiled("filelocker")
    s = state(cp, "business_analyses", objections=frozenset({"business_analyses"}))
    decider = Decider(cp)
    assert decider.decide(s, "business_analyses").reason == Reason.objection
    assert decider.decide(s, "quality_assurance").ok


def test_direct_marketing_objection_beats_consent() -> None:
    """LAW-7: dataplatform's newsletter is consent-based direct marketing."""
    cp = compiled("dataplatform")
    s = state(
        cp, "newsletter", jurisdiction="eu", consents={"newsletter": "given"}, objections=frozenset({"*"})
    )
    assert Decider(cp).decide(s, "newsletter").reason == Reason.objection


def test_gpc_refuses_sale_purposes_and_sale_recipients_at_once() -> None:
    """LAW-12: dataplatform sells Additional Information (us-ca: opt_out). A Sec-GPC: 1 on
    this very request refuses the sale purpose and the sale/share recipient."""
    cp = compiled("dataplatform")
    decider = Decider(cp)
    s = state(cp, "sale_of_additional_information", jurisdiction="us-ca")
    sale = "sale_of_additional_information"
    assert decider.decide(s, sale).ok
    assert decider.decide(s, sale, gpc=True).reason == Reason.sale_opt_out
    assert sale in decider.allowed_purposes(s) and sale not in decider.allowed_purposes(s, gpc=True)
    assert decider.decide_many([(s, sale), (s, "account")], gpc=True) == [False, True]

    opted = state(cp, sale, jurisdiction="us-ca", sale_opt_out=True)
    assert decider.decide(opted, sale).reason == Reason.sale_opt_out

    # ad_measurement is no sale, but advertising_partners is a sale/share recipient
    cookie = ["user.device.cookie_id"]
    assert decider.decide(s, "ad_measurement", cookie, "advertising_partners").ok
    d = decider.decide(s, "ad_measurement", cookie, "advertising_partners", gpc=True)
    assert d.reason is None and d.refused == {"user.device.cookie_id": Reason.sale_opt_out}
    assert decider.decide(opted, "ad_measurement", cookie, "advertising_partners").refused == {
        "user.device.cookie_id": Reason.sale_opt_out
    }
    # the same data to a processor that neither buys nor shares is unaffected
    assert decider.decide(s, "ad_measurement", cookie, "analytics_providers", gpc=True).ok


@pytest.mark.parametrize(("name", "promise"), [("filelocker", "PUT-2"), ("dataplatform", "PLO-13")])
def test_under_age_refused_but_legal_obligations(name: str, promise: str) -> None:
    cp = compiled(name)
    decider = Decider(cp)
    for purpose, p in cp.policy.purposes.items():
        s = state(cp, purpose, age_status="under_age", consents=dict.fromkeys(cp.purposes, "given"))
        d = decider.decide(s, purpose)
        if p.basis == Basis.legal_obligation:
            assert d.ok, (promise, purpose)
        else:
            assert d.reason == Reason.under_age, (promise, purpose)


def test_recipient_and_category_not_declared() -> None:
    cp = compiled("filelocker")
    decider = Decider(cp)
    s = state(cp, "payments")
    email = ["user.financial.paypal_email"]
    assert decider.decide(s, "payments", email, "paypal").ok
    assert decider.decide(s, "payments", email, "nobody").refused == {email[0]: Reason.recipient_not_declared}
    # paypal receives purchase history, but for payments only
    history = ["user.behavior.purchase_history"]
    assert decider.decide(s, "payments", history, "paypal").ok
    d = decider.decide(state(cp, "order_contact"), "order_contact", history, "paypal")
    assert d.refused == {history[0]: Reason.recipient_not_declared}
    # intercom_analytics may use the avatar, but intercom may not receive it (PUT-11)
    s2 = state(cp, "intercom_analytics")
    d = decider.decide(
        s2, "intercom_analytics", ["user.contact.email", "user.content.self_image"], "intercom"
    )
    assert d.allowed == {"user.contact.email"}
    assert d.refused == {"user.content.self_image": Reason.recipient_not_declared}
    # a category the purpose does not declare
    d = decider.decide(s, "payments", ["user.financial.paypal_email", "user.content.private.file"])
    assert d.refused == {"user.content.private.file": Reason.not_declared} and not d.ok


def test_recipient_category_finer_than_declared_is_covered() -> None:
    """A key below a recipient's declared category is declared for it, as for purposes."""
    cp = compiled("social")
    s = state(cp, "support")
    fine = "user.contact.email.work"  # not a key the policy names, below user.contact.email
    assert Decider(cp).decide(s, "support", [fine], "service_providers").ok


def test_intercom_opt_out() -> None:
    """PUT-11: a person can opt out of the sharing with Intercom; the purpose goes on."""
    cp = compiled("filelocker")
    decider = Decider(cp)
    cats = ["user.contact.email", "user.account.created"]
    s = state(cp, "intercom_messaging")
    assert decider.decide(s, "intercom_messaging", cats, "intercom").ok
    out = state(cp, "intercom_messaging", recipient_opt_outs=frozenset({"intercom"}))
    d = decider.decide(out, "intercom_messaging", cats, "intercom")
    assert dict(d.refused) == dict.fromkeys(cats, Reason.recipient_opt_out)
    assert decider.decide(out, "intercom_messaging", cats).ok
    # opting out of a recipient that offers no opt-out changes nothing
    pp = state(cp, "payments", recipient_opt_outs=frozenset({"paypal"}))
    assert decider.decide(pp, "payments", ["user.financial.paypal_email"], "paypal").ok


def test_linked_account_condition() -> None:
    """PLU-7: a linked service receives profile data only once linked; unlinking stops it."""
    cp = compiled("social")
    decider = Decider(cp)
    cats = ["user.account.username", "user.social.connections"]
    base = {"consents": {"linked_services": "given"}}
    unlinked = state(cp, "linked_services", **base)
    d = decider.decide(unlinked, "linked_services", cats, "linked_services")
    assert dict(d.refused) == dict.fromkeys(cats, Reason.condition_unmet)
    linked = state(cp, "linked_services", settings={"linked:linked_services": "true"}, **base)
    assert decider.decide(linked, "linked_services", cats, "linked_services").ok
    relinked_off = state(cp, "linked_services", settings={"linked:linked_services": "false"}, **base)
    assert not decider.decide(relinked_off, "linked_services", cats, "linked_services").ok


def test_setting_condition() -> None:
    """PLV-4: content is cached only when the customer's setting allows it."""
    cp = compiled("voiceapi")
    decider = Decider(cp)
    for purpose, setting in (
        ("content_cache", "cache_allowed"),
        ("application_logging", "application_logging"),
    ):
        assert decider.decide(state(cp, purpose, settings={}), purpose).reason == Reason.condition_unmet
        off = state(cp, purpose, settings={setting: "false"})
        assert decider.decide(off, purpose).reason == Reason.condition_unmet
        assert decider.decide(state(cp, purpose, settings={setting: "true"}), purpose).ok
        pairs = [
            (state(cp, purpose, settings=v), purpose) for v in ({}, {setting: "false"}, {setting: "true"})
        ]
        assert decider.decide_many(pairs) == [False, False, True]


def test_aggregate_only_recipients_get_no_individual_data() -> None:
    """PUT-8: tracking statistics go to partners only as aggregates."""
    for name, purpose, recipient, consents in (
        ("filelocker", "site_statistics", "statistics_partners", {"site_statistics": "given"}),
        ("voiceapi", "ad_measurement", "advertisers", {}),
        ("dataplatform", "sale_of_additional_information", "aggregate_recipients", {}),
    ):
        cp = compiled(name)
        s = state(cp, purpose, jurisdiction="us-ca", consents=consents)
        cats = sorted(cp.recipients[recipient].categories & cp.purposes[purpose].categories)
        assert cats
        decider = Decider(cp)
        assert decider.decide(s, purpose, cats).ok
        d = decider.decide(s, purpose, cats, recipient)
        assert dict(d.refused) == dict.fromkeys(cats, Reason.aggregate_only), name


def test_visibility_defaults_and_settings_social() -> None:
    """PLU-3: posts public at once; the profile follows the person's visibility settings."""
    cp = compiled("social")
    decider = Decider(cp)
    post, name, sensitive = "user.content.public", "user.name", "user.demographic.profile.sensitive"

    default = state(cp, "provide_service")
    d = decider.decide(default, "provide_service", [post, name], audience="public")
    assert d.allowed == {post, name}
    # Sensitive profile data is not reached through `user.demographic.profile`, which
    # provide_service declares: only the opt-in purpose that names it may show it (PLU-2).
    d = decider.decide(default, "provide_service", [sensitive], audience="self")
    assert d.refused == {sensitive: Reason.not_declared}
    opted_in = state(cp, "sensitive_profile", consents={"sensitive_profile": "given"})
    d = decider.decide(opted_in, "sensitive_profile", [sensitive], audience="public")
    assert d.refused == {sensitive: Reason.visibility}
    assert decider.decide(opted_in, "sensitive_profile", [sensitive], audience="self").ok
    assert not decider.decide(default, "sensitive_profile", [sensitive], audience="self").ok
    # Nor does a recipient declared for `user` receive it: the buyer gets the profile only.
    d = decider.decide(opted_in, "sensitive_profile", [sensitive], "buyer")
    assert d.refused == {sensitive: Reason.recipient_not_declared}
    assert Decider(cp).decide(default, "provide_service", [name], "buyer").refused.get(name) != (
        Reason.recipient_not_declared
    )

    hidden = state(
        cp, "provide_service", settings={f"visibility:{name}": "self", f"visibility:{post}": "members"}
    )
    d = decider.decide(hidden, "provide_service", [post, name], audience="public")
    assert d.refused == {post: Reason.visibility, name: Reason.visibility}
    d = decider.decide(hidden, "provide_service", [post, name], audience="other_users")
    assert d.allowed == {post} and d.refused == {name: Reason.visibility}
    # the username is always public: a setting cannot hide it (settable: false)
    user = "user.account.username"
    fixed = state(cp, "provide_service", settings={f"visibility:{user}": "self"})
    assert decider.decide(fixed, "provide_service", [user], audience="public").ok
    # a value outside the rule's audiences falls back to the default
    odd = state(
        cp,
        "sensitive_profile",
        consents={"sensitive_profile": "given"},
        settings={f"visibility:{sensitive}": "everyone"},
    )
    assert not decider.decide(odd, "sensitive_profile", [sensitive], audience="public").ok


def test_visibility_not_settable_ignores_the_setting() -> None:
    """projects: names show to members; the person cannot widen that (settable: false)."""
    cp = compiled("projects")
    decider = Decider(cp)
    s = state(cp, "collaboration", settings={"visibility:user.name": "public"})
    assert decider.decide(s, "collaboration", ["user.name"], audience="other_users").ok
    assert decider.decide(s, "collaboration", ["user.name"], audience="public").refused == {
        "user.name": Reason.visibility
    }
    # user.content.private is settable: public on request, members by default
    content = "user.content.private"
    assert not decider.decide(state(cp, "collaboration"), "collaboration", [content], "the_public").ok
    shared = state(cp, "collaboration", settings={f"visibility:{content}": "public"})
    assert decider.decide(shared, "collaboration", [content], "the_public").ok


def test_visibility_recipient_role_is_its_audience() -> None:
    """Giving data to the `public` recipient is showing it to the public (PLU-3), whether
    the caller names the audience or not."""
    cp = compiled("social")
    decider = Decider(cp)
    hidden = state(cp, "provide_service", settings={"visibility:user.name": "self"})
    d = decider.decide(hidden, "provide_service", ["user.name", "user.content.public"], "public")
    assert d.refused == {"user.name": Reason.visibility} and d.allowed == {"user.content.public"}
    d = decider.decide(hidden, "provide_service", ["user.name"], "other_members")
    assert d.refused == {"user.name": Reason.visibility}


def test_visibility_broad_key_cannot_skip_a_narrow_rule() -> None:
    cp = compiled("social")
    decider = Decider(cp)
    hidden = state(cp, "provide_service", settings={"visibility:user.social.connections": "self"})
    assert decider.decide(
        state(cp, "provide_service"), "provide_service", ["user.social"], audience="public"
    ).ok
    d = decider.decide(hidden, "provide_service", ["user.social"], audience="public")
    assert d.refused == {"user.social": Reason.visibility}


def test_visibility_voiceapi() -> None:
    """PLV-11: privacy settings hide chosen information from other users or the public."""
    cp = compiled("voiceapi")
    decider = Decider(cp)
    name = "user.name"
    default = state(cp, "profile_display")
    assert decider.decide(default, "profile_display", [name], audience="other_users").refused == {
        name: Reason.visibility
    }
    shown = state(cp, "profile_display", settings={f"visibility:{name}": "other_users"})
    assert decider.decide(shown, "profile_display", [name], audience="other_users").ok
    assert decider.decide(shown, "profile_display", [name], audience="public").refused == {
        name: Reason.visibility
    }
    public = state(cp, "profile_display", settings={f"visibility:{name}": "public"})
    assert decider.decide(public, "profile_display", [name], "public").ok


def test_material_change_needs_acceptance() -> None:
    """PUT-3: a material change applies to earlier data only after the person opts in
    (filelocker: changes.material opt_in); never for essential purposes."""
    cp = compiled("filelocker")
    assert cp.policy.changes.material == "opt_in"
    decider = Decider(cp, material={"business_analyses": 5, "service": 5})
    p = "business_analyses"
    assert decider.decide(state(cp, p, data_since=3), p).reason == Reason.needs_acceptance
    assert decider.decide(state(cp, p, data_since=3, accepted={p: 4}), p).reason == Reason.needs_acceptance
    assert decider.decide(state(cp, p, data_since=3, accepted={p: 5}), p).ok
    assert decider.decide(state(cp, p, data_since=3, accepted={"*": 5}), p).ok
    batch = [state(cp, p, data_since=3, accepted=a) for a in ({}, {p: 4}, {p: 5}, {"*": 5}, {"*": 4, p: 5})]
    assert decider.decide_many([(b, p) for b in batch]) == [False, False, True, True, True]
    assert decider.decide(state(cp, p, data_since=3, accepted={"*": 6}), p).ok
    assert decider.decide(state(cp, p, data_since=5), p).ok  # collected under the new text
    assert decider.decide(state(cp, "service", data_since=0), "service").ok  # essential
    assert decider.decide(state(cp, "quality_assurance", data_since=0), "quality_assurance").ok


def test_material_change_under_notice_applies_at_once() -> None:
    cp = compiled("social")
    assert cp.policy.changes.material == "notice"
    decider = Decider(cp, material={"research": 5})
    assert decider.decide(state(cp, "research", data_since=0), "research").ok


def test_unknown_purpose() -> None:
    cp = compiled("social")
    decider = Decider(cp)
    s = state(cp)
    d = decider.decide(s, "telepathy")
    assert not d.ok and d.reason == Reason.unknown_purpose and not d.allowed
    d = decider.decide(s, "telepathy", ["user.name"])
    assert d.refused == {"user.name": Reason.unknown_purpose}
    assert decider.decide_many([(s, "telepathy")]) == [False]
    assert (
        "the purpose is not declared"
        in Decider(cp).decide(s, "telepathy", ["user.name"]).reasons()["user.name"]
    )


def test_purpose_for_other_kind_and_other_jurisdiction() -> None:
    cp = compiled("voiceapi")
    decider = Decider(cp)
    visitor = state(cp, kind="visitor")
    assert decider.decide(visitor, "billing").reason == Reason.not_for_subject
    assert decider.decide(visitor, "support").ok
    # a purpose declared for some jurisdictions only (purposes.<key>.jurisdictions)
    policy = cp.policy.model_copy(
        update={
            "purposes": {
                **cp.policy.purposes,
                "support": cp.policy.purposes["support"].model_copy(update={"jurisdictions": ["eu"]}),
            }
        }
    )
    eu_only = Decider(compile_policy(policy))
    assert eu_only.decide(state(cp, "support", jurisdiction="eu"), "support").ok
    assert (
        eu_only.decide(state(cp, "support", jurisdiction="row"), "support").reason
        == Reason.not_in_jurisdiction
    )


def test_erased_subject_refused_everything() -> None:
    cp = compiled("dataplatform")
    s = state(cp, "legal_obligations", status="erased")
    assert Decider(cp).allowed_purposes(s) == frozenset()


def test_expired_consent_is_no_opt_out() -> None:
    """Under opt_out nothing needs consent, so a lapsed one does not stop the purpose; under
    opt_in it does."""
    cp = compiled("dataplatform")
    decider = Decider(cp)
    p = "ad_targeting"
    assert decider.decide(state(cp, p, jurisdiction="us-ca", consents={p: "expired"}), p).ok
    assert (
        decider.decide(state(cp, p, jurisdiction="eu", consents={p: "expired"}), p).reason == Reason.expired
    )


def test_cache_returns_the_identical_decision() -> None:
    cp = compiled("filelocker")
    decider = Decider(cp)
    s = state(cp, "intercom_messaging")
    a = decider.decide(s, "intercom_messaging", ["user.contact.email"], "intercom")
    b = decider.decide(s, "intercom_messaging", ["user.contact.email"], "intercom")
    assert a is b
    assert decider.decide(s, "intercom_messaging") is decider.decide(s, "intercom_messaging")
    # another question is another answer
    assert decider.decide(s, "intercom_messaging", ["user.contact.email"]) is not a
    # an equal but distinct state does not share the cache
    assert (
        decider.decide(
            state(cp, "intercom_messaging"), "intercom_messaging", ["user.contact.email"], "intercom"
        )
        == a
    )


def test_cache_is_per_decider() -> None:
    """Two deciders (here: with and without a material change) never share an answer."""
    cp = compiled("filelocker")
    s = state(cp, "business_analyses", data_since=0)
    plain = Decider(cp)
    changed = Decider(cp, material={"business_analyses": 5})
    assert plain.decide(s, "business_analyses").ok
    assert changed.decide(s, "business_analyses").reason == Reason.needs_acceptance
    assert "business_analyses" in plain.allowed_purposes(s)
    assert "business_analyses" not in changed.allowed_purposes(s)
    assert changed.decide_many([(s, "business_analyses")]) == [False]


def test_decision_reasons_are_readable() -> None:
    cp = compiled("filelocker")
    d: Decision = Decider(cp).decide(state(cp, "partner_offers", jurisdiction="eu"), "partner_offers")
    assert d.reasons() == {"user.contact.email": "no consent given"}


# --------------------------------------------------------------------------- batch form


@cache
def compiled_variant(name: str) -> CompiledPolicy:
    """The policy with every other purpose declared for its first jurisdiction only, so the
    batch test reaches the `purposes.<key>.jurisdictions` rule the examples do not use."""
    policy = compiled(name).policy
    first = next(iter(policy.jurisdictions))
    purposes = {
        k: p.model_copy(update={"jurisdictions": [first]}) if i % 2 else p
        for i, (k, p) in enumerate(policy.purposes.items())
    }
    return compile_policy(policy.model_copy(update={"purposes": purposes}))


@st.composite
def states_and_pairs(draw: st.DrawFn) -> tuple[str, bool, list[tuple[SubjectState, str]], bool]:
    name = draw(st.sampled_from(POLICIES))
    variant = draw(st.booleans())
    cp = compiled_variant(name) if variant else compiled(name)
    purposes = sorted(cp.purposes)
    settable = sorted(
        {p.condition.removeprefix("setting:") for p in cp.purposes.values() if p.condition} | {"other"}
    )
    choice = st.sampled_from(("given", "withdrawn", "expired"))
    subjects = []
    for i in range(draw(st.integers(1, 4))):
        subjects.append(
            SubjectState(
                subject_id=f"s{i}",
                kind=draw(st.sampled_from(sorted(cp.policy.subjects))),
                jurisdiction=draw(st.sampled_from([*cp.jurisdictions, "mars"])),
                # mostly people every rule applies to, so the later rules are reached
                status=draw(st.sampled_from(("active",) * 6 + ("closed", "erased"))),
                age_status=draw(st.sampled_from(("unknown", "adult", "adult", "adult", "under_age"))),
                consents=draw(st.dictionaries(st.sampled_from(purposes), choice, max_size=6)),
                objections=frozenset(draw(st.lists(st.sampled_from([*purposes, "*"]), max_size=3))),
                restricted=draw(st.sampled_from((False,) * 5 + (True,))),
                sale_opt_out=draw(st.booleans()),
                settings=draw(st.dictionaries(st.sampled_from(settable), st.sampled_from(("true", "false")))),
                data_since=draw(st.integers(0, 6)),
                accepted=draw(
                    st.dictionaries(st.sampled_from(["*", "*", *purposes]), st.integers(0, 6), max_size=3)
                ),
            )
        )
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(subjects), st.sampled_from([*purposes, "unknown"])), max_size=40)
    )
    return name, variant, pairs, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(states_and_pairs(), st.booleans())
def test_decide_many_equals_decide(
    drawn: tuple[str, bool, list[tuple[SubjectState, str]], bool], first: bool
) -> None:
    name, variant, pairs, gpc = drawn
    cp = compiled_variant(name) if variant else compiled(name)
    material = dict.fromkeys(sorted(cp.purposes)[::3], 4)
    decider = Decider(cp, material=material)
    # either order of asking: the caches filled by one must not change the other's answer
    if first:
        many = decider.decide_many(pairs, gpc=gpc)
        single = [decider.decide(s, p, gpc=gpc).ok for s, p in pairs]
    else:
        single = [decider.decide(s, p, gpc=gpc).ok for s, p in pairs]
        many = decider.decide_many(pairs, gpc=gpc)
    assert many == single
