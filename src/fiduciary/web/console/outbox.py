"""The mail outbox (demo mode: no SMTP server, every message an .eml file in
``data_dir/outbox``): the list, newest first, and each message rendered (headers, text
body), with verification codes picked out so a demo can be followed. The messages hold
requesters' addresses and codes: operators and admins only, and opening one is audited."""

from __future__ import annotations

import re
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from fiduciary.mail import OutboxMailer, OutboxMessage, read_eml
from fiduciary.web.console.base import gate, message, page, when
from fiduciary.web.console.session import SignedIn

router = APIRouter()

SHOWN: Final = 200
_NAME = re.compile(r"[0-9]{8}T[0-9]{12}Z-[A-Za-z0-9.-]{1,80}\.eml")
_CODE = re.compile(r"verification code:?\s*(\d{4,10})", re.IGNORECASE)
_REFERENCE = re.compile(r"(?:Request reference:\s*|\(reference )([A-Za-z0-9]{1,32})")


def _code(m: OutboxMessage) -> str | None:
    found = _CODE.search(m.subject) or _CODE.search(m.text)
    return found.group(1) if found else None


def _outbox(request: Request, signed: SignedIn) -> OutboxMailer | Response:
    mailer = signed.web.mailer
    if not isinstance(mailer, OutboxMailer):
        where = mailer.describe if mailer is not None else "nowhere (no mailer)"
        return message(
            request,
            signed,
            404,
            "No outbox",
            f"Mail is sent to {where}: the outbox exists only when no SMTP server is set "
            "(FIDUCIARY_SMTP_URL), as in the demo.",
        )
    return mailer


@router.get("/outbox")
def outbox(request: Request) -> Response:
    signed = gate(request, "requests:write")
    if isinstance(signed, Response):
        return signed
    mailer = _outbox(request, signed)
    if isinstance(mailer, Response):
        return mailer
    names = sorted(p for p in mailer.folder.glob("*.eml")) if mailer.folder.is_dir() else []
    total = len(names)
    rows = []
    for path in reversed(names[-SHOWN:]):
        m = read_eml(path)
        ref = _REFERENCE.search(m.text)
        rows.append(
            {
                "name": path.name,
                "date": when(m.date),
                "to": m.to,
                "subject": m.subject,
                "code": _code(m),
                "reference": ref.group(1) if ref else None,
            }
        )
    return page(
        request,
        "outbox.html",
        signed,
        title="Mail outbox",
        rows=rows,
        total=total,
        shown=SHOWN,
        folder=str(mailer.folder),
    )


@router.get("/outbox/{name}")
def outbox_message(request: Request, name: str) -> Response:
    signed = gate(request, "requests:write")
    if isinstance(signed, Response):
        return signed
    mailer = _outbox(request, signed)
    if isinstance(mailer, Response):
        return mailer
    # Only names the outbox writes, and only files inside it: no path reaches elsewhere.
    path = mailer.folder / name
    if not _NAME.fullmatch(name) or not path.is_file():
        return message(request, signed, 404, "No such message", "The outbox has no message by this name.")
    m = read_eml(path)
    # The file's send time names it in the trail (the rest of the name is a message id).
    signed.web.fid.audit.append(
        None, actor=signed.actor, action="console.outbox_read", detail={"message": name[:22]}
    )
    ref = _REFERENCE.search(m.text)
    return page(
        request,
        "outbox_message.html",
        signed,
        title=m.subject or name,
        m=m,
        name=name,
        date=when(m.date),
        code=_code(m),
        reference=ref.group(1) if ref else None,
    )
