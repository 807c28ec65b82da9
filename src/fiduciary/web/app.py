"""The web server: ``create_app(fid)`` -> a FastAPI application.

    fid = Fiduciary.open("policy.yaml")
    app = create_app(fid)            # uvicorn.run(app) — or `fiduciary serve`

Mounted:
- ``/api/v1`` — the JSON API (``fiduciary.web.api``), OpenAPI at ``/api/v1/openapi.json``
  and interactive docs at ``/api/v1/docs``; API keys with scopes;
- ``/`` — the privacy center (``fiduciary.web.center``), ``/console`` — the privacy
  team's console (``fiduciary.web.console``);
- ``/.well-known/gpc.json`` (Global Privacy Control support, LAW-12), ``/healthz``,
  ``/problems/<slug>`` (what each problem type means).

Every error is RFC 9457 problem+json (``fiduciary.web.problems``).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from fiduciary import __version__
from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.mail import Mailer
from fiduciary.web import api, center, console, problems
from fiduciary.web.fastpath import FastPath
from fiduciary.web.state import WebState

__all__ = ["app_from_environment", "create_app"]

PUBLIC_URL_ENV = "FIDUCIARY_PUBLIC_URL"


def create_app(
    fid: Fiduciary,
    *,
    settings: Settings | None = None,
    mailer: Mailer | None = None,
    public_url: str | None = None,
    key_cache_ttl: float = 1.0,
    runner: Any = None,
    owns_fiduciary: bool = False,
    fastpath: bool = True,
) -> FastAPI:
    """The server over ``fid``.

    ``settings``: FIDUCIARY_* settings (default: read from the environment): the mailer
    (SMTP when ``smtp_url`` is set, else .eml files in ``data_dir/outbox``), and the
    request runner's connections, webhooks and broker. ``mailer`` overrides the mailer.
    ``public_url``: where the privacy center is reached (links in mails). API keys are
    cached ``key_cache_ttl`` seconds per process (a key revoked elsewhere stops working
    within that). ``runner``: a RequestRunner to use instead of one built from settings.
    ``owns_fiduciary``: close ``fid`` when the app shuts down. ``fastpath``: serve decisions
    and consent writes through ``fiduciary.web.fastpath`` (same answers, a fraction of the
    framework's cost); off, FastAPI serves them too."""
    s = settings if settings is not None else Settings()
    m = mailer if mailer is not None else Mailer.from_settings(s)
    status_url = public_url.rstrip("/") + center.STATUS_PATH if public_url else None
    web = WebState(
        fid,
        s,
        m,
        status_url=status_url,
        key_cache_ttl=key_cache_ttl,
        runner=runner,
        owns_fiduciary=owns_fiduciary,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        web.start_retention()
        yield
        web.close()

    org = fid.policy.policy.organization
    app = FastAPI(
        title=f"{org.name} — Fiduciary API",
        version=__version__,
        description=(
            "Privacy promises as code: subjects, consent, decisions, rights requests, the "
            f"policy (version {fid.policy.version}), the audit trail and metrics. "
            "Authenticate with an API key: `Authorization: Bearer fid_...`. "
            "Errors are RFC 9457 problem details (`application/problem+json`)."
        ),
        openapi_url=f"{api.PREFIX}/openapi.json",
        docs_url=f"{api.PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.web = web
    problems.install(app)
    if fastpath:
        app.add_middleware(FastPath, web=web, handlers=app)
    app.include_router(api.router)
    app.include_router(console.router)
    app.include_router(center.router)

    @app.get("/.well-known/gpc.json", include_in_schema=False)
    async def gpc_support() -> dict[str, Any]:
        # GPC spec: the site honours the signal; lastUpdate is when that statement last
        # changed, which is when the policy in force took effect.
        return {"gpc": True, "lastUpdate": fid.policy.effective.isoformat()}

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "policy_version": fid.policy.version}

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error response documented as problem+json."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = problems.Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in problem.pop("$defs", {}).items():
        components[name] = definition
    components["Problem"] = problem
    # FastAPI's own validation error shapes are never sent: ours replace them.
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path in schema.get("paths", {}).values():
        for op in path.values():
            responses = op.setdefault("responses", {})
            for status in list(responses):
                if status.startswith(("4", "5")):
                    responses[status]["content"] = ref
            if op.get("security"):
                responses.setdefault("401", {"description": "No valid API key.", "content": ref})
                responses.setdefault("403", {"description": "The key lacks the scope.", "content": ref})
            responses.setdefault("4XX", {"description": "A client error (problem details).", "content": ref})
    app.openapi_schema = schema
    return schema


def app_from_environment() -> FastAPI:
    """The app ``fiduciary serve`` runs in each uvicorn worker: the policy and stores from
    FIDUCIARY_* settings (FIDUCIARY_POLICY names the policy.yaml)."""
    s = Settings()
    if s.policy is None:
        raise RuntimeError("FIDUCIARY_POLICY is not set: name the policy.yaml to serve")
    fid = Fiduciary.open(s.policy, settings=s)
    app = create_app(fid, settings=s, public_url=os.environ.get(PUBLIC_URL_ENV), owns_fiduciary=True)
    tune_process()
    return app


def tune_process() -> None:
    """Settings for a process that only serves (each uvicorn worker; not for library use):

    - the GIL is handed between threads every 1 ms instead of 5: the group-commit writer
      thread then gets it back promptly after each SQLite call (which releases it), instead
      of waiting out the event loop's 5 ms slices with requests queued behind it;
    - objects made at start-up (policy, compiled tables, the framework's) are frozen out of
      the garbage collector's full scans, which otherwise add tens of ms to some requests.
    """
    sys.setswitchinterval(0.001)
    gc.freeze()
