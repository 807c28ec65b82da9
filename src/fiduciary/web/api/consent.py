"""Consent: a person's choices, each an append-only ledger event with its LAW-8 proof.

Giving and withdrawing are the same call shape (LAW-8: withdrawing is as easy as giving).
Writes of concurrent requests are committed together (``fiduciary.web.batching``); each
answer waits for its own commit and carries the event id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path

from fiduciary.consent.ledger import EventKind, NewEvent
from fiduciary.web.api.models import (
    ChoiceIn,
    ConsentEventOut,
    ConsentStateOut,
    EventCreated,
    GiveIn,
    ObjectIn,
    ProofOut,
    RestrictIn,
    SaleOptOutIn,
    SettingIn,
    WithdrawIn,
)
from fiduciary.web.api.subjects import SubjectPath
from fiduciary.web.deps import GPC_HEADER, Caller, access

router = APIRouter(tags=["consent"])
Read = Annotated[Caller, access("consent:read")]
Write = Annotated[Caller, access("consent:write")]


def _event(
    caller: Caller,
    subject_id: str,
    kind: EventKind,
    scope: str,
    body: ChoiceIn,
    *,
    value: str | None = None,
    expires_at: datetime | None = None,
) -> NewEvent:
    return NewEvent(
        subject_id=subject_id,
        kind=kind,
        scope=scope,
        channel=body.channel,
        policy_version=caller.web.fid.policy.version,
        value=value,
        method=body.method,
        notice_text=body.notice_text,
        notice_hash=body.notice_hash,
        language=body.language,
        ip=body.ip,
        expires_at=expires_at,
        actor=caller.actor,
    )


@router.post("/subjects/{subject_id}/consent/give", status_code=201, response_model=EventCreated)
async def give(subject_id: SubjectPath, body: GiveIn, caller: Write) -> EventCreated:
    """Consent given to a purpose, with the notice text shown (only its hash is kept)."""
    e = _event(caller, subject_id, EventKind.consent_given, body.purpose, body, expires_at=body.expires_at)
    return EventCreated(event_id=await caller.web.record(e))


@router.post("/subjects/{subject_id}/consent/withdraw", status_code=201, response_model=EventCreated)
async def withdraw(subject_id: SubjectPath, body: WithdrawIn, caller: Write) -> EventCreated:
    """Consent withdrawn (or an opt-out of an opt-out purpose); effective at once."""
    e = _event(caller, subject_id, EventKind.consent_withdrawn, body.purpose, body)
    return EventCreated(event_id=await caller.web.record(e))


@router.post("/subjects/{subject_id}/consent/object", status_code=201, response_model=EventCreated)
async def object_(subject_id: SubjectPath, body: ObjectIn, caller: Write) -> EventCreated:
    """An objection (GDPR Art. 21, LAW-7) to one purpose open to it, or ``*`` to all."""
    e = _event(caller, subject_id, EventKind.objection, body.purpose, body)
    return EventCreated(event_id=await caller.web.record(e))


@router.post("/subjects/{subject_id}/consent/restrict", status_code=201, response_model=EventCreated)
async def restrict(subject_id: SubjectPath, body: RestrictIn, caller: Write) -> EventCreated:
    """Restriction of processing (GDPR Art. 18, LAW-4): only legal obligations go on."""
    e = _event(caller, subject_id, EventKind.restriction, "*", body)
    return EventCreated(event_id=await caller.web.record(e))


@router.post("/subjects/{subject_id}/consent/opt-out-of-sale", status_code=201, response_model=EventCreated)
async def opt_out_of_sale(subject_id: SubjectPath, body: SaleOptOutIn, caller: Write) -> EventCreated:
    """Opt-out of sale and sharing (CCPA, LAW-12)."""
    e = _event(caller, subject_id, EventKind.sale_opt_out, "sale", body)
    return EventCreated(event_id=await caller.web.record(e))


@router.post("/subjects/{subject_id}/consent/settings", status_code=201, response_model=EventCreated)
async def set_setting(subject_id: SubjectPath, body: SettingIn, caller: Write) -> EventCreated:
    """A setting: ``visibility:<category>`` (an audience the policy offers, PLU-3,
    PLV-11), ``linked:<recipient>`` (PLU-7), or a purpose condition's setting."""
    e = _event(caller, subject_id, EventKind.setting, body.name, body, value=body.value)
    return EventCreated(event_id=await caller.web.record(e))


@router.get("/subjects/{subject_id}/consent", response_model=ConsentStateOut, openapi_extra=GPC_HEADER)
async def state(subject_id: SubjectPath, caller: Read) -> ConsentStateOut:
    """The subject's choices now, and the purposes that may use its data (counting
    ``Sec-GPC: 1`` where it is an opt-out, without recording it: a read changes nothing)."""
    fid = caller.web.fid
    st = await caller.web.load_state(subject_id)
    applied = caller.gpc and caller.web.gpc_applies(st.jurisdiction)
    return ConsentStateOut(
        subject_id=subject_id,
        kind=st.kind,
        jurisdiction=st.jurisdiction,
        status=st.status,
        age_status=st.age_status,
        consents=dict(st.consents),
        objections=sorted(st.objections),
        restricted=st.restricted,
        sale_opt_out=st.sale_opt_out,
        recipient_opt_outs=sorted(st.recipient_opt_outs),
        settings=dict(st.settings),
        allowed_purposes=sorted(fid.decider.allowed_purposes(st, gpc=applied)),
        gpc=applied,
    )


@router.get("/subjects/{subject_id}/consent/events", response_model=list[ConsentEventOut])
def events(subject_id: SubjectPath, caller: Read) -> list[ConsentEventOut]:
    """Every consent event of the subject, oldest first (404 for an unknown subject)."""
    fid = caller.web.fid
    fid.vault.subject(subject_id)  # 404 rather than an empty list for an id never issued
    return [
        ConsentEventOut(
            id=e.id,
            kind=e.kind.value,
            scope=e.scope,
            value=e.value,
            at=e.at,
            policy_version=e.policy_version,
            notice_hash=e.notice_hash,
            language=e.language,
            method=e.method,
            channel=e.channel,
            ip=e.ip,
            expires_at=e.expires_at,
            actor=e.actor,
        )
        for e in fid.consent.events(subject_id)
    ]


@router.get("/consent/events/{event_id}/proof", response_model=ProofOut)
def proof(event_id: Annotated[int, Path(ge=1, le=2**62)], caller: Read) -> ProofOut:
    """What LAW-8 asks to prove about one event: who, when, what notice text (hash) and
    policy version, in which language, how, from roughly where, until when."""
    return ProofOut(**caller.web.fid.consent.proof(event_id))
