"""What a match does at write time (PUT-9), as the policy's ``screening.on_match`` says.

``Screener.screen(source, ...)`` hashes the upload (the algorithms the policy names, which
the loaded lists must have) and looks it up. A clean upload returns its ``Verdict`` and
leaves nothing behind (PUT-13: a clean file's hash is not kept with the person). A match:

1. gets its own data key, wrapped by the keyring's KEK and kept in the key store
   (``request_keys``, owner id = the match id; key rotation re-wraps it);
2. ``quarantine``: the bytes are written, encrypted under that key (AES-256-GCM in
   records bound to the match id, their index and the last-record flag), to
   ``<quarantine folder>/<match id>.fq``. An unseekable stream is spooled encrypted while
   it is hashed (it cannot be read twice); a path or a seekable stream is read again and
   the copy's digest is checked against the match, so a file changed in between is caught;
3. one data-store transaction writes the match row (the uploader's email, IP address and
   file name encrypted under the key), the queued report for the designated organisation
   (``report``) and the audit entry;
4. ``block``: ``UploadRefused`` is raised; the caller must not store the upload. Any other
   failure while recording a match raises ``ScreeningError``: also a refusal.

The designated organisation is the policy's ``screening.report_to``; the recipient with
``condition: screening_match`` (if the policy has one) limits what a report carries to its
categories. Reports are sent by ``send_reports`` through the mailer (SMTP or the outbox),
to ``FIDUCIARY_SCREENING_REPORT_EMAIL``. ``destroy`` crypto-shreds a match: its key goes,
so the quarantined copy and the uploader's details are unreadable everywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, RowMapping, bindparam, delete, insert, select, update

from fiduciary.audit import AuditLog
from fiduciary.mail import Letter, Mailer, MailError
from fiduciary.policy.compile import CompiledPolicy, CompiledRecipient
from fiduciary.policy.taxonomy import is_within
from fiduciary.screening.check import HashLists, Match, Verdict
from fiduciary.screening.digest import (
    DEFAULT_CHUNK,
    Digester,
    Source,
    digest_source,
    is_unseekable_stream,
)
from fiduciary.store import tables as T
from fiduciary.vault.crypto import (
    KEY_SIZE,
    NONCE_SIZE,
    DecryptionError,
    decode_value,
    encode_value,
    new_data_key,
    owner_key_aad,
    seal,
    unseal,
)
from fiduciary.vault.keyring import Keyring

if TYPE_CHECKING:
    from fiduciary.config import Settings
    from fiduciary.core import Fiduciary

__all__ = [
    "ACTIONS",
    "MatchRecord",
    "ReportRecord",
    "Screener",
    "ScreeningError",
    "SendSummary",
    "UploadRefused",
    "report_letter",
]

ACTIONS: Final = ("block", "quarantine", "report")
QUARANTINE_SUFFIX: Final = ".fq"
_FILE_MAGIC: Final = b"FIDQUAR1"
_CHUNK_TAG: Final = b"fiduciary/quarantine\x00"
_CONTEXT_TAG: Final = b"fiduciary/screening-context\x00"
_MAX_RECORD: Final = (64 << 20) + NONCE_SIZE + 16
# What the caller may tell about the upload, and the category each is (the designated
# recipient receives only what its categories cover).
CONTEXT_CATEGORIES: Final = {
    "email": "user.contact.email",
    "ip_address": "user.device.ip_address",
    "filename": "user.content.private.file",
}
_LABELS: Final = {"email": "Uploader email", "ip_address": "Uploader IP address", "filename": "File name"}


class ScreeningError(Exception):
    """Screening could not be done as configured, or a match could not be recorded. Either
    way the upload must not be stored."""


class UploadRefused(ScreeningError):
    """The upload matched a hash list and the policy blocks it (PUT-9). Nothing of it may be
    stored; the match is recorded (``verdict.record``) and, as the policy says, quarantined
    and reported."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(
            f"upload refused: it matches {', '.join(verdict.lists)} (record {verdict.record}); "
            "it must not be stored"
        )
        self.verdict = verdict


@dataclass(frozen=True)
class MatchRecord:
    id: str
    at: datetime
    subject_id: str | None
    matches: tuple[Match, ...]
    digests: Mapping[str, str]
    size: int
    actions: tuple[str, ...]
    quarantined: bool
    status: str  # held|destroyed
    actor: str


@dataclass(frozen=True)
class ReportRecord:
    id: str
    match_id: str
    organization: str
    recipient: str | None
    address: str | None
    status: str  # queued|sent
    created_at: datetime
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    message_id: str | None


@dataclass
class SendSummary:
    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # report id -> why (no personal data)
    waiting: list[str] = field(default_factory=list)  # no address to send to

    def to_text(self) -> str:
        lines = [
            f"sent {len(self.sent)}, failed {len(self.failed)}, waiting for an address {len(self.waiting)}"
        ]
        lines += [f"  {rid}: {why}" for rid, why in self.failed.items()]
        if self.waiting:
            lines.append("  set FIDUCIARY_SCREENING_REPORT_EMAIL to the designated organisation's address")
        return "\n".join(lines)


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# --------------------------------------------------------------------------- quarantine files


def _chunk_aad(match_id: str, index: int, final: bool) -> bytes:
    return (
        _CHUNK_TAG + match_id.encode() + b"\x00" + index.to_bytes(8, "big") + (b"\x01" if final else b"\x00")
    )


class _QuarantineWriter:
    """Writes an encrypted quarantine file: records of ``flag (1) | length (4) | nonce |
    ciphertext | tag``, the last one empty with flag 1, so a truncated file is detected."""

    def __init__(self, folder: Path, match_id: str, key: bytes, check: str | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.match_id = match_id
        self.path = folder / f"{match_id}{QUARANTINE_SUFFIX}"
        self.tmp = folder / f".{match_id}.partial"
        self._aead = AESGCM(key)
        self._index = 0
        # The digest the copy must have (a path or seekable stream read a second time).
        self._check = Digester([check], parallel=False) if check else None
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh: BinaryIO | None = os.fdopen(fd, "wb")
        self._fh.write(_FILE_MAGIC + match_id.encode())

    def write(self, chunk: memoryview | bytes) -> None:
        if not len(chunk):
            return
        self._record(chunk, final=False)
        if self._check is not None:
            self._check.update(chunk)

    def _record(self, chunk: memoryview | bytes, final: bool) -> None:
        assert self._fh is not None
        nonce = os.urandom(NONCE_SIZE)
        ct = self._aead.encrypt(nonce, chunk, _chunk_aad(self.match_id, self._index, final))
        self._fh.write((b"\x01" if final else b"\x00") + (NONCE_SIZE + len(ct)).to_bytes(4, "big"))
        self._fh.write(nonce)
        self._fh.write(ct)
        self._index += 1

    def digest(self) -> bytes | None:
        return None if self._check is None else next(iter(self._check.digests().values()))

    def keep(self) -> str:
        assert self._fh is not None
        self._record(b"", final=True)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        os.replace(self.tmp, self.path)
        return self.path.name

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.tmp.unlink(missing_ok=True)


def _read_quarantine(path: Path, match_id: str, key: bytes) -> Iterator[bytes]:
    aead = AESGCM(key)
    where = f"quarantined upload {match_id}"
    with path.open("rb") as fh:
        head = fh.read(len(_FILE_MAGIC) + len(match_id))
        if head != _FILE_MAGIC + match_id.encode():
            raise DecryptionError(f"{where}: not its quarantine file")
        index = 0
        while True:
            hdr = fh.read(5)
            if len(hdr) < 5:
                raise DecryptionError(f"{where}: truncated (record {index} missing)")
            final, n = hdr[0] == 1, int.from_bytes(hdr[1:], "big")
            if hdr[0] not in (0, 1) or not NONCE_SIZE + 16 <= n <= _MAX_RECORD:
                raise DecryptionError(f"{where}: damaged record header at record {index}")
            blob = fh.read(n)
            if len(blob) < n:
                raise DecryptionError(f"{where}: truncated in record {index}")
            plain = unseal(aead, blob, _chunk_aad(match_id, index, final), where)
            if final:
                if plain or fh.read(1):
                    raise DecryptionError(f"{where}: data after the last record")
                return
            yield plain
            index += 1


# --------------------------------------------------------------------------- the screener


class Screener:
    """Screens uploads against the hash lists and acts on matches as the policy says."""

    def __init__(
        self,
        lists: HashLists,
        *,
        data: Engine,
        keys: Engine,
        keyring: Keyring,
        audit: AuditLog,
        quarantine_dir: str | Path,
        policy: CompiledPolicy | None = None,
        actions: Iterable[str] | None = None,
        report_to: str | None = None,
        report_email: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self.lists = lists
        self.data, self.keys, self.keyring, self.audit = data, keys, keyring, audit
        self.quarantine_dir = Path(quarantine_dir)
        self.policy = policy
        self.chunk_size = chunk_size
        self.report_email = report_email
        self.recipient: CompiledRecipient | None = None
        self.purpose: str | None = None
        self.at = "write"
        self._promised: tuple[str, ...] | None = None
        if policy is not None:
            sc = policy.policy.screening
            if sc is None:
                raise ScreeningError(
                    "the policy has no screening section: screening uploads would be processing "
                    "its notice does not tell (add screening: with algorithms, lists, on_match, report_to)"
                )
            if actions is not None and set(actions) != set(sc.on_match):
                raise ScreeningError(
                    f"actions {sorted(set(actions))} differ from the policy's screening.on_match "
                    f"{sorted(sc.on_match)}: the policy decides"
                )
            self.actions = tuple(a for a in ACTIONS if a in sc.on_match)
            self.organization = sc.report_to
            self.at = sc.at
            self._promised = tuple(sc.algorithms)
            designated = sorted(
                (r for r in policy.recipients.values() if r.source.condition == "screening_match"),
                key=lambda r: r.key,
            )
            if designated:
                self.recipient = designated[0]
                self.purpose = min(designated[0].purposes, default=None)
        else:
            chosen = tuple(actions) if actions is not None else ACTIONS
            unknown = sorted(set(chosen) - set(ACTIONS))
            if unknown:
                raise ScreeningError(f"unknown action(s) {unknown}: one of {', '.join(ACTIONS)}")
            self.actions = tuple(a for a in ACTIONS if a in chosen)
            self.organization = report_to or ""
        if "report" in self.actions and not self.organization:
            raise ScreeningError(
                "matches are to be reported, but no organisation is designated: set the policy's "
                "screening.report_to or FIDUCIARY_SCREENING_REPORT_TO"
            )

    @property
    def algorithms(self) -> tuple[str, ...]:
        """What an upload is hashed with: the lists' algorithms that the policy names (only
        what the notice tells is computed, even if a list has more)."""
        have = self.lists.algorithms
        return have if self._promised is None else tuple(a for a in have if a in self._promised)

    def ready(self) -> None:
        """ScreeningError unless uploads can be screened as the policy promises: a list is
        loaded for every algorithm it names. ``screen`` checks this first; call it at start-up
        to fail early."""
        have = self.lists.algorithms
        if not have:
            raise ScreeningError(
                "no hash list loaded: nothing to screen against; load one with `fiduciary screening load`"
            )
        missing = [a for a in self._promised or () if a not in have]
        if missing:
            raise ScreeningError(
                f"the policy promises {', '.join(self._promised or ())} screening, but no loaded hash "
                f"list has {', '.join(missing)} digests (loaded: {_loaded(self.lists)}); "
                "load one with `fiduciary screening load`"
            )

    @classmethod
    def from_fiduciary(
        cls, fid: Fiduciary, lists: HashLists | None = None, settings: Settings | None = None
    ) -> Screener:
        """A screener for a running Fiduciary: its policy, stores, keyring and audit log;
        the lists cached in ``<screening dir>/lists`` unless given."""
        from fiduciary.config import Settings

        s = settings or Settings()
        folder = s.resolved_screening_dir()
        return cls(
            lists if lists is not None else HashLists.open_dir(folder / "lists"),
            data=fid.data,
            keys=fid.keys,
            keyring=fid.keyring,
            audit=fid.audit,
            quarantine_dir=folder / "quarantine",
            policy=fid.policy,
            report_to=s.screening_report_to,
            report_email=s.screening_report_email,
        )

    # ------------------------------------------------------------------------ screening
    def check(self, source: Source) -> Verdict:
        """The verdict alone: nothing is recorded, refused or reported."""
        self.ready()
        digests, size = digest_source(source, self.algorithms, chunk_size=self.chunk_size)
        return Verdict({a: d.hex() for a, d in digests.items()}, size, self.lists.lookup(digests))

    def screen(
        self,
        source: Source,
        *,
        subject_id: str | None = None,
        email: str | None = None,
        ip_address: str | None = None,
        filename: str | None = None,
        actor: str = "system",
        now: datetime | None = None,
    ) -> Verdict:
        """Screen an upload before it is stored: bytes, a path, or a binary stream (read
        from its position; a seekable one is put back there). Returns the verdict of a
        clean upload; a match is recorded and acted on as the policy says, and raises
        ``UploadRefused`` when the policy blocks. Any exception means: do not store it."""
        if subject_id is not None and (not isinstance(subject_id, str) or not 0 < len(subject_id) <= 32):
            raise ValueError(f"subject_id must be a subject id (1 to 32 characters), got {subject_id!r}")
        if not isinstance(actor, str) or not 0 < len(actor) <= 128:
            raise ValueError(f"actor must be 1 to 128 characters, got {actor!r}")
        context = {
            k: v for k, v in (("email", email), ("ip_address", ip_address), ("filename", filename)) if v
        }
        for k, v in context.items():
            if not isinstance(v, str):
                raise ValueError(f"{k} must be a string, got {type(v).__name__}")
        self.ready()
        match_id = secrets.token_hex(16)
        quarantine = "quarantine" in self.actions
        key: bytes | None = None
        spool: _QuarantineWriter | None = None
        if quarantine and is_unseekable_stream(source):
            # Read once only: spooled encrypted while hashed, kept only on a match.
            key = new_data_key()
            spool = _QuarantineWriter(self.quarantine_dir, match_id, key)
        try:
            digests, size = digest_source(
                source, self.algorithms, chunk_size=self.chunk_size, sink=spool.write if spool else None
            )
        except BaseException:
            if spool is not None:
                spool.discard()
            raise
        found = self.lists.lookup(digests)
        verdict = Verdict({a: d.hex() for a, d in digests.items()}, size, found)
        if not found:
            if spool is not None:
                spool.discard()
            return verdict
        verdict = replace(verdict, record=match_id)
        try:
            self._record(source, verdict, key, spool, subject_id, context, actor, now or datetime.now(UTC))
        except Exception as exc:
            if spool is not None:
                spool.discard()
            self._forget(match_id)
            raise ScreeningError(
                f"the upload matches {', '.join(verdict.lists)}, but recording the match failed "
                f"({type(exc).__name__}: {exc}); it must not be stored"
            ) from exc
        if "block" in self.actions:
            raise UploadRefused(verdict)
        return verdict

    def _record(
        self,
        source: Source,
        verdict: Verdict,
        key: bytes | None,
        spool: _QuarantineWriter | None,
        subject_id: str | None,
        context: Mapping[str, str],
        actor: str,
        now: datetime,
    ) -> None:
        match_id = verdict.record
        assert match_id is not None
        key = key or new_data_key()
        # The key first: a crash after it leaves a key without a record (harmless), never
        # an encrypted record or file without its key.
        self._store_key(match_id, key, now)
        quarantine_file: str | None = None
        if spool is not None:
            quarantine_file = spool.keep()
        elif "quarantine" in self.actions:
            quarantine_file = self._quarantine_copy(source, match_id, key, verdict)
        sealed = seal(AESGCM(key), encode_value(dict(context), "context"), _CONTEXT_TAG + match_id.encode())
        report_id = secrets.token_hex(16) if "report" in self.actions else None
        blocked = "block" in self.actions
        m = T.screening_matches
        with self.data.begin() as conn:
            conn.execute(
                insert(m).values(
                    id=match_id,
                    at=self._ts(now),
                    subject_id=subject_id,
                    matches=json.dumps([x.to_dict() for x in verdict.matches]),
                    digests=json.dumps(dict(verdict.digests)),
                    size=verdict.size,
                    actions=" ".join(self.actions),
                    quarantine_file=quarantine_file,
                    context=sealed,
                    status="held",
                    actor=actor,
                )
            )
            if report_id is not None:
                conn.execute(
                    insert(T.screening_reports).values(
                        id=report_id,
                        match_id=match_id,
                        organization=self.organization[:255],
                        recipient=self.recipient.key if self.recipient else None,
                        address=self.report_email,
                        status="queued",
                        created_at=self._ts(now),
                        attempts=0,
                    )
                )
            self.audit.append(
                conn,
                actor=actor,
                action="screening_match",
                purpose=self.purpose,
                subject_id=subject_id,
                result="blocked" if blocked else "matched",
                detail={
                    "match": match_id,
                    "lists": list(verdict.lists),
                    "algorithms": sorted({x.algorithm for x in verdict.matches}),
                    "actions": list(self.actions),
                    "quarantined": quarantine_file is not None,
                    "report": report_id,
                    "size": verdict.size,
                },
            )

    def _quarantine_copy(self, source: Source, match_id: str, key: bytes, verdict: Verdict) -> str:
        """Encrypt the upload into the quarantine, reading it again; the copy's digest must
        still be the matched one (a file changed in between is caught)."""
        algorithm = verdict.matches[0].algorithm
        writer = _QuarantineWriter(self.quarantine_dir, match_id, key, check=algorithm)
        try:
            for chunk in _chunks(source, self.chunk_size):
                writer.write(chunk)
            got = writer.digest()
            if got is None or got.hex() != verdict.digests[algorithm]:
                raise ScreeningError("the upload changed between screening and quarantine")
            return writer.keep()
        except BaseException:
            writer.discard()
            raise

    def _forget(self, match_id: str) -> None:
        """Best effort, after a failed record: no key and no file without a match row."""
        with contextlib.suppress(Exception):
            (self.quarantine_dir / f"{match_id}{QUARANTINE_SUFFIX}").unlink(missing_ok=True)
        with contextlib.suppress(Exception), self.keys.begin() as kconn:
            kconn.execute(delete(T.request_keys).where(T.request_keys.c.owner_id == match_id))

    def _store_key(self, match_id: str, key: bytes, now: datetime) -> None:
        kek_id, kek = self.keyring.kek
        wrapped = seal(AESGCM(kek), key, owner_key_aad(match_id, kek_id))
        with self.keys.begin() as kconn:
            kconn.execute(
                insert(T.request_keys).values(
                    owner_id=match_id, kek_id=kek_id, wrapped=wrapped, created_at=self._ts(now, self.keys)
                )
            )

    def _load_key(self, match_id: str) -> bytes:
        rk = T.request_keys.c
        with self.keys.connect() as kconn:
            row = kconn.execute(select(rk.kek_id, rk.wrapped).where(rk.owner_id == match_id)).first()
        if row is None:
            raise ScreeningError(f"match {match_id}: its key was destroyed (or it never existed)")
        key = unseal(
            AESGCM(self.keyring.kek_by_id(row.kek_id)),
            bytes(row.wrapped),
            owner_key_aad(match_id, row.kek_id),
            f"key of match {match_id}",
        )
        if len(key) != KEY_SIZE:
            raise DecryptionError(f"key of match {match_id}: {len(key)} bytes, {KEY_SIZE} expected")
        return key

    def _ts(self, at: datetime, engine: Engine | None = None) -> datetime:
        """A time as the store compares it: SQLite keeps naive UTC text."""
        utc = _utc(at)
        return utc.replace(tzinfo=None) if (engine or self.data).dialect.name == "sqlite" else utc

    # ------------------------------------------------------------------------ records
    def matches(self, *, limit: int = 100) -> list[MatchRecord]:
        """The latest match records, newest first."""
        m = T.screening_matches
        with self.data.connect() as conn:
            rows = conn.execute(select(m).order_by(m.c.at.desc(), m.c.id).limit(limit)).mappings().all()
        return [_match_record(r) for r in rows]

    def match(self, match_id: str) -> MatchRecord:
        m = T.screening_matches
        with self.data.connect() as conn:
            row = conn.execute(select(m).where(m.c.id == match_id)).mappings().first()
        if row is None:
            raise ScreeningError(f"no screening match {match_id!r}")
        return _match_record(row)

    def reports(self, *, status: str | None = None, limit: int = 100) -> list[ReportRecord]:
        """Reports, oldest first; ``status``: queued or sent."""
        r = T.screening_reports
        stmt = select(r).order_by(r.c.created_at, r.c.id).limit(limit)
        if status is not None:
            stmt = stmt.where(r.c.status == status)
        with self.data.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [_report_record(x) for x in rows]

    def context(self, match_id: str) -> dict[str, str]:
        """What the caller told about the upload (email, IP address, file name): decrypted."""
        m = T.screening_matches
        with self.data.connect() as conn:
            blob = conn.scalar(select(m.c.context).where(m.c.id == match_id))
        if blob is None:
            raise ScreeningError(f"no screening match {match_id!r}")
        key = self._load_key(match_id)
        value = decode_value(
            unseal(AESGCM(key), bytes(blob), _CONTEXT_TAG + match_id.encode(), "match context")
        )
        assert isinstance(value, dict)
        return {str(k): str(v) for k, v in value.items()}

    def open_quarantined(self, match_id: str) -> Iterator[bytes]:
        """The quarantined bytes, decrypted, in chunks (for a lawful request; never stored
        in clear by Fiduciary)."""
        record = self.match(match_id)
        if not record.quarantined:
            raise ScreeningError(f"match {match_id}: no copy was quarantined (the policy's on_match)")
        key = self._load_key(match_id)
        return _read_quarantine(self.quarantine_dir / f"{match_id}{QUARANTINE_SUFFIX}", match_id, key)

    def read_quarantined(self, match_id: str) -> bytes:
        return b"".join(self.open_quarantined(match_id))

    def destroy(self, match_id: str, *, actor: str = "system") -> None:
        """Crypto-shred a match: its key (and so the quarantined copy and the uploader's
        details) is destroyed, the file removed; the row stays, marked destroyed, as the
        record that there was a match. Its queued report can no longer be sent."""
        record = self.match(match_id)
        with self.keys.begin() as kconn:
            kconn.execute(delete(T.request_keys).where(T.request_keys.c.owner_id == match_id))
        if self.keys.dialect.name == "sqlite":
            # secure_delete zeroes the key's page; the checkpoint clears the -wal copy.
            with self.keys.connect() as kconn:
                raw: Any = kconn.connection.driver_connection
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        (self.quarantine_dir / f"{match_id}{QUARANTINE_SUFFIX}").unlink(missing_ok=True)
        m = T.screening_matches
        with self.data.begin() as conn:
            conn.execute(update(m).where(m.c.id == match_id).values(status="destroyed", context=b""))
            self.audit.append(
                conn,
                actor=actor,
                action="screening_destroy",
                purpose=self.purpose,
                subject_id=record.subject_id,
                detail={"match": match_id},
            )

    # ------------------------------------------------------------------------ reports
    def send_reports(
        self, mailer: Mailer, *, limit: int = 100, actor: str = "system", now: datetime | None = None
    ) -> SendSummary:
        """Send queued reports (oldest first) by mail. One that fails stays queued with
        its error; one without an address waits. Sent ones are marked in one statement."""
        now = now or datetime.now(UTC)
        r, m = T.screening_reports, T.screening_matches
        with self.data.connect() as conn:
            rows = (
                conn.execute(
                    select(
                        r,
                        m.c.subject_id,
                        m.c.at.label("match_at"),
                        m.c.matches,
                        m.c.size,
                        m.c.quarantine_file,
                        m.c.status.label("match_status"),
                    )
                    .join(m, m.c.id == r.c.match_id)
                    .where(r.c.status == "queued")
                    .order_by(r.c.created_at, r.c.id)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
        summary = SendSummary()
        sent: list[dict[str, Any]] = []
        audit: list[dict[str, Any]] = []
        for row in rows:
            address = row["address"] or self.report_email
            if not address:
                summary.waiting.append(row["id"])
                continue
            try:
                if row["match_status"] != "held":
                    raise ScreeningError("the match was destroyed before its report was sent")
                letter = self._letter(row)
                message_id = mailer.send(address, letter.subject, letter.text, now=now)
            except (MailError, ScreeningError, DecryptionError) as exc:
                summary.failed[row["id"]] = str(exc)[:255]
                continue
            summary.sent.append(row["id"])
            sent.append({"rid": row["id"], "mid": message_id[:255], "addr": address})
            audit.append(
                {
                    "actor": actor,
                    "action": "screening_report_sent",
                    "purpose": self.purpose,
                    "subject_id": row["subject_id"],
                    "result": "sent",
                    "detail": {"report": row["id"], "match": row["match_id"], "recipient": row["recipient"]},
                }
            )
        with self.data.begin() as conn:
            if sent:
                conn.execute(
                    update(r)
                    .where(r.c.id == bindparam("rid"))
                    .values(
                        status="sent",
                        sent_at=self._ts(now),
                        message_id=bindparam("mid"),
                        address=bindparam("addr"),
                        attempts=r.c.attempts + 1,
                        last_error=None,
                    ),
                    sent,
                )
            if summary.failed:
                conn.execute(
                    update(r)
                    .where(r.c.id == bindparam("rid"))
                    .values(last_error=bindparam("err"), attempts=r.c.attempts + 1),
                    [{"rid": k, "err": v} for k, v in summary.failed.items()],
                )
            if audit:
                self.audit.append_many(conn, audit)
        return summary

    def _letter(self, row: RowMapping) -> Letter:
        context = self.context(row["match_id"])
        allowed = self._report_fields(context)
        org = self.policy.policy.organization if self.policy is not None else None
        return report_letter(
            reference=row["id"],
            match_id=row["match_id"],
            organization=row["organization"],
            sender=org.name if org is not None else "Fiduciary",
            contact=(org.contact.email or org.contact.url) if org is not None else None,
            at=_utc(row["match_at"]),
            when=self.at,
            matches=[Match(**x) for x in json.loads(row["matches"])],
            size=int(row["size"]),
            details=allowed,
            blocked="block" in self.actions,
            quarantined=row["quarantine_file"] is not None,
        )

    def _report_fields(self, context: Mapping[str, str]) -> dict[str, str]:
        """What the designated recipient may receive: its categories (all, without one)."""
        if self.recipient is None:
            return dict(context)
        cats = self.recipient.categories
        return {k: v for k, v in context.items() if any(is_within(CONTEXT_CATEGORIES[k], c) for c in cats)}


def _chunks(source: Source, size: int) -> Iterator[bytes | memoryview]:
    """The upload again, in chunks: bytes, a path, or a seekable stream (from where the
    screening started, and put back there)."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        for i in range(0, len(view), size):
            yield view[i : i + size]
        return
    if isinstance(source, str | os.PathLike):
        with Path(source).open("rb") as fh:
            while chunk := fh.read(size):
                yield chunk
        return
    stream: Any = source
    start = stream.tell()
    try:
        while chunk := stream.read(size):
            yield chunk
    finally:
        stream.seek(start)


def _loaded(lists: HashLists) -> str:
    return "; ".join(f"{hl.name}: {', '.join(hl.algorithms)}" for hl in lists) or "none"


def _match_record(r: RowMapping) -> MatchRecord:
    return MatchRecord(
        id=r["id"],
        at=_utc(r["at"]),
        subject_id=r["subject_id"],
        matches=tuple(Match(**x) for x in json.loads(r["matches"])),
        digests=json.loads(r["digests"]),
        size=int(r["size"]),
        actions=tuple(str(r["actions"]).split()),
        quarantined=r["quarantine_file"] is not None,
        status=r["status"],
        actor=r["actor"],
    )


def _report_record(r: RowMapping) -> ReportRecord:
    return ReportRecord(
        id=r["id"],
        match_id=r["match_id"],
        organization=r["organization"],
        recipient=r["recipient"],
        address=r["address"],
        status=r["status"],
        created_at=_utc(r["created_at"]),
        attempts=int(r["attempts"]),
        last_error=r["last_error"],
        sent_at=_utc(r["sent_at"]) if r["sent_at"] is not None else None,
        message_id=r["message_id"],
    )


_NAMES: Final = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256"}


def report_letter(
    *,
    reference: str,
    match_id: str,
    organization: str,
    sender: str,
    contact: str | None,
    at: datetime,
    when: str,
    matches: Iterable[Match],
    size: int,
    details: Mapping[str, str],
    blocked: bool,
    quarantined: bool,
) -> Letter:
    """The report of one match to the designated organisation: plain text, the facts only."""
    found = list(matches)
    lists = ", ".join(dict.fromkeys(m.list for m in found))
    lines = [
        f"To: {organization}",
        "",
        f"{sender} checks every uploaded file, when it is {'written to' if when == 'write' else 'read from'} "
        "its storage, against lists of hashes of known illegal content. This upload matched:",
        "",
        f"  Reference:            {reference}",
        f"  Detected:             {at:%Y-%m-%d %H:%M:%S} UTC",
        f"  Hash list(s):         {lists}",
    ]
    lines += [f"  {_NAMES.get(m.algorithm, m.algorithm) + ':':<22}{m.digest}" for m in found]
    lines.append(f"  File size:            {size:,} bytes")
    lines += [f"  {_LABELS[k] + ':':<22}{v}" for k, v in details.items() if k in _LABELS]
    done = ["the upload was refused and not stored" if blocked else "the upload was recorded"]
    if quarantined:
        done.append(
            f"an encrypted copy is kept in quarantine under reference {match_id}, for a lawful request"
        )
    lines += ["", "What we did: " + "; ".join(done) + "."]
    if contact:
        lines += ["", f"Contact: {contact}"]
    lines += ["", "-- ", f"{sender}", ""]
    return Letter(
        subject=f"Report of an upload matching a hash list (reference {reference})", text="\n".join(lines)
    )
