"""Signing in to the privacy center's preferences with a code sent by email.

Plain functions over the data store (no FastAPI): the routes in ``preferences.py`` call
them. A person types their email address; the vault's blind index finds their subject
(``Vault.find``) and a one-time code is mailed to that address. Entering the code turns the
sign-in into a session: its id goes into the center's signed cookie, and every preferences
page checks the row (so signing out, or the session's age, ends it at once, whatever the
cookie says).

An address that matches nobody gets a sign-in row too, without a subject and without a
mail: the pages behave the same, so they do not tell whether an address has an account.

Codes are 6 digits from ``secrets``, stored as an HMAC under a key derived from the
keyring's token key (never in clear), expire after 15 minutes and allow 5 attempts,
counted before the comparison in the same transaction. Per-IP limits are the routes' job.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import Engine, delete, func, insert, select, update

from fiduciary.store import tables as T

__all__ = [
    "CODE_DIGITS",
    "CODE_TTL",
    "MAX_ATTEMPTS",
    "MAX_PER_SUBJECT",
    "SESSION_TTL",
    "CodeExpired",
    "CodeLocked",
    "SignInError",
    "WrongCode",
    "end",
    "session_subject",
    "start",
    "verify",
]

CODE_DIGITS: Final = 6
CODE_TTL: Final = timedelta(minutes=15)
MAX_ATTEMPTS: Final = 5
# Sign-ins one subject may start per hour: enough to retry, too few to flood their inbox.
MAX_PER_SUBJECT: Final = 5
# A session lasts this long after the code was entered, however active: a shared computer
# left signed in does not stay open for days.
SESSION_TTL: Final = timedelta(hours=1)
# Rows older than this are deleted when a new sign-in starts (one statement).
KEEP: Final = timedelta(days=1)
_TAG: Final = b"fiduciary/center-sign-in\x00"


class SignInError(Exception):
    """A code was refused; the message says why in words for the person."""


class WrongCode(SignInError):
    def __init__(self, attempts_left: int) -> None:
        left = (
            f"{attempts_left} attempt{'s' if attempts_left != 1 else ''} left"
            if attempts_left
            else "no attempts left"
        )
        super().__init__(f"This code does not match ({left}).")
        self.attempts_left = attempts_left


class CodeExpired(SignInError):
    def __init__(self) -> None:
        super().__init__("This code has expired. Ask for a new one.")


class CodeLocked(SignInError):
    def __init__(self) -> None:
        super().__init__("This code no longer works. Ask for a new one.")


@dataclass(frozen=True)
class Started:
    """A new sign-in: its id (kept in the browser's session) and, when the address matched
    a subject, the code to mail."""

    id: str
    code: str | None
    throttled: bool = False  # the subject asked for too many codes this hour: none mailed


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _ts(data: Engine, at: datetime) -> datetime:
    """A time as the store compares it: SQLite keeps naive UTC text."""
    return at.replace(tzinfo=None) if data.dialect.name == "sqlite" else at


def _code_hash(key: bytes, sign_in_id: str, code: str) -> str:
    return hmac.new(key, _TAG + f"{sign_in_id}\x00{code}".encode(), hashlib.sha256).hexdigest()


def derive_key(token_key: bytes) -> bytes:
    """The MAC key for codes: derived from the keyring's token key, so it is never the key
    of an unsubscribe token or of a request's code."""
    return hmac.new(token_key, b"fiduciary center sign-in codes", hashlib.sha256).digest()


def start(data: Engine, key: bytes, subject_id: str | None, *, now: datetime | None = None) -> Started:
    """Open a sign-in for ``subject_id`` (None: the address matched nobody)."""
    at = _utc(now)
    si = T.center_sign_ins
    sign_in_id = secrets.token_hex(16)
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    with data.begin() as conn:
        conn.execute(delete(si).where(si.c.created_at < _ts(data, at - KEEP)))
        throttled = False
        if subject_id is not None:
            recent = conn.execute(
                select(func.count()).where(
                    si.c.subject_id == subject_id, si.c.created_at > _ts(data, at - timedelta(hours=1))
                )
            ).scalar_one()
            throttled = recent >= MAX_PER_SUBJECT
        conn.execute(
            insert(si).values(
                id=sign_in_id,
                # A throttled sign-in is kept without its subject: no code reaches anyone, and
                # the person sees the same page as for any other address.
                subject_id=None if throttled else subject_id,
                code_hash=_code_hash(key, sign_in_id, code),
                created_at=at,
                expires_at=at + CODE_TTL,
                attempts=0,
            )
        )
    mailed = subject_id is not None and not throttled
    return Started(sign_in_id, code if mailed else None, throttled)


def verify(data: Engine, key: bytes, sign_in_id: str, code: str, *, now: datetime | None = None) -> str:
    """Check the code; returns the subject id, and the sign-in is a session from now on.
    Raises WrongCode, CodeExpired or CodeLocked (SignInError) and changes only the count of
    attempts."""
    at = _utc(now)
    given = "".join(str(code).split()).replace("-", "")
    if not given.isdigit() or len(given) != CODE_DIGITS:
        raise SignInError(f"Enter the {CODE_DIGITS} digits of the code from our email.")
    si = T.center_sign_ins
    outcome: SignInError | None = None
    with data.begin() as conn:
        row = conn.execute(select(si).where(si.c.id == sign_in_id).with_for_update()).first()
        if row is None or row.verified_at is not None or row.ended_at is not None:
            raise CodeLocked()
        if row.attempts >= MAX_ATTEMPTS:
            raise CodeLocked()
        if _utc(row.expires_at) <= at:
            raise CodeExpired()
        attempts = row.attempts + 1
        # Counted before the comparison, under the row lock: parallel guesses cannot exceed it.
        ok = row.subject_id is not None and hmac.compare_digest(
            _code_hash(key, sign_in_id, given), row.code_hash
        )
        values: dict[str, object] = {"attempts": attempts}
        if ok:
            values["verified_at"] = at
        else:
            outcome = WrongCode(MAX_ATTEMPTS - attempts)
        conn.execute(update(si).where(si.c.id == sign_in_id).values(**values))
    if outcome is not None:
        raise outcome
    return str(row.subject_id)


def session_subject(data: Engine, sign_in_id: str, *, now: datetime | None = None) -> str | None:
    """The subject of a live session (verified, not ended, younger than SESSION_TTL)."""
    at = _utc(now)
    si = T.center_sign_ins.c
    with data.connect() as conn:
        row = conn.execute(
            select(si.subject_id, si.verified_at, si.ended_at).where(si.id == sign_in_id)
        ).first()
    if row is None or row.verified_at is None or row.ended_at is not None or row.subject_id is None:
        return None
    if _utc(row.verified_at) + SESSION_TTL <= at:
        return None
    return str(row.subject_id)


def end(data: Engine, sign_in_id: str, *, now: datetime | None = None) -> None:
    """Sign out: the session stops working, whatever copies of the cookie exist."""
    si = T.center_sign_ins
    with data.begin() as conn:
        conn.execute(
            update(si).where(si.c.id == sign_in_id, si.c.ended_at.is_(None)).values(ended_at=_utc(now))
        )
