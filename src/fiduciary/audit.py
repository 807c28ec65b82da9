"""The audit trail: a hash-chained, append-only log with signed checkpoints.

Every entry records who (actor) did what (action), for which purpose, about whom (a
pseudonym of the subject, never the id itself) and with what result. Entries form a chain:

    hash(n) = sha256(hash(n-1) || canonical JSON [seq, at, actor, action, purpose,
                                                  subject, result, detail])

so editing, deleting or moving a row breaks the chain where it happened. The chain alone
uses no key: someone with write access to the database could rewrite a whole tail and
recompute every hash. Every ``checkpoint_every`` entries the log therefore signs
(seq, hash) with the keyring's Ed25519 key; a rewrite reaching back before a checkpoint is
caught there. The entries after the last checkpoint are protected by the chain only, and
truncating the log together with its last checkpoints can only be caught by comparing with
checkpoints kept elsewhere (``checkpoints()`` lists them for export).

Appenders lock the head row (``audit_head``, id 1), so concurrent processes extend one
chain; an entry appended inside a caller's transaction commits, or rolls back, with it.
Extending the chain costs two statements whatever the number of entries (the locked read
of the head, one INSERT of the rows; on SQLite and PostgreSQL a trigger moves the head to
the last row inserted, elsewhere a third statement does): ``append_many`` writes a batch that
way, and ``batch(conn)`` collects every entry appended on a connection during a block
(whichever component appends it) into one such extension at the block's end.

The verifier reads the log in seq order, in chunks (bounded memory), and names each
problem with its seq and kind:

- ``edited``: the row's content no longer matches its hash (or a row was rewritten with a
  recomputed hash: the next entry no longer links to it);
- ``deleted``: seqs missing inside the log;
- ``reordered``: a row sits at another seq than the one it was written with (the seq is
  under the hash; the verifier finds the seq the row's hash was computed with), or a row
  links to an entry other than its predecessor;
- ``inserted``: a row that is not part of the chain: after the head, or a copy of an entry
  that is still in its place;
- ``bad_checkpoint``: a checkpoint's signature is invalid, its hash is not the entry's, it
  is missing, or it signs entries that are gone;
- ``head_mismatch``: the head row disagrees with the last entry (the tail was removed).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, Insert, Row, bindparam, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from fiduciary.store.tables import audit_checkpoints, audit_head, audit_log
from fiduciary.vault.keyring import Keyring

__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditLog",
    "AuditProblem",
    "Checkpoint",
    "ProblemKind",
    "VerifyReport",
    "find_personal_data",
]

# The prev_hash of entry 1.
GENESIS = "0" * 64
HEAD_ID = 1
# Where a trigger on audit_log keeps the head current (migration data_0009): one statement
# less per extension of the chain.
HEAD_BY_TRIGGER = frozenset({"sqlite", "postgresql"})
CHECKPOINT_DOMAIN = b"fiduciary-audit-checkpoint/1\n"

# Field limits, from the table's column sizes: checked up front so that a too-long value is
# a clear error naming the field, not a driver error (or silent truncation) mid-transaction.
LIMITS = {"actor": 128, "action": 64, "purpose": 64, "result": 32}
ENTRY_KEYS = frozenset({"actor", "action", "purpose", "subject_id", "result", "detail"})
REQUIRED_KEYS = frozenset({"actor", "action"})

# Verifier bounds: the log is streamed in chunks; what it keeps about problems is bounded
# too, so verifying a badly damaged log of any size runs in bounded memory.
CHUNK = 5000
MAX_TRACKED = 10_000  # suspicious rows / link breaks / gaps kept for classification
BRUTE_FORCE_BUDGET = 200_000  # hash evaluations spent guessing where moved rows came from

ProblemKind = Literal["edited", "deleted", "reordered", "inserted", "bad_checkpoint", "head_mismatch"]


# -- personal data guard ---------------------------------------------------------------------

_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+\.[A-Za-z]{2,}")
# A phone-like run: 7 to 15 digits written with '+' or with phone separators (space, hyphen,
# parentheses). Bare digit strings are left alone (record ids, counts), as are dates.
_PHONE = re.compile(r"(?<![\w.+])\+?\(?\d[\d ()-]{5,}\d(?![\w.])")
# Any run of 7+ characters a phone number is written with: cheap to search (no lookbehind),
# and nothing _PHONE matches can lack one.
_PHONE_RUN = re.compile(r"[\d(+][\d ()+-]{6,}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _looks_like_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if not 7 <= digits <= 15:
        return False
    if _DATE.match(candidate):
        return False
    return candidate.startswith("+") or any(ch in " ()-" for ch in candidate)


def find_personal_data(text: str) -> str | None:
    """What in ``text`` looks like an email address or a phone number, or None."""
    m = _EMAIL.search(text)
    if m:
        return f"an email address ({_mask(m.group())})"
    for m in _PHONE.finditer(text):
        if _looks_like_phone(m.group()):
            return f"a phone number ({_mask(m.group())})"
    return None


def _suspicious(text: str) -> bool:
    """The fast test: does ``text`` contain anything ``find_personal_data`` would name?"""
    if "@" in text and _EMAIL.search(text):
        return True
    if _PHONE_RUN.search(text) is None:  # the usual case: a cheap pattern rules it out
        return False
    return any(_looks_like_phone(m.group()) for m in _PHONE.finditer(text))


def _mask(value: str) -> str:
    # The error message must not itself spread the personal data it caught (logs, traces).
    return value[:2] + "…" if len(value) > 2 else "…"


def _check_no_personal_data(value: Any, where: str) -> None:
    if isinstance(value, str):
        found = find_personal_data(value)
        if found:
            raise ValueError(
                f"audit {where} looks like {found}: the audit log holds no personal data in clear; "
                "pass the subject as subject_id (it is pseudonymized) and leave contact details out"
            )
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _check_no_personal_data(k, f"{where} key {k!r}" if not isinstance(k, str) else f"{where} key")
            _check_no_personal_data(v, f"{where}[{k!r}]")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_no_personal_data(v, f"{where}[{i}]")


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    purpose: str | None
    subject: str | None  # the pseudonym
    result: str
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    at: datetime
    hash: str
    key_id: str
    signature: str


@dataclass(frozen=True)
class AuditProblem:
    seq: int
    kind: ProblemKind
    message: str


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    checkpoints: int
    problems: list[AuditProblem]
    head_seq: int = 0
    last_checkpoint: int | None = None
    omitted: int = 0  # problems found beyond those listed
    key_id: str = ""

    def to_text(self) -> str:
        cover = (
            f"last signed checkpoint at seq {self.last_checkpoint:,}"
            if self.last_checkpoint is not None
            else "no signed checkpoint yet"
        )
        tail = self.head_seq - (self.last_checkpoint or 0)
        head = (
            f"audit log: {self.entries:,} entries, {self.checkpoints:,} checkpoints "
            f"(key {self.key_id}), {cover}"
        )
        lines = [head]
        if tail > 0:
            what = "entry is" if tail == 1 else f"{tail:,} entries are"
            lines.append(f"  the last {what} protected by the hash chain only")
        if self.ok:
            lines.append("OK: the chain is intact and every checkpoint is valid")
        else:
            total = len(self.problems) + self.omitted
            lines.append(f"FAILED: {total:,} problem{'s' if total != 1 else ''}")
            lines.extend(f"  seq {p.seq}: {p.kind}: {p.message}" for p in self.problems)
            if self.omitted:
                lines.append(f"  ... and {self.omitted:,} more")
        return "\n".join(lines)


# -- hashing ---------------------------------------------------------------------------------


def _utc(at: datetime) -> datetime:
    # SQLite gives back naive datetimes (stored as UTC by this module); PostgreSQL gives them
    # in the session's time zone. Both become aware UTC, so the hash input is the same.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _iso(at: datetime) -> str:
    return _utc(at).isoformat(timespec="microseconds")


_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode
# The stored form of a detail: canonical (sorted keys, no spaces), so equal details hash equal.
_detail_json = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


def _entry_hash(
    prev_hash: str,
    seq: int,
    at_iso: str,
    actor: str,
    action: str,
    purpose: str | None,
    subject: str | None,
    result: str,
    detail: str | None,
) -> str:
    # A JSON array in a fixed order is canonical; ``detail`` enters as its stored canonical
    # text, so verifying never re-serializes (and cannot disagree about number formats).
    # Written out rather than json.dumps'd: the same bytes (the test suite checks), at a
    # third of the cost, which matters at tens of thousands of entries per second.
    payload = (
        f"[{seq:d},{_jstr(at_iso)},{_jstr(actor)},{_jstr(action)},{_jopt(purpose)},"
        f"{_jopt(subject)},{_jstr(result)},{_jopt(detail)}]"
    )
    return hashlib.sha256(f"{prev_hash}{payload}".encode("ascii")).hexdigest()


_jstr = json.encoder.encode_basestring_ascii  # a JSON string literal, \u-escaped to ASCII


def _jopt(value: str | None) -> str:
    return "null" if value is None else _jstr(value)


def _entry_hash_reference(prev_hash: str, seq: int, *fields: str | None) -> str:
    """The definition _entry_hash implements: sha256(prev_hash || canonical JSON array)."""
    payload = _dumps([seq, *fields])
    return hashlib.sha256(prev_hash.encode("ascii") + payload.encode("ascii")).hexdigest()


_last_iso: tuple[datetime | None, str] = (None, "")


def _iso_cached(at: datetime) -> str:
    # Entries appended together share their time: converting it once per run of equal
    # times saves a third of the verifier's time per entry.
    # (One tuple, read once: safe with verifiers running in several threads.)
    global _last_iso
    cached = _last_iso
    if cached[0] == at:
        return cached[1]
    iso = _iso(at)
    _last_iso = (at, iso)
    return iso


def _row_hash(row: Row[Any], seq: int | None = None) -> str:
    return _entry_hash(
        row.prev_hash,
        row.seq if seq is None else seq,
        _iso_cached(row.at),
        row.actor,
        row.action,
        row.purpose,
        row.subject,
        row.result,
        row.detail,
    )


def _checkpoint_message(seq: int, entry_hash: str, at_iso: str) -> bytes:
    return CHECKPOINT_DOMAIN + f"{seq}\n{entry_hash}\n{at_iso}".encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id of a checkpoint key, as Keyring.verify_key_id() computes it."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()[:16]


# -- the log ---------------------------------------------------------------------------------

# The head's statements, built once (an append runs them every time).
_LOCK_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == HEAD_ID).with_for_update()
_SET_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == HEAD_ID)
    .values(seq=bindparam("p_seq"), hash=bindparam("p_hash"))
)


# (actor, action, purpose, subject pseudonym, result, detail JSON): an entry ready to chain.
_Prepared = tuple[str, str, str | None, str | None, str, str | None]


def _where(index: int | None) -> str:
    return "entry" if index is None else f"entries[{index}]"


def _bad_field(index: int | None, name: str, value: Any) -> NoReturn:
    if isinstance(value, str) and value:
        raise ValueError(f"audit {_where(index)}: {name} is {len(value)} characters, at most {LIMITS[name]}")
    raise ValueError(f"audit {_where(index)}: {name} must be a non-empty string, got {value!r}")


class AuditLog:
    """The audit log of one data store."""

    def __init__(self, data: Engine, keyring: Keyring, checkpoint_every: int = 1000) -> None:
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
        self.data = data
        self.keyring = keyring
        self.checkpoint_every = checkpoint_every
        self._signer = keyring.signing_key()
        self._key_id = keyring.verify_key_id()
        # Entries held back by batch(), per connection (id of the Connection object).
        self._batches: dict[int, list[_Prepared]] = {}
        self._batch_lock = threading.Lock()

    # -- pseudonyms
    def pseudonym(self, subject_id: str) -> str:
        """HMAC-SHA256 of the subject id under the audit key: stable, but not the id, and
        not computable without the key."""
        if not isinstance(subject_id, str) or not subject_id:
            raise ValueError(f"subject_id must be a non-empty string, got {subject_id!r}")
        return hmac.digest(self.keyring.audit_key, subject_id.encode("utf-8"), "sha256").hex()[:32]

    # -- writing
    def append(
        self,
        conn: Connection | None,
        *,
        actor: str,
        action: str,
        purpose: str | None = None,
        subject_id: str | None = None,
        result: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append one entry and return its seq. With ``conn`` the entry is written in the
        caller's transaction (it commits or rolls back with the caller's write); without,
        in a transaction of its own. Inside ``batch(conn)`` the entry is checked now and
        written with the batch at the block's end, and 0 is returned (no seq yet)."""
        prepared = [self._prepare(actor, action, purpose, subject_id, result, detail, None)]
        if conn is None:
            with self.data.begin() as own:
                return self._write(own, prepared)
        if self._held(conn, prepared):
            return 0
        return self._write(conn, prepared)

    def append_many(self, conn: Connection | None, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append several entries, in order, as one extension of the chain: one locked read
        of the head, one INSERT of every row (COPY on PostgreSQL for large batches), one
        head UPDATE. Each entry is a mapping with the keyword arguments of ``append``.
        Every entry is checked before anything is written: one bad entry writes none."""
        prepared = [self._prepare_mapping(e, i) for i, e in enumerate(entries)]
        if not prepared:
            return
        if conn is None:
            with self.data.begin() as own:
                self._write(own, prepared)
        elif not self._held(conn, prepared):
            self._write(conn, prepared)

    @contextmanager
    def batch(self, conn: Connection) -> Iterator[None]:
        """Hold back the entries appended on ``conn`` during the block and write them, in
        the order appended, as one extension of the chain when the block ends: three
        statements for the whole transaction, however many components append to it.
        Entries are still checked when appended (bad input fails at the call). A block
        left by an exception writes nothing (the caller's transaction rolls back anyway).
        A block inside another on the same connection joins it.

        The head is locked only from the block's end to the commit, so concurrent
        appenders wait less than with appends spread over the transaction."""
        key = id(conn)
        with self._batch_lock:
            if key in self._batches:
                outer = False
            else:
                self._batches[key] = []
                outer = True
        if not outer:
            yield
            return
        try:
            yield
        except BaseException:
            with self._batch_lock:
                self._batches.pop(key, None)
            raise
        with self._batch_lock:
            pending = self._batches.pop(key)
        if pending:
            self._write(conn, pending)

    def _held(self, conn: Connection, prepared: list[_Prepared]) -> bool:
        """Queue ``prepared`` when ``conn`` is inside batch(); False when it is not."""
        if not self._batches:  # the usual case, without taking the lock
            return False
        with self._batch_lock:
            pending = self._batches.get(id(conn))
            if pending is None:
                return False
            pending.extend(prepared)
        return True

    def _prepare_mapping(self, entry: Mapping[str, Any], index: int) -> _Prepared:
        if type(entry) is not dict and not isinstance(entry, Mapping):
            raise ValueError(f"audit entries[{index}] must be a mapping, got {type(entry).__name__}")
        keys = entry.keys()
        if not keys <= ENTRY_KEYS:
            raise ValueError(
                f"audit entries[{index}] has unknown keys {sorted(map(str, keys - ENTRY_KEYS))}; "
                f"expected some of {sorted(ENTRY_KEYS)}"
            )
        if not keys >= REQUIRED_KEYS:
            missing = ", ".join(repr(k) for k in sorted(REQUIRED_KEYS - keys))
            raise ValueError(f"audit entries[{index}] lacks {missing}")
        get = entry.get
        return self._prepare(
            entry["actor"],
            entry["action"],
            get("purpose"),
            get("subject_id"),
            get("result", "ok"),
            get("detail"),
            index,
        )

    def _prepare(
        self,
        actor: Any,
        action: Any,
        purpose: Any,
        subject_id: Any,
        result: Any,
        detail: Any,
        index: int | None,
    ) -> _Prepared:
        """Checked, pseudonymized and serialized: the values the row will hold. Written
        flat on purpose (this runs once per entry, at tens of thousands per second); the
        error path says which entry and which field."""
        if type(actor) is not str or not 0 < len(actor) <= 128:
            _bad_field(index, "actor", actor)
        if type(action) is not str or not 0 < len(action) <= 64:
            _bad_field(index, "action", action)
        if purpose is not None and (type(purpose) is not str or not 0 < len(purpose) <= 64):
            _bad_field(index, "purpose", purpose)
        if type(result) is not str or not 0 < len(result) <= 32:
            _bad_field(index, "result", result)
        detail_text: str | None = None
        if detail is not None:
            if type(detail) is not dict and not isinstance(detail, Mapping):
                raise ValueError(f"audit {_where(index)}: detail must be a dict, got {type(detail).__name__}")
            try:
                detail_text = _detail_json(detail)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"audit {_where(index)}: detail is not plain JSON data ({exc})") from None
        # One scan of everything written in clear (the detail as its JSON text: keys and
        # values are separate tokens there, which neither pattern can span); only on a hit,
        # the walk that says where.
        if _suspicious("\n".join(filter(None, (actor, action, purpose, result, detail_text)))):
            where = _where(index)
            for name, value in (
                ("actor", actor),
                ("action", action),
                ("purpose", purpose),
                ("result", result),
            ):
                _check_no_personal_data(value, f"{where} {name}")
            _check_no_personal_data(detail, f"{where} detail")
        subject = None if subject_id is None else self.pseudonym(subject_id)
        return (actor, action, purpose, subject, result, detail_text)

    def _lock_head(self, conn: Connection) -> tuple[int, str]:
        # FOR UPDATE serializes appenders on PostgreSQL (and MySQL); SQLite renders nothing,
        # its transactions are serial already (BEGIN IMMEDIATE, see store/engine.py).
        row = conn.execute(_LOCK_HEAD).first()
        if row is None:
            # The first append ever creates the head. Two first appenders may race: the
            # insert ignores a conflict, and the locking read then waits for the winner.
            _insert_head_if_missing(conn)
            row = conn.execute(_LOCK_HEAD).one()
        return int(row.seq), str(row.hash)

    def _write(self, conn: Connection, entries: list[_Prepared]) -> int:
        seq, prev = self._lock_head(conn)
        # Taken after the lock, so that entry times follow seq order across appenders.
        at = datetime.now(UTC)
        at_iso = _iso(at)
        rows: list[tuple[Any, ...]] = []
        checkpoints: list[dict[str, Any]] = []
        every = self.checkpoint_every
        for actor, action, purpose, subject, result, detail in entries:
            seq += 1
            h = _entry_hash(prev, seq, at_iso, actor, action, purpose, subject, result, detail)
            rows.append((seq, at, actor, action, purpose, subject, result, detail, prev, h))  # ROW_COLUMNS
            if seq % every == 0:
                checkpoints.append(self._checkpoint(seq, h, at))
            prev = h
        _insert_rows(conn, rows)
        if checkpoints:
            conn.execute(insert(audit_checkpoints), checkpoints)
        if conn.dialect.name not in HEAD_BY_TRIGGER:
            conn.execute(_SET_HEAD, {"p_seq": seq, "p_hash": prev})
        return seq

    def _checkpoint(self, seq: int, entry_hash: str, at: datetime) -> dict[str, Any]:
        signature = self._signer.sign(_checkpoint_message(seq, entry_hash, _iso(at)))
        return {
            "seq": seq,
            "at": at,
            "hash": entry_hash,
            "key_id": self._key_id,
            "signature": signature.hex(),
        }

    # -- reading
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, GENESIS) for an empty log."""
        with self.data.connect() as conn:
            row = conn.execute(
                select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == HEAD_ID)
            ).first()
        return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))

    def query(
        self,
        *,
        subject_id: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        purpose: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        after_seq: int | None = None,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, in seq order. ``since`` is inclusive,
        ``until`` exclusive (naive datetimes are UTC); page with ``after_seq`` = the last
        seq of the previous page."""
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        t = audit_log.c
        stmt = select(audit_log).order_by(t.seq).limit(limit)
        if subject_id is not None:
            stmt = stmt.where(t.subject == self.pseudonym(subject_id))
        if action is not None:
            stmt = stmt.where(t.action == action)
        if actor is not None:
            stmt = stmt.where(t.actor == actor)
        if purpose is not None:
            stmt = stmt.where(t.purpose == purpose)
        if since is not None:
            stmt = stmt.where(t.at >= self._stored_time(since))
        if until is not None:
            stmt = stmt.where(t.at < self._stored_time(until))
        if after_seq is not None:
            stmt = stmt.where(t.seq > after_seq)
        with self.data.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_to_entry(r) for r in rows]

    def _stored_time(self, at: datetime) -> datetime:
        # SQLite keeps times as naive UTC text; compare like with like there.
        utc = _utc(at)
        return utc.replace(tzinfo=None) if self.data.dialect.name == "sqlite" else utc

    def checkpoints(self) -> Iterator[Checkpoint]:
        """Every checkpoint, in seq order (streamed), e.g. to keep a copy outside the
        database: a copy elsewhere is what catches a truncated log."""
        last = -1
        while True:
            with self.data.connect() as conn:
                rows = conn.execute(
                    select(audit_checkpoints)
                    .where(audit_checkpoints.c.seq > last)
                    .order_by(audit_checkpoints.c.seq)
                    .limit(CHUNK)
                ).all()
            for r in rows:
                yield Checkpoint(int(r.seq), _utc(r.at), r.hash, r.key_id, r.signature)
            if len(rows) < CHUNK:
                return
            last = int(rows[-1].seq)

    # -- verifying
    def verify(self, public_key: Ed25519PublicKey | None = None, *, max_problems: int = 1000) -> VerifyReport:
        """Recompute the chain and check every checkpoint; name each problem by seq.

        ``public_key`` defaults to the keyring's; passing the published public key alone is
        enough to verify. A gap of more than ``checkpoint_every`` between checkpoints is
        reported, so verify with the cadence the log is written with. At most
        ``max_problems`` are listed; the report counts the rest."""
        pub = public_key if public_key is not None else self.keyring.verify_key()
        return _Verifier(self, pub, max_problems).run()


def _to_entry(r: Row[Any]) -> AuditEntry:
    return AuditEntry(
        seq=int(r.seq),
        at=_utc(r.at),
        actor=r.actor,
        action=r.action,
        purpose=r.purpose,
        subject=r.subject,
        result=r.result,
        detail=None if r.detail is None else json.loads(r.detail),
        prev_hash=r.prev_hash,
        hash=r.hash,
    )


# Rows are written (_write, _insert_rows) and read (the verifier) by position, in this order.
ROW_COLUMNS = tuple(
    audit_log.c[n]
    for n in ("seq", "at", "actor", "action", "purpose", "subject", "result", "detail", "prev_hash", "hash")
)


_COLUMN_LIST = ", ".join(c.name for c in ROW_COLUMNS)
COPY_SQL = f"COPY {audit_log.name} ({_COLUMN_LIST}) FROM STDIN"
QMARK_SQL = f"INSERT INTO {audit_log.name} ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(ROW_COLUMNS))})"


# Up to this many rows, PostgreSQL gets one multi-row INSERT: a single round trip, where
# COPY needs a few (start, data, end) and only pays off for larger batches.
COPY_ABOVE = 100
_values_sql: dict[int, str] = {}


def _pg_values_sql(n: int) -> str:
    sql = _values_sql.get(n)
    if sql is None:
        one = "(" + ", ".join(["%s"] * len(ROW_COLUMNS)) + ")"
        sql = f"INSERT INTO {audit_log.name} ({_COLUMN_LIST}) VALUES " + ", ".join([one] * n)
        _values_sql[n] = sql
    return sql


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """One set-based statement for the batch (rows in ROW_COLUMNS order), in the given
    connection's transaction.

    - PostgreSQL with psycopg: one multi-row INSERT for up to COPY_ABOVE rows, else COPY.
      The driver's executemany sends one INSERT per row (pipelined): about 30,000 rows/s
      here, while COPY of the same rows runs at 70,000-140,000/s.
    - SQLite: the driver's executemany on a prepared INSERT, skipping SQLAlchemy's per-row
      parameter processing (half the cost of a batch); the time is converted once, by
      SQLAlchemy's own processor for the column, so it is stored exactly as usual.
    - elsewhere: SQLAlchemy Core executemany."""
    dialect = conn.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        if len(rows) <= COPY_ABOVE:
            conn.exec_driver_sql(_pg_values_sql(len(rows)), tuple(v for r in rows for v in r))
            return
        driver = conn.connection.driver_connection  # the psycopg.Connection, in this transaction
        assert driver is not None  # a connection in use is always checked out
        with driver.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
            for row in rows:
                copy.write_row(row)
        return
    if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
        to_db = audit_log.c.at.type.dialect_impl(dialect).bind_processor(dialect)
        if to_db is not None:
            stored_at = to_db(rows[0][1])  # one time per batch: see _write
            rows = [(r[0], stored_at, *r[2:]) for r in rows]
        conn.exec_driver_sql(QMARK_SQL, rows if len(rows) > 1 else rows[0])
        return
    names = [c.name for c in ROW_COLUMNS]
    params = [dict(zip(names, r, strict=True)) for r in rows]
    conn.execute(insert(audit_log), params if len(params) > 1 else params[0])


def _insert_head_if_missing(conn: Connection) -> None:
    values = {"id": HEAD_ID, "seq": 0, "hash": GENESIS}
    name = conn.dialect.name
    stmt: Insert
    if name == "postgresql":
        stmt = postgresql.insert(audit_head).values(values).on_conflict_do_nothing()
    elif name == "sqlite":
        stmt = sqlite.insert(audit_head).values(values).on_conflict_do_nothing()
    elif name in ("mysql", "mariadb"):
        stmt = mysql.insert(audit_head).values(values).prefix_with("IGNORE")
    else:
        try:
            with conn.begin_nested():
                conn.execute(insert(audit_head).values(values))
        except IntegrityError:
            pass
        return
    conn.execute(stmt)


# -- the verifier ----------------------------------------------------------------------------


@dataclass
class _Break:
    """Entry ``seq`` (intact at its seq) does not link to the entry stored at seq - 1."""

    seq: int
    prev_hash: str  # the hash entry ``seq`` names as its predecessor's


class _Verifier:
    """Two passes at most. Pass 1 streams the log and checks each row's hash, each link to
    the row stored before it, and each checkpoint; it keeps only what is wrong (bounded).
    When something is wrong, pass 2 streams (seq, prev_hash, hash) to find where the
    hashes named by the suspicious rows now sit, and the problems are classified."""

    def __init__(self, log: AuditLog, public_key: Ed25519PublicKey, max_problems: int) -> None:
        self.log = log
        self.public_key = public_key
        self.expected_id = key_id(public_key)
        self.max_problems = max_problems
        self.every = log.checkpoint_every
        self.problems: list[AuditProblem] = []
        self.entries = 0
        self.checkpoint_count = 0
        self.last_checkpoint: int | None = None
        self.last_seq = 0  # the last entry read so far
        self.last_hash = GENESIS
        self.cp_after = -1  # the last checkpoint read so far
        self.head_seq = 0
        self.head_hash = GENESIS
        self.head_present = False
        self.head_row_hash: str | None = None  # the stored hash of the entry at head_seq
        # what pass 1 keeps about problems (each bounded by MAX_TRACKED)
        self.suspects: dict[int, Row[Any]] = {}  # rows whose content does not match their hash
        self.breaks: list[_Break] = []
        self.gaps: list[tuple[int, int]] = []  # missing seqs inside the log, inclusive ranges
        self.cp_mismatch: list[tuple[int, str, str | None]] = []  # (seq, signed hash, stored hash)
        self.after_head: list[int] = []
        self.overflow = 0

    def add(self, seq: int, kind: ProblemKind, message: str) -> None:
        self.problems.append(AuditProblem(seq, kind, message))

    def keep(self, container: Sized) -> bool:
        if len(container) < MAX_TRACKED:
            return True
        self.overflow += 1  # counted, not classified: the report says how many more
        return False

    def run(self) -> VerifyReport:
        self.scan()
        self.classify()
        problems = sorted(self.problems, key=lambda p: (p.seq, p.kind))
        return VerifyReport(
            ok=not problems and not self.overflow,
            entries=self.entries,
            checkpoints=self.checkpoint_count,
            problems=problems[: self.max_problems],
            head_seq=self.head_seq,
            last_checkpoint=self.last_checkpoint,
            omitted=max(0, len(problems) - self.max_problems) + self.overflow,
            key_id=self.expected_id,
        )

    # -- pass 1
    def _snapshot(self) -> Connection:
        conn = self.log.data.connect()
        if conn.dialect.name == "postgresql":
            # The chunk, its checkpoints and the head must come from one snapshot: under READ
            # COMMITTED each statement sees its own, and a concurrent append between them
            # would look like a row after the head or a truncated tail.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        return conn

    def scan(self) -> None:
        """Stream the log. Each chunk is read in a short transaction of its own (SQLite
        takes its write lock per transaction: appenders must not wait for a whole
        verification), together with its checkpoints and the head. Once a chunk reaches the
        head seen when the verification began, the rest (what was appended meanwhile) is
        read in that same transaction, so the run ends even while others keep appending,
        and the tail is compared with the head of the same snapshot."""
        target: int | None = None
        while True:
            with self._snapshot() as conn, conn.begin():
                head = conn.execute(
                    select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == HEAD_ID)
                ).first()
                if head is not None:
                    self.head_seq, self.head_hash, self.head_present = int(head.seq), str(head.hash), True
                if target is None:
                    target = self.head_seq
                rows = self._chunk(conn)
                final = len(rows) < CHUNK or int(rows[-1].seq) >= target
                while True:
                    more = final and len(rows) == CHUNK
                    self._process(conn, rows, bounded=not final or more)
                    if not more:
                        break
                    rows = self._chunk(conn)
            if final:
                break
        top = self.last_checkpoint or 0
        if self.head_seq - top >= self.every:
            self.add(
                top + 1,
                "bad_checkpoint",
                f"no signed checkpoint after seq {top} although the log reaches {self.head_seq} "
                f"(one is written every {self.every} entries): checkpoints were removed",
            )

    def _chunk(self, conn: Connection) -> list[Row[Any]]:
        t = audit_log.c
        return list(
            conn.execute(select(*ROW_COLUMNS).where(t.seq > self.last_seq).order_by(t.seq).limit(CHUNK)).all()
        )

    def _process(self, conn: Connection, rows: Sequence[Any], *, bounded: bool) -> None:
        """Check one chunk and the checkpoints up to its last row (all the remaining ones
        with the last chunk: a checkpoint past the last entry signs entries that are gone)."""
        c = audit_checkpoints.c
        cp_stmt = select(audit_checkpoints).where(c.seq > self.cp_after)
        if bounded and rows:
            cp_stmt = cp_stmt.where(c.seq <= rows[-1].seq)
        cps = conn.execute(cp_stmt.order_by(c.seq)).all()
        wanted = {int(cp.seq) for cp in cps}
        wanted.add(self.head_seq)
        by_seq: dict[int, str] = {}  # stored hashes at the checkpoints and the head
        head_top = self.head_seq if self.head_present else None
        last_seq, last_hash = self.last_seq, self.last_hash
        for row in rows:
            # Unpacked by position (ROW_COLUMNS): this loop is the verifier's cost per entry.
            seq, at, actor, action, purpose, subject, result, detail, prev_hash, stored = row
            if seq in wanted:
                by_seq[seq] = stored
            self.entries += 1
            if seq > last_seq + 1 and self.keep(self.gaps):
                self.gaps.append((last_seq + 1, seq - 1))
            computed = _entry_hash(
                prev_hash, seq, _iso_cached(at), actor, action, purpose, subject, result, detail
            )
            if computed != stored:
                if self.keep(self.suspects):
                    self.suspects[seq] = row
            elif seq == last_seq + 1 and prev_hash != last_hash and self.keep(self.breaks):
                self.breaks.append(_Break(seq, prev_hash))
            if head_top is not None and seq > head_top and self.keep(self.after_head):
                # Appenders write rows and the head in one transaction, and the rows and the
                # head come from one snapshot: a row past the head was not appended.
                self.after_head.append(seq)
            last_seq, last_hash = seq, stored
        self.last_seq, self.last_hash = last_seq, last_hash
        if self.head_seq in by_seq:
            self.head_row_hash = by_seq[self.head_seq]
        for cp in cps:
            self.check_checkpoint(cp, by_seq)
        if cps:
            self.cp_after = int(cps[-1].seq)

    def check_checkpoint(self, cp: Row[Any], by_seq: dict[int, str]) -> None:
        seq = int(cp.seq)
        self.checkpoint_count += 1
        before = self.last_checkpoint or 0
        if seq - before > self.every:
            self.add(
                before + 1,
                "bad_checkpoint",
                f"no signed checkpoint between seq {before} and {seq} "
                f"(one is written every {self.every} entries): checkpoints were removed",
            )
        self.last_checkpoint = seq
        if cp.key_id != self.expected_id:
            self.add(
                seq,
                "bad_checkpoint",
                f"signed with key {cp.key_id}, not with the verifying key {self.expected_id}",
            )
            return
        try:
            self.public_key.verify(
                bytes.fromhex(cp.signature), _checkpoint_message(seq, cp.hash, _iso(cp.at))
            )
        except (InvalidSignature, ValueError):
            self.add(
                seq, "bad_checkpoint", "the signature does not verify: the checkpoint was forged or altered"
            )
            return
        stored = by_seq.get(seq)
        if stored != cp.hash and self.keep(self.cp_mismatch):
            # Settled in classify(): the entry signed here may have moved to another seq.
            self.cp_mismatch.append((seq, cp.hash, stored))

    # -- pass 2
    def locate(self, hashes: set[str], prevs: set[str]) -> tuple[dict[str, int], dict[str, int]]:
        """Where the rows with these hashes sit, and where the rows naming these hashes as
        their prev_hash sit."""
        seq_of_hash: dict[str, int] = {}
        seq_of_prev: dict[str, int] = {}
        last, size = 0, CHUNK * 4
        t = audit_log.c
        while True:
            with self.log.data.connect() as conn:
                rows = conn.execute(
                    select(t.seq, t.prev_hash, t.hash).where(t.seq > last).order_by(t.seq).limit(size)
                ).all()
            for seq, prev_hash, h in rows:
                if h in hashes:
                    seq_of_hash.setdefault(h, int(seq))
                if prev_hash in prevs:
                    seq_of_prev.setdefault(prev_hash, int(seq))
            if len(rows) < size:
                return seq_of_hash, seq_of_prev
            last = int(rows[-1][0])

    # -- classification
    def classify(self) -> None:
        suspects = self.suspects
        seq_of_hash: dict[str, int] = {}
        seq_of_prev: dict[str, int] = {}
        if suspects or self.breaks:
            seq_of_hash, seq_of_prev = self.locate(
                {r.prev_hash for r in suspects.values()} | {b.prev_hash for b in self.breaks},
                {r.hash for r in suspects.values()},
            )
        moved = self.find_origins(seq_of_hash, seq_of_prev)
        claims = self.report_rows(moved, self.place_edited(moved, seq_of_hash, seq_of_prev))
        self.report_missing(moved, claims)
        self.report_breaks(moved, claims, seq_of_hash)
        self.report_checkpoints(moved, claims)
        self.report_head(moved, claims)

    def find_origins(self, seq_of_hash: dict[str, int], seq_of_prev: dict[str, int]) -> dict[int, int]:
        """For each row whose hash fails at its seq: the seq it was written with, if its hash
        holds there (the seq is under the hash, so a row moved to another seq fails at the
        new one). Candidates come from the row's chain neighbours: the entry whose hash it
        names as prev_hash, and the entry that names its hash; resolved outward from the
        rows known to be in place, so chains of moved rows resolve too."""
        suspects = self.suspects
        moved: dict[int, int] = {}  # current seq -> seq written with

        def origin(cur: int) -> int | None:
            return cur if cur not in suspects else moved.get(cur)

        def attempt(cur: int) -> bool:
            row = suspects[cur]
            candidates: list[int] = [1] if row.prev_hash == GENESIS else []
            p = seq_of_hash.get(row.prev_hash)
            if p is not None and (o := origin(p)) is not None:
                candidates.append(o + 1)
            n = seq_of_prev.get(row.hash)
            if n is not None and (o := origin(n)) is not None:
                candidates.append(o - 1)
            for cand in candidates:
                if cand > 0 and cand != cur and _row_hash(row, cand) == row.hash:
                    moved[cur] = cand
                    return True
            return False

        suspect_of_hash = {r.hash: s for s, r in suspects.items()}
        suspect_of_prev = {r.prev_hash: s for s, r in suspects.items()}
        queue = list(suspects)
        while queue:
            cur = queue.pop()
            if cur in moved or not attempt(cur):
                continue
            row = suspects[cur]
            for neighbour in (suspect_of_prev.get(row.hash), suspect_of_hash.get(row.prev_hash)):
                if neighbour is not None and neighbour not in moved:
                    queue.append(neighbour)  # its candidate may now be known

        # Rows whose neighbours are gone too: try the free seqs (gaps, the tail, and the
        # seqs of the other suspicious rows), within a budget.
        rest = [s for s in suspects if s not in moved]
        if rest:
            free_seqs: list[int] = []
            for lo, hi in [*self.gaps, (self.last_seq + 1, self.head_seq)]:
                free_seqs.extend(islice(range(lo, hi + 1), BRUTE_FORCE_BUDGET - len(free_seqs)))
            free_seqs.extend(rest)
            if len(rest) * len(free_seqs) <= BRUTE_FORCE_BUDGET:
                for cur in rest:
                    row = suspects[cur]
                    for cand in free_seqs:
                        if cand != cur and _row_hash(row, cand) == row.hash:
                            moved[cur] = cand
                            break
        return moved

    def present(self, seq: int) -> bool:
        """Is a row stored at ``seq`` (as pass 1 saw it)?"""
        if seq < 1 or seq > self.last_seq:
            return False
        return not any(lo <= seq <= hi for lo, hi in self.gaps)

    def place_edited(
        self, moved: dict[int, int], seq_of_hash: dict[str, int], seq_of_prev: dict[str, int]
    ) -> dict[int, int]:
        """Edited rows (their hash holds at no seq) whose chain neighbours put them at
        another seq: they were moved as well as changed. Current seq -> seq written with."""
        placed: dict[int, int] = {}
        for cur, row in self.suspects.items():
            if cur in moved:
                continue
            p = seq_of_hash.get(row.prev_hash)
            n = seq_of_prev.get(row.hash)
            cand = None
            if row.prev_hash == GENESIS:
                cand = 1
            elif p is not None and (p not in self.suspects or p in moved):
                cand = moved.get(p, p) + 1
            elif n is not None and (n not in self.suspects or n in moved):
                cand = moved.get(n, n) - 1
            if cand is not None and cand > 0 and cand != cur:
                placed[cur] = cand
        return placed

    def report_rows(self, moved: dict[int, int], placed: dict[int, int]) -> dict[int, int]:
        """Edited, moved and copied rows. Returns seq written with -> current seq, for the
        rows found at another seq; ``moved`` gains the edited rows found elsewhere."""
        claims: dict[int, int] = {}
        for cur, orig in sorted(moved.items()):
            if (orig not in self.suspects and self.present(orig)) or orig in claims:
                # The entry written as ``orig`` is still in its place, intact: this is a copy.
                self.add(cur, "inserted", f"entry {cur} is a copy of entry {orig}, which is still in the log")
            else:
                claims[orig] = cur
                self.add(cur, "reordered", f"the entry at seq {cur} was written as entry {orig}")
        for cur, row in sorted(self.suspects.items()):
            if cur in moved:
                continue
            what = f"({row.action} by {row.actor}) does not match its hash: its content was changed"
            at = placed.get(cur)
            if at is not None and at not in claims and not (at not in self.suspects and self.present(at)):
                claims[at] = cur
                moved[cur] = at
                self.add(
                    cur,
                    "edited",
                    f"the entry at seq {cur} is chained as entry {at} {what} and it was moved",
                )
            else:
                self.add(cur, "edited", f"entry {cur} {what} after it was written")
        return claims

    def report_missing(self, moved: dict[int, int], claims: dict[int, int]) -> None:
        """Seqs up to the head that no row carries: gaps, and seqs whose row moved away,
        minus the seqs that moved rows still carry. A run reaching the head is a removed
        tail (head_mismatch); any other run was deleted."""
        top = self.head_seq
        holes = [(lo, min(hi, top)) for lo, hi in self.gaps]
        holes += [(s, s) for s in moved if s <= top]
        holes.append((self.last_seq + 1, top))
        for lo, hi in _minus(_merge(holes), sorted(claims)):
            if hi == top:
                self.add(
                    lo,
                    "head_mismatch",
                    f"the head says the log ends at seq {top}, but entr{'y' if lo == hi else 'ies'} "
                    f"{_span(lo, hi)} {'is' if lo == hi else 'are'} gone: the tail was removed",
                )
            else:
                self.add(
                    lo,
                    "deleted",
                    f"entr{'y' if lo == hi else 'ies'} {_span(lo, hi)} {'is' if lo == hi else 'are'} missing",
                )

    def report_breaks(
        self, moved: dict[int, int], claims: dict[int, int], seq_of_hash: dict[str, int]
    ) -> None:
        """Links broken between rows that are each intact at their seq: only a rewrite
        with recomputed hashes does that."""
        break_at = {b.seq for b in self.breaks}
        done: set[int] = set()
        for b in self.breaks:
            before = b.seq - 1
            if b.seq in done or (before in self.suspects and before not in moved):
                continue  # already explained (the row before is reported as edited)
            # The predecessor of entry b.seq is the entry written as b.seq - 1, wherever it is.
            if before in claims:
                if self.suspects[claims[before]].hash == b.prev_hash:
                    continue
            elif before in moved:
                continue  # entry b.seq - 1 is gone: reported as deleted
            elsewhere = seq_of_hash.get(b.prev_hash)
            if elsewhere is not None and elsewhere != before:
                self.add(
                    b.seq,
                    "reordered",
                    f"entry {b.seq} is chained after entry {elsewhere}, not after entry {before}",
                )
            elif b.seq == 1 or b.seq + 1 in break_at:
                # It links to neither neighbour: this row itself was rewritten.
                done.add(b.seq + 1)
                self.add(
                    b.seq,
                    "edited",
                    f"entry {b.seq} was rewritten and its hash recomputed: it is not chained "
                    "to its neighbours",
                )
            else:
                self.add(
                    before,
                    "edited",
                    f"entry {b.seq} was chained to a different entry {before}: entry "
                    f"{before} was rewritten and its hash recomputed",
                )

    def report_checkpoints(self, moved: dict[int, int], claims: dict[int, int]) -> None:
        for seq, signed, stored in self.cp_mismatch:
            if seq in claims:
                actual: str | None = str(self.suspects[claims[seq]].hash)
            elif seq in moved:
                actual = None  # the entry written as seq is gone
            else:
                actual = stored
            if actual == signed:
                continue
            if actual is not None:
                self.add(
                    seq,
                    "bad_checkpoint",
                    f"checkpoint {seq} signed hash {signed[:12]}…, but entry {seq} has "
                    f"{actual[:12]}…: entries up to it were rewritten",
                )
            elif seq > self.head_seq:
                self.add(
                    seq,
                    "bad_checkpoint",
                    f"checkpoint {seq} signs an entry past the head (seq "
                    f"{self.head_seq}): the log was truncated and its head rewound",
                )
            # else the entry is gone below the head: reported as deleted or head_mismatch

    def report_head(self, moved: dict[int, int], claims: dict[int, int]) -> None:
        if not self.head_present:
            if self.entries:
                self.add(self.last_seq, "head_mismatch", "the head row is missing")
            return
        for cur in self.after_head:
            if cur not in moved:
                self.add(
                    cur,
                    "inserted",
                    f"entry {cur} comes after the head (seq {self.head_seq}): it was not "
                    "appended through the log",
                )
        top = self.head_seq
        if top == 0:
            return
        if top in claims:
            actual: str | None = str(self.suspects[claims[top]].hash)
        elif top in moved:
            actual = None
        else:
            actual = self.head_row_hash
        if actual is not None and actual != self.head_hash:
            self.add(
                top,
                "head_mismatch",
                f"the head row's hash differs from entry {top}'s: the tail was rewritten",
            )


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(r for r in ranges if r[0] <= r[1]):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _minus(ranges: list[tuple[int, int]], points: list[int]) -> list[tuple[int, int]]:
    """``ranges`` without the seqs in ``points`` (sorted)."""
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        start = lo
        i = bisect_left(points, lo)
        while i < len(points) and points[i] <= hi:
            if points[i] > start:
                out.append((start, points[i] - 1))
            start = points[i] + 1
            i += 1
        if start <= hi:
            out.append((start, hi))
    return out


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}..{hi}"
