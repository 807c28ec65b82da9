"""The web adapter: the JSON API, the privacy center and the console (FastAPI).

``create_app(fid)`` builds the server. ``fiduciary.web.auth`` (API keys, console users)
imports no FastAPI, so the CLI can manage keys without loading the web stack; this
package therefore imports ``create_app`` on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app"]

if TYPE_CHECKING:
    from fiduciary.web.app import create_app


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from fiduciary.web.app import create_app

        return create_app
    raise AttributeError(f"module 'fiduciary.web' has no attribute {name!r}")
