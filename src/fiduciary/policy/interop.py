"""fideslang interop: export a policy as Fides manifests, import manifests as a draft.

Export gives what the Fides CLI reads (top-level ``organization``, ``system`` and
``dataset`` lists): one System for the service with one PrivacyDeclaration per purpose,
one System per processor or third party it sends data to (Fides models vendors as
systems) joined by egress DataFlows, the datastores as Datasets unchanged, and the
Organization with its contacts. Every resource is validated with the fideslang models.
What fideslang has no field for (purpose keys and settings such as essential or consent
modes, subject kinds, category definitions, retention rules as written, recipients that
are no system) rides in ``System.meta.fiduciary``, so an export imports back faithfully.
``export_notes`` lists the custom categories a Fides server must be told about.

Import goes the other way for teams that keep Fides manifests: it writes a draft
``policy.yaml`` with TODO comments where a manifest says nothing (jurisdictions, rights,
consent, retention triggers). The draft always loads; the review is the team's.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from fideslang.models import (
    DataCategory as FDataCategory,
)
from fideslang.models import (
    Dataset as FDataset,
)
from fideslang.models import (
    DataSubject as FDataSubject,
)
from fideslang.models import (
    DataUse as FDataUse,
)
from fideslang.models import (
    Organization as FOrganization,
)
from fideslang.models import (
    System as FSystem,
)
from pydantic import BaseModel, ValidationError

from fiduciary.policy.compile import CompiledPolicy, CompiledPurpose, CompiledRecipient
from fiduciary.policy.model import (
    Basis,
    Category,
    Contact,
    Dataset,
    Purpose,
    Recipient,
    RetentionAction,
    RetentionRule,
    Role,
    Subject,
    Transfer,
    Trigger,
)
from fiduciary.policy.period import Period, PeriodError
from fiduciary.policy.problems import PolicyError, Problem
from fiduciary.policy.source import DataPath, Position, SourceMap, YamlSyntaxError, parse_yaml
from fiduciary.policy.taxonomy import ancestors, known_root, label, related, suggest, taxonomy

# fideslang's LegalBasisForProcessingEnum values, by our basis.
BASIS_TO_FIDESLANG: dict[Basis, str] = {
    Basis.consent: "Consent",
    Basis.contract: "Contract",
    Basis.legal_obligation: "Legal obligations",
    Basis.vital_interest: "Vital interests",
    Basis.public_task: "Public interest",
    Basis.legitimate_interest: "Legitimate interests",
}
FIDESLANG_TO_BASIS: dict[str, Basis] = {v.lower(): k for k, v in BASIS_TO_FIDESLANG.items()}

# The wording Fides uses for transfer mechanisms (System.legal_basis_for_transfers).
_TRANSFER_TEXT: dict[Transfer, str] = {
    Transfer.adequacy: "Adequacy Decision",
    Transfer.dpf: "Adequacy Decision",
    Transfer.scc: "SCCs",
    Transfer.bcr: "BCRs",
    Transfer.consent: "Other",
    Transfer.contract: "Other",
    Transfer.legal_claims: "Other",
    Transfer.none_needed: "Other",
}

# Recipients Fides can model as systems; authorities, other users and the public are
# named in the declarations' third_parties text instead.
_SYSTEM_ROLES = (Role.processor, Role.third_party, Role.affiliate, Role.advertiser)

RESOURCE_TYPES = ("organization", "system", "dataset", "data_category", "data_subject", "data_use")
# Fides resource types that say nothing a privacy policy needs; skipped with a note.
IGNORED_TYPES = ("policy", "registry", "evaluation", "fides_model")

_RETENTION_PART = re.compile(
    r"^(?P<key>[a-z][a-z0-9_\-]*): (?:(?P<period>.+?) after|at) (?P<trigger>[a-z_]+)"
    r"(?: then (?P<action>[a-z_]+))? \((?P<cats>[^)]*)\)$"
)


def slug(text: str, default: str = "service") -> str:
    """A fides_key / policy key from a name: lower case, ASCII, words joined by '_'."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    out = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    if not out:
        return default
    return out if out[0].isalpha() else f"{default}_{out}"


# --------------------------------------------------------------------------- export


def export_fideslang(cp: CompiledPolicy) -> dict[str, list[dict[str, Any]]]:
    """The policy as fideslang resources: ``{"organization": [...], "system": [...],
    "dataset": [...]}``. Raises PolicyError if a resource does not validate."""
    policy = cp.policy
    org_key = slug(policy.organization.name, "organization")
    system_key = org_key
    used_keys = {system_key}
    recipient_systems: dict[str, str] = {}  # recipient key -> system fides_key
    for key, rec in sorted(cp.recipients.items()):
        if rec.source.role in _SYSTEM_ROLES:
            sk = key if key not in used_keys else f"recipient_{key}"
            used_keys.add(sk)
            recipient_systems[key] = sk

    names = _declaration_names(cp)
    declarations = [
        _declaration(cp, key, p, names[key], recipient_systems) for key, p in cp.purposes.items()
    ]
    org = policy.organization
    transfers = sorted(
        {
            _TRANSFER_TEXT[r.source.transfer]
            for r in cp.recipients.values()
            if r.outside_eea and r.source.transfer is not None
        }
    )
    lifetimes = [c.lifetime for c in policy.cookies if not c.lifetime.is_session]
    meta = {
        "fiduciary": {
            "policy_version": policy.version,
            "effective": policy.effective.isoformat(),
            # Per declaration: our purpose key and what fideslang has no field for
            # (essential, consent modes, objection ...). use, basis and categories are the
            # declaration's own.
            "purposes": {
                names[key]: {"key": key, **_extras(p)} for key, p in cp.purposes.items()
            },
            "subjects": {
                key: s.model_dump(mode="json", exclude_defaults=True, by_alias=True)
                for key, s in policy.subjects.items()
            },
            "categories": {
                key: info.model_dump(mode="json", exclude_defaults=True, by_alias=True) if info else {}
                for key, info in policy.categories.items()
            },
            # The rules as written (collections, legal minimums); declarations carry text.
            "retention": {
                key: rule.model_dump(mode="json", exclude_defaults=True, by_alias=True)
                for key, rule in policy.retention.items()
            },
            # Recipients Fides has no system for (authorities, other users, the public).
            "recipients": {
                key: _definition(r.source)
                for key, r in sorted(cp.recipients.items())
                if key not in recipient_systems
            },
        }
    }
    system: dict[str, Any] = {
        "fides_key": system_key,
        "organization_fides_key": org_key,
        "name": org.name,
        "description": f"Personal data processing of {org.name}, as declared in its privacy "
        f"policy version {policy.version} (effective {policy.effective.isoformat()}).",
        "system_type": "Service",
        "meta": meta,
        "privacy_declarations": declarations,
        "dataset_references": [ds.fides_key for ds in policy.datastores],
        "processes_personal_data": True,
        "responsibility": ["Controller"],
        "legal_name": org.legal_name or org.controller.name,
        "legal_address": org.controller.address,
        "dpo": _contact_text(org.dpo) if org.dpo else None,
        "does_international_transfers": any(r.outside_eea for r in cp.recipients.values()),
        "legal_basis_for_transfers": transfers,
        "uses_cookies": bool(policy.cookies),
        "cookie_max_age_seconds": (
            round(max(p.approx_days() for p in lifetimes) * 86400) if lifetimes else None
        ),
        "data_security_practices": "; ".join(s.measure for s in policy.security) or None,
    }
    if recipient_systems:
        system["egress"] = [
            _flow(recipient_systems[key], cp.recipients[key]) for key in sorted(recipient_systems)
        ]
    systems = [_drop_none(system)]
    for key, sk in sorted(recipient_systems.items()):
        systems.append(_recipient_system(cp, key, sk, org_key, names))

    organization = _drop_none(
        {
            "fides_key": org_key,
            "name": org.name,
            "description": org.legal_name,
            "controller": _contact_details(org.controller),
            "data_protection_officer": _contact_details(org.dpo),
            "representative": _contact_details(org.eu_representative),
        }
    )
    datasets = [fideslang_dataset(ds) for ds in policy.datastores]

    manifest = {"organization": [organization], "system": systems, "dataset": datasets}
    validate_manifest(manifest, "<export>")
    return manifest


def fideslang_dataset(ds: Dataset) -> dict[str, Any]:
    """A datastore in the fideslang Dataset shape (load already refused data types that
    fideslang does not know)."""
    data: dict[str, Any] = ds.model_dump(mode="json", exclude_none=True, by_alias=True)
    return data


def export_notes(cp: CompiledPolicy) -> list[str]:
    """What a reader of the export should know: the custom categories."""
    return [
        f"category {c!r} is not in the fideslang taxonomy; declare it as a data_category "
        "resource on a Fides server"
        for c in custom_categories(cp)
    ]


def custom_categories(cp: CompiledPolicy) -> list[str]:
    """Categories the policy uses that are not in the fideslang taxonomy (its own children).

    fideslang checks only the shape of a key, so these pass validation; a Fides server
    needs them declared as data_category resources.
    """
    tax = taxonomy().categories
    return sorted(c for c in cp.categories if c not in tax)


def manifest_yaml(resources: Mapping[str, list[dict[str, Any]]]) -> str:
    """One manifest file's text (the Fides CLI reads any number of these)."""
    return yaml.dump(dict(resources), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def write_fideslang(cp: CompiledPolicy, directory: Path) -> list[Path]:
    """Write the export as ``organization.yml``, ``system.yml`` and ``dataset.yml``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, resources in export_fideslang(cp).items():
        if not resources:
            continue
        path = directory / f"{kind}.yml"
        path.write_text(manifest_yaml({kind: resources}), encoding="utf-8")
        written.append(path)
    return written


def validate_manifest(manifest: Mapping[str, list[dict[str, Any]]], file: str) -> None:
    """Validate every resource with its fideslang model; raise PolicyError if any fails."""
    models: dict[str, type[BaseModel]] = {
        "organization": FOrganization,
        "system": FSystem,
        "dataset": FDataset,
        "data_category": FDataCategory,
        "data_subject": FDataSubject,
        "data_use": FDataUse,
    }
    problems: list[Problem] = []
    for kind, resources in manifest.items():
        model = models.get(kind)
        if model is None:
            continue
        for i, res in enumerate(resources):
            try:
                model.model_validate(res)
            except ValidationError as exc:
                problems.extend(_fideslang_problems(exc, file, kind, i, None))
    if problems:
        raise PolicyError(problems)


def _declaration_names(cp: CompiledPolicy) -> dict[str, str]:
    """Declaration names, unique (Fides sorts declarations by name)."""
    counts: dict[str, int] = {}
    for p in cp.purposes.values():
        counts[p.name] = counts.get(p.name, 0) + 1
    return {k: p.name if counts[p.name] == 1 else f"{p.name} ({k})" for k, p in cp.purposes.items()}


def _fides_subjects(cp: CompiledPolicy, p: CompiledPurpose) -> list[str]:
    subjects = cp.policy.subjects
    keys = p.source.subjects or list(subjects)
    out = sorted({subjects[k].fideslang or "customer" for k in keys if k in subjects})
    return out or ["customer"]


def _retention_text(cp: CompiledPolicy, p: CompiledPurpose | None) -> str | None:
    """Retention of a purpose's data (all data if None), as rules:
    ``key: 30 days after collected (cats)``."""
    by_rule: dict[str, set[str]] = {}
    for c in p.categories if p is not None else cp.categories:
        for rk in cp.retention_by_category.get(c, ()):
            by_rule.setdefault(rk, set()).add(c)
    parts = []
    for rk in sorted(by_rule):
        rule = cp.retention[rk]
        when = f"{rule.period} after {rule.trigger}" if rule.period is not None else f"at {rule.trigger}"
        if rule.action != "delete":
            when += f" then {rule.action}"
        parts.append(f"{rk}: {when} ({', '.join(sorted(by_rule[rk]))})")
    return "; ".join(parts) or None


def _recipient_categories(r: CompiledRecipient, p: CompiledPurpose) -> list[str]:
    """What of a purpose's declared data a recipient gets (all of it if it lists none)."""
    if not r.source.categories:
        return list(p.declared_categories)
    return [c for c in p.declared_categories if any(related(c, rc) for rc in r.source.categories)]


def _declaration(
    cp: CompiledPolicy,
    key: str,
    p: CompiledPurpose,
    name: str,
    recipient_systems: Mapping[str, str],
) -> dict[str, Any]:
    recipients = [cp.recipients[r] for r in sorted(cp.recipients_by_purpose.get(key, ()))]
    shared = sorted({c for r in recipients for c in _recipient_categories(r, p)})
    datasets = sorted(
        {coll.datastore for coll in cp.collections.values() if any(
            related(c, pc) for c in coll.categories for pc in p.declared_categories
        )}
    )
    egress = [recipient_systems[r.key] for r in recipients if r.key in recipient_systems]
    sensitive = any(cp.policy.category_info(c).sensitive for c in p.categories)
    return _drop_none(
        {
            "name": name,
            "data_use": p.use,
            "data_categories": list(p.declared_categories),
            "data_subjects": _fides_subjects(cp, p),
            "dataset_references": datasets or None,
            "egress": egress or None,
            # The policy fixes the basis; a notice may not swap it.
            "flexible_legal_basis_for_processing": False,
            "legal_basis_for_processing": BASIS_TO_FIDESLANG[p.basis],
            "retention_period": _retention_text(cp, p),
            "processes_special_category_data": sensitive,
            "data_shared_with_third_parties": any(r.source.role != Role.processor for r in recipients),
            "third_parties": "; ".join(_recipient_text(r) for r in recipients) or None,
            "shared_categories": shared,
        }
    )


def _recipient_text(r: CompiledRecipient) -> str:
    where = f", {r.source.country.upper()}" if r.source.country else ""
    return f"{r.source.name} ({r.source.role}{where})"


def _flow(system_key: str, r: CompiledRecipient) -> dict[str, Any]:
    return _drop_none(
        {
            "fides_key": system_key,
            "type": "system",
            "data_categories": list(r.source.categories) or None,
        }
    )


def _recipient_system(
    cp: CompiledPolicy, key: str, system_key: str, org_key: str, names: Mapping[str, str]
) -> dict[str, Any]:
    r = cp.recipients[key]
    src = r.source
    declarations = []
    for pk in sorted(r.purposes):
        p = cp.purposes[pk]
        declarations.append(
            {
                "name": names[pk],
                "data_use": p.use,
                "data_categories": _recipient_categories(r, p) or list(p.declared_categories),
                "data_subjects": _fides_subjects(cp, p),
                "flexible_legal_basis_for_processing": False,
                "legal_basis_for_processing": BASIS_TO_FIDESLANG[p.basis],
            }
        )
    meta = {"fiduciary": {"recipient": key, "definition": _definition(src)}}
    url = src.privacy_policy if src.privacy_policy and src.privacy_policy.startswith("http") else None
    return _drop_none(
        {
            "fides_key": system_key,
            "organization_fides_key": org_key,
            "name": src.name,
            "description": src.description,
            "system_type": "Processor" if src.role == Role.processor else "Third Party",
            "meta": meta,
            "privacy_declarations": declarations,
            "responsibility": ["Processor"] if src.role == Role.processor else ["Controller"],
            "legal_address": src.address,
            "does_international_transfers": r.outside_eea,
            "legal_basis_for_transfers": (
                [_TRANSFER_TEXT[src.transfer]] if r.outside_eea and src.transfer else []
            ),
            "privacy_policy": url,
        }
    )


_DECLARED = ("name", "use", "basis", "categories")


def _extras(p: CompiledPurpose) -> dict[str, Any]:
    data = p.source.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    return {k: v for k, v in data.items() if k not in _DECLARED}


def _definition(r: Recipient) -> dict[str, Any]:
    """A recipient as the policy states it, for System.meta (fideslang has no place)."""
    data: dict[str, Any] = r.model_dump(mode="json", exclude_defaults=True, by_alias=True)
    return data


def _contact_text(c: Contact) -> str:
    return c.email or c.url or c.phone or c.address or c.name or ""


def _contact_details(c: Contact | None) -> dict[str, str] | None:
    if c is None:
        return None
    out = {
        "name": c.name or "",
        "address": c.address or (c.url or ""),
        "email": c.email or "",
        "phone": c.phone or "",
    }
    return {k: v for k, v in out.items() if v}


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors or aliases, lists indented under their key."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


# --------------------------------------------------------------------------- import


@dataclass
class _Manifest:
    """The resources read from all files, each with where it came from."""

    organizations: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    systems: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    datasets: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    category_names: dict[str, str] = field(default_factory=dict)
    subject_names: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


@dataclass
class _DraftPurpose:
    key: str
    data: dict[str, Any]
    notes: list[str]


def import_fideslang(paths: Iterable[Path | str], *, effective: date | None = None) -> str:
    """Read fideslang manifest files and write a draft ``policy.yaml`` text.

    The draft loads with ``load_policy_text`` without errors; warnings (such as a
    category without a retention rule) are review items, as are the TODO comments.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise PolicyError([Problem("fideslang.no_files", "no fideslang manifest files given", None)])
    manifest = _read_manifests(files)
    if not manifest.systems and not manifest.datasets:
        raise PolicyError(
            [
                Problem(
                    "fideslang.empty",
                    "the manifests hold no system or dataset: nothing to make a policy from",
                    None,
                    value=", ".join(str(f) for f in files),
                )
            ]
        )
    text = _Drafter(manifest, files, effective or date.today()).draft()

    from fiduciary.policy.load import load_policy_text

    try:
        load_policy_text(text, "<imported policy.yaml>")
    except PolicyError as exc:
        # The draft is ours: a failure here means the manifests hold something the policy
        # language cannot take (reported as is, with the draft's positions).
        raise PolicyError(
            [
                Problem(
                    "fideslang.draft_invalid",
                    "the draft made from the manifests does not load: " + p.message,
                    p.position,
                    p.path,
                    p.value,
                    p.suggestion,
                )
                for p in exc.errors
            ]
        ) from None
    return text


def _read_manifests(files: list[Path]) -> _Manifest:
    out = _Manifest()
    problems: list[Problem] = []
    models: dict[str, type[BaseModel]] = {
        "organization": FOrganization,
        "system": FSystem,
        "dataset": FDataset,
        "data_category": FDataCategory,
        "data_subject": FDataSubject,
        "data_use": FDataUse,
    }
    for path in files:
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            problems.append(Problem("file.not_found", f"no such manifest file: {name}", None, value=name))
            continue
        except UnicodeDecodeError as exc:
            problems.append(Problem("file.encoding", f"{name} is not UTF-8 text ({exc.reason})", None))
            continue
        try:
            data, smap = parse_yaml(text, name)
        except YamlSyntaxError as exc:
            problems.append(Problem("yaml.syntax", exc.message, exc.position))
            continue
        if not isinstance(data, dict):
            problems.append(
                Problem(
                    "fideslang.not_a_mapping",
                    f"{name} is not a fideslang manifest: expected a mapping with keys such as "
                    f"system, dataset and organization, got {_describe(data)}",
                    smap.value(()) or Position(name, 1, 1),
                )
            )
            continue
        for kind, resources in data.items():
            if kind in IGNORED_TYPES:
                out.ignored.append(f"{name}: {kind}")
                continue
            if kind not in RESOURCE_TYPES:
                near = suggest(kind, RESOURCE_TYPES)
                problems.append(
                    Problem(
                        "fideslang.unknown_resource",
                        f"{name}: {kind!r} is not a fideslang resource type this importer reads "
                        f"(expected {', '.join(RESOURCE_TYPES)})",
                        smap.key((kind,)),
                        (kind,),
                        kind,
                        f"did you mean {near[0]!r}?" if near else None,
                    )
                )
                continue
            if not isinstance(resources, list):
                problems.append(
                    Problem(
                        "fideslang.not_a_list",
                        f"{name}: {kind!r} must be a list of resources, got {_describe(resources)}",
                        smap.value((kind,)),
                        (kind,),
                    )
                )
                continue
            for i, res in enumerate(resources):
                if not isinstance(res, dict):
                    problems.append(
                        Problem(
                            "fideslang.not_a_mapping",
                            f"{name}: {kind}[{i}] must be a mapping, got {_describe(res)}",
                            smap.value((kind, i)),
                            (kind, i),
                        )
                    )
                    continue
                try:
                    models[kind].model_validate(res)
                except ValidationError as exc:
                    problems.extend(_fideslang_problems(exc, name, kind, i, smap))
                    continue
                _collect(out, kind, res, name)
    if problems:
        raise PolicyError(problems)
    return out


def _collect(out: _Manifest, kind: str, res: dict[str, Any], file: str) -> None:
    if kind == "organization":
        out.organizations.append((res, file))
    elif kind == "system":
        out.systems.append((res, file))
    elif kind == "dataset":
        out.datasets.append((res, file))
    elif kind == "data_category" and res.get("name"):
        out.category_names[res["fides_key"]] = str(res["name"])
    elif kind == "data_subject" and res.get("name"):
        out.subject_names[res["fides_key"]] = str(res["name"])


def _fideslang_problems(
    exc: ValidationError, file: str, kind: str, index: int, smap: SourceMap | None
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc: DataPath = (kind, index, *(p for p in err["loc"] if isinstance(p, str | int)))
        pos = (smap.value(loc) if smap else None) or Position(file, 1, 1)
        where = ".".join(str(p) for p in loc[2:]) or "resource"
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        problems.append(
            Problem(
                "fideslang.invalid",
                f"{file}: {kind}[{index}] {where}: {msg}",
                pos,
                loc,
                err.get("input") if isinstance(err.get("input"), str | int | float) else None,
            )
        )
    return problems


def _describe(value: Any) -> str:
    if value is None:
        return "an empty document"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _clean_dataset(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The dataset as given, minus keys the fideslang 3 shape no longer has (data_qualifier,
    retention ...); ``fidesops_meta`` becomes ``fides_meta`` as fideslang itself does."""
    data = _rename_key(raw, "fidesops_meta", "fides_meta")
    dropped: list[str] = []
    for _ in range(1000):  # each round drops at least one key
        try:
            Dataset.model_validate(data)
            return data, dropped
        except ValidationError as exc:
            extra = [e["loc"] for e in exc.errors() if e["type"] == "extra_forbidden"]
            if not extra:
                raise
            for loc in extra:
                _delete_at(data, loc)
                dropped.append(".".join(str(p) for p in loc))
    return data, dropped


def _rename_key(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {
            (new if k == old and new not in value else k): _rename_key(v, old, new)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rename_key(v, old, new) for v in value]
    return value


def _delete_at(data: Any, loc: tuple[int | str, ...]) -> None:
    node = data
    for part in loc[:-1]:
        node = node[part]
    if isinstance(node, dict):
        node.pop(loc[-1], None)


def _walk_categories(node: Any) -> Iterable[str]:
    """Every data_categories entry anywhere in a dataset."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data_categories" and isinstance(value, list):
                yield from (str(c) for c in value)
            else:
                yield from _walk_categories(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_categories(item)


def _fiduciary_meta(res: Mapping[str, Any]) -> dict[str, Any]:
    meta = res.get("meta")
    inner = meta.get("fiduciary") if isinstance(meta, dict) else None
    return inner if isinstance(inner, dict) else {}


_DEFAULT_JURISDICTIONS = """\
# TODO: jurisdictions and rights are not in fideslang manifests. Below is the default
#       block (GDPR, CCPA/CPRA, rest of the world): keep what applies to you, add your
#       supervisory authority, and adjust deadlines, channels and verification.
jurisdictions:
  eu:
    name: European Economic Area and UK (GDPR)
    law: gdpr
    regions: [EU, EEA, GB]
    default_consent: opt_in
    minimum_age: 16
    rights:
      access:
        {deadline: 1 month, extension: 2 months, verification: email_code, channels: [privacy_center, email]}
      portability: {deadline: 1 month, extension: 2 months, verification: email_code}
      rectify:
        deadline: 1 month
        extension: 2 months
        verification: signed_in
        channels: [account_settings, privacy_center]
      erase: {deadline: 1 month, extension: 2 months, verification: email_code}
      restrict: {deadline: 1 month, extension: 2 months, verification: email_code}
      object: {deadline: 1 month, extension: 2 months, verification: email_code}
      withdraw_consent:
        {deadline: 1 month, verification: none, channels: [privacy_center, unsubscribe_link]}
  us-ca:
    name: California (CCPA/CPRA)
    law: ccpa
    regions: [US-CA]
    acknowledge: 10 business days
    gpc: opt_out
    records_kept: 24 months
    non_discrimination: true
    default_consent: opt_out
    minimum_age: 13
    rights:
      access: {deadline: 45 days, extension: 45 days, verification: two_data_points}
      erase: {deadline: 45 days, extension: 45 days, verification: two_data_points}
      rectify: {deadline: 45 days, extension: 45 days, verification: two_data_points}
      opt_out_of_sale:
        {deadline: 15 business days, verification: none, channels: [privacy_center, gpc_signal]}
  row:
    name: Rest of the world
    law: general
    regions: ["*"]
    minimum_age: 13
    rights:
      access: {deadline: 30 days, verification: email_code}
      erase: {deadline: 30 days, verification: email_code}
"""
_JURISDICTION_KEYS = ("eu", "us-ca", "row", "*")


class _Drafter:
    def __init__(self, manifest: _Manifest, files: list[Path], effective: date) -> None:
        self.m = manifest
        self.files = files
        self.effective = effective
        self.categories: dict[str, dict[str, Any]] = {}  # key -> its definition
        self.category_defs: dict[str, dict[str, Any]] = {}  # from fiduciary's own export
        self.subjects: dict[str, dict[str, Any]] = {}
        self.purposes: dict[str, _DraftPurpose] = {}
        self.recipients: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self.retention: dict[str, dict[str, Any]] = {}
        self.rules_from_meta = False
        self.declared_only = False
        self.notes: list[str] = []  # header TODOs
        self.problems: list[Problem] = []

    # -- building blocks
    def category(self, key: str, where: str) -> None:
        if key in self.categories:
            return
        if self.declared_only and any(related(key, k) for k in self.categories):
            return
        tax = taxonomy().categories
        if known_root(key, "category") is None:
            self.problems.append(
                Problem(
                    "fideslang.unknown_category_root",
                    f"{where}: category {key!r} is not below any fideslang data category; "
                    "a policy may add children of fideslang categories, not new roots",
                    None,
                    value=key,
                )
            )
            return
        for anc in reversed(ancestors(key)):
            if anc not in tax and anc not in self.categories:
                self.categories[anc] = self.category_definition(anc)
        self.categories[key] = self.category_definition(key)

    def category_definition(self, key: str) -> dict[str, Any]:
        known = self.category_defs.get(key)
        if known is not None:
            return known
        name = self.m.category_names.get(key)
        if name:
            return {"name": name}
        # A custom child must have a name; a taxonomy key has fideslang's.
        return {} if key in taxonomy().categories else {"name": label(key)}

    def subject(self, fides_key: str) -> str:
        key = slug(fides_key, "subject")
        if key not in self.subjects:
            known = fides_key in taxonomy().subjects
            entry: dict[str, Any] = {
                "name": self.m.subject_names.get(fides_key) or label(fides_key, "subject")
            }
            if known:
                entry["fideslang"] = fides_key
            self.subjects[key] = entry
        return key

    def basis(self, decl: Mapping[str, Any], notes: list[str]) -> str:
        given = decl.get("legal_basis_for_processing")
        if isinstance(given, str) and given.lower() in FIDESLANG_TO_BASIS:
            return str(FIDESLANG_TO_BASIS[given.lower()])
        guess = Basis.contract if str(decl.get("data_use", "")).startswith("essential") else Basis.consent
        notes.append(f"TODO: the manifest states no legal basis; guessed {guess}")
        return str(guess)

    # -- systems
    def is_recipient(self, system: Mapping[str, Any]) -> bool:
        if _fiduciary_meta(system).get("recipient"):
            return True
        resp = set(system.get("responsibility") or [])
        if resp and resp <= {"Processor", "Sub-Processor"}:
            return True
        return bool(system.get("vendor_id"))

    def purpose_from(
        self, decl: Mapping[str, Any], system: Mapping[str, Any], file: str
    ) -> str | None:
        sys_key = str(system["fides_key"])
        decl_name = decl.get("name") or None
        meta = _fiduciary_meta(system).get("purposes", {})
        meta_p = meta.get(decl_name, {}) if isinstance(meta, dict) and decl_name else {}
        use = str(decl["data_use"])
        where = f"{file}: system {sys_key!r}, declaration {decl_name or use!r}"
        cats = [str(c) for c in decl.get("data_categories") or []]
        if not cats:
            self.notes.append(f"skipped {where}: it names no data categories")
            return None
        if use not in taxonomy().uses and known_root(use, "use") is None:
            self.problems.append(
                Problem(
                    "fideslang.unknown_use",
                    f"{where}: data use {use!r} is not below any fideslang data use",
                    None,
                    value=use,
                )
            )
            return None
        for c in cats:
            self.category(c, where)
        notes = [f"from {where}"]
        basis = self.basis(decl, notes)
        meta_p = meta_p if isinstance(meta_p, dict) else {}
        data: dict[str, Any] = {
            "name": decl_name or label(use, "use"),
            "use": use,
            "basis": basis,
            "categories": cats,
        }
        data.update(self.purpose_extras(meta_p, basis, notes))
        if not meta_p:  # our own export says which subjects (none: all)
            subjects = [self.subject(str(s)) for s in decl.get("data_subjects") or []]
            if subjects:
                data["subjects"] = subjects
        if not meta_p:
            notes.append("TODO: essential? consent modes per jurisdiction? objection?")
        self.retention_from(decl.get("retention_period"), cats, notes)

        wanted = str(meta_p.get("key")) if isinstance(meta_p, dict) and meta_p.get("key") else None
        key = wanted or slug(decl_name or use.replace(".", "_"), "purpose")
        existing = self.purposes.get(key)
        if existing is not None:
            same = existing.data["use"] == use and existing.data["basis"] == basis
            if same:
                for c in cats:
                    if c not in existing.data["categories"]:
                        existing.data["categories"].append(c)
                for s in data.get("subjects", []):
                    existing.data.setdefault("subjects", [])
                    if s not in existing.data["subjects"]:
                        existing.data["subjects"].append(s)
                existing.notes.append(f"also {where}")
                return key
            base = f"{key}_{slug(sys_key)}"
            key, n = base, 2
            while key in self.purposes:
                key, n = f"{base}_{n}", n + 1
        self.purposes[key] = _DraftPurpose(key, data, notes)
        return key

    def purpose_extras(self, meta_p: Mapping[str, Any], basis: str, notes: list[str]) -> dict[str, Any]:
        """What fiduciary's own export put in meta beside a declaration, where it still fits."""
        extras = {k: v for k, v in meta_p.items() if k != "key" and k not in _DECLARED}
        if basis == Basis.consent:
            extras.pop("essential", None)  # consent can always be withdrawn
        if isinstance(extras.get("consent"), dict):
            extras["consent"] = {j: m for j, m in extras["consent"].items() if j in _JURISDICTION_KEYS}
        if isinstance(extras.get("jurisdictions"), list):
            kept = [j for j in extras["jurisdictions"] if j in _JURISDICTION_KEYS]
            if len(kept) != len(extras["jurisdictions"]):
                notes.append("TODO: the jurisdictions this purpose applies to")
            extras["jurisdictions"] = kept
        if isinstance(extras.get("subjects"), list):
            extras["subjects"] = [s for s in extras["subjects"] if s in self.subjects]
        extras = {k: v for k, v in extras.items() if v not in ({}, [])}
        try:
            Purpose.model_validate({"name": "x", "use": "x", "basis": basis, "categories": ["x"], **extras})
        except ValidationError:
            notes.append("TODO: fiduciary settings in the system's meta did not fit; set them again")
            return {}
        return extras

    def link_purpose(self, decl: Mapping[str, Any], system: Mapping[str, Any], file: str) -> str | None:
        """A recipient's declaration names a purpose the service already has, if it can."""
        decl_name = decl.get("name") or None
        meta = _fiduciary_meta(system)
        use = str(decl["data_use"])
        for key, p in self.purposes.items():
            if decl_name and p.data["name"] == decl_name and p.data["use"] == use:
                return key
        for key, p in self.purposes.items():
            if p.data["use"] == use:
                return key
        if meta.get("recipient"):
            # Our own export: the purpose lives on the service system; keep the link by key.
            return None
        return self.purpose_from(decl, system, file)

    def recipient_definition(self, key: str, definition: Any, note: str) -> bool:
        """A recipient exported by fiduciary, restored as the policy stated it."""
        if not isinstance(definition, dict):
            return False
        data = dict(definition)
        data["purposes"] = [p for p in data.get("purposes") or [] if p in self.purposes]
        if not data["purposes"]:
            del data["purposes"]
        try:
            Recipient.model_validate(data)
        except ValidationError:
            return False
        for c in data.get("categories") or []:
            self.category(str(c), note)
        self.recipients[key] = (data, [note])
        return True

    def recipient_from(self, system: Mapping[str, Any], file: str, flows: Mapping[str, list[str]]) -> None:
        meta = _fiduciary_meta(system)
        sys_key = str(system["fides_key"])
        key = str(meta.get("recipient") or slug(sys_key, "recipient"))
        note = f"from {file}: system {sys_key!r}"
        if self.recipient_definition(key, meta.get("definition"), note):
            return
        notes = [note]
        purposes: list[str] = []
        cats: list[str] = []
        for decl in system.get("privacy_declarations") or []:
            pk = self.link_purpose(decl, system, file)
            if pk and pk not in purposes:
                purposes.append(pk)
            for c in decl.get("data_categories") or []:
                if str(c) not in cats:
                    cats.append(str(c))
        if "categories" in meta and isinstance(meta["categories"], list):
            cats = [str(c) for c in meta["categories"]]
        elif sys_key in flows:
            cats = flows[sys_key] or cats
        for c in cats:
            self.category(c, f"{file}: system {sys_key!r}")
        resp = set(system.get("responsibility") or [])
        role = meta.get("role") or ("processor" if resp & {"Processor", "Sub-Processor"} else "third_party")
        data: dict[str, Any] = {"name": system.get("name") or sys_key, "role": str(role)}
        if system.get("description"):
            data["description"] = system["description"]
        if meta.get("country"):
            data["country"] = meta["country"]
        else:
            notes.append("TODO: country (ISO 3166) and transfer mechanism if outside the EEA")
        if meta.get("transfer"):
            data["transfer"] = meta["transfer"]
        if system.get("legal_address"):
            data["address"] = system["legal_address"]
        if system.get("privacy_policy"):
            data["privacy_policy"] = str(system["privacy_policy"])
        if cats:
            data["categories"] = cats
        if purposes:
            data["purposes"] = purposes
        self.recipients[key] = (data, notes)

    def retention_from(self, text: Any, cats: list[str], notes: list[str]) -> None:
        if self.rules_from_meta or not isinstance(text, str) or not text.strip():
            return
        parts = [p.strip() for p in text.split(";") if p.strip()]
        parsed = [_RETENTION_PART.match(p) for p in parts]
        matches = [m for m in parsed if m is not None and _rule_parts_ok(m)]
        if matches and len(matches) == len(parts):
            for m in matches:
                rule: dict[str, Any] = {
                    "categories": [c.strip() for c in m["cats"].split(",") if c.strip()],
                    "trigger": m["trigger"],
                }
                if m["period"]:
                    rule["period"] = m["period"]
                if m["action"]:
                    rule["action"] = m["action"]
                    if m["action"] == "truncate":
                        rule["truncate"] = {}  # the default prefixes; TODO above says check
                self.add_rule(m["key"], rule)
            return
        try:
            if not cats:
                raise PeriodError("no categories to apply it to")
            period = Period.parse(text)
        except PeriodError:
            notes.append(f"TODO: retention stated as {text!r}; write it as a rule under 'retention'")
            return
        self.add_rule(
            slug(f"kept {period}"),
            {"categories": list(cats), "trigger": "collected", "period": str(period)},
        )
        notes.append(f"TODO: retention {text!r} read as '{period} after collection'; check the trigger")

    def add_rule(self, key: str, rule: dict[str, Any]) -> None:
        for c in rule["categories"]:
            self.category(c, f"retention rule {key!r}")
        base, n = key, 2
        while key in self.retention:
            existing = self.retention[key]
            if all(existing.get(k) == rule.get(k) for k in ("trigger", "period", "action")):
                for c in rule["categories"]:
                    if c not in existing["categories"]:
                        existing["categories"].append(c)
                return
            key, n = f"{base}_{n}", n + 1
        self.retention[key] = rule

    # -- the draft
    def draft(self) -> str:
        service = [(s, f) for s, f in self.m.systems if not self.is_recipient(s)]
        vendors = [(s, f) for s, f in self.m.systems if self.is_recipient(s)]
        flows: dict[str, list[str]] = {}
        for s, _ in self.m.systems:
            for flow in s.get("egress") or []:
                if flow.get("type") == "system":
                    flows.setdefault(str(flow["fides_key"]), []).extend(
                        str(c) for c in flow.get("data_categories") or []
                    )
        declared_meta: dict[str, Any] = {}
        for s, _ in service:
            meta = _fiduciary_meta(s)
            meta_cats = meta.get("categories")
            if isinstance(meta_cats, dict):
                declared_meta.update(meta_cats)
            meta_subjects = meta.get("subjects")
            for key, definition in (meta_subjects if isinstance(meta_subjects, dict) else {}).items():
                if _valid(Subject, definition) and key not in self.subjects:
                    self.subjects[str(key)] = dict(definition)
        for key, definition in declared_meta.items():
            if isinstance(definition, str):
                self.m.category_names.setdefault(str(key), definition)
            elif isinstance(definition, dict) and _valid(Category, definition):
                self.category_defs[str(key)] = dict(definition)
        for key in declared_meta:
            self.category(str(key), "system meta")
        # Our own export lists the declared categories: declare only those, and what is
        # not related to any of them, as the original did.
        self.declared_only = bool(declared_meta)
        datasets: list[tuple[dict[str, Any], list[str]]] = []
        deferred: list[tuple[str, str]] = []
        collections: set[str] = set()
        for raw, f in self.m.datasets:
            clean, dropped = _clean_dataset(raw)
            for c in _walk_categories(clean):
                self.category(c, f"{f}: dataset {clean.get('fides_key')!r}")
            for coll in clean.get("collections") or []:
                collections.add(f"{clean['fides_key']}.{coll['name']}")
            datasets.append((clean, dropped))
        for s, f in service:
            # Our own export carries the rules as written; the declarations' text then only
            # repeats them.
            rules = _fiduciary_meta(s).get("retention")
            for key, rule in (rules if isinstance(rules, dict) else {}).items():
                if isinstance(rule, dict) and rule.get("collections"):
                    # Only collections of datasets imported alongside can be named.
                    rule = {**rule, "collections": [c for c in rule["collections"] if c in collections]}
                if _rule_ok(rule):
                    where = f"{f}: retention rule {key!r}"
                    deferred += [(str(c), where) for c in rule.get("categories") or []]
                    self.retention[str(key)] = dict(rule)
                    self.rules_from_meta = True
        for s, f in service:
            for decl in s.get("privacy_declarations") or []:
                self.purpose_from(decl, s, f)
        for s, f in vendors:
            self.recipient_from(s, f, flows)
        for s, f in service:
            others = _fiduciary_meta(s).get("recipients")
            for key, definition in (others if isinstance(others, dict) else {}).items():
                self.recipient_definition(
                    str(key), definition, f"from {f}: system {s['fides_key']!r} (meta)"
                )
        for c, where in deferred:
            # A rule may name a broader key (user.device) for data declared narrower; the
            # policy accepts that without declaring it.
            if not any(related(c, k) for k in self.categories):
                self.category(c, where)
        if self.problems:
            raise PolicyError(self.problems)
        if not self.subjects:
            self.subjects["customer"] = {"name": "Customer", "fideslang": "customer"}
        return self.render(datasets)

    def organization(self) -> tuple[dict[str, Any], list[str]]:
        notes: list[str] = []
        org_res = self.m.organizations[0][0] if self.m.organizations else None
        if len(self.m.organizations) > 1:
            notes.append("TODO: several organizations in the manifests; the first is used")
        system = (self.m.systems[0][0] if self.m.systems else {}) or {}
        name = (org_res or {}).get("name") or system.get("legal_name") or system.get("name")
        if not name:
            name = "TODO organization name"
            notes.append("TODO: the organization's public name")

        def contact(details: Any) -> dict[str, str] | None:
            if not isinstance(details, dict):
                return None
            out = {k: str(details[k]) for k in ("name", "email", "phone", "address") if details.get(k)}
            return out if any(k in out for k in ("email", "phone", "address")) else None

        controller = contact((org_res or {}).get("controller"))
        if controller is None and (system.get("legal_name") or system.get("legal_address")):
            controller = {
                k: v
                for k, v in (("name", system.get("legal_name")), ("address", system.get("legal_address")))
                if v
            }
            if "address" not in controller:
                controller = None
        if controller is None:
            controller = {"name": str(name), "email": "privacy@example.com"}
            notes.append("TODO: the controller's legal name and postal address")
        dpo = contact((org_res or {}).get("data_protection_officer"))
        rep = contact((org_res or {}).get("representative"))
        contact_block = dict(dpo or controller)
        if "email" not in contact_block:
            notes.append("TODO: an email address for privacy questions (PUT-14)")
        notes.append("TODO: storage: the countries where personal data is stored")
        org: dict[str, Any] = {"name": str(name), "controller": controller, "contact": contact_block}
        if dpo:
            org["dpo"] = dpo
        if rep:
            org["eu_representative"] = rep
        return org, notes

    def render(self, datasets: list[tuple[dict[str, Any], list[str]]]) -> str:
        version = "0.1"
        effective = self.effective
        for s, _ in self.m.systems:
            meta = _fiduciary_meta(s)
            if meta.get("policy_version"):
                version = str(meta["policy_version"])
                with contextlib.suppress(ValueError):
                    effective = date.fromisoformat(str(meta.get("effective")))
                break
        out: list[str] = [
            "# Draft policy.yaml imported from fideslang manifests:",
            *(f"#   {f}" for f in self.files),
            "# Review every TODO below before publishing: the manifests say what data is used",
            "# for what, not what people are promised.",
            "# TODO: consent modes, objection, cookies, children, visibility and activities are",
            "#       not in fideslang manifests; add what your service does.",
        ]
        out += [f"# {n}" for n in self.notes]
        out += [f"# ignored (not about a privacy policy): {i}" for i in self.m.ignored]
        out.append("fiduciary: 1")
        org, org_notes = self.organization()
        out += [f"# {n}" for n in org_notes]
        out.append(_emit({"organization": org}))
        out.append(_emit({"version": version, "effective": effective}))
        out.append(
            _emit(
                {
                    "changelog": [
                        {
                            "version": version,
                            "date": effective,
                            "summary": "Imported from fideslang manifests.",
                        }
                    ]
                }
            )
        )
        out.append(_DEFAULT_JURISDICTIONS.rstrip("\n"))
        out.append(_emit({"subjects": self.subjects}))
        out.append("categories:")
        tax = taxonomy().categories
        for key in sorted(self.categories):
            if key not in tax:
                out.append("  # not in the fideslang taxonomy: a custom child; check its name")
            out.append(_emit({key: self.categories[key]}, indent=2))
        out.append("purposes:")
        for p in self.purposes.values():
            out += [f"  # {n}" for n in p.notes]
            out.append(_emit({p.key: p.data}, indent=2))
        if self.recipients:
            out.append("recipients:")
            for key, (data, notes) in self.recipients.items():
                out += [f"  # {n}" for n in notes]
                out.append(_emit({key: data}, indent=2))
        if self.retention:
            out.append("# TODO: retention read from the declarations' retention_period; check each rule.")
            out.append(_emit({"retention": self.retention}))
        else:
            out.append("# TODO: retention: how long each category is kept (a rule per category).")
        out.append("# TODO: review; GDPR Art. 33 asks for 72 hours (LAW-10).")
        out.append(_emit({"breaches": {"authority_within": "72 hours", "notify_subjects": "high_risk"}}))
        if datasets:
            out.append("# The datasets, as the manifests give them.")
            out.append("datastores:")
            for ds, dropped in datasets:
                for d in dropped:
                    out.append(f"  # dropped {d}: not in the fideslang 3 Dataset shape")
                out.append(_emit([ds], indent=2))
        return "\n".join(out) + "\n"


def _rule_ok(rule: Any) -> bool:
    return _valid(RetentionRule, rule)


def _valid(model: type[BaseModel], data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def _rule_parts_ok(m: re.Match[str]) -> bool:
    """Does a ``key: 30 days after collected then truncate (cats)`` part name real things?"""
    if m["trigger"] not in {t.value for t in Trigger}:
        return False
    if m["action"] and m["action"] not in {a.value for a in RetentionAction}:
        return False
    try:
        if m["period"]:
            Period.parse(m["period"])
    except PeriodError:
        return False
    return True


def _emit(value: Any, indent: int = 0) -> str:
    text = yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    pad = " " * indent
    return "\n".join(pad + line if line else line for line in text.rstrip("\n").split("\n"))


__all__ = [
    "BASIS_TO_FIDESLANG",
    "custom_categories",
    "export_fideslang",
    "export_notes",
    "fideslang_dataset",
    "import_fideslang",
    "manifest_yaml",
    "slug",
    "validate_manifest",
    "write_fideslang",
]
