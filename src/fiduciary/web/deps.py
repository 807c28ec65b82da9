"""What endpoints depend on: the caller (API key, the server's state, browser signals).

An endpoint that needs a key takes one parameter, ``caller: Annotated[Caller,
Depends(Access("<scope>"))]``: a single dependency that checks the key and scope and reads
``Sec-GPC``. FastAPI's per-request work grows with each dependency, and at thousands of
requests per second that is a measurable share; one node instead of three keeps it small.
``Access`` is an HTTPBearer, so the OpenAPI schema shows the security scheme.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from fiduciary.web.auth import SCOPES, ApiKey
from fiduciary.web.problems import ProblemException
from fiduciary.web.state import WebState

_REALM: Final = 'Bearer realm="fiduciary"'

# Documents Sec-GPC on the operations that honour it (openapi_extra=GPC_HEADER); the
# header itself is read by Access, without a dependency of its own.
GPC_HEADER: Final[dict[str, Any]] = {
    "parameters": [
        {
            "name": "Sec-GPC",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "Global Privacy Control: `1` opts the person out of sale and sharing "
            "where their jurisdiction gives it that effect (LAW-12).",
        }
    ]
}


def web_of(request: Request) -> WebState:
    web: WebState = request.app.state.web
    return web


# A coroutine: FastAPI runs plain functions in its thread pool, a hop that costs more than
# this does.
async def _web(request: Request) -> WebState:
    return web_of(request)


Web = Annotated[WebState, Depends(_web)]


def gpc(request: Request) -> bool:
    """True when the request carries ``Sec-GPC: 1`` (the only value the spec defines)."""
    return gpc_signal(request.headers.get("sec-gpc"))


def gpc_signal(value: str | None) -> bool:
    """True for a ``Sec-GPC`` header value of ``1``."""
    return value is not None and value.strip() == "1"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls (their key), the server's state, and whether the request carries GPC."""

    web: WebState
    key: ApiKey
    gpc: bool

    @property
    def actor(self) -> str:
        return self.key.actor


class Access(HTTPBearer):
    """A dependency: the caller, whose API key must carry ``scope`` (or ``admin``). 401
    without a valid key, 403 without the scope (RFC 6750's WWW-Authenticate)."""

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        super().__init__(
            auto_error=False,
            scheme_name="ApiKey",
            description="An API key: `Authorization: Bearer fid_<id>_<secret>` (`fiduciary keys create`).",
        )
        self.scope = scope

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        h = request.headers
        return caller_for(web_of(request), self.scope, h.get("authorization"), h.get("sec-gpc"))


def caller_for(web: WebState, scope: str, authorization: str | None, sec_gpc: str | None) -> Caller:
    """The caller whose ``Authorization`` header this is, if its key carries ``scope`` (or
    ``admin``): ProblemException 401 without a valid key, 403 without the scope (RFC 6750's
    WWW-Authenticate). Shared by ``Access`` and the fast path (``fiduciary.web.fastpath``)."""
    scheme, _, token = (authorization or "").partition(" ")
    if not authorization or scheme.lower() != "bearer" or not token.strip():
        raise ProblemException(
            401, "no API key: send Authorization: Bearer fid_...", headers={"WWW-Authenticate": _REALM}
        )
    # A dict lookup and a hash when cached; else a primary-key SELECT that takes no lock.
    key = web.keys.authenticate(token)
    if key is None:
        raise ProblemException(
            401,
            "the API key is not valid: unknown, revoked or mistyped",
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        )
    if not key.allows(scope):
        raise ProblemException(
            403,
            f"this API key lacks the scope {scope!r} ({SCOPES[scope]})",
            headers={"WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{scope}"'},
            required_scope=scope,
        )
    return Caller(web, key, gpc_signal(sec_gpc))


def access(scope: str) -> Any:
    """``Annotated[Caller, access("scope")]``."""
    return Depends(Access(scope))
