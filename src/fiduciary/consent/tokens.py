"""Unsubscribe tokens (LAW-14): a link in every marketing email that works with one click.

The token carries the subject id, the purpose and the time it was issued, signed with
HMAC-SHA256 under the keyring's token key. Verifying needs the key only, no database
lookup, so an unsubscribe link keeps working even for mail sent long ago, and nothing
has to be stored per email sent. The subject id is a random identifier, not an email
address, so the token shows nothing personal to whoever sees the URL.

Format: ``base64url(payload) "." base64url(mac)`` with payload
``"u1|<subject_id>|<purpose>|<issued unix seconds>"``. The MAC covers a domain prefix as
well, so a MAC made for another use of the token key can never pass as an unsubscribe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from datetime import datetime, timedelta
from typing import Protocol

VERSION = "u1"
_DOMAIN = b"fiduciary/unsubscribe/v1\n"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A token issued this far in the future is refused: clocks drift, forgers do not care.
CLOCK_SKEW = 300


class HasTokenKey(Protocol):
    """What a token needs from the keyring (fiduciary.vault.keyring.Keyring)."""

    @property
    def token_key(self) -> bytes: ...


class BadToken(ValueError):
    """The token is malformed, tampered with, signed with another key, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise BadToken("unsubscribe token is not URL-safe base64")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("unsubscribe token is not URL-safe base64") from None
    # The last character's unused low bits decode to nothing: a token altered there would
    # still verify. Only the one canonical spelling of each value is accepted.
    if _b64(data) != text:
        raise BadToken("unsubscribe token is not canonical URL-safe base64")
    return data


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()


def _seconds(now: datetime | float | None) -> int:
    if now is None:
        return int(time.time())
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return int(now.timestamp())
    return int(now)


def make_unsubscribe_token(
    keyring: HasTokenKey, subject_id: str, purpose: str, now: datetime | float | None = None
) -> str:
    """A URL-safe token that unsubscribes ``subject_id`` from ``purpose``."""
    for what, value in (("subject id", subject_id), ("purpose", purpose)):
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise ValueError(
                f"unsubscribe token: {what} {value!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
    payload = f"{VERSION}|{subject_id}|{purpose}|{_seconds(now)}".encode("ascii")
    return f"{_b64(payload)}.{_b64(_mac(keyring.token_key, payload))}"


def read_unsubscribe_token(
    keyring: HasTokenKey,
    token: str,
    max_age: float | timedelta | None = None,
    now: datetime | float | None = None,
) -> tuple[str, str]:
    """``(subject_id, purpose)`` from a token made by make_unsubscribe_token.

    Raises BadToken when the token is garbage, was altered, was signed with another key,
    is older than ``max_age`` (seconds or a timedelta), or claims to come from the future.
    """
    if not isinstance(token, str) or len(token) > 512:
        raise BadToken("unsubscribe token is not a token")
    parts = token.strip().split(".")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise BadToken("unsubscribe token must be two base64 parts joined by '.'")
    payload, mac = _unb64(parts[0]), _unb64(parts[1])
    # Constant time: a forger learns nothing from how long the comparison took.
    if not hmac.compare_digest(mac, _mac(keyring.token_key, payload)):
        raise BadToken("unsubscribe token signature does not match (altered or another key)")
    # The MAC is ours, so the payload is one we wrote; checks below guard format changes.
    try:
        version, subject_id, purpose, issued_text = payload.decode("ascii").split("|")
        issued = int(issued_text)
    except ValueError:
        raise BadToken("unsubscribe token payload is malformed") from None
    if version != VERSION:
        raise BadToken(f"unsubscribe token version {version!r} is not supported")
    current = _seconds(now)
    if issued > current + CLOCK_SKEW:
        raise BadToken("unsubscribe token is issued in the future")
    if max_age is not None:
        limit = max_age.total_seconds() if isinstance(max_age, timedelta) else float(max_age)
        if current - issued > limit:
            raise BadToken(f"unsubscribe token expired (older than {limit:g} seconds)")
    return subject_id, purpose


__all__ = ["BadToken", "make_unsubscribe_token", "read_unsubscribe_token"]
