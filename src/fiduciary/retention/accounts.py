"""Accounts: closure grace periods, inactivity (PLO-9), legal holds (PLO-10).

The vault's ``subjects`` table is the record of accounts: ``closed_at`` (a close_account
request), ``last_activity_at`` (every vault write; ``record_activity`` for a sign-in) and
``status``. A retention rule about accounts selects subjects by those times and carries
the rule out with the rights requests' own erasure machinery (``SQLConnector.mask``): for
a batch of accounts, one SELECT and at most one UPDATE and one DELETE per collection,
legal minimums and the policy's masking honoured (PLV-7), the result verified.

Scope. A stage carries out every closure rule due by then (its own and the earlier
stages', again: idempotent). Each rule reaches what it names: its collections (every
field, as an erasure would), and elsewhere only the fields of its categories. A row the
policy deletes as a whole is deleted once all of its personal fields are due, and left
whole until then. Two exceptions keep the later rules workable and the promises intact:

- fields that *find* a person (``fides_meta.identity``: the email of the accounts table)
  are erased with the last closure stage only; before that they are how the later stages
  find the person's rows (the plan warns when a rule covering one has a shorter period);
- a legal minimum of an ``account_closed`` rule stops holding a field once its period
  after closure has run out.

Idempotent: a stage run twice finds rows already masked (the masks are deterministic)
or gone, and writes nothing; the vault's erasure of an erased subject changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fiduciary.connectors.sql import ErasureResult, SQLConnector
from fiduciary.jobs import PermanentStepError
from fiduciary.mail import Letter
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import RetentionAction, Trigger
from fiduciary.requests.plan import Plan, PlanError, PlanField, PlanNode, build_plan
from fiduciary.retention.plan import db_time, rule_scope
from fiduciary.store import tables as T
from fiduciary.vault.crypto import KeyWrapper, SubjectCipher

__all__ = [
    "HoldError",
    "erase_accounts",
    "identities_of",
    "inactivity_letter",
    "place_hold",
    "record_activity",
    "release_hold",
    "scoped_plan",
    "select_subjects",
]

_CHUNK: Final = 5000
ACTOR: Final = "retention"


class HoldError(ValueError):
    """A hold that cannot be placed (unknown subject or exemption); nothing changed."""


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- activity, holds


def record_activity(data: Engine, subject_ids: Iterable[str], at: datetime | None = None) -> int:
    """The people came back (signed in, used the service): their inactivity clock starts
    again, and a pending inactivity deletion is off (PLO-9). One UPDATE per 5,000 subjects;
    never moves a clock backwards. Returns how many accounts changed."""
    ids = list(dict.fromkeys(subject_ids))
    moment = db_time(data, at or datetime.now(UTC))
    s = T.subjects.c
    n = 0
    with data.begin() as conn:
        for part in _chunks(ids):
            n += conn.execute(
                update(T.subjects)
                .where(
                    s.id.in_(part),
                    s.status == "active",
                    (s.last_activity_at.is_(None)) | (s.last_activity_at < moment),
                )
                .values(last_activity_at=moment)
            ).rowcount
    return n


def place_hold(fid: Any, subject_id: str, exemption: str, *, actor: str) -> bool:
    """Suspend retention for a subject under a policy exemption (a legal hold, an abuse
    report: PLO-10). False when that hold was already there."""
    cp: CompiledPolicy = fid.policy
    if exemption not in cp.exemptions:
        known = ", ".join(sorted(cp.exemptions)) or "none"
        raise HoldError(f"exemption {exemption!r} is not in the policy (declared: {known})")
    s = T.subjects.c
    with fid.data.begin() as conn:
        if conn.execute(select(s.id).where(s.id == subject_id)).first() is None:
            raise HoldError(f"no subject {subject_id!r}")
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(T.retention_holds).values(
                        subject_id=subject_id,
                        exemption=exemption,
                        placed_at=datetime.now(UTC),
                        placed_by=actor,
                    )
                )
        except IntegrityError:
            return False
        fid.audit.append(
            conn, actor=actor, action="retention.hold", subject_id=subject_id, detail={"exemption": exemption}
        )
    return True


def release_hold(fid: Any, subject_id: str, exemption: str, *, actor: str) -> bool:
    """Lift a hold; retention applies again from the next sweep. False if there was none."""
    h = T.retention_holds.c
    with fid.data.begin() as conn:
        n = conn.execute(
            delete(T.retention_holds).where(h.subject_id == subject_id, h.exemption == exemption)
        ).rowcount
        if n:
            # The closure stages start again from the beginning: the accounts they passed
            # over while this one was held get their turn at the next sweep.
            m = T.retention_marks.c
            conn.execute(delete(T.retention_marks).where(m.rule.like("closure@%")))
            fid.audit.append(
                conn,
                actor=actor,
                action="retention.release",
                subject_id=subject_id,
                detail={"exemption": exemption},
            )
    return bool(n)


# --------------------------------------------------------------------------- identities


def identities_of(fid: Any, subject_ids: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """subject -> identity kind -> values, decrypted: one SELECT on each store per 5,000
    subjects, and one audit entry per subject (action vault.read_identities). Subjects
    whose key is gone (erased) are absent."""
    out: dict[str, dict[str, list[str]]] = {}
    if not subject_ids:
        return out
    i, k = T.identities.c, T.subject_keys.c
    wrapper = KeyWrapper(fid.keyring)
    for part in _chunks(list(subject_ids)):
        with fid.keys.connect() as kconn:
            keys = {
                str(r.subject_id): (str(r.kek_id), bytes(r.wrapped))
                for r in kconn.execute(
                    select(k.subject_id, k.kek_id, k.wrapped).where(k.subject_id.in_(part))
                )
            }
        ciphers = {sid: SubjectCipher(sid, wrapper.unwrap(sid, kek, w)) for sid, (kek, w) in keys.items()}
        with fid.data.begin() as conn:
            rows = conn.execute(select(i.subject_id, i.kind, i.value).where(i.subject_id.in_(part))).all()
            for r in rows:
                c = ciphers.get(str(r.subject_id))
                if c is not None:
                    out.setdefault(c.subject_id, {}).setdefault(str(r.kind), []).append(
                        c.open_identity(str(r.kind), bytes(r.value))
                    )
            read = [sid for sid in part if sid in out]
            if read:
                fid.audit.append_many(
                    conn,
                    [
                        {
                            "actor": ACTOR,
                            "action": "vault.read_identities",
                            "purpose": "retention",
                            "subject_id": sid,
                            "detail": {"identities": sorted(out[sid])},
                        }
                        for sid in read
                    ],
                )
    return out


# --------------------------------------------------------------------------- scope


def scoped_plan(
    cp: CompiledPolicy, base: Plan, rules: Sequence[str], *, final: bool, stage_days: float
) -> Plan:
    """``base`` (the plan that finds a person's rows) cut to what ``rules`` reach: every
    other field is kept, identity fields wait for the ``final`` stage, and legal minimums
    of closure rules at most ``stage_days`` long no longer hold (see the module doc)."""
    named_delete: set[str] = set()
    named_anon: set[str] = set()
    in_scope: dict[str, set[str]] = {}
    for key in rules:
        rule = cp.retention[key]
        for coll, (named, scoped) in rule_scope(cp, rule).items():
            if named:
                (named_anon if rule.action == RetentionAction.anonymize else named_delete).add(coll)
            in_scope.setdefault(coll, set()).update(scoped)

    # Rows that refer to rows deleted here, in a collection whose rows the policy deletes
    # as a whole, go with them (as a file's transfer goes with the file, PUT-13): a kept
    # row could not point at a row that is gone.
    deleting = {n.collection for n in base.nodes if n.collection in named_delete and n.delete_rows}
    grew = True
    while grew:
        grew = False
        for ref in cp.references:
            child = cp.collections.get(ref.collection)
            if (
                ref.target in deleting
                and child is not None
                and child.delete_rows
                and child.name not in deleting
            ):
                deleting.add(child.name)
                named_delete.add(child.name)
                grew = True

    def expired(rule_key: str) -> bool:
        r = cp.retention.get(rule_key)
        if r is None or r.trigger != Trigger.account_closed or r.legal_minimum is None:
            return False
        return r.legal_minimum.period.approx_days() <= stage_days

    nodes: list[PlanNode] = []
    for node in base.nodes:
        whole = node.collection in named_delete
        anon = node.collection in named_anon and not whole
        scope = in_scope.get(node.collection, set())
        touched = whole or anon or bool(scope)
        personal = [f.name for f in node.fields if f.categories and not f.primary_key and "." not in f.name]
        all_in = whole or anon or (bool(personal) and set(personal) <= scope)
        # Rows the policy deletes as a whole are not picked apart: they go when all of
        # their personal fields are due, and stay whole until then (as an erasure
        # suspends the delete of a row it must partly keep).
        partial_delete = node.delete_rows and not all_in
        fields: list[PlanField] = []
        for f in node.fields:
            masking = f.masking
            covered = whole or anon or f.name in scope
            if (f.categories and not covered) or (not touched and not f.primary_key) or partial_delete:
                masking = "keep"
            elif not all_in and masking == "delete":
                masking = None  # a row partly in scope is masked, never deleted
            if anon and masking == "delete":
                masking = None
            if f.identity and not final:
                masking = "keep"
            lms = tuple(lm for lm in f.legal_minimums if not expired(lm.rule))
            fields.append(dataclasses.replace(f, masking=masking, legal_minimums=lms))
        delete_rows = node.delete_rows and all_in and not anon
        nodes.append(dataclasses.replace(node, fields=tuple(fields), delete_rows=delete_rows))
    return Plan(
        identity_kinds=base.identity_kinds,
        nodes=tuple(nodes),
        erase_order=base.erase_order,
        exemptions=base.exemptions,
        policy_digest=base.policy_digest,
        skipped=base.skipped,
    )


def _parts(plan: Plan, connectors: Mapping[str, SQLConnector]) -> list[tuple[SQLConnector, Plan]]:
    """The plan cut per connected database. Datastores without a connection are left
    out (the plan says so), with whatever is found only through them."""
    kept: list[PlanNode] = []
    names: set[str] = set()
    for node in plan.nodes:
        if node.datastore not in connectors:
            continue
        if any(i.source is not None and i.source not in names for i in node.inputs) and not any(
            i.identity for i in node.inputs
        ):
            continue
        node = dataclasses.replace(
            node, inputs=tuple(i for i in node.inputs if i.source is None or i.source in names)
        )
        kept.append(node)
        names.add(node.collection)
    groups: dict[int, tuple[SQLConnector, list[PlanNode]]] = {}
    for node in kept:
        c = connectors[node.datastore]
        groups.setdefault(id(c), (c, []))[1].append(node)
    out = []
    for c, nodes in groups.values():
        coll = {n.collection for n in nodes}
        for n in nodes:
            bad = [i.source for i in n.inputs if i.source is not None and i.source not in coll]
            if bad:
                raise PlanError(f"{n.collection} is found through {bad[0]}, in another database")
        out.append(
            (
                c,
                Plan(
                    identity_kinds=plan.identity_kinds,
                    nodes=tuple(nodes),
                    erase_order=tuple(x for x in plan.erase_order if x in coll),
                    exemptions=plan.exemptions,
                    policy_digest=plan.policy_digest,
                    skipped=plan.skipped,
                ),
            )
        )
    return out


# --------------------------------------------------------------------------- erasure


def erase_accounts(
    fid: Any,
    connectors: Mapping[str, SQLConnector],
    subject_ids: Sequence[str],
    rules: Sequence[str],
    *,
    final: bool,
    stage_days: float,
    key: bytes,
) -> dict[str, Any]:
    """Carry ``rules`` out for these accounts: their rows in every connected datastore,
    then their values in the vault (the rules' categories; the whole subject, crypto-
    shredded, when ``final``). Raises on a failed verification (nothing is recorded done)."""
    cp: CompiledPolicy = fid.policy
    counts: dict[str, Any] = {"subjects": len(subject_ids), "deleted": 0, "updated": 0, "statements": 0}
    if not subject_ids:
        return counts
    found = identities_of(fid, subject_ids)
    seeds = {sid: {k: v for k, v in ids.items() if k in cp.identity_kinds} for sid, ids in found.items()}
    seeds = {sid: s for sid, s in seeds.items() if s}
    if seeds:
        kinds = sorted({k for s in seeds.values() for k in s})
        plan = scoped_plan(cp, build_plan(cp, kinds), rules, final=final, stage_days=stage_days)
        for connector, part in _parts(plan, connectors):
            result = connector.mask(part, seeds, key=key)
            _check(result)
            for req in result.requests.values():
                for ce in req.collections.values():
                    counts["deleted"] += ce.deleted
                    counts["updated"] += ce.updated
            counts["statements"] += sum(result.statements.values())
    ids = list(subject_ids)
    if final:
        counts["shredded"] = fid.vault.erase_many(ids, actor=ACTOR)
    else:
        cats = sorted(cp.categories_within(c for key_ in rules for c in cp.retention[key_].categories))
        a = T.attributes.c
        removed = 0
        if cats:
            with fid.data.begin() as conn:
                for part_ids in _chunks(ids):
                    removed += conn.execute(
                        delete(T.attributes).where(a.subject_id.in_(part_ids), a.category.in_(cats))
                    ).rowcount
        counts["values_deleted"] = removed
    fid.audit.append_many(
        None,
        [
            {
                "actor": ACTOR,
                "action": "retention.erase",
                "purpose": "retention",
                "subject_id": sid,
                "detail": {"rules": list(rules), "final": final},
            }
            for sid in ids
        ],
    )
    return counts


def _check(result: ErasureResult) -> None:
    if result.ok:
        return
    bad = sorted(
        f"{v['collection']}.{v['field']}"
        for req in result.requests.values()
        if req.verification is not None
        for v in req.verification.violations
    )
    raise PermanentStepError(
        f"retention erasure verification failed: identifying values left in {', '.join(bad)}"
    )


def select_subjects(conn: Connection, where: Sequence[Any], lo: Any, hi: Any) -> list[str]:
    s = T.subjects.c
    cond = list(where)
    if lo is not None:
        cond.append(s.id > lo)
    cond.append(s.id <= hi)
    return [str(x) for x in conn.execute(select(s.id).where(*cond).order_by(s.id)).scalars()]


# --------------------------------------------------------------------------- the notice


def _day(at: datetime) -> str:
    return f"{at:%d %B %Y}".lstrip("0")


def inactivity_letter(*, organization: str, since: datetime, delete_after: datetime, period: str) -> Letter:
    """PLO-9: the account is about to be deleted for inactivity; signing in keeps it."""
    return Letter(
        subject=f"Your {organization} account will be deleted on {_day(delete_after)}",
        text=(
            f"Your account at {organization} has not been used since {_day(since)}.\n\n"
            f"We delete accounts that stay unused for {period}, as our privacy policy says. "
            f"Unless you sign in before {_day(delete_after)}, we will delete your account and most "
            "of the information we hold about you.\n\n"
            "To keep your account, sign in once. Nothing else is needed.\n"
            f"\n-- \n{organization} privacy team\n"
        ),
    )
