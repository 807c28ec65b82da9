"""Subjects: sign-up through the age gate, lookup by identity, reads for a purpose, erasure."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from fiduciary.consent.signals import truncate_ip
from fiduciary.vault.vault import UnknownSubject
from fiduciary.web.api.convert import decision_out
from fiduciary.web.api.models import (
    SUBJECT_ID_PATTERN,
    FindIn,
    Found,
    ReadIn,
    ReadOut,
    SignUpIn,
    StoredValueOut,
    SubjectCreated,
    SubjectInfo,
)
from fiduciary.web.deps import GPC_HEADER, Caller, access
from fiduciary.web.problems import KINDS, FieldError, ProblemException

router = APIRouter(tags=["subjects"])

SubjectPath = Annotated[str, Path(pattern=SUBJECT_ID_PATTERN, description="The subject's id.")]
Read = Annotated[Caller, access("subjects:read")]
Write = Annotated[Caller, access("subjects:write")]


def body_error(field: str, detail: str, type_: str = "value_error") -> FieldError:
    return FieldError(
        location="body", field=field, pointer="#/" + field.replace(".", "/"), detail=detail, type=type_
    )


def invalid(errors: list[FieldError]) -> ProblemException:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ProblemException(422, f"body {first.field}: {first.detail}{more}", errors=errors)


@router.post("/subjects", status_code=201, response_model=SubjectCreated, openapi_extra=GPC_HEADER)
def sign_up(body: SignUpIn, caller: Write) -> SubjectCreated:
    """Create a subject through the policy's age gate (PUT-2) and record the consents
    ticked at sign-up. Below the minimum age: 422 ``under-age``, nothing stored. With
    ``Sec-GPC: 1`` where GPC is an opt-out of sale (LAW-12), the opt-out is recorded."""
    fid = caller.web.fid
    # Checked before anything is stored: a consent refused after the subject exists would
    # leave half a sign-up behind.
    errors = [
        body_error(f"consents.{i}", f"unknown purpose {p!r}")
        for i, p in enumerate(body.consents)
        if p not in fid.policy.purposes
    ]
    if body.ip is not None:
        try:
            truncate_ip(body.ip)
        except ValueError as exc:
            errors.append(body_error("ip", str(exc)))
    if errors:
        raise invalid(errors)
    sid = fid.sign_up(
        body.kind,
        identities=body.identities,
        attributes=body.attributes,
        activity=body.activity,
        region=body.region,
        birth_date=body.birth_date,
        age=body.age,
        consents=body.consents,
        channel=body.channel,
        notice_text=body.notice_text,
        language=body.language,
        ip=body.ip,
        actor=caller.actor,
    )
    jurisdiction = fid.policy.jurisdiction_for(body.region)
    opted = caller.gpc and caller.web.gpc_applies(jurisdiction)
    if opted:
        fid.opt_out_of_sale(sid, channel="gpc_signal", actor=caller.actor)
    return SubjectCreated(subject_id=sid, jurisdiction=jurisdiction, gpc_opt_out=opted)


@router.post("/subjects/find", response_model=Found)
def find(body: FindIn, caller: Read) -> Found:
    """The subject with this identity. The lookup is audited with its purpose, found or
    not; 404 when no subject has it."""
    fid = caller.web.fid
    if body.purpose not in fid.policy.purposes:
        raise invalid([body_error("purpose", f"unknown purpose {body.purpose!r}")])
    sid = fid.find(body.kind, body.value)
    fid.audit.append(
        None,
        actor=caller.actor,
        action="subject.find",
        purpose=body.purpose,
        subject_id=sid,
        result="found" if sid else "not_found",
        detail={"kind": body.kind},
    )
    if sid is None:
        raise ProblemException(404, f"no subject has this {body.kind}", kind=KINDS[UnknownSubject])
    return Found(subject_id=sid)


@router.get("/subjects/{subject_id}", response_model=SubjectInfo)
def get_subject(subject_id: SubjectPath, caller: Read) -> SubjectInfo:
    """The subject's kind, jurisdiction, status and dates; none of its data."""
    s = caller.web.fid.vault.subject(subject_id)
    return SubjectInfo(
        id=s.id,
        kind=s.kind,
        jurisdiction=s.jurisdiction,
        status=s.status,
        age_status=s.age_status,
        policy_version=s.policy_version,
        created_at=s.created_at,
        last_activity_at=s.last_activity_at,
        closed_at=s.closed_at,
        erased_at=s.erased_at,
    )


@router.post("/subjects/{subject_id}/read", response_model=ReadOut, openapi_extra=GPC_HEADER)
async def read(subject_id: SubjectPath, body: ReadIn, caller: Read) -> ReadOut:
    """The values ``purpose`` may use now, with the decision: refused categories are
    absent and explained. The read is audited with its purpose."""
    result = await run_in_threadpool(
        caller.web.fid.read,
        subject_id,
        body.purpose,
        body.categories,
        recipient=body.recipient,
        audience=body.audience,
        gpc=caller.gpc,
        actor=caller.actor,
    )
    values = {
        c: StoredValueOut(
            value=v.value,
            source=v.source,
            collected_at=v.collected_at,
            policy_version=v.policy_version,
            activity=v.activity,
        )
        for c, v in result.values.items()
    }
    applied = caller.gpc and caller.web.gpc_applies(caller.web.fid.state(subject_id).jurisdiction)
    return ReadOut(
        subject_id=subject_id, values=values, decision=decision_out(subject_id, result.decision, applied)
    )


@router.delete("/subjects/{subject_id}", status_code=204, response_class=Response)
def erase(subject_id: SubjectPath, caller: Write) -> Response:
    """Crypto-shred the subject: its data key is destroyed, so every copy of its data,
    backups included, is unreadable. Erasing again is harmless."""
    caller.web.fid.erase(subject_id, actor=caller.actor)
    caller.web.forget(subject_id)
    return Response(status_code=204)
