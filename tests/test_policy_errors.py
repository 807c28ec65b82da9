"""Bad policies get a clear error: what, where (line:column), the value, and a fix.

Each case edits the valid fixture in one place and asserts the problem's code, message,
position and suggestion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fiduciary.policy import PolicyError, Problem, load_policy, load_policy_text

FIXTURE = Path(__file__).parent / "fixtures" / "minimal.yaml"
BASE = FIXTURE.read_text()


def pos_of(text: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based line and column of the nth occurrence of ``needle``."""
    idx = -1
    for _ in range(nth):
        idx = text.index(needle, idx + 1)
    line = text.count("\n", 0, idx) + 1
    col = idx - (text.rfind("\n", 0, idx) + 1) + 1
    return line, col


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, f"fixture lacks {old!r}"
    return text.replace(old, new, 1)


def problems(text: str) -> list[Problem]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text, "policy.yaml")
    return info.value.errors


def only(text: str, code: str) -> Problem:
    found = [p for p in problems(text) if p.code == code]
    assert found, f"no {code} problem; got {[str(p) for p in problems(text)]}"
    return found[0]


def at(p: Problem, line: int, col: int) -> None:
    assert p.position is not None
    assert p.position.file == "policy.yaml"
    assert (p.position.line, p.position.column) == (line, col), str(p)


def test_fixture_is_valid() -> None:
    loaded = load_policy(FIXTURE)
    assert loaded.warnings == []


def test_yaml_syntax_error_has_position() -> None:
    text = edit("  name: Acme\n", "  name: Acme\n   bad: indent\n")
    p = only(text, "yaml.syntax")
    assert "invalid YAML" in p.message
    assert p.position is not None and p.position.line == pos_of(text, "bad: indent")[0]


def test_duplicate_key_points_at_second() -> None:
    text = edit('version: "2.0"\n', 'version: "2.0"\nversion: "3.0"\n')
    p = only(text, "yaml.duplicate_key")
    assert "duplicate key 'version'" in p.message
    at(p, *pos_of(text, 'version: "3.0"'))


def test_not_a_mapping() -> None:
    p = only("- just\n- a list\n", "schema.not_a_mapping")
    at(p, 1, 1)


def test_unknown_top_level_key_suggests() -> None:
    text = edit("recipients:", "recipents:")
    p = only(text, "schema.unknown_key")
    assert p.value == "recipents"
    assert p.suggestion == "did you mean 'recipients'?"
    at(p, *pos_of(text, "recipents:"))


def test_unknown_nested_key_suggests() -> None:
    text = edit("    essential: true", "    essentail: true")
    p = only(text, "schema.unknown_key")
    assert p.path == ("purposes", "account", "essentail")
    assert p.suggestion == "did you mean 'essential'?"
    at(p, *pos_of(text, "essentail"))


def test_missing_required_key() -> None:
    text = edit("  contact: {email: privacy@acme.test}\n", "")
    p = only(text, "schema.missing")
    assert "missing required key 'contact'" in p.message
    at(p, *pos_of(text, "name: Acme"))


def test_bad_enum_value_suggests() -> None:
    text = edit("    basis: consent", "    basis: consnet")
    p = only(text, "schema.bad_value")
    assert "'consnet' is not allowed" in p.message and "legitimate_interest" in p.message
    assert p.suggestion == "did you mean 'consent'?"
    at(p, *pos_of(text, "consnet"))


def test_bad_period() -> None:
    text = edit("period: 90 days", "period: 90 dayz")
    p = only(text, "schema.bad_value")
    assert "unknown unit 'dayz'" in p.message
    at(p, *pos_of(text, "90 dayz"))


def test_period_without_unit() -> None:
    text = edit("period: 90 days", "period: 90")
    p = only(text, "schema.bad_value")
    assert "write '90 days'" in p.message


def test_wrong_type_list_expected() -> None:
    text = edit(
        "    categories: [user.contact.email]\n    subjects",
        "    categories: user.contact.email\n    subjects",
    )
    p = only(text, "schema.bad_type")
    assert "list" in p.message and "user.contact.email" in p.message
    at(p, *(*pos_of(text, "categories: user.contact.email", 1)[0:1], 17))


def test_bad_date() -> None:
    text = edit("effective: 2024-01-01", "effective: 2024-13-01")
    p = only(text, "schema.bad_type")
    at(p, *pos_of(text, "2024-13-01"))


def test_unknown_taxonomy_category_suggests() -> None:
    text = edit("  user.device.ip_address: {name: IP address}", "  user.device.ip_adress:")
    text = text.replace("[user.device.ip_address", "[user.device.ip_adress")
    p = only(text, "taxonomy.unknown_category")
    assert p.suggestion == "did you mean 'user.device.ip_address'?"
    at(p, *pos_of(text, "user.device.ip_adress:"))


def test_unknown_root_category() -> None:
    text = edit("  user.contact.email: {name: Email address}", "  usr.contact.email: {name: Email}")
    p = only(text, "taxonomy.unknown_category")
    assert "'usr.contact.email' is not a fideslang data category" in p.message
    assert p.suggestion == "did you mean 'user.contact.email'?"


def test_unknown_data_use_suggests() -> None:
    text = edit("use: marketing.communications.email", "use: marketing.comunications.email")
    p = only(text, "taxonomy.unknown_use")
    assert p.suggestion == "did you mean 'marketing.communications.email'?"
    at(p, *pos_of(text, "marketing.comunications.email"))


def test_purpose_uses_undeclared_category() -> None:
    text = edit(
        "    categories: [user.contact.email]\n    subjects",
        "    categories: [user.contact.email, user.name]\n    subjects",
    )
    p = only(text, "ref.undeclared_category")
    assert "'user.name'" in p.message
    assert p.path == ("purposes", "account", "categories", 1)
    at(p, *pos_of(text, "user.name]"))


def test_recipient_outside_eea_without_transfer() -> None:
    text = edit("    transfer: scc\n", "")
    p = only(text, "transfer.no_mechanism")
    assert "outside the EEA" in p.message and p.value == "US"
    at(p, *pos_of(text, "US\n"))


def test_recipient_in_adequate_country_needs_no_mechanism() -> None:
    text = edit("    country: US\n    transfer: scc\n", "    country: CH\n")
    load_policy_text(text)


def test_category_without_retention_warns() -> None:
    text = edit(
        "  logs:\n    categories: [user.device.ip_address]",
        "  logs:\n    categories: [user.content.private.file]",
    )
    loaded = load_policy_text(text, "policy.yaml")
    [w] = loaded.warnings
    assert w.code == "retention.missing" and w.severity == "warning"
    assert "'user.device.ip_address'" in w.message
    at(w, *pos_of(text, "{name: IP address}"))


def test_consent_purpose_marked_essential() -> None:
    text = edit('    consent: {eu: opt_in, "*": opt_out}', "    essential: true")
    p = only(text, "purpose.essential_consent")
    assert "cannot be essential" in p.message
    line, col = pos_of(text, "essential: true", 2)
    at(p, line, col + len("essential: "))


def test_reference_to_missing_collection() -> None:
    text = edit("field: users.id", "field: user.id")
    p = only(text, "ref.unknown_collection")
    assert "'app_db.user'" in p.message
    assert p.suggestion == "did you mean 'app_db.users'?"
    at(p, *pos_of(text, "user.id,"))


def test_reference_to_missing_field() -> None:
    text = edit("field: users.id", "field: users.uid")
    p = only(text, "ref.unknown_field")
    assert "'uid'" in p.message and p.suggestion == "did you mean 'id'?"


def test_reference_cycle() -> None:
    text = edit(
        "          - name: email\n",
        "          - name: last_file\n"
        "            fides_meta:\n"
        "              references: [{dataset: app_db, field: files.id, direction: from}]\n"
        "          - name: email\n",
    )
    p = only(text, "datastore.reference_cycle")
    assert "app_db.files -> app_db.users -> app_db.files" in p.message


def test_unknown_jurisdiction_in_consent() -> None:
    text = edit("consent: {eu: opt_in,", "consent: {europe: opt_in,")
    p = only(text, "ref.unknown_jurisdiction")
    assert p.suggestion == "did you mean 'eu'?"
    at(p, *pos_of(text, "europe"))


def test_unknown_purpose_in_recipient() -> None:
    text = edit("    purposes: [newsletter]", "    purposes: [newsleter]")
    p = only(text, "ref.unknown_purpose")
    assert p.suggestion == "did you mean 'newsletter'?"


def test_retention_rule_without_scope() -> None:
    text = edit("    categories: [user.device.ip_address]\n    trigger: collected", "    trigger: collected")
    p = only(text, "schema.bad_value")
    assert "needs categories or collections" in p.message


def test_truncate_without_block() -> None:
    text = edit("    truncate: {ipv4_prefix: 24, ipv6_prefix: 48}\n", "")
    p = only(text, "schema.bad_value")
    assert "'truncate' block" in p.message


def test_contact_without_any_channel() -> None:
    text = edit("  contact: {email: privacy@acme.test}", "  contact: {name: Privacy team}")
    p = only(text, "schema.bad_value")
    assert "at least one of email" in p.message


def test_every_error_reported_in_one_pass() -> None:
    text = edit("    purposes: [newsletter]", "    purposes: [newsleter]")
    text = edit("use: marketing.communications.email", "use: marketing.comunications.email", text)
    codes = {p.code for p in problems(text)}
    assert {"ref.unknown_purpose", "taxonomy.unknown_use"} <= codes


def test_missing_file_is_an_error() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("/nonexistent/policy.yaml")
    assert info.value.errors[0].code == "file.not_found"


def test_recursive_alias_is_refused() -> None:
    p = only("a: &x [*x]\n", "yaml.syntax")
    assert "cycle" in p.message


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    p = only("\n".join(lines) + "\n", "yaml.syntax")
    assert "expands to more than" in p.message


def test_python_tags_are_refused() -> None:
    p = only("organization: !!python/object/apply:os.system [echo]\n", "yaml.syntax")
    assert "python/object/apply:os.system" in p.message
    at(p, 1, 15)


def test_data_type_fideslang_lacks() -> None:
    text = edit("fides_meta: {identity: email}", "fides_meta: {identity: email, data_type: datetime}")
    p = only(text, "datastore.bad_data_type")
    assert "'datetime' is not a fideslang data type" in p.message
    assert p.suggestion and "string" in p.suggestion
    at(p, *pos_of(text, "datetime"))


def test_unknown_masking_strategy() -> None:
    text = edit(
        "fides_meta: {identity: email}",
        "fides_meta: {identity: email, masking_strategy_override: {strategy: hmca}}",
    )
    p = only(text, "datastore.unknown_masking")
    assert p.suggestion == "did you mean 'hmac'?"


def test_yaml_12_booleans_keep_country_codes_and_numbers_as_text() -> None:
    # YAML 1.1 reads NO (Norway) as false and 2.0 as a number; a policy means the text.
    text = edit("  storage: [NL]", "  storage: [NL, NO]")
    text = edit('version: "2.0"', "version: 2.0", text)
    text = edit('{version: "2.0",', "{version: 2.0,", text)
    text = edit(
        "fides_meta: {identity: email}",
        "fides_meta: {identity: email, masking_strategy_override: {strategy: null}}",
        text,
    )
    loaded = load_policy_text(text)
    assert loaded.policy.organization.storage == ["NL", "NO"]
    assert loaded.policy.version == "2.0"
    field = loaded.policy.datastores[0].collections[0].fields[1]
    assert field.fides_meta and field.fides_meta.masking_strategy_override
    assert field.fides_meta.masking_strategy_override.strategy == "null"
