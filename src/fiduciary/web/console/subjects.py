"""Subject lookup: by email, phone or another identity through the vault's blind index
(``Fiduciary.find``), for a purpose chosen from the policy's; the lookup is audited with
that purpose (``subject.find``, as the API's), and so is opening a subject's page from a
link (``subject.view``). The page shows what is held about the subject without any value:
its identity kinds and categories, its choices and what each purpose may do now, and its
requests."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from fiduciary.decide import REASON_TEXT
from fiduciary.policy.model import ConsentMode
from fiduciary.store import tables as T
from fiduciary.vault.normalize import BUILTIN_KINDS, IdentityError
from fiduciary.vault.vault import UnknownSubject, VaultError
from fiduciary.web.console.base import gate, gate_form, message, page, when, words
from fiduciary.web.console.session import SignedIn

router = APIRouter()

_SUBJECT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
KIND_WORDS: Final[dict[str, str]] = {
    "email": "Email address",
    "phone_number": "Phone number",
    "user_id": "User id (external)",
}
REQUESTS_SHOWN: Final = 50


def _kinds(signed: SignedIn) -> list[tuple[str, str]]:
    kinds = sorted(BUILTIN_KINDS | signed.web.fid.policy.identity_kinds)
    return [(k, KIND_WORDS.get(k, words(k))) for k in kinds]


def _purposes(signed: SignedIn) -> list[tuple[str, str]]:
    cp = signed.web.fid.policy
    return sorted(((k, p.name) for k, p in cp.purposes.items()), key=lambda kv: kv[1].lower())


def _form(
    request: Request,
    signed: SignedIn,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    kind: str = "email",
    purpose: str = "",
    not_found: bool = False,
) -> Response:
    return page(
        request,
        "subjects.html",
        signed,
        status=status,
        title="Subject lookup",
        kinds=_kinds(signed),
        purposes=_purposes(signed),
        errors=errors or {},
        kind=kind,
        purpose=purpose,
        not_found=not_found,
    )


@router.get("/subjects")
def lookup_form(request: Request) -> Response:
    signed = gate(request, "subjects:read")
    if isinstance(signed, Response):
        return signed
    return _form(request, signed)


@router.post("/subjects")
def lookup(
    request: Request,
    csrf: Annotated[str, Form(max_length=256)] = "",
    kind: Annotated[str, Form(max_length=64)] = "",
    value: Annotated[str, Form(max_length=1024)] = "",
    purpose: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The identity travels in the form body, never in a URL (logs, history)."""
    signed = gate_form(request, "subjects:read", csrf)
    if isinstance(signed, Response):
        return signed
    fid = signed.web.fid
    errors: dict[str, str] = {}
    if purpose not in fid.policy.purposes:
        errors["purpose"] = "Choose the purpose of this lookup: it is recorded in the audit trail."
    if kind not in {k for k, _ in _kinds(signed)}:
        errors["kind"] = "Choose what you are looking up by."
    if not value.strip():
        errors["value"] = "Enter the value to look up."
    sid = None
    if not errors:
        try:
            sid = fid.find(kind, value.strip())
        except (IdentityError, VaultError, ValueError) as exc:
            errors["value"] = str(exc)
    if errors:
        return _form(request, signed, status=422, errors=errors, kind=kind, purpose=purpose)
    fid.audit.append(
        None,
        actor=signed.actor,
        action="subject.find",
        purpose=purpose,
        subject_id=sid,
        result="found" if sid else "not_found",
        detail={"kind": kind},
    )
    if sid is None:
        return _form(request, signed, status=404, kind=kind, purpose=purpose, not_found=True)
    return _subject_page(request, signed, sid, purpose)


@router.get("/subjects/{subject_id}")
def subject(
    request: Request, subject_id: str, purpose: Annotated[str, Query(max_length=64)] = ""
) -> Response:
    """A subject opened from a link (a request's page): the purpose is asked first."""
    signed = gate(request, "subjects:read")
    if isinstance(signed, Response):
        return signed
    fid = signed.web.fid
    if not _SUBJECT_ID.fullmatch(subject_id):
        return message(request, signed, 404, "No such subject", "This is not a subject id.")
    if purpose not in fid.policy.purposes:
        return page(
            request,
            "subject_purpose.html",
            signed,
            status=422 if purpose else 200,
            title="Why are you opening this subject?",
            subject_id=subject_id,
            purposes=_purposes(signed),
            error="Choose a purpose of the policy." if purpose else "",
        )
    try:
        fid.vault.subject(subject_id)
    except UnknownSubject:
        return message(request, signed, 404, "No such subject", f"There is no subject {subject_id!r}.")
    fid.audit.append(None, actor=signed.actor, action="subject.view", purpose=purpose, subject_id=subject_id)
    return _subject_page(request, signed, subject_id, purpose)


def _subject_page(request: Request, signed: SignedIn, subject_id: str, purpose: str) -> Response:
    web = signed.web
    fid = web.fid
    cp = fid.policy
    row = fid.vault.subject(subject_id)
    # What is held, never a value: the kinds and categories only (nothing is decrypted).
    with fid.data.connect() as conn:
        kinds = list(
            conn.execute(
                select(T.identities.c.kind).where(T.identities.c.subject_id == subject_id).order_by("kind")
            ).scalars()
        )
        a = T.attributes.c
        held = conn.execute(
            select(a.category, a.source, a.collected_at, a.activity)
            .where(a.subject_id == subject_id)
            .order_by(a.category)
        ).all()
        rq = T.requests.c
        requests = conn.execute(
            select(rq.id, rq.type, rq.status, rq.received_at, rq.due_at)
            .where(rq.subject_id == subject_id)
            .order_by(rq.received_at.desc())
            .limit(REQUESTS_SHOWN)
        ).all()
    choices: list[dict[str, Any]] = []
    state = None
    with contextlib.suppress(LookupError):  # erased meanwhile: the page says "no consent state"
        state = web.state(subject_id)
    if state is not None:
        allowed = fid.decider.allowed_purposes(state)
        for key, p in sorted(cp.purposes.items(), key=lambda kv: kv[1].name.lower()):
            if p.subjects and row.kind not in p.subjects:
                continue
            mode = p.consent_mode(row.jurisdiction)
            objected = key in state.objections or ("*" in state.objections and p.objection)
            reason = None
            if key not in allowed:
                d = fid.decider.decide(state, key)
                reason = REASON_TEXT[d.reason] if d.reason is not None else None
            choices.append(
                {
                    "name": p.name,
                    "basis": words(p.basis.value),
                    "mode": {
                        ConsentMode.opt_in: "opt-in",
                        ConsentMode.opt_out: "opt-out",
                        ConsentMode.notice_only: "no choice",
                    }[mode],
                    "choice": state.consents.get(key, "—"),
                    "objected": objected,
                    "allowed": key in allowed,
                    "reason": reason,
                }
            )
    jur = cp.jurisdictions.get(row.jurisdiction)
    return page(
        request,
        "subject.html",
        signed,
        title=f"Subject {subject_id}",
        s=row,
        jurisdiction=jur.name if jur else row.jurisdiction,
        purpose_name=cp.purposes[purpose].name,
        kinds=[KIND_WORDS.get(k, words(k)) for k in kinds],
        held=[
            {
                "category": h.category,
                "source": h.source,
                "collected": when(h.collected_at),
                "activity": h.activity,
            }
            for h in held
        ],
        state=state,
        choices=choices,
        requests=[
            {"id": r.id, "type": words(r.type), "status": r.status, "received": when(r.received_at)}
            for r in requests
        ],
        requests_shown=REQUESTS_SHOWN,
        created=when(row.created_at),
        last_activity=when(row.last_activity_at),
        now=when(datetime.now(UTC)),
    )
