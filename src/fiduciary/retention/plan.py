"""Planning a sweep: the policy's retention rules -> tasks over the vault and the datastores.

``plan_sweep(cp, data, connectors, at=...)`` reads the compiled policy's rules and answers,
for the moment ``at``, what each rule would change and where, without changing anything
(``fiduciary retention plan`` prints it). Each rule becomes one or more **tasks**:

- ``rows`` — a connected datastore's collection, row by row: every row whose *clock* (a
  time column) is older than the rule's period is deleted, truncated (IP to its network,
  user agent to its family), anonymized (the policy's masking) or aggregated (counted per
  day, then deleted). Triggers ``collected``, ``transaction``, ``purpose_fulfilled``,
  ``session_end`` and ``last_activity`` of a collection that holds no account (the cache
  of shared content).
- ``vault`` — values the vault holds under the rule's categories, collected before the
  cutoff: deleted.
- ``closure`` — accounts closed long enough ago (``account_closed``): the rules whose
  period has run out are carried out together, as one **stage**, by the erasure machinery
  of rights requests (one UPDATE / DELETE per collection for a batch of accounts, legal
  minimums kept: PLV-7). The last stage also crypto-shreds the vault subject.
- ``notice`` and ``inactive`` — accounts without activity (``last_activity`` with
  ``notice_before``, PLO-9): a notice by email at ``period - notice_before``, deletion at
  ``period`` unless the person came back after the notice.

The clock of a collection is named in the sweep's options (``clocks``:
``{"datastore.collection": "column"}``, or ``"rule:datastore.collection"`` for one rule;
``"a|b"`` means the first of the two that is set), else found by its name: the policy's
datastore annotations (fideslang) have no word for it. A rule that cannot be carried out
(no connection, no clock, no single-column primary key, data held by a processor) is
listed with the reason, never silently dropped.

Each task is cut into **batches**: ranges ``(lo, hi]`` of the primary key (of the
subject id for accounts), found with one window query, so that every batch is one
statement (per collection) and is keyed by its range: a batch run twice does nothing the
second time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Connection,
    Date,
    DateTime,
    Engine,
    String,
    Text,
    exists,
    func,
    inspect,
    not_,
    select,
    type_coerce,
)
from sqlalchemy.sql import ColumnElement, column, table
from sqlalchemy.sql.expression import ColumnClause
from sqlalchemy.types import TypeEngine

from fiduciary.connectors.sql import SQLConnector
from fiduciary.policy.compile import CollectionInfo, CompiledPolicy, FieldInfo
from fiduciary.policy.model import RetentionAction, RetentionRule, Trigger
from fiduciary.policy.period import Period
from fiduciary.policy.taxonomy import is_within
from fiduciary.retention.anonymize import IP, USER_AGENT
from fiduciary.store import tables as T

# The selection conditions are shared with the steps, which evaluate them batch by batch.
__all__ = [
    "ACCOUNT_BATCH",
    "BATCH",
    "RetentionPlan",
    "Skipped",
    "Task",
    "account_kinds",
    "before",
    "clock_expr",
    "clock_type",
    "clock_value",
    "closure_stages",
    "closure_where",
    "db_time",
    "inactive_where",
    "last_seen",
    "legal_minimums",
    "not_held",
    "notice_where",
    "plan_sweep",
    "rule_scope",
    "stage_name",
]

BATCH: Final = 20_000  # rows per batch: one statement each (PostgreSQL: ~0.1 s)
ACCOUNT_BATCH: Final = 500  # accounts per batch: one erasure (a statement per collection)
SESSION_IDLE: Final = timedelta(hours=24)

# Names a clock column goes by, most telling first, per trigger.
_CLOCKS: Final[Mapping[str, tuple[str, ...]]] = {
    "collected": (
        "collected_at", "created_at", "created_on", "inserted_at", "received_at", "visited_at",
        "requested_at", "logged_at", "occurred_at", "recorded_at", "screened_at", "sent_at",
        "posted_at", "entered_at", "added_at", "stored_at", "cached_at", "issued_at", "timestamp",
    ),
    "transaction": (
        "transaction_at", "issued_at", "issued_on", "invoiced_at", "paid_at", "paid_on",
        "created_at", "created_on",
    ),
    "last_activity": (
        "last_activity_at", "last_active_at", "last_seen_at", "last_used_at", "last_requested_at",
        "last_login_at", "last_login_on", "updated_at", "updated_on",
    ),
    "session_end": ("last_seen_at", "last_activity_at", "last_used_at", "updated_at"),
    "purpose_fulfilled": (
        "fulfilled_at", "completed_at", "resolved_at", "invited_at", "unsubscribed_at",
        "ended_at", "finished_at", "closed_at",
    ),
}  # fmt: skip
_MOMENT: Final = {
    "collected": "a row was collected",
    "transaction": "the transaction took place",
    "last_activity": "a row was last used",
    "session_end": "the session was last used",
    "purpose_fulfilled": "a row's purpose was fulfilled",
}
_NOT_COLLECTED: Final = ("last_", "updated", "closed", "deleted", "expires", "unsubscribed", "modified")
# Triggers whose clock may fall back to the collection time when the row was never active.
_FALLBACK: Final = frozenset({"last_activity", "session_end"})
_WHOLE_ROWS: Final = frozenset(
    {RetentionAction.delete, RetentionAction.crypto_shred, RetentionAction.aggregate}
)


# --------------------------------------------------------------------------- time


def before(at: datetime, period: Period | None) -> datetime:
    """The moment ``period`` before ``at`` (calendar-aware); ``at`` itself for no period."""
    if period is None:
        return at
    if period.is_session:
        raise ValueError("a session has no fixed length")
    result = at
    for n, unit in period.parts:
        if unit == "hour":
            result -= timedelta(hours=n)
        elif unit == "day":
            result -= timedelta(days=n)
        elif unit == "week":
            result -= timedelta(weeks=n)
        elif unit == "business_day":
            left = n
            while left > 0:
                result -= timedelta(days=1)
                if result.weekday() < 5:
                    left -= 1
        else:  # month, year: calendar months, as Period.add_to counts them
            back = Period(((-n, unit),)).add_to(result)
            assert isinstance(back, datetime)
            result = back
    return result


def db_time(engine: Engine | Connection, at: datetime) -> datetime:
    """``at`` as our stores compare it: UTC; naive on SQLite, which keeps times as text."""
    utc = at.astimezone(UTC)
    return utc.replace(tzinfo=None) if engine.dialect.name == "sqlite" else utc


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _days(period: Period | None) -> float:
    return 0.0 if period is None else period.approx_days()


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Task:
    """One rule on one target: what a sweep at ``at`` does there."""

    rule: str  # a retention rule key; a closure stage is named "closure@<period>"
    kind: str  # rows | vault | notice | inactive | closure
    target: str  # datastore.collection | vault | subjects
    trigger: str
    action: str  # delete | truncate | anonymize | aggregate | erase | notice
    cutoff: datetime  # rows (accounts) whose moment is at or before this are due
    since: datetime | None  # ... and after this (the previous sweep's cutoff), where it matters
    count: int  # rows, values or accounts due now (an upper bound for truncate/anonymize)
    batches: tuple[tuple[Any, Any], ...]  # (lo, hi] key ranges; lo None: from the start
    params: Mapping[str, Any] = field(default_factory=dict)  # what the sweep's steps need (JSON)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "target": self.target,
            "trigger": self.trigger,
            "action": self.action,
            "cutoff": self.cutoff.isoformat(),
            "since": self.since.isoformat() if self.since else None,
            "count": self.count,
            "batches": len(self.batches),
            "params": {k: v for k, v in self.params.items() if k not in _INTERNAL},
            "notes": list(self.notes),
        }


_INTERNAL: Final = frozenset({"ctype", "unlink"})


@dataclass(frozen=True)
class Skipped:
    """A rule (on a target) the sweep cannot carry out, and why."""

    rule: str
    target: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "target": self.target, "reason": self.reason}


@dataclass(frozen=True)
class RetentionPlan:
    """What a sweep at ``at`` would change; nothing has been changed."""

    at: datetime
    policy_digest: str
    tasks: tuple[Task, ...]
    skipped: tuple[Skipped, ...]
    warnings: tuple[str, ...]
    holds: int  # subjects under a legal hold: left alone by the account tasks
    backups: Mapping[str, Any] | None  # the backup retention and what it means for erasures

    @property
    def total(self) -> int:
        return sum(t.count for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "policy_digest": self.policy_digest,
            "total": self.total,
            "tasks": [t.to_dict() for t in self.tasks],
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": list(self.warnings),
            "holds": self.holds,
            "backups": dict(self.backups) if self.backups else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_text(self) -> str:
        lines = [f"retention sweep as of {self.at:%Y-%m-%d %H:%M} UTC"]
        for t in self.tasks:
            if t.kind == "vault" and not t.count:
                continue  # the vault holds none of the rule's categories: nothing to show
            what = {"rows": "rows", "vault": "values", "notice": "accounts", "inactive": "accounts"}.get(
                t.kind, "accounts"
            )
            window = f"after {t.since:%Y-%m-%d} " if t.since else ""
            lines.append(
                f"  {t.rule:<24} {t.target:<36} {t.action:<10} {t.count:>10,} {what} "
                f"({t.trigger}, {window}up to {t.cutoff:%Y-%m-%d %H:%M})"
            )
            lines.extend(f"      {n}" for n in t.notes)
        for s in self.skipped:
            lines.append(f"  {s.rule:<24} {s.target or '-':<36} skipped: {s.reason}")
        if self.holds:
            lines.append(f"  {self.holds} subject(s) under a legal hold are left alone (PLO-10)")
        if self.backups:
            b = self.backups
            lines.append(
                f"  backups: kept {b['retention']}; {b['erased_recently']} erasure(s) may still be in "
                f"backups until {b['clear_by'] or '-'}"
            )
        lines.extend(f"  warning: {w}" for w in self.warnings)
        lines.append(f"total: {self.total:,} rows, values and accounts due")
        return "\n".join(lines)


# --------------------------------------------------------------------------- clocks


def _clock(
    coll: CollectionInfo,
    trigger: str,
    rule_key: str,
    clocks: Mapping[str, str],
) -> list[str] | str:
    """The column(s) giving each row's moment, or why there is none."""
    for key in (f"{rule_key}:{coll.name}", coll.name):
        given = clocks.get(key)
        if given:
            names = [n.strip() for n in given.split("|") if n.strip()]
            missing = [n for n in names if n not in coll.fields]
            if missing:
                return f"clock {given!r} (option {key}) names no field of {coll.name}: {', '.join(missing)}"
            return names
    fields = [p for p, f in coll.fields.items() if "." not in p and not f.primary_key]
    wanted = _CLOCKS.get(trigger, ())
    found = next((n for n in wanted if n in fields), None)
    if found is None and trigger in ("collected", "transaction"):
        found = next(
            (n for n in fields if n.endswith(("_at", "_on", "_time")) and not n.startswith(_NOT_COLLECTED)),
            None,
        )
    if found is None:
        return (
            f"no column of {coll.name} says when {_MOMENT.get(trigger, trigger)}; "
            f"name it with the clock option ({coll.name}=COLUMN)"
        )
    if trigger in _FALLBACK:
        first = _clock(coll, "collected", rule_key, {})
        if isinstance(first, list) and first[0] != found:
            return [found, first[0]]
    return [found]


def _ctype(t: TypeEngine[Any] | None, dialect: str) -> str | None:
    """How a clock column's values compare: as timestamps, dates or ISO text. SQLite keeps
    timestamps as text (with or without microseconds): compared as text there."""
    if isinstance(t, DateTime):
        if dialect == "sqlite":
            return "text"
        return "timestamptz" if t.timezone else "timestamp"
    if isinstance(t, Date):
        return "date"
    if isinstance(t, String | Text):
        return "text"
    return None


def clock_value(ctype: str, at: datetime) -> Any:
    """``at`` bound the way a clock column of ``ctype`` compares (naive means UTC)."""
    utc = at.astimezone(UTC)
    if ctype == "timestamptz":
        return utc
    if ctype == "timestamp":
        return utc.replace(tzinfo=None)
    if ctype == "date":
        return utc.date()
    # The shortest text of the moment: compares right against both "...:00" and
    # "...:00.000000" (a stored value at the very moment is not before it).
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{utc.microsecond:06d}" if utc.microsecond else text


def clock_type(ctype: str) -> TypeEngine[Any]:
    if ctype == "timestamptz":
        return DateTime(timezone=True)
    if ctype == "timestamp":
        return DateTime()
    if ctype == "date":
        return Date()
    return String()


def clock_expr(names: Sequence[str], ctype: str) -> ColumnElement[Any]:
    cols = [column(n, clock_type(ctype)) for n in names]
    return cols[0] if len(cols) == 1 else func.coalesce(*cols)


# --------------------------------------------------------------------------- scope


def rule_scope(cp: CompiledPolicy, rule: RetentionRule) -> dict[str, tuple[bool, tuple[str, ...]]]:
    """collection -> (named by the rule, its fields within the rule's categories). A rule
    naming collections reaches those only (its categories within them, as legal minimums
    are scoped in requests/plan.py); a rule naming categories only, every collection
    holding them."""
    out: dict[str, tuple[bool, tuple[str, ...]]] = {}
    for name, coll in cp.collections.items():
        named = name in rule.collections
        if rule.collections and not named:
            continue
        fields = tuple(
            p
            for p, f in coll.fields.items()
            if "." not in p and any(is_within(c, rc) for c in f.categories for rc in rule.categories)
        )
        if named or fields:
            out[name] = (named, fields)
    return out


def _personal(coll: CollectionInfo) -> list[str]:
    return [p for p, f in coll.fields.items() if "." not in p and f.categories and not f.primary_key]


def legal_minimums(
    cp: CompiledPolicy, collection: str | None, categories: Iterable[str]
) -> list[tuple[str, Period]]:
    """(rule, period) of every legal minimum (PLV-7) covering ``categories`` (in
    ``collection``), as requests/plan.py scopes them: a rule naming collections and
    categories covers those categories in those collections."""
    cats = list(categories)
    out: list[tuple[str, Period]] = []
    for key, rule in sorted(cp.retention.items()):
        lm = rule.legal_minimum
        if lm is None:
            continue
        if rule.collections and (collection is None or collection not in rule.collections):
            continue
        if rule.categories and not any(is_within(c, rc) for c in cats for rc in rule.categories):
            continue
        if not rule.categories and collection is None:
            continue
        out.append((key, lm.period))
    return out


# --------------------------------------------------------------------------- batches


_BUCKETS: Final = 4096


def _batches(
    conn: Connection, key: ColumnElement[Any], where: Sequence[ColumnElement[bool]], size: int, frm: Any
) -> tuple[int, tuple[tuple[Any, Any], ...]]:
    """How many rows match, and ranges (lo, hi] of ``key`` holding about ``size`` each.

    An integer key: its whole span (min and max: the primary key's index) is cut into
    4,096 buckets, and one GROUP BY counts the matching rows of each (one scan, no sort);
    neighbouring buckets are merged into batches, and a bucket holding more than two
    batches is cut by a window query over its own range. Other keys: one window query."""
    lo, hi = conn.execute(select(func.min(key), func.max(key)).select_from(frm)).one()
    if lo is None:
        return 0, ()
    if not (isinstance(lo, int) and isinstance(hi, int)) or isinstance(lo, bool):
        return _window(conn, key, where, size, frm)
    width = (hi - lo) // _BUCKETS + 1
    k = type_coerce(key, BigInteger())
    bucket = ((k - lo) // width).label("b")
    rows = conn.execute(
        select(bucket, func.count(), func.max(key))
        .select_from(frm)
        .where(*where)
        .group_by(bucket)
        .order_by(bucket)
    ).all()
    ranges: list[tuple[Any, Any]] = []
    start: Any = None  # the (exclusive) low end of the batch being filled
    filled, total, last = 0, 0, None
    for _b, n, top in rows:
        n = int(n)
        total += n
        if n > 2 * size:
            if filled:
                ranges.append((start, last))
                start, filled = last, 0
            bounded = [*where, key <= top] + ([key > start] if start is not None else [])
            ranges.extend(
                (start if a is None else a, b) for a, b in _window(conn, key, bounded, size, frm)[1]
            )
            start = last = top
            continue
        filled += n
        last = top
        if filled >= size:
            ranges.append((start, top))
            start, filled = top, 0
    if filled:
        ranges.append((start, last))
    return total, tuple((_jsonable_key(a), _jsonable_key(b)) for a, b in ranges)


def _window(
    conn: Connection, key: ColumnElement[Any], where: Sequence[ColumnElement[bool]], size: int, frm: Any
) -> tuple[int, tuple[tuple[Any, Any], ...]]:
    """ONE window query (one scan in key order): every ``size``-th key and the last one,
    whose row number is the count."""
    rn = func.row_number().over(order_by=key).label("rn")
    nxt = func.lead(key).over(order_by=key).label("nxt")
    inner = select(key.label("k"), rn, nxt).select_from(frm).where(*where).subquery()
    rows = conn.execute(
        select(inner.c.k, inner.c.rn)
        .where((inner.c.rn % size == 0) | inner.c.nxt.is_(None))
        .order_by(inner.c.k)
    ).all()
    if not rows:
        return 0, ()
    ranges: list[tuple[Any, Any]] = []
    lo: Any = None
    for hi in dict.fromkeys(_jsonable_key(r.k) for r in rows):
        ranges.append((lo, hi))
        lo = hi
    return int(rows[-1].rn), tuple(ranges)


def _jsonable_key(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


# --------------------------------------------------------------------------- accounts


def account_kinds(cp: CompiledPolicy) -> list[str]:
    return sorted(k for k, s in cp.policy.subjects.items() if s.account)


def not_held() -> ColumnElement[bool]:
    h = T.retention_holds.c
    return not_(exists().where(h.subject_id == T.subjects.c.id))


def last_seen() -> ColumnElement[Any]:
    s = T.subjects.c
    return func.coalesce(s.last_activity_at, s.created_at)


def closure_stages(cp: CompiledPolicy) -> list[tuple[Period | None, list[str]]]:
    """The account_closed rules grouped by period, shortest first: each group is one stage."""
    groups: dict[str, tuple[Period | None, list[str]]] = {}
    for key, rule in sorted(cp.retention.items()):
        if rule.trigger != Trigger.account_closed:
            continue
        period = None if rule.period is None or rule.period.is_session else rule.period
        name = str(period) if period else "closure"
        groups.setdefault(name, (period, []))[1].append(key)
    return sorted(groups.values(), key=lambda g: _days(g[0]))


def stage_name(period: Period | None) -> str:
    return f"closure@{period}" if period else "closure@0"


def closure_where(
    cutoff: datetime, since: datetime | None, conn: Connection | Engine
) -> list[ColumnElement[bool]]:
    s = T.subjects.c
    where = [s.status == "closed", s.closed_at <= db_time(conn, cutoff), not_held()]
    if since is not None:
        where.append(s.closed_at > db_time(conn, since))
    return where


def notice_where(
    cp: CompiledPolicy, rule: str, cutoff: datetime, conn: Connection | Engine
) -> list[ColumnElement[bool]]:
    """Active accounts silent since before ``cutoff`` and not noticed since their last activity."""
    s, n = T.subjects.c, T.retention_notices.c
    seen = last_seen()
    return [
        s.status == "active",
        s.kind.in_(account_kinds(cp)),
        seen <= db_time(conn, cutoff),
        not_held(),
        not_(exists().where(n.subject_id == s.id, n.rule == rule, n.since >= seen)),
    ]


def inactive_where(
    cp: CompiledPolicy,
    rule: str,
    cutoff: datetime,
    noticed_by: datetime | None,
    conn: Connection | Engine,
) -> list[ColumnElement[bool]]:
    """Active accounts silent since before ``cutoff``; with a notice period, only those
    told (or unreachable) by ``noticed_by`` and silent since the notice (PLO-9)."""
    s, n = T.subjects.c, T.retention_notices.c
    seen = last_seen()
    where = [s.status == "active", s.kind.in_(account_kinds(cp)), seen <= db_time(conn, cutoff), not_held()]
    if noticed_by is not None:
        where.append(
            exists().where(
                n.subject_id == s.id,
                n.rule == rule,
                n.since >= seen,
                n.status.in_(("sent", "no_address")),
                n.noticed_at <= db_time(conn, noticed_by),
            )
        )
    return where


# --------------------------------------------------------------------------- planning


@dataclass
class _Planner:
    cp: CompiledPolicy
    data: Engine
    connectors: Mapping[str, SQLConnector]
    at: datetime
    clocks: Mapping[str, str]
    batch: int
    account_batch: int
    session_idle: timedelta
    marks: dict[tuple[str, str], datetime] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _columns: dict[str, dict[str, TypeEngine[Any]] | str] = field(default_factory=dict)

    # -- datastores
    def _reflect(self, coll: CollectionInfo) -> dict[str, TypeEngine[Any]] | str:
        if coll.name in self._columns:
            return self._columns[coll.name]
        connector = self.connectors[coll.datastore]
        schema = connector.schemas.get(coll.datastore)
        try:
            cols = inspect(connector.engine).get_columns(coll.collection, schema=schema)
            found: dict[str, TypeEngine[Any]] | str = {c["name"]: c["type"] for c in cols}
        except Exception as exc:  # the table is missing, the database unreachable ...
            found = f"cannot read table {coll.collection}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        if not found:
            found = f"table {coll.collection} does not exist in datastore {coll.datastore}"
        self._columns[coll.name] = found
        return found

    def rows(self, key: str, rule: RetentionRule, trigger: str, period: Period | None) -> None:
        scope = rule_scope(self.cp, rule)
        if not scope:
            self.skipped.append(
                Skipped(
                    key,
                    None,
                    "no collection of the policy's datastores holds these categories "
                    "(held by a processor, or not stored)",
                )
            )
        order = sorted(scope.items())
        for name, (named, fields) in order:
            coll = self.cp.collections[name]
            self._rows_on(key, rule, trigger, period, coll, named, fields)

    def _rows_on(
        self,
        key: str,
        rule: RetentionRule,
        trigger: str,
        period: Period | None,
        coll: CollectionInfo,
        named: bool,
        fields: tuple[str, ...],
    ) -> None:
        name = coll.name

        def skip(reason: str) -> None:
            self.skipped.append(Skipped(key, name, reason))

        if coll.datastore not in self.connectors:
            return skip(f"no connection for datastore {coll.datastore} (--connection {coll.datastore}=URL)")
        if len(coll.primary_key) != 1:
            return skip("a sweep needs a single-column primary key in the policy's datastore")
        clock = _clock(coll, trigger, key, self.clocks)
        if isinstance(clock, str):
            return skip(clock)
        columns = self._reflect(coll)
        if isinstance(columns, str):
            return skip(columns)
        dialect = self.connectors[coll.datastore].engine.dialect.name
        ctype = _ctype(columns.get(clock[0]), dialect)
        if ctype is None or any(_ctype(columns.get(c), dialect) != ctype for c in clock[1:]):
            got = ", ".join(f"{c}: {columns.get(c)!r}" for c in clock)
            return skip(f"clock {'|'.join(clock)} is not a date, timestamp or ISO text column ({got})")
        notes: list[str] = []
        action = rule.action
        op: str
        params: dict[str, Any] = {}
        personal = _personal(coll)
        whole = named or (bool(personal) and set(personal) <= set(fields)) or coll.delete_rows
        if action == RetentionAction.truncate:
            assert rule.truncate is not None
            kinds: dict[str, str] = {}
            for p in fields or tuple(personal):
                cats = coll.fields[p].categories
                if any(is_within(c, IP) for c in cats):
                    kinds[p] = "ip"
                elif any(is_within(c, u) for c in cats for u in USER_AGENT):
                    kinds[p] = "user_agent"
            if not kinds:
                return skip("no IP address or user agent field to truncate")
            op = "truncate"
            params["fields"] = kinds
            params["truncate"] = rule.truncate.model_dump()
        elif action == RetentionAction.anonymize or (action in _WHOLE_ROWS and not whole):
            masks = _anonymize_fields(coll, fields or tuple(personal), self.cp, columns)
            if not masks:
                return skip("no field of the rule's categories to anonymize")
            op = "anonymize"
            params["fields"] = masks
            if action != RetentionAction.anonymize:
                notes.append("other personal fields stay: only the rule's categories are cleared")
        elif action == RetentionAction.aggregate:
            op = "aggregate"
        else:
            op = "delete"
        # A legal minimum (PLV-7) covering what is removed holds it longer.
        removed = personal if op in ("delete", "aggregate") else list(params.get("fields", {}))
        effective = period
        for lm_rule, lm_period in legal_minimums(self.cp, name, _cats(coll, removed)):
            if lm_rule != key and _days(lm_period) > _days(effective):
                effective = lm_period
                notes.append(f"held to the legal minimum of rule {lm_rule} ({lm_period})")
        if op in ("delete", "aggregate"):
            unlink: list[list[str]] = []
            for ref in self.cp.references:
                if ref.target != name or ref.collection == name:
                    continue
                holder = self.cp.collections[ref.collection].fields.get(ref.field)
                if holder is None or holder.masking not in ("unlink", "null"):
                    return skip(
                        f"rows of {ref.collection} refer to it ({ref.collection}.{ref.field}) and the "
                        "policy does not let go of them: give that field masking unlink, or name "
                        f"{ref.collection} in the rule"
                    )
                if self.cp.collections[ref.collection].datastore != coll.datastore:
                    return skip(f"{ref.collection} refers to it from another datastore")
                unlink.append([self.cp.collections[ref.collection].collection, ref.field, ref.target_field])
            if unlink:
                params["unlink"] = unlink
                notes.append(
                    "first cuts the links to these rows: " + ", ".join(f"{u[0]}.{u[1]}" for u in unlink)
                )
        cutoff = before(self.at, effective)
        since = self.marks.get((key, name)) if op in ("truncate", "anonymize") else None
        if since is not None and since > cutoff:
            since = None  # the policy got longer since the last sweep: start again
        pk: ColumnClause[Any] = column(coll.primary_key[0])
        clock_col = clock_expr(clock, ctype)
        where = [clock_col.is_not(None), clock_col < clock_value(ctype, cutoff)]
        if since is not None:
            where.append(clock_col >= clock_value(ctype, since))
        connector = self.connectors[coll.datastore]
        frm = table(coll.collection, pk, schema=connector.schemas.get(coll.datastore))
        try:
            with connector.engine.connect() as conn:
                count, batches = _batches(conn, pk, where, self.batch, frm)
        except Exception as exc:
            return skip(f"cannot read {coll.collection}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        params.update(
            {
                "datastore": coll.datastore,
                "collection": coll.collection,
                "pk": coll.primary_key[0],
                "clock": clock,
                "ctype": ctype,
                "op": op,
            }
        )
        self.tasks.append(
            Task(
                rule=key,
                kind="rows",
                target=name,
                trigger=trigger,
                action=op,
                cutoff=cutoff,
                since=since,
                count=count,
                batches=batches,
                params=params,
                notes=(f"clock: {'|'.join(clock)}", *notes),
            )
        )

    # -- vault values
    def vault(self, key: str, rule: RetentionRule, trigger: str, period: Period | None) -> None:
        if not rule.categories:
            return
        if rule.action == RetentionAction.truncate:
            self.skipped.append(
                Skipped(key, "vault", "values the vault holds are not truncated (only datastores' columns)")
            )
            return
        cats = sorted(self.cp.categories_within(rule.categories))
        effective = period
        notes: list[str] = []
        for lm_rule, lm_period in legal_minimums(self.cp, None, cats):
            if lm_rule != key and _days(lm_period) > _days(effective):
                effective = lm_period
                notes.append(f"held to the legal minimum of rule {lm_rule} ({lm_period})")
        cutoff = before(self.at, effective)
        a = T.attributes.c
        where = [a.category.in_(cats), a.collected_at < db_time(self.data, cutoff)]
        with self.data.connect() as conn:
            count, batches = _batches(conn, a.subject_id, where, self.batch, T.attributes)
        self.tasks.append(
            Task(
                rule=key,
                kind="vault",
                target="vault",
                trigger=trigger,
                action="delete",
                cutoff=cutoff,
                since=None,
                count=count,
                batches=batches,
                params={"categories": cats},
                notes=tuple(notes),
            )
        )

    # -- accounts
    def closure(self) -> None:
        stages = closure_stages(self.cp)
        if not stages:
            return
        last = stages[-1][0]
        due: list[str] = []  # a stage carries out every rule due by then: its own and the earlier ones
        for period, rules in stages:
            due = sorted({*due, *rules})
            final = _days(period) == _days(last)
            name = stage_name(period)
            cutoff = before(self.at, period)
            since = self.marks.get((name, "subjects"))
            if since is not None and since > cutoff:
                since = None
            with self.data.connect() as conn:
                count, batches = _batches(
                    conn, T.subjects.c.id, closure_where(cutoff, since, conn), self.account_batch, T.subjects
                )
            notes = [f"rules: {', '.join(rules)}"]
            if final:
                notes.append("last stage: the vault subject is crypto-shredded")
            self.tasks.append(
                Task(
                    rule=name,
                    kind="closure",
                    target="subjects",
                    trigger="account_closed",
                    action="erase",
                    cutoff=cutoff,
                    since=since,
                    count=count,
                    batches=batches,
                    params={"rules": due, "final": final, "period": str(period) if period else None},
                    notes=tuple(notes),
                )
            )
        # Identities find a person's rows: masked only at the last stage (see accounts.py).
        for period, rules in stages[:-1]:
            for key in rules:
                scope = rule_scope(self.cp, self.cp.retention[key])
                idf = sorted(
                    f"{c}.{p}"
                    for c, (named, fields) in scope.items()
                    for p, f in self.cp.collections[c].fields.items()
                    if f.identity and (named or p in fields)
                )
                if idf:
                    self.warnings.append(
                        f"rule {key} ({period or 'at closure'}) covers identity field(s) {', '.join(idf)}: "
                        f"they find the person's rows, so they are erased with the last stage ({last})"
                    )

    def inactivity(self, key: str, rule: RetentionRule) -> None:
        period = rule.period
        if period is None or period.is_session:
            self.skipped.append(Skipped(key, "subjects", "an inactivity rule needs a period"))
            return
        notice = rule.notice_before
        delete_cutoff = before(self.at, period)
        noticed_by = before(self.at, notice) if notice is not None else None
        base = {"period": str(period), "notice_before": str(notice) if notice else None}
        if notice is not None:
            notice_cutoff = before(self.at, Period(_minus(period, notice)))
            with self.data.connect() as conn:
                count, batches = _batches(
                    conn,
                    T.subjects.c.id,
                    notice_where(self.cp, key, notice_cutoff, conn),
                    self.account_batch,
                    T.subjects,
                )
            self.tasks.append(
                Task(
                    rule=key,
                    kind="notice",
                    target="subjects",
                    trigger="last_activity",
                    action="notice",
                    cutoff=notice_cutoff,
                    since=None,
                    count=count,
                    batches=batches,
                    params=base,
                    notes=(f"an email {notice} before deletion (PLO-9)",),
                )
            )
        with self.data.connect() as conn:
            count, batches = _batches(
                conn,
                T.subjects.c.id,
                inactive_where(self.cp, key, delete_cutoff, noticed_by, conn),
                self.account_batch,
                T.subjects,
            )
        notes = ["unless the person came back after the notice"] if notice else []
        self.tasks.append(
            Task(
                rule=key,
                kind="inactive",
                target="subjects",
                trigger="last_activity",
                action="erase",
                cutoff=delete_cutoff,
                since=None,
                count=count,
                batches=batches,
                params={**base, "noticed_by": noticed_by.isoformat() if noticed_by else None},
                notes=tuple(notes),
            )
        )

    def _unconnected(self) -> list[str]:
        return sorted({c.datastore for c in self.cp.collections.values()} - set(self.connectors))

    # -- the whole policy
    def run(self) -> None:
        missing = self._unconnected()
        account_rules = [
            k
            for k, r in self.cp.retention.items()
            if r.trigger == Trigger.account_closed
            or (r.trigger == Trigger.last_activity and _is_account_rule(self.cp, r))
        ]
        if missing and account_rules:
            self.warnings.append(
                f"no connection for datastore(s) {', '.join(missing)}: the account rules "
                f"({', '.join(sorted(account_rules))}) erase nothing there"
            )
        closure_done = False
        for key, rule in sorted(self.cp.retention.items()):
            trigger = str(rule.trigger)
            period = rule.period
            if period is not None and period.is_session:
                trigger, period = Trigger.session_end.value, None
            if rule.trigger == Trigger.account_closed:
                if not closure_done:
                    self.closure()
                    closure_done = True
                continue
            if rule.trigger == Trigger.last_activity and _is_account_rule(self.cp, rule):
                self.inactivity(key, rule)
                continue
            if trigger == Trigger.session_end and period is None:
                period = Period.parse(f"{int(self.session_idle.total_seconds() // 3600)} hours")
            if trigger == Trigger.purpose_fulfilled and period is None:
                period = None  # due the moment the purpose is fulfilled
            self.rows(key, rule, trigger, period)
            if trigger in (Trigger.collected, Trigger.transaction):
                self.vault(key, rule, trigger, period)


def _minus(period: Period, notice: Period) -> tuple[tuple[int, Any], ...]:
    """``period - notice`` in days (approximately, for mixed units: a notice a few hours
    early is still a notice)."""
    same = len(period.parts) == 1 and len(notice.parts) == 1 and period.parts[0][1] == notice.parts[0][1]
    if same:
        n = period.parts[0][0] - notice.parts[0][0]
        return ((max(n, 0), period.parts[0][1]),)
    return ((max(int(period.approx_days() - notice.approx_days()), 0), "day"),)


def _cats(coll: CollectionInfo, fields: Iterable[str]) -> list[str]:
    return sorted({c for p in fields for c in coll.fields[p].categories})


def _is_account_rule(cp: CompiledPolicy, rule: RetentionRule) -> bool:
    """An inactivity rule is about accounts when it warns people, names no collection, or
    names a collection that holds an identity (the accounts table)."""
    if rule.notice_before is not None or not rule.collections:
        return True
    return any(cp.collections[c].identities for c in rule.collections if c in cp.collections)


def _anonymize_fields(
    coll: CollectionInfo, fields: Iterable[str], cp: CompiledPolicy, columns: Mapping[str, TypeEngine[Any]]
) -> dict[str, Any]:
    """field -> {strategy, configuration}: the policy's masking, NULL where it names none;
    fields the policy keeps on erasure, privacy choices and yes/no values stay."""
    out: dict[str, Any] = {}
    for p in fields:
        f: FieldInfo = coll.fields[p]
        if f.primary_key:
            continue
        if f.masking == "keep" or f.data_type == "boolean":
            continue
        if any(is_within(c, "user.privacy_preferences") for c in f.categories):
            continue
        strategy = f.masking if f.masking in ("null", "fixed", "hmac", "random") else "null"
        out[p] = {
            "strategy": strategy,
            "configuration": dict(f.masking_configuration),
            "data_type": f.data_type,
            "length": getattr(columns.get(p), "length", None),
        }
    # Links to the person's other rows are cut where the policy says so (unlink, null).
    links = {r.field for r in cp.references if r.collection == coll.name}
    for p in sorted(links):
        f = coll.fields[p]
        if f.masking in ("unlink", "null") and p not in out:
            out[p] = {"strategy": "null", "configuration": {}, "data_type": f.data_type, "length": None}
    return out


def plan_sweep(
    cp: CompiledPolicy,
    data: Engine,
    connectors: Mapping[str, SQLConnector],
    *,
    at: datetime | None = None,
    clocks: Mapping[str, str] | None = None,
    batch_size: int = BATCH,
    account_batch: int = ACCOUNT_BATCH,
    session_idle: timedelta = SESSION_IDLE,
) -> RetentionPlan:
    """What a sweep at ``at`` (default: now) would change, per rule and target. Reads only:
    one count (and one window query per task with more than one batch)."""
    if batch_size < 1 or account_batch < 1:
        raise ValueError("batch sizes must be at least 1")
    moment = _utc(at) or datetime.now(UTC)
    unknown = sorted(
        k.partition(":")[2] or k for k in (clocks or {}) if (k.partition(":")[2] or k) not in cp.collections
    )
    rules = sorted({k.partition(":")[0] for k in (clocks or {}) if ":" in k} - set(cp.retention))
    if rules:
        raise ValueError(
            f"clock option names unknown retention rule(s) {', '.join(rules)}; "
            f"the policy's rules: {', '.join(sorted(cp.retention)) or 'none'}"
        )
    if unknown:
        raise ValueError(
            f"clock option names unknown collection(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(cp.collections)) or 'none'}"
        )
    p = _Planner(
        cp=cp,
        data=data,
        connectors=connectors,
        at=moment,
        clocks=dict(clocks or {}),
        batch=batch_size,
        account_batch=account_batch,
        session_idle=session_idle,
    )
    m = T.retention_marks.c
    with data.connect() as conn:
        for rule, target, cutoff in conn.execute(select(m.rule, m.target, m.cutoff)):
            got = _utc(cutoff)
            assert got is not None
            p.marks[(str(rule), str(target))] = got
        holds = int(
            conn.execute(select(func.count(func.distinct(T.retention_holds.c.subject_id)))).scalar() or 0
        )
        backups = _backups(cp, conn, moment)
    p.run()
    return RetentionPlan(
        at=moment,
        policy_digest=cp.digest,
        tasks=tuple(p.tasks),
        skipped=tuple(p.skipped),
        warnings=tuple(p.warnings),
        holds=holds,
        backups=backups,
    )


def _backups(cp: CompiledPolicy, conn: Connection, at: datetime) -> dict[str, Any] | None:
    """PLO-10: erased data lingers in backups for the backup retention; how many erasures
    that concerns now and when the last of them is gone from every backup."""
    b = cp.policy.backups
    if b is None:
        return None
    s = T.subjects.c
    since = before(at, b.retention)
    n, last = conn.execute(
        select(func.count(), func.max(s.erased_at)).where(
            s.status == "erased", s.erased_at > db_time(conn, since)
        )
    ).one()
    last_at = _utc(last)
    clear = b.retention.add_to(last_at) if last_at is not None else None
    return {
        "retention": str(b.retention),
        "erased_recently": int(n or 0),
        "clear_by": clear.isoformat() if clear is not None else None,
    }
