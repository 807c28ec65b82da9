"""Console sign-in: sessions, their cookie, CSRF tokens and the login rate limit.

A session is a row in ``console_sessions`` named by SHA-256 of a random 256-bit token; the
browser holds the token in a cookie signed with HMAC under a key derived from the keyring's
token key (as the privacy center signs its cookie), HttpOnly, SameSite=Strict, limited to
``/console`` and Secure over https. Every page reads the row together with its user, so
signing out, disabling the user or changing the password ends the session at once.

CSRF: a signed-in form carries HMAC(key, token), bound to the session (a token planted
from another site could not match it); the sign-in form, before any session exists, carries
the privacy center's session token (``center.routes.session_of``).

Login attempts are limited per client IP and per username with the center's
``AttemptLimiter`` (a sliding window, in each worker process's memory).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import Engine, and_, delete, insert, or_, select, update

from fiduciary.store import tables as T
from fiduciary.web.auth import ConsoleUser
from fiduciary.web.center.routes import AttemptLimiter, _b64, _unb64
from fiduciary.web.deps import web_of
from fiduciary.web.state import WebState

COOKIE: Final = "fid_console"
COOKIE_PATH: Final = "/console"
SESSION_HOURS: Final = 8  # a working day; then the password again
# Per IP: a team behind one NAT signing in, with typos. Per username: far too few to guess
# a 12+ character password, and a lock-out lasts one window only.
LOGIN_ATTEMPTS_PER_IP: Final = 20
LOGIN_ATTEMPTS_PER_USER: Final = 5
LOGIN_WINDOW_SECONDS: Final = 900.0


@dataclass(frozen=True)
class SignedIn:
    """The signed-in user of a request, their session token and its CSRF token."""

    web: WebState
    user: ConsoleUser
    token: str
    csrf: str

    @property
    def actor(self) -> str:
        return self.user.actor

    def can(self, scope: str) -> bool:
        return scope in self.user.scopes


def _key(web: WebState) -> bytes:
    # Its own key: a console cookie's MAC is never a center cookie's or an unsubscribe link's.
    return hmac.new(web.fid.keyring.token_key, b"fiduciary console session", hashlib.sha256).digest()


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def csrf_for(web: WebState, token: str) -> str:
    return _b64(hmac.new(_key(web), b"csrf\x00" + token.encode("ascii"), hashlib.sha256).digest())


def _cookie_value(web: WebState, token: str) -> str:
    mac = hmac.new(_key(web), token.encode("ascii"), hashlib.sha256).digest()
    return f"{token}.{_b64(mac)}"


def _token_of(web: WebState, value: str | None) -> str | None:
    if not value or len(value) > 256 or value.count(".") != 1:
        return None
    token, mac = value.split(".")
    try:
        given = _unb64(mac)
        raw = token.encode("ascii")
    except (ValueError, UnicodeEncodeError):
        return None
    if not hmac.compare_digest(given, hmac.new(_key(web), raw, hashlib.sha256).digest()):
        return None
    return token


def _stored(engine: Engine, at: datetime) -> datetime:
    # SQLite keeps times as naive UTC text: compare like with like there.
    return at.replace(tzinfo=None) if engine.dialect.name == "sqlite" else at


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _user(row: Any) -> ConsoleUser:
    created, changed = _utc(row.created_at), _utc(row.password_changed_at)
    assert created is not None and changed is not None
    return ConsoleUser(
        id=row.id,
        username=row.username,
        role=row.role,
        created_at=created,
        created_by=row.created_by,
        password_changed_at=changed,
        last_login_at=_utc(row.last_login_at),
        disabled_at=_utc(row.disabled_at),
    )


# ------------------------------------------------------------------------------ sessions
def start(web: WebState, user: ConsoleUser, *, now: datetime | None = None) -> str:
    """A new session for ``user`` (audited); returns the token for the cookie. Ended and
    expired sessions are swept in the same transaction (one DELETE)."""
    at = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    s = T.console_sessions.c
    data = web.fid.data
    with data.begin() as conn:
        conn.execute(
            delete(T.console_sessions).where(or_(s.expires_at < _stored(data, at), s.ended_at.is_not(None)))
        )
        conn.execute(
            insert(T.console_sessions).values(
                id=_session_id(token),
                user_id=user.id,
                created_at=at,
                expires_at=at + timedelta(hours=SESSION_HOURS),
            )
        )
        web.fid.audit.append(conn, actor=user.actor, action="console.signed_in", detail={"role": user.role})
    return token


def end(signed: SignedIn, *, now: datetime | None = None) -> None:
    """End the session (audited): its cookie opens nothing any more."""
    at = now or datetime.now(UTC)
    s = T.console_sessions.c
    with signed.web.fid.data.begin() as conn:
        conn.execute(
            update(T.console_sessions)
            .where(s.id == _session_id(signed.token), s.ended_at.is_(None))
            .values(ended_at=at)
        )
        signed.web.fid.audit.append(conn, actor=signed.actor, action="console.signed_out")


def signed_in(request: Request) -> SignedIn | None:
    """The request's signed-in user: a valid cookie naming a live session of an enabled
    user whose password has not changed since. One SELECT; None otherwise."""
    cached: SignedIn | None = getattr(request.state, "console_user", None)
    if cached is not None:
        return cached
    web = web_of(request)
    token = _token_of(web, request.cookies.get(COOKIE))
    if token is None:
        return None
    data = web.fid.data
    s, u = T.console_sessions.c, T.console_users.c
    now = _stored(data, datetime.now(UTC))
    q = (
        select(T.console_users)
        .select_from(T.console_sessions.join(T.console_users, u.id == s.user_id))
        .where(
            and_(
                s.id == _session_id(token),
                s.ended_at.is_(None),
                s.expires_at > now,
                u.disabled_at.is_(None),
                u.password_changed_at <= s.created_at,
            )
        )
    )
    with data.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    found = SignedIn(web, _user(row), token, csrf_for(web, token))
    request.state.console_user = found
    return found


def set_cookie(request: Request, response: Response, web: WebState, token: str) -> None:
    response.set_cookie(
        COOKIE,
        _cookie_value(web, token),
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=COOKIE_PATH,
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


# --------------------------------------------------------------------------- rate limit
@dataclass
class LoginLimits:
    by_ip: AttemptLimiter
    by_user: AttemptLimiter
    # When each client IP's refusal was last audited: one entry per IP and window, so a
    # flood of attempts cannot flood the audit trail too.
    noted: dict[str, float] = field(default_factory=dict)

    def first_refusal(self, ip: str) -> bool:
        now = time.monotonic()
        last = self.noted.get(ip)
        if last is not None and now - last < LOGIN_WINDOW_SECONDS:
            return False
        if len(self.noted) > 10_000:
            self.noted = {k: v for k, v in self.noted.items() if now - v < LOGIN_WINDOW_SECONDS}
        self.noted[ip] = now
        return True


def limits_of(request: Request) -> LoginLimits:
    found: LoginLimits | None = getattr(request.app.state, "console_login_limits", None)
    if found is None:
        found = LoginLimits(
            AttemptLimiter(LOGIN_ATTEMPTS_PER_IP, LOGIN_WINDOW_SECONDS),
            AttemptLimiter(LOGIN_ATTEMPTS_PER_USER, LOGIN_WINDOW_SECONDS),
        )
        request.app.state.console_login_limits = found
    return found


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
