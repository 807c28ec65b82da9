"""The console: the privacy team's pages (server-rendered, no script), mounted at
``/console``.

Sign-in with a console user's password (``fiduciary users create``); then, by role: the
request queue with deadline countdowns, a request's events and step log, approve, deny,
extend and run; the breach register with each breach's 72-hour clock, its drafted notices,
assess, notify and close (LAW-10); subject lookup for a purpose (audited); the data map;
audit search with the chain's status; metrics with charts and the LAW-13 CSV; the mail
outbox in demo mode. See docs/console.md.
"""

from fiduciary.web.console.routes import NAV, PAGES, PREFIX, router

__all__ = ["NAV", "PAGES", "PREFIX", "router"]
