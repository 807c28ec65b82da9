"""The access package: what a person receives when they ask "what do you hold on me?".

One ZIP, built in memory from rows the connectors already fetched (no database here):

- ``data.json`` — everything, structured and machine-readable (LAW-6 portability): the
  request, every collection's rows with each field's categories, the vault's attributes,
  the consent history with its proofs (LAW-8), disclosures, and for each category held
  the purposes that use it (with their basis), the recipients that receive it (role,
  country, transfer safeguard), how long it is kept and where it came from (LAW-2,
  PLO-16); the rights and how to use them.
- ``collections/<datastore.collection>.csv`` — one CSV per collection, for spreadsheets.
- ``report.html`` — the same, in words a non-engineer can read: self-contained (inline
  CSS, no scripts, nothing loaded from elsewhere), accessible and printable. All wording
  comes from ``fiduciary.policy.render``, so the report and the public notice say the
  same thing in the same words.

Other people's data in the same rows is redacted (PLO-11, GDPR Art. 15(4)); see
``_Ownership`` for the rule. The bytes are deterministic: the same input gives the same
ZIP (fixed entry timestamps and attributes, sorted entries, rows sorted by primary key).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Any, Final, Literal
from uuid import UUID

from jinja2 import Environment, PackageLoader, StrictUndefined

from fiduciary.policy.compile import CollectionInfo, CompiledPolicy, FieldInfo
from fiduciary.policy.model import Contact, RequestType, Transfer
from fiduciary.policy.render import (
    BASIS_SHORT,
    BASIS_WORDS,
    CONDITION_WORDS,
    CONSENT_SHORT,
    FORM_WORDS,
    REQUEST_WORDS,
    ROLE_WORDS,
    SOURCE_WORDS,
    TRANSFER_WORDS,
    RuleView,
    _brand,
    _jurisdiction_view,
    _rule_view,
    category_description,
    category_name,
    condition_words,
    country_name,
    format_date,
    join_words,
    purpose_name,
    region_words,
    retention_short,
    words_for,
)
from fiduciary.policy.taxonomy import is_within
from fiduciary.vault.normalize import IdentityError, normalize

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "HASH_WITHHELD",
    "REDACTED",
    "PackageError",
    "PackageRequest",
    "build_access_package",
    "build_shine_the_light",
]

FORMAT: Final = "fiduciary.access_package"
FORMAT_VERSION: Final = 1
REDACTED: Final = "[redacted: another person's data]"
# A password hash tells the person nothing and helps anyone who gets hold of the file to
# guess the password offline; the report says that it exists and why it is not included.
HASH_WITHHELD: Final = "[withheld: kept only as a one-way hash]"

PACKAGE_TYPES: Final = frozenset({RequestType.access, RequestType.portability})
# Values per category shown in the report; every value is in data.json and the CSVs.
REPORT_VALUES: Final = 12
REPORT_TEXT: Final = 160  # characters of one value shown in the report

# Earliest time a ZIP entry can carry (the format counts from 1980).
_ZIP_EPOCH: Final = (1980, 1, 1, 0, 0, 0)


class PackageError(ValueError):
    """Bad input for an access package: says what and where. Nothing was built."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PackageRequest:
    """The request an access package answers, and who asked.

    ``self_keys`` holds the requester's own primary-key values in the identity root
    collections (``{"social_db.members": [123]}``) and ``identities`` their identities by
    kind (``{"email": ["ada@example.com"]}``): with them the package tells the requester's
    own data from other people's in shared rows. Values are compared as text, so 123 and
    "123" are the same key.
    """

    reference: str
    jurisdiction: str  # a jurisdiction key of the policy ("eu"), see cp.jurisdiction_for
    received_at: datetime
    request_type: RequestType = RequestType.access
    answered_at: datetime | None = None  # default: the package's generated_at
    self_keys: Mapping[str, Sequence[object]] = field(default_factory=dict)
    identities: Mapping[str, Sequence[str]] = field(default_factory=dict)
    subject_id: str | None = None  # the vault's subject id, when there is one


# --------------------------------------------------------------------------- values


def _utc(at: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken as UTC, as the vault does."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _jsonable(value: object) -> Any:
    """A JSON-ready copy of ``value``. Decimals become text so that 9.99 stays exactly
    9.99; bytes become hex."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        if isinstance(value, set | frozenset):
            items.sort(key=lambda v: json.dumps(v, sort_keys=True))
        return items
    return str(value)


def _json_text(value: object) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _csv_cell(value: object) -> str:
    """A CSV cell: scalars as text (empty for none), anything else JSON-encoded."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return _json_text(value)
    j = _jsonable(value)
    return j if isinstance(j, str) else json.dumps(j)


def _display(value: object) -> str:
    """A value as the report shows it: dates in words, yes/no, long text shortened."""
    if isinstance(value, bool):
        text = "Yes" if value else "No"
    elif isinstance(value, datetime):
        at = value if value.tzinfo is None else value.astimezone(UTC)
        text = f"{format_date(at.date())}, {at:%H:%M}" + (" UTC" if value.tzinfo else "")
    elif isinstance(value, date):
        text = format_date(value)
    elif isinstance(value, Mapping | list | tuple | set | frozenset):
        text = _json_text(value)
    else:
        j = _jsonable(value)
        text = j if isinstance(j, str) else json.dumps(j)
    text = " ".join(text.split())
    return text if len(text) <= REPORT_TEXT else text[: REPORT_TEXT - 1].rstrip() + "…"


def _get(row: Mapping[str, object], path: str) -> object:
    """The value at a dotted path of nested mappings (None when absent)."""
    cur: object = row
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _set(row: dict[str, Any], path: str, value: object) -> None:
    """Set a dotted path in a row copied with ``_copy`` (only where it already exists)."""
    parts = path.split(".")
    cur: Any = row
    for part in parts[:-1]:
        if not isinstance(cur, dict) or part not in cur:
            return
        cur = cur[part]
    if isinstance(cur, dict) and parts[-1] in cur:
        cur[parts[-1]] = value


def _copy(value: object) -> Any:
    """A copy deep enough to redact nested fields without touching the caller's rows."""
    if isinstance(value, Mapping):
        return {str(k): _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _sort_key(value: object) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool | int | float | Decimal):
        return (1, value)
    if isinstance(value, datetime):
        return (2, _utc(value))
    return (3, str(value))


# --------------------------------------------------------------------------- names
# fideslang's ``fides_meta.redact: name`` hides a dataset's, collection's or field's name
# (an internal schema name can say more than the company wants to publish): the package
# shows a neutral name in its place, as Fides does in its own access packages.


@dataclass(frozen=True, slots=True)
class _Names:
    collections: Mapping[str, str]  # "ds.coll" -> shown name
    fields: Mapping[tuple[str, str], str]  # ("ds.coll", "a.b") -> shown last segment

    def collection(self, name: str) -> str:
        return self.collections.get(name, name)

    def field(self, collection: str, path: str) -> str:
        parts = path.split(".")
        return ".".join(
            self.fields.get((collection, ".".join(parts[: i + 1])), parts[i]) for i in range(len(parts))
        )

    def row(self, collection: str, row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in row.items():
            path = f"{prefix}{key}"
            shown = self.fields.get((collection, path), key)
            out[shown] = self.row(collection, value, path + ".") if isinstance(value, Mapping) else value
        return out


def _names(cp: CompiledPolicy) -> _Names:
    collections: dict[str, str] = {}
    fields: dict[tuple[str, str], str] = {}
    for di, ds in enumerate(cp.policy.datastores, 1):
        ds_name = f"dataset_{di}" if ds.fides_meta and ds.fides_meta.redact else ds.fides_key
        for ci, coll in enumerate(ds.collections, 1):
            key = f"{ds.fides_key}.{coll.name}"
            coll_name = f"collection_{ci}" if coll.fides_meta and coll.fides_meta.redact else coll.name
            if (ds_name, coll_name) != (ds.fides_key, coll.name):
                collections[key] = f"{ds_name}.{coll_name}"
            stack = [(f, "") for f in coll.fields]
            n = 0
            while stack:
                f, prefix = stack.pop(0)
                n += 1
                path = f"{prefix}{f.name}"
                if f.fides_meta and f.fides_meta.redact:
                    fields[(key, path)] = f"field_{n}"
                stack[0:0] = [(sub, path + ".") for sub in f.fields or ()]
    return _Names(collections, fields)


def _readable(name: str) -> str:
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- redaction


@dataclass(frozen=True, slots=True)
class _Marker:
    """A field that says whose a row is: a key of an identity root collection (the root's
    own primary key, or a reference to it), or an identity field (email, phone)."""

    path: str
    root: str | None = None  # the root collection, for key markers
    identity: str | None = None  # the identity kind, for identity markers


def _norm_identity(kind: str, value: object) -> str:
    try:
        return normalize(kind, value)
    except (IdentityError, TypeError, ValueError):
        return str(value).strip().casefold()


class _Ownership:
    """Tells the requester's own data from other people's in the rows of a package.

    The rule, from the datastore annotations alone:

    1. A field is a *person marker* when it holds the key of an identity root collection
       (the roots are the collections of ``PackageRequest.self_keys``): the root's own
       primary key, or a field that references it (in either direction). Identity fields
       (``fides_meta.identity``) are markers too.
    2. A key marker belongs to the requester when its value is one of their own keys,
       else to another person. An identity marker belongs to the requester when the row's
       keys are all theirs (their row: an old email address is still theirs), else when it
       matches one of their identities, else — only if the request says which identities
       of that kind are the requester's — to another person.
    3. Every marker that belongs to another person is redacted: in a message the other
       party's member id, in a connection the other member.
    4. A row where the requester is not a party at all (another member's comment on the
       requester's post) is another person's row: every field that carries personal data
       (a data category, an identity, or a field the policy does not describe) is redacted
       too. Its primary key, its links to non-personal rows and uncategorised facts (when
       it was created) stay, so the shape of the requester's own data stays readable.
    5. A row with no markers (a row reached through the requester's own rows, like an
       invoice of their account) is theirs, unredacted.

    Content in a row the requester is a party to (the body of a message they received)
    stays: it was addressed to them, and the annotations cannot say which party a field
    belongs to; only the other party's identifiers are removed.
    """

    def __init__(self, cp: CompiledPolicy, request: PackageRequest) -> None:
        self.cp = cp
        self.roots: dict[str, tuple[str, frozenset[str]]] = {}
        for name, keys in request.self_keys.items():
            coll = cp.collections.get(name)
            if coll is None:
                raise PackageError(
                    f"request.self_keys: {name!r} is not a collection of the policy's datastores"
                    + _did_you_mean(name, cp.collections)
                )
            if len(coll.primary_key) != 1:
                raise PackageError(
                    f"request.self_keys: collection {name!r} needs exactly one primary-key field "
                    f"to tell people apart (it has {len(coll.primary_key)})"
                )
            if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
                raise PackageError(f"request.self_keys[{name!r}]: expected a list of key values")
            self.roots[name] = (coll.primary_key[0], frozenset(str(k).strip() for k in keys))
        self.identities: dict[str, frozenset[str]] = {}
        for kind, values in request.identities.items():
            if isinstance(values, str | bytes) or not isinstance(values, Sequence):
                raise PackageError(f"request.identities[{kind!r}]: expected a list of values")
            self.identities[kind] = frozenset(_norm_identity(kind, v) for v in values)
        if not self.roots and not any(self.identities.values()):
            raise PackageError(
                "request: give self_keys or identities, so the package can tell the requester's "
                "own data from other people's"
            )
        self._markers: dict[str, tuple[_Marker, ...]] = {}

    def markers(self, coll: CollectionInfo) -> tuple[_Marker, ...]:
        found = self._markers.get(coll.name)
        if found is not None:
            return found
        out: dict[str, _Marker] = {}
        if coll.name in self.roots:
            pk = self.roots[coll.name][0]
            out[pk] = _Marker(pk, root=coll.name)
        for ref in self.cp.references:
            # A reference written on either side: this collection's field pointing at the
            # root's key, or the root's key pointing at this collection's field.
            to_root = ref.collection == coll.name and ref.target in self.roots
            if to_root and ref.target_field == self.roots[ref.target][0]:
                out.setdefault(ref.field, _Marker(ref.field, root=ref.target))
            from_root = ref.target == coll.name and ref.collection in self.roots
            if from_root and ref.field == self.roots[ref.collection][0]:
                out.setdefault(ref.target_field, _Marker(ref.target_field, root=ref.collection))
        for kind, path in sorted(coll.identities.items()):
            out.setdefault(path, _Marker(path, identity=kind))
        result = tuple(out.values())
        self._markers[coll.name] = result
        return result

    def owners(self, coll: CollectionInfo, row: Mapping[str, object]) -> dict[str, bool]:
        """{marker path: True if the requester's, False if another person's}; markers
        without a value or whose owner cannot be told are left out."""
        owners: dict[str, bool] = {}
        identities: list[tuple[_Marker, object]] = []
        for m in self.markers(coll):
            value = _get(row, m.path)
            if value is None or value == "":
                continue
            if m.root is not None:
                owners[m.path] = str(value).strip() in self.roots[m.root][1]
            else:
                identities.append((m, value))
        own_row = bool(owners) and all(owners.values())
        for m, value in identities:
            kind = m.identity or ""
            if own_row or _norm_identity(kind, value) in self.identities.get(kind, frozenset()):
                owners[m.path] = True
            elif self.identities.get(kind):
                owners[m.path] = False
        return owners

    def redactions(self, coll: CollectionInfo, row: Mapping[str, object]) -> list[str]:
        """The paths to redact in one row, in field order."""
        owners = self.owners(coll, row)
        if not owners:
            return []
        others = {p for p, mine in owners.items() if not mine}
        if not others:
            return []
        if not any(owners.values()):
            # Not the requester's row at all: everything personal in it is someone else's.
            for path, f in coll.fields.items():
                if _personal(f) and _get(row, path) is not None:
                    others.add(path)
            others.update(k for k in row if k not in coll.fields and row[k] is not None)
        order = {p: i for i, p in enumerate(coll.fields)}
        return sorted(others, key=lambda p: (order.get(p, len(order)), p))


def _personal(f: FieldInfo) -> bool:
    return bool(f.categories) or f.identity is not None


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- the model


@dataclass(slots=True)
class _Holding:
    """One value held under a category: where, and what."""

    collection: str  # "ds.coll", or "vault"
    field: str
    value: object


@dataclass(slots=True)
class _Collection:
    info: CollectionInfo
    header: list[str]
    rows: list[dict[str, Any]]
    redacted: list[tuple[int, list[str]]]  # (row index, paths)
    withheld: list[tuple[int, list[str]]]


def _check_input(cp: CompiledPolicy, request: PackageRequest, data: object) -> None:
    if request.jurisdiction not in cp.jurisdictions:
        raise PackageError(
            f"request.jurisdiction: {request.jurisdiction!r} is not a jurisdiction of the policy "
            f"({', '.join(cp.jurisdictions)})"
        )
    try:
        rt = RequestType(request.request_type)
    except ValueError:
        raise PackageError(f"request.request_type: unknown request type {request.request_type!r}") from None
    if rt not in PACKAGE_TYPES:
        raise PackageError(
            f"request.request_type: an access package answers access or portability, not {rt.value!r}"
        )
    if not isinstance(request.reference, str) or not request.reference.strip():
        raise PackageError("request.reference: a non-empty text is needed")
    if not isinstance(data, Mapping):
        raise PackageError("data: expected a mapping of collection name -> list of rows")
    for name, rows in data.items():
        if name not in cp.collections:
            raise PackageError(
                f"data[{name!r}]: not a collection of the policy's datastores"
                + _did_you_mean(str(name), cp.collections)
            )
        if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
            raise PackageError(f"data[{name!r}]: expected a list of rows")
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise PackageError(f"data[{name!r}][{i}]: expected a row (a mapping of field -> value)")


def _header(coll: CollectionInfo, rows: Sequence[Mapping[str, object]]) -> list[str]:
    """Top-level fields in the policy's order, then any the policy does not describe."""
    declared = [p for p in coll.fields if "." not in p]
    extra = sorted({k for r in rows for k in r if k not in coll.fields})
    return declared + extra


def _hashed(cp: CompiledPolicy, f: FieldInfo | None) -> bool:
    if f is None:
        return False
    for c in f.categories:
        info = cp.policy.categories.get(c)
        if info is not None and info.protection == "hashed":
            return True
    return False


def _prepare(
    cp: CompiledPolicy, name: str, rows: Sequence[Mapping[str, object]], own: _Ownership
) -> _Collection:
    coll = cp.collections[name]
    ordered = list(rows)
    if coll.primary_key:
        # Connectors return rows in whatever order the database likes; the package must
        # not change with it.
        ordered.sort(key=lambda r: tuple(_sort_key(_get(r, p)) for p in coll.primary_key))
    out: list[dict[str, Any]] = []
    redacted: list[tuple[int, list[str]]] = []
    withheld: list[tuple[int, list[str]]] = []
    hashed = [p for p, f in coll.fields.items() if _hashed(cp, f)]
    for i, row in enumerate(ordered):
        paths = own.redactions(coll, row)
        copy = _copy(row)
        for p in paths:
            _set(copy, p, REDACTED)
        held_back = [p for p in hashed if p not in paths and _get(row, p) is not None]
        for p in held_back:
            _set(copy, p, HASH_WITHHELD)
        if paths:
            redacted.append((i, paths))
        if held_back:
            withheld.append((i, held_back))
        out.append(copy)
    return _Collection(coll, _header(coll, ordered), out, redacted, withheld)


def _holdings(
    cp: CompiledPolicy, colls: Sequence[_Collection], vault: Mapping[str, object]
) -> dict[str, list[_Holding]]:
    """Category -> the values held under it, in collection and row order."""
    held: dict[str, list[_Holding]] = {}
    for c in colls:
        for row in c.rows:
            for path, f in c.info.fields.items():
                if not f.categories:
                    continue
                value = _get(row, path)
                if value is None or value == "" or value == REDACTED:
                    continue
                for cat in f.categories:
                    held.setdefault(cat, []).append(_Holding(c.info.name, path, value))
    for cat, stored in vault.items():
        held.setdefault(cat, []).append(_Holding("vault", "", _vault_value(stored)[0]))
    return held


def _vault_value(stored: object) -> tuple[object, dict[str, Any]]:
    """A vault attribute as (value, provenance); the vault's ``StoredValue`` carries its
    source, collection time, policy version and activity, a plain value carries none."""
    if hasattr(stored, "value") and hasattr(stored, "source"):
        prov = {
            "source": getattr(stored, "source", None),
            "collected_at": getattr(stored, "collected_at", None),
            "policy_version": getattr(stored, "policy_version", None),
            "activity": getattr(stored, "activity", None),
        }
        return stored.value, prov
    return stored, {}


def _category_order(cp: CompiledPolicy, keys: Iterable[str]) -> list[str]:
    declared = {k: i for i, k in enumerate(cp.policy.categories)}
    return sorted(set(keys), key=lambda k: (declared.get(k, len(declared)), k))


# --------------------------------------------------------------------------- context


def _purposes_for(cp: CompiledPolicy, category: str) -> list[str]:
    keys = cp.purposes_by_category.get(category) or frozenset(
        pk for pk in cp.purposes if cp.purpose_covers(pk, category)
    )
    return [pk for pk in cp.purposes if pk in keys]


def _recipients_for(cp: CompiledPolicy, category: str, purposes: Sequence[str]) -> list[str]:
    """Recipients that receive the category: named for it, or (naming no categories) for
    one of the purposes that use it, or naming neither (they may receive anything)."""
    out: list[str] = []
    for key, r in cp.recipients.items():
        named = category in r.categories or any(is_within(category, c) for c in r.source.categories)
        by_purpose = not r.source.categories and (not r.purposes or bool(r.purposes & set(purposes)))
        if named or by_purpose:
            out.append(key)
    return out


def _sources_for(cp: CompiledPolicy, category: str) -> list[tuple[str, str]]:
    """(source kind, activity key) pairs: the activities that collect the category."""
    out: list[tuple[str, str]] = []
    for key, act in cp.policy.activities.items():
        if any(is_within(category, c) for c in [*act.mandatory, *act.voluntary]):
            out.append((act.source, key))
    return out


def _recipient_json(cp: CompiledPolicy, key: str) -> dict[str, Any]:
    cr = cp.recipients[key]
    r = cr.source
    return {
        "key": key,
        "name": r.name,
        "role": r.role.value,
        "role_name": ROLE_WORDS[r.role][0] if r.role in ROLE_WORDS else _readable(r.role.value),
        "description": r.description,
        "country": r.country,
        "country_name": country_name(r.country) or None,
        "outside_eea": cr.outside_eea,
        "transfer_safeguard": r.transfer.value if r.transfer else None,
        "transfer_safeguard_words": _safeguard(cr.outside_eea, r.transfer),
        "condition": r.condition,
        "condition_words": words_for(CONDITION_WORDS, r.condition)
        if r.condition and r.condition != "always"
        else None,
        "purposes": sorted(cr.purposes),
        "form": r.form.value,
    }


def _safeguard(outside_eea: bool, transfer: Transfer | None) -> str | None:
    if transfer is not None:
        words = TRANSFER_WORDS.get(transfer, transfer.value)
        return words[:1].upper() + words[1:] + "."
    if outside_eea:
        return "Outside the European Economic Area; the policy names no safeguard."
    return None


# --------------------------------------------------------------------------- building


def build_access_package(
    cp: CompiledPolicy,
    *,
    request: PackageRequest,
    data: Mapping[str, list[dict[str, object]]],
    vault: Mapping[str, object] | None = None,
    consents: list[dict[str, Any]] | None = None,
    disclosures: list[dict[str, Any]] | None = None,
    generated_at: datetime,
) -> bytes:
    """The access package for one request, as ZIP bytes (see the module docstring).

    ``data`` maps ``"datastore.collection"`` to the rows fetched for the requester (every
    collection given gets a CSV, also an empty one). ``vault`` maps category -> value or
    the vault's ``StoredValue``; ``consents`` are ``ConsentLedger.proof`` dicts;
    ``disclosures`` are dicts with ``recipient`` (a recipient key or a name), ``at``,
    ``categories``, ``purpose`` and ``detail``, any more keys kept as given.
    Raises ``PackageError`` for bad input, naming what and where.
    """
    _check_input(cp, request, data)
    if vault is not None and not isinstance(vault, Mapping):
        raise PackageError("vault: expected a mapping of category -> value")
    for what, items in (("consents", consents), ("disclosures", disclosures)):
        if items is None:
            continue
        if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
            raise PackageError(f"{what}: expected a list of records")
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise PackageError(f"{what}[{i}]: expected a record (a mapping)")
    own = _Ownership(cp, request)
    generated = _utc(generated_at)
    colls = [_prepare(cp, name, data[name], own) for name in sorted(data)]
    vault_items = dict(sorted((vault or {}).items()))
    held = _holdings(cp, colls, vault_items)
    view = _View(
        cp, request, generated, colls, vault_items, held, list(consents or []), list(disclosures or [])
    )
    doc = view.document()
    files: dict[str, bytes] = {
        # Compact: the C encoder (indent= falls back to the pure-Python one, 5x slower);
        # the report is the human-readable copy, any JSON viewer pretty-prints this one.
        "data.json": (json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"),
        "report.html": _render(view.report()).encode("utf-8"),
    }
    for c in colls:
        files[f"collections/{view.names.collection(c.info.name)}.csv"] = _csv(c, view.names)
    return _zip(files, generated)


def build_shine_the_light(
    cp: CompiledPolicy,
    *,
    reference: str,
    received_at: datetime,
    generated_at: datetime,
    disclosures: Sequence[Mapping[str, Any]] | None = None,
) -> bytes:
    """The answer to a Shine the Light request (PLV-13, Cal. Civ. Code 1798.83), as ZIP
    bytes (``data.json``, ``report.txt``): every recipient the policy lets use personal
    information for its own direct marketing, or buy it, with its name, address and the
    kinds of products it markets; and, from the disclosure ledger (``disclosures``: the
    requester's ``DisclosureLedger.shine_the_light`` records), which of them received the
    requester's data in the period and which categories. ``disclosures`` None: the
    requester is not a subject we know, so nothing can have been disclosed about them."""
    if disclosures is not None and (
        isinstance(disclosures, str | bytes | Mapping) or not isinstance(disclosures, Sequence)
    ):
        raise PackageError("disclosures: expected a list of records")
    received = _utc(received_at)
    start = datetime(received.year - 1, 1, 1, tzinfo=UTC)
    by_recipient: dict[str, list[Mapping[str, Any]]] = {}
    for i, d in enumerate(disclosures or ()):
        if not isinstance(d, Mapping):
            raise PackageError(f"disclosures[{i}]: expected a record (a mapping)")
        by_recipient.setdefault(str(d.get("recipient") or ""), []).append(d)
    recipients: list[dict[str, Any]] = []
    for key, cr in sorted(cp.recipients.items()):
        src = cr.source
        if not (src.direct_marketing or src.sale):
            continue
        got = by_recipient.get(key, [])
        shared = sorted({str(c) for d in got for c in (d.get("categories") or [])})
        recipients.append(
            {
                "key": key,
                "name": src.name,
                "address": src.address,
                "products": list(src.products),
                "categories": sorted(cr.categories),
                "sale": src.sale,
                "direct_marketing": src.direct_marketing,
                "received_your_data": bool(got),
                "categories_disclosed": shared,
                "category_names_disclosed": [category_name(cp, c) for c in shared],
                "disclosures": [
                    {"at": str(d.get("at")), "categories": list(d.get("categories") or [])} for d in got
                ],
            }
        )
    org = cp.policy.organization.name
    doc = {
        "format": "fiduciary.shine_the_light",
        "reference": reference,
        "organization": org,
        "received_at": received.isoformat(),
        "generated_at": _utc(generated_at).isoformat(),
        "period": {"from": start.isoformat(), "to": received.isoformat()},
        "subject_known": disclosures is not None,
        "recipients": recipients,
    }
    lines = [f"Disclosures for direct marketing purposes — {org}", ""]
    if not recipients:
        lines.append("We do not share personal information with anyone for their own direct marketing.")
    for rec in recipients:
        lines.append(f"- {rec['name']}" + (f", {rec['address']}" if rec["address"] else ""))
        if rec["products"]:
            lines.append(f"  Products or services: {', '.join(rec['products'])}")
        if rec["categories"]:
            lines.append(f"  Categories of personal information: {', '.join(rec['categories'])}")
        since = f"since {start:%d %B %Y}".replace(" 0", " ")
        if rec["received_your_data"]:
            lines.append(f"  Received yours {since}: {', '.join(rec['category_names_disclosed'])}")
        else:
            lines.append(f"  Received none of yours {since}.")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in (
            ("data.json", json.dumps(doc, ensure_ascii=False, indent=1).encode()),
            ("report.txt", ("\n".join(lines) + "\n").encode()),
        ):
            info = zipfile.ZipInfo(name, _ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def _csv(c: _Collection, names: _Names) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([names.field(c.info.name, h) for h in c.header])
    for row in c.rows:
        w.writerow([_csv_cell(row.get(h)) for h in c.header])
    return buf.getvalue().encode("utf-8")


def _zip(files: Mapping[str, bytes], at: datetime) -> bytes:
    stamp = max(_ZIP_EPOCH, (at.year, at.month, at.day, at.hour, at.minute, at.second))
    stamp = min(stamp, (2107, 12, 31, 23, 59, 58))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix, whatever machine builds it
            info.external_attr = 0o100644 << 16
            zf.writestr(info, files[name], compresslevel=6)
    return buf.getvalue()


class _View:
    """The package's content, once: ``document`` for data.json, ``report`` for the HTML."""

    def __init__(
        self,
        cp: CompiledPolicy,
        request: PackageRequest,
        generated: datetime,
        colls: list[_Collection],
        vault: dict[str, object],
        held: dict[str, list[_Holding]],
        consents: list[dict[str, Any]],
        disclosures: list[dict[str, Any]],
    ) -> None:
        self.cp = cp
        self.request = request
        self.type = RequestType(request.request_type)
        self.generated = generated
        self.answered = _utc(request.answered_at) if request.answered_at else generated
        self.colls = colls
        self.vault = vault
        self.held = held
        self.consents = consents
        self.disclosures = disclosures
        self.names = _names(cp)
        self.categories = _category_order(cp, held)
        self.purposes: dict[str, list[str]] = {c: _purposes_for(cp, c) for c in self.categories}
        self.recipients: dict[str, list[str]] = {
            c: _recipients_for(cp, c, self.purposes[c]) for c in self.categories
        }
        # The disclosure ledger's recipients are listed too, with what they received: the
        # report names who did receive the person's data, not only who may.
        disclosed: set[str] = set()
        for d in disclosures:
            rk = str(d.get("recipient") or "")
            if rk not in cp.recipients:
                continue
            disclosed.add(rk)
            got = d.get("categories") or []
            keys = [got] if isinstance(got, str) else [str(k) for k in got]
            for cat in self.categories:
                if rk not in self.recipients[cat] and any(cat == k or is_within(cat, k) for k in keys):
                    self.recipients[cat].append(rk)
        self.rules: dict[str, list[str]] = {
            c: [k for k in cp.retention if k in cp.retention_by_category.get(c, ())] for c in self.categories
        }
        self.sources: dict[str, list[tuple[str, str]]] = {c: _sources_for(cp, c) for c in self.categories}
        self.anchors = {c: f"data-{i}" for i, c in enumerate(self.categories, 1)}
        # Per category, how many values were left out as another person's: the report says
        # so where the person would look for them.
        self.redacted: dict[str, int] = {}
        for c in colls:
            for _, paths in c.redacted:
                for path in paths:
                    f = c.info.fields.get(path)
                    for cat in f.categories if f else ():
                        self.redacted[cat] = self.redacted.get(cat, 0) + 1
        self.purposes_used = [p for p in cp.purposes if any(p in self.purposes[c] for c in self.categories)]
        self.recipients_used = [
            r
            for r in cp.recipients
            if r in disclosed or any(r in self.recipients[c] for c in self.categories)
        ]
        self.rules_used = [r for r in cp.retention if any(r in self.rules[c] for c in self.categories)]
        self.jv = _jurisdiction_view(cp, request.jurisdiction)
        self._rule_views: dict[str, RuleView] = {}
        for cat, stored in vault.items():
            src = _vault_value(stored)[1].get("source")
            if src and src not in {s for s, _ in self.sources[cat]}:
                self.sources[cat].append((str(src), ""))

    # ------------------------------------------------------------------ data.json
    def _request_json(self) -> dict[str, Any]:
        r = self.request
        j = self.cp.jurisdictions[r.jurisdiction]
        return {
            "reference": r.reference,
            "type": self.type.value,
            "type_name": REQUEST_WORDS[self.type][0],
            "jurisdiction": r.jurisdiction,
            "jurisdiction_name": j.name,
            "received_at": _utc(r.received_at).isoformat(),
            "answered_at": self.answered.isoformat(),
            "subject_id": r.subject_id,
        }

    def _category_json(self, cat: str) -> dict[str, Any]:
        cp = self.cp
        where = sorted({self._where_key(h) for h in self.held[cat]})
        info = cp.policy.category_info(cat)
        return {
            "name": category_name(cp, cat),
            "description": category_description(cp, cat) or None,
            "sensitive": info.sensitive,
            "held_in": where,
            "values": len(self.held[cat]),
            # The essentials here; the full entries once, under the top-level keys.
            "purposes": [
                {"key": pk, "name": cp.purposes[pk].name, "basis": cp.purposes[pk].basis.value}
                for pk in self.purposes[cat]
            ],
            "recipients": [
                {
                    "key": rk,
                    "name": cp.recipients[rk].source.name,
                    "role": cp.recipients[rk].source.role.value,
                    "country": cp.recipients[rk].source.country,
                    "transfer_safeguard": t.value if (t := cp.recipients[rk].source.transfer) else None,
                }
                for rk in self.recipients[cat]
            ],
            "retention": [{"rule": rk, "words": self.rule_view(rk).sentence} for rk in self.rules[cat]],
            "legal_minimums": [
                {"period": str(lm.period), "reason": lm.reason, "basis": lm.basis}
                for lm in cp.legal_minimums.get(cat, ())
            ],
            "sources": [
                {
                    "source": src,
                    "words": words_for(SOURCE_WORDS, src),
                    "activity": act or None,
                    "activity_name": cp.policy.activities[act].name if act else None,
                }
                for src, act in self.sources[cat]
            ],
        }

    def _purpose_json(self, pk: str) -> dict[str, Any]:
        p = self.cp.purposes[pk]
        return {
            "key": pk,
            "name": p.name,
            "description": p.source.description,
            "use": p.use,
            "basis": p.basis.value,
            "basis_words": BASIS_WORDS[p.basis],
            "essential": p.essential,
            "consent": p.consent_mode(self.request.jurisdiction).value,
            "objection": p.objection,
            "condition": p.condition,
            "categories": [c for c in self.categories if pk in self.purposes[c]],
        }

    def rule_view(self, key: str) -> RuleView:
        found = self._rule_views.get(key)
        if found is None:
            found = self._rule_views[key] = _rule_view(self.cp, key)
        return found

    def _rule_json(self, key: str) -> dict[str, Any]:
        rule = self.cp.retention[key]
        rv = self.rule_view(key)
        return {
            "rule": key,
            "trigger": rule.trigger.value,
            "period": str(rule.period) if rule.period else None,
            "action": rule.action.value,
            "words": rv.sentence,
            "details": rv.details,
        }

    def _where_key(self, h: _Holding) -> str:
        if h.collection == "vault":
            return "vault"
        return f"{self.names.collection(h.collection)}.{self.names.field(h.collection, h.field)}"

    def _rights(self) -> list[dict[str, Any]]:
        j = self.cp.jurisdictions[self.request.jurisdiction]
        views = self.jv.rights
        keys = [rt for rt in RequestType if rt in j.rights]
        out = []
        for rt, rv in zip(keys, views, strict=True):
            right = j.rights[rt]
            out.append(
                {
                    "request_type": rt.value,
                    "name": rv.name,
                    "meaning": rv.meaning,
                    "deadline": str(right.deadline),
                    "extension": str(right.extension) if right.extension else None,
                    "deadline_words": rv.deadline,
                    "verification": right.verification.value,
                    "verification_words": rv.verification,
                    "channels": [c.value for c in right.channels],
                    "channels_words": rv.channels,
                    "free": right.free,
                    "note": right.note,
                }
            )
        return out

    def _transfers(self) -> dict[str, Any]:
        org = self.cp.policy.organization
        keys = self.recipients_used
        return {
            "storage": list(org.storage),
            "storage_words": region_words(org.storage) or None,
            "statement": org.transfers,
            "recipients": [
                {
                    "recipient": rk,
                    "name": self.cp.recipients[rk].source.name,
                    "country": self.cp.recipients[rk].source.country,
                    "outside_eea": self.cp.recipients[rk].outside_eea,
                    "safeguard": t.value if (t := self.cp.recipients[rk].source.transfer) else None,
                    "safeguard_words": _safeguard(self.cp.recipients[rk].outside_eea, t),
                }
                for rk in keys
                if self.cp.recipients[rk].source.country or self.cp.recipients[rk].source.transfer
            ],
        }

    def document(self) -> dict[str, Any]:
        cp = self.cp
        org = cp.policy.organization
        collections: dict[str, Any] = {}
        for c in self.colls:
            cname = c.info.name
            collections[self.names.collection(cname)] = {
                "fields": {
                    self.names.field(cname, p): {
                        "categories": list(f.categories),
                        "category_names": [category_name(cp, k) for k in f.categories],
                        "primary_key": f.primary_key,
                        "identity": f.identity,
                    }
                    for p, f in c.info.fields.items()
                },
                "rows": [_jsonable(self.names.row(cname, r)) for r in c.rows],
                "redacted": [
                    {"row": i, "fields": [self.names.field(cname, p) for p in paths]}
                    for i, paths in c.redacted
                ],
                "withheld": [
                    {"row": i, "fields": [self.names.field(cname, p) for p in paths]}
                    for i, paths in c.withheld
                ],
            }
        vault_json: dict[str, Any] = {}
        for cat, stored in self.vault.items():
            value, prov = _vault_value(stored)
            vault_json[cat] = _jsonable({"value": value, **prov})
        contact = org.contact
        authority = self.jv.authority
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generated_at": self.generated.isoformat(),
            "controller": {
                "name": org.name,
                "legal_name": org.legal_name,
                "contact": _contact_json(contact),
            },
            "policy": {"version": cp.version, "effective": cp.effective.isoformat(), "digest": cp.digest},
            "request": self._request_json(),
            "collections": collections,
            "vault": vault_json,
            "consents": _jsonable(self.consents),
            "disclosures": _jsonable(self.disclosures),
            "categories": {cat: self._category_json(cat) for cat in self.categories},
            "purposes": {pk: self._purpose_json(pk) for pk in self.purposes_used},
            "recipients": {rk: _recipient_json(self.cp, rk) for rk in self.recipients_used},
            "retention": {rk: self._rule_json(rk) for rk in self.rules_used},
            "transfers": self._transfers(),
            "rights": self._rights(),
            "supervisory_authority": _contact_json(authority) if authority else None,
            "redaction": {
                "placeholder": REDACTED,
                "values": sum(len(p) for c in self.colls for _, p in c.redacted),
                "reason": _REDACTION_REASON,
                "withheld_placeholder": HASH_WITHHELD,
            },
        }

    # ------------------------------------------------------------------ report.html
    def report(self) -> dict[str, Any]:
        cp = self.cp
        org = cp.policy.organization
        accent, tint = _brand(org.color)
        jv = self.jv
        cats = [self._category_card(c) for c in self.categories]
        redactions = [
            {
                "where": self._collection_words(c.info.name),
                "rows": len(c.redacted),
                "values": sum(len(p) for _, p in c.redacted),
            }
            for c in self.colls
            if c.redacted
        ]
        sources: dict[str, list[str]] = {}
        for c in self.categories:
            for src, _ in self.sources[c]:
                names = sources.setdefault(src, [])
                if category_name(cp, c) not in names:
                    names.append(category_name(cp, c))
        unsourced = [category_name(cp, c) for c in self.categories if not self.sources[c]]
        return {
            "org": org.name,
            "contact": org.contact,
            "accent": accent,
            "tint": tint,
            "reference": self.request.reference,
            "request_name": REQUEST_WORDS[self.type][0],
            "jurisdiction": jv.name,
            "received": _display(_utc(self.request.received_at)),
            "answered": _display(self.answered),
            "generated": _display(self.generated),
            "version": cp.version,
            "digest": cp.digest,
            "categories": cats,
            "record_count": sum(len(c.rows) for c in self.colls),
            "vault_count": len(self.vault),
            "sources": [
                {"words": _capital(words_for(SOURCE_WORDS, s)), "data": join_words(names)}
                for s, names in sources.items()
            ],
            "unsourced": join_words(unsourced),
            "purposes": [self._purpose_card(pk) for pk in self.purposes_used],
            "recipients": [self._recipient_card(rk) for rk in self.recipients_used],
            "disclosures": [self._disclosure_row(d) for d in self.disclosures],
            "transfers": self._transfers(),
            "rules": [self._rule_card(rk) for rk in self.rules_used],
            "unkept": join_words(category_name(cp, c) for c in self.categories if not self.rules[c]),
            "consents": [self._consent_row(e) for e in self.consents],
            "redactions": redactions,
            "redacted_values": sum(r["values"] for r in redactions),
            "redaction_placeholder": REDACTED,
            "redaction_reason": _REDACTION_REASON,
            "rights": jv.rights,
            "points": jv.points,
            "authority": jv.authority,
            "files": [
                {
                    "name": f"collections/{self.names.collection(c.info.name)}.csv",
                    "what": self._collection_words(c.info.name),
                    "rows": len(c.rows),
                }
                for c in self.colls
            ],
        }

    def _collection_words(self, name: str) -> str:
        shown = self.names.collection(name)
        coll = self.cp.collections.get(name)
        ds = next((d for d in self.cp.policy.datastores if coll and d.fides_key == coll.datastore), None)
        label = _readable(shown.rsplit(".", 1)[-1])
        return f"{label} ({ds.name})" if ds is not None and ds.name and shown == name else label

    def _where_words(self, h: _Holding) -> str:
        if h.collection == "vault":
            return "Our encrypted store of personal data"
        coll = _readable(self.names.collection(h.collection).rsplit(".", 1)[-1])
        return f"{coll} · {self.names.field(h.collection, h.field).replace('_', ' ')}"

    def _category_card(self, cat: str) -> dict[str, Any]:
        cp = self.cp
        groups: dict[tuple[str, str], int] = {}
        for h in self.held[cat]:
            key = (_display(h.value), self._where_words(h))
            groups[key] = groups.get(key, 0) + 1
        items = list(groups.items())
        info = cp.policy.category_info(cat)
        return {
            "id": self.anchors[cat],
            "hashed": info.protection == "hashed",
            "name": category_name(cp, cat),
            "description": category_description(cp, cat),
            "sensitive": info.sensitive,
            "values": [{"text": t, "where": w, "count": n} for (t, w), n in items[:REPORT_VALUES]],
            "more": len(items) - REPORT_VALUES if len(items) > REPORT_VALUES else 0,
            "total": len(self.held[cat]),
            "redacted": self.redacted.get(cat, 0),
            # (anchor, name) pairs: the report links each to its full explanation below.
            "purposes": [(f"purpose-{pk}", cp.purposes[pk].name) for pk in self.purposes[cat]],
            "recipients": [(f"recipient-{rk}", cp.recipients[rk].source.name) for rk in self.recipients[cat]],
            "retention": "; ".join(_unique(retention_short(cp.retention[rk]) for rk in self.rules[cat]))
            or "No period stated in our privacy notice",
            "source": _capital(
                join_words(_unique(words_for(SOURCE_WORDS, s) for s, _ in self.sources[cat]), "or")
            )
            or "Not stated in our privacy notice",
        }

    def _purpose_card(self, pk: str) -> dict[str, Any]:
        p = self.cp.purposes[pk]
        mode = p.consent_mode(self.request.jurisdiction)
        if p.essential:
            choice = "Essential to the service: it cannot be switched off."
        elif p.objection:
            choice = "You can object to this use."
        elif p.condition:
            choice = condition_words(p.condition)
        else:
            choice = _capital(CONSENT_SHORT[mode]) + "."
        return {
            "id": f"purpose-{pk}",
            "name": p.name,
            "description": p.source.description or "",
            "basis": BASIS_WORDS[p.basis],
            "basis_short": BASIS_SHORT[p.basis],
            "choice": choice,
            "data": [
                (self.anchors[c], category_name(self.cp, c))
                for c in self.categories
                if pk in self.purposes[c]
            ],
        }

    def _recipient_card(self, rk: str) -> dict[str, Any]:
        cr = self.cp.recipients[rk]
        r = cr.source
        role = ROLE_WORDS[r.role][0] if r.role in ROLE_WORDS else _readable(r.role.value)
        return {
            "id": f"recipient-{rk}",
            "name": r.name,
            "role": role if role != r.name else "",
            "description": r.description or "",
            "data": [
                (self.anchors[c], category_name(self.cp, c))
                for c in self.categories
                if rk in self.recipients[c]
            ],
            # Only the purposes that use data we hold about this person: the rest is the
            # public notice's business, not this report's.
            "why": [
                (f"purpose-{p}", purpose_name(self.cp, p)) for p in self.purposes_used if p in cr.purposes
            ],
            "country": _capital(country_name(r.country)) if r.country else "",
            "safeguard": _safeguard(cr.outside_eea, r.transfer) or "",
            "form": FORM_WORDS.get(r.form, ""),
            "when": words_for(CONDITION_WORDS, r.condition)
            if r.condition and r.condition != "always"
            else "",
        }

    def _disclosure_row(self, d: Mapping[str, Any]) -> dict[str, str]:
        cp = self.cp
        rk = str(d.get("recipient") or "")
        who = cp.recipients[rk].source.name if rk in cp.recipients else rk or "Not recorded"
        at = _parse_time(d.get("at"))
        cats = d.get("categories") or []
        if isinstance(cats, str):
            cats = [cats]
        purpose = str(d.get("purpose") or "")
        return {
            "when": _display(at) if at is not None else "—",
            "who": who,
            "what": join_words(category_name(cp, str(c)) for c in cats) or "—",
            "why": purpose_name(cp, purpose) if purpose else "—",
            "detail": _display(d.get("detail")) if d.get("detail") else "",
        }

    def _rule_card(self, rk: str) -> dict[str, Any]:
        rv = self.rule_view(rk)
        return {
            "data": join_words(category_name(self.cp, c) for c in self.categories if rk in self.rules[c]),
            "sentence": rv.sentence,
            "details": rv.details,
            "description": rv.description,
        }

    def _consent_row(self, e: Mapping[str, Any]) -> dict[str, str]:
        kind = str(e.get("kind") or "")
        scope = str(e.get("scope") or "")
        what = str(e.get("purpose_name") or "")
        if not what:
            what = purpose_name(self.cp, scope) if scope in self.cp.purposes else scope.replace("_", " ")
            if scope == "*":
                what = "Everything this applies to"
        at = _parse_time(e.get("at"))
        how = join_words(
            x.replace("_", " ") for x in (str(e.get("channel") or ""), str(e.get("method") or "")) if x
        )
        proof = []
        if e.get("policy_version"):
            proof.append(f"privacy notice version {e['policy_version']}")
        if e.get("notice_hash"):
            proof.append(f"notice text fingerprint {str(e['notice_hash'])[:12]}…")
        if e.get("expires_at"):
            proof.append(f"expires {_display(_parse_time(e['expires_at']))}")
        return {
            "when": _display(at) if at is not None else "—",
            "what": _capital(_EVENT_WORDS.get(kind, kind.replace("_", " "))),
            "scope": what,
            "value": str(e.get("value") or ""),
            "how": _capital(how) or "—",
            "proof": "; ".join(proof),
        }


def _parse_time(value: object) -> object:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


_EVENT_WORDS: Final[dict[str, str]] = {
    "consent_given": "you gave consent",
    "consent_withdrawn": "you withdrew consent",
    "consent_expired": "consent expired",
    "objection": "you objected",
    "objection_withdrawn": "you withdrew an objection",
    "restriction": "you asked us to restrict use",
    "restriction_lifted": "restriction lifted",
    "sale_opt_out": "you opted out of sale and sharing",
    "sale_opt_in": "you opted back in to sale and sharing",
    "recipient_opt_out": "you opted out of sharing with a recipient",
    "recipient_opt_in": "you opted back in to sharing with a recipient",
    "version_accepted": "you accepted a version of the privacy notice",
    "setting": "you changed a setting",
}

_REDACTION_REASON: Final = (
    "Some of your records are shared with other people: a message has a sender and a "
    "recipient, a connection links two members, others comment on what you post. Your copy "
    "must not disclose other people's personal data (GDPR Article 15(4)), so where a record "
    "names another person we replaced their identifiers with the words "
    f"“{REDACTED}”, and in records that are theirs rather than yours (another member's "
    "comment on your post) we also replaced what they wrote. What you wrote and received "
    "stays as it is."
)


def _contact_json(c: Contact) -> dict[str, Any]:
    return {k: v for k, v in c.model_dump().items() if v}


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        if x:
            seen.setdefault(x, None)
    return list(seen)


# --------------------------------------------------------------------------- template


_BARE_URL = re.compile(r"^https?://\S+$")
_BARE_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _link_kind(value: str) -> Literal["url", "email", "text"]:
    v = value.strip()
    if _BARE_URL.match(v):
        return "url"
    if _BARE_EMAIL.match(v):
        return "email"
    return "text"


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("fiduciary.requests", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["link_kind"] = _link_kind
    env.filters["capitalize_first"] = _capital
    return env


def _render(context: Mapping[str, Any]) -> str:
    return _environment().get_template("access_report.html").render(**context).lstrip()
