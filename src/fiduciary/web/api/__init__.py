"""The JSON API, ``/api/v1``: one router per room, assembled here.

A new room adds a module with a ``router`` and one line below. Every endpoint needs an
API key with the scope it names, except four public ones: the notice, the version list
and an earlier version's notice (``policy``), and the consent banner's
``POST /banner/choices`` (``consent``; CORS from ``banner_origins``, rate-limited per IP).
docs/api.md lists every route with its scope.
"""

from __future__ import annotations

from fastapi import APIRouter

from fiduciary.web.api import admin, audit, consent, decisions, ledgers, metrics, policy, requests, subjects

PREFIX = "/api/v1"

router = APIRouter(prefix=PREFIX)
# Routes are matched in order: the busiest (decisions, consent) first.
for module in (decisions, consent, subjects, requests, policy, audit, metrics, admin, ledgers):
    router.include_router(module.router)

__all__ = ["PREFIX", "router"]
