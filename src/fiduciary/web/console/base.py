"""What every console page shares: the navigation, rendering, and the role and CSRF gates.

**Adding a page** (e.g. the breaches register): a module with a ``router`` whose routes
start with ``gate(request, "<scope>")``, one ``NavItem`` in ``NAV`` below, and the module's
name in ``routes.PAGES``. The navigation shows a user only the pages their role's scopes
(``auth.ROLE_SCOPES``) open.
"""

from __future__ import annotations

import contextlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from fiduciary.mail import OutboxMailer
from fiduciary.policy.render import _brand
from fiduciary.requests.lifecycle import CLOSED, RequestView
from fiduciary.web.auth import SCOPES
from fiduciary.web.console.session import SignedIn, signed_in
from fiduciary.web.deps import web_of
from fiduciary.web.state import WebState

PREFIX: Final = "/console"
_ISO_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


@dataclass(frozen=True)
class NavItem:
    path: str  # under PREFIX
    label: str
    scope: str  # the scope a role needs to see the page
    shown: Callable[[WebState], bool] | None = None  # e.g. only with an outbox folder


def _has_outbox(web: WebState) -> bool:
    return isinstance(web.mailer, OutboxMailer)


# The navigation, in order: one place for every page.
NAV: Final[tuple[NavItem, ...]] = (
    NavItem("/requests", "Requests", "requests:read"),
    NavItem("/breaches", "Breaches", "breaches:read"),
    NavItem("/subjects", "Subject lookup", "subjects:read"),
    NavItem("/data-map", "Data map", "policy:read"),
    NavItem("/audit", "Audit trail", "audit:read"),
    NavItem("/metrics", "Metrics", "metrics:read"),
    NavItem("/outbox", "Mail outbox", "requests:write", _has_outbox),
)
assert all(item.scope in SCOPES for item in NAV)

env = Environment(
    loader=PackageLoader("fiduciary.web.console", "templates"),
    autoescape=select_autoescape(["html", "svg"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # No script anywhere, and nothing from elsewhere: the charts and the map are inline SVG.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}

STATUS_WORDS: Final[dict[str, str]] = {
    "received": "Received — waiting for the requester's code",
    "verified": "Verified",
    "approved": "Approved",
    "running": "Running",
    "done": "Done",
    "partial": "Done in part",
    "denied": "Denied",
}


def org_context(web: WebState) -> dict[str, Any]:
    org = web.fid.policy.policy.organization
    accent, tint = _brand(org.color)
    return {"org": org, "accent": accent, "tint": tint}


def nav_for(signed: SignedIn | None) -> list[NavItem]:
    if signed is None:
        return []
    return [i for i in NAV if signed.can(i.scope) and (i.shown is None or i.shown(signed.web))]


def page(
    request: Request,
    template: str,
    signed: SignedIn | None,
    *,
    status: int = 200,
    csrf: str | None = None,
    **ctx: Any,
) -> Response:
    """A console page: the template with the organisation, the user, their navigation and
    the CSRF token of their session (``csrf`` overrides it: the sign-in form's)."""
    web = web_of(request)
    html = env.get_template(template).render(
        prefix=PREFIX,
        path=request.url.path,
        me=signed.user if signed else None,
        nav=nav_for(signed),
        csrf=csrf if csrf is not None else (signed.csrf if signed else ""),
        status_words=STATUS_WORDS,
        words=words,
        policy_version=web.fid.policy.version,
        **org_context(web),
        **ctx,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def message(
    request: Request, signed: SignedIn | None, status: int, title: str, text: str, **ctx: Any
) -> Response:
    return page(request, "message.html", signed, status=status, title=title, message=text, **ctx)


def gate(request: Request, scope: str | None) -> SignedIn | Response:
    """The signed-in user if their role has ``scope`` (None: any role); else the sign-in
    page (303) or a refusal (403) to return instead."""
    signed = signed_in(request)
    if signed is None:
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        else:  # back to the page the form was on (its action's parent), not the action
            target = request.url.path.rsplit("/", 1)[0]
        return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)
    if scope is not None and not signed.can(scope):
        return message(
            request,
            signed,
            403,
            "Your role does not allow this",
            f"You are signed in as {signed.user.username} ({signed.user.role}). This needs the "
            f"permission to {SCOPES[scope]}; ask an administrator.",
        )
    return signed


def gate_form(request: Request, scope: str | None, csrf: str) -> SignedIn | Response:
    """``gate`` for a form post: also the session's CSRF token (403 when it does not match)."""
    signed = signed_in(request)
    if signed is not None and not (csrf and hmac.compare_digest(csrf.encode(), signed.csrf.encode())):
        return message(
            request,
            signed,
            403,
            "This form has expired",
            "The form was missing its security token or came from another page. Go back, "
            "reload the page and send it again.",
        )
    return gate(request, scope)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if (
        target
        and target.startswith(PREFIX + "/")
        and not target.startswith("//")
        and "\\" not in target
        and len(target) < 512
    ):
        return target
    return PREFIX + "/requests"


# -------------------------------------------------------------------------------- formats
def words(key: str) -> str:
    """An identifier as words for the team: ``opt_out_of_sale`` -> "Opt out of sale"."""
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def detail_text(detail: object) -> str:
    """An event's or audit entry's detail (JSON, no personal data) as one line."""
    if not isinstance(detail, dict):
        return "" if detail is None else str(detail)

    def one(v: object) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list | tuple):
            return ", ".join(one(x) for x in v) or "none"
        if isinstance(v, dict):
            return "{" + detail_text(v) + "}"
        if isinstance(v, str) and _ISO_TIME.match(v):
            # A due date or the like, stored as ISO: shown as every other time on the page.
            with contextlib.suppress(ValueError):
                at = datetime.fromisoformat(v)
                if at.tzinfo is not None:
                    return when(at)
        return "" if v is None else str(v)

    return "; ".join(f"{k}: {one(v)}" for k, v in detail.items())


def when(at: datetime | None) -> str:
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(at: datetime | date | None) -> str:
    if at is None:
        return ""
    if isinstance(at, datetime):
        at = at.astimezone(UTC).date()
    return at.isoformat()


@dataclass(frozen=True)
class Countdown:
    """Days until a request is due: business days where the policy counts them so."""

    days: int  # negative: overdue by that many
    business: bool
    closed: bool
    overdue: bool  # open and past its due moment (the desk's own flag)

    @property
    def soon(self) -> bool:
        return not self.closed and not self.overdue and self.days <= 3

    @property
    def text(self) -> str:
        if self.closed:
            return "closed"
        unit = "business day" if self.business else "day"
        n = abs(self.days)
        plural = "" if n == 1 else "s"
        if self.overdue:
            return f"overdue by {n} {unit}{plural}" if self.days < 0 else "overdue (was due today)"
        if self.days <= 0:
            return "due today"
        return f"{n} {unit}{plural} left"


def _business_days_between(start: date, end: date) -> int:
    """Weekdays after ``start`` up to and including ``end`` (negative when end < start)."""
    if end < start:
        return -_business_days_between(end, start)
    weeks, rest = divmod((end - start).days, 7)
    count = weeks * 5
    for i in range(1, rest + 1):
        if (start + timedelta(days=i)).weekday() < 5:
            count += 1
    return count


def countdown(web: WebState, v: RequestView, now: datetime) -> Countdown:
    """Days left for ``v``: counted in business days when the period the due date came from
    (the right's deadline, or its extension once taken) is written in business days."""
    right = web.fid.policy.right(v.jurisdiction, v.type)
    period = None
    if right is not None:
        period = right.extension if v.extended and right.extension is not None else right.deadline
    business = period is not None and any(unit == "business_day" for _, unit in period.parts)
    today, due = now.astimezone(UTC).date(), v.due_at.astimezone(UTC).date()
    days = _business_days_between(today, due) if business else (due - today).days
    return Countdown(days, business, v.status in CLOSED, v.overdue)
