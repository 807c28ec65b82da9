"""Planning: from a subject's identities to every row the company holds on them.

``build_plan(cp, identity_kinds)`` walks the datastores declared in the policy (fideslang
Dataset shape) from the collections that hold the given identity kinds, following
``cp.references`` in the directions they allow, over as many hops as it takes:

- a reference ``A.f -> B.g`` with ``direction: from`` lets data flow from B to A: B's rows
  are found first, then A's rows whose ``f`` is among their ``g`` values;
- ``direction: to`` is the reverse (A first, then the B rows A points at);
- no direction: either way, whichever end the walk reaches first.

The result is a :class:`Plan`: plain data (JSON-serialisable, no personal data) listing
the collections in fetch order, each with how its rows are found (an identity field equal
to the request's values, or a field IN the values of another collection's field already
fetched). It depends only on the policy and the identity kinds, never on a person, so one
plan serves every request in a batch, and it is deterministic: the same policy and kinds
give the same plan, byte for byte.

Ownership. A row found through a link that points *at* the person's row (``payments.
user_id -> users.id``: the payment holds the reference) is the person's; a row found the
other way round (``files.blob_id -> content_blobs.id`` followed from the file: the blob is
shared content the file points at) is related but not theirs. Ownership also stops at a
collection whose link to the person is cut on erasure (``unlink``): a post stays, detached,
and the comments other people wrote on it are theirs, not the poster's. Access requests
read every row found; erasure touches only owned rows. Each input records whether it
passes ownership (``owning``).

Reachability is checked here, before anything runs: a collection holding personal data
(a field with categories) that the walk cannot reach is an :class:`UnreachableCollections`
error naming it, unless the collection opts out with ``fides_meta.skip_processing``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fiduciary.policy.compile import CollectionInfo, CompiledPolicy, FieldInfo
from fiduciary.policy.model import RequestType
from fiduciary.policy.taxonomy import is_within

__all__ = [
    "PLAN_VERSION",
    "Input",
    "LegalMinimumRef",
    "Plan",
    "PlanError",
    "PlanExemption",
    "PlanField",
    "PlanNode",
    "UnreachableCollections",
    "build_plan",
]

PLAN_VERSION = 1
# Strategies on a link field that cut the person from the row rather than erase the row.
_CUTTING = frozenset({"unlink", "null"})


class PlanError(ValueError):
    """The policy's datastores, or the identity kinds asked for, cannot make a plan."""


class UnreachableCollections(PlanError):
    """Collections holding personal data that no path from the identities reaches."""

    def __init__(self, collections: Iterable[str], identity_kinds: Iterable[str]) -> None:
        self.collections = tuple(sorted(collections))
        self.identity_kinds = tuple(sorted(identity_kinds))
        super().__init__(
            "these collections hold personal data but cannot be reached from the identities "
            f"{', '.join(self.identity_kinds)}: {', '.join(self.collections)}. Add a reference "
            "(fides_meta.references) linking each to a reachable collection, an identity field, "
            "or mark the collection fides_meta.skip_processing: true"
        )


# --------------------------------------------------------------------------- plan data


@dataclass(frozen=True, slots=True)
class LegalMinimumRef:
    """A retention rule's legal minimum covering a field (PLV-7, LAW-3)."""

    rule: str
    period: str
    reason: str
    basis: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "period": self.period, "reason": self.reason, "basis": self.basis}


@dataclass(frozen=True, slots=True)
class PlanExemption:
    """An exemption from the policy (legal hold, legal claims ...), applied when active."""

    key: str
    name: str
    basis: str
    suspends: tuple[str, ...]
    categories: tuple[str, ...]  # empty: every field of every collection

    def covers(self, categories: Iterable[str]) -> bool:
        if not self.categories:
            return True
        return any(is_within(c, e) for c in categories for e in self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "basis": self.basis,
            "suspends": list(self.suspends),
            "categories": list(self.categories),
        }


@dataclass(frozen=True, slots=True)
class PlanField:
    name: str  # dotted path for nested fields
    categories: tuple[str, ...]
    data_type: str | None
    length: int | None
    identity: str | None
    primary_key: bool
    masking: str | None  # the policy's masking_strategy_override, if any
    masking_configuration: Mapping[str, Any]
    legal_minimums: tuple[LegalMinimumRef, ...]

    @property
    def personal(self) -> bool:
        return bool(self.categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "categories": list(self.categories),
            "data_type": self.data_type,
            "length": self.length,
            "identity": self.identity,
            "primary_key": self.primary_key,
            "masking": self.masking,
            "masking_configuration": dict(self.masking_configuration),
            "legal_minimums": [m.to_dict() for m in self.legal_minimums],
        }


@dataclass(frozen=True, slots=True)
class Input:
    """One way a node's rows are found: ``field`` equal to an identity's values
    (``identity`` set), or ``field`` IN the values of ``source.source_field``."""

    field: str
    identity: str | None = None
    source: str | None = None
    source_field: str | None = None
    owning: bool = True  # rows found this way are the person's (see the module doc)

    def to_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "identity": self.identity,
            "source": self.source,
            "source_field": self.source_field,
            "owning": self.owning,
        }


@dataclass(frozen=True, slots=True)
class PlanNode:
    collection: str  # "datastore.collection"
    datastore: str
    name: str  # the collection (SQL table) name
    primary_key: tuple[str, ...]
    fields: tuple[PlanField, ...]
    inputs: tuple[Input, ...]
    delete_rows: bool  # collection-level masking override: delete
    detached: bool  # erasure cuts the person's link; ownership stops here
    link_table: bool  # only links between rows: unlinking deletes the row

    def field(self, name: str) -> PlanField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.collection} has no field {name!r}")

    @property
    def personal(self) -> bool:
        return any(f.personal for f in self.fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "datastore": self.datastore,
            "name": self.name,
            "primary_key": list(self.primary_key),
            "fields": [f.to_dict() for f in self.fields],
            "inputs": [i.to_dict() for i in self.inputs],
            "delete_rows": self.delete_rows,
            "detached": self.detached,
            "link_table": self.link_table,
        }


@dataclass(frozen=True)
class Plan:
    """The steps that find a subject's rows, for any number of subjects at once."""

    identity_kinds: tuple[str, ...]
    nodes: tuple[PlanNode, ...]  # fetch order: every input's source comes earlier
    erase_order: tuple[str, ...]  # rows that refer to others first, so foreign keys hold
    exemptions: Mapping[str, PlanExemption]
    policy_digest: str
    skipped: tuple[str, ...] = ()  # collections that opted out (skip_processing)
    _index: dict[str, PlanNode] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index.update({n.collection: n for n in self.nodes})

    def node(self, collection: str) -> PlanNode:
        try:
            return self._index[collection]
        except KeyError:
            raise KeyError(f"the plan has no collection {collection!r}") from None

    @property
    def collections(self) -> tuple[str, ...]:
        return tuple(n.collection for n in self.nodes)

    @property
    def datastores(self) -> tuple[str, ...]:
        return tuple(sorted({n.datastore for n in self.nodes}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "policy_digest": self.policy_digest,
            "identity_kinds": list(self.identity_kinds),
            "nodes": [n.to_dict() for n in self.nodes],
            "erase_order": list(self.erase_order),
            "exemptions": {k: e.to_dict() for k, e in sorted(self.exemptions.items())},
            "skipped": list(self.skipped),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if data.get("version") != PLAN_VERSION:
            raise PlanError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}")
        nodes = tuple(
            PlanNode(
                collection=n["collection"],
                datastore=n["datastore"],
                name=n["name"],
                primary_key=tuple(n["primary_key"]),
                fields=tuple(
                    PlanField(
                        name=f["name"],
                        categories=tuple(f["categories"]),
                        data_type=f["data_type"],
                        length=f["length"],
                        identity=f["identity"],
                        primary_key=f["primary_key"],
                        masking=f["masking"],
                        masking_configuration=dict(f["masking_configuration"]),
                        legal_minimums=tuple(LegalMinimumRef(**m) for m in f["legal_minimums"]),
                    )
                    for f in n["fields"]
                ),
                inputs=tuple(Input(**i) for i in n["inputs"]),
                delete_rows=n["delete_rows"],
                detached=n["detached"],
                link_table=n["link_table"],
            )
            for n in data["nodes"]
        )
        exemptions = {
            k: PlanExemption(
                key=e["key"],
                name=e["name"],
                basis=e["basis"],
                suspends=tuple(e["suspends"]),
                categories=tuple(e["categories"]),
            )
            for k, e in data["exemptions"].items()
        }
        return cls(
            identity_kinds=tuple(data["identity_kinds"]),
            nodes=nodes,
            erase_order=tuple(data["erase_order"]),
            exemptions=exemptions,
            policy_digest=data["policy_digest"],
            skipped=tuple(data.get("skipped", ())),
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------- building


@dataclass(frozen=True, slots=True, order=True)
class _Edge:
    source: str
    source_field: str
    dest: str
    dest_field: str
    holder_is_dest: bool  # the reference field lives in dest: the row points at the source


def build_plan(cp: CompiledPolicy, identity_kinds: Iterable[str]) -> Plan:
    """The plan that finds every row reachable from ``identity_kinds``.

    Raises :class:`PlanError` for unknown identity kinds or references naming unknown
    collections or fields, and :class:`UnreachableCollections` when a collection with
    personal data cannot be reached.
    """
    kinds = tuple(sorted(set(identity_kinds)))
    if not kinds:
        raise PlanError("no identity kinds given: a plan starts from at least one (email, ...)")
    unknown = [k for k in kinds if k not in cp.identity_kinds]
    if unknown:
        known = ", ".join(sorted(cp.identity_kinds)) or "none"
        raise PlanError(
            f"identity kind(s) {', '.join(unknown)} not declared by any datastore field "
            f"(fides_meta.identity); the policy declares: {known}"
        )

    skipped, lengths = _raw_meta(cp)
    colls = {name: c for name, c in cp.collections.items() if name not in skipped}
    edges = _edges(cp, colls)

    roots = sorted(n for n, c in colls.items() if any(k in c.identities for k in kinds))

    # Breadth-first distances from the identity collections: what can be reached at all.
    out: dict[str, list[_Edge]] = {}
    for e in edges:
        out.setdefault(e.source, []).append(e)
    dist = dict.fromkeys(roots, 0)
    frontier = list(roots)
    while frontier:
        nxt: list[str] = []
        for name in frontier:
            for e in out.get(name, []):
                if e.dest not in dist:
                    dist[e.dest] = dist[name] + 1
                    nxt.append(e.dest)
        frontier = sorted(nxt)

    unreachable = [n for n, c in colls.items() if _personal(c) and n not in dist]
    if unreachable:
        raise UnreachableCollections(unreachable, kinds)

    order, used = _fetch_order(dist, roots, [e for e in edges if e.source in dist and e.dest in dist])

    # Which nodes cut the person's link on erasure, in fetch order (sources first).
    detached: dict[str, bool] = {}
    inputs: dict[str, list[Input]] = {}
    for name in order:
        coll = colls[name]
        ins: list[Input] = [
            Input(field=coll.identities[k], identity=k) for k in kinds if k in coll.identities
        ]
        for e in used.get(name, []):
            ins.append(
                Input(
                    field=e.dest_field,
                    source=e.source,
                    source_field=e.source_field,
                    owning=e.holder_is_dest and not detached[e.source],
                )
            )
        inputs[name] = ins
        owning_fields = [i.field for i in ins if i.identity is None and i.owning]
        detached[name] = (
            not coll.delete_rows
            and not any(i.identity for i in ins)
            and bool(owning_fields)
            and all(coll.fields[f].masking in _CUTTING for f in owning_fields)
        )

    # Drop what neither holds personal data, nor has erasure work, nor leads to such.
    keep: set[str] = set()
    for name in reversed(order):
        coll = colls[name]
        needed = (
            _personal(coll) or _erasure_work(coll) or any(i.source == name for k in keep for i in inputs[k])
        )
        if needed:
            keep.add(name)
    order = [n for n in order if n in keep]

    link_tables = {n: _is_link_table(colls[n], cp) for n in order}
    legal = _legal_minimums(cp)
    nodes = tuple(
        PlanNode(
            collection=name,
            datastore=colls[name].datastore,
            name=colls[name].collection,
            primary_key=colls[name].primary_key,
            fields=tuple(
                _plan_field(name, f, lengths.get((name, f.path)), legal) for f in colls[name].fields.values()
            ),
            inputs=tuple(inputs[name]),
            delete_rows=colls[name].delete_rows,
            detached=detached[name],
            link_table=link_tables[name],
        )
        for name in order
    )
    exemptions = {
        key: PlanExemption(
            key=key,
            name=ex.name,
            basis=ex.basis,
            suspends=tuple(str(s) for s in ex.suspends),
            categories=tuple(ex.categories),
        )
        for key, ex in sorted(cp.exemptions.items())
        if RequestType.erase in ex.suspends or RequestType.close_account in ex.suspends
    }
    return Plan(
        identity_kinds=kinds,
        nodes=nodes,
        erase_order=_erase_order(cp, order),
        exemptions=exemptions,
        policy_digest=cp.digest,
        skipped=tuple(sorted(skipped)),
    )


def _personal(coll: CollectionInfo) -> bool:
    return any(f.categories for f in coll.fields.values())


def _erasure_work(coll: CollectionInfo) -> bool:
    return coll.delete_rows or any(f.masking not in (None, "keep") for f in coll.fields.values())


def _raw_meta(cp: CompiledPolicy) -> tuple[set[str], dict[tuple[str, str], int]]:
    """What the compiled policy leaves out: skip_processing, and declared field lengths
    (a masked value must fit its column)."""
    skipped: set[str] = set()
    lengths: dict[tuple[str, str], int] = {}
    for ds in cp.policy.datastores:
        for coll in ds.collections:
            name = f"{ds.fides_key}.{coll.name}"
            if coll.fides_meta and coll.fides_meta.skip_processing:
                skipped.add(name)
            stack = [("", f) for f in coll.fields]
            while stack:
                prefix, f = stack.pop()
                path = prefix + f.name
                if f.fides_meta and f.fides_meta.length:
                    lengths[(name, path)] = f.fides_meta.length
                stack.extend((path + ".", sub) for sub in f.fields or [])
    return skipped, lengths


def _edges(cp: CompiledPolicy, colls: Mapping[str, CollectionInfo]) -> list[_Edge]:
    edges: set[_Edge] = set()
    for r in cp.references:
        where = f"reference {r.collection}.{r.field} -> {r.target}.{r.target_field}"
        if r.target not in cp.collections:
            raise PlanError(f"{where}: no collection {r.target!r} in the policy's datastores")
        if r.target_field not in cp.collections[r.target].fields:
            raise PlanError(f"{where}: collection {r.target} has no field {r.target_field!r}")
        if r.direction not in (None, "from", "to"):
            raise PlanError(f"{where}: direction must be 'from', 'to' or empty, not {r.direction!r}")
        if r.collection not in colls or r.target not in colls:
            continue  # one end opted out (skip_processing)
        if r.direction in (None, "from"):
            edges.add(_Edge(r.target, r.target_field, r.collection, r.field, holder_is_dest=True))
        if r.direction in (None, "to"):
            edges.add(_Edge(r.collection, r.field, r.target, r.target_field, holder_is_dest=False))
    return sorted(edges)


def _fetch_order(
    dist: Mapping[str, int], roots: list[str], edges: list[_Edge]
) -> tuple[list[str], dict[str, list[_Edge]]]:
    """A topological order of the reachable nodes (each after all the sources of its
    inputs, so one query per node uses every way its rows can be found). A cycle (two
    collections that may find each other) is broken at the node nearest the identities:
    its inputs from nodes not yet placed are dropped."""
    incoming: dict[str, list[_Edge]] = {n: [] for n in dist}
    for e in edges:
        if e.source != e.dest:  # a self-reference finds nothing new in one pass
            incoming[e.dest].append(e)
    placed: list[str] = []
    done: set[str] = set()
    used: dict[str, list[_Edge]] = {}
    rank = {n: (d, n) for n, d in dist.items()}
    root_set = set(roots)
    while len(placed) < len(dist):
        # Every node of a round has all its sources placed before the round, so the
        # nodes of one round never depend on each other.
        ready = sorted(
            (n for n in dist if n not in done and all(e.source in done for e in incoming[n])),
            key=rank.__getitem__,
        )
        if not ready:
            # A cycle: take the nearest node that something placed (or an identity) finds.
            candidates = [
                n
                for n in dist
                if n not in done and (n in root_set or any(e.source in done for e in incoming[n]))
            ]
            ready = [min(candidates, key=rank.__getitem__)]
        for n in ready:
            used[n] = sorted(e for e in incoming[n] if e.source in done)
            placed.append(n)
            done.add(n)
    return placed, used


def _erase_order(cp: CompiledPolicy, order: list[str]) -> tuple[str, ...]:
    """Collections holding a reference before the collections they refer to, whatever
    the direction of the walk, so deleting a parent never strands a child."""
    position = {n: i for i, n in enumerate(order)}
    refers: dict[str, set[str]] = {n: set() for n in order}  # n refers to these
    for r in cp.references:
        if r.collection in position and r.target in position and r.collection != r.target:
            refers[r.collection].add(r.target)
    referred_by: dict[str, int] = dict.fromkeys(order, 0)  # how many unplaced nodes refer to n
    for targets in refers.values():
        for t in targets:
            referred_by[t] += 1
    result: list[str] = []
    done: set[str] = set()
    # Latest-fetched first among those nothing unplaced refers to (children before parents).
    while len(result) < len(order):
        ready = [n for n in order if n not in done and referred_by[n] == 0]
        if not ready:  # a cycle of references: fall back to reverse fetch order
            ready = [n for n in order if n not in done]
        n = max(ready, key=position.__getitem__)
        result.append(n)
        done.add(n)
        for t in refers[n]:
            referred_by[t] -= 1
    return tuple(result)


def _is_link_table(coll: CollectionInfo, cp: CompiledPolicy) -> bool:
    """Only keys and links between rows (a membership, a follow): unlinking one end
    leaves a row that means nothing, so unlink deletes it."""
    ref_fields = {r.field for r in cp.references if r.collection == coll.name}
    if len(ref_fields) < 2:
        return False
    return all(f.primary_key or path in ref_fields or not f.categories for path, f in coll.fields.items())


def _legal_minimums(cp: CompiledPolicy) -> list[tuple[str, frozenset[str], tuple[str, ...], LegalMinimumRef]]:
    """Each retention rule with a legal minimum and its scope. The scope is the rule's
    collections AND categories where it names both (a tax rule on the invoices table covers
    the invoices, not every table that happens to hold a name), else whichever it names."""
    rules = []
    for key, rule in sorted(cp.retention.items()):
        if rule.legal_minimum is None:
            continue
        lm = rule.legal_minimum
        rules.append(
            (
                key,
                frozenset(rule.collections),
                tuple(rule.categories),
                LegalMinimumRef(rule=key, period=str(lm.period), reason=lm.reason, basis=lm.basis),
            )
        )
    return rules


def _plan_field(
    collection: str,
    f: FieldInfo,
    length: int | None,
    legal: list[tuple[str, frozenset[str], tuple[str, ...], LegalMinimumRef]],
) -> PlanField:
    minimums: list[LegalMinimumRef] = []
    if f.categories:
        for _key, colls, cats, ref in legal:
            if colls and collection not in colls:
                continue
            if cats and not any(is_within(c, rc) for c in f.categories for rc in cats):
                continue
            minimums.append(ref)
    return PlanField(
        name=f.path,
        categories=f.categories,
        data_type=f.data_type,
        length=length,
        identity=f.identity,
        primary_key=f.primary_key,
        masking=f.masking,
        masking_configuration=dict(f.masking_configuration),
        legal_minimums=tuple(minimums),
    )
