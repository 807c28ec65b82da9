"""The privacy center: the public's pages (server-rendered Jinja2, no JavaScript needed).

- ``routes``: the home page, the notice with its archive and changelog, requests (submit,
  code, status, download), one-click unsubscribe; the signed session cookie, CSRF, rate
  limits that the other modules reuse;
- ``preferences``: a signed-in person's choices (marketing per channel, cookies by
  category, do-not-sell/share, sharing, linked services, visibility) and the acceptance of
  a material policy change; ``signin`` holds its code-by-email sign-in;
- ``banner``: ``/banner.js`` and ``/banner.css``, the consent banner for the company's own
  sites (its choices are posted to ``POST /api/v1/banner/choices``).

The app mounts ``router`` at the site root.
"""

from fiduciary.web.center import banner, preferences
from fiduciary.web.center.routes import STATUS_PATH, router

router.include_router(preferences.router)
router.include_router(banner.router)

__all__ = ["STATUS_PATH", "router"]
