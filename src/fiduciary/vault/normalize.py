"""Identity normalization and blind indexes.

A subject is found by an identity (email, phone number, external user id) without the
identity being stored in clear: the lookup key is a *blind index*, an HMAC-SHA256 under a
dedicated key over the normalized value. Normalization decides which spellings are "the
same person": ``Alice@Example.COM`` and ``alice@example.com`` must give the same index,
``(415) 555-0132`` and ``+1 415 555 0132`` too.

- email: validated with email-validator (syntax only, no DNS), then lower-cased whole.
  The local part is case-sensitive in theory (RFC 5321) and never in practice; a person
  who types their address with a capital letter once must still be found.
- phone_number: E.164 (``+14155550132``) via phonenumbers; a number without a country
  code is read in the default region, and refused when there is none.
- anything else (user_id and the other kinds a policy declares): surrounding whitespace
  stripped, nothing else: external ids are opaque and may be case-sensitive.
"""

from __future__ import annotations

import hmac
import re
from functools import lru_cache
from hashlib import sha256

import phonenumbers
from email_validator import EmailNotValidError, ValidatedEmail, validate_email

EMAIL = "email"
PHONE = "phone_number"
USER_ID = "user_id"
BUILTIN_KINDS = frozenset({EMAIL, PHONE, USER_ID})

# The longest identity value accepted; longer input is a mistake or an attack, not a person.
MAX_LENGTH = 512

# RFC 5322 dot-atom with ASCII characters only: exactly the local parts email-validator
# accepts without further work (its DOT_ATOM_TEXT). Used by the fast path below.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_ASCII_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_EMAIL_MAX = 254  # octets, RFC 5321 4.5.3.1.3, as email-validator checks it


class IdentityError(ValueError):
    """An identity value that cannot be normalized; says which kind and what is wrong."""

    def __init__(self, kind: str, problem: str) -> None:
        self.kind = kind
        self.problem = problem
        super().__init__(f"identity {kind}: {problem}")


def _validate(address: str) -> ValidatedEmail:
    return validate_email(address, check_deliverability=False)


@lru_cache(maxsize=8192)
def _domain(domain: str) -> tuple[str, str]:
    """(normalized, ascii) form of an ASCII domain, validated once per distinct domain.

    Bulk imports see the same few thousand domains over and over, and the domain checks
    (IDNA, per-character Unicode tables) are most of email-validator's cost. A failing
    domain raises, and lru_cache does not keep exceptions, so it is re-checked each time.
    """
    probe = _validate("a@" + domain)
    return probe.domain, probe.ascii_domain


def normalize_email(value: str) -> str:
    """The lower-cased, validated form of an email address; IdentityError when invalid."""
    text = value.strip()
    if not text:
        raise IdentityError(EMAIL, "is empty")
    local, at, domain = text.rpartition("@")
    # Fast path, same answer as the slow one (tests/test_vault.py checks it with hypothesis):
    # a plain ASCII local part needs no work, and the domain's verdict is cached.
    if at and domain.isascii() and _ASCII_LOCAL.match(local):
        try:
            norm_domain, ascii_domain = _domain(domain.lower())
        except EmailNotValidError:
            pass  # the full validation below gives the exact message
        else:
            normalized = f"{local}@{norm_domain}"
            if (
                len(text.encode()) <= _EMAIL_MAX
                and len(normalized.encode()) <= _EMAIL_MAX
                and len(local) + 1 + len(ascii_domain) <= _EMAIL_MAX
            ):
                return normalized.lower()
    try:
        return _validate(text).normalized.lower()
    except EmailNotValidError as exc:
        raise IdentityError(EMAIL, f"not a valid email address: {exc}") from None


def normalize_phone(value: str, default_region: str | None = None) -> str:
    """E.164 form of a phone number. Numbers without ``+country code`` are read in
    ``default_region`` (ISO 3166 alpha-2, e.g. "US"); without one they are refused."""
    text = value.strip()
    if not text:
        raise IdentityError(PHONE, "is empty")
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            hint = (
                "it has no +country code and no default region is set"
                if region is None
                else f"its country code is unknown (default region {region})"
            )
            raise IdentityError(PHONE, f"cannot be read as a phone number: {hint}") from None
        message = str(exc).split(") ", 1)[-1]  # drop phonenumbers' "(error code) " prefix
        raise IdentityError(PHONE, f"cannot be read as a phone number: {message}") from None
    if not phonenumbers.is_possible_number(number):
        raise IdentityError(PHONE, "has the wrong number of digits for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_opaque(kind: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise IdentityError(kind, "is empty")
    return text


def normalize(kind: str, value: object, *, default_region: str | None = None) -> str:
    """The normalized form of an identity of ``kind``; IdentityError when it has none."""
    if not isinstance(value, str):
        raise IdentityError(kind, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_LENGTH:
        raise IdentityError(kind, f"is longer than {MAX_LENGTH} characters")
    if kind == EMAIL:
        return normalize_email(value)
    if kind == PHONE:
        return normalize_phone(value, default_region)
    return normalize_opaque(kind, value)


def blind_index(index_key: bytes, kind: str, normalized: str) -> bytes:
    """HMAC-SHA256(index_key, kind + ":" + normalized): the lookup key of an identity.

    The kind is inside the MAC so that the same string as an email and as a user id gives
    two unrelated indexes."""
    return hmac.digest(index_key, f"{kind}:{normalized}".encode(), sha256)


__all__ = [
    "BUILTIN_KINDS",
    "EMAIL",
    "PHONE",
    "USER_ID",
    "IdentityError",
    "blind_index",
    "normalize",
    "normalize_email",
    "normalize_phone",
]
