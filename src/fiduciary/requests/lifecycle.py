"""The request lifecycle: intake, identity verification, deadlines, decisions, records.

    desk = RequestDesk(data, keys, keyring, cp, vault, audit, mailer)
    sub = desk.submit("erase", contact={"email": "ann@example.com"}, region="DE")
    desk.verify_code(sub.request_id, "123456")      # the code mailed to ann
    desk.start(sub.request_id, job_id=job)           # the runner: plan -> job
    desk.finish(sub.request_id, partial=False)       # done; the requester is told

A request moves ``received -> verified -> (approved) -> running -> done | partial`` or ends
``denied`` with a reason. Every move is an event in ``request_events`` appended in the same
transaction as the ``requests`` row update (the row is the derived "current" view) and as
its audit entry; a move that is not allowed raises InvalidTransition and changes nothing.

Deadlines come from the policy: the right's ``deadline`` (calendar months, days, business
days: LAW-1, LAW-11) counted from receipt, one ``extension`` counted from the first due
date (GDPR: two further months; CCPA: 45 more days). A jurisdiction with ``acknowledge``
(CCPA: 10 business days) gets an acknowledgement mail at once, recorded as an event.

Verification levels (the policy's, per right and jurisdiction):
- ``none``: verified on receipt (opt-outs: LAW-11);
- ``email_code``: a one-time code mailed to the requester. Codes are 6+ digits from
  ``secrets``, stored as an HMAC under the keyring's token key, expire after 30 minutes,
  and allow 5 attempts (counted before the comparison, under the request's row lock, so
  parallel guesses cannot exceed it); then a new code is needed, at most 5 per request;
- ``two_data_points`` / ``three_data_points`` (CCPA 7062): values the requester gives are
  compared, normalized, with what the vault holds on the subject found by the requester's
  contact. The contact itself does not count as a point (anyone can type an address);
  three points also need a signed declaration. A failure is recorded without saying which
  point failed; after 5 failures the request can only be denied;
- ``signed_in``: the web session layer vouches for the subject (``verify_signed_in``).

Personal data. What the requester told us (contact, details, data points) is encrypted
under the request's own data key (AES-GCM), kept in the key store (``request_keys``). The
data store holds only the ciphertext, a blind index of the contact (duplicate detection)
and event details without personal data. ``forget_contact`` / ``forget_expired`` destroy
the key once the request record's retention ends (LAW-13: 24 months), which leaves the
request rows, and so the metrics, behind.

People without an account (a referred friend, PLV-2) are accepted: the subject is matched
by contact when the vault knows them, else the request carries no subject and the runner
searches the company's datastores by the contact alone.

Child reports (PLO-13, PLV-14): ``submit("erase", ..., details={"child_report": True,
"account": {"email": ...}})``. The reporter's contact is verified at the policy's level;
``details["account"]`` names the child's account (identity kind -> value). The request
then needs the privacy team's approval (they check the report) before it may run: a
verified deletion of the child's account and data.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import statistics
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from hashlib import sha256
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, and_, bindparam, case, delete, func, insert, select, text, update

from fiduciary.audit import AuditLog, find_personal_data
from fiduciary.mail import (
    DEFAULT_SENDER,
    Letter,
    Mailer,
    MailError,
    acknowledgement_letter,
    code_letter,
    denied_letter,
    done_letter,
    extended_letter,
)
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import RequestType, Verification
from fiduciary.policy.period import Period
from fiduciary.policy.taxonomy import is_within, suggest
from fiduciary.store import tables as T
from fiduciary.vault.crypto import (
    KEY_SIZE,
    DecryptionError,
    decode_value,
    encode_value,
    new_data_key,
    owner_key_aad,
    seal,
    unseal,
)
from fiduciary.vault.keyring import Keyring
from fiduciary.vault.normalize import (
    BUILTIN_KINDS,
    EMAIL,
    PHONE,
    IdentityError,
    blind_index,
    normalize,
    normalize_email,
    normalize_phone,
)
from fiduciary.vault.vault import Vault, VaultError

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary

log = logging.getLogger("fiduciary.requests")

__all__ = [
    "CLOSED",
    "OPEN",
    "CodeExpired",
    "CodeLocked",
    "CodeRejected",
    "ContactForgotten",
    "DenyReason",
    "InvalidTransition",
    "RequestDesk",
    "RequestError",
    "RequestEvent",
    "RequestInputError",
    "RequestView",
    "Requester",
    "RightNotGiven",
    "Submitted",
    "TooManyCodes",
    "UnknownRequest",
    "VerificationFailed",
    "VerificationLocked",
]

# Statuses. The open ones count for duplicates, deadlines and the queue.
RECEIVED, VERIFIED, APPROVED, RUNNING = "received", "verified", "approved", "running"
DONE, PARTIAL, DENIED = "done", "partial", "denied"
OPEN: Final = (RECEIVED, VERIFIED, APPROVED, RUNNING)
CLOSED: Final = (DONE, PARTIAL, DENIED)

# Purpose tags: a request's ciphertexts can never be taken for a subject's or a job's.
_PAYLOAD_TAG = b"fiduciary/request-payload\x00"
_CODE_TAG = b"fiduciary/request-code\x00"

_CONTACT_KINDS = {"email": EMAIL, "phone": PHONE, "phone_number": PHONE}
_MAX_TEXT = 500  # reasons and notes: a sentence or two, not a file
_MAX_PAYLOAD = 64 * 1024
_FORGOTTEN_INDEX = b"\x00" * 32  # the requester index of a forgotten request: links nothing
_IN_CHUNK = 1000
_DEFAULT_RECORDS_KEPT = Period.parse("24 months")

# Statements a run executes for every batch, built once.
_rq, _ev, _rk = T.requests.c, T.request_events.c, T.request_keys.c
_IDS: Any = bindparam("p_ids", expanding=True)
_Q_KEYS = select(_rk.owner_id, _rk.kek_id, _rk.wrapped).where(_rk.owner_id.in_(_IDS))
_Q_LOCK = (
    select(
        T.requests,
        select(_ev.id)
        .where(_ev.request_id == _rq.id, _ev.kind == "child_report")
        .exists()
        .label("child_report"),
    )
    .where(_rq.id.in_(_IDS))
    .with_for_update(of=T.requests)
)
_START = (
    update(T.requests)
    .where(_rq.id.in_(_IDS), _rq.status.in_((VERIFIED, APPROVED)))
    .values(status=RUNNING, job_id=bindparam("p_job"))
)
_CLOSE_VALUES = {"status": bindparam("p_status"), "closed_at": bindparam("p_at", type_=_rq.closed_at.type)}
_CLOSE_COLS = (_rq.id, _rq.subject_id, _rq.type, _rq.payload)
_CLOSE = (
    update(T.requests)
    .where(_rq.id.in_(_IDS), _rq.status == RUNNING)
    .values(**_CLOSE_VALUES)
    .returning(*_CLOSE_COLS)
)
_CLOSE_OF_JOB = (
    update(T.requests)
    .where(_rq.id.in_(_IDS), _rq.status == RUNNING, _rq.job_id == bindparam("p_job"))
    .values(**_CLOSE_VALUES)
    .returning(*_CLOSE_COLS)
)


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads; on PostgreSQL in autocommit, which saves the BEGIN and the
    ROLLBACK round trips (one statement sees one snapshot anyway)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


# ---------------------------------------------------------------------------------- errors
class RequestError(Exception):
    """Base of the request lifecycle's errors."""


class RequestInputError(RequestError, ValueError):
    """Bad input: says what and where. Nothing was stored."""


class RightNotGiven(RequestInputError):
    """The requester's jurisdiction does not give this right; lists what it does give."""

    def __init__(self, request_type: str, jurisdiction: str, name: str, available: Sequence[str]) -> None:
        self.request_type = request_type
        self.jurisdiction = jurisdiction
        self.available = tuple(available)
        super().__init__(
            f"request type {request_type!r} is not a right given in jurisdiction {jurisdiction!r} "
            f"({name}); available there: {', '.join(self.available) or 'none'}"
        )


class UnknownRequest(RequestError, LookupError):
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"no request {request_id!r}")


class InvalidTransition(RequestError):
    """The move is not allowed from the request's current status; nothing changed."""

    def __init__(self, request_id: str, message: str) -> None:
        self.request_id = request_id
        super().__init__(f"request {request_id}: {message}; nothing changed")


class VerificationFailed(RequestError):
    """The requester could not be verified. Deliberately vague: it never says which part
    of what was given was wrong."""


class CodeRejected(VerificationFailed):
    def __init__(self, attempts_left: int) -> None:
        self.attempts_left = attempts_left
        more = (
            f"{attempts_left} attempt{'s' if attempts_left != 1 else ''} left"
            if attempts_left
            else "no attempts left: ask for a new code"
        )
        super().__init__(f"the code is not right ({more})")


class CodeExpired(VerificationFailed):
    def __init__(self) -> None:
        super().__init__("the code has expired: ask for a new code")


class CodeLocked(VerificationFailed):
    def __init__(self) -> None:
        super().__init__("too many wrong attempts for this code: ask for a new code")


class VerificationLocked(VerificationFailed):
    def __init__(self) -> None:
        super().__init__("too many failed verification attempts: this request can no longer be verified")


class TooManyCodes(RequestError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            f"{limit} codes were already sent for this request: contact us, or make a new request"
        )


class ContactForgotten(RequestError):
    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request {request_id}: the requester's details were destroyed (record retention ended)"
        )


class DenyReason(StrEnum):
    """Why a request is refused. Each has the sentence the requester reads."""

    identity_not_verified = "identity_not_verified"
    manifestly_unfounded = "manifestly_unfounded"
    excessive = "excessive"
    legal_exemption = "legal_exemption"
    rights_of_others = "rights_of_others"
    not_applicable = "not_applicable"
    other = "other"


DENY_TEXT: Final[Mapping[DenyReason, str]] = {
    DenyReason.identity_not_verified: "We could not verify your identity, so we cannot act without "
    "risking someone else's data.",
    DenyReason.manifestly_unfounded: "The request is manifestly unfounded.",
    DenyReason.excessive: "The request is excessive, in particular because it repeats a recent one.",
    DenyReason.legal_exemption: "A legal exemption applies: the law requires or allows us to keep "
    "or withhold this data.",
    DenyReason.rights_of_others: "Acting on it would adversely affect the rights and freedoms of others.",
    DenyReason.not_applicable: "This right does not apply to the data or the processing concerned.",
    DenyReason.other: "See the note below.",
}


# ---------------------------------------------------------------------------------- values
@dataclass(frozen=True)
class Submitted:
    """What ``submit`` answers. For a duplicate, ``request_id`` is the open request's and
    ``duplicate_of`` repeats it."""

    request_id: str
    status: str
    due_at: datetime
    verification: Verification
    duplicate_of: str | None = None
    code_sent: bool = False
    acknowledge_by: datetime | None = None
    subject_matched: bool = False


@dataclass(frozen=True)
class RequestEvent:
    kind: str
    at: datetime
    actor: str
    detail: dict[str, Any] | None


@dataclass(frozen=True)
class RequestView:
    """A request without personal data: what the console and the status page show."""

    id: str
    type: str
    jurisdiction: str
    status: str
    verification: str
    subject_id: str | None
    received_at: datetime
    due_at: datetime
    extended: bool
    closed_at: datetime | None
    job_id: str | None
    child_report: bool
    overdue: bool
    events: tuple[RequestEvent, ...] = field(default=())


@dataclass(frozen=True)
class Requester:
    """What the requester told us, decrypted."""

    contact: dict[str, str]
    details: dict[str, Any]
    data_points: dict[str, Any]


# --------------------------------------------------------------------------------- helpers
def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _utc_or_none(at: datetime | None) -> datetime | None:
    return None if at is None else _utc(at)


def _as_datetime(at: datetime | date) -> datetime:
    if isinstance(at, datetime):
        return at
    return datetime(at.year, at.month, at.day, tzinfo=UTC)  # pragma: no cover - add_to keeps the type


def _check_text(value: object, what: str, *, required: bool) -> str | None:
    """A reason or note: one short text with no personal data in it (it is stored in the
    clear in the event log and the audit trail)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise RequestInputError(f"{what}: required")
        return None
    if not isinstance(value, str):
        raise RequestInputError(f"{what}: must be text, got {type(value).__name__}")
    text_ = " ".join(value.split())
    if len(text_) > _MAX_TEXT:
        raise RequestInputError(f"{what}: at most {_MAX_TEXT} characters, got {len(text_)}")
    found = find_personal_data(text_)
    if found:
        raise RequestInputError(
            f"{what}: looks like it contains {found}; it is stored in clear, so leave personal data out"
        )
    return text_


def _check_json(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise RequestInputError(f"{what}: must be a mapping, got {type(value).__name__}")
    out = {str(k): v for k, v in value.items()}
    try:
        size = len(json.dumps(out, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise RequestInputError(f"{what}: not plain JSON data ({exc})") from None
    if size > _MAX_PAYLOAD:
        raise RequestInputError(f"{what}: {size} bytes as JSON, at most {_MAX_PAYLOAD}")
    return out


def _canonical(value: object) -> str:
    """The comparable form of a data point: Unicode-normalized, case-folded, punctuation
    dropped, whitespace collapsed; structures by their values in key order."""
    if isinstance(value, Mapping):
        return " ".join(_canonical(value[k]) for k in sorted(value, key=str))
    if isinstance(value, list | tuple):
        return " ".join(_canonical(v) for v in value)
    if value is None:
        return ""
    s = unicodedata.normalize("NFKC", str(value)).casefold()
    kept = "".join(ch if ch.isalnum() else " " for ch in s)
    return " ".join(kept.split())


def _detail_json(detail: Mapping[str, Any] | None) -> str | None:
    return None if detail is None else json.dumps(dict(detail), sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------ desk
class RequestDesk:
    """Receives, verifies and tracks rights requests; tells the requester at each step."""

    def __init__(
        self,
        data: Engine,
        keys: Engine,
        keyring: Keyring,
        cp: CompiledPolicy,
        vault: Vault,
        audit: AuditLog,
        mailer: Mailer | None,
        *,
        status_url: str | None = None,
        sender: str | None = None,
        code_digits: int = 6,
        code_ttl: timedelta = timedelta(minutes=30),
        max_attempts: int = 5,
        max_codes: int = 5,
        default_region: str | None = None,
    ) -> None:
        if code_digits < 6:
            raise ValueError(f"code_digits: at least 6, got {code_digits}")
        if status_url is not None and "{request_id}" not in status_url:
            raise ValueError(f"status_url {status_url!r}: must contain '{{request_id}}'")
        self.data, self.keys, self.keyring, self.cp = data, keys, keyring, cp
        self.vault, self.audit, self.mailer = vault, audit, mailer
        self.status_url = status_url
        self.code_digits, self.code_ttl = code_digits, code_ttl
        self.max_attempts, self.max_codes = max_attempts, max_codes
        self.default_region = default_region
        org = cp.policy.organization
        self.organization = org.name
        if sender is None and mailer is not None and mailer.sender == DEFAULT_SENDER and org.contact.email:
            sender = f"{org.name} <{org.contact.email}>"
        self.sender = sender
        self._identity_kinds = BUILTIN_KINDS | cp.identity_kinds

    @classmethod
    def from_fiduciary(cls, fid: Fiduciary, mailer: Mailer | None, **kw: Any) -> RequestDesk:
        return cls(fid.data, fid.keys, fid.keyring, fid.policy, fid.vault, fid.audit, mailer, **kw)

    # ------------------------------------------------------------------------ storage bits
    def _ts(self, at: datetime) -> datetime:
        """A time as the data store compares it: SQLite keeps naive UTC text."""
        utc = at.astimezone(UTC)
        return utc.replace(tzinfo=None) if self.data.dialect.name == "sqlite" else utc

    def _store_key(self, request_id: str, now: datetime) -> bytes:
        key = new_data_key()
        kek_id, kek = self.keyring.kek
        wrapped = seal(AESGCM(kek), key, owner_key_aad(request_id, kek_id))
        with self.keys.begin() as kconn:
            kconn.execute(
                insert(T.request_keys).values(
                    owner_id=request_id, kek_id=kek_id, wrapped=wrapped, created_at=now
                )
            )
        return key

    def _load_key(self, request_id: str) -> bytes | None:
        rk = T.request_keys.c
        with self.keys.connect() as kconn:
            row = kconn.execute(select(rk.kek_id, rk.wrapped).where(rk.owner_id == request_id)).first()
        if row is None:
            return None
        aad = owner_key_aad(request_id, row.kek_id)
        key = unseal(
            AESGCM(self.keyring.kek_by_id(row.kek_id)),
            bytes(row.wrapped),
            aad,
            f"key of request {request_id}",
        )
        if len(key) != KEY_SIZE:
            raise DecryptionError(f"key of request {request_id}: {len(key)} bytes, {KEY_SIZE} expected")
        return key

    def load_keys(self, request_ids: Sequence[str]) -> dict[str, bytes]:
        """The data keys of many requests (one read per 1,000); a request whose key is gone
        (its requester forgotten) is left out."""
        ids = list(dict.fromkeys(request_ids))
        out: dict[str, bytes] = {}
        with _reading(self.keys) as kconn:
            for i in range(0, len(ids), _IN_CHUNK):
                for rid, kek_id, wrapped in kconn.execute(_Q_KEYS, {"p_ids": ids[i : i + _IN_CHUNK]}):
                    key = unseal(
                        AESGCM(self.keyring.kek_by_id(kek_id)),
                        bytes(wrapped),
                        owner_key_aad(rid, kek_id),
                        f"key of request {rid}",
                    )
                    if len(key) != KEY_SIZE:
                        raise DecryptionError(f"key of request {rid}: {len(key)} bytes, {KEY_SIZE} expected")
                    out[rid] = key
        return out

    def _drop_keys(self, request_ids: Sequence[str]) -> None:
        rk = T.request_keys.c
        with self.keys.begin() as kconn:
            for i in range(0, len(request_ids), _IN_CHUNK):
                kconn.execute(delete(T.request_keys).where(rk.owner_id.in_(request_ids[i : i + _IN_CHUNK])))
        if self.keys.dialect.name == "sqlite":
            # As the vault does for subject keys: secure_delete zeroes the key in its page,
            # and a TRUNCATE checkpoint removes the copies still in the -wal file.
            with self.keys.connect() as kconn:
                raw: Any = kconn.connection.driver_connection
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()

    @staticmethod
    def _seal_payload(request_id: str, key: bytes, payload: Mapping[str, Any]) -> bytes:
        return seal(
            AESGCM(key), encode_value(dict(payload), "request payload"), _PAYLOAD_TAG + request_id.encode()
        )

    def _open_payload(self, request_id: str, blob: bytes, key: bytes | None = None) -> dict[str, Any]:
        if key is None and blob:
            key = self._load_key(request_id)
        if key is None or not blob:
            raise ContactForgotten(request_id)
        value = decode_value(unseal(AESGCM(key), blob, _PAYLOAD_TAG + request_id.encode(), "request payload"))
        assert isinstance(value, dict)
        return value

    def _code_hash(self, request_id: str, code: str) -> str:
        msg = _CODE_TAG + f"{request_id}\x00{code}".encode()
        return hmac.new(self.keyring.token_key, msg, sha256).hexdigest()

    def _new_code(self) -> str:
        return f"{secrets.randbelow(10**self.code_digits):0{self.code_digits}d}"

    @staticmethod
    def _events_insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
        if rows:
            conn.execute(insert(T.request_events), rows)

    @staticmethod
    def _event(
        request_id: str, kind: str, at: datetime, actor: str, detail: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "kind": kind,
            "at": at,
            "actor": actor,
            "detail": _detail_json(detail),
        }

    def _row(self, conn: Connection, request_id: str, *, lock: bool = False) -> Any:
        q = select(T.requests).where(T.requests.c.id == request_id)
        if lock:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise UnknownRequest(request_id)
        return row

    def _url(self, request_id: str) -> str | None:
        return None if self.status_url is None else self.status_url.format(request_id=request_id)

    # ----------------------------------------------------------------------------- submit
    def _contact(self, contact: object, region: str | None) -> dict[str, str]:
        """{kind: normalized} for the given contact (email and/or phone)."""
        if not isinstance(contact, Mapping) or not contact:
            raise RequestInputError("contact: an email address and/or a phone number is needed")
        unknown = sorted(str(k) for k in contact if k not in _CONTACT_KINDS)
        if unknown:
            raise RequestInputError(f"contact: unknown field(s) {', '.join(unknown)} (known: email, phone)")
        out: dict[str, str] = {}
        country = region.split("-", 1)[0].upper() if region else self.default_region
        for key, value in contact.items():
            kind = _CONTACT_KINDS[key]
            if value is None or value == "":
                continue
            try:
                out[kind] = normalize(kind, value, default_region=country or self.default_region)
            except IdentityError as exc:
                raise RequestInputError(f"contact {key}: {exc.problem}") from None
        if not out:
            raise RequestInputError("contact: an email address and/or a phone number is needed")
        return out

    def _match_subject(self, identities: Mapping[str, str], where: str) -> str | None:
        for kind, value in identities.items():
            if kind not in self._identity_kinds:
                raise RequestInputError(
                    f"{where}: identity kind {kind!r} is unknown "
                    f"(known: {', '.join(sorted(self._identity_kinds))})"
                )
            try:
                found = self.vault.find(kind, value)
            except IdentityError as exc:
                raise RequestInputError(f"{where} {kind}: {exc.problem}") from None
            if found is not None:
                return found
        return None

    def submit(
        self,
        type: RequestType | str,
        *,
        contact: Mapping[str, str],
        region: str | None,
        details: Mapping[str, Any] | None = None,
        data_points: Mapping[str, Any] | None = None,
        subject_kind: str | None = None,
        actor: str = "privacy_center",
        now: datetime | None = None,
    ) -> Submitted:
        """Receive a request. Validates the type against the rights of the requester's
        jurisdiction, computes the due date, stores the requester's details encrypted,
        records the events and the audit entry, then mails the code or acknowledgement.

        A request of the same type from the same contact that is still open is returned
        instead (``duplicate_of``); nothing new is stored. A mail that cannot be sent does
        not undo the request: it is recorded (event ``mail_failed``) and ``code_sent`` is
        False, so the caller can offer ``resend_code``."""
        at = _utc(now)
        try:
            rtype = RequestType(type)
        except ValueError:
            raise RequestInputError(
                f"request type {type!r} is unknown (known: {', '.join(t.value for t in RequestType)})"
            ) from None
        jkey = self.cp.jurisdiction_for(region)
        jur = self.cp.jurisdictions[jkey]
        right = self.cp.right(jkey, rtype)
        if right is None:
            available = sorted(t.value for (j, t) in self.cp.rights if j == jkey)
            raise RightNotGiven(rtype.value, jkey, jur.name, available)
        norm = self._contact(contact, region)
        det = _check_json(details, "details")
        points = _check_json(data_points, "data_points")
        if subject_kind is not None and subject_kind not in self.cp.policy.subjects:
            raise RequestInputError(
                f"subject_kind {subject_kind!r} is not in the policy "
                f"(known: {', '.join(sorted(self.cp.policy.subjects))})"
            )
        child = det.get("child_report") is True
        if child and rtype is not RequestType.erase:
            raise RequestInputError(
                f"details.child_report: a child report is an 'erase' request, not {rtype.value!r}"
            )
        if rtype is RequestType.rectify:
            # Refused at once rather than when the runner reaches it: a correction of a
            # category the policy does not hold cannot be carried out.
            # (Without values the request is still taken: the team asks what to correct,
            # and the runner refuses to run it until it says.)
            values = det.get("values") or det.get("corrections") or {}
            if not isinstance(values, Mapping):
                raise RequestInputError("details.values: a rectification maps categories to corrected values")
            for cat in values:
                # Exactly a policy category, as the vault stores them (a made-up child of a
                # declared parent would pass here and fail in the job).
                if cat not in self.cp.categories:
                    hint = suggest(str(cat), sorted(self.cp.categories))
                    raise RequestInputError(
                        f"details.values: {cat!r} is not a category of the policy"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    )
        level = right.verification
        if level is Verification.email_code and EMAIL not in norm:
            raise RequestInputError(
                f"contact: verification for {rtype.value!r} in {jkey!r} is by a code sent by email; "
                "an email address is needed"
            )
        if child:
            account = det.get("account")
            if not isinstance(account, Mapping) or not account:
                raise RequestInputError(
                    "details.account: a child report names the child's account, e.g. {'email': ...}"
                )
            subject_id = self._match_subject({str(k): str(v) for k, v in account.items()}, "details.account")
        else:
            subject_id = self._match_subject(norm, "contact")
        kind0 = EMAIL if EMAIL in norm else PHONE
        requester_index = blind_index(self.keyring.index_key, kind0, norm[kind0])
        due = _utc(_as_datetime(right.deadline.add_to(at)))
        ack_by = _utc(_as_datetime(jur.acknowledge.add_to(at))) if jur.acknowledge is not None else None
        verified_now = level is Verification.none
        status = VERIFIED if verified_now else RECEIVED
        code = self._new_code() if level is Verification.email_code else None
        request_id = secrets.token_hex(16)
        payload = {"contact": norm, "details": det, "data_points": points}

        rq = T.requests.c
        key_stored = False
        try:
            with self.data.begin() as conn:
                if self.data.dialect.name == "postgresql":
                    # Serializes submits of one requester, so two at once cannot both pass
                    # the duplicate check (SQLite's BEGIN IMMEDIATE serializes them anyway).
                    lock_id = int.from_bytes(requester_index[:8], "big", signed=True)
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id})
                dup = conn.execute(
                    select(rq.id, rq.status, rq.due_at, rq.verification)
                    .where(rq.requester_index == requester_index, rq.type == rtype.value, rq.status.in_(OPEN))
                    .order_by(rq.received_at)
                    .limit(1)
                ).first()
                if dup is not None:
                    self.audit.append(
                        conn,
                        actor=actor,
                        action="request.duplicate",
                        result="duplicate",
                        detail={"request": dup.id, "type": rtype.value},
                    )
                    return Submitted(
                        request_id=dup.id,
                        status=dup.status,
                        due_at=_utc(dup.due_at),
                        verification=Verification(dup.verification),
                        duplicate_of=dup.id,
                    )
                # The key is committed before the request row: a crash in between leaves an
                # unused key (harmless), never a payload without its key.
                key = self._store_key(request_id, at)
                key_stored = True
                conn.execute(
                    insert(T.requests).values(
                        id=request_id,
                        type=rtype.value,
                        jurisdiction=jkey,
                        status=status,
                        subject_id=subject_id,
                        requester_index=requester_index,
                        payload=self._seal_payload(request_id, key, payload),
                        verification=level.value,
                        received_at=at,
                        due_at=due,
                        extended=0,
                    )
                )
                received: dict[str, Any] = {
                    "type": rtype.value,
                    "jurisdiction": jkey,
                    "verification": level.value,
                    "due": due.isoformat(),
                    "subject_matched": subject_id is not None,
                    "contact": sorted(norm),
                }
                if subject_kind is not None:
                    received["subject_kind"] = subject_kind
                if ack_by is not None:
                    received["acknowledge_by"] = ack_by.isoformat()
                events = [self._event(request_id, "received", at, actor, received)]
                if child:
                    events.append(
                        self._event(
                            request_id,
                            "child_report",
                            at,
                            actor,
                            {"on_discovery": self._child_action(), "needs_approval": True},
                        )
                    )
                if verified_now:
                    events.append(self._event(request_id, "verified", at, "system", {"method": "none"}))
                if code is not None:
                    conn.execute(
                        insert(T.request_codes).values(
                            request_id=request_id,
                            code_hash=self._code_hash(request_id, code),
                            expires_at=at + self.code_ttl,
                            attempts=0,
                        )
                    )
                    events.append(self._event(request_id, "code_sent", at, "system", {"n": 1}))
                self._events_insert(conn, events)
                self.audit.append(
                    conn,
                    actor=actor,
                    action="request.submit",
                    subject_id=subject_id,
                    detail={
                        "request": request_id,
                        "type": rtype.value,
                        "jurisdiction": jkey,
                        "verification": level.value,
                        "child_report": child,
                    },
                )
        except BaseException:
            if key_stored:
                self._drop_keys([request_id])
            raise

        # Mails go after the commit: a request is received whether or not the mail works.
        email = norm.get(EMAIL)
        code_sent = False
        post: list[dict[str, Any]] = []
        if email is not None and code is not None:
            minutes = int(self.code_ttl.total_seconds() // 60)
            letter = code_letter(
                organization=self.organization, code=code, minutes=minutes, reference=request_id
            )
            code_sent = self._mail(email, letter, request_id, "code", at, post)
        if email is not None and ack_by is not None:
            letter = acknowledgement_letter(
                organization=self.organization,
                request_type=rtype.value,
                reference=request_id,
                due=due,
                status_url=self._url(request_id),
            )
            if self._mail(email, letter, request_id, "acknowledgement", at, post):
                post.append(self._event(request_id, "acknowledged", at, "system", {"by": ack_by.isoformat()}))
        if post:
            with self.data.begin() as conn:
                self._events_insert(conn, post)
        return Submitted(
            request_id=request_id,
            status=status,
            due_at=due,
            verification=level,
            code_sent=code_sent,
            acknowledge_by=ack_by,
            subject_matched=subject_id is not None,
        )

    def _child_action(self) -> str:
        children = self.cp.policy.children
        return str(children.on_discovery.value) if children is not None else "delete_account"

    def _mail(
        self,
        to: str,
        letter: Letter,
        request_id: str,
        template: str,
        at: datetime,
        events: list[dict[str, Any]],
    ) -> bool:
        """Send; a failure becomes a ``mail_failed`` event (added to ``events``), not an error."""
        if self.mailer is None:
            events.append(
                self._event(
                    request_id, "mail_failed", at, "system", {"template": template, "error": "no mailer"}
                )
            )
            return False
        try:
            self.mailer.send(to, letter.subject, letter.text, sender=self.sender)
        except MailError as exc:
            log.warning("request %s: %s mail not sent: %s", request_id, template, exc)
            events.append(
                self._event(
                    request_id,
                    "mail_failed",
                    at,
                    "system",
                    {"template": template, "error": type(exc).__name__},
                )
            )
            return False
        return True

    def _mail_after(
        self, request_id: str, payload_blob: bytes, letter: Letter, template: str, at: datetime
    ) -> None:
        """A mail that follows a committed state change; failures are recorded."""
        self._mail_many([(request_id, payload_blob, letter, template)], at)

    def _mail_many(
        self,
        letters: Sequence[tuple[str, bytes, Letter, str]],
        at: datetime,
        contacts: Mapping[str, str] | None = None,
    ) -> None:
        """Mails that follow a committed state change, each (request id, its payload, the
        letter, the template): the addresses from ``contacts`` (request id -> email) when
        the caller has them, else from the requesters' details (one key read for all); one
        event insert for every outcome (``mailed`` or ``mail_failed``). A requester who
        gave no email, or was forgotten, is not mailed."""
        events = self._send_many(letters, at, contacts)
        if events:
            with self.data.begin() as conn:
                self._events_insert(conn, events)

    def _send_many(
        self,
        letters: Sequence[tuple[str, bytes, Letter, str]],
        at: datetime,
        contacts: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """``_mail_many`` without the event insert: the events, for the caller to insert."""
        given = contacts or {}
        need = [rid for rid, blob, _, _ in letters if rid not in given and blob]
        keys = self.load_keys(need) if need else {}
        events: list[dict[str, Any]] = []
        for rid, blob, letter, template in letters:
            email = given.get(rid)
            if email is None:
                key = keys.get(rid)
                if key is None or not blob:
                    continue  # forgotten: there is nobody to tell
                email = self._open_payload(rid, blob, key)["contact"].get(EMAIL)
                if email is None:
                    continue
            if self._mail(email, letter, rid, template, at, events):
                events.append(self._event(rid, "mailed", at, "system", {"template": template}))
        return events

    # ---------------------------------------------------------------------- verification
    def verify_code(
        self, request_id: str, code: str, *, actor: str = "privacy_center", now: datetime | None = None
    ) -> str:
        """Check the one-time code; returns the new status ("verified").

        A wrong code counts one attempt and changes nothing else (CodeRejected, with the
        attempts left); at the limit the code is locked (CodeLocked) and only a new code
        (``resend_code``) helps. An expired code is CodeExpired."""
        at = _utc(now)
        given = "".join(str(code).split()).replace("-", "")
        if not given.isdigit() or len(given) != self.code_digits:
            raise RequestInputError(f"code: {self.code_digits} digits expected")
        rc = T.request_codes.c
        outcome: VerificationFailed | None = None
        with self.data.begin() as conn:
            row = self._row(conn, request_id, lock=True)
            if row.verification != Verification.email_code.value:
                raise InvalidTransition(
                    request_id, f"it is verified by {row.verification}, not by an email code"
                )
            if row.status != RECEIVED:
                raise InvalidTransition(request_id, f"cannot verify a request that is {row.status}")
            c = conn.execute(select(T.request_codes).where(rc.request_id == request_id)).first()
            if c is None or c.used_at is not None:
                raise CodeLocked()
            if c.attempts >= self.max_attempts:
                raise CodeLocked()
            if _utc(c.expires_at) <= at:
                raise CodeExpired()
            attempts = c.attempts + 1
            # The attempt is counted before the comparison, under the row lock.
            ok = hmac.compare_digest(self._code_hash(request_id, given), c.code_hash)
            if ok:
                conn.execute(
                    update(T.request_codes)
                    .where(rc.request_id == request_id)
                    .values(attempts=attempts, used_at=at)
                )
                self._set_status(conn, row, VERIFIED, "verified", actor, at, {"method": "email_code"})
            else:
                conn.execute(
                    update(T.request_codes).where(rc.request_id == request_id).values(attempts=attempts)
                )
                left = self.max_attempts - attempts
                if left <= 0:
                    self._events_insert(
                        conn, [self._event(request_id, "code_locked", at, "system", {"attempts": attempts})]
                    )
                    self.audit.append(
                        conn,
                        actor=actor,
                        action="request.verify",
                        subject_id=row.subject_id,
                        result="locked",
                        detail={"request": request_id, "method": "email_code"},
                    )
                outcome = CodeRejected(left)
        if outcome is not None:
            raise outcome
        return VERIFIED

    def resend_code(
        self, request_id: str, *, actor: str = "privacy_center", now: datetime | None = None
    ) -> bool:
        """A new code replaces the old one (fresh attempts); at most ``max_codes`` per
        request. Returns whether the mail went out."""
        at = _utc(now)
        ev, rc = T.request_events.c, T.request_codes.c
        code = self._new_code()
        with self.data.begin() as conn:
            row = self._row(conn, request_id, lock=True)
            if row.verification != Verification.email_code.value:
                raise InvalidTransition(
                    request_id, f"it is verified by {row.verification}, not by an email code"
                )
            if row.status != RECEIVED:
                raise InvalidTransition(request_id, f"no code is needed for a request that is {row.status}")
            sent = conn.execute(
                select(func.count()).where(ev.request_id == request_id, ev.kind == "code_sent")
            ).scalar_one()
            if sent >= self.max_codes:
                raise TooManyCodes(self.max_codes)
            payload = self._open_payload(request_id, bytes(row.payload))
            email = payload["contact"].get(EMAIL)
            conn.execute(delete(T.request_codes).where(rc.request_id == request_id))
            conn.execute(
                insert(T.request_codes).values(
                    request_id=request_id,
                    code_hash=self._code_hash(request_id, code),
                    expires_at=at + self.code_ttl,
                    attempts=0,
                )
            )
            self._events_insert(conn, [self._event(request_id, "code_sent", at, actor, {"n": int(sent) + 1})])
        events: list[dict[str, Any]] = []
        minutes = int(self.code_ttl.total_seconds() // 60)
        ok = self._mail(
            email,
            code_letter(organization=self.organization, code=code, minutes=minutes, reference=request_id),
            request_id,
            "code",
            at,
            events,
        )
        if events:
            with self.data.begin() as conn:
                self._events_insert(conn, events)
        return ok

    def _points_needed(self, level: str) -> int:
        return 3 if level == Verification.three_data_points.value else 2

    def _check_point_keys(self, points: Mapping[str, Any]) -> None:
        for key in points:
            if key in self._identity_kinds or key in self.cp.categories:
                continue
            hint = suggest(key, sorted(self._identity_kinds | self.cp.categories))
            also = f"; did you mean {hint[0]!r}?" if hint else ""
            raise RequestInputError(
                f"data point {key!r}: not a category or identity kind of the policy{also}"
            )

    def _count_matches(
        self, subject_id: str | None, points: Mapping[str, Any], contact_kinds: Iterable[str], actor: str
    ) -> int:
        """How many given points equal what the vault holds (normalized, constant-time)."""
        if subject_id is None:
            return 0
        excluded = set(contact_kinds)
        contact_categories = {EMAIL: "user.contact.email", PHONE: "user.contact.phone_number"}
        skip_cats = [contact_categories[k] for k in excluded if k in contact_categories]
        kinds = [k for k in points if k in self._identity_kinds and k not in excluded]
        cats = [
            k
            for k in points
            if k not in self._identity_kinds
            and not any(is_within(k, c) or is_within(c, k) for c in skip_cats)
        ]
        try:
            held_ids = (
                self.vault.identities(subject_id, purpose="identity_verification", actor=actor)
                if kinds
                else {}
            )
            held = (
                {
                    c: v.value
                    for c, v in self.vault.read(
                        subject_id, cats, purpose="identity_verification", actor=actor
                    ).items()
                }
                if cats
                else {}
            )
        except VaultError:
            return 0
        # Matched facts, not keys: a phone given as the identity kind and as the category
        # is one point, not two.
        facts: set[str] = set()
        for kind in kinds:
            stored = held_ids.get(kind)
            try:
                given = normalize(kind, points[kind], default_region=self.default_region)
            except IdentityError:
                continue
            if stored is not None and hmac.compare_digest(given.encode(), stored.encode()):
                facts.add(contact_categories.get(kind, kind))
        for cat in cats:
            if cat not in held:
                continue
            if hmac.compare_digest(
                self._point_form(cat, points[cat]).encode(), self._point_form(cat, held[cat]).encode()
            ):
                facts.add(cat)
        return len(facts)

    def _point_form(self, category: str, value: object) -> str:
        if isinstance(value, str):
            try:
                if is_within(category, "user.contact.email"):
                    return normalize_email(value)
                if is_within(category, "user.contact.phone_number"):
                    return normalize_phone(value, self.default_region)
            except IdentityError:
                pass
        return _canonical(value)

    def verify_data_points(
        self,
        request_id: str,
        provided: Mapping[str, Any] | None = None,
        *,
        declaration: bool = False,
        actor: str = "privacy_center",
        now: datetime | None = None,
    ) -> str:
        """CCPA verification by data points: ``provided`` ({category or identity kind:
        value}; default: the data points given at submit) must match what the vault holds
        on the subject, 2 or 3 of them by the request's level; three also needs
        ``declaration`` (the requester signed a declaration under penalty of perjury).
        Returns "verified"; VerificationFailed (recorded, never saying which point) else."""
        at = _utc(now)
        with self.data.connect() as conn:
            row = self._row(conn, request_id)
        level = row.verification
        if level not in (Verification.two_data_points.value, Verification.three_data_points.value):
            raise InvalidTransition(request_id, f"it is verified by {level}, not by data points")
        if row.status != RECEIVED:
            raise InvalidTransition(request_id, f"cannot verify a request that is {row.status}")
        if level == Verification.three_data_points.value and not declaration:
            raise RequestInputError(
                "declaration: three data points also need the requester's signed declaration"
            )
        payload = self._open_payload(request_id, bytes(row.payload))
        points = (
            _check_json(provided, "data points") if provided is not None else dict(payload["data_points"])
        )
        if not points:
            raise RequestInputError("data points: none given")
        self._check_point_keys(points)
        ev = T.request_events.c
        with self.data.connect() as conn:
            failures = conn.execute(
                select(func.count()).where(ev.request_id == request_id, ev.kind == "verification_failed")
            ).scalar_one()
        if failures >= self.max_attempts:
            raise VerificationLocked()
        matches = self._count_matches(row.subject_id, points, payload["contact"], actor)
        ok = matches >= self._points_needed(level)
        method = {"method": level, "declaration": declaration}
        with self.data.begin() as conn:
            row = self._row(conn, request_id, lock=True)
            if row.status != RECEIVED:
                raise InvalidTransition(request_id, f"cannot verify a request that is {row.status}")
            if ok:
                self._set_status(conn, row, VERIFIED, "verified", actor, at, method)
            else:
                self._events_insert(conn, [self._event(request_id, "verification_failed", at, actor, method)])
                self.audit.append(
                    conn,
                    actor=actor,
                    action="request.verify",
                    subject_id=row.subject_id,
                    result="failed",
                    detail={"request": request_id, "method": level},
                )
        if not ok:
            raise VerificationFailed("the details given do not match our records")
        return VERIFIED

    def verify_signed_in(
        self, request_id: str, subject_id: str, *, actor: str = "web_session", now: datetime | None = None
    ) -> str:
        """The web session layer vouches that the signed-in person is ``subject_id``.
        A request already matched to another subject is refused (and recorded)."""
        at = _utc(now)
        try:
            subject = self.vault.subject(subject_id)
        except VaultError as exc:
            raise RequestInputError(f"subject_id: {exc}") from None
        if subject.status != "active":
            raise RequestInputError(f"subject_id: the subject is {subject.status}")
        mismatch = False
        with self.data.begin() as conn:
            row = self._row(conn, request_id, lock=True)
            if row.status != RECEIVED:
                raise InvalidTransition(request_id, f"cannot verify a request that is {row.status}")
            if row.subject_id is not None and row.subject_id != subject_id:
                mismatch = True
                self._events_insert(
                    conn, [self._event(request_id, "verification_failed", at, actor, {"method": "signed_in"})]
                )
                self.audit.append(
                    conn,
                    actor=actor,
                    action="request.verify",
                    subject_id=subject_id,
                    result="failed",
                    detail={"request": request_id, "method": "signed_in"},
                )
            else:
                self._set_status(
                    conn,
                    row,
                    VERIFIED,
                    "verified",
                    actor,
                    at,
                    {"method": "signed_in"},
                    values={"subject_id": subject_id},
                )
        if mismatch:
            raise VerificationFailed("the signed-in account is not the one this request is about")
        return VERIFIED

    # ------------------------------------------------------------------------ transitions
    def _set_status(
        self,
        conn: Connection,
        row: Any,
        to: str,
        event: str,
        actor: str,
        at: datetime,
        detail: Mapping[str, Any] | None,
        *,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """The row update, its event and its audit entry, in the caller's transaction. The
        update is guarded by the status read under the lock."""
        rq = T.requests.c
        res = conn.execute(
            update(T.requests)
            .where(rq.id == row.id, rq.status == row.status)
            .values(status=to, **dict(values or {}))
        )
        if res.rowcount != 1:  # pragma: no cover - the row lock makes this unreachable
            raise InvalidTransition(row.id, "it changed meanwhile")
        self._events_insert(conn, [self._event(row.id, event, at, actor, detail)])
        subject = (values or {}).get("subject_id", row.subject_id)
        self.audit.append(
            conn,
            actor=actor,
            action=f"request.{event}",
            subject_id=subject,
            detail={"request": row.id, "type": row.type, "status": to, **dict(detail or {})},
        )

    def approve(self, request_id: str, actor: str, *, now: datetime | None = None) -> str:
        """The privacy team approves a verified request (optional, except for child reports)."""
        at = _utc(now)
        with self.data.begin() as conn:
            row = self._row(conn, request_id, lock=True)
            if row.status != VERIFIED:
                hint = " (it must be verified first)" if row.status == RECEIVED else ""
                raise InvalidTransition(request_id, f"cannot approve a request that is {row.status}{hint}")
            self._set_status(conn, row, APPROVED, "approved", actor, at, None)
        return APPROVED

    def deny(
        self,
        request_id: str,
        reason: DenyReason | str,
        actor: str,
        *,
        note: str | None = None,
        now: datetime | None = None,
        from_job: bool = False,
    ) -> str:
        """Refuse the request with one of the legal reasons (DenyReason); ``note`` adds
        free text without personal data (required for ``other``). The requester is told.
        A running request is denied only by its own job (``from_job``: e.g. it found a legal
        hold on everything); a person cannot deny it halfway through."""
        at = _utc(now)
        if reason is None or reason == "":
            raise RequestInputError(f"reason: required (one of {', '.join(r.value for r in DenyReason)})")
        try:
            why = DenyReason(reason)
        except ValueError:
            raise RequestInputError(
                f"reason {reason!r}: one of {', '.join(r.value for r in DenyReason)}"
            ) from None
        text_ = _check_text(note, "note", required=why is DenyReason.other)
        detail: dict[str, Any] = {"reason": why.value}
        if text_:
            detail["note"] = text_
        with self.data.begin() as conn:
            row = self._row(conn, request_id, lock=True)
            if row.status not in OPEN:
                raise InvalidTransition(request_id, f"cannot deny a request that is {row.status}")
            if row.status == RUNNING and not from_job:
                # Its job may have erased or sent data already: the outcome is what the job
                # did (done or partially done), never a refusal after the fact.
                raise InvalidTransition(
                    request_id, "cannot deny a request that is running: its job decides how it ends"
                )
            self._set_status(conn, row, DENIED, "denied", actor, at, detail, values={"closed_at": at})
        jur = self.cp.jurisdictions.get(row.jurisdiction)
        authority = None
        if jur is not None and jur.supervisory_authority is not None:
            sa = jur.supervisory_authority
            authority = " ".join(x for x in (sa.name, f"({sa.url})" if sa.url else None) if x) or None
        reason_text = DENY_TEXT[why] if why is not DenyReason.other else (text_ or "")
        if text_ and why is not DenyReason.other:
            reason_text += f"\n{text_}"
        letter = denied_letter(
            organization=self.organization,
            request_type=row.type,
            reference=request_id,
            reason=reason_text,
            authority=authority,
            status_url=self._url(request_id),
        )
        self._mail_after(request_id, bytes(row.payload), letter, "denied", at)
        return DENIED

    def extend(self, request_id: str, reason: str, actor: str, *, now: datetime | None = None) -> datetime:
        """Take the policy's one extension (GDPR: 2 months; CCPA: 45 days), counted from the
        current due date; the requester is told why. Returns the new due date."""
        at = _utc(now)
        why = _check_text(reason, "reason", required=True)
        with self.data.begin() as conn:
            row = self._row(conn, request_id, lock=True)
            if row.status not in OPEN:
                raise InvalidTransition(request_id, f"cannot extend a request that is {row.status}")
            if row.extended:
                raise InvalidTransition(
                    request_id, "its deadline was already extended once; the law allows one extension"
                )
            right = self.cp.right(row.jurisdiction, row.type)
            if right is None or right.extension is None:
                raise InvalidTransition(
                    request_id, f"the policy gives no extension for {row.type!r} in {row.jurisdiction!r}"
                )
            due = _utc(_as_datetime(right.extension.add_to(_utc(row.due_at))))
            rq = T.requests.c
            conn.execute(update(T.requests).where(rq.id == request_id).values(due_at=due, extended=1))
            detail = {"reason": why, "due": due.isoformat(), "by": str(right.extension)}
            self._events_insert(conn, [self._event(request_id, "extended", at, actor, detail)])
            self.audit.append(
                conn,
                actor=actor,
                action="request.extended",
                subject_id=row.subject_id,
                detail={"request": request_id, "type": row.type, **detail},
            )
        assert why is not None
        letter = extended_letter(
            organization=self.organization,
            request_type=row.type,
            reference=request_id,
            reason=why,
            due=due,
            status_url=self._url(request_id),
        )
        self._mail_after(request_id, bytes(row.payload), letter, "extended", at)
        return due

    def start(
        self,
        request_id: str,
        *,
        job_id: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> str:
        """Mark a verified (or approved) request running, with the job that fulfils it."""
        self.start_many([request_id], job_id=job_id, actor=actor, now=now)
        return RUNNING

    def start_many(
        self,
        request_ids: Sequence[str],
        *,
        job_id: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> None:
        """``start`` for a batch that one job serves: one UPDATE, one event insert and one
        audit append for all. Any request not ready raises and none is started."""
        with self.data.begin() as conn:
            self.start_many_in(conn, request_ids, job_id=job_id, actor=actor, now=now)

    def start_many_in(
        self,
        conn: Connection,
        request_ids: Sequence[str],
        *,
        job_id: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
        rows: Mapping[str, Any] | None = None,
        audit: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """``start_many`` in the caller's transaction on the data store: the runner starts
        the requests in the transaction that creates their job, so a crash leaves both or
        neither. ``rows``: the requests' rows as ``lock_for_run`` read them in this
        transaction (not read again); ``audit``: entries of the caller's to append with
        the start's own (one extension of the audit chain)."""
        at = _utc(now)
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            return
        if rows is None:
            rows = self.lock_for_run(conn, ids)
        for rid in ids:
            r = rows[rid]
            if r.status not in (VERIFIED, APPROVED):
                hint = " (verify it first)" if r.status == RECEIVED else ""
                raise InvalidTransition(rid, f"cannot run a request that is {r.status}{hint}")
            if r.child_report and r.status != APPROVED:
                raise InvalidTransition(rid, "a child report runs only once the privacy team approved it")
        conn.execute(_START, {"p_ids": ids, "p_job": job_id})
        detail = {"job": job_id} if job_id else None
        self._events_insert(conn, [self._event(rid, "running", at, actor, detail) for rid in ids])
        self.audit.append_many(
            conn,
            [
                *audit,
                *(
                    {
                        "actor": actor,
                        "action": "request.running",
                        "subject_id": rows[rid].subject_id,
                        "detail": {"request": rid, "type": rows[rid].type, "job": job_id},
                    }
                    for rid in ids
                ),
            ],
        )

    def lock_for_run(self, conn: Connection, request_ids: Sequence[str]) -> dict[str, Any]:
        """The requests' rows, locked in the caller's transaction (one SELECT per 1,000),
        each with ``child_report`` (a child report runs only once approved). Unknown ids
        raise UnknownRequest."""
        ids = list(dict.fromkeys(request_ids))
        rows: dict[str, Any] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            rows.update((r.id, r) for r in conn.execute(_Q_LOCK, {"p_ids": ids[i : i + _IN_CHUNK]}))
        for rid in ids:
            if rid not in rows:
                raise UnknownRequest(rid)
        return rows

    def requesters(
        self,
        rows: Mapping[str, Any],
        *,
        purpose: str = "request_fulfilment",
        actor: str = "system",
        record: list[dict[str, Any]] | None = None,
        keys_out: dict[str, bytes] | None = None,
    ) -> dict[str, Requester]:
        """``requester`` for a batch whose rows the caller read (``lock_for_run``): one
        key read for all. Each read is audited: appended at once in a transaction of its
        own, or, with ``record``, added to that list for the caller to append in the
        transaction that acts on what was read. ContactForgotten if one is forgotten.
        ``keys_out`` receives the requests' data keys (the runner carries them in its
        job's encrypted inputs, so its steps need not read them again)."""
        keys = self.load_keys(list(rows))
        if keys_out is not None:
            keys_out.update(keys)
        out: dict[str, Requester] = {}
        entries: list[dict[str, Any]] = []
        for rid, row in rows.items():
            payload = self._open_payload(rid, bytes(row.payload), keys.get(rid))
            out[rid] = Requester(
                contact=dict(payload["contact"]),
                details=dict(payload["details"]),
                data_points=dict(payload["data_points"]),
            )
            entries.append(
                {
                    "actor": actor,
                    "action": "request.read_requester",
                    "purpose": purpose,
                    "subject_id": row.subject_id,
                    "detail": {"request": rid},
                }
            )
        if record is not None:
            record.extend(entries)
        elif entries:
            self.audit.append_many(None, entries)
        return out

    def job_failed(
        self,
        job_id: str,
        *,
        step: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> list[str]:
        """The job serving some running requests failed: each request still running under
        it gets a ``failed`` event (the job and the failing step kind; no personal data)
        and goes back to where it was before it ran (approved if it was approved, else
        verified), from where the privacy team runs it again or denies it. Returns the ids
        moved. Idempotent: a second call finds none running under the job."""
        at = _utc(now)
        rq, ev = T.requests.c, T.request_events.c
        with self.data.begin() as conn:
            ids = list(
                conn.execute(
                    select(rq.id).where(rq.job_id == job_id, rq.status == RUNNING).order_by(rq.id)
                ).scalars()
            )
            if not ids:
                return []
            rows = self._rows(conn, ids)
            ids = [rid for rid in ids if rows[rid].status == RUNNING and rows[rid].job_id == job_id]
            approved = set(
                conn.execute(
                    select(ev.request_id).where(ev.request_id.in_(ids), ev.kind == "approved")
                ).scalars()
            )
            back = {rid: APPROVED if rid in approved else VERIFIED for rid in ids}
            for status in (VERIFIED, APPROVED):
                part = [rid for rid in ids if back[rid] == status]
                if part:
                    conn.execute(
                        update(T.requests)
                        .where(rq.id.in_(part), rq.status == RUNNING, rq.job_id == job_id)
                        .values(status=status, job_id=None)
                    )
            detail: dict[str, Any] = {"job": job_id}
            if step:
                detail["step"] = step
            self._events_insert(
                conn, [self._event(rid, "failed", at, actor, {**detail, "status": back[rid]}) for rid in ids]
            )
            self.audit.append_many(
                conn,
                [
                    {
                        "actor": actor,
                        "action": "request.failed",
                        "subject_id": rows[rid].subject_id,
                        "detail": {"request": rid, "type": rows[rid].type, "status": back[rid], **detail},
                    }
                    for rid in ids
                ],
            )
        return ids

    def _rows(self, conn: Connection, ids: Sequence[str]) -> dict[str, Any]:
        rq = T.requests.c
        rows: dict[str, Any] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            q = select(T.requests).where(rq.id.in_(ids[i : i + _IN_CHUNK])).with_for_update()
            rows.update((r.id, r) for r in conn.execute(q))
        for rid in ids:
            if rid not in rows:
                raise UnknownRequest(rid)
        return rows

    def finish(
        self,
        request_id: str,
        *,
        partial: bool = False,
        detail: Mapping[str, Any] | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> str:
        """A running request is done (or done in part: ``partial``, e.g. exempted fields);
        ``detail`` (no personal data) goes into the event. The requester is told."""
        return self.finish_many({request_id: partial}, detail=detail, actor=actor, now=now)[request_id]

    def finish_many(
        self,
        outcomes: Mapping[str, bool],
        *,
        detail: Mapping[str, Any] | None = None,
        details: Mapping[str, Mapping[str, Any]] | None = None,
        actor: str = "system",
        now: datetime | None = None,
        job_id: str | None = None,
        contacts: Mapping[str, str] | None = None,
        with_close: Callable[[Connection, list[str]], None] | None = None,
    ) -> dict[str, str]:
        """``finish`` for a batch: {request id: partial?}. ``details`` adds, per request,
        to the common ``detail`` (neither may hold personal data). One UPDATE per outcome
        (done, partial), one event insert and one audit append for all; then the mails,
        with one key read and one event insert for all.

        ``with_close(conn, ids)``: more writes that commit with the closing, given the
        requests this call closes (none: not called), e.g. an erasure's crypto-shred, so
        that a request is never closed without them nor they done without its closing.
        Their audit entries and the closing's extend the chain once.

        Without ``job_id``, any request not running raises and none is finished. With it,
        only the requests still running under that job are finished and the others left
        alone (an earlier attempt of the job's step finished them): a step may run twice.
        ``contacts`` (request id -> email) spares decrypting the requesters' details when
        the caller has them. Returns {request id: done | partial} of those finished."""
        at = _utc(now)
        ids = list(dict.fromkeys(outcomes))
        if not ids:
            return {}
        extra = _check_json(detail, "detail")
        own = {rid: _check_json(d, f"details[{rid!r}]") for rid, d in (details or {}).items() if d}
        stray = sorted(set(own) - set(ids))
        if stray:
            raise RequestInputError(f"details: request(s) {', '.join(stray)} are not being finished")
        if extra or own:
            found = find_personal_data(json.dumps([extra, own]))
            if found:
                raise RequestInputError(f"detail: looks like it contains {found}; leave personal data out")
        result = {rid: PARTIAL if outcomes[rid] else DONE for rid in ids}
        with self.data.begin() as conn, self.audit.batch(conn):
            rows = self._close(conn, ids, result, at, job_id)
            if job_id is None:
                for rid in ids:
                    if rid not in rows:
                        rq = T.requests.c
                        status = conn.execute(select(rq.status).where(rq.id == rid)).scalar()
                        if status is None:
                            raise UnknownRequest(rid)
                        raise InvalidTransition(
                            rid, f"cannot finish a request that is {status} (not running)"
                        )
            ids = [rid for rid in ids if rid in rows]
            if not ids:
                return {}
            if with_close is not None:
                with_close(conn, ids)
            said = {rid: {**extra, **own.get(rid, {})} for rid in ids}
            self._events_insert(
                conn, [self._event(rid, result[rid], at, actor, said[rid] or None) for rid in ids]
            )
            self.audit.append_many(
                conn,
                [
                    {
                        "actor": actor,
                        "action": f"request.{result[rid]}",
                        "subject_id": rows[rid].subject_id,
                        "detail": {"request": rid, "type": rows[rid].type, **said[rid]},
                    }
                    for rid in ids
                ],
            )
        # The mails follow the commit: rows are not held locked while mail is sent, and a
        # requester is never told of an outcome that a rollback took back.
        letters = [
            (
                rid,
                bytes(rows[rid].payload),
                done_letter(
                    organization=self.organization,
                    request_type=rows[rid].type,
                    reference=rid,
                    partial=result[rid] == PARTIAL,
                    status_url=self._url(rid),
                ),
                result[rid],
            )
            for rid in ids
        ]
        self._mail_many(letters, at, contacts)
        return {rid: result[rid] for rid in ids}

    def _close(
        self,
        conn: Connection,
        ids: Sequence[str],
        result: Mapping[str, str],
        at: datetime,
        job_id: str | None,
    ) -> dict[str, Any]:
        """Close the requests still running (under ``job_id``, when given) with their
        outcome; returns the rows closed (id, subject_id, type, payload). With UPDATE ...
        RETURNING (PostgreSQL, SQLite) the update is the read: one statement per outcome
        and 1,000 requests."""
        rows: dict[str, Any] = {}
        returning = conn.dialect.update_returning
        if not returning:  # pragma: no cover - PostgreSQL and SQLite have it
            locked = self._rows(conn, ids)
            ids = [
                rid
                for rid in ids
                if locked[rid].status == RUNNING and (job_id is None or locked[rid].job_id == job_id)
            ]
            rows = {rid: locked[rid] for rid in ids}
        q = _CLOSE if job_id is None else _CLOSE_OF_JOB
        for status in (DONE, PARTIAL):
            part = [rid for rid in ids if result[rid] == status]
            for i in range(0, len(part), _IN_CHUNK):
                chunk = part[i : i + _IN_CHUNK]
                params = {"p_ids": chunk, "p_status": status, "p_at": at, "p_job": job_id}
                if returning:
                    rows.update((r.id, r) for r in conn.execute(q, params))
                else:  # pragma: no cover
                    conds = [_rq.id.in_(chunk), _rq.status == RUNNING]
                    if job_id is not None:
                        conds.append(_rq.job_id == job_id)
                    conn.execute(update(T.requests).where(*conds).values(status=status, closed_at=at))
        return rows

    # ------------------------------------------------------------------------------ reads
    def _view(self, r: Any, events: Sequence[RequestEvent], at: datetime) -> RequestView:
        due = _utc(r.due_at)
        return RequestView(
            id=r.id,
            type=r.type,
            jurisdiction=r.jurisdiction,
            status=r.status,
            verification=r.verification,
            subject_id=r.subject_id,
            received_at=_utc(r.received_at),
            due_at=due,
            extended=bool(r.extended),
            closed_at=_utc_or_none(r.closed_at),
            job_id=r.job_id,
            child_report=any(e.kind == "child_report" for e in events),
            overdue=r.status in OPEN and due < at,
            events=tuple(events),
        )

    _VIEW_COLS = (
        "id",
        "type",
        "jurisdiction",
        "status",
        "verification",
        "subject_id",
        "received_at",
        "due_at",
        "extended",
        "closed_at",
        "job_id",
    )

    def _events_of(self, conn: Connection, ids: Sequence[str]) -> dict[str, list[RequestEvent]]:
        ev = T.request_events.c
        out: dict[str, list[RequestEvent]] = {rid: [] for rid in ids}
        for i in range(0, len(ids), _IN_CHUNK):
            q = (
                select(ev.request_id, ev.kind, ev.at, ev.actor, ev.detail)
                .where(ev.request_id.in_(ids[i : i + _IN_CHUNK]))
                .order_by(ev.request_id, ev.id)
            )
            for r in conn.execute(q):
                out[r.request_id].append(
                    RequestEvent(r.kind, _utc(r.at), r.actor, json.loads(r.detail) if r.detail else None)
                )
        return out

    def status(self, request_id: str, *, now: datetime | None = None) -> RequestView:
        """The request and its events, without personal data."""
        at = _utc(now)
        cols = [T.requests.c[c] for c in self._VIEW_COLS]
        with self.data.connect() as conn:
            r = conn.execute(select(*cols).where(T.requests.c.id == request_id)).first()
            if r is None:
                raise UnknownRequest(request_id)
            events = self._events_of(conn, [request_id])[request_id]
        return self._view(r, events, at)

    def events(self, request_id: str) -> list[RequestEvent]:
        return list(self.status(request_id).events)

    def queue(
        self,
        *,
        status: str | Iterable[str] | None = None,
        overdue: bool = False,
        jurisdiction: str | None = None,
        limit: int | None = None,
        now: datetime | None = None,
    ) -> list[RequestView]:
        """Requests by due date, soonest first: the console's work list. ``status``: one
        status or several (default: all); ``overdue``: open and past due only."""
        at = _utc(now)
        rq = T.requests.c
        q = select(*[rq[c] for c in self._VIEW_COLS])
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            bad = sorted(set(wanted) - set(OPEN) - set(CLOSED))
            if bad:
                raise RequestInputError(f"status {', '.join(bad)}: one of {', '.join((*OPEN, *CLOSED))}")
            q = q.where(rq.status.in_(wanted))
        if overdue:
            q = q.where(rq.status.in_(OPEN), rq.due_at < self._ts(at))
        if jurisdiction is not None:
            q = q.where(rq.jurisdiction == jurisdiction)
        q = q.order_by(rq.due_at, rq.id)
        if limit is not None:
            q = q.limit(limit)
        with self.data.connect() as conn:
            rows = conn.execute(q).all()
            events = self._events_of(conn, [r.id for r in rows])
        return [self._view(r, events[r.id], at) for r in rows]

    # ------------------------------------------------------------------ personal details
    def requester(
        self, request_id: str, *, purpose: str = "request_fulfilment", actor: str = "system"
    ) -> Requester:
        """What the requester gave (contact, details, data points), decrypted; audited."""
        with self.data.connect() as conn:
            row = self._row(conn, request_id)
        payload = self._open_payload(request_id, bytes(row.payload))
        self.audit.append(
            None,
            actor=actor,
            action="request.read_requester",
            purpose=purpose,
            subject_id=row.subject_id,
            detail={"request": request_id},
        )
        return Requester(
            contact=dict(payload["contact"]),
            details=dict(payload["details"]),
            data_points=dict(payload["data_points"]),
        )

    def contact(
        self, request_id: str, *, purpose: str = "request_mail", actor: str = "system"
    ) -> dict[str, str]:
        """The requester's contact ({"email": ..., "phone_number": ...}, normalized)."""
        return self.requester(request_id, purpose=purpose, actor=actor).contact

    def forget_contact(self, request_id: str, *, actor: str = "system", now: datetime | None = None) -> None:
        """Destroy the request's key (crypto-shred the requester's details) once it is
        closed; the request row and its events stay, so the metrics do. Idempotent."""
        at = _utc(now)
        with self.data.connect() as conn:
            row = self._row(conn, request_id)
        if row.status not in CLOSED:
            raise InvalidTransition(request_id, f"its requester is still needed: it is {row.status}")
        if not bytes(row.payload):
            return  # forgotten already (a forget that stopped after the key finishes here)
        self._forget([request_id], actor, at, {request_id: row.subject_id})

    def _forget(self, ids: list[str], actor: str, at: datetime, subjects: Mapping[str, str | None]) -> None:
        # The key first: once it is gone every copy of the payload, backups included, is noise.
        self._drop_keys(ids)
        rq = T.requests.c
        with self.data.begin() as conn:
            for i in range(0, len(ids), _IN_CHUNK):
                part = ids[i : i + _IN_CHUNK]
                conn.execute(
                    update(T.requests)
                    .where(rq.id.in_(part))
                    .values(payload=b"", requester_index=_FORGOTTEN_INDEX)
                )
            self._events_insert(conn, [self._event(rid, "contact_forgotten", at, actor) for rid in ids])
            self.audit.append_many(
                conn,
                [
                    {
                        "actor": actor,
                        "action": "request.contact_forgotten",
                        "subject_id": subjects.get(rid),
                        "detail": {"request": rid},
                    }
                    for rid in ids
                ],
            )

    def forget_expired(self, *, actor: str = "retention", now: datetime | None = None) -> int:
        """Forget the requester of every request closed longer ago than its jurisdiction
        keeps request records (``records_kept``; 24 months where the policy says nothing,
        LAW-13). Set-based; returns how many were forgotten."""
        at = _utc(now)
        kept = {key: (j.records_kept or _DEFAULT_RECORDS_KEPT) for key, j in self.cp.jurisdictions.items()}
        # Rows that may be due: closed before now minus the shortest period (approximately,
        # a little early); each is then checked exactly with its own period.
        shortest = min((p.approx_days() for p in kept.values()), default=_DEFAULT_RECORDS_KEPT.approx_days())
        cutoff = at - timedelta(days=max(0.0, shortest * 0.9 - 3))
        rq = T.requests.c
        with self.data.connect() as conn:
            rows = conn.execute(
                select(rq.id, rq.jurisdiction, rq.closed_at, rq.subject_id).where(
                    rq.status.in_(CLOSED),
                    rq.closed_at <= self._ts(cutoff),
                    rq.requester_index != _FORGOTTEN_INDEX,
                )
            ).all()
        due = [
            r
            for r in rows
            if _as_datetime(kept.get(r.jurisdiction, _DEFAULT_RECORDS_KEPT).add_to(_utc(r.closed_at))) <= at
        ]
        if not due:
            return 0
        self._forget([r.id for r in due], actor, at, {r.id: r.subject_id for r in due})
        return len(due)

    # ----------------------------------------------------------------------------- metrics
    def metrics(self, year: int, *, jurisdiction: str | None = None) -> list[dict[str, Any]]:
        """LAW-13: per request type, requests received in ``year`` and how they ended:
        done (complied), partial (complied in part), denied, still open, and the median
        days from receipt to the answer of those closed."""
        start = datetime(year, 1, 1, tzinfo=UTC)
        end = datetime(year + 1, 1, 1, tzinfo=UTC)
        rq = T.requests.c
        where = [rq.received_at >= self._ts(start), rq.received_at < self._ts(end)]
        if jurisdiction is not None:
            where.append(rq.jurisdiction == jurisdiction)

        def count(*statuses: str) -> Any:
            return func.sum(case((rq.status.in_(statuses), 1), else_=0))

        q = (
            select(
                rq.type,
                func.count().label("received"),
                count(DONE).label("done"),
                count(PARTIAL).label("partial"),
                count(DENIED).label("denied"),
                count(*OPEN).label("open"),
            )
            .where(*where)
            .group_by(rq.type)
            .order_by(rq.type)
        )
        durations = select(rq.type, rq.received_at, rq.closed_at).where(
            *where, and_(rq.status.in_(CLOSED), rq.closed_at.is_not(None))
        )
        with self.data.connect() as conn:
            counts = conn.execute(q).all()
            days: dict[str, list[float]] = {}
            for t, received, closed in conn.execute(durations):
                days.setdefault(t, []).append((_utc(closed) - _utc(received)).total_seconds() / 86400)
        return [
            {
                "type": r.type,
                "received": int(r.received),
                "done": int(r.done or 0),
                "partial": int(r.partial or 0),
                "denied": int(r.denied or 0),
                "open": int(r.open or 0),
                "median_days": round(statistics.median(days[r.type]), 1) if r.type in days else None,
            }
            for r in counts
        ]
