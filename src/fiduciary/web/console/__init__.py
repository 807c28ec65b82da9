"""The console: the privacy team's pages (server-rendered), mounted at ``/console``.

To come (issue 5, part 3): the request queue with deadline countdown and overdue
highlighting; approve or deny with a reason; request detail with its step log; subject
lookup (purpose required, audited); the data map; audit search with chain status;
metrics with charts and the LAW-13 CSV; the mail outbox in demo mode. Users sign in with
``fiduciary.web.auth.verify_password``; a role's powers are ``auth.ROLE_SCOPES``.
"""

from fiduciary.web.console.routes import PREFIX, router

__all__ = ["PREFIX", "router"]
