"""Routes of the privacy center, mounted at the site root (``/``).

Server-rendered pages (Jinja2, ``center/templates``) that work without JavaScript:

- ``/`` who we are; ``/notice`` the notice in force; ``/notice/versions`` the archive and
  changelog, ``/notice/versions/{id}`` an earlier notice rendered from its stored text;
- ``/requests/new`` -> ``/requests/{id}/verify`` (the mailed code) -> ``/requests/{id}``
  (status, due date, events) -> ``/requests/{id}/download`` (the package when done);
- ``/unsubscribe?token=`` a confirm page (GET) and the RFC 8058 one-click POST (LAW-14);
- ``/preferences...`` (``preferences.py``) and ``/banner.js`` (``banner.py``) reuse the
  session, CSRF check, rate limiter and page rendering defined here.

A person sees only their own request: verifying the code puts the request id into a
signed session cookie (HMAC under the keyring's token key; HttpOnly, SameSite=Lax, Secure
over https), and status and download pages require it. Every POST form carries the
session's CSRF token, except the one-click unsubscribe, which mail clients send without
cookies: there the signed token itself is the proof. Code attempts are rate-limited per IP
(the desk also locks a code after its attempts). ``Sec-GPC: 1`` is honoured: the page says
so, and a verified requester matched to a subject is opted out of sale and sharing where
their jurisdiction gives GPC that effect (LAW-12).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select

from fiduciary.consent.ledger import UnknownSubject
from fiduciary.consent.signals import truncate_ip
from fiduciary.consent.tokens import BadToken, read_unsubscribe_token
from fiduciary.policy import compile_policy, load_policy_text
from fiduciary.policy.model import RequestType, Verification
from fiduciary.policy.render import (
    ArchivedVersion,
    _brand,
    country_name,
    format_date,
    humanise,
    purpose_name,
    render_notice_html,
)
from fiduciary.requests.lifecycle import (
    RECEIVED,
    VERIFIED,
    CodeExpired,
    CodeLocked,
    CodeRejected,
    RequestError,
    RequestInputError,
    RequestView,
    Submitted,
    UnknownRequest,
    VerificationFailed,
)
from fiduciary.store import tables as T
from fiduciary.web.deps import gpc, web_of
from fiduciary.web.state import WebState

# The request status page's path: mails sent by the request desk link to it when the
# server knows its public URL (create_app(public_url=...)).
STATUS_PATH: Final = "/requests/{request_id}"

router = APIRouter(include_in_schema=False, tags=["privacy center"])

COOKIE: Final = "fid_center"
_MAX_REQUESTS: Final = 20  # request ids one browser session remembers
_REQUEST_ID = re.compile(r"[A-Za-z0-9]{1,32}")
# Per-IP code attempts: enough for typos on a few requests, far too few to guess 10^6 codes.
CODE_ATTEMPTS_PER_IP: Final = 10
CODE_WINDOW_SECONDS: Final = 900.0

_env = Environment(
    loader=PackageLoader("fiduciary.web.center", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

TYPE_WORDS: Final[dict[str, str]] = {
    "access": "Get a copy of my data",
    "portability": "Get my data in a portable format",
    "rectify": "Correct my data",
    "erase": "Delete my data",
    "restrict": "Restrict how my data is used",
    "object": "Object to how my data is used",
    "withdraw_consent": "Withdraw my consent",
    "opt_out_of_sale": "Do not sell or share my data",
    "opt_out_of_marketing": "Stop marketing to me",
    "shine_the_light": "Tell me who receives my data for their own marketing",
    "close_account": "Close my account",
    "visibility": "Change who can see my information",
}
STATUS_WORDS: Final[dict[str, str]] = {
    "received": "Waiting for you to enter the code we emailed",
    "verified": "Confirmed — we are working on it",
    "approved": "Approved by our privacy team — we are working on it",
    "running": "In progress",
    "done": "Done",
    "partial": "Done in part — some data is kept because the law requires it",
    "denied": "Refused — see the email we sent you for the reason",
}
EVENT_WORDS: Final[dict[str, str]] = {
    "received": "We received your request.",
    "acknowledged": "We acknowledged your request.",
    "code_sent": "We emailed you a verification code.",
    "verification_failed": "A code that did not match was entered.",
    "code_locked": "The code stopped working after too many wrong attempts.",
    "verified": "You confirmed the request is yours.",
    "approved": "Our privacy team approved the request.",
    "denied": "Our privacy team refused the request.",
    "extended": "We extended the deadline, as the law allows, and told you why.",
    "running": "We started working on it.",
    "done": "Finished.",
    "partial": "Finished, in part.",
    "failed": "A step failed; our privacy team has been told and will retry.",
    "mailed": "We emailed you.",
    "contact_forgotten": "We deleted your contact details, as the request is closed.",
}


# ------------------------------------------------------------------------------ sessions
@dataclass
class Session:
    """What the browser's signed cookie holds: its CSRF token, the requests it verified and,
    for the preferences pages (``preferences.py``), a sign-in waiting for its code
    (``pending``) or the signed-in session (``sign_in``); both are ids of center_sign_ins rows."""

    csrf: str
    requests: list[str] = field(default_factory=list)
    changed: bool = False
    pending: str | None = None
    sign_in: str | None = None


def _key(web: WebState) -> bytes:
    # A key of its own, derived from the token key: a session MAC is never an unsubscribe MAC.
    return hmac.new(web.fid.keyring.token_key, b"fiduciary privacy-center session", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode(web: WebState, s: Session) -> str:
    data: dict[str, Any] = {"c": s.csrf, "r": s.requests}
    if s.pending:
        data["p"] = s.pending
    if s.sign_in:
        data["u"] = s.sign_in
    payload = json.dumps(data, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(hmac.new(_key(web), payload, hashlib.sha256).digest())}"


def _decode(web: WebState, value: str | None) -> Session | None:
    if not value or len(value) > 4096 or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except ValueError:
        return None
    if not hmac.compare_digest(given, hmac.new(_key(web), payload, hashlib.sha256).digest()):
        return None
    try:
        data = json.loads(payload)
        csrf, ids = str(data["c"]), [str(i) for i in data["r"]]
        pending, sign_in = data.get("p"), data.get("u")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return Session(
        csrf,
        ids,
        pending=pending if isinstance(pending, str) else None,
        sign_in=sign_in if isinstance(sign_in, str) else None,
    )


def session_of(request: Request) -> Session:
    s: Session | None = getattr(request.state, "center_session", None)
    if s is None:
        s = _decode(web_of(request), request.cookies.get(COOKIE))
        if s is None:
            s = Session(secrets.token_urlsafe(24), changed=True)
        request.state.center_session = s
    return s


def _save(request: Request, response: Response) -> Response:
    s: Session | None = getattr(request.state, "center_session", None)
    if s is not None and s.changed:
        response.set_cookie(
            COOKIE,
            _encode(web_of(request), s),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
    return response


def client_ip(request: Request) -> str | None:
    """The peer's IP address for a consent proof (the ledger truncates it), or None when the
    peer is no IP address (a test client, a Unix socket)."""
    host = request.client.host if request.client else None
    if not host:
        return None
    try:
        truncate_ip(host)
    except ValueError:
        return None
    return host


def _check_csrf(request: Request, token: str) -> Response | None:
    s = session_of(request)
    if not token or not hmac.compare_digest(token.encode(), s.csrf.encode()):
        return page(
            request,
            "error.html",
            status=403,
            title="This form has expired",
            message="The form was missing its security token or came from another page. "
            "Go back, reload the page and send it again.",
        )
    return None


# --------------------------------------------------------------------------- rate limit
class AttemptLimiter:
    """Attempts per key (the client's IP) in a sliding window, in this process's memory."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            q = self._seen.setdefault(key, deque())
            while q and now - q[0] > self.window:
                q.popleft()
            if len(q) >= self.limit:
                return False
            q.append(now)
            if len(self._seen) > 100_000:  # bound memory under a flood of addresses
                self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] <= self.window}
            return True


def limiter_of(request: Request) -> AttemptLimiter:
    lim: AttemptLimiter | None = getattr(request.app.state, "center_code_limiter", None)
    if lim is None:
        lim = AttemptLimiter(CODE_ATTEMPTS_PER_IP, CODE_WINDOW_SECONDS)
        request.app.state.center_code_limiter = lim
    return lim


# ---------------------------------------------------------------------------- rendering
def _org(web: WebState) -> dict[str, Any]:
    org = web.fid.policy.policy.organization
    accent, tint = _brand(org.color)
    return {"org": org, "accent": accent, "tint": tint}


def page(request: Request, template: str, *, status: int = 200, **ctx: Any) -> Response:
    web = web_of(request)
    s = session_of(request)
    html = _env.get_template(template).render(
        csrf=s.csrf, gpc=gpc(request), path=request.url.path, **_org(web), **ctx
    )
    headers = {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        # No script anywhere: pages work without it, and injected markup cannot run any.
        "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' https: data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    }
    return _save(request, HTMLResponse(html, status_code=status, headers=headers))


def _not_found(request: Request, what: str = "This page does not exist.") -> Response:
    return page(request, "error.html", status=404, title="Not found", message=what)


_GROUPS: Final = frozenset({"EU", "EEA"})  # not places a person lives: their countries are listed
_SUBDIVISIONS: Final[dict[str, str]] = {"US-CA": "California (United States)"}


def _regions(web: WebState) -> list[tuple[str, str]]:
    """(code, name) of every place the policy names, countries of groups expanded."""
    out = [
        (code, _SUBDIVISIONS.get(code, country_name(code)))
        for code in web.fid.policy.region_jurisdiction
        if code not in _GROUPS
    ]
    return sorted(out, key=lambda item: item[1])


# -------------------------------------------------------------------------------- pages
@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    return page(request, "home.html", title="Privacy center", changed=_announcement(web_of(request)))


def _announcement(web: WebState) -> dict[str, Any] | None:
    """The current version's material changes, announced on the home page when the policy
    announces changes in the privacy center (PUT-3: prominently; PLA-7)."""
    fid = web.fid
    cp = fid.policy
    changed = sorted(p for p, seq in fid.decider.material.items() if seq == fid.version_seq)
    if not changed or "privacy_center" not in cp.policy.changes.announce:
        return None
    return {
        "effective": format_date(cp.effective),
        "purposes": [purpose_name(cp, p) if p in cp.purposes else humanise(p) for p in changed],
        "ask": fid.decider.acceptance_needed,
    }


@router.get("/center.css")
def stylesheet(request: Request) -> Response:
    css = _env.get_template("center.css").render(**_org(web_of(request)))
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})


def _version_rows(web: WebState) -> list[Any]:
    pv = T.policy_versions.c
    cols = [pv.id, pv.version, pv.effective, pv.published_at, pv.material_purposes]
    with web.fid.data.connect() as conn:
        return list(conn.execute(select(*cols).order_by(pv.id.desc())))


def _notice(web: WebState, version_id: int) -> str | None:
    cached = web.notices.get((version_id, "center"))
    if cached is not None:
        return cached
    if version_id == web.fid.version_seq:
        cp = web.fid.policy
    else:
        with web.fid.data.connect() as conn:
            text = conn.execute(
                select(T.policy_versions.c.text).where(T.policy_versions.c.id == version_id)
            ).scalar()
        if text is None:
            return None
        cp = compile_policy(load_policy_text(text, f"<published version {version_id}>"))
    archive = [
        ArchivedVersion(
            version=r.version, url=f"/notice/versions/{r.id}", effective=date.fromisoformat(r.effective)
        )
        for r in _version_rows(web)
        if r.id != version_id
    ]
    out = render_notice_html(cp, archive=archive)
    web.notices[(version_id, "center")] = out
    return out


def _notice_response(html: str) -> Response:
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@router.get("/notice", response_class=HTMLResponse)
def notice(request: Request) -> Response:
    web = web_of(request)
    html = _notice(web, web.fid.version_seq)
    assert html is not None
    return _notice_response(html)


@router.get("/notice/versions", response_class=HTMLResponse)
def versions(request: Request) -> Response:
    web = web_of(request)
    cp = web.fid.policy
    rows = []
    for r in _version_rows(web):
        material = json.loads(r.material_purposes)
        rows.append(
            {
                "id": r.id,
                "version": r.version,
                "effective": format_date(date.fromisoformat(r.effective)),
                "current": r.id == web.fid.version_seq,
                "material": [purpose_name(cp, p) if p in cp.purposes else humanise(p) for p in material],
            }
        )
    changes = getattr(cp.policy, "changelog", None) or []
    return page(request, "versions.html", title="Earlier versions of the notice", rows=rows, changes=changes)


@router.get("/notice/versions/{version_id}", response_class=HTMLResponse)
def version_notice(request: Request, version_id: str) -> Response:
    if not version_id.isdigit() or len(version_id) > 18:
        return _not_found(request)
    html = _notice(web_of(request), int(version_id))
    return _notice_response(html) if html is not None else _not_found(request, "No such version.")


# ----------------------------------------------------------------------------- requests
def _types_for(web: WebState, region: str) -> tuple[str, list[tuple[str, str]]]:
    cp = web.fid.policy
    jkey = cp.jurisdiction_for(region or None)
    types = [t for t in RequestType if cp.right(jkey, t) is not None]
    return cp.jurisdictions[jkey].name, [(t.value, TYPE_WORDS.get(t.value, humanise(t.value))) for t in types]


@router.get("/requests/new", response_class=HTMLResponse)
def new_request(request: Request, region: Annotated[str, Query(max_length=16)] = "") -> Response:
    web = web_of(request)
    regions = _regions(web)
    region = region if region in {c for c, _ in regions} else ""
    law, types = _types_for(web, region)
    return page(
        request,
        "request_new.html",
        title="Make a request",
        regions=regions,
        region=region,
        chosen="region" in request.query_params,
        law=law,
        types=types,
        errors={},
        email="",
        type="",
    )


@router.post("/requests/new", response_class=HTMLResponse)
def submit_request(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    type: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    region: Annotated[str, Form()] = "",
) -> Response:
    refused = _check_csrf(request, csrf)
    if refused is not None:
        return refused
    web = web_of(request)
    regions = _regions(web)
    region = region if region in {c for c, _ in regions} else ""
    law, types = _types_for(web, region)
    errors: dict[str, str] = {}
    if type not in {t for t, _ in types}:
        errors["type"] = "Choose what you would like us to do."
    if not email.strip() or "@" not in email or len(email) > 254:
        errors["email"] = "Enter your email address, like name@example.com."
    if not errors:
        try:
            sub = web.desk.submit(type, contact={"email": email.strip()}, region=region or None)
        except RequestInputError as exc:
            errors["email" if "email" in str(exc) else "type"] = str(exc)
        else:
            return _after_submit(request, web, sub)
    return page(
        request,
        "request_new.html",
        status=422,
        title="Make a request",
        regions=regions,
        region=region,
        chosen=True,
        law=law,
        types=types,
        errors=errors,
        email=email,
        type=type,
    )


def _after_submit(request: Request, web: WebState, sub: Submitted) -> Response:
    """Where the person goes next: the code form; for a request the policy takes without
    verification (e.g. CCPA opt-out of sale), its status page; else a receipt."""
    rid = sub.request_id
    if sub.verification == Verification.email_code:
        return _save(request, RedirectResponse(f"/requests/{rid}/verify?sent=1", status_code=303))
    if sub.verification == Verification.none and sub.duplicate_of is None and sub.status == VERIFIED:
        # Submitting was all the proof the policy asks; a duplicate would be another's.
        _remember(request, rid)
        v = _view(request, rid)
        if v is not None:
            _honour_gpc(request, web, v)
        with contextlib.suppress(RequestError):
            web.runner().run([rid], actor="privacy_center")
        return _save(request, RedirectResponse(f"/requests/{rid}", status_code=303))
    return page(
        request,
        "error.html",
        title="We received your request",
        message=f"Your reference is {rid}. We will contact you to confirm your identity before we act "
        "on it, as the law requires for this kind of request.",
    )


def _remember(request: Request, request_id: str) -> None:
    s = session_of(request)
    s.requests = [*[r for r in s.requests if r != request_id][-(_MAX_REQUESTS - 1) :], request_id]
    s.changed = True


def _view(request: Request, request_id: str) -> RequestView | None:
    if not _REQUEST_ID.fullmatch(request_id):
        return None
    try:
        return web_of(request).desk.status(request_id, now=datetime.now(UTC))
    except UnknownRequest:
        return None


@router.get("/requests/{request_id}/verify", response_class=HTMLResponse)
def verify_form(request: Request, request_id: str, sent: str = "") -> Response:
    v = _view(request, request_id)
    if v is None:
        return _not_found(request, "We have no request with this reference.")
    if v.verification != Verification.email_code.value:
        return _not_found(request, "This request is not confirmed with an emailed code.")
    if v.status != RECEIVED:
        return _save(request, RedirectResponse(f"/requests/{request_id}", status_code=303))
    return page(
        request, "verify.html", title="Check your email", request_id=request_id, sent=bool(sent), error=""
    )


@router.post("/requests/{request_id}/verify", response_class=HTMLResponse)
def verify(
    request: Request, request_id: str, csrf: Annotated[str, Form()] = "", code: Annotated[str, Form()] = ""
) -> Response:
    refused = _check_csrf(request, csrf)
    if refused is not None:
        return refused
    v = _view(request, request_id)
    if v is None:
        return _not_found(request, "We have no request with this reference.")
    ip = request.client.host if request.client else "unknown"
    if not limiter_of(request).allow(ip):
        return page(
            request,
            "error.html",
            status=429,
            title="Too many attempts",
            message="Too many codes were entered from your network. Wait 15 minutes and try again.",
        )
    web = web_of(request)
    try:
        new = web.desk.verify_code(request_id, code, actor="subject")
    except (RequestInputError, CodeRejected, CodeExpired, CodeLocked, VerificationFailed) as exc:
        message = str(exc)
        if isinstance(exc, CodeExpired):
            message = "This code has expired. Make the request again to get a new one."
        elif isinstance(exc, CodeLocked):
            message = "Too many wrong codes: this code no longer works."
        return page(
            request,
            "verify.html",
            status=422,
            title="Check your email",
            request_id=request_id,
            sent=False,
            error=message,
        )
    except RequestError as exc:
        return page(
            request, "error.html", status=409, title="This request cannot be verified", message=str(exc)
        )
    _remember(request, request_id)
    _honour_gpc(request, web, v)
    if new == "verified":
        # Not startable (e.g. waiting for approval): the privacy team sees it in the queue
        # and the status page tells the person.
        with contextlib.suppress(RequestError):
            web.runner().run([request_id], actor="privacy_center")
    return _save(request, RedirectResponse(f"/requests/{request_id}", status_code=303))


def _honour_gpc(request: Request, web: WebState, v: RequestView) -> None:
    """A verified person whose browser sends GPC: opted out of sale and sharing (LAW-12)."""
    if not gpc(request) or not web.gpc_applies(v.jurisdiction):
        return
    sid = v.subject_id  # matched at submission from the vault's identities
    if sid is None:
        return
    with contextlib.suppress(UnknownSubject):
        web.fid.opt_out_of_sale(sid, channel="gpc_signal")


def _owned(request: Request, request_id: str) -> RequestView | Response:
    """The request if this browser verified it; else a refusal that says nothing of it."""
    if request_id not in session_of(request).requests:
        return page(
            request,
            "error.html",
            status=403,
            title="Open this page where you confirmed your request",
            message="For your privacy, a request's status is shown only in the browser where "
            "its code was entered.",
        )
    v = _view(request, request_id)
    return v if v is not None else _not_found(request)


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_status(request: Request, request_id: str) -> Response:
    v = _owned(request, request_id)
    if isinstance(v, Response):
        return v
    events = [
        {"at": e.at.strftime("%Y-%m-%d %H:%M UTC"), "text": EVENT_WORDS.get(e.kind, humanise(e.kind) + ".")}
        for e in v.events
    ]
    return page(
        request,
        "status.html",
        title=f"Request {v.id}",
        v=v,
        type_words=TYPE_WORDS.get(v.type, humanise(v.type)),
        status_words=STATUS_WORDS.get(v.status, humanise(v.status)),
        due=format_date(v.due_at.date()),
        closed=format_date(v.closed_at.date()) if v.closed_at else "",
        events=events,
        downloadable=v.status in ("done", "partial")
        and v.type in ("access", "portability", "shine_the_light"),
    )


@router.get("/requests/{request_id}/download")
def download(request: Request, request_id: str) -> Response:
    v = _owned(request, request_id)
    if isinstance(v, Response):
        return v
    from fiduciary.requests.runner import export_package

    web = web_of(request)
    try:
        data = export_package(web.fid, web.desk, request_id)
    except RequestError as exc:
        return page(request, "error.html", status=409, title="Nothing to download yet", message=str(exc))
    return Response(
        data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="request-{request_id}.zip"',
            "Cache-Control": "no-store",
        },
    )


# -------------------------------------------------------------------------- unsubscribe
def _bad_token(request: Request) -> Response:
    return page(
        request,
        "error.html",
        status=400,
        title="This unsubscribe link does not work",
        message="The link is incomplete, altered or too old. Use the link in a recent email, or "
        "write to us and we will unsubscribe you.",
    )


@router.get("/unsubscribe", response_class=HTMLResponse)
def unsubscribe_confirm(request: Request, token: Annotated[str, Query(max_length=512)] = "") -> Response:
    web = web_of(request)
    try:
        _, purpose = read_unsubscribe_token(web.fid.keyring, token)
    except BadToken:
        return _bad_token(request)
    what = purpose_name(web.fid.policy, purpose) if purpose in web.fid.policy.purposes else humanise(purpose)
    return page(request, "unsubscribe.html", title="Unsubscribe", token=token, what=what, done=False)


@router.post("/unsubscribe", response_class=HTMLResponse)
async def unsubscribe(request: Request, token: Annotated[str, Query(max_length=512)] = "") -> Response:
    # RFC 8058: the mail client POSTs "List-Unsubscribe=One-Click" to the URL carrying the
    # token, without cookies — so no CSRF token here: the signed token is the proof.
    form = await request.form()
    token = token or str(form.get("token", ""))
    if form.get("List-Unsubscribe") != "One-Click":
        return page(
            request, "error.html", status=400, title="Unsubscribe", message="Use the button to unsubscribe."
        )
    web = web_of(request)
    try:
        subject_id, purpose = read_unsubscribe_token(web.fid.keyring, token)
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(
            web.fid.consent.unsubscribe, web.fid.keyring, token, policy_version=web.fid.policy.version
        )
    except (BadToken, UnknownSubject):
        return _bad_token(request)
    web.forget(subject_id)
    what = purpose_name(web.fid.policy, purpose) if purpose in web.fid.policy.purposes else humanise(purpose)
    return page(request, "unsubscribe.html", title="You are unsubscribed", token="", what=what, done=True)
