"""Signing in and out: ``/console/login`` (argon2id through ``auth.verify_password``, rate
limited per IP and per username) and ``/console/logout``."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from fiduciary.web.auth import verify_password
from fiduciary.web.center.routes import _save, session_of
from fiduciary.web.console import session
from fiduciary.web.console.base import PREFIX, gate_form, page, safe_next
from fiduciary.web.deps import web_of

router = APIRouter()


def _form(
    request: Request,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
    username: str = "",
    next: str = "",
) -> Response:
    # Before a session exists the form's CSRF token is the privacy center's browser token.
    anon = session_of(request)
    response = page(
        request,
        "login.html",
        None,
        status=status,
        csrf=anon.csrf,
        title="Sign in",
        error=error,
        notice=notice,
        username=username,
        next=next,
    )
    return _save(request, response)


@router.get("/login")
def login_form(
    request: Request,
    next: Annotated[str, Query(max_length=512)] = "",
    out: Annotated[str, Query(max_length=8)] = "",
) -> Response:
    if session.signed_in(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _form(request, next=next, notice="You are signed out." if out else "")


@router.post("/login")
def login(
    request: Request,
    csrf: Annotated[str, Form(max_length=256)] = "",
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=2048)] = "",
    next: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    web = web_of(request)
    anon = session_of(request)
    if not csrf or not hmac.compare_digest(csrf.encode(), anon.csrf.encode()):
        return _form(
            request,
            status=403,
            error="The form had expired. Enter your username and password again.",
            username=username[:64],
            next=next,
        )
    name = username.strip().lower()
    limits = session.limits_of(request)
    # Both counted on every attempt, the IP first: a flood from one address does not also
    # lock out each username it tries beyond the IP's allowance.
    ip = session.client_ip(request)
    if not limits.by_ip.allow(ip) or not limits.by_user.allow(name):
        if limits.first_refusal(ip):
            web.fid.audit.append(
                None, actor="console", action="console.sign_in_refused", result="rate_limited"
            )
        return _form(
            request,
            status=429,
            error="Too many sign-in attempts. Wait 15 minutes and try again.",
            username=name[:64],
            next=next,
        )
    user = verify_password(web.fid, name, password)
    if user is None:
        # The typed name is not recorded: it may be anything, an email address included.
        web.fid.audit.append(
            None, actor="console", action="console.sign_in_refused", result="bad_credentials"
        )
        return _form(request, status=401, error="Wrong username or password.", username=name[:64], next=next)
    token = session.start(web, user)
    response = RedirectResponse(safe_next(next), status_code=303)
    session.set_cookie(request, response, web, token)
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=256)] = "") -> Response:
    if session.signed_in(request) is None:  # signed out already: nothing to refuse
        return RedirectResponse(f"{PREFIX}/login", status_code=303)
    signed = gate_form(request, None, csrf)
    if isinstance(signed, Response):
        return signed
    session.end(signed)
    response = RedirectResponse(f"{PREFIX}/login?out=1", status_code=303)
    session.clear_cookie(request, response)
    return response
