"""compile(): a checked Policy -> CompiledPolicy, the immutable lookup tables every other
module reads. Nothing outside this module re-derives what the YAML means.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType
from typing import Any

from fiduciary.policy.load import LoadedPolicy, policy_digest
from fiduciary.policy.model import (
    Basis,
    ConsentMode,
    Cookie,
    CookieCategory,
    DataForm,
    DatasetField,
    Exemption,
    Jurisdiction,
    LegalMinimum,
    Policy,
    Purpose,
    Recipient,
    RequestType,
    RetentionRule,
    Right,
    Visibility,
)
from fiduciary.policy.taxonomy import ancestors, is_within


def _freeze(d: Mapping[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True, slots=True)
class CompiledPurpose:
    key: str
    name: str
    use: str
    basis: Basis
    essential: bool
    categories: frozenset[str]  # every known category this purpose may use
    declared_categories: tuple[str, ...]  # as written in the policy
    subjects: frozenset[str]
    objection: bool
    form: DataForm
    condition: str | None
    direct_marketing: bool
    sale: bool
    consent: MappingProxyType[str, ConsentMode]  # per jurisdiction key, '*' resolved
    source: Purpose

    def consent_mode(self, jurisdiction: str) -> ConsentMode:
        return self.consent.get(jurisdiction) or self.consent["*"]


@dataclass(frozen=True, slots=True)
class CompiledRecipient:
    key: str
    source: Recipient
    categories: frozenset[str]
    purposes: frozenset[str]
    outside_eea: bool


@dataclass(frozen=True, slots=True)
class FieldInfo:
    path: str  # dotted, nested fields joined by '.'
    categories: tuple[str, ...]
    identity: str | None
    primary_key: bool
    masking: str | None
    masking_configuration: MappingProxyType[str, Any]
    data_type: str | None
    read_only: bool


@dataclass(frozen=True, slots=True)
class Reference:
    """A link from ``collection.field`` to ``target.target_field`` (``ds.coll`` names)."""

    collection: str
    field: str
    target: str
    target_field: str
    direction: str | None


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str  # "datastore.collection"
    datastore: str
    collection: str
    fields: MappingProxyType[str, FieldInfo]
    identities: MappingProxyType[str, str]  # identity kind -> field path
    primary_key: tuple[str, ...]
    categories: frozenset[str]
    delete_rows: bool  # collection-level masking override: delete


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Policy
    version: str
    effective: date
    digest: str
    categories: frozenset[str]  # every category key the policy knows (declared and used)
    declared_categories: frozenset[str]
    sensitive: tuple[str, ...]  # categories marked sensitive: reached only when named
    purposes: MappingProxyType[str, CompiledPurpose]
    purposes_by_category: MappingProxyType[str, frozenset[str]]
    essential_purposes: frozenset[str]
    recipients: MappingProxyType[str, CompiledRecipient]
    recipients_by_purpose: MappingProxyType[str, frozenset[str]]
    jurisdictions: MappingProxyType[str, Jurisdiction]
    region_jurisdiction: MappingProxyType[str, str]  # ISO code -> jurisdiction key
    default_jurisdiction: str
    rights: MappingProxyType[tuple[str, RequestType], Right]
    minimum_age: MappingProxyType[str, int]
    retention_by_category: MappingProxyType[str, tuple[str, ...]]
    retention: MappingProxyType[str, RetentionRule]
    legal_minimums: MappingProxyType[str, tuple[LegalMinimum, ...]]  # by category
    exemptions: MappingProxyType[str, Exemption]
    cookies_by_category: MappingProxyType[CookieCategory, tuple[Cookie, ...]]
    visibility: MappingProxyType[str, Visibility]  # category -> its visibility rule
    collections: MappingProxyType[str, CollectionInfo]
    references: tuple[Reference, ...]
    identity_kinds: frozenset[str]

    # -- lookups
    def jurisdiction_for(self, region: str | None) -> str:
        """The jurisdiction whose law applies to a person in ``region`` (ISO code)."""
        if not region:
            return self.default_jurisdiction
        code = region.upper()
        found = self.region_jurisdiction.get(code)
        if found:
            return found
        country = code.split("-", 1)[0]
        return self.region_jurisdiction.get(country, self.default_jurisdiction)

    def right(self, jurisdiction: str, request: RequestType | str) -> Right | None:
        return self.rights.get((jurisdiction, RequestType(request)))

    def purpose_covers(self, purpose: str, category: str) -> bool:
        p = self.purposes[purpose]
        if category in p.categories:
            return True
        return any(reaches(category, c, self.sensitive) for c in p.declared_categories)

    def categories_within(self, keys: Iterable[str]) -> frozenset[str]:
        """All known categories at or below any of ``keys``."""
        roots = tuple(keys)
        return frozenset(c for c in self.categories if any(is_within(c, r) for r in roots))

    def min_age(self, jurisdiction: str) -> int | None:
        return self.minimum_age.get(jurisdiction, self.minimum_age.get("*"))


def reaches(category: str, declared: str, sensitive: Iterable[str] = ()) -> bool:
    """Whether a purpose or recipient declared for ``declared`` covers ``category``: the key
    itself or one below it, except that a ``sensitive`` category (and what is below it) is
    covered only when the declaration names it or a key below it."""
    if not is_within(category, declared):
        return False
    return not any(is_within(category, s) and not is_within(declared, s) for s in sensitive)


def compile_policy(source: LoadedPolicy | Policy) -> CompiledPolicy:
    policy = source.policy if isinstance(source, LoadedPolicy) else source
    collections, references = _compile_datastores(policy)

    known: set[str] = set(policy.categories)
    for coll in collections.values():
        known |= coll.categories
    for act in policy.activities.values():
        known |= set(act.mandatory) | set(act.voluntary)
    for p in policy.purposes.values():
        known |= set(p.categories)
    for r in policy.recipients.values():
        known |= set(r.categories)
    categories = frozenset(known)

    def within(keys: Iterable[str]) -> frozenset[str]:
        roots = tuple(keys)
        return frozenset(c for c in categories if any(is_within(c, r) for r in roots))

    # Special-category data (GDPR Art. 9, CPRA sensitive personal information) is never
    # reached through a broader key: a purpose or recipient declared for
    # `user.demographic.profile` does not get `user.demographic.profile.sensitive`, which the
    # policy marks sensitive, unless it names that key (or one below it).
    sensitive = tuple(k for k, c in policy.categories.items() if c is not None and c.sensitive)

    def named(keys: Iterable[str]) -> frozenset[str]:
        roots = tuple(keys)
        return frozenset(c for c in categories if any(reaches(c, r, sensitive) for r in roots))

    jurisdiction_keys = list(policy.jurisdictions)
    purposes: dict[str, CompiledPurpose] = {}
    for key, p in policy.purposes.items():
        consent: dict[str, ConsentMode] = {}
        for j in [*jurisdiction_keys, "*"]:
            consent[j] = _consent_mode(p, j, policy.jurisdictions.get(j))
        purposes[key] = CompiledPurpose(
            key=key,
            name=p.name,
            use=p.use,
            basis=p.basis,
            essential=p.essential,
            categories=named(p.categories),
            declared_categories=tuple(p.categories),
            subjects=frozenset(p.subjects),
            objection=p.objection if p.objection is not None else p.basis == Basis.legitimate_interest,
            form=p.form,
            condition=p.condition,
            direct_marketing=p.direct_marketing or p.use.startswith("marketing"),
            sale=p.sale,
            consent=_freeze(consent),
            source=p,
        )

    by_category: dict[str, set[str]] = {c: set() for c in categories}
    for key, cp in purposes.items():
        for c in cp.categories:
            by_category[c].add(key)

    recipients: dict[str, CompiledRecipient] = {}
    by_purpose: dict[str, set[str]] = {k: set() for k in purposes}
    from fiduciary.policy.check import ADEQUATE, EEA

    for key, r in policy.recipients.items():
        country = (r.country or "").upper()
        recipients[key] = CompiledRecipient(
            key=key,
            source=r,
            categories=named(r.categories),
            purposes=frozenset(r.purposes),
            outside_eea=bool(country) and country not in EEA and country not in ADEQUATE,
        )
        for pk in r.purposes:
            by_purpose.setdefault(pk, set()).add(key)

    region_map: dict[str, str] = {}
    default_j = jurisdiction_keys[0] if jurisdiction_keys else "*"
    for jk, jur in policy.jurisdictions.items():
        for region in jur.regions:
            if region == "*":
                default_j = jk
            else:
                region_map[region.upper()] = jk
                if region.upper() in ("EU", "EEA"):
                    for c in EEA:
                        region_map.setdefault(c, jk)

    rights: dict[tuple[str, RequestType], Right] = {}
    for jk, jur in policy.jurisdictions.items():
        for rt, right in jur.rights.items():
            rights[(jk, RequestType(rt))] = right

    min_age: dict[str, int] = {}
    for jk, jur in policy.jurisdictions.items():
        if jur.minimum_age is not None:
            min_age[jk] = jur.minimum_age
    if policy.children:
        min_age.update(policy.children.minimum_age)

    retention_by_category: dict[str, list[str]] = {c: [] for c in categories}
    legal_minimums: dict[str, list[LegalMinimum]] = {c: [] for c in categories}
    for rk, rule in policy.retention.items():
        scope = set(within(rule.categories))
        for coll_name in rule.collections:
            if coll_name in collections:
                scope |= collections[coll_name].categories
        for c in scope:
            retention_by_category.setdefault(c, []).append(rk)
            if rule.legal_minimum:
                legal_minimums.setdefault(c, []).append(rule.legal_minimum)

    cookies: dict[CookieCategory, list[Cookie]] = {c: [] for c in CookieCategory}
    for cookie in policy.cookies:
        cookies[cookie.category].append(cookie)

    visibility: dict[str, Visibility] = {}
    for vis in policy.visibility:
        for c in within(vis.categories):
            visibility[c] = vis

    identity_kinds = frozenset(k for coll in collections.values() for k in coll.identities)

    return CompiledPolicy(
        policy=policy,
        version=policy.version,
        effective=policy.effective,
        digest=policy_digest(policy),
        categories=categories,
        declared_categories=frozenset(policy.categories),
        sensitive=sensitive,
        purposes=_freeze(purposes),
        purposes_by_category=_freeze({c: frozenset(v) for c, v in by_category.items()}),
        essential_purposes=frozenset(k for k, p in purposes.items() if p.essential),
        recipients=_freeze(recipients),
        recipients_by_purpose=_freeze({k: frozenset(v) for k, v in by_purpose.items()}),
        jurisdictions=_freeze(policy.jurisdictions),
        region_jurisdiction=_freeze(region_map),
        default_jurisdiction=default_j,
        rights=_freeze(rights),
        minimum_age=_freeze(min_age),
        retention_by_category=_freeze({c: tuple(v) for c, v in retention_by_category.items()}),
        retention=_freeze(policy.retention),
        legal_minimums=_freeze({c: tuple(v) for c, v in legal_minimums.items()}),
        exemptions=_freeze(policy.exemptions),
        cookies_by_category=_freeze({c: tuple(v) for c, v in cookies.items()}),
        visibility=_freeze(visibility),
        collections=_freeze(collections),
        references=tuple(references),
        identity_kinds=identity_kinds,
    )


def _consent_mode(p: Purpose, jurisdiction: str, j: Jurisdiction | None) -> ConsentMode:
    if p.essential:
        return ConsentMode.notice_only
    explicit = p.consent.get(jurisdiction) or p.consent.get("*")
    if explicit:
        return explicit
    if p.basis == Basis.consent:
        return j.default_consent if j else ConsentMode.opt_in
    if p.basis == Basis.legitimate_interest and p.use.startswith("marketing"):
        return ConsentMode.opt_out  # direct marketing: objection is unconditional (LAW-7)
    return ConsentMode.notice_only


def _compile_datastores(policy: Policy) -> tuple[dict[str, CollectionInfo], list[Reference]]:
    collections: dict[str, CollectionInfo] = {}
    references: list[Reference] = []
    for ds in policy.datastores:
        for coll in ds.collections:
            name = f"{ds.fides_key}.{coll.name}"
            fields: dict[str, FieldInfo] = {}
            identities: dict[str, str] = {}
            pk: list[str] = []
            cats: set[str] = set(coll.data_categories or [])
            for path, f in _flatten(coll.fields):
                meta = f.fides_meta
                masking = meta.masking_strategy_override if meta else None
                info = FieldInfo(
                    path=path,
                    categories=tuple(f.data_categories or ()),
                    identity=meta.identity if meta else None,
                    primary_key=bool(meta and meta.primary_key),
                    masking=masking.strategy if masking else None,
                    masking_configuration=_freeze(masking.configuration or {} if masking else {}),
                    data_type=meta.data_type if meta else None,
                    read_only=bool(meta and meta.read_only),
                )
                fields[path] = info
                cats.update(info.categories)
                if info.identity:
                    identities[info.identity] = path
                if info.primary_key:
                    pk.append(path)
                for ref in (meta.references or []) if meta else []:
                    coll_name, _, field_name = ref.field.partition(".")
                    references.append(
                        Reference(name, path, f"{ref.dataset}.{coll_name}", field_name, ref.direction)
                    )
            cmeta = coll.fides_meta
            collections[name] = CollectionInfo(
                name=name,
                datastore=ds.fides_key,
                collection=coll.name,
                fields=_freeze(fields),
                identities=_freeze(identities),
                primary_key=tuple(pk),
                categories=frozenset(cats),
                delete_rows=bool(
                    cmeta
                    and cmeta.masking_strategy_override
                    and cmeta.masking_strategy_override.strategy == "delete"
                ),
            )
    return collections, references


def _flatten(fields: list[DatasetField], prefix: str = "") -> Iterable[tuple[str, DatasetField]]:
    for f in fields:
        path = f"{prefix}{f.name}"
        yield path, f
        if f.fields:
            yield from _flatten(f.fields, path + ".")


__all__ = ["CompiledPolicy", "CompiledPurpose", "ancestors", "compile_policy"]
