"""Errors as RFC 9457 problem details (``application/problem+json``), everywhere.

Every error the server answers is one JSON object: ``type`` (a URI naming the kind of
problem; ``/problems/<slug>`` on this server explains it), ``title`` (the kind, the same for
every occurrence), ``status``, ``detail`` (this occurrence, in words a client developer can
act on) and ``instance`` (the path that failed). Validation problems add ``errors``: one
entry per field, with where it was (``location``: body, query, path, header, cookie), the
field (``field``; ``pointer``, a JSON pointer into the body; or ``parameter``) and what is
wrong with it.

Our own exceptions map to 4xx by class (the most derived class listed wins), so a bad
subject id, a refused transition or an under-age sign-up is a clear client error and never
a 500. Anything unforeseen is logged with its traceback on the server and answered as a
500 problem that carries no internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from fiduciary.aggregates import AggregateError, AggregateRefused
from fiduciary.breaches import BreachError, BreachInputError, UnknownBreach
from fiduciary.consent.ledger import ConsentError, UnknownEvent
from fiduciary.consent.ledger import UnknownSubject as UnknownConsentSubject
from fiduciary.consent.tokens import BadToken
from fiduciary.core import UnderAge
from fiduciary.disclosures import DisclosureError, DisclosureRefused, UnknownDisclosure
from fiduciary.mail import MailError, MailInputError
from fiduciary.policy import PolicyError
from fiduciary.requests.lifecycle import (
    CodeExpired,
    CodeLocked,
    CodeRejected,
    ContactForgotten,
    InvalidTransition,
    RequestError,
    RequestInputError,
    RightNotGiven,
    TooManyCodes,
    UnknownRequest,
    VerificationFailed,
    VerificationLocked,
)
from fiduciary.vault.crypto import ValueEncodingError
from fiduciary.vault.normalize import IdentityError
from fiduciary.vault.vault import (
    DuplicateIdentity,
    MissingMandatory,
    SubjectErased,
    VaultError,
    VaultInputError,
)
from fiduciary.vault.vault import UnknownSubject as UnknownVaultSubject
from fiduciary.web.auth import AuthInputError, UnknownApiKey, UnknownUser

log = logging.getLogger("fiduciary.web")

PROBLEM_JSON: Final = "application/problem+json"
PROBLEM_BASE: Final = "/problems/"


class FieldError(BaseModel):
    """One field that failed validation."""

    location: str = Field(description="body, query, path, header or cookie")
    field: str = Field(description="the field, dotted (contact.email, items.3.purpose)")
    pointer: str | None = Field(
        None, description="JSON pointer into the body (RFC 6901), e.g. #/contact/email"
    )
    parameter: str | None = Field(None, description="the query, path, header or cookie parameter")
    detail: str
    type: str = Field(description="the kind of failure (pydantic's error type)")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


@dataclass(frozen=True)
class Kind:
    """A kind of problem: its HTTP status, slug (``/problems/<slug>``), title and what a
    client should do about it."""

    status: int
    slug: str
    title: str
    explanation: str


KINDS: Final[Mapping[type[Exception], Kind]] = {
    # Input
    UnderAge: Kind(
        422,
        "under-age",
        "Below the minimum age",
        "The person is below the policy's minimum age for their jurisdiction (PUT-2). Nothing "
        "about them was stored.",
    ),
    VaultInputError: Kind(
        422,
        "invalid-subject-data",
        "Invalid subject data",
        "An identity, attribute, activity or category does not fit the policy. Nothing was stored.",
    ),
    MissingMandatory: Kind(
        422,
        "missing-mandatory-data",
        "Mandatory data missing",
        "The activity needs data that was not given (the policy lists it as mandatory).",
    ),
    DuplicateIdentity: Kind(
        409,
        "duplicate-identity",
        "Identity already taken",
        "Another subject already has this identity (email, phone number, user id).",
    ),
    IdentityError: Kind(
        422,
        "invalid-identity",
        "Invalid identity",
        "An email address, phone number or other identity is not valid.",
    ),
    ValueEncodingError: Kind(
        422, "invalid-value", "Value cannot be stored", "A value is not plain JSON data."
    ),
    ConsentError: Kind(
        422,
        "invalid-choice",
        "Choice refused",
        "The consent event does not fit the policy (unknown purpose, a purpose that cannot be "
        "objected to, a setting the policy does not offer ...). Nothing was written.",
    ),
    BadToken: Kind(422, "bad-token", "Bad token", "The token is malformed, forged or expired."),
    RequestInputError: Kind(
        422,
        "invalid-request",
        "Invalid rights request",
        "The rights request is incomplete or does not fit the policy. Nothing was stored.",
    ),
    RightNotGiven: Kind(
        422,
        "right-not-given",
        "Right not given here",
        "The requester's jurisdiction does not give this right; the detail lists those it does.",
    ),
    AuthInputError: Kind(
        422,
        "invalid-access-input",
        "Invalid key or user input",
        "A key name, scope, role, username or password was refused. Nothing was stored.",
    ),
    MailInputError: Kind(422, "invalid-mail", "Invalid mail", "A mail could not be built."),
    PolicyError: Kind(
        422, "invalid-policy", "Invalid policy", "The policy has errors; each problem is listed."
    ),
    DisclosureError: Kind(
        422,
        "invalid-disclosure",
        "Invalid disclosure",
        "The disclosure does not fit the policy (unknown recipient, purpose, category or subject, "
        "a legal demand to a recipient not declared for one ...). Nothing was recorded.",
    ),
    DisclosureRefused: Kind(
        409,
        "disclosure-refused",
        "Disclosure refused by the policy",
        "The policy does not let this recipient have this data of these people (an opt-out, a "
        "withdrawn consent, an aggregate-only recipient ...); ``refused`` lists each. Nothing was recorded.",
    ),
    AggregateError: Kind(
        422,
        "invalid-aggregate",
        "Invalid aggregate export",
        "The rows, columns or keys of the export are not usable. Nothing was exported.",
    ),
    AggregateRefused: Kind(
        409,
        "aggregate-refused",
        "Aggregate export refused by the policy",
        "Aggregates go only to recipients declared aggregate-only, for their purposes and categories.",
    ),
    BreachInputError: Kind(
        422,
        "invalid-breach",
        "Invalid breach register input",
        "A text, number, date, category or subject was refused (texts must hold no personal data). "
        "Nothing changed.",
    ),
    BreachError: Kind(
        409,
        "breach-step-refused",
        "Breach register step refused",
        "The input or the breach's state does not allow this step (a late notification without "
        "reasons, a notice before the assessment, a closed breach ...). Nothing changed.",
    ),
    # Not found / gone
    UnknownDisclosure: Kind(404, "unknown-disclosure", "Unknown disclosure", "No disclosure has this id."),
    UnknownBreach: Kind(404, "unknown-breach", "Unknown breach", "No breach has this id."),
    UnknownVaultSubject: Kind(404, "unknown-subject", "Unknown subject", "No subject has this id."),
    UnknownConsentSubject: Kind(404, "unknown-subject", "Unknown subject", "No subject has this id."),
    UnknownEvent: Kind(404, "unknown-event", "Unknown consent event", "No consent event has this id."),
    UnknownRequest: Kind(404, "unknown-request", "Unknown rights request", "No request has this id."),
    UnknownApiKey: Kind(404, "unknown-api-key", "Unknown API key", "No API key has this id."),
    UnknownUser: Kind(404, "unknown-user", "Unknown console user", "No console user has this name."),
    SubjectErased: Kind(
        410,
        "subject-erased",
        "Subject erased",
        "The subject's data was erased (crypto-shredded); it can no longer be read.",
    ),
    ContactForgotten: Kind(
        410,
        "contact-forgotten",
        "Requester details destroyed",
        "The requester's details were destroyed when the request record's retention ended.",
    ),
    # State
    InvalidTransition: Kind(
        409,
        "invalid-transition",
        "Not allowed in the request's current status",
        "The request's status does not allow this step; nothing changed.",
    ),
    VerificationFailed: Kind(
        422,
        "verification-failed",
        "Verification failed",
        "The requester could not be verified with what was given.",
    ),
    CodeRejected: Kind(
        422,
        "code-rejected",
        "Wrong code",
        "The code is not right; the detail says how many attempts are left.",
    ),
    CodeExpired: Kind(422, "code-expired", "Code expired", "The code has expired: ask for a new one."),
    CodeLocked: Kind(
        422, "code-locked", "Code locked", "Too many wrong attempts for this code: ask for a new one."
    ),
    VerificationLocked: Kind(
        422,
        "verification-locked",
        "Verification locked",
        "Too many failed attempts: the request can no longer be verified; it can only be denied.",
    ),
    TooManyCodes: Kind(
        429, "too-many-codes", "Too many codes", "The limit of codes for this request was reached."
    ),
    RequestError: Kind(409, "request-refused", "Rights request step refused", "The step was refused."),
    VaultError: Kind(409, "vault-refused", "Refused by the vault", "The vault refused the operation."),
    MailError: Kind(502, "mail-failed", "Mail not sent", "The mail server did not accept the message."),
}

# Kinds of the framework's own errors, by status.
_VALIDATION = Kind(
    422,
    "validation",
    "Invalid input",
    "Some fields of the request are missing or malformed; ``errors`` lists each with its location.",
)
_INTERNAL = Kind(
    500,
    "internal",
    "Internal server error",
    "Something failed on the server. It was logged; the request may not have taken effect.",
)
_AUTH = Kind(
    401,
    "unauthenticated",
    "Authentication required",
    "Send an API key: ``Authorization: Bearer fid_...``. Keys are created with ``fiduciary keys create``.",
)
_SCOPE = Kind(
    403,
    "insufficient-scope",
    "Scope missing",
    "The API key does not carry the scope this operation needs; the detail names it.",
)
STATUS_KINDS: Final[Mapping[int, Kind]] = {401: _AUTH, 403: _SCOPE, 422: _VALIDATION, 500: _INTERNAL}


def kinds_by_slug() -> dict[str, Kind]:
    out = {k.slug: k for k in KINDS.values()}
    out.update({k.slug: k for k in STATUS_KINDS.values()})
    return out


def kind_of(exc: BaseException) -> Kind | None:
    for cls in type(exc).__mro__:
        kind = KINDS.get(cls)
        if kind is not None:
            return kind
    return None


class ProblemException(Exception):
    """Raise from an endpoint to answer with a problem (e.g. 422 with field errors)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: Kind | None = None,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind or STATUS_KINDS.get(status)
        self.errors = list(errors) if errors else None
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    detail: str | None,
    *,
    kind: Kind | None = None,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The one place a problem becomes a response. (The privacy center and the console may
    later answer browsers with an HTML page here, keyed on the path or Accept header.)"""
    if kind is not None:
        type_, title = PROBLEM_BASE + kind.slug, kind.title
    else:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
        type_ = "about:blank"
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    if errors:
        body["errors"] = [e.model_dump(exclude_none=True) for e in errors]
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=dict(headers or {}))


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    out: list[FieldError] = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ())]
        where = loc[0] if loc else "body"
        rest = loc[1:] if where in ("body", "query", "path", "header", "cookie") else loc
        field = ".".join(rest)
        fe = FieldError(
            location=where,
            field=field,
            detail=str(e.get("msg", "invalid")),
            type=str(e.get("type", "invalid")),
        )
        if where == "body":
            fe.pointer = "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in rest)
        elif rest:
            fe.parameter = rest[0]
        out.append(fe)
    return out


def _summary(errors: Sequence[FieldError]) -> str:
    first = errors[0] if errors else None
    if first is None:
        return "the request is not valid"
    where = f"{first.location} {first.field}".strip() if first.field else first.location
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.detail}{more}"


def install(app: FastAPI) -> None:
    """Answer every error as problem+json, and explain each problem type at its URI."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _field_errors(exc)
        return problem_response(request, 422, _summary(errors), kind=_VALIDATION, errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = STATUS_KINDS.get(exc.status_code)
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(request, exc.status_code, detail, kind=kind, headers=exc.headers)

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemException)
        return problem_response(
            request,
            exc.status,
            exc.detail,
            kind=exc.kind,
            errors=exc.errors,
            headers=exc.headers,
            extra=exc.extra,
        )

    async def on_domain(request: Request, exc: Exception) -> JSONResponse:
        kind = kind_of(exc)
        if kind is None:  # pragma: no cover - registered for the classes of KINDS only
            return await on_internal(request, exc)
        extra: dict[str, Any] = {}
        if isinstance(exc, PolicyError):
            extra["problems"] = [p.to_dict() for p in exc.errors]
        if isinstance(exc, CodeRejected):
            extra["attempts_left"] = exc.attempts_left
        if isinstance(exc, RightNotGiven):
            extra["available"] = list(exc.available)
        if isinstance(exc, UnderAge):
            extra["minimum_age"] = exc.minimum
        if isinstance(exc, DisclosureRefused):
            extra["refused"] = {sid: r.value for sid, r in sorted(exc.refused.items())[:100]}
        headers = {"Retry-After": "3600"} if isinstance(exc, TooManyCodes) else None
        return problem_response(request, kind.status, str(exc), kind=kind, headers=headers, extra=extra)

    async def on_internal(request: Request, exc: Exception) -> JSONResponse:
        # The server's log gets the traceback (Starlette re-raises after this response);
        # the client gets nothing of the internals.
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return problem_response(request, 500, "the server failed to handle the request", kind=_INTERNAL)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(ProblemException, on_problem)
    # Starlette finds a handler by walking the exception's classes, most derived first,
    # so each domain error gets its own kind.
    for cls in KINDS:
        app.add_exception_handler(cls, on_domain)
    app.add_exception_handler(Exception, on_internal)

    slugs = kinds_by_slug()

    @app.get("/problems/{slug}", include_in_schema=False)
    async def explain(slug: str) -> HTMLResponse:
        kind = slugs.get(slug)
        if kind is None:
            return HTMLResponse(
                "<!doctype html><title>Unknown problem type</title><p>Unknown problem type.</p>", 404
            )
        from html import escape

        return HTMLResponse(
            "<!doctype html><html lang=en><meta charset=utf-8>"
            f"<title>{escape(kind.title)}</title><h1>{escape(kind.title)}</h1>"
            f"<p>HTTP status {kind.status}.</p><p>{escape(kind.explanation)}</p></html>"
        )
