"""Running rights requests end to end: verified requests -> one job of idempotent steps.

    runner = RequestRunner(fid, desk, connections={"filelocker_db": "sqlite:///app.db"})
    job_id = runner.run([request_id], actor="privacy_team")
    runner.wait(job_id)
    zip_bytes = runner.export(request_id)

``run`` takes a batch of verified (or approved) requests, builds ONE plan over the
identity kinds present (``build_plan``: reachability is checked before anything starts),
and persists ONE job whose steps serve every request of the batch, grouped by type:

- access, portability: ``req.fetch`` (one SELECT per collection for the whole group) ->
  ``req.package`` (the ZIP per request, stored encrypted under the request's own key in
  ``request_files``) -> ``req.finish``;
- shine_the_light: ``req.package`` (PLV-13: the recipients that get personal data for
  their own direct marketing, or buy it: names, addresses, products) -> ``req.finish``;
- erase (child reports too): ``req.erase`` (one UPDATE/DELETE per collection, exemptions
  recorded per field, LAW-3) -> ``req.notify`` (every recipient of the erased categories:
  its webhook, else a manual task, LAW-5) -> ``req.finish``, which crypto-shreds the
  vault subjects in the transaction that closes the requests;
- restrict, object, opt_out_of_sale, withdraw_consent: ``req.choice`` (a ledger event) ->
  ``req.notify`` -> ``req.finish``; rectify: ``req.rectify`` (vault write) ->
  ``req.notify`` -> ``req.finish``; close_account: ``req.close`` -> ``req.finish``.

Personal data (the identities each request is searched by, the requesters' email
addresses, the vault's values, fetched rows) travels only in the job's encrypted inputs
and results; step params carry request ids and keys only. ``run`` reads what the steps
need once, for the whole batch, in the transaction that stores the job; the steps read no
request again (see docs/requests.md, "What a run costs our own stores").
Every handler is idempotent (see ``fiduciary.jobs.model``): erasure masks are
deterministic, files are replaced by (request, name), ledger events are skipped when the
subject's state already says so, finished requests are not finished again, and webhooks
carry an idempotency key.

Celery workers build the same resources from settings (``FIDUCIARY_POLICY``,
``FIDUCIARY_CONNECTIONS``, ``FIDUCIARY_WEBHOOKS``): importing this module registers the
factories with ``fiduciary.jobs.resources``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fiduciary.connectors.manual import ManualConnector
from fiduciary.connectors.sql import ErasureResult, Found, SQLConnector
from fiduciary.connectors.webhook import WebhookConnector, WebhookError
from fiduciary.jobs import (
    DATA,
    FAILED,
    KEYRING,
    KEYS,
    InlineExecutor,
    JobEnd,
    JobStatus,
    PermanentStepError,
    StepContext,
    StepSpec,
    create_job,
    destroy_key,
    job_status,
    register_job_end,
    register_step,
    wait_for,
)
from fiduciary.jobs import resources as job_resources
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import RequestType
from fiduciary.policy.taxonomy import is_within
from fiduciary.requests.lifecycle import (
    APPROVED,
    DONE,
    PARTIAL,
    VERIFIED,
    InvalidTransition,
    RequestDesk,
    RequestError,
    RequestInputError,
    RequestView,
)
from fiduciary.requests.package import PackageRequest, build_access_package, build_shine_the_light
from fiduciary.requests.plan import Plan, PlanNode, build_plan
from fiduciary.store import tables as T
from fiduciary.vault.crypto import seal, unseal
from fiduciary.vault.normalize import IdentityError, normalize
from fiduciary.vault.vault import StoredValue, SubjectErased, UnknownSubject

if TYPE_CHECKING:
    from fiduciary.config import Settings
    from fiduciary.core import Fiduciary
    from fiduciary.jobs import Executor

log = logging.getLogger("fiduciary.requests")

__all__ = [
    "JOB_KIND",
    "PACKAGE_FILE",
    "RequestRunner",
    "RunError",
    "connector_map",
    "erasure_key",
    "export_package",
]

JOB_KIND: Final = "requests"
PACKAGE_FILE: Final = "access.zip"
# Resource names a step handler reads (the runner's executor, or a worker's factories).
R_FIDUCIARY, R_DESK, R_CONNECTIONS, R_WEBHOOKS = "fiduciary", "request_desk", "connections", "webhooks"

_FILE_TAG = b"fiduciary/request-file\x00"
_ERASURE_KEY_TAG = b"fiduciary/erasure-key\x00"
_FETCHED: Final = frozenset({RequestType.access, RequestType.portability})
_CHOICES: Final = frozenset(
    {RequestType.restrict, RequestType.object, RequestType.opt_out_of_sale, RequestType.withdraw_consent}
)
_SUPPORTED: Final = (
    _FETCHED
    | _CHOICES
    | {RequestType.erase, RequestType.shine_the_light, RequestType.rectify, RequestType.close_account}
)
# A recipient told of a change only if it really received data: a successor, an authority
# on legal demand or a hash-list body (screening) received nothing from this person.
_RECEIVING_CONDITIONS: Final = frozenset({None, "always", "linked_account", "person_authorised"})


class RunError(RequestError, ValueError):
    """The batch cannot run (a request not ready, a datastore without a connection, bad
    details): says what and where. Nothing was started."""


# --------------------------------------------------------------------------- helpers


def _jsonable(value: object) -> Any:
    """Fetched rows as JSON (they travel in the job's encrypted results)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


def _aware(at: datetime) -> datetime:
    """UTC-aware (SQLite hands times back naive, in UTC)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def erasure_key(keyring: Any) -> bytes:
    """The key of the ``hmac`` masking strategy: derived from the keyring's token key, so
    every worker masks a value the same way (a re-run writes the same bytes)."""
    token: bytes = keyring.token_key
    return hmac.new(token, _ERASURE_KEY_TAG, hashlib.sha256).digest()


def connector_map(
    connections: Mapping[str, SQLConnector | Engine | str],
) -> dict[str, SQLConnector]:
    """datastore -> SQLConnector; engines and URLs are wrapped, one connector per distinct
    engine or URL (so datastores in one database share it)."""
    out: dict[str, SQLConnector] = {}
    made: dict[object, SQLConnector] = {}
    for ds, target in connections.items():
        if isinstance(target, SQLConnector):
            out[ds] = target
            continue
        if not isinstance(target, Engine | str):
            raise RunError(f"connection for datastore {ds!r}: an SQLConnector, Engine or URL, not {target!r}")
        key: object = target if isinstance(target, str) else id(target)
        if key not in made:
            made[key] = SQLConnector(target)
        out[ds] = made[key]
    return out


_plans: dict[tuple[str, tuple[str, ...]], Plan] = {}
_plans_lock = threading.Lock()


def _plan_for(cp: CompiledPolicy, kinds: Iterable[str]) -> Plan:
    """build_plan, kept per policy digest and identity kinds: a plan is immutable, and
    run() and every step of a job would otherwise build the same one again."""
    key = (cp.digest, tuple(sorted(set(kinds))))
    with _plans_lock:
        plan = _plans.get(key)
    if plan is None:
        plan = build_plan(cp, key[1])
        with _plans_lock:
            if len(_plans) >= 64:
                _plans.clear()
            _plans[key] = plan
    return plan


def _split_plan(plan: Plan, connectors: Mapping[str, SQLConnector]) -> list[tuple[SQLConnector, Plan]]:
    """The plan cut per connector (datastores in one database share one part). A reference
    between two databases cannot be followed by one SQL statement: refused by name."""
    missing = [ds for ds in plan.datastores if ds not in connectors]
    if missing:
        raise RunError(
            f"no connection for datastore(s) {', '.join(missing)}: give connections "
            "(FIDUCIARY_CONNECTIONS / --connection datastore=URL)"
        )
    groups: dict[int, tuple[SQLConnector, list[PlanNode]]] = {}
    for node in plan.nodes:
        conn = connectors[node.datastore]
        groups.setdefault(id(conn), (conn, []))[1].append(node)
    if len(groups) == 1:
        return [(next(iter(groups.values()))[0], plan)]
    parts: list[tuple[SQLConnector, Plan]] = []
    for conn, nodes in groups.values():
        names = {n.collection for n in nodes}
        for n in nodes:
            for i in n.inputs:
                if i.source is not None and i.source not in names:
                    raise RunError(
                        f"{n.collection} is found through {i.source}, which is in another database: "
                        "a reference across databases is not supported"
                    )
        parts.append(
            (
                conn,
                Plan(
                    identity_kinds=plan.identity_kinds,
                    nodes=tuple(nodes),
                    erase_order=tuple(c for c in plan.erase_order if c in names),
                    exemptions=plan.exemptions,
                    policy_digest=plan.policy_digest,
                    skipped=plan.skipped,
                ),
            )
        )
    return parts


@dataclass
class _Res:
    """The resources a handler needs, checked."""

    fid: Fiduciary
    desk: RequestDesk
    connectors: dict[str, SQLConnector]
    webhooks: Mapping[str, WebhookConnector]


def _res(ctx: StepContext) -> _Res:
    fid = ctx.resources.get(R_FIDUCIARY)
    desk = ctx.resources.get(R_DESK)
    if fid is None or desk is None:
        raise PermanentStepError(
            "this worker has no policy: set FIDUCIARY_POLICY (and FIDUCIARY_CONNECTIONS) for it"
        )
    conns = ctx.resources.get(R_CONNECTIONS) or {}
    hooks = ctx.resources.get(R_WEBHOOKS) or {}
    assert isinstance(desk, RequestDesk) and isinstance(conns, Mapping) and isinstance(hooks, Mapping)
    return _Res(fid, desk, dict(conns), hooks)  # type: ignore[arg-type]


def _plan_of(ctx: StepContext, r: _Res) -> Plan | None:
    kinds = ctx.inputs.get("kinds") or []
    if not kinds:
        return None
    if ctx.params.get("policy") != r.fid.policy.digest:
        raise PermanentStepError(
            "the policy changed since the job was planned; run the requests again under the new one"
        )
    return _plan_for(r.fid.policy, kinds)


def _seeds(ctx: StepContext, ids: Iterable[str], plan: Plan) -> dict[str, dict[str, list[Any]]]:
    all_seeds: Mapping[str, Mapping[str, list[Any]]] = ctx.inputs.get("seeds", {})
    return {
        rid: {k: list(v) for k, v in all_seeds.get(rid, {}).items() if k in plan.identity_kinds}
        for rid in ids
    }


def _ids(ctx: StepContext) -> list[str]:
    return [str(r) for r in ctx.params["requests"]]


def _self_keys(found: Found, rid: str) -> dict[str, list[Any]]:
    """The requester's own rows in the identity collections: their primary keys."""
    out: dict[str, list[Any]] = {}
    for node in found.plan.nodes:
        if not node.primary_key or not any(i.identity for i in node.inputs):
            continue
        keys = [rk[0] for rk, reqs in found.by_identity.get(node.collection, {}).items() if rid in reqs]
        if keys:
            out[node.collection] = [_jsonable(k) for k in keys]
    return out


def _file_aad(request_id: str, name: str) -> bytes:
    return _FILE_TAG + f"{request_id}\x00{name}".encode()


def _upsert_files(ins: Any) -> Any:
    return ins.on_conflict_do_update(
        index_elements=[T.request_files.c.request_id, T.request_files.c.name],
        set_={"content": ins.excluded.content, "created_at": ins.excluded.created_at},
    )


_UPSERT_FILES: Final = {
    "postgresql": _upsert_files(pg_insert(T.request_files)),
    "sqlite": _upsert_files(sqlite_insert(T.request_files)),
}


def _store_files(
    r: _Res, name: str, contents: Mapping[str, bytes], given: Mapping[str, str] | None = None
) -> None:
    """Replace file ``name`` of each request (idempotent), encrypted under the request's
    key: the keys from ``given`` (request id -> base64 key, as run() put them in the
    job's encrypted inputs), else one key read; then one upsert per 1,000 requests
    (PostgreSQL, SQLite; a DELETE and an INSERT elsewhere), in one transaction."""
    ids = list(contents)
    have = given or {}
    keys = {rid: base64.b64decode(have[rid]) for rid in ids if rid in have}
    missing = [rid for rid in ids if rid not in keys]
    if missing:  # a job planned by an older version
        keys.update(r.desk.load_keys(missing))
    gone = [rid for rid in ids if rid not in keys]
    if gone:
        raise PermanentStepError(
            f"request {gone[0]}: its key is gone (the requester was forgotten)"
            + (f", and {len(gone) - 1} more" if len(gone) > 1 else "")
        )
    at = datetime.now(UTC)
    f = T.request_files.c
    dialect = r.fid.data.dialect.name
    with r.fid.data.begin() as conn:
        for i in range(0, len(ids), 1000):
            part = ids[i : i + 1000]
            rows = [
                {
                    "request_id": rid,
                    "name": name,
                    "content": seal(AESGCM(keys[rid]), contents[rid], _file_aad(rid, name)),
                    "created_at": at,
                }
                for rid in part
            ]
            if dialect in _UPSERT_FILES:
                conn.execute(_UPSERT_FILES[dialect], rows)  # one multi-row statement per batch
            else:  # pragma: no cover - the stores are PostgreSQL or SQLite
                conn.execute(delete(T.request_files).where(f.request_id.in_(part), f.name == name))
                conn.execute(insert(T.request_files), rows)


def _recipients_for(
    fid: Fiduciary, rtype: RequestType, categories: Iterable[str], purpose: str | None
) -> list[str]:
    """The recipients a change must reach (LAW-5): those that received the categories
    concerned (for an opt-out of sale: those that buy or share; for a withdrawn consent:
    those that receive for that purpose)."""
    cats = list(categories)
    out = []
    for key, cr in sorted(fid.policy.recipients.items()):
        src = cr.source
        if src.condition not in _RECEIVING_CONDITIONS or src.form.value == "aggregate":
            continue
        if rtype is RequestType.opt_out_of_sale and not (src.sale or src.share):
            continue
        if (
            rtype is RequestType.withdraw_consent
            and purpose not in (None, "*")
            and purpose not in cr.purposes
        ):
            continue
        if cats and not any(is_within(c, rc) or is_within(rc, c) for c in cats for rc in cr.categories):
            continue
        out.append(key)
    return out


def _views(desk: RequestDesk, ids: Iterable[str]) -> dict[str, RequestView]:
    return {rid: desk.status(rid) for rid in ids}


# --------------------------------------------------------------------------- steps


def step_fetch(ctx: StepContext) -> dict[str, Any]:
    """Every row of the group's requests: one SELECT per collection for them all."""
    r = _res(ctx)
    ids = _ids(ctx)
    plan = _plan_of(ctx, r)
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {rid: {} for rid in ids}
    self_keys: dict[str, dict[str, list[Any]]] = {rid: {} for rid in ids}
    statements = 0
    if plan is not None:
        seeds = _seeds(ctx, ids, plan)
        for conn, part in _split_plan(plan, r.connectors):
            found = conn.find(part, seeds)
            statements += found.statements
            for rid, colls in found.by_request().items():
                rows[rid].update({c: [_jsonable(row) for row in rs] for c, rs in colls.items()})
                self_keys[rid].update(_self_keys(found, rid))
            ctx.check_lease()
    return {"rows": rows, "self_keys": self_keys, "statements": statements}


def _shine_the_light(fid: Fiduciary, view: _About, at: datetime, subject_id: str | None) -> bytes:
    """PLV-13 (Cal. Civ. Code 1798.83): who may receive personal information for their own
    direct marketing (or buy it), with names, addresses and the kinds of products, and
    from the disclosure ledger which of them received the requester's."""
    return build_shine_the_light(
        fid.policy,
        reference=view.id,
        received_at=view.received_at,
        generated_at=at,
        disclosures=fid.disclosures.shine_the_light(subject_id, received=view.received_at)
        if subject_id
        else None,
    )


@dataclass(frozen=True)
class _About:
    """What a step needs to know of a request beyond its id (no personal data)."""

    id: str
    jurisdiction: str
    received_at: datetime


def _about(ctx: StepContext, r: _Res, ids: Sequence[str]) -> dict[str, _About]:
    """From the job's inputs (run() put it there); a job planned by an older version has
    none, and the requests are read."""
    given: Mapping[str, Mapping[str, str]] | None = ctx.inputs.get("requests")
    if given is None:
        return {rid: _About(rid, v.jurisdiction, v.received_at) for rid, v in _views(r.desk, ids).items()}
    return {
        rid: _About(rid, given[rid]["jurisdiction"], datetime.fromisoformat(given[rid]["received_at"]))
        for rid in ids
    }


def _vault_values(ctx: StepContext, r: _Res, rid: str, sid: str) -> Mapping[str, object] | None:
    """The subject's values as run() read them (None: erased or unknown by then)."""
    held: Mapping[str, Mapping[str, list[Any]] | None] | None = ctx.inputs.get("vault")
    if held is None:  # a job planned by an older version: read now
        try:
            return r.fid.vault.read(sid, purpose="request_fulfilment", actor="request_runner")
        except (SubjectErased, UnknownSubject):
            return None
    stored = held.get(rid)
    if stored is None:
        return None
    return {
        cat: StoredValue(v[0], v[1], datetime.fromisoformat(v[2]), v[3], v[4]) for cat, v in stored.items()
    }


_FILES_PER_WRITE = 500  # packages kept in memory before they are stored


def step_package(ctx: StepContext) -> dict[str, Any]:
    """The access package of each request, stored encrypted under the request's key (one
    key read and one upsert per 500 packages)."""
    r = _res(ctx)
    ids = _ids(ctx)
    rtype = RequestType(ctx.params["type"])
    about = _about(ctx, r, ids)
    subjects: Mapping[str, str | None] = ctx.inputs.get("subjects", {})
    file_keys: Mapping[str, str] | None = ctx.inputs.get("file_keys")
    at = datetime.now(UTC)
    sizes: dict[str, int] = {}
    pending: dict[str, bytes] = {}

    def keep(rid: str, content: bytes) -> None:
        pending[rid] = content
        sizes[rid] = len(content)
        if len(pending) >= _FILES_PER_WRITE:
            _store_files(r, PACKAGE_FILE, pending, file_keys)
            pending.clear()

    if rtype is RequestType.shine_the_light:
        for rid in ids:
            keep(rid, _shine_the_light(r.fid, about[rid], at, subjects.get(rid)))
        if pending:
            _store_files(r, PACKAGE_FILE, pending, file_keys)
        return {"files": sizes}
    fetched = next((x for x in ctx.earlier("req.fetch") if x is not None), None)
    if fetched is None:
        raise PermanentStepError("no fetch step before the package step")
    seeds: Mapping[str, Mapping[str, list[Any]]] = ctx.inputs.get("seeds", {})
    for rid in ids:
        sid = subjects.get(rid)
        vault_values: Mapping[str, object] | None = None
        consents: list[dict[str, Any]] | None = None
        disclosures: list[dict[str, Any]] | None = None
        if sid:
            vault_values = _vault_values(ctx, r, rid, sid)
            if vault_values is not None:
                consents = r.fid.consent.proofs(sid)
                disclosures = r.fid.disclosures.for_subject(sid)
        request = PackageRequest(
            reference=rid,
            jurisdiction=about[rid].jurisdiction,
            received_at=about[rid].received_at,
            request_type=rtype,
            self_keys=fetched["self_keys"].get(rid, {}),
            identities={k: [str(v) for v in vs] for k, vs in seeds.get(rid, {}).items()},
            subject_id=sid,
        )
        keep(
            rid,
            build_access_package(
                r.fid.policy,
                request=request,
                data=fetched["rows"].get(rid, {}),
                vault=vault_values,
                consents=consents,
                disclosures=disclosures,
                generated_at=at,
            ),
        )
        ctx.check_lease()
    if pending:
        _store_files(r, PACKAGE_FILE, pending, file_keys)
    return {"files": sizes}


def _erasure_summary(result: ErasureResult, rid: str) -> dict[str, Any]:
    """What the finish event records (no personal data): the exemptions applied, and
    whether anything was kept (LAW-3)."""
    req = result.requests.get(rid)
    exemptions: set[str] = set()
    kept = 0
    if req is not None:
        for ce in req.collections.values():
            if ce.rows == 0:
                continue
            for rule in ce.fields.values():
                ex = rule.get("exemption")
                if ex:
                    exemptions.add(str(ex))
                    kept += 1
            if ce.suspended:
                ex = ce.suspended.get("exemption")
                if ex:
                    exemptions.add(str(ex))
    return {"partial": bool(exemptions), "exemptions": sorted(exemptions), "kept_fields": kept}


_ERASE_CHUNK = 1000  # requests per SQLConnector.mask call


def step_erase(ctx: StepContext) -> dict[str, Any]:
    """Mask or delete each request's own rows (one UPDATE / DELETE per collection for
    each 1,000 requests of the group), exemptions applied and recorded, then the
    verification pass."""
    r = _res(ctx)
    ids = _ids(ctx)
    plan = _plan_of(ctx, r)
    holds: Mapping[str, list[str]] = ctx.params.get("holds", {})
    # The result keeps what the later steps need (per request, the collections where it
    # had rows: notify's categories; the summary: finish's detail), not the per-field
    # report of every request, which would be most of the job's bookkeeping for a batch.
    touched: dict[str, list[str]] = {}
    statements: dict[str, int] = {}
    out: dict[str, Any] = {
        "touched": touched,
        "statements": statements,
        "summary": {rid: _erasure_summary(ErasureResult({}, {}), rid) for rid in ids},
    }
    if plan is None:
        return out
    seeds = _seeds(ctx, ids, plan)
    key = erasure_key(r.fid.keyring)
    summary: dict[str, dict[str, Any]] = {}
    # Per connector, per chunk of requests: each chunk is one transaction of set-based
    # statements in the company's database; IN lists of a few thousand values keep the
    # statements quick to plan, and a lost lease stops the step between chunks.
    chunks = [
        {rid: seeds[rid] for rid in ids[i : i + _ERASE_CHUNK]} for i in range(0, len(ids), _ERASE_CHUNK)
    ]
    for conn, part, chunk in ((c, p, ch) for c, p in _split_plan(plan, r.connectors) for ch in chunks):
        held = {k: v for k, v in holds.items() if k in chunk}
        result = conn.mask(part, chunk, key=key, holds=held)
        if not result.ok:
            bad = sorted(
                f"{v['collection']}.{v['field']}"
                for req in result.requests.values()
                if req.verification is not None
                for v in req.verification.violations
            )
            raise PermanentStepError(
                f"erasure verification failed: identifying values left in {', '.join(bad)}"
            )
        for rid, req in result.requests.items():
            had = [c for c, ce in req.collections.items() if ce.rows]
            if had:
                touched.setdefault(rid, []).extend(had)
        for k, n in result.statements.items():
            statements[k] = statements.get(k, 0) + n
        for rid in chunk:
            s = _erasure_summary(result, rid)
            prev = summary.get(rid)
            if prev is not None:
                s = {
                    "partial": prev["partial"] or s["partial"],
                    "exemptions": sorted(set(prev["exemptions"]) | set(s["exemptions"])),
                    "kept_fields": prev["kept_fields"] + s["kept_fields"],
                }
            summary[rid] = s
        ctx.check_lease()
    out["summary"] = summary
    return out


def _categories_touched(
    ctx: StepContext, rid: str, rtype: RequestType, plan: Plan | None
) -> list[str] | None:
    """The categories a change concerns; None: every category (a restriction, an
    objection ... concerns all the person's data)."""
    if rtype is RequestType.erase:
        cats: set[str] = set()
        for res in ctx.earlier("req.erase"):
            colls = list((res or {}).get("touched", {}).get(rid, ()))
            for result in (res or {}).get("results", []):  # a job planned by an older version
                req = result["requests"].get(rid)
                if req is not None:
                    colls += [coll for coll, ce in req["collections"].items() if ce["rows"]]
            if plan is not None:
                for coll in colls:
                    for f in plan.node(coll).fields:
                        cats.update(f.categories)
        return sorted(cats)
    if rtype is RequestType.rectify:
        values = ctx.inputs.get("rectify", {}).get(rid, {})
        return sorted(values)
    return None


def step_notify(ctx: StepContext) -> dict[str, Any]:
    """Tell every recipient of the data concerned (LAW-5): through its webhook, with an
    idempotency key, else as a manual task recorded here for the privacy team."""
    r = _res(ctx)
    ids = _ids(ctx)
    rtype = RequestType(ctx.params["type"])
    seeds: Mapping[str, Mapping[str, list[Any]]] = ctx.inputs.get("seeds", {})
    categories: Mapping[str, list[str]] = ctx.params.get("categories", {})
    purposes: Mapping[str, str] = ctx.params.get("purposes", {})
    plan = _plan_of(ctx, r) if rtype is RequestType.erase else None
    notified: dict[str, list[str]] = {}
    manual: list[dict[str, Any]] = []
    for rid in ids:
        cats = categories.get(rid)
        if cats is None:
            cats = _categories_touched(ctx, rid, rtype, plan) or []
        for rkey in _recipients_for(r.fid, rtype, cats, purposes.get(rid)):
            cr = r.fid.policy.recipients[rkey]
            hook = r.webhooks.get(rkey) or (r.webhooks.get(cr.source.webhook) if cr.source.webhook else None)
            if hook is not None:
                try:
                    hook.notify(
                        request_id=rid,
                        request_type=rtype.value,
                        identities={k: list(v) for k, v in seeds.get(rid, {}).items()},
                        idempotency_key=f"{ctx.job_id}:{ctx.seq}:{rkey}:{rid}",
                        detail={"categories": list(cats)},
                    )
                except WebhookError as exc:
                    raise RuntimeError(f"recipient {rkey}: {exc}") from None
                notified.setdefault(rid, []).append(rkey)
            else:
                task = ManualConnector(rkey).task(
                    rid,
                    rtype.value,
                    instructions=f"Tell {cr.source.name} of this {rtype.value} request (LAW-5).",
                )
                manual.append(task.to_dict())
        ctx.check_lease()
    return {"notified": notified, "manual": manual}


def step_shred(ctx: StepContext) -> dict[str, Any]:
    """Crypto-shred the matched vault subjects (idempotent: erase_many is). Jobs planned
    since the finish step shreds (``"shred"`` in its params) have no such step; it stays
    for the jobs stored before."""
    r = _res(ctx)
    subjects: Mapping[str, str | None] = ctx.inputs.get("subjects", {})
    sids = sorted({s for rid in _ids(ctx) if (s := subjects.get(rid))})
    if sids:
        r.fid.vault.erase_many(sids, actor="request_runner")
        for sid in sids:
            r.fid.forget_state(sid)
    return {"shredded": len(sids)}


def step_choice(ctx: StepContext) -> dict[str, Any]:
    """restrict / object / opt_out_of_sale / withdraw_consent as ledger events; skipped
    when the subject's state already says so (a re-run adds no second event)."""
    r = _res(ctx)
    rtype = RequestType(ctx.params["type"])
    subjects: Mapping[str, str | None] = ctx.inputs.get("subjects", {})
    purposes: Mapping[str, str] = ctx.params.get("purposes", {})
    recorded: dict[str, str] = {}
    for rid in _ids(ctx):
        sid = subjects.get(rid)
        if not sid:
            recorded[rid] = "no_subject"
            continue
        r.fid.forget_state(sid)
        state = r.fid.state(sid)
        purpose = purposes.get(rid, "*")
        kw: dict[str, Any] = {"channel": "privacy_center", "actor": "request_runner"}
        if rtype is RequestType.restrict:
            if not state.restricted:
                r.fid.restrict(sid, **kw)
        elif rtype is RequestType.object:
            if purpose not in state.objections and "*" not in state.objections:
                r.fid.object(sid, purpose, **kw)
        elif rtype is RequestType.opt_out_of_sale:
            if not state.sale_opt_out:
                r.fid.opt_out_of_sale(sid, **kw)
        elif rtype is RequestType.withdraw_consent:
            given = (
                [p for p, st in state.consents.items() if st == "given"]
                if purpose == "*"
                else ([purpose] if state.consents.get(purpose) == "given" else [])
            )
            for p in sorted(given):
                r.fid.withdraw_consent(sid, p, **kw)
        recorded[rid] = "recorded"
    return {"recorded": recorded}


def step_rectify(ctx: StepContext) -> dict[str, Any]:
    """Write the corrected values into the vault (replace: idempotent)."""
    r = _res(ctx)
    subjects: Mapping[str, str | None] = ctx.inputs.get("subjects", {})
    values: Mapping[str, Mapping[str, Any]] = ctx.inputs.get("rectify", {})
    done: dict[str, list[str]] = {}
    for rid in _ids(ctx):
        sid = subjects.get(rid)
        corrected = values.get(rid) or {}
        if sid and corrected:
            r.fid.vault.write(
                sid, corrected, source="subject", policy_version=r.fid.policy.version, actor="request_runner"
            )
            r.fid.forget_state(sid)
            done[rid] = sorted(corrected)
    return {"rectified": done}


def step_close(ctx: StepContext) -> dict[str, Any]:
    r = _res(ctx)
    subjects: Mapping[str, str | None] = ctx.inputs.get("subjects", {})
    closed = 0
    for rid in _ids(ctx):
        sid = subjects.get(rid)
        if sid and r.fid.vault.close(sid, actor="request_runner"):
            r.fid.forget_state(sid)
            closed += 1
    return {"closed": closed}


def step_finish(ctx: StepContext) -> dict[str, Any]:
    """Close the group's requests (done, or partial where exemptions kept data) in one
    transaction; those already closed by an earlier attempt are left alone. The
    requesters are mailed (their addresses from the job's inputs)."""
    r = _res(ctx)
    ids = _ids(ctx)
    summary: dict[str, Any] = {}
    for res in ctx.earlier("req.erase"):
        summary.update((res or {}).get("summary", {}))
    manual = sum(len((res or {}).get("manual", [])) for res in ctx.earlier("req.notify"))
    common: dict[str, Any] = {"job": ctx.job_id}
    if manual:
        common["manual_tasks"] = manual
    details: dict[str, dict[str, Any]] = {}
    for rid in ids:
        s = summary.get(rid, {})
        if s.get("exemptions"):
            details[rid] = {"exemptions": s["exemptions"], "kept_fields": s["kept_fields"]}
    contacts: Mapping[str, str] = ctx.inputs.get("contacts", {})
    subjects: Mapping[str, str | None] = ctx.inputs.get("subjects", {})
    shredded: list[str] = []

    def shred(conn: Connection, closing: list[str]) -> None:
        sids = sorted({s for rid in closing if (s := subjects.get(rid))})
        if sids:
            r.fid.vault.erase_many(sids, actor="request_runner", conn=conn)
            shredded.extend(sids)

    out = r.desk.finish_many(
        {rid: bool(summary.get(rid, {}).get("partial")) for rid in ids},
        detail=common,
        details=details,
        actor="request_runner",
        job_id=ctx.job_id,
        contacts=contacts,
        with_close=shred if ctx.params.get("shred") else None,
    )
    for sid in shredded:
        r.fid.forget_state(sid)
    return {"finished": out, "shredded": len(shredded)}


STEPS: Final = {
    "req.fetch": step_fetch,
    "req.package": step_package,
    "req.erase": step_erase,
    "req.notify": step_notify,
    "req.shred": step_shred,
    "req.choice": step_choice,
    "req.rectify": step_rectify,
    "req.close": step_close,
    "req.finish": step_finish,
}
for _kind, _handler in STEPS.items():
    register_step(_kind, _handler, replace=True)


def on_job_end(end: JobEnd) -> None:
    """A failed job must not leave its requests running for ever: each request still
    running under it gets a ``failed`` event (job id and failing step kind, no personal
    data) and goes back to verified (or approved), to be run again or denied. Idempotent
    (the job-end contract: at least once)."""
    if end.status != FAILED:
        return
    desk = end.resources.get(R_DESK)
    data = end.resources.get(DATA)
    if not isinstance(desk, RequestDesk) or not isinstance(data, Engine):
        # Raising keeps the job unfinished: recover() hands it to a worker that has a
        # policy, which ends it properly, rather than leaving the requests running.
        raise PermanentStepError(
            f"job {end.job_id} failed; this worker has no policy to put its requests back "
            "(set FIDUCIARY_POLICY)"
        )
    failed = next((s for s in job_status(data, end.job_id).steps if s.status == FAILED), None)
    moved = desk.job_failed(end.job_id, step=failed.kind if failed else None, actor="request_runner")
    if moved:
        log.warning("job %s failed: %d request(s) back to be run again or denied", end.job_id, len(moved))


register_job_end(JOB_KIND, on_job_end, on=(FAILED,))


# --------------------------------------------------------------------------- the runner


class RequestRunner:
    """Turns verified requests into jobs and serves their results (see the module doc)."""

    def __init__(
        self,
        fid: Fiduciary,
        desk: RequestDesk,
        *,
        connections: Mapping[str, SQLConnector | Engine | str],
        webhooks: Mapping[str, WebhookConnector] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.fid = fid
        self.desk = desk
        self.connectors = connector_map(connections)
        # The connectors made here from engines or URLs are ours to close; given ones are not.
        self._made = {ds: c for ds, c in self.connectors.items() if c is not connections[ds]}
        self.webhooks = dict(webhooks or {})
        self.resources: dict[str, object] = {
            DATA: fid.data,
            KEYS: fid.keys,
            KEYRING: fid.keyring,
            R_FIDUCIARY: fid,
            R_DESK: desk,
            R_CONNECTIONS: self.connectors,
            R_WEBHOOKS: self.webhooks,
        }
        self._owns_executor = executor is None
        self.executor: Executor = executor if executor is not None else InlineExecutor(self.resources)

    def close(self) -> None:
        if self._owns_executor:
            self.executor.close()
        _close_connections(self._made)

    def __enter__(self) -> RequestRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- planning
    def _seed_for(
        self, contact: Mapping[str, str], details: Mapping[str, Any], held: Mapping[str, str]
    ) -> dict[str, list[str]]:
        """The identities to search by: the requester's contact (or a child report's
        account) and those the vault holds on the matched subject (``held``)."""
        kinds = self.fid.policy.identity_kinds
        seeds: dict[str, set[str]] = {}
        given: Mapping[str, Any] = contact
        if details.get("child_report") is True and isinstance(details.get("account"), Mapping):
            # A child report searches the child's account, never the reporter's own data.
            given = details["account"]
        for kind, value in given.items():
            k = "phone_number" if kind == "phone" else str(kind)
            try:
                v = normalize(k, str(value))
            except (IdentityError, ValueError):
                v = str(value).strip()
            if k in kinds and v:
                seeds.setdefault(k, set()).add(v)
        for k, v in held.items():
            if k in kinds and v:
                seeds.setdefault(k, set()).add(v)
        return {k: sorted(vs) for k, vs in sorted(seeds.items())}

    def run(
        self,
        request_ids: Sequence[str],
        *,
        actor: str,
        holds: Mapping[str, Sequence[str]] | None = None,
    ) -> str:
        """Start one job for the batch and return its id. Every request must be verified
        (approved, where approval is required); ``holds`` maps a request id to the policy
        exemptions active for it (a legal hold ...). Refused batches (RunError,
        InvalidTransition) change nothing.

        One transaction on the data store, whatever the batch size: the requests' rows
        read and locked (one SELECT per 1,000), the requesters' details (one key read) and
        the vault's identities of the matched subjects, with the values of those asking
        for access (one SELECT, one key read), then the job and its steps stored and the
        requests started, with ONE audit append for the reads and the start."""
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            raise RunError("no requests given")
        held_for: dict[str, list[str]] = {k: list(v) for k, v in (holds or {}).items()}
        stray = sorted(set(held_for) - set(ids))
        if stray:
            raise RunError(f"holds name request(s) not in the batch: {', '.join(stray)}")
        for rid, keys in held_for.items():
            unknown = [k for k in keys if k not in self.fid.policy.exemptions]
            if unknown:
                raise RunError(
                    f"holds for {rid}: exemption(s) {', '.join(unknown)} not in the policy "
                    f"(declared: {', '.join(sorted(self.fid.policy.exemptions)) or 'none'})"
                )
        reads: list[dict[str, Any]] = []  # audit entries of the reads, appended with the start
        job_id: str | None = None
        try:
            with self.fid.data.begin() as conn:
                rows = self.desk.lock_for_run(conn, ids)
                steps, inputs = self._prepare(conn, ids, rows, held_for, actor, reads)

                def start(c: Connection, jid: str) -> None:
                    self.desk.start_many_in(c, ids, job_id=jid, actor=actor, rows=rows, audit=reads)

                # The requests start in the transaction that stores the job: a crash leaves
                # both or neither. One committed but not yet submitted is a pending job that
                # ``recover`` hands to an executor again (at once with include_pending, as
                # the inline executor does on start-up; else after stale_after).
                job_id = create_job(
                    self.fid.data,
                    self.fid.keys,
                    self.fid.keyring,
                    JOB_KIND,
                    steps,
                    inputs=inputs,
                    within=start,
                    conn=conn,
                    local=isinstance(self.executor, InlineExecutor),
                    claim=(
                        (self.executor.worker_id, self.executor.lease_seconds)
                        if isinstance(self.executor, InlineExecutor)
                        else None
                    ),
                )
        except BaseException:
            # Nothing was committed: no job (its key goes), no request started. What was
            # read is still audited, on its own.
            if job_id is not None:
                destroy_key(self.fid.keys, job_id)
            if reads:
                try:
                    self.fid.audit.append_many(None, reads)
                except Exception:
                    log.exception("the audit entries of a refused run could not be written")
            raise
        self.executor.submit(job_id)
        return job_id

    def _prepare(
        self,
        conn: Connection,
        ids: list[str],
        rows: Mapping[str, Any],
        holds: Mapping[str, list[str]],
        actor: str,
        reads: list[dict[str, Any]],
    ) -> tuple[list[StepSpec], dict[str, Any]]:
        """Check the batch and plan its job: the steps and the job's (encrypted) inputs."""
        for rid in ids:
            r = rows[rid]
            if r.status not in (VERIFIED, APPROVED):
                hint = " (verify it first)" if r.status == "received" else ""
                raise InvalidTransition(rid, f"cannot run a request that is {r.status}{hint}")
            if RequestType(r.type) not in _SUPPORTED:
                raise RunError(f"request {rid}: type {r.type!r} is not run by the request runner")
        request_keys: dict[str, bytes] = {}
        requesters = self.desk.requesters(rows, actor=actor, record=reads, keys_out=request_keys)
        sids = [rows[rid].subject_id for rid in ids if rows[rid].subject_id]
        want_values = [rows[rid].subject_id for rid in ids if RequestType(rows[rid].type) in _FETCHED]
        held = self.fid.vault.read_many(
            sids,
            attributes_of=want_values,
            purpose="request_fulfilment",
            actor="request_runner",
            record=reads,
            conn=conn,
        )

        seeds: dict[str, dict[str, list[str]]] = {}
        subjects: dict[str, str | None] = {}
        rectify: dict[str, dict[str, Any]] = {}
        purposes: dict[str, str] = {}
        contacts: dict[str, str] = {}
        about: dict[str, dict[str, str]] = {}
        vault: dict[str, dict[str, list[Any]] | None] = {}
        for rid in ids:
            row, req = rows[rid], requesters[rid]
            rtype = RequestType(row.type)
            sid: str | None = row.subject_id
            got = held.get(sid) if sid else None
            seeds[rid] = self._seed_for(req.contact, req.details, got.identities if got else {})
            subjects[rid] = sid
            if "email" in req.contact:
                contacts[rid] = req.contact["email"]
            received = _aware(row.received_at).isoformat()
            about[rid] = {"jurisdiction": row.jurisdiction, "received_at": received}
            if rtype in _FETCHED and sid:
                vault[rid] = (
                    None
                    if got is None
                    else {
                        cat: [
                            _jsonable(v.value),
                            v.source,
                            v.collected_at.isoformat(),
                            v.policy_version,
                            v.activity,
                        ]
                        for cat, v in got.attributes.items()
                    }
                )
            if rtype in (RequestType.object, RequestType.withdraw_consent):
                purpose = str(req.details.get("purpose") or "*")
                if purpose != "*" and purpose not in self.fid.policy.purposes:
                    raise RunError(
                        f"request {rid}: details.purpose {purpose!r} is not a purpose of the policy"
                    )
                purposes[rid] = purpose
            if rtype is RequestType.rectify:
                values = req.details.get("values") or req.details.get("corrections")
                if not isinstance(values, Mapping) or not values:
                    raise RunError(f"request {rid}: details.values must map categories to corrected values")
                for cat in values:
                    if cat not in self.fid.policy.categories:  # exactly, as the vault stores them
                        raise RunError(
                            f"request {rid}: details.values: {cat!r} is not a category of the policy"
                        )
                if not sid:
                    raise RunError(f"request {rid}: a rectification needs a matched subject (none found)")
                rectify[rid] = dict(values)
            if rtype is RequestType.close_account and not sid:
                raise RunError(f"request {rid}: no account matched the requester; nothing to close")

        by_type: dict[RequestType, list[str]] = {}
        for rid in ids:
            by_type.setdefault(RequestType(rows[rid].type), []).append(rid)
        needs_plan = any(t in _FETCHED or t is RequestType.erase for t in by_type)
        kinds = sorted({k for rid in ids for k in seeds[rid]})
        if needs_plan and kinds:
            plan = _plan_for(self.fid.policy, kinds)  # reachability: a clear error, before anything
            _split_plan(plan, self.connectors)  # every datastore has a connection
        digest = self.fid.policy.digest

        steps: list[StepSpec] = []
        for rtype in sorted(by_type, key=lambda t: t.value):
            group = by_type[rtype]
            base: dict[str, Any] = {"type": rtype.value, "requests": group, "policy": digest}
            if rtype in _FETCHED:
                steps += [
                    StepSpec("req.fetch", rtype.value, base),
                    StepSpec("req.package", rtype.value, base),
                ]
            elif rtype is RequestType.shine_the_light:
                steps.append(StepSpec("req.package", rtype.value, base))
            elif rtype is RequestType.erase:
                erase = {**base, "holds": {rid: holds[rid] for rid in group if rid in holds}}
                steps += [
                    StepSpec("req.erase", rtype.value, erase),
                    StepSpec("req.notify", rtype.value, base),
                ]
            elif rtype in _CHOICES:
                choice = {**base, "purposes": {rid: purposes[rid] for rid in group if rid in purposes}}
                steps += [
                    StepSpec("req.choice", rtype.value, choice),
                    StepSpec("req.notify", rtype.value, choice),
                ]
            elif rtype is RequestType.rectify:
                steps += [
                    StepSpec("req.rectify", rtype.value, base),
                    StepSpec("req.notify", rtype.value, base),
                ]
            elif rtype is RequestType.close_account:
                steps.append(StepSpec("req.close", rtype.value, base))
            # An erasure's finish crypto-shreds the vault subjects in the transaction that
            # closes the requests: one step and one extension of the audit chain less, and
            # a request is never closed without its shred.
            finish = {**base, "shred": True} if rtype is RequestType.erase else base
            steps.append(StepSpec("req.finish", rtype.value, finish))

        # Personal data travels here only, encrypted under the job's key (see the doc).
        inputs = {
            "kinds": kinds,
            "seeds": seeds,
            "subjects": subjects,
            "rectify": rectify,
            "contacts": contacts,
            "requests": about,
            "vault": vault,
            # The keys of the requests that get a file (their package): the package step
            # reads none from the key store. Sealed under the job key, gone at the job's end.
            "file_keys": {
                rid: base64.b64encode(request_keys[rid]).decode()
                for rid in ids
                if rid in request_keys
                and RequestType(rows[rid].type) in (_FETCHED | {RequestType.shine_the_light})
            },
        }
        return steps, inputs

    def ready(self) -> list[str]:
        """Requests that may run now: verified, or approved, by due date."""
        return [
            v.id
            for v in self.desk.queue(status=(VERIFIED, APPROVED))
            if v.status == APPROVED or not v.child_report
        ]

    def wait(self, job_id: str, *, timeout: float | None = None, on_progress: Any = None) -> JobStatus:
        return wait_for(self.fid.data, job_id, timeout=timeout, on_progress=on_progress)

    # -- results
    def export(self, request_id: str) -> bytes:
        """The request's package (ZIP bytes), decrypted. Only for requests done."""
        return export_package(self.fid, self.desk, request_id)


def export_package(fid: Fiduciary, desk: RequestDesk, request_id: str) -> bytes:
    """The request's package (ZIP bytes), decrypted. Only for requests done."""
    view = desk.status(request_id)
    if view.status not in (DONE, PARTIAL):
        raise InvalidTransition(request_id, f"nothing to export: it is {view.status}, not done")
    f = T.request_files.c
    with fid.data.connect() as conn:
        blob = conn.execute(
            select(f.content).where(f.request_id == request_id, f.name == PACKAGE_FILE)
        ).scalar()
    if blob is None:
        raise RequestInputError(f"request {request_id} ({view.type}) has no package to export")
    key = desk._load_key(request_id)
    if key is None:
        raise RequestInputError(
            f"request {request_id}: its package was destroyed with the requester's details"
        )
    return unseal(AESGCM(key), bytes(blob), _file_aad(request_id, PACKAGE_FILE), f"package of {request_id}")


# --------------------------------------------------------------------------- worker resources


def _fiduciary_factory(settings: Settings, built: Mapping[str, object]) -> object:
    if settings.policy is None:
        return None  # a worker without a policy runs other jobs; request steps say why not
    from fiduciary.core import Fiduciary
    from fiduciary.policy import load_policy
    from fiduciary.vault.keyring import Keyring

    data, keys, ring = built[DATA], built[KEYS], built[KEYRING]
    assert isinstance(data, Engine) and isinstance(keys, Engine) and isinstance(ring, Keyring)
    return Fiduciary(
        load_policy(settings.policy), data, keys, ring, checkpoint_every=settings.checkpoint_every
    )


def _desk_factory(settings: Settings, built: Mapping[str, object]) -> object:
    from fiduciary.core import Fiduciary
    from fiduciary.mail import Mailer

    fid = built.get(R_FIDUCIARY)
    if not isinstance(fid, Fiduciary):
        return None
    return RequestDesk.from_fiduciary(fid, Mailer.from_settings(settings))


def _connections_factory(settings: Settings, built: Mapping[str, object]) -> object:
    return connector_map(settings.connections)


def _close_connections(value: object) -> None:
    if isinstance(value, Mapping):
        for c in {id(c): c for c in value.values()}.values():
            c.close()


def _webhooks_factory(settings: Settings, built: Mapping[str, object]) -> object:
    return {name: WebhookConnector(w.url, w.secret) for name, w in settings.webhooks.items()}


job_resources.register(R_FIDUCIARY, _fiduciary_factory, replace=True)
job_resources.register(R_DESK, _desk_factory, replace=True)
job_resources.register(R_CONNECTIONS, _connections_factory, close=_close_connections, replace=True)
job_resources.register(R_WEBHOOKS, _webhooks_factory, replace=True)
