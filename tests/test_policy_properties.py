"""Property tests: compile never crashes on valid policies; bad input only ever raises
PolicyError (never a stray exception that would crash the CLI or the server)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiduciary.policy import PolicyError, compile_policy, load_policy_text
from fiduciary.policy.model import Basis, ConsentMode, Role, Trigger
from fiduciary.policy.taxonomy import taxonomy

TAX = taxonomy()
CATEGORIES = sorted(k for k in TAX.categories if k.startswith("user."))
USES = sorted(TAX.uses)
EEA = ["NL", "DE", "FR", "IE"]
AWAY = ["US", "IN", "BR", "AU"]


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    cats = draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=8, unique=True))
    jurisdictions = {
        "eu": {
            "name": "EU",
            "law": "gdpr",
            "regions": ["EU"],
            "rights": {"access": {"deadline": "1 month", "extension": "2 months"}},
        },
        "row": {"name": "Rest", "law": "general", "regions": ["*"], "rights": {}},
    }
    purposes: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 6))):
        basis = draw(st.sampled_from(list(Basis)))
        essential = basis != Basis.consent and draw(st.booleans())
        p: dict[str, Any] = {
            "name": f"Purpose {i}",
            "use": draw(st.sampled_from(USES)),
            "basis": basis.value,
            "categories": draw(st.lists(st.sampled_from(cats), min_size=1, max_size=4, unique=True)),
            "essential": essential,
        }
        if not essential:
            modes = [
                m.value for m in ConsentMode if not (basis == Basis.consent and m == ConsentMode.notice_only)
            ]
            p["consent"] = draw(
                st.dictionaries(st.sampled_from(["eu", "row", "*"]), st.sampled_from(modes), max_size=3)
            )
        purposes[f"p{i}"] = p
    recipients: dict[str, Any] = {}
    for i in range(draw(st.integers(0, 4))):
        away = draw(st.booleans())
        r: dict[str, Any] = {
            "name": f"Recipient {i}",
            "role": draw(st.sampled_from([r.value for r in Role])),
            "country": draw(st.sampled_from(AWAY if away else EEA)),
            "categories": draw(st.lists(st.sampled_from(cats), max_size=3, unique=True)),
            "purposes": draw(st.lists(st.sampled_from(sorted(purposes)), max_size=2, unique=True)),
        }
        if away:
            r["transfer"] = draw(st.sampled_from(["scc", "dpf", "bcr", "consent"]))
        recipients[f"r{i}"] = r
    n_coll = draw(st.integers(0, 5))
    collections = []
    for i in range(n_coll):
        fields: list[dict[str, Any]] = [{"name": "id", "fides_meta": {"primary_key": True}}]
        if i == 0:
            fields.append(
                {"name": "email", "data_categories": [cats[0]], "fides_meta": {"identity": "email"}}
            )
        else:  # references only point back: a DAG, as a valid policy needs
            target = draw(st.integers(0, i - 1))
            fields.append(
                {
                    "name": "parent_id",
                    "fides_meta": {
                        "references": [
                            {
                                "dataset": "db",
                                "field": f"t{target}.id",
                                "direction": draw(st.sampled_from(["from", "to", None])),
                            }
                        ]
                    },
                }
            )
            fields.append({"name": "data", "data_categories": [draw(st.sampled_from(cats))]})
        collections.append({"name": f"t{i}", "fields": fields})
    return {
        "organization": {
            "name": "Org",
            "controller": {"email": "c@org.test"},
            "contact": {"email": "c@org.test"},
        },
        "version": "1",
        "effective": "2024-01-01",
        "jurisdictions": jurisdictions,
        "subjects": {"customer": {"name": "Customer"}},
        "categories": dict.fromkeys(cats),
        "purposes": purposes,
        "recipients": recipients,
        "retention": {
            "all": {
                "categories": cats,
                "trigger": draw(st.sampled_from([t.value for t in Trigger])),
                "period": "30 days",
            }
        },
        "datastores": [{"fides_key": "db", "collections": collections}] if collections else [],
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_compile_never_crashes_on_valid_policies(data: dict[str, Any]) -> None:
    loaded = load_policy_text(yaml.safe_dump(data, sort_keys=False))
    assert loaded.warnings == []
    cp = compile_policy(loaded)
    for key, purpose in cp.purposes.items():
        assert purpose.categories <= cp.categories
        for c in purpose.categories:
            assert key in cp.purposes_by_category[c]
        for j in ["eu", "row", "*", "unknown"]:
            mode = purpose.consent_mode(j) if j != "unknown" else purpose.consent_mode("*")
            assert mode in ConsentMode
        if purpose.essential:
            assert purpose.consent_mode("eu") == ConsentMode.notice_only
    assert cp.jurisdiction_for("DE") == "eu"
    assert cp.jurisdiction_for("JP") == "row"
    assert compile_policy(load_policy_text(yaml.safe_dump(data, sort_keys=False))).digest == cp.digest


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "organization",
                "version",
                "effective",
                "jurisdictions",
                "subjects",
                "categories",
                "purposes",
                "recipients",
                "retention",
                "datastores",
                "cookies",
                "children",
                "junk",
            ]
        ),
        json_like,
        max_size=8,
    )
)
def test_garbage_only_ever_raises_policy_error(data: dict[str, Any]) -> None:
    try:
        load_policy_text(yaml.safe_dump(data))
    except PolicyError as exc:
        assert exc.errors and all(p.message for p in exc.errors)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_ever_raises_policy_error(text: str) -> None:
    try:
        load_policy_text(text)
    except PolicyError as exc:
        assert exc.errors
