"""The privacy center: the public's pages (server-rendered Jinja2, no JavaScript needed).

To come (issue 5, part 2): the notice with its archive and changelog; request submission,
the code check and the status page with the package download; preferences (marketing per
channel, cookies by category, do-not-sell/share, linked services, visibility); one-click
unsubscribe (GET confirm page, RFC 8058 POST); the consent banner script. Pages are added
to ``router`` in ``fiduciary.web.center.routes``; the app mounts it at the site root.
"""

from fiduciary.web.center.routes import STATUS_PATH, router

__all__ = ["STATUS_PATH", "router"]
