"""Decisions: may purpose P use these categories of subject S now (for recipient R)?

Each decision is audited as ``Fiduciary.decide`` audits it; the entries of concurrent
requests are committed together (``fiduciary.web.batching``) and every answer waits for
its entry's commit. A batch loads its subjects' states with one query per 5,000 subjects,
records the GPC opt-outs it causes with one insert, and audits with one insert.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from fiduciary.consent.ledger import EventKind, NewEvent
from fiduciary.core import decision_entry
from fiduciary.web.api.convert import decision_out
from fiduciary.web.api.models import DecisionBatchIn, DecisionBatchOut, DecisionIn, DecisionOut
from fiduciary.web.deps import GPC_HEADER, Caller, access
from fiduciary.web.problems import FieldError, ProblemException
from fiduciary.web.state import RECORD_GPC_FIRST, UNKNOWN, Decided, DecisionAsked, WebState

router = APIRouter(tags=["decisions"])
Decide = Annotated[Caller, access("decisions")]


def _unknown(fields: list[tuple[str, str]]) -> ProblemException:
    """422 naming each (body field, subject id) that is not a subject."""
    errors = [
        FieldError(
            location="body",
            field=field,
            pointer="#/" + field.replace(".", "/"),
            detail=f"unknown subject {sid!r}",
            type="unknown_subject",
        )
        for field, sid in fields[:50]
    ]
    return ProblemException(422, f"{fields[0][0]}: unknown subject {fields[0][1]!r}", errors=errors)


@router.post("/decisions", response_model=DecisionOut, openapi_extra=GPC_HEADER)
async def decide(body: DecisionIn, caller: Decide) -> DecisionOut:
    """One decision. With ``Sec-GPC: 1``, where the subject's jurisdiction makes GPC an
    opt-out of sale and sharing, it counts on this request and is recorded (LAW-12)."""
    return await decide_one(caller, body)


async def decide_one(caller: Caller, body: DecisionIn) -> DecisionOut:
    """The decision ``POST /decisions`` answers (also served by ``fiduciary.web.fastpath``)."""
    web = caller.web
    sid = body.subject_id
    asked = DecisionAsked(
        caller.actor, sid, body.purpose, body.categories, body.recipient, body.audience, caller.gpc
    )
    st = web.cached_state(sid)
    if st is None:
        # One trip to the writer: the state read with the batch's others, the decision
        # made there and its audit entry committed with the batch's.
        made = await web.decide(asked)
        if made == UNKNOWN:
            raise _unknown([("subject_id", sid)])
    else:
        made = web.decide_with(st, asked)
        if isinstance(made, Decided):
            await web.audit(decision_entry(caller.actor, sid, made.decision, body.recipient, body.audience))
    if made == RECORD_GPC_FIRST:
        await web.record(_gpc_opt_out(web, sid, caller.actor))
        made = web.decide_with(await web.load_state(sid), asked)
        assert isinstance(made, Decided)  # the opt-out is in the state now
        await web.audit(decision_entry(caller.actor, sid, made.decision, body.recipient, body.audience))
    assert isinstance(made, Decided)
    return decision_out(sid, made.decision, made.gpc)


def _gpc_opt_out(web: WebState, subject_id: str, actor: str) -> NewEvent:
    return NewEvent(
        subject_id=subject_id,
        kind=EventKind.sale_opt_out,
        scope="sale",
        channel="gpc_signal",
        policy_version=web.fid.policy.version,
        actor=actor,
    )


def _decide_batch(web: WebState, items: list[DecisionIn], gpc: bool, actor: str) -> list[DecisionOut]:
    fid = web.fid
    states = web.states(dict.fromkeys(i.subject_id for i in items))
    missing = [
        (f"items.{n}.subject_id", i.subject_id) for n, i in enumerate(items) if i.subject_id not in states
    ]
    if missing:
        raise _unknown(missing)
    applies = {sid: gpc and web.gpc_applies(st.jurisdiction) for sid, st in states.items()}
    opt_outs = [sid for sid, a in applies.items() if a and not states[sid].sale_opt_out]
    if opt_outs:
        web.writer.call_many([_gpc_opt_out(web, sid, actor) for sid in opt_outs])
        states.update(web.states(opt_outs))
    decide = fid.decider.decide
    decisions = [
        decide(
            states[i.subject_id],
            i.purpose,
            i.categories,
            i.recipient,
            audience=i.audience,
            gpc=applies[i.subject_id],
        )
        for i in items
    ]
    web.writer.call_many(
        [
            decision_entry(actor, i.subject_id, d, i.recipient, i.audience)
            for i, d in zip(items, decisions, strict=True)
        ]
    )
    return [
        decision_out(i.subject_id, d, applies[i.subject_id]) for i, d in zip(items, decisions, strict=True)
    ]


@router.post("/decisions/batch", response_model=DecisionBatchOut, openapi_extra=GPC_HEADER)
async def decide_batch(body: DecisionBatchIn, caller: Decide) -> DecisionBatchOut:
    """Up to 1,000 decisions at once, in the order asked. An unknown subject refuses the
    whole batch (422 naming each ``items.<n>.subject_id``) before anything is recorded."""
    out = await run_in_threadpool(_decide_batch, caller.web, body.items, caller.gpc, caller.actor)
    return DecisionBatchOut(decisions=out)
