"""fideslang interop: export validates with the fideslang models, import writes a draft that
loads, and a policy survives export -> files -> import."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from fideslang.models import Dataset as FDataset
from fideslang.models import Organization as FOrganization
from fideslang.models import System as FSystem

from fiduciary.policy import (
    CompiledPolicy,
    PolicyError,
    compile_policy,
    load_policy,
    load_policy_text,
)
from fiduciary.policy.interop import (
    custom_categories,
    export_fideslang,
    export_notes,
    fideslang_dataset,
    import_fideslang,
    manifest_yaml,
    validate_manifest,
    write_fideslang,
)

ROOT = Path(__file__).parent.parent
MINIMAL = Path(__file__).parent / "fixtures" / "minimal.yaml"
EXAMPLES = sorted(ROOT.glob("examples/*/policy.yaml"))
POLICIES = [MINIMAL, *EXAMPLES]
IDS = [p.parent.name if p != MINIMAL else "minimal" for p in POLICIES]
DAY = date(2024, 5, 1)


def compiled(path: Path) -> CompiledPolicy:
    try:
        return compile_policy(load_policy(path))
    except PolicyError as exc:  # an example still being written is not this room's test
        pytest.skip(f"{path} does not load yet: {exc.errors[0]}")


def assert_valid(manifest: dict[str, list[dict[str, Any]]]) -> None:
    assert set(manifest) == {"organization", "system", "dataset"}
    for res in manifest["organization"]:
        FOrganization.model_validate(res)
    for res in manifest["system"]:
        FSystem.model_validate(res)
    for res in manifest["dataset"]:
        FDataset.model_validate(res)


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("path", POLICIES, ids=IDS)
def test_export_validates_with_fideslang_models(path: Path) -> None:
    cp = compiled(path)
    manifest = export_fideslang(cp)
    assert_valid(manifest)
    service = manifest["system"][0]
    assert len(service["privacy_declarations"]) == len(cp.purposes)
    assert {d["data_use"] for d in service["privacy_declarations"]} == {p.use for p in cp.purposes.values()}
    assert len(manifest["dataset"]) == len(cp.policy.datastores)
    # Written as YAML, the files read back to the same resources.
    assert yaml.safe_load(manifest_yaml(manifest)) == manifest


def test_export_of_minimal_in_detail() -> None:
    cp = compiled(MINIMAL)
    manifest = export_fideslang(cp)
    (org,) = manifest["organization"]
    assert org["fides_key"] == "acme"
    assert org["controller"] == {
        "name": "Acme B.V.",
        "address": "Keizersgracht 1, Amsterdam, NL",
        "email": "privacy@acme.test",
    }
    service, mailer = manifest["system"]
    assert service["fides_key"] == "acme"
    assert service["organization_fides_key"] == "acme"
    assert service["responsibility"] == ["Controller"]
    assert service["dataset_references"] == ["app_db"]
    decls = {d["name"]: d for d in service["privacy_declarations"]}
    assert decls["Run the account"]["legal_basis_for_processing"] == "Contract"
    assert decls["Newsletter"]["legal_basis_for_processing"] == "Consent"
    assert decls["Diagnose problems"]["legal_basis_for_processing"] == "Legitimate interests"
    assert decls["Diagnose problems"]["data_categories"] == ["user.device.ip_address", "user.content.private"]
    assert decls["Newsletter"]["data_subjects"] == ["customer"]
    assert decls["Newsletter"]["egress"] == ["mailer"]
    assert decls["Newsletter"]["third_parties"] == "Mailer Inc. (processor, US)"
    assert decls["Newsletter"]["shared_categories"] == ["user.contact.email"]
    # A processor is not a third party.
    assert decls["Newsletter"]["data_shared_with_third_parties"] is False
    assert "logs: 90 days after collected then truncate" in decls["Diagnose problems"]["retention_period"]
    assert service["egress"] == [
        {"fides_key": "mailer", "type": "system", "data_categories": ["user.contact.email"]}
    ]
    assert service["does_international_transfers"] is True
    assert service["legal_basis_for_transfers"] == ["SCCs"]
    assert mailer["responsibility"] == ["Processor"]
    assert [d["name"] for d in mailer["privacy_declarations"]] == ["Newsletter"]
    assert manifest["dataset"] == [
        ds.model_dump(mode="json", exclude_none=True, by_alias=True) for ds in cp.policy.datastores
    ]


def test_custom_categories_are_noted() -> None:
    cp = compiled(MINIMAL)
    assert custom_categories(cp) == ["user.content.private.file"]
    assert any("user.content.private.file" in n for n in export_notes(cp))
    # fideslang checks only the key's shape, so the export still validates.
    assert_valid(export_fideslang(cp))


def test_validate_manifest_reports_bad_resources() -> None:
    with pytest.raises(PolicyError) as err:
        validate_manifest({"system": [{"fides_key": "bad key!", "system_type": "x"}]}, "out.yml")
    codes = {p.code for p in err.value.errors}
    assert codes == {"fideslang.invalid"}
    assert any("fides_key" in p.message for p in err.value.errors)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("path", POLICIES, ids=IDS)
def test_round_trip_keeps_purposes_categories_and_datastores(path: Path, tmp_path: Path) -> None:
    cp = compiled(path)
    files = write_fideslang(cp, tmp_path)
    expected = {"organization.yml", "system.yml"} | ({"dataset.yml"} if cp.policy.datastores else set())
    assert {f.name for f in files} == expected
    text = import_fideslang(files, effective=DAY)
    loaded = load_policy_text(text, "draft.yaml")  # no errors
    back = compile_policy(loaded)

    def purposes(c: CompiledPolicy) -> dict[str, tuple[str, str, tuple[str, ...]]]:
        return {k: (p.use, str(p.basis), tuple(sorted(p.declared_categories))) for k, p in c.purposes.items()}

    assert purposes(back) == purposes(cp)
    assert back.categories == cp.categories
    assert set(back.policy.categories) == set(cp.policy.categories)
    assert [fideslang_dataset(d) for d in back.policy.datastores] == [
        fideslang_dataset(d) for d in cp.policy.datastores
    ]
    if not any("data_type" in n for n in export_notes(cp)):
        assert back.policy.datastores == cp.policy.datastores
    # What System.meta carries comes back as written.
    assert back.policy.recipients == cp.policy.recipients
    assert back.policy.retention == cp.policy.retention
    assert {k: p.essential for k, p in back.purposes.items()} == {
        k: p.essential for k, p in cp.purposes.items()
    }
    assert back.policy.version == cp.policy.version


def test_import_is_deterministic(tmp_path: Path) -> None:
    files = write_fideslang(compiled(MINIMAL), tmp_path)
    assert import_fideslang(files, effective=DAY) == import_fideslang(files, effective=DAY)


# --------------------------------------------------------------------------- Fides manifests

SYSTEMS = """\
organization:
  - fides_key: default_organization
    name: Demo Co
    controller: {name: Demo Co Ltd, address: "1 Main Street, Dublin, IE", email: legal@demo.test}
    data_protection_officer: {name: Jane Doe, email: dpo@demo.test}
system:
  - fides_key: demo_app
    name: Demo App
    system_type: Application
    dataset_references: [demo_db]
    privacy_declarations:
      - name: Provide the service
        data_use: essential.service
        data_categories: [user.contact.email, user.name]
        data_subjects: [customer]
        legal_basis_for_processing: Contract
        retention_period: 30 days
      - name: Marketing emails
        data_use: marketing.communications.email
        data_categories: [user.contact.email]
        data_subjects: [customer, prospect]
  - fides_key: stripe
    name: Stripe
    system_type: Service
    responsibility: [Processor]
    privacy_declarations:
      - name: Payments
        data_use: essential.service.payment_processing
        data_categories: [user.financial]
        data_subjects: [customer]
        legal_basis_for_processing: Contract
data_category:
  - fides_key: user.content.private.upload
    name: Uploaded document
    parent_key: user.content.private
policy:
  - fides_key: default_policy
    rules: []
"""

DATASETS = """\
dataset:
  - fides_key: demo_db
    name: Demo database
    collections:
      - name: customers
        fields:
          - name: id
            fidesops_meta: {primary_key: true}
          - name: email
            data_categories: [user.contact.email]
            data_qualifier: aggregated.anonymized.unlinked_pseudonymized.pseudonymized.identified
            fides_meta: {identity: email, data_type: string}
      - name: uploads
        fields:
          - name: customer_id
            fides_meta:
              references: [{dataset: demo_db, field: customers.id, direction: from}]
          - name: body
            data_categories: [user.content.private.upload]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_import_of_a_fides_manifest_gives_a_loadable_policy(tmp_path: Path) -> None:
    files = [write(tmp_path, "systems.yml", SYSTEMS), write(tmp_path, "datasets.yml", DATASETS)]
    text = import_fideslang(files, effective=DAY)
    loaded = load_policy_text(text, "draft.yaml")
    assert not loaded.warnings or all(w.severity == "warning" for w in loaded.warnings)
    p = loaded.policy
    assert p.organization.name == "Demo Co"
    assert p.organization.controller.address == "1 Main Street, Dublin, IE"
    assert p.organization.dpo is not None and p.organization.dpo.email == "dpo@demo.test"
    assert p.organization.contact.email == "dpo@demo.test"
    assert p.effective == DAY
    assert set(p.purposes) == {"provide_the_service", "marketing_emails", "payments"}
    assert p.purposes["provide_the_service"].basis == "contract"
    assert p.purposes["payments"].use == "essential.service.payment_processing"
    # No basis in the manifest: guessed, and the draft says so.
    assert p.purposes["marketing_emails"].basis == "consent"
    assert "TODO: the manifest states no legal basis" in text
    assert p.purposes["marketing_emails"].subjects == ["customer", "prospect"]
    assert p.subjects["prospect"].fideslang == "prospect"
    # A processor system is a recipient of the data its declarations name.
    stripe = p.recipients["stripe"]
    assert stripe.role == "processor"
    assert stripe.purposes == ["payments"]
    assert stripe.categories == ["user.financial"]
    # Custom category named from its data_category resource.
    assert p.categories["user.content.private.upload"] is not None
    assert p.categories["user.content.private.upload"].name == "Uploaded document"
    # Datasets unchanged, but for the legacy keys fideslang 3 no longer has.
    (ds,) = p.datastores
    assert ds.fides_key == "demo_db"
    id_field = ds.collections[0].fields[0]
    assert id_field.fides_meta is not None and id_field.fides_meta.primary_key is True
    assert "dropped collections.0.fields.1.data_qualifier" in text
    # "30 days" becomes a rule to review.
    rule = p.retention["kept_30_days"]
    assert str(rule.period) == "30 days"
    assert set(rule.categories) == {"user.contact.email", "user.name"}
    assert "TODO: jurisdictions and rights are not in fideslang manifests" in text
    assert "ignored (not about a privacy policy):" in text
    assert set(p.jurisdictions) == {"eu", "us-ca", "row"}
    compile_policy(loaded)


def test_import_without_organization_uses_placeholders(tmp_path: Path) -> None:
    body = SYSTEMS.split("system:\n", 1)[1].split("data_category:", 1)[0]
    files = [write(tmp_path, "s.yml", "system:\n" + body)]
    text = import_fideslang(files, effective=DAY)
    p = load_policy_text(text).policy
    assert p.organization.name == "Demo App"
    assert "TODO: the controller's legal name and postal address" in text


def problems_of(tmp_path: Path, name: str, text: str) -> list[Any]:
    with pytest.raises(PolicyError) as err:
        import_fideslang([write(tmp_path, name, text)], effective=DAY)
    return err.value.errors


def test_manifest_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    (p,) = problems_of(tmp_path, "list.yml", "- fides_key: x\n")
    assert p.code == "fideslang.not_a_mapping"
    assert "list.yml" in p.message and "got a list" in p.message
    assert p.position is not None and p.position.file.endswith("list.yml")
    (p,) = problems_of(tmp_path, "empty.yml", "")
    assert p.code == "fideslang.not_a_mapping"
    assert "an empty document" in p.message


def test_unknown_resource_type_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    (p,) = problems_of(tmp_path, "typo.yml", "systems:\n  - fides_key: x\n")
    assert p.code == "fideslang.unknown_resource"
    assert "typo.yml" in p.message and "'systems'" in p.message
    assert p.suggestion == "did you mean 'system'?"
    assert p.position is not None and (p.position.line, p.position.column) == (1, 1)


def test_resource_list_and_resource_shape_are_checked(tmp_path: Path) -> None:
    (p,) = problems_of(tmp_path, "one.yml", "system:\n  fides_key: x\n")
    assert p.code == "fideslang.not_a_list"
    problems = problems_of(
        tmp_path, "bad.yml", "system:\n  - fides_key: app\n    name: App\n    system_type: Service\n"
    )
    assert [p.code for p in problems] == ["fideslang.invalid"]
    assert "privacy_declarations" in problems[0].message
    assert problems[0].position is not None and problems[0].position.line == 2


def test_missing_file_and_new_category_roots_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as err:
        import_fideslang([tmp_path / "nope.yml"])
    assert err.value.errors[0].code == "file.not_found"
    (p,) = problems_of(
        tmp_path,
        "root.yml",
        "system:\n  - fides_key: app\n    system_type: Service\n    privacy_declarations:\n"
        "      - {data_use: essential.service, data_categories: [custom.thing]}\n",
    )
    assert p.code == "fideslang.unknown_category_root"
    assert "custom.thing" in p.message
