"""Rights requests: intake, verification, the queue with deadlines, the privacy team's
decisions, and running them (``fiduciary.requests``: RequestDesk, RequestRunner)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from fiduciary.requests.lifecycle import CLOSED, OPEN
from fiduciary.web.api.convert import request_out
from fiduciary.web.api.models import (
    CodeIn,
    CodeSentOut,
    DataPointsIn,
    DenyIn,
    ExtendedOut,
    ExtendIn,
    QueueOut,
    RequestOut,
    RunIn,
    RunOut,
    StatusOut,
    SubmitIn,
    SubmittedOut,
)
from fiduciary.web.deps import Caller, access

router = APIRouter(tags=["requests"])
Read = Annotated[Caller, access("requests:read")]
Write = Annotated[Caller, access("requests:write")]
RequestPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,32}$", description="The request's reference.")]
StatusName = Annotated[str, Query(pattern="^(" + "|".join((*OPEN, *CLOSED)) + ")$")]


@router.post("/requests", status_code=201, response_model=SubmittedOut)
def submit(body: SubmitIn, caller: Write) -> SubmittedOut:
    """Receive a request on a person's behalf: the type must be a right of their
    jurisdiction; the due date follows the policy. The code (email_code verification) or
    the acknowledgement is mailed to the requester. A request of the same type from the
    same contact that is still open is returned instead (``duplicate_of``)."""
    contact = {k: v for k, v in body.contact.model_dump().items() if v is not None}
    sub = caller.web.desk.submit(
        body.type,
        contact=contact,
        region=body.region,
        details=body.details,
        data_points=body.data_points,
        subject_kind=body.subject_kind,
        actor=caller.actor,
    )
    return SubmittedOut(
        request_id=sub.request_id,
        status=sub.status,
        due_at=sub.due_at,
        verification=sub.verification.value,
        duplicate_of=sub.duplicate_of,
        code_sent=sub.code_sent,
        acknowledge_by=sub.acknowledge_by,
        subject_matched=sub.subject_matched,
    )


@router.get("/requests", response_model=QueueOut)
def queue(
    caller: Read,
    status: Annotated[
        list[StatusName] | None, Query(description="One or more statuses; default all.")
    ] = None,
    overdue: Annotated[bool, Query(description="Open and past due only.")] = False,
    jurisdiction: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> QueueOut:
    """The queue, soonest due first, with days left and overdue flags."""
    now = datetime.now(UTC)
    views = caller.web.desk.queue(
        status=status or None, overdue=overdue, jurisdiction=jurisdiction, limit=limit, now=now
    )
    return QueueOut(requests=[request_out(v, now) for v in views])


@router.get("/requests/{request_id}", response_model=RequestOut)
def status(request_id: RequestPath, caller: Read) -> RequestOut:
    """A request and its events (no personal data)."""
    now = datetime.now(UTC)
    return request_out(caller.web.desk.status(request_id, now=now), now)


@router.post("/requests/{request_id}/verify", response_model=StatusOut)
def verify_code(request_id: RequestPath, body: CodeIn, caller: Write) -> StatusOut:
    """Check the one-time code mailed to the requester. A wrong code: 422
    ``code-rejected`` with ``attempts_left``."""
    return StatusOut(
        request_id=request_id, status=caller.web.desk.verify_code(request_id, body.code, actor=caller.actor)
    )


@router.post("/requests/{request_id}/resend-code", response_model=CodeSentOut)
def resend_code(request_id: RequestPath, caller: Write) -> CodeSentOut:
    """A new code replaces the old one (a limited number per request)."""
    return CodeSentOut(
        request_id=request_id, code_sent=caller.web.desk.resend_code(request_id, actor=caller.actor)
    )


@router.post("/requests/{request_id}/verify-data-points", response_model=StatusOut)
def verify_data_points(request_id: RequestPath, body: DataPointsIn, caller: Write) -> StatusOut:
    """CCPA verification by data points (two or three, by the policy)."""
    new = caller.web.desk.verify_data_points(
        request_id, body.data_points, declaration=body.declaration, actor=caller.actor
    )
    return StatusOut(request_id=request_id, status=new)


@router.post("/requests/{request_id}/approve", response_model=StatusOut)
def approve(request_id: RequestPath, caller: Write) -> StatusOut:
    """The privacy team approves a verified request (required for child reports)."""
    return StatusOut(request_id=request_id, status=caller.web.desk.approve(request_id, caller.actor))


@router.post("/requests/{request_id}/deny", response_model=StatusOut)
def deny(request_id: RequestPath, body: DenyIn, caller: Write) -> StatusOut:
    """Refuse with a legal reason (and a note without personal data; required for
    ``other``). The requester is told, with the supervisory authority to complain to."""
    return StatusOut(
        request_id=request_id,
        status=caller.web.desk.deny(request_id, body.reason, caller.actor, note=body.note),
    )


@router.post("/requests/{request_id}/extend", response_model=ExtendedOut)
def extend(request_id: RequestPath, body: ExtendIn, caller: Write) -> ExtendedOut:
    """Take the policy's one extension (GDPR: two months; CCPA: 45 days); the requester
    is told why."""
    return ExtendedOut(
        request_id=request_id, due_at=caller.web.desk.extend(request_id, body.reason, caller.actor)
    )


@router.post("/requests/{request_id}/run", status_code=202, response_model=RunOut)
def run(request_id: RequestPath, caller: Write, body: RunIn | None = None) -> RunOut:
    """Start fulfilling a verified (or approved) request: a job of idempotent steps over
    the company's datastores, run by the executor (inline thread, or Celery workers when
    FIDUCIARY_BROKER_URL is set). Follow it with GET /requests/{id}."""
    holds = {request_id: list(body.holds)} if body is not None and body.holds else None
    job_id = caller.web.runner().run([request_id], actor=caller.actor, holds=holds)
    return RunOut(request_id=request_id, job_id=job_id)


@router.get(
    "/requests/{request_id}/package",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The access package (ZIP)."}},
)
def package(request_id: RequestPath, caller: Write) -> Response:
    """The access package of a request that is done (ZIP: JSON, a CSV per collection, a
    readable HTML report). Its download is audited."""
    from fiduciary.requests.runner import export_package

    data = export_package(caller.web.fid, caller.web.desk, request_id)
    caller.web.fid.audit.append(
        None, actor=caller.actor, action="request.package_downloaded", detail={"request": request_id}
    )
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{request_id}.zip"'},
    )
