"""Routes of the console, mounted at ``/console``.

Empty for now: the pages come with issue 5's console part. Each page checks the signed-in
user's role against ``fiduciary.web.auth.ROLE_SCOPES`` (the same scopes API keys carry),
and every action goes through the same library calls as the JSON API, audited with the
actor ``console:<username>``.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

PREFIX: Final = "/console"

router = APIRouter(prefix=PREFIX, include_in_schema=False, tags=["console"])
