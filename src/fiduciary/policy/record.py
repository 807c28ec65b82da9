"""The GDPR Art. 30(1) record of processing activities (LAW-9), from the compiled policy.

One activity per purpose. Every column is derived from the policy, so the record cannot
drift from the notice or from what the running system enforces. The words are the
notice's (render.py), written for a supervisory authority rather than for the public:
fideslang keys are kept next to the human names.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import Contact, Role, Transfer
from fiduciary.policy.render import (
    BASIS_WORDS,
    ROLE_WORDS,
    TRANSFER_WORDS,
    category_name,
    country_name,
    humanise,
    recipients_for_purpose,
    retention_rules_for,
    retention_short,
    rule_categories,
    subject_name,
)

# (key, CSV header). The letters are those of Art. 30(1); legal basis is not in the list
# of Art. 30(1) but authorities ask for it first, so it travels with the purpose.
RECORD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("controller", "Controller name and contact details (Art. 30(1)(a))"),
    ("dpo", "Data protection officer (Art. 30(1)(a))"),
    ("representative", "Representative (Art. 30(1)(a))"),
    ("purpose", "Purpose of the processing (Art. 30(1)(b))"),
    ("purpose_key", "Purpose key"),
    ("data_use", "Data use (fideslang)"),
    ("legal_basis", "Legal basis (Art. 6(1))"),
    ("data_subjects", "Categories of data subjects (Art. 30(1)(c))"),
    ("personal_data", "Categories of personal data (Art. 30(1)(c))"),
    ("recipient_categories", "Categories of recipients (Art. 30(1)(d))"),
    ("recipients", "Named recipients (Art. 30(1)(d))"),
    ("transfers", "Transfers to third countries (Art. 30(1)(e))"),
    ("transfer_safeguards", "Transfer safeguards (Art. 30(1)(e))"),
    ("erasure_time_limits", "Time limits for erasure (Art. 30(1)(f))"),
    ("security_measures", "Technical and organisational security measures (Art. 30(1)(g))"),
)

RECORD_KEYS: tuple[str, ...] = tuple(k for k, _ in RECORD_COLUMNS)
RECORD_HEADERS: tuple[str, ...] = tuple(h for _, h in RECORD_COLUMNS)

_SEP = "; "


def _contact_text(c: Contact | None) -> str:
    if c is None:
        return ""
    parts = [c.name, c.address, c.email, c.phone, c.url]
    return ", ".join(p for p in parts if p)


def _security_text(cp: CompiledPolicy) -> str:
    parts = [
        f"{humanise(s.measure)}: {s.description}" if s.description else humanise(s.measure)
        for s in cp.policy.security
    ]
    for key, info in cp.policy.categories.items():
        if info and info.protection in ("hashed", "encrypted"):
            parts.append(f"{category_name(cp, key)} stored {info.protection}")
    if cp.policy.breaches:
        b = cp.policy.breaches
        parts.append(f"breach notification to the supervisory authority within {b.authority_within}")
    return _SEP.join(parts)


def _controller(cp: CompiledPolicy) -> str:
    org = cp.policy.organization
    text = _contact_text(org.controller)
    name = org.legal_name or org.name
    if name not in text:
        text = f"{name}, {text}" if text else name
    privacy = _contact_text(org.contact)
    if privacy and privacy != _contact_text(org.controller):
        text += f" (privacy contact: {privacy})"
    return text


def record_rows(cp: CompiledPolicy) -> list[dict[str, str]]:
    """One row per purpose, keyed by ``RECORD_KEYS``; every value a string."""
    org = cp.policy.organization
    controller = _controller(cp)
    dpo = _contact_text(org.dpo) or "none designated"
    representative = _contact_text(org.eu_representative) or "none designated"
    security = _security_text(cp)
    storage_outside = [c for c in org.storage if c.upper() not in _eea_or_adequate()]
    rows: list[dict[str, str]] = []
    for key, p in cp.purposes.items():
        subjects = sorted(p.subjects) or list(cp.policy.subjects)
        recipient_keys = recipients_for_purpose(cp, key, general=True)
        recipients = [cp.recipients[r] for r in recipient_keys]
        roles = sorted({r.source.role for r in recipients}, key=list(Role).index)
        transfers: list[str] = []
        safeguards: list[str] = []
        for r in recipients:
            src = r.source
            if r.outside_eea or (src.transfer and src.transfer != Transfer.none_needed):
                transfers.append(f"{src.name} ({country_name(src.country) or 'unknown'})")
                safeguards.append(
                    f"{src.name}: {TRANSFER_WORDS[src.transfer]}"
                    if src.transfer
                    else f"{src.name}: no safeguard stated"
                )
        for c in storage_outside:
            transfers.append(f"storage in {country_name(c)}")
        rules = retention_rules_for(cp, p.categories)
        rows.append(
            {
                "controller": controller,
                "dpo": dpo,
                "representative": representative,
                "purpose": p.name + (f": {p.source.description}" if p.source.description else ""),
                "purpose_key": key,
                "data_use": p.use,
                "legal_basis": f"{p.basis.value}: {BASIS_WORDS[p.basis]}",
                "data_subjects": _SEP.join(subject_name(cp, s) for s in subjects),
                "personal_data": _SEP.join(f"{category_name(cp, c)} ({c})" for c in p.declared_categories),
                "recipient_categories": _SEP.join(ROLE_WORDS[role][0] for role in roles),
                "recipients": _SEP.join(
                    f"{r.source.name} ({ROLE_WORDS[r.source.role][0].lower()})" for r in recipients
                ),
                "transfers": _SEP.join(transfers) or "none",
                "transfer_safeguards": _SEP.join(safeguards) or "not applicable",
                "erasure_time_limits": _SEP.join(
                    f"{_rule_scope(cp, rk, p.categories)}: {retention_short(cp.retention[rk])}"
                    for rk in rules
                ),
                "security_measures": security,
            }
        )
    return rows


def _rule_scope(cp: CompiledPolicy, rule_key: str, within: frozenset[str]) -> str:
    """The data of this purpose that a retention rule covers, by name."""
    cats = [c for c in rule_categories(cp, cp.retention[rule_key]) if c in within]
    return ", ".join(category_name(cp, c) for c in cats) or rule_key


def _eea_or_adequate() -> frozenset[str]:
    from fiduciary.policy.check import ADEQUATE, EEA

    return EEA | ADEQUATE


def record_csv(cp: CompiledPolicy) -> str:
    """The record as CSV: one header row with the Art. 30(1) column names, one row per
    purpose."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(RECORD_HEADERS)
    for row in record_rows(cp):
        writer.writerow([row[k] for k in RECORD_KEYS])
    return out.getvalue()


def record_json(cp: CompiledPolicy) -> dict[str, Any]:
    """The record as a JSON-ready dict: the controller block, the activities, and the
    policy version and digest it was generated from."""
    org = cp.policy.organization
    return {
        "record": "GDPR Art. 30(1) record of processing activities",
        "controller": {
            "name": org.legal_name or org.name,
            "contact": org.controller.model_dump(exclude_none=True),
            "privacy_contact": org.contact.model_dump(exclude_none=True),
            "dpo": org.dpo.model_dump(exclude_none=True) if org.dpo else None,
            "representative": (
                org.eu_representative.model_dump(exclude_none=True) if org.eu_representative else None
            ),
            "storage": list(org.storage),
        },
        "columns": dict(RECORD_COLUMNS),
        "activities": record_rows(cp),
        "generated_from": {
            "version": cp.version,
            "effective": cp.effective.isoformat(),
            "digest": cp.digest,
        },
    }


__all__ = [
    "RECORD_COLUMNS",
    "RECORD_HEADERS",
    "RECORD_KEYS",
    "record_csv",
    "record_json",
    "record_rows",
]
