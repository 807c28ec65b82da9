"""The request queue and a request's page: its events, its job's step log, its deadline;
approve, deny with a reason, extend once, start fulfilment (``RequestDesk``,
``RequestRunner``: the calls the JSON API makes, with the actor ``console:<username>``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from fiduciary.jobs import JobError, job_status
from fiduciary.policy.model import RequestType
from fiduciary.requests.lifecycle import (
    APPROVED,
    CLOSED,
    DENY_TEXT,
    OPEN,
    RUNNING,
    VERIFIED,
    DenyReason,
    InvalidTransition,
    RequestError,
    RequestView,
    UnknownRequest,
)
from fiduciary.web.console.base import (
    PREFIX,
    countdown,
    day,
    detail_text,
    gate,
    gate_form,
    message,
    page,
    when,
    words,
)
from fiduciary.web.console.session import SignedIn
from fiduciary.web.state import WebState

router = APIRouter()

_REQUEST_ID = re.compile(r"[A-Za-z0-9]{1,32}")
STATUS_FILTERS: Final[dict[str, tuple[str, ...] | None]] = {
    "open": OPEN,
    "closed": CLOSED,
    "all": None,
    **{s: (s,) for s in (*OPEN, *CLOSED)},
}
SHOWN: Final = 500  # rows on one page of the queue
TYPE_SCAN: Final = 5000  # rows searched for a type among closed requests
EVENT_WORDS: Final[dict[str, str]] = {
    "code_sent": "Verification code mailed",
    "verification_failed": "A wrong code was entered",
    "code_locked": "Code locked after too many attempts",
    "contact_forgotten": "Requester's details destroyed (record retention ended)",
}
DONE_WORDS: Final[dict[str, str]] = {
    "approved": "Approved.",
    "approved-started": "Approved, and fulfilment started.",
    "denied": "Denied; the requester has been told.",
    "extended": "Deadline extended; the requester has been told why.",
    "started": "Fulfilment started.",
}


def _row(web: WebState, v: RequestView, now: datetime) -> dict[str, Any]:
    jur = web.fid.policy.jurisdictions.get(v.jurisdiction)
    return {
        "v": v,
        "type": words(v.type),
        "jurisdiction": jur.name if jur else v.jurisdiction,
        "received": day(v.received_at),
        "due": day(v.due_at),
        "countdown": countdown(web, v, now),
    }


@router.get("/requests")
def queue(
    request: Request,
    status: Annotated[str, Query(max_length=16)] = "open",
    type: Annotated[str, Query(max_length=32)] = "",
    overdue: Annotated[str, Query(max_length=8)] = "",
    jurisdiction: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    signed = gate(request, "requests:read")
    if isinstance(signed, Response):
        return signed
    web = signed.web
    cp = web.fid.policy
    errors: list[str] = []
    if status not in STATUS_FILTERS:
        errors.append(f"Unknown status {status!r}: showing the open requests.")
        status = "open"
    if type and type not in {t.value for t in RequestType}:
        errors.append(f"Unknown request type {type!r}: showing every type.")
        type = ""
    if jurisdiction and jurisdiction not in cp.jurisdictions:
        errors.append(f"Unknown jurisdiction {jurisdiction!r}: showing every jurisdiction.")
        jurisdiction = ""
    statuses = STATUS_FILTERS[status]
    now = datetime.now(UTC)
    # RequestDesk.queue filters by status, overdue and jurisdiction, soonest due first; the
    # type is filtered here. Open requests are few and all read; among closed ones a type
    # is searched in the first TYPE_SCAN.
    only_open = statuses is not None and set(statuses) <= set(OPEN)
    limit = None if type and only_open else (TYPE_SCAN if type else SHOWN + 1)
    views = web.desk.queue(
        status=statuses, overdue=bool(overdue), jurisdiction=jurisdiction or None, limit=limit, now=now
    )
    scanned_all = limit is None or len(views) < limit
    if type:
        views = [v for v in views if v.type == type]
    more = len(views) > SHOWN
    rows = [_row(web, v, now) for v in views[:SHOWN]]
    return page(
        request,
        "queue.html",
        signed,
        title="Requests",
        rows=rows,
        errors=errors,
        status_filter=status,
        type=type,
        overdue=bool(overdue),
        jurisdiction=jurisdiction,
        status_options=[("open", "Open (all open statuses)"), ("closed", "Closed"), ("all", "All")]
        + [(s, s.capitalize()) for s in (*OPEN, *CLOSED)],
        type_options=[(t.value, words(t.value)) for t in RequestType],
        jurisdictions=[(k, j.name) for k, j in cp.jurisdictions.items()],
        more=more,
        partial_scan=bool(type) and not scanned_all,
        overdue_count=sum(1 for r in rows if r["countdown"].overdue),
        shown=SHOWN,
        scan=TYPE_SCAN,
    )


def _detail(
    request: Request,
    signed: SignedIn,
    request_id: str,
    *,
    status: int = 200,
    done: str = "",
    error: str = "",
    form: dict[str, str] | None = None,
) -> Response:
    web = signed.web
    now = datetime.now(UTC)
    try:
        v = web.desk.status(request_id, now=now) if _REQUEST_ID.fullmatch(request_id) else None
    except UnknownRequest:
        v = None
    if v is None:
        return message(request, signed, 404, "No such request", f"There is no request {request_id[:32]!r}.")
    steps: list[Any] = []
    job_error = None
    if v.job_id:
        try:
            job = job_status(web.fid.data, v.job_id)
            steps, job_error = list(job.steps), job.error
        except JobError:
            pass
    right = web.fid.policy.right(v.jurisdiction, v.type)
    events = [
        {
            "at": when(e.at),
            "kind": EVENT_WORDS.get(e.kind, words(e.kind)),
            "actor": e.actor,
            "detail": detail_text(e.detail),
        }
        for e in v.events
    ]
    is_open = v.status in OPEN
    return page(
        request,
        "request.html",
        signed,
        status=status,
        title=f"Request {v.id}",
        row=_row(web, v, now),
        v=v,
        events=events,
        steps=[{**s.__dict__, "finished": when(s.finished_at)} for s in steps],
        job_error=job_error,
        deadline=str(right.deadline) if right else "",
        extension=str(right.extension) if right and right.extension else "",
        can_write=signed.can("requests:write"),
        can_approve=v.status == VERIFIED,
        can_run=v.status in (VERIFIED, APPROVED),
        can_deny=is_open and v.status != RUNNING,
        can_extend=is_open and not v.extended and right is not None and right.extension is not None,
        deny_reasons=[(r.value, words(r.value), DENY_TEXT[r]) for r in DenyReason],
        done=DONE_WORDS.get(done, ""),
        error=error,
        form=form or {},
        received=when(v.received_at),
        due=when(v.due_at),
        closed=when(v.closed_at),
    )


@router.get("/requests/{request_id}")
def detail(request: Request, request_id: str, done: Annotated[str, Query(max_length=32)] = "") -> Response:
    signed = gate(request, "requests:read")
    if isinstance(signed, Response):
        return signed
    return _detail(request, signed, request_id, done=done)


def _after(request_id: str, done: str) -> Response:
    return RedirectResponse(f"{PREFIX}/requests/{request_id}?done={done}", status_code=303)


def _refused(
    request: Request, signed: SignedIn, request_id: str, exc: Exception, form: dict[str, str] | None = None
) -> Response:
    status = 409 if isinstance(exc, InvalidTransition) else 422
    return _detail(request, signed, request_id, status=status, error=str(exc), form=form)


def _known(request: Request, signed: SignedIn, request_id: str) -> Response | None:
    if not _REQUEST_ID.fullmatch(request_id):
        return message(request, signed, 404, "No such request", f"There is no request {request_id[:32]!r}.")
    return None


@router.post("/requests/{request_id}/approve")
def approve(
    request: Request,
    request_id: str,
    csrf: Annotated[str, Form(max_length=256)] = "",
    run: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    signed = gate_form(request, "requests:write", csrf)
    if isinstance(signed, Response):
        return signed
    bad = _known(request, signed, request_id)
    if bad is not None:
        return bad
    try:
        signed.web.desk.approve(request_id, signed.actor)
    except RequestError as exc:
        return _refused(request, signed, request_id, exc)
    if not run:
        return _after(request_id, "approved")
    try:
        signed.web.runner().run([request_id], actor=signed.actor)
    except RequestError as exc:
        return _detail(
            request,
            signed,
            request_id,
            status=409,
            done="approved",
            error=f"Approved, but fulfilment could not start: {exc}",
        )
    return _after(request_id, "approved-started")


@router.post("/requests/{request_id}/run")
def run(request: Request, request_id: str, csrf: Annotated[str, Form(max_length=256)] = "") -> Response:
    signed = gate_form(request, "requests:write", csrf)
    if isinstance(signed, Response):
        return signed
    bad = _known(request, signed, request_id)
    if bad is not None:
        return bad
    try:
        signed.web.runner().run([request_id], actor=signed.actor)
    except RequestError as exc:
        return _refused(request, signed, request_id, exc)
    return _after(request_id, "started")


@router.post("/requests/{request_id}/deny")
def deny(
    request: Request,
    request_id: str,
    csrf: Annotated[str, Form(max_length=256)] = "",
    reason: Annotated[str, Form(max_length=64)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    signed = gate_form(request, "requests:write", csrf)
    if isinstance(signed, Response):
        return signed
    bad = _known(request, signed, request_id)
    if bad is not None:
        return bad
    form = {"reason": reason, "note": note}
    if not reason:
        return _detail(
            request, signed, request_id, status=422, error="Choose the reason for the denial.", form=form
        )
    try:
        signed.web.desk.deny(request_id, reason, signed.actor, note=note.strip() or None)
    except (RequestError, ValueError) as exc:
        return _refused(request, signed, request_id, exc, form)
    return _after(request_id, "denied")


@router.post("/requests/{request_id}/extend")
def extend(
    request: Request,
    request_id: str,
    csrf: Annotated[str, Form(max_length=256)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    signed = gate_form(request, "requests:write", csrf)
    if isinstance(signed, Response):
        return signed
    bad = _known(request, signed, request_id)
    if bad is not None:
        return bad
    form = {"extend_reason": reason}
    if not reason.strip():
        return _detail(
            request,
            signed,
            request_id,
            status=422,
            error="Say why the deadline is extended: the requester is told.",
            form=form,
        )
    try:
        signed.web.desk.extend(request_id, reason.strip(), signed.actor)
    except (RequestError, ValueError) as exc:
        return _refused(request, signed, request_id, exc, form)
    return _after(request_id, "extended")
