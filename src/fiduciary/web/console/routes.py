"""Routes of the console, mounted at ``/console``: the page modules assembled.

Every page checks the signed-in user's role against ``fiduciary.web.auth.ROLE_SCOPES``
(the scopes API keys carry) through ``base.gate``, and every action goes through the same
library calls as the JSON API, audited with the actor ``console:<username>``. A new page is
a module with a ``router`` listed in ``PAGES`` and one entry in ``base.NAV``.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from fiduciary.web.console import audit, breaches, datamap, metrics, outbox, requests, signin, subjects
from fiduciary.web.console.base import NAV, PREFIX, env, nav_for, org_context
from fiduciary.web.console.session import signed_in
from fiduciary.web.deps import web_of

__all__ = ["NAV", "PAGES", "PREFIX", "router"]

# Sign-in first, then the pages in the navigation's order.
PAGES = (signin, requests, breaches, subjects, datamap, audit, metrics, outbox)

router = APIRouter(prefix=PREFIX, include_in_schema=False, tags=["console"])

_CSS = files("fiduciary.web.console").joinpath("static", "console.css").read_text(encoding="utf-8")


@router.get("")
@router.get("/")
def home(request: Request) -> Response:
    """The first page the user's role opens (the queue, for every role today)."""
    signed = signed_in(request)
    if signed is None:
        return RedirectResponse(f"{PREFIX}/login", status_code=303)
    first = next(iter(nav_for(signed)), None)
    return RedirectResponse(f"{PREFIX}{first.path if first else '/login'}", status_code=303)


@router.get("/console.css")
def stylesheet(request: Request) -> Response:
    # The organisation's accent (darkened to reach WCAG AA) goes into the static sheet.
    css = env.from_string(_CSS).render(**org_context(web_of(request)))
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})


for module in PAGES:
    router.include_router(module.router)
