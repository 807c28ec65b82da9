"""Who may use the server: API keys with scopes, and console users with roles.

Plain library functions over the data store (no FastAPI here): the CLI, the API's admin
endpoints and the console all call them. Every change is an audit entry.

**API keys** look like ``fid_<key id>_<secret>``: 16 hex characters of id (the lookup key,
shown in listings and in the audit trail as ``api-key:<id>``) and a 256-bit random secret.
The secret is shown once, at creation; the store keeps SHA-256 of (id, secret). A slow
password hash buys nothing against a 256-bit random secret and would cost every request
milliseconds; SHA-256 keeps the check in microseconds. A key carries scopes; ``admin``
includes every other scope.

**Console users** (the privacy team) have a username (a staff handle, not an email
address: the store keeps it in clear), an argon2id password hash and one role: viewer
(reads), operator (also acts on requests and choices), admin (also manages keys and users).
``verify_password`` spends the same argon2 work whether or not the user exists, so timing
does not tell which usernames are taken; login rate limiting is the console's job.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final, Literal, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from fiduciary.audit import AuditLog
from fiduciary.store import tables as T

__all__ = [
    "ROLES",
    "ROLE_SCOPES",
    "SCOPES",
    "ApiKey",
    "ApiKeyCache",
    "AuthError",
    "AuthInputError",
    "ConsoleUser",
    "HasStores",
    "Role",
    "UnknownApiKey",
    "UnknownUser",
    "authenticate",
    "create_api_key",
    "create_user",
    "disable_user",
    "list_api_keys",
    "list_users",
    "parse_key",
    "revoke_api_key",
    "set_password",
    "verify_password",
]

# What a key may do. Reads and writes are apart so that, e.g., a marketing system can ask
# decisions without ever reading a value.
SCOPES: Final[Mapping[str, str]] = {
    "subjects:read": "find subjects and read their data for a purpose (each read audited)",
    "subjects:write": "sign subjects up and erase them",
    "consent:read": "read a subject's choices, consent events and their proof",
    "consent:write": "record choices: consent, withdrawal, objection, restriction, opt-outs, settings",
    "decisions": "ask whether a purpose may use a subject's data now, one or many at once",
    "requests:read": "the rights-request queue, a request's status and events",
    "requests:write": "submit, verify, approve, deny, extend and run rights requests",
    "audit:read": "query the audit trail and verify its chain",
    "policy:read": "the record of processing and the published policy versions' text",
    "metrics:read": "request metrics (LAW-13), as JSON or CSV",
    "disclosures:read": "the disclosure ledger, a subject's disclosures and the transparency report",
    "disclosures:write": "record disclosures and legal demands, tell people of them, export aggregates",
    "breaches:read": "the breach register, its 72-hour clock and the drafted notices",
    "breaches:write": "register, assess, notify and close breaches",
    "admin": "everything above, and managing API keys and console users",
}

Role = Literal["viewer", "operator", "admin"]
ROLES: Final = ("viewer", "operator", "admin")
_READS = frozenset(
    {
        "subjects:read",
        "consent:read",
        "decisions",
        "requests:read",
        "audit:read",
        "policy:read",
        "metrics:read",
        "disclosures:read",
        "breaches:read",
    }
)
# The scopes a console role stands for, so the console and the API grant the same things.
ROLE_SCOPES: Final[Mapping[str, frozenset[str]]] = {
    "viewer": _READS,
    "operator": _READS | {"consent:write", "requests:write", "disclosures:write", "breaches:write"},
    "admin": frozenset(SCOPES),
}

KEY_PREFIX: Final = "fid_"
_KEY_ID_HEX = 16
_KEY = re.compile(rf"{KEY_PREFIX}([0-9a-f]{{{_KEY_ID_HEX}}})_([A-Za-z0-9_-]{{43}})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}")
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
_ACTOR_MAX = 128
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; a cap keeps one login from costing seconds

# argon2id with the library's defaults (RFC 9106's second recommended option: 64 MiB, t=3).
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist: the same work as a real check.
    Made on first use: an argon2 hash costs tens of milliseconds, too much for an import."""
    return _hasher.hash(secrets.token_hex(16))


class AuthError(Exception):
    """Base of this module's errors."""


class AuthInputError(AuthError, ValueError):
    """Bad input (a name, scope, role, password); nothing was stored."""


class UnknownApiKey(AuthError, LookupError):
    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        super().__init__(f"no API key {key_id!r}")


class UnknownUser(AuthError, LookupError):
    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(f"no console user {username!r}")


class HasStores(Protocol):
    """What these functions need: a ``Fiduciary``, or any object with its data store and
    audit log (the CLI manages keys without loading a policy)."""

    @property
    def data(self) -> Engine: ...

    @property
    def audit(self) -> AuditLog: ...


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored, without its secret."""

    id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None

    @property
    def actor(self) -> str:
        """The audit trail's name for whoever uses this key."""
        return f"api-key:{self.id}"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    id: str
    username: str
    role: Role
    created_at: datetime
    created_by: str
    password_changed_at: datetime
    last_login_at: datetime | None = None
    disabled_at: datetime | None = None

    @property
    def actor(self) -> str:
        return f"console:{self.username}"

    @property
    def scopes(self) -> frozenset[str]:
        return ROLE_SCOPES[self.role]


# ------------------------------------------------------------------------------ helpers
def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _utc_or_none(at: datetime | None) -> datetime | None:
    return None if at is None else _utc(at)


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not 0 < len(actor) <= _ACTOR_MAX:
        raise AuthInputError(f"actor: 1-{_ACTOR_MAX} characters, got {actor!r}")
    return actor


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes, checked against SCOPES; AuthInputError names an unknown one."""
    if isinstance(scopes, str):
        scopes = scopes.split()
    out = frozenset(scopes)
    if not out:
        raise AuthInputError(f"scopes: at least one of {', '.join(SCOPES)}")
    for s in sorted(out):
        if s not in SCOPES:
            raise AuthInputError(f"scope {s!r} is unknown{_suggest(s, SCOPES)}; known: {', '.join(SCOPES)}")
    return out


def _secret_hash(key_id: str, secret: str) -> str:
    # The id is under the hash: a row's hash cannot be copied to another key id.
    return hashlib.sha256(f"fiduciary-api-key\x00{key_id}\x00{secret}".encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    m = _KEY.fullmatch(token.strip()) if isinstance(token, str) else None
    return (m.group(1), m.group(2)) if m else None


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        created_at=_utc(row.created_at),
        created_by=row.created_by,
        revoked_at=_utc_or_none(row.revoked_at),
        revoked_by=row.revoked_by,
    )


# ------------------------------------------------------------------------------ API keys
def create_api_key(
    fid: HasStores,
    name: str,
    scopes: Iterable[str],
    *,
    actor: str = "cli",
    now: datetime | None = None,
) -> tuple[str, str]:
    """Create a key; returns (key id, the key itself). The key is shown this once: only
    its hash is stored. ``name`` says what uses it (letters, digits, space _.:-)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or "@" in name:
        raise AuthInputError(
            f"name {name!r}: 1-64 letters, digits, spaces or _.:- naming what uses the key "
            "(e.g. 'crm-sync'), not a person's address"
        )
    granted = check_scopes(scopes)
    _check_actor(actor)
    at = _utc(now)
    secret = secrets.token_urlsafe(32)  # 256 bits
    with fid.data.begin() as conn:
        for _ in range(5):  # 64-bit ids: a clash is all but impossible, but cheap to handle
            key_id = secrets.token_hex(_KEY_ID_HEX // 2)
            taken = conn.execute(select(T.api_keys.c.id).where(T.api_keys.c.id == key_id)).first()
            if taken is None:
                break
        else:  # pragma: no cover
            raise AuthError("could not find a free key id")
        conn.execute(
            insert(T.api_keys).values(
                id=key_id,
                name=name,
                scopes=" ".join(sorted(granted)),
                secret_hash=_secret_hash(key_id, secret),
                created_at=at,
                created_by=actor,
            )
        )
        fid.audit.append(
            conn,
            actor=actor,
            action="admin.api_key_created",
            detail={"key": key_id, "name": name, "scopes": sorted(granted)},
        )
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}"


def revoke_api_key(fid: HasStores, key_id: str, *, actor: str = "cli", now: datetime | None = None) -> bool:
    """Revoke a key; True if it was active, False if it was revoked already (nothing
    changes then). UnknownApiKey for an id never issued."""
    _check_actor(actor)
    at = _utc(now)
    k = T.api_keys.c
    with fid.data.begin() as conn:
        row = conn.execute(select(k.id, k.revoked_at).where(k.id == key_id)).first()
        if row is None:
            raise UnknownApiKey(key_id)
        if row.revoked_at is not None:
            return False
        conn.execute(
            update(T.api_keys)
            .where(k.id == key_id, k.revoked_at.is_(None))
            .values(revoked_at=at, revoked_by=actor)
        )
        fid.audit.append(conn, actor=actor, action="admin.api_key_revoked", detail={"key": key_id})
    return True


def list_api_keys(fid: HasStores, *, include_revoked: bool = True) -> list[ApiKey]:
    """Every key (no secrets), oldest first."""
    k = T.api_keys.c
    q = select(T.api_keys).order_by(k.created_at, k.id)
    if not include_revoked:
        q = q.where(k.revoked_at.is_(None))
    with fid.data.connect() as conn:
        return [_key(r) for r in conn.execute(q)]


def get_api_key(fid: HasStores, key_id: str) -> ApiKey:
    with fid.data.connect() as conn:
        row = conn.execute(select(T.api_keys).where(T.api_keys.c.id == key_id)).first()
    if row is None:
        raise UnknownApiKey(key_id)
    return _key(row)


def _lookup(data: Engine, key_id: str) -> tuple[str, ApiKey] | None:
    with data.connect() as conn:
        row = conn.execute(select(T.api_keys).where(T.api_keys.c.id == key_id)).first()
    return None if row is None else (row.secret_hash, _key(row))


def authenticate(fid: HasStores, token: str) -> ApiKey | None:
    """The active key ``token`` is, or None (malformed, unknown, wrong secret, revoked)."""
    parsed = parse_key(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    found = _lookup(fid.data, key_id)
    if found is None:
        return None
    stored, key = found
    if not hmac.compare_digest(stored, _secret_hash(key_id, secret)) or not key.active:
        return None
    return key


class ApiKeyCache:
    """``authenticate`` with the stored rows kept ``ttl`` seconds per process: a request's
    check is then a hash and a dict lookup. A key revoked by another process stops working
    here within ``ttl``; ``forget`` drops one at once (the admin endpoint does)."""

    def __init__(self, data: Engine, ttl: float = 1.0) -> None:
        self.data = data
        self.ttl = ttl
        self._rows: dict[str, tuple[float, str, ApiKey]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> ApiKey | None:
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        now = time.monotonic()
        hit = self._rows.get(key_id)
        if hit is None or now - hit[0] >= self.ttl:
            found = _lookup(self.data, key_id)
            if found is None:
                self.forget(key_id)
                return None
            hit = (now, *found)
            if self.ttl > 0:
                with self._lock:
                    self._rows[key_id] = hit
        _, stored, key = hit
        if not hmac.compare_digest(stored, _secret_hash(key_id, secret)) or not key.active:
            return None
        return key

    def forget(self, key_id: str | None = None) -> None:
        with self._lock:
            if key_id is None:
                self._rows.clear()
            else:
                self._rows.pop(key_id, None)


# ------------------------------------------------------------------------------ console users
def _user(row: Any) -> ConsoleUser:
    return ConsoleUser(
        id=row.id,
        username=row.username,
        role=row.role,
        created_at=_utc(row.created_at),
        created_by=row.created_by,
        password_changed_at=_utc(row.password_changed_at),
        last_login_at=_utc_or_none(row.last_login_at),
        disabled_at=_utc_or_none(row.disabled_at),
    )


def _check_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise AuthInputError(
            f"username {username!r}: 2-64 lower-case letters, digits or ._- (a staff handle; "
            "the store keeps it in clear, so not an email address)"
        )
    return username


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise AuthInputError(f"role {role!r}: one of {', '.join(ROLES)}{_suggest(str(role), ROLES)}")
    return role  # type: ignore[return-value]


def _check_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthInputError(f"password: {MIN_PASSWORD}-{MAX_PASSWORD} characters")
    return password


def create_user(
    fid: HasStores,
    username: str,
    password: str,
    role: str,
    *,
    actor: str = "cli",
    now: datetime | None = None,
) -> ConsoleUser:
    """Create a console user with an argon2id password hash. AuthInputError for a bad
    username, role or password, or a username already taken."""
    _check_username(username)
    r = _check_role(role)
    pw_hash = _hasher.hash(_check_password(password))
    _check_actor(actor)
    at = _utc(now)
    user_id = secrets.token_hex(16)
    try:
        with fid.data.begin() as conn:
            conn.execute(
                insert(T.console_users).values(
                    id=user_id,
                    username=username,
                    password_hash=pw_hash,
                    role=r,
                    created_at=at,
                    created_by=actor,
                    password_changed_at=at,
                )
            )
            fid.audit.append(
                conn,
                actor=actor,
                action="admin.user_created",
                detail={"user": user_id, "username": username, "role": r},
            )
    except IntegrityError:
        raise AuthInputError(f"username {username!r} is taken") from None
    return ConsoleUser(user_id, username, r, at, actor, at)


def verify_password(
    fid: HasStores, username: str, password: str, *, now: datetime | None = None
) -> ConsoleUser | None:
    """The user, when the password is right and the user is not disabled; else None.
    A hash made with older argon2 parameters is upgraded on success."""
    if not isinstance(password, str) or len(password) > MAX_PASSWORD or not isinstance(username, str):
        return None
    u = T.console_users.c
    with fid.data.connect() as conn:
        row = conn.execute(select(T.console_users).where(u.username == username)).first()
    stored = row.password_hash if row is not None else _dummy_hash()
    try:
        _hasher.verify(stored, password)
        ok = row is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or row is None or row.disabled_at is not None:
        return None
    at = _utc(now)
    values: dict[str, Any] = {"last_login_at": at}
    if _hasher.check_needs_rehash(stored):
        values["password_hash"] = _hasher.hash(password)
    with fid.data.begin() as conn:
        conn.execute(update(T.console_users).where(u.id == row.id).values(**values))
    user = _user(row)
    return ConsoleUser(
        user.id,
        user.username,
        user.role,
        user.created_at,
        user.created_by,
        user.password_changed_at,
        at,
        user.disabled_at,
    )


def set_password(
    fid: HasStores, username: str, password: str, *, actor: str = "cli", now: datetime | None = None
) -> None:
    """Replace a user's password (audited)."""
    pw_hash = _hasher.hash(_check_password(password))
    _check_actor(actor)
    at = _utc(now)
    u = T.console_users.c
    with fid.data.begin() as conn:
        row = conn.execute(select(u.id).where(u.username == username)).first()
        if row is None:
            raise UnknownUser(username)
        conn.execute(
            update(T.console_users)
            .where(u.id == row.id)
            .values(password_hash=pw_hash, password_changed_at=at)
        )
        fid.audit.append(conn, actor=actor, action="admin.user_password_set", detail={"user": row.id})


def disable_user(fid: HasStores, username: str, *, actor: str = "cli", now: datetime | None = None) -> bool:
    """Disable a user (kept for the audit trail's actors); False if already disabled."""
    _check_actor(actor)
    at = _utc(now)
    u = T.console_users.c
    with fid.data.begin() as conn:
        row = conn.execute(select(u.id, u.disabled_at).where(u.username == username)).first()
        if row is None:
            raise UnknownUser(username)
        if row.disabled_at is not None:
            return False
        conn.execute(update(T.console_users).where(u.id == row.id).values(disabled_at=at))
        fid.audit.append(conn, actor=actor, action="admin.user_disabled", detail={"user": row.id})
    return True


def list_users(fid: HasStores) -> list[ConsoleUser]:
    u = T.console_users.c
    with fid.data.connect() as conn:
        return [_user(r) for r in conn.execute(select(T.console_users).order_by(u.username))]
