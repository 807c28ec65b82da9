"""The JSON API, ``/api/v1``: one router per room, assembled here.

A new room adds a module with a ``router`` and one line below. Every endpoint but the
public notice and version list needs an API key with the scope it names.
"""

from __future__ import annotations

from fastapi import APIRouter

from fiduciary.web.api import admin, audit, consent, decisions, metrics, policy, requests, subjects

PREFIX = "/api/v1"

router = APIRouter(prefix=PREFIX)
# Routes are matched in order: the busiest (decisions, consent) first.
for module in (decisions, consent, subjects, requests, policy, audit, metrics, admin):
    router.include_router(module.router)

__all__ = ["PREFIX", "router"]
