"""Aggregate statistics for partners (PUT-8, PLV-5, PLO-6): groups of at least k people.

    export = export_aggregates(
        fid, "statistics_partners", "site_statistics", rows,
        group_by=["country"], person="visitor", measures=["pages"],
        categories=["user.behavior.browsing_history"],
    )
    export.groups       # ({"country": "DE", "people": 41, "records": 97, "pages_sum": 300, ...}, ...)

The rows are the caller's (one per event or per person, from any source), each naming the
person it is about (``person``: a subject id, an account number, a cookie id). They are
grouped by the ``group_by`` columns; a group is released only when at least k distinct
people are in it, where k is the recipient's ``min_group`` in the policy (default 10).
Smaller groups are left out and only their number is said, never how many people they
held (that would give them away by subtraction from a total). The values of the people
column never leave this function.

Only a recipient the policy declares aggregate-only (``form: aggregate``) receives
aggregates this way, for a purpose and categories it is declared for; individual data to
such a recipient is refused by the decision engine and the disclosure ledger. Each export
is recorded as an ``aggregate`` disclosure (how many people the released groups cover,
how many groups, k) and audited.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from fiduciary.policy.compile import reaches
from fiduciary.policy.model import DataForm
from fiduciary.policy.taxonomy import suggest

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary
    from fiduciary.policy.compile import CompiledPolicy, CompiledRecipient

__all__ = [
    "DEFAULT_K",
    "AggregateError",
    "AggregateExport",
    "AggregateRefused",
    "export_aggregates",
    "k_for",
]

DEFAULT_K: Final = 10
_PLAIN: Final = frozenset({str, int})
_BIG: Final = 2**53  # whole numbers a float holds exactly
MAX_GROUP_BY: Final = 8
_AGGREGATE_FORMS: Final = (DataForm.aggregate, DataForm.anonymized)


class AggregateError(ValueError):
    """Bad input: says what and where. Nothing was exported or recorded."""


class AggregateRefused(AggregateError):
    """The policy does not allow this export. Nothing was exported or recorded."""


@dataclass(frozen=True)
class AggregateExport:
    """What the recipient receives (``groups``, ``to_csv``), and its disclosure."""

    disclosure_id: int | None  # None when no group was large enough: nothing went out
    recipient: str
    purpose: str
    categories: tuple[str, ...]
    k: int
    group_by: tuple[str, ...]
    measures: tuple[str, ...]
    groups: tuple[dict[str, Any], ...]
    suppressed: int  # groups left out (fewer than k people)
    people: int  # distinct people in the released groups
    at: datetime

    def columns(self) -> list[str]:
        cols = [*self.group_by, "people", "records"]
        for m in self.measures:
            cols += [f"{m}_sum", f"{m}_mean"]
        return cols

    def to_dict(self) -> dict[str, Any]:
        return {
            "disclosure_id": self.disclosure_id,
            "recipient": self.recipient,
            "purpose": self.purpose,
            "categories": list(self.categories),
            "k": self.k,
            "group_by": list(self.group_by),
            "measures": list(self.measures),
            "groups": [dict(g) for g in self.groups],
            "suppressed": self.suppressed,
            "people": self.people,
            "at": self.at.isoformat(),
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\r\n")
        cols = self.columns()
        w.writerow(cols)
        for g in self.groups:
            w.writerow(["" if g.get(c) is None else g.get(c) for c in cols])
        return buf.getvalue()


def k_for(cp: CompiledPolicy, recipient: str) -> int:
    """The smallest group the recipient may receive: its ``min_group``, else 10."""
    rec = cp.recipients[recipient]
    return rec.source.min_group or DEFAULT_K


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    found = suggest(word, list(choices))
    return f" (did you mean {found[0]!r}?)" if found else ""


def _check(
    cp: CompiledPolicy, recipient: str, purpose: str, categories: Sequence[str]
) -> tuple[CompiledRecipient, tuple[str, ...]]:
    rec = cp.recipients.get(recipient) if isinstance(recipient, str) else None
    if rec is None:
        raise AggregateError(f"unknown recipient {recipient!r}{_did_you_mean(str(recipient), cp.recipients)}")
    if rec.source.form not in _AGGREGATE_FORMS:
        raise AggregateRefused(
            f"recipient {recipient!r} is not declared aggregate-only (form: {rec.source.form.value}): "
            "aggregates go to recipients the policy declares with form: aggregate; what this one "
            "receives is recorded as an individual disclosure"
        )
    if not isinstance(purpose, str) or purpose not in cp.purposes:
        raise AggregateError(f"unknown purpose {purpose!r}{_did_you_mean(str(purpose), cp.purposes)}")
    if rec.purposes and purpose not in rec.purposes:
        raise AggregateRefused(
            f"recipient {recipient!r} is not declared for purpose {purpose!r}; it is for "
            f"{', '.join(sorted(rec.purposes))}"
        )
    if isinstance(categories, str) or not isinstance(categories, Iterable):
        raise AggregateError("categories must be a list of category keys")
    cats = tuple(dict.fromkeys(categories))
    if not cats:
        raise AggregateError("categories: name the categories of data the statistics are made from")
    for c in cats:
        if not isinstance(c, str) or c not in cp.categories:
            raise AggregateError(f"unknown category {c!r}{_did_you_mean(str(c), cp.categories)}")
        if (
            rec.categories
            and c not in rec.categories
            and not any(reaches(c, k, cp.sensitive) for k in rec.source.categories)
        ):
            raise AggregateRefused(f"recipient {recipient!r} is not declared for category {c!r}")
        if not cp.purpose_covers(purpose, c):
            raise AggregateRefused(f"purpose {purpose!r} is not declared for category {c!r}")
    return rec, cats


def _names(value: object, what: str, *, least: int, most: int) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise AggregateError(f"{what} must be a list of column names")
    names = tuple(value)
    if not least <= len(names) <= most or len(set(names)) != len(names):
        raise AggregateError(f"{what}: {least}-{most} distinct column names")
    for n in names:
        if not isinstance(n, str) or not n or len(n) > 64:
            raise AggregateError(f"{what}: a column name is 1-64 characters, got {n!r}")
    return names


def _key(value: object, where: str) -> object:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AggregateError(f"{where}: {value!r} is not a value to group by")
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise AggregateError(
        f"{where}: a value to group by is text, a number, a date or null, not {type(value).__name__}"
    )


def _number(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise AggregateError(f"{where}: a measure is a number, not {type(value).__name__}")
    try:
        f = float(value)
    except OverflowError:
        raise AggregateError(f"{where}: {value!r} is too large a number") from None
    if not math.isfinite(f):
        raise AggregateError(f"{where}: {value!r} is not a finite number")
    return f


def _order(key: tuple[object, ...]) -> tuple[tuple[int, str], ...]:
    return tuple((0, "") if v is None else (1, f"{v}") for v in key)


def export_aggregates(
    fid: Fiduciary,
    recipient: str,
    purpose: str,
    rows: Iterable[Mapping[str, Any]],
    *,
    group_by: Sequence[str],
    categories: Sequence[str],
    person: str = "subject",
    measures: Sequence[str] = (),
    actor: str = "system",
    now: datetime | None = None,
) -> AggregateExport:
    """Group ``rows`` and release the groups of at least k people (see the module text).

    Each group carries its ``group_by`` values, ``people`` (distinct), ``records`` (rows)
    and, per measure, ``<m>_sum`` and ``<m>_mean`` (over the rows that have it). Raises
    AggregateError for bad input and AggregateRefused when the policy does not allow the
    export; nothing is recorded then."""
    cp = fid.policy
    _, cats = _check(cp, recipient, purpose, categories)
    keys = _names(group_by, "group_by", least=1, most=MAX_GROUP_BY)
    meas = _names(measures, "measures", least=0, most=16)
    if not isinstance(person, str) or not person:
        raise AggregateError("person: the column naming the person each row is about")
    if person in keys or person in meas or set(keys) & set(meas):
        raise AggregateError("person, group_by and measures must name different columns")
    if not isinstance(actor, str) or not 0 < len(actor) <= 128:
        raise AggregateError("actor must be 1-128 characters")
    if isinstance(rows, str | bytes | Mapping) or not isinstance(rows, Iterable):
        raise AggregateError("rows must be a list of records (mappings)")
    k = k_for(cp, recipient)
    at = (now if now is not None else datetime.now(UTC)).astimezone(UTC)

    people: dict[tuple[object, ...], set[object]] = {}
    records: dict[tuple[object, ...], int] = {}
    sums: dict[tuple[object, ...], list[float]] = {}
    counts: dict[tuple[object, ...], list[int]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise AggregateError(f"rows[{i}]: expected a record (a mapping)")
        who = row.get(person)
        if who is None:
            raise AggregateError(f"rows[{i}]: no {person!r}: each row names the person it is about")
        if type(who) not in _PLAIN:
            who = _key(who, f"rows[{i}].{person}")
        try:
            key = tuple([row[c] for c in keys])
        except KeyError as exc:
            raise AggregateError(f"rows[{i}]: no column {exc.args[0]!r} to group by") from None
        # Text and whole numbers, the usual case, are taken as they are; the rest is checked.
        for v in key:
            if type(v) not in _PLAIN:
                key = tuple(_key(row[c], f"rows[{i}].{c}") for c in keys)
                break
        people.setdefault(key, set()).add(who)
        records[key] = records.get(key, 0) + 1
        if meas:
            s = sums.get(key)
            if s is None:
                s = sums[key] = [0.0] * len(meas)
                counts[key] = [0] * len(meas)
            n = counts[key]
            for j, m in enumerate(meas):
                v = row.get(m)
                if v is None:
                    continue
                if type(v) is not int or not -_BIG <= v <= _BIG:
                    v = _number(v, f"rows[{i}].{m}")
                s[j] += v
                n[j] += 1

    released = [key for key in people if len(people[key]) >= k]
    released.sort(key=_order)
    groups: list[dict[str, Any]] = []
    covered: set[object] = set()
    for key in released:
        g: dict[str, Any] = dict(zip(keys, key, strict=True))
        g["people"] = len(people[key])
        g["records"] = records[key]
        for j, m in enumerate(meas):
            total, seen = sums[key][j], counts[key][j]
            if not math.isfinite(total):
                raise AggregateError(f"measure {m!r}: the sum over a group is too large a number")
            g[f"{m}_sum"] = total
            g[f"{m}_mean"] = total / seen if seen else None
        groups.append(g)
        covered |= people[key]
    suppressed = len(people) - len(released)
    disclosure_id: int | None = None
    if groups:
        detail = {"k": k, "group_by": list(keys), "groups": len(groups), "suppressed": suppressed}
        with fid.data.begin() as conn:
            disclosure_id = fid.disclosures.record_aggregate(
                conn,
                recipient=recipient,
                purpose=purpose,
                categories=cats,
                people=len(covered),
                detail=detail,
                at=at,
                actor=actor,
            )
            fid.audit.append(
                conn,
                actor=actor,
                action="disclosure.aggregate",
                purpose=purpose,
                result="ok",
                detail={"disclosure_id": disclosure_id, "recipient": recipient, **detail},
            )
    return AggregateExport(
        disclosure_id=disclosure_id,
        recipient=recipient,
        purpose=purpose,
        categories=cats,
        k=k,
        group_by=keys,
        measures=meas,
        groups=tuple(groups),
        suppressed=suppressed,
        people=len(covered),
        at=at,
    )
