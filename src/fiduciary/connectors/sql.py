"""The SQL connector: any SQLAlchemy dialect, set-based, driven by a plan.

Nothing is reflected at run time: every statement is built from the plan with Core
``table()`` / ``column()`` constructs, so the connector costs no catalogue queries and
works on any database whose tables match the policy's datastore annotations.

Set-based, always. For a batch of requests:

- :meth:`SQLConnector.find` issues ONE ``SELECT ... WHERE f IN (every value of the
  batch) [OR g IN (...)]`` per collection, in the plan's fetch order, and assigns the rows
  to requests in Python. IN lists are cut at ``chunk_size`` values (1,000) and a statement
  carries at most ``max_params`` values, so only a very large batch takes more than one
  statement per collection.
- :meth:`SQLConnector.mask` (erasure) issues at most ONE ``DELETE ... WHERE pk IN (...)``
  and ONE ``UPDATE`` per collection: ``SET f = NULL`` (or a constant) for the rows it
  applies to, or ``SET f = CASE pk WHEN ... THEN ... ELSE f END`` for per-row values
  (hmac, random) — portable to SQLite, PostgreSQL and MariaDB. Collections are erased
  children first (the plan's ``erase_order``), all in one transaction: an error changes
  nothing.
- The verification pass re-reads, again one SELECT per collection, and proves that no
  identifying value of a requester is left but in exempted fields.

Idempotent: a second run of the same erasure finds either nothing, or rows whose values
already are their masks (``null``, ``fixed``, deterministic ``random``, self-checking
``hmac``), and writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Engine,
    case,
    create_engine,
    delete,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ColumnElement, TableClause, column, table
from sqlalchemy.types import NullType, TypeEngine

from fiduciary.connectors import Connector, ConnectorError, register
from fiduciary.requests.masking import (
    FieldRule,
    MaskContext,
    MaskingError,
    NodeRules,
    field_rules,
    strategy_for,
)
from fiduciary.requests.plan import Plan, PlanError, PlanNode

__all__ = [
    "CollectionErasure",
    "ErasureError",
    "ErasureResult",
    "Found",
    "RequestErasure",
    "SQLConnector",
    "Seeds",
    "Verification",
]

# request id -> identity kind -> values
Seeds = Mapping[str, Mapping[str, Sequence[Any]]]
RowKey = tuple[Any, ...]

# Only where the type changes how a value is bound or read back (an id typed by a person
# as text; 0/1 read as a yes/no). Others stay untyped: fideslang calls dates "string", and
# the driver's own value is the truest reading of a column we do not reflect.
_TYPES: dict[str, TypeEngine[Any]] = {
    "integer": BigInteger(),
    "boolean": Boolean(),
}


class ErasureError(ConnectorError):
    """An erasure could not be carried out; the transaction was rolled back."""


def _key(value: Any) -> str:
    """How values are matched to requests in Python: as text, case-folded and without
    trailing blanks, because some databases compare so (MariaDB's default collations)
    and the rows they return must still find their request."""
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    return str(value).casefold().rstrip()


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# --------------------------------------------------------------------------- results


@dataclass
class Found:
    """Rows found for a batch of requests. Holds personal data: keep it in memory (or in
    a job's encrypted results), never in clear in a store."""

    plan: Plan
    seeds: Mapping[str, Mapping[str, tuple[Any, ...]]]
    rows: dict[str, dict[RowKey, dict[str, Any]]]  # collection -> row key -> row
    found_by: dict[str, dict[RowKey, set[str]]]  # ... -> requests that reach the row
    owned_by: dict[str, dict[RowKey, set[str]]]  # ... -> requests whose row it is
    by_identity: dict[str, dict[RowKey, set[str]]]  # ... -> requests whose identity matched
    statements: int = 0
    _identifying: dict[str, dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(self.seeds)

    def for_request(self, request_id: str, *, owned_only: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Every plan collection -> the request's rows (sorted by row key)."""
        index = self.owned_by if owned_only else self.found_by
        out: dict[str, list[dict[str, Any]]] = {}
        for node in self.plan.nodes:
            rows = self.rows.get(node.collection, {})
            out[node.collection] = [
                dict(rows[k])
                for k in sorted(rows, key=_sort_key)
                if request_id in index.get(node.collection, {}).get(k, ())
            ]
        return out

    def by_request(self, *, owned_only: bool = False) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return {rid: self.for_request(rid, owned_only=owned_only) for rid in self.seeds}

    def is_owned(self, collection: str, row: Mapping[str, Any], request_id: str) -> bool:
        """True when ``row`` (from :meth:`for_request`) is the request's own, not only related."""
        node = self.plan.node(collection)
        return request_id in self.owned_by.get(collection, {}).get(_row_key(node, row), ())

    def identifying(self, request_id: str) -> dict[str, Any]:
        """The requester's identifying values (matching key -> value): the identities
        given, and every identity field of a row their identity matched (the email of
        the account a user id found)."""
        if self._identifying is None:
            # One pass over the matched rows for the whole batch, not one per request.
            index: dict[str, dict[str, Any]] = {
                rid: {_key(v): v for vs in idents.values() for v in vs if v is not None}
                for rid, idents in self.seeds.items()
            }
            for node in self.plan.nodes:
                idf = [f.name for f in node.fields if f.identity and "." not in f.name]
                rows = self.rows.get(node.collection, {})
                for k, reqs in self.by_identity.get(node.collection, {}).items():
                    row = rows[k]
                    pairs = [(_key(row[f]), row[f]) for f in idf if row.get(f) is not None]
                    for rid in reqs:
                        index[rid].update(pairs)
            self._identifying = index
        return dict(self._identifying[request_id])


@dataclass
class Verification:
    ok: bool
    rows_checked: int
    leftovers: list[dict[str, Any]] = field(default_factory=list)  # kept, with the reason
    violations: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows_checked": self.rows_checked,
            "leftovers": self.leftovers,
            "violations": self.violations,
        }


@dataclass
class CollectionErasure:
    collection: str
    rows: int = 0  # the request's own rows found
    deleted: int = 0
    updated: int = 0
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # FieldRule + rows changed
    suspended: dict[str, Any] | None = None  # why rows that would be deleted were kept

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "rows": self.rows,
            "deleted": self.deleted,
            "updated": self.updated,
            "fields": self.fields,
            "suspended": self.suspended,
        }


@dataclass
class RequestErasure:
    request_id: str
    collections: dict[str, CollectionErasure]
    verification: Verification | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "collections": {k: v.to_dict() for k, v in self.collections.items()},
            "verification": self.verification.to_dict() if self.verification else None,
        }


@dataclass
class ErasureResult:
    """What an erasure did, per request, collection and field; no personal data."""

    requests: dict[str, RequestErasure]
    statements: dict[str, int]  # select / delete / update / verify
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(r.verification is None or r.verification.ok for r in self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "statements": dict(self.statements),
            "seconds": self.seconds,
            "requests": {k: v.to_dict() for k, v in self.requests.items()},
        }


def _sort_key(k: RowKey) -> tuple[Any, ...]:
    return tuple((0, v) if isinstance(v, int | float | Decimal) else (1, str(v)) for v in k)


def _row_key(node: PlanNode, row: Mapping[str, Any]) -> RowKey:
    if node.primary_key:
        return tuple(row[p] for p in node.primary_key)
    return tuple(row.get(f.name) for f in node.fields if "." not in f.name)


# --------------------------------------------------------------------------- the connector


@register("sql")
class SQLConnector(Connector):
    """Finds, masks and verifies a plan's rows in one SQL database.

    ``engine`` is an :class:`~sqlalchemy.Engine` or a database URL. ``schemas`` maps a
    datastore (``fides_key``) to a database schema when its tables are not in the default
    one. ``datastores`` limits the connector to those datastores (a plan naming others is
    refused rather than half-run).
    """

    def __init__(
        self,
        engine: Engine | str | None = None,
        *,
        url: str | None = None,
        schemas: Mapping[str, str] | None = None,
        datastores: Collection[str] | None = None,
        chunk_size: int = 1_000,
        max_params: int = 30_000,
    ) -> None:
        target = engine if engine is not None else url
        if target is None:
            raise ValueError("SQLConnector needs an engine or a url")
        self._owns_engine = isinstance(target, str)
        self.engine: Engine = create_engine(target) if isinstance(target, str) else target
        self.schemas = dict(schemas or {})
        self.datastores = frozenset(datastores) if datastores is not None else None
        if chunk_size < 1 or max_params < chunk_size:
            raise ValueError("chunk_size must be >= 1 and max_params >= chunk_size")
        self.chunk_size = chunk_size
        self.max_params = max_params

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    # ----------------------------------------------------------------- building blocks

    def _check(self, plan: Plan) -> None:
        if self.datastores is not None:
            other = [d for d in plan.datastores if d not in self.datastores]
            if other:
                raise ConnectorError(
                    f"the plan reaches datastore(s) {', '.join(other)} that this SQL connector "
                    f"does not hold ({', '.join(sorted(self.datastores))})"
                )

    def _table(self, node: PlanNode) -> tuple[TableClause, dict[str, ColumnElement[Any]]]:
        cols = {}
        for f in node.fields:
            if "." in f.name:
                continue  # a nested field belongs to a document store, not a column
            cols[f.name] = column(f.name, _TYPES.get(f.data_type or "", NullType()))
        t = table(node.name, *cols.values(), schema=self.schemas.get(node.datastore))
        return t, {name: t.c[name] for name in cols}

    @staticmethod
    def _coerce(node: PlanNode, field_name: str, value: Any) -> Any:
        """An identity value as the column holds it (a user id typed as text by a person
        matches an integer column)."""
        if value is None:
            return None
        f = node.field(field_name)
        if f.data_type == "integer":
            try:
                return int(str(value).strip())
            except ValueError:
                return None  # cannot equal any row: dropped, not an error
        return value if isinstance(value, str) else str(value)

    def _select_in(
        self,
        conn: Connection,
        node: PlanNode,
        conditions: Sequence[tuple[str, Sequence[Any]]],
        counter: dict[str, int],
        kind: str,
    ) -> list[dict[str, Any]]:
        """SELECT the node's columns WHERE any condition's field IN its values: as few
        statements as the parameter limits allow (one for any ordinary batch)."""
        t, cols = self._table(node)
        pieces: list[ColumnElement[bool]] = []
        rows: list[dict[str, Any]] = []
        budget = 0

        def flush() -> None:
            nonlocal pieces, budget
            if not pieces:
                return
            stmt = select(*cols.values()).select_from(t).where(or_(*pieces))
            result = conn.execute(stmt)
            counter[kind] = counter.get(kind, 0) + 1
            rows.extend(dict(r._mapping) for r in result)
            pieces, budget = [], 0

        for fname, values in conditions:
            for chunk in _chunks(values, self.chunk_size):
                if budget + len(chunk) > self.max_params:
                    flush()
                pieces.append(cols[fname].in_(list(chunk)))
                budget += len(chunk)
        flush()
        return rows

    # ----------------------------------------------------------------- find / fetch

    def _normalise_seeds(self, plan: Plan, seeds: Seeds) -> dict[str, dict[str, tuple[Any, ...]]]:
        out: dict[str, dict[str, tuple[Any, ...]]] = {}
        for rid, idents in seeds.items():
            if not isinstance(rid, str) or not rid:
                raise ValueError(f"request ids must be non-empty strings, got {rid!r}")
            unknown = [k for k in idents if k not in plan.identity_kinds]
            if unknown:
                raise PlanError(
                    f"request {rid}: identity kind(s) {', '.join(sorted(unknown))} are not in this plan "
                    f"(built for {', '.join(plan.identity_kinds)}); build a plan with them"
                )
            out[rid] = {}
            for kind, values in idents.items():
                if isinstance(values, str | bytes):
                    raise ValueError(f"request {rid}: identity {kind} must be a list of values, not a string")
                out[rid][kind] = tuple(v for v in values if v is not None and v != "")
        return out

    def find(self, plan: Plan, seeds: Seeds, *, conn: Connection | None = None) -> Found:
        """Every row the plan reaches for each request of the batch."""
        self._check(plan)
        norm = self._normalise_seeds(plan, seeds)
        if conn is None:
            with self.engine.connect() as c:
                return self._find(c, plan, norm)
        return self._find(conn, plan, norm)

    def fetch(self, plan: Plan, seeds: Seeds) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """request id -> collection -> the rows found (every plan collection, sorted by key)."""
        return self.find(plan, seeds).by_request()

    def _find(
        self, conn: Connection, plan: Plan, seeds: Mapping[str, Mapping[str, tuple[Any, ...]]]
    ) -> Found:
        found = Found(plan=plan, seeds=seeds, rows={}, found_by={}, owned_by={}, by_identity={})
        counter: dict[str, int] = {}
        for node in plan.nodes:
            # For each input: value key -> requests reaching / owning rows through it.
            maps: list[tuple[str, dict[str, set[str]], dict[str, set[str]], bool]] = []
            conditions: list[tuple[str, Sequence[Any]]] = []
            for inp in node.inputs:
                reach: dict[str, set[str]] = {}
                own: dict[str, set[str]] = {}
                values: dict[str, Any] = {}
                if inp.identity is not None:
                    for rid, idents in seeds.items():
                        for raw in idents.get(inp.identity, ()):
                            v = self._coerce(node, inp.field, raw)
                            if v is None:
                                continue
                            k = _key(v)
                            values.setdefault(k, v)
                            reach.setdefault(k, set()).add(rid)
                            own.setdefault(k, set()).add(rid)
                else:
                    assert inp.source is not None and inp.source_field is not None
                    src_rows = found.rows.get(inp.source, {})
                    src_found = found.found_by.get(inp.source, {})
                    src_owned = found.owned_by.get(inp.source, {})
                    for rk, row in src_rows.items():
                        v = row.get(inp.source_field)
                        if v is None:
                            continue
                        k = _key(v)
                        values.setdefault(k, v)
                        reach.setdefault(k, set()).update(src_found.get(rk, ()))
                        if inp.owning and src_owned.get(rk):
                            own.setdefault(k, set()).update(src_owned[rk])
                if values:
                    conditions.append((inp.field, list(values.values())))
                maps.append((inp.field, reach, own, inp.identity is not None))
            rows: dict[RowKey, dict[str, Any]] = {}
            found_by: dict[RowKey, set[str]] = {}
            owned_by: dict[RowKey, set[str]] = {}
            by_identity: dict[RowKey, set[str]] = {}
            if conditions:
                for row in self._select_in(conn, node, conditions, counter, "select"):
                    reached: set[str] = set()
                    owned: set[str] = set()
                    ident: set[str] = set()
                    for fname, reach, own, is_identity in maps:
                        v = row.get(fname)
                        if v is None:
                            continue
                        k = _key(v)
                        reached |= reach.get(k, set())
                        owned |= own.get(k, set())
                        if is_identity:
                            ident |= own.get(k, set())
                    if not reached:
                        continue  # matched only by the database's looser comparison
                    rk = _row_key(node, row)
                    rows[rk] = row
                    found_by.setdefault(rk, set()).update(reached)
                    if owned:
                        owned_by.setdefault(rk, set()).update(owned)
                    if ident:
                        by_identity.setdefault(rk, set()).update(ident)
            found.rows[node.collection] = rows
            found.found_by[node.collection] = found_by
            found.owned_by[node.collection] = owned_by
            found.by_identity[node.collection] = by_identity
        found.statements = counter.get("select", 0)
        return found

    # ----------------------------------------------------------------- erasure

    def mask(
        self,
        plan: Plan,
        seeds: Seeds,
        *,
        key: bytes | None = None,
        holds: Mapping[str, Collection[str]] | None = None,
        request_type: str = "erase",
        verify: bool = True,
    ) -> ErasureResult:
        """Erase each request's own rows as the policy says, in one transaction.

        ``key`` is the erasure key for ``hmac`` (and seeds ``random``); ``holds`` maps a
        request id to the exemptions active for it (policy exemption keys: a legal hold
        ...). Returns, per request and collection, what was done to each field or which
        exemption kept it, statement counts, and (``verify``) the verification report.
        """
        self._check(plan)
        norm = self._normalise_seeds(plan, seeds)
        holds = holds or {}
        stray = [r for r in holds if r not in norm]
        if stray:
            raise ValueError(f"holds name request(s) not in the batch: {', '.join(sorted(stray))}")
        started = time.perf_counter()
        # Rules per set of active exemptions (most requests share one: none).
        cache: dict[tuple[str, frozenset[str]], NodeRules] = {}

        def rules_for(node: PlanNode, rid: str) -> NodeRules:
            active = frozenset(holds.get(rid, ()))
            ck = (node.collection, active)
            if ck not in cache:
                cache[ck] = field_rules(node, plan.exemptions, active, request_type)
            return cache[ck]

        # Check the whole plan's rules before touching anything (bad input changes nothing),
        # once per distinct set of active exemptions.
        representatives = {frozenset(holds.get(rid, ())): rid for rid in norm}.values()
        for node in plan.nodes:
            for rid in representatives:
                nr = rules_for(node, rid)
                for fname, rule in nr.fields.items():
                    strat = strategy_for(rule.strategy, f"{node.collection}.{fname}")
                    if strat.needs_key and key is None and not nr.delete_row:
                        raise MaskingError(
                            f"{node.collection}.{fname}: strategy {rule.strategy} needs the erasure key"
                        )
            if node.primary_key and len(node.primary_key) != 1:
                needs = any(
                    nr.delete_row or any(not r.kept for r in nr.fields.values())
                    for nr in (rules_for(node, rid) for rid in representatives)
                )
                if needs:
                    raise ErasureError(
                        f"{node.collection}: erasure needs a single-column primary key, "
                        f"the policy declares {', '.join(node.primary_key)}"
                    )

        counter: dict[str, int] = {}
        try:
            with self.engine.begin() as conn:
                found = self._find(conn, plan, norm)
                counter["select"] = found.statements
                work = self._decide(plan, found, rules_for, key)
                self._execute(conn, plan, work, counter)
        except SQLAlchemyError as exc:
            raise ErasureError(f"erasure rolled back, nothing changed: {type(exc).__name__}: {exc}") from exc

        result = ErasureResult(requests={}, statements=counter)
        # request -> collection -> its own row keys (one pass over the rows, not one per request)
        own: dict[str, dict[str, list[RowKey]]] = {rid: {} for rid in norm}
        for coll, index in found.owned_by.items():
            for k, reqs in index.items():
                for rid in reqs:
                    own[rid].setdefault(coll, []).append(k)
        for rid in norm:
            colls: dict[str, CollectionErasure] = {}
            for node in plan.nodes:
                w = work[node.collection]
                owned_keys = own[rid].get(node.collection, [])
                nr = rules_for(node, rid)
                ce = CollectionErasure(collection=node.collection, rows=len(owned_keys))
                ce.deleted = sum(1 for k in owned_keys if k in w.deletes)
                ce.updated = sum(1 for k in owned_keys if k in w.updated_keys)
                for fname, rule in nr.fields.items():
                    entry = rule.to_dict()
                    entry["rows"] = sum(1 for k in owned_keys if k[0] in w.changes.get(fname, {}))
                    if nr.delete_row:
                        entry["rows"] = ce.deleted
                    ce.fields[fname] = entry
                for fname, rule in w.auto_unlinks.items():
                    entry = rule.to_dict()
                    entry["rows"] = sum(1 for k in owned_keys if k[0] in w.changes.get(fname, {}))
                    ce.fields[fname] = entry
                if nr.suspended is not None:
                    ce.suspended = nr.suspended.to_dict()
                colls[node.collection] = ce
            result.requests[rid] = RequestErasure(rid, colls)
        if verify:
            self._verify(plan, found, work, rules_for, result, counter)
        result.statements = dict(counter)
        result.seconds = time.perf_counter() - started
        return result

    def _decide(
        self,
        plan: Plan,
        found: Found,
        rules_for: Any,
        key: bytes | None,
    ) -> dict[str, _Work]:
        """Per collection: the rows to delete and the new value of each changed field,
        computed in Python from the rows found (no statement per row, ever)."""
        work: dict[str, _Work] = {}
        for node in plan.nodes:
            w = _Work()
            work[node.collection] = w
            rows = found.rows[node.collection]
            owned_by = found.owned_by[node.collection]
            if not owned_by:
                continue
            # For each owning link field: the values that point at each request's own rows.
            links: dict[str, dict[str, set[str]]] = {}  # field -> value key -> requests
            deleted_parent: dict[str, tuple[str, set[str]]] = {}  # field -> (source, keys)
            for inp in node.inputs:
                if inp.identity is not None or not inp.owning:
                    continue
                assert inp.source is not None and inp.source_field is not None
                src_rows = found.rows[inp.source]
                per = links.setdefault(inp.field, {})
                for rk, reqs in found.owned_by[inp.source].items():
                    v = src_rows[rk].get(inp.source_field)
                    if v is not None:
                        per.setdefault(_key(v), set()).update(reqs)
                gone = {
                    _key(src_rows[rk].get(inp.source_field))
                    for rk in work[inp.source].deletes
                    if src_rows[rk].get(inp.source_field) is not None
                }
                if gone:
                    prev = deleted_parent.get(inp.field)
                    deleted_parent[inp.field] = (inp.source, gone | (prev[1] if prev else set()))
            for rk, owners in sorted(owned_by.items(), key=lambda kv: _sort_key(kv[0])):
                row = rows[rk]
                ordered = sorted(owners)
                per_owner = [rules_for(node, r) for r in ordered]
                if all(nr.delete_row for nr in per_owner):
                    w.deletes[rk] = row
                    continue
                # A field shared by several requests in the batch: kept if any keeps it.
                merged: dict[str, FieldRule] = {}
                for nr in per_owner:
                    for fname, rule in nr.fields.items():
                        cur = merged.get(fname)
                        if cur is None or (rule.kept and not cur.kept) or cur.strategy == "delete":
                            merged[fname] = rule
                pk_value = rk[0] if len(rk) == 1 else None
                for fname, rule in merged.items():
                    current = row.get(fname)
                    new: Any
                    if rule.kept or rule.strategy == "delete":
                        continue
                    if rule.strategy in ("unlink", "null") and fname in links:
                        # Only the link to this person's row is cut; a link to someone
                        # else (the other party of a message) stays.
                        if current is None or not (links[fname].get(_key(current), set()) & owners):
                            continue
                        new = None
                    elif rule.strategy == "unlink":
                        new = None  # a link away from the person (to shared content)
                    else:
                        strat = strategy_for(rule.strategy)
                        ctx = MaskContext(
                            request_id=ordered[0],
                            collection=node.collection,
                            field=node.field(fname),
                            row_key=str(pk_value if pk_value is not None else rk),
                            value=current,
                            configuration=rule.configuration or {},
                            key=key,
                        )
                        if strat.is_masked(ctx):
                            continue
                        new = strat.value(ctx)
                    if new == current and (new is None) == (current is None):
                        continue
                    w.changes.setdefault(fname, {})[pk_value] = new
                    w.updated_keys.add(rk)
                # A kept row whose parent row is deleted must let go of it (foreign keys).
                for fname, (source, gone) in deleted_parent.items():
                    rule = merged.get(fname)
                    current = row.get(fname)
                    if current is None or _key(current) not in gone:
                        continue
                    if rule is not None and rule.strategy in ("unlink", "null"):
                        continue
                    w.auto_unlinks[fname] = FieldRule(
                        "unlink", reason=f"its row in {source} is deleted", configuration=None
                    )
                    w.changes.setdefault(fname, {})[pk_value] = None
                    w.updated_keys.add(rk)
        return work

    def _execute(
        self, conn: Connection, plan: Plan, work: Mapping[str, _Work], counter: dict[str, int]
    ) -> None:
        for name in plan.erase_order:
            node = plan.node(name)
            w = work[name]
            if not (w.deletes or w.changes):
                continue
            t, cols = self._table(node)
            pk = cols[node.primary_key[0]] if node.primary_key else None
            if w.changes:
                if pk is None:
                    raise ErasureError(f"{name}: masking rows needs a primary key in the policy")
                self._update(conn, node, t, cols, pk, w.changes, counter)
            if w.deletes:
                if pk is None:
                    # No key: delete by the whole row's values would be a statement per
                    # row, so refuse rather than break the set-based promise.
                    raise ErasureError(f"{name}: deleting rows needs a primary key in the policy")
                keys = [k[0] for k in w.deletes]
                for chunk in _chunks(keys, self.max_params):
                    conn.execute(delete(t).where(_in(pk, chunk, self.chunk_size)))
                    counter["delete"] = counter.get("delete", 0) + 1

    def _update(
        self,
        conn: Connection,
        node: PlanNode,
        t: TableClause,
        cols: Mapping[str, ColumnElement[Any]],
        pk: ColumnElement[Any],
        changes: Mapping[str, Mapping[Any, Any]],
        counter: dict[str, int],
    ) -> None:
        """ONE UPDATE for every changed field of the collection (more only when the
        parameters overflow one statement)."""
        keys = sorted({k for per in changes.values() for k in per}, key=lambda v: _sort_key((v,)))
        # Parameters per key: the WHERE, plus (per-row fields) a WHEN and a THEN.
        per_key = (
            1 + sum(2 for per in changes.values() if len({_key(v) for v in per.values()}) > 1) + len(changes)
        )
        size = max(1, min(self.max_params // per_key, self.max_params))
        for chunk in _chunks(keys, size):
            in_chunk = set(chunk)
            values: dict[str, Any] = {}
            for fname, per in changes.items():
                mine = {k: v for k, v in per.items() if k in in_chunk}
                if not mine:
                    continue
                col = cols[fname]
                distinct = {(_key(v) if v is not None else None, type(v)) for v in mine.values()}
                if len(distinct) == 1:
                    only = next(iter(mine.values()))
                    value: Any = (
                        null()
                        if only is None
                        else literal(only, col.type if not isinstance(col.type, NullType) else None)
                    )
                    if len(mine) == len(chunk):
                        values[fname] = value
                    else:
                        values[fname] = case((_in(pk, list(mine), self.chunk_size), value), else_=col)
                else:
                    whens = {k: (null() if v is None else _lit(v, col)) for k, v in mine.items()}
                    values[fname] = case(whens, value=pk, else_=col)
            stmt = update(t).where(_in(pk, list(chunk), self.chunk_size)).values(values)
            conn.execute(stmt)
            counter["update"] = counter.get("update", 0) + 1

    # ----------------------------------------------------------------- verification

    def _verify(
        self,
        plan: Plan,
        found: Found,
        work: Mapping[str, _Work],
        rules_for: Any,
        result: ErasureResult,
        counter: dict[str, int],
    ) -> None:
        """Re-read, set-based, every row the erasure handled and every row still holding
        an identity a requester gave, and prove that no identifying value is left but
        where an exemption (or a kept key) says so.

        In the requester's own rows, every identifying value counts (the identities given
        and those their rows held: the phone on the account found by email). Elsewhere
        only the identities given count: another account with the same phone number may
        be another person's.
        """
        given = {
            rid: {_key(v): v for vs in found.seeds[rid].values() for v in vs if v is not None}
            for rid in found.seeds
        }
        derived = {rid: set(found.identifying(rid)) for rid in found.seeds}
        search = [v for vs in given.values() for v in vs.values()]
        reports = {rid: Verification(ok=True, rows_checked=0) for rid in found.seeds}
        tallies: dict[str, dict[tuple[str, str, str, str], int]] = {rid: {} for rid in found.seeds}
        given_keys = {rid: set(vs) for rid, vs in given.items()}
        with self.engine.connect() as conn:
            for node in plan.nodes:
                owned = found.owned_by[node.collection]
                conditions: list[tuple[str, Sequence[Any]]] = []
                if node.primary_key and owned:
                    conditions.append((node.primary_key[0], [k[0] for k in owned]))
                for f in node.fields:
                    if not f.identity or "." in f.name:
                        continue
                    coerced = {
                        _key(c): c for c in (self._coerce(node, f.name, v) for v in search) if c is not None
                    }
                    if coerced:
                        conditions.append((f.name, [coerced[k] for k in sorted(coerced)]))
                if not conditions:
                    continue
                rows = self._select_in(conn, node, conditions, counter, "verify")
                self._check_rows(
                    plan, node, rows, found, work, rules_for, derived, given_keys, tallies, reports
                )
        for rid, report in reports.items():
            for (coll, fname, what, reason), n in sorted(tallies[rid].items()):
                entry: dict[str, Any] = {"collection": coll, "field": fname, "rows": n}
                if what == "violation":
                    entry["problem"] = reason
                    report.violations.append(entry)
                else:
                    entry["reason"] = reason
                    report.leftovers.append(entry)
            report.ok = not report.violations
            result.requests[rid].verification = report

    def _check_rows(
        self,
        plan: Plan,
        node: PlanNode,
        rows: Iterable[dict[str, Any]],
        found: Found,
        work: Mapping[str, _Work],
        rules_for: Any,
        derived: Mapping[str, set[str]],
        given: Mapping[str, set[str]],
        tallies: dict[str, dict[tuple[str, str, str, str], int]],
        reports: Mapping[str, Verification],
    ) -> None:
        w = work[node.collection]
        owned = found.owned_by[node.collection]
        holders: dict[str, set[str]] = {}  # a given identity -> the requests that gave it
        for rid, vs in given.items():
            for v in vs:
                holders.setdefault(v, set()).add(rid)
        link_fields = {i.field for i in node.inputs if i.identity is None}
        # Where a bare number identifies someone: an identity column, or a link to one
        # (posts.member_id -> members.id); elsewhere 42 is just 42.
        numeric_scope = {f.name for f in node.fields if f.identity} | {
            i.field
            for i in node.inputs
            if i.source is not None
            and i.source_field is not None
            and plan.node(i.source).field(i.source_field).identity
        }
        scope = [
            f
            for f in node.fields
            if "." not in f.name and (f.categories or f.identity or f.name in link_fields)
        ]
        for row in rows:
            rk = _row_key(node, row)
            mine = owned.get(rk, set())
            keys = {f.name: _key(row[f.name]) for f in scope if row.get(f.name) is not None}
            requests = set(mine)
            for value_key in keys.values():
                requests |= holders.get(value_key, set())
            for rid in sorted(requests):
                tally = tallies[rid]
                reports[rid].rows_checked += 1
                if rid in mine and rk in w.deletes:
                    tk = (node.collection, "*", "violation", "row not deleted")
                    tally[tk] = tally.get(tk, 0) + 1
                    continue
                values = derived[rid] if rid in mine else given[rid]
                nr = rules_for(node, rid)
                for f in scope:
                    fk = keys.get(f.name)
                    if fk is None or fk not in values:
                        continue
                    if fk.isdigit() and f.name not in numeric_scope:
                        continue
                    rule = nr.fields.get(f.name)
                    if f.primary_key:
                        what, reason = "leftover", "primary key of a row kept in place"
                    elif rule is not None and rule.exemption:
                        what, reason = "leftover", f"exemption {rule.exemption}: {rule.reason}"
                    elif f.name in link_fields and rule is not None and rule.kept:
                        what, reason = "leftover", "link to the person's row, kept in place and masked"
                    elif rule is not None and rule.kept and rule.reason:
                        what, reason = "leftover", rule.reason
                    else:
                        what, reason = "violation", "identifying value left"
                    tk = (node.collection, f.name, what, reason)
                    tally[tk] = tally.get(tk, 0) + 1


@dataclass
class _Work:
    deletes: dict[RowKey, dict[str, Any]] = field(default_factory=dict)
    changes: dict[str, dict[Any, Any]] = field(default_factory=dict)  # field -> pk -> new value
    updated_keys: set[RowKey] = field(default_factory=set)
    auto_unlinks: dict[str, FieldRule] = field(default_factory=dict)


def _in(col: ColumnElement[Any], values: Sequence[Any], chunk: int) -> ColumnElement[bool]:
    """``col IN (...)``, cut into OR-ed lists of at most ``chunk`` values (some databases
    limit one IN list)."""
    parts = [col.in_(list(c)) for c in _chunks(values, chunk)]
    return parts[0] if len(parts) == 1 else or_(*parts)


def _lit(value: Any, col: ColumnElement[Any]) -> ColumnElement[Any]:
    return literal(value, None if isinstance(col.type, NullType) else col.type)
