"""The fast path: the busiest API operations served without the framework's per-request work.

``POST /api/v1/decisions`` and the consent writes (``POST /api/v1/subjects/{id}/consent/
give|withdraw|object|restrict|opt-out-of-sale|settings``) are what a company's systems
call on every page view and every ticked box. Through FastAPI each costs several hundred
microseconds before our code runs (route matching through the included routers, the
dependency solver, request and response objects); here, in front of FastAPI as an ASGI
middleware, a well-formed call costs a dict lookup, a JSON parse and one pydantic
validation, and runs the very same functions the FastAPI endpoints run
(``decisions.decide_one``, ``consent.record_choice``), with the same API key check
(``deps.caller_for``).

The FastAPI routes stay the definition of these operations (OpenAPI, docs/api.md) and
their fallback. Anything the fast path does not handle itself goes to them unchanged, the
body replayed: a body that does not validate (so the 422 names each field exactly as
FastAPI words it), a content type other than JSON, a body without a length or over
``MAX_BODY``, an id that does not match the path's pattern. Errors raised by the shared
functions (401, 403, an unknown subject ...) are answered by the app's own exception
handlers, so a problem+json is the same whichever path answered it. tests/
test_web_fastpath.py sends the same calls, good and bad, to an app with and one without
the fast path and compares the answers and what was stored.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fiduciary.web.api import PREFIX
from fiduciary.web.api.consent import CHOICES, record_choice
from fiduciary.web.api.decisions import decide_one
from fiduciary.web.api.models import SUBJECT_ID_PATTERN, DecisionIn
from fiduciary.web.deps import Caller, caller_for
from fiduciary.web.state import WebState

__all__ = ["MAX_BODY", "FastPath"]

log = logging.getLogger("fiduciary.web")

# Bodies of these operations are a few hundred bytes; a notice text may make one ~20 KB.
MAX_BODY: Final = 64 * 1024

_SUBJECT = SUBJECT_ID_PATTERN.strip("^$")
_CONSENT = re.compile(re.escape(PREFIX) + rf"/subjects/(?P<sid>{_SUBJECT})/consent/(?P<choice>[a-z-]+)")
_JSON: Final = b"application/json"


@dataclass(frozen=True, slots=True)
class _Operation:
    scope: str
    model: type[BaseModel]
    status: int
    run: Callable[[Caller, Any], Awaitable[BaseModel]]


class FastPath:
    """ASGI middleware (``app.add_middleware(FastPath, web=..., handlers=...)``).

    ``handlers``: where the app's exception handlers are looked up (the FastAPI app: its
    ``exception_handlers``), read at each error so handlers added later count."""

    def __init__(self, app: ASGIApp, *, web: WebState, handlers: Any) -> None:
        self.app = app
        self.web = web
        self._handlers = handlers
        self._decide = _Operation("decisions", DecisionIn, 200, decide_one)
        # Calls answered here, and calls for these operations handed over to FastAPI.
        self.served = 0
        self.handed_over = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        op = self._route(path)
        if op is None:
            await self.app(scope, receive, send)
            return
        await self._serve(op, scope, receive, send)

    def _route(self, path: str) -> _Operation | None:
        if path == PREFIX + "/decisions":
            return self._decide
        m = _CONSENT.fullmatch(path) if path.startswith(PREFIX + "/subjects/") else None
        if m is None:
            return None
        found = CHOICES.get(m["choice"])
        if found is None:
            return None
        model, _ = found
        sid, choice = m["sid"], m["choice"]

        async def run(caller: Caller, body: Any) -> BaseModel:
            return await record_choice(caller, sid, choice, body)

        return _Operation("consent:write", model, 201, run)

    async def _serve(self, op: _Operation, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        length = headers.get(b"content-length")
        media = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        if media != _JSON or length is None or not length.isdigit() or int(length) > MAX_BODY:
            self.handed_over += 1
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        if raw is None:  # the client left
            return
        try:
            auth = headers.get(b"authorization")
            gpc = headers.get(b"sec-gpc")
            caller = caller_for(
                self.web,
                op.scope,
                auth.decode("latin-1") if auth is not None else None,
                gpc.decode("latin-1") if gpc is not None else None,
            )
            try:
                body = op.model.model_validate(json.loads(raw))
            except (ValueError, ValidationError):  # JSONDecodeError is a ValueError
                self.handed_over += 1
                await self.app(scope, _replay(raw, receive), send)
                return
            out = await op.run(caller, body)
        except Exception as exc:
            self.served += 1
            await self._answer_error(exc, scope, receive, send)
            return
        self.served += 1
        payload = out.model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": op.status,
                "headers": [(b"content-type", _JSON), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _answer_error(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        """The app's own handler for ``exc`` answers, as it would have behind FastAPI."""
        handlers: dict[Any, Any] = self._handlers.exception_handlers
        cls = next((c for c in type(exc).__mro__ if c in handlers), None)
        if cls is None:
            raise exc
        response = await handlers[cls](Request(scope, receive), exc)
        await response(scope, receive, send)
        if cls is Exception:
            # An unexpected error: answered, then re-raised so that the server logs its
            # traceback, as Starlette's ServerErrorMiddleware does.
            raise exc


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by lower-cased name; the first of repeated ones, as
    Starlette's ``Headers.get`` answers."""
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        out.setdefault(name.lower(), value)
    return out


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """A receive that gives ``raw`` as the whole body once, then defers to ``receive``."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replayed
