"""The consent ledger: every change of a person's choices is an append-only event.

``consent_events`` holds the facts, each provable under LAW-8 (who, when, what notice text
and policy version, in which language, how, from roughly where, until when).
``consent_state`` is derived: the latest event per (subject, slot), maintained in the same
transaction as each append and rebuildable from the events at any time (``rebuild``).

A *slot* is ``<family>:<scope>``, e.g. ``consent:newsletter``, ``objection:*``,
``accepted:*``, ``setting:visibility:user.name``. The family comes from the event kind.
It exists because one purpose key can carry a consent, an objection and an accepted
version at once, and ``*`` is the scope of both a blanket objection and a restriction;
keying the state on the bare scope would let one overwrite the other.

"Latest" means the greatest ``(at, id)``: an event imported with its original, older time
does not override a newer choice, and ties fall back to append order.

The ledger never stores a full IP address (only its /24 or /48 network) nor the notice
text itself (only its SHA-256); the audit entries it writes carry no personal data.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Protocol, Required, TypedDict, Unpack, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    true,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.dml import Insert

from fiduciary.consent.signals import truncate_ip
from fiduciary.consent.tokens import HasTokenKey, read_unsubscribe_token
from fiduciary.decide import SubjectState
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.store import tables

# SQL statements take at most this many ids in one IN list (SQLite and PostgreSQL both
# cap bound parameters; 5,000 stays far below either).
CHUNK = 5000


class EventKind(StrEnum):
    consent_given = "consent_given"
    consent_withdrawn = "consent_withdrawn"
    consent_expired = "consent_expired"
    objection = "objection"
    objection_withdrawn = "objection_withdrawn"
    restriction = "restriction"
    restriction_lifted = "restriction_lifted"
    sale_opt_out = "sale_opt_out"
    sale_opt_in = "sale_opt_in"
    recipient_opt_out = "recipient_opt_out"
    recipient_opt_in = "recipient_opt_in"
    version_accepted = "version_accepted"
    setting = "setting"


# Which state slot family an event kind writes to; events of one family replace each other.
FAMILY: dict[EventKind, str] = {
    EventKind.consent_given: "consent",
    EventKind.consent_withdrawn: "consent",
    EventKind.consent_expired: "consent",
    EventKind.objection: "objection",
    EventKind.objection_withdrawn: "objection",
    EventKind.restriction: "restriction",
    EventKind.restriction_lifted: "restriction",
    EventKind.sale_opt_out: "sale",
    EventKind.sale_opt_in: "sale",
    EventKind.recipient_opt_out: "recipient",
    EventKind.recipient_opt_in: "recipient",
    EventKind.version_accepted: "accepted",
    EventKind.setting: "setting",
}

# Where a choice can come from. "system" is the ledger itself (expiry), never a person.
CHANNELS: frozenset[str] = frozenset(
    {
        "web_form",
        "api",
        "email_link",
        "gpc_signal",
        "import",
        "account_settings",
        "privacy_center",
        "console",
        "system",
    }
)
# A channel that implies how the choice was expressed, when the caller does not say.
DEFAULT_METHOD: dict[str, str] = {"gpc_signal": "signal", "email_link": "link", "import": "import"}

MAX_SCOPE = 116  # the longest family prefix ("restriction:") + 116 fits consent_state.scope
_SUBJECT = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
_METHOD = re.compile(r"[a-z][a-z0-9_]{0,23}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}")
_HASH = re.compile(r"[0-9a-f]{64}")
_SETTING = re.compile(r"[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)?")
# Setting values are choices (on/off, an audience), never free text: free text invites
# personal data into a table that is kept after erasure.
_SETTING_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class ConsentError(ValueError):
    """A consent event was refused; nothing was written."""


class UnknownSubject(ConsentError, LookupError):
    pass


class UnknownEvent(ConsentError, LookupError):
    pass


class AuditSink(Protocol):
    """What the ledger needs from fiduciary.audit.AuditLog: entries in the caller's
    transaction, so an event and its audit entry commit or vanish together."""

    def append(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        purpose: str | None,
        subject_id: str | None,
        result: str,
        detail: dict[str, Any] | None,
    ) -> object: ...

    def append_many(self, conn: Connection, entries: list[dict[str, Any]]) -> object: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """One event to append (record_many); the fields mean what record()'s arguments mean.
    ``at`` is the event time (default: now)."""

    subject_id: str
    kind: EventKind | str
    scope: str
    channel: str
    policy_version: str
    value: str | None = None
    method: str | None = None
    notice_text: str | None = None
    notice_hash: str | None = None
    language: str | None = None
    ip: str | None = None
    expires_at: datetime | None = None
    actor: str | None = None
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One stored event."""

    id: int
    subject_id: str
    kind: EventKind
    scope: str
    value: str | None
    at: datetime
    policy_version: str
    notice_hash: str | None
    language: str | None
    method: str | None
    channel: str
    ip: str | None
    expires_at: datetime | None
    actor: str | None


class EventOptions(TypedDict, total=False):
    """The keyword arguments every convenience method passes on to record()."""

    channel: Required[str]
    policy_version: Required[str]
    method: str | None
    notice_text: str | None
    notice_hash: str | None
    language: str | None
    ip: str | None
    expires_at: datetime | None
    actor: str | None
    now: datetime | None
    conn: Connection | None


def slot(kind: EventKind, scope: str) -> str:
    """The consent_state key an event of ``kind`` on ``scope`` writes."""
    return f"{FAMILY[kind]}:{scope}"


def notice_digest(text: str) -> str:
    """SHA-256 of the exact notice text shown (UTF-8), as stored in ``notice_hash``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _utc(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ConsentError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConsentError(f"{what} must be timezone-aware (got {value.isoformat()})")
    # One zone everywhere: SQLite stores datetimes as text without an offset, and both the
    # state's "latest" comparison and rebuild compare them.
    return value.astimezone(UTC)


def _from_db(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ConsentLedger:
    """Append, derive and prove a person's choices for one CompiledPolicy."""

    def __init__(self, data: Engine, cp: CompiledPolicy, audit: AuditSink | None = None) -> None:
        self.data = data
        self.cp = cp
        self.audit = audit
        self._pg = data.dialect.name == "postgresql"
        if self._pg:
            self._dialect_insert: Callable[[Table], postgresql.Insert | sqlite.Insert] = postgresql.insert
        elif data.dialect.name == "sqlite":
            self._dialect_insert = sqlite.insert
            process = tables.consent_events.c.at.type.dialect_impl(data.dialect).bind_processor(data.dialect)
            assert process is not None
            self._sqlite_time: Callable[[datetime], str] = process
        else:
            raise ConsentError(f"the consent ledger supports SQLite and PostgreSQL, not {data.dialect.name}")
        # Built once: SQLAlchemy then reuses its compiled form for every append.
        ce_id = tables.consent_events.c.id
        self._upsert_range = self._upsert_latest(ce_id.between(bindparam("lo"), bindparam("hi")))
        # The reads by a list of subjects, with the list as one parameter (_ids_param): the
        # statement's text never changes, so nothing is built or rendered per call (an IN
        # list costs ~4x the lookup it does for the few subjects of a web batch).
        subj, cs = tables.subjects, tables.consent_state
        self._known_in = select(subj.c.id).where(self._ids_in(subj.c.id))
        c = subj.c
        self._subjects_in = select(
            c.id, c.kind, c.jurisdiction, c.status, c.age_status, c.policy_version
        ).where(self._ids_in(c.id))
        self._states_in = select(cs.c.subject_id, cs.c.scope, cs.c.kind, cs.c.value, cs.c.expires_at).where(
            self._ids_in(cs.c.subject_id)
        )

    # ------------------------------------------------------------------ writing
    def record(
        self,
        subject_id: str,
        kind: EventKind | str,
        scope: str,
        *,
        channel: str,
        policy_version: str,
        value: str | None = None,
        method: str | None = None,
        notice_text: str | None = None,
        notice_hash: str | None = None,
        language: str | None = None,
        ip: str | None = None,
        expires_at: datetime | None = None,
        actor: str | None = None,
        now: datetime | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Append one event and update the subject's state; returns the event id.

        ``notice_text`` is the exact text the person was shown; only its SHA-256 is kept
        (``notice_hash`` instead, when the text is no longer at hand, e.g. an import).
        ``ip`` is truncated to its /24 (IPv4) or /48 (IPv6) network before storing.
        Invalid input raises ConsentError and writes nothing.
        """
        event = NewEvent(
            subject_id=subject_id,
            kind=kind,
            scope=scope,
            channel=channel,
            policy_version=policy_version,
            value=value,
            method=method,
            notice_text=notice_text,
            notice_hash=notice_hash,
            language=language,
            ip=ip,
            expires_at=expires_at,
            actor=actor,
            at=now,
        )
        return self._record([event], now, conn, single=True)[0]

    def record_many(
        self, events: Iterable[NewEvent], *, now: datetime | None = None, conn: Connection | None = None
    ) -> list[int]:
        """Append many events in one transaction, state included; returns their ids in
        order. One invalid event refuses the whole batch (the error names its index)."""
        return self._record(list(events), now, conn, single=False)

    def _record(
        self, events: Sequence[NewEvent], now: datetime | None, conn: Connection | None, *, single: bool
    ) -> list[int]:
        if not events:
            return []
        moment = _utc(now, "now") if now is not None else datetime.now(UTC)
        rows = [self._prepare(e, None if single else i, moment) for i, e in enumerate(events)]
        with self._tx(conn) as c:
            self._check_subjects(c, rows, single)
            return self._append(c, rows)

    @staticmethod
    def _where(e: NewEvent, index: int | None) -> str:
        at = "" if index is None else f" #{index}"
        return f"consent event{at} ({e.kind!s} {e.scope!r} for subject {e.subject_id!r})"

    def _prepare(self, e: NewEvent, index: int | None, now: datetime) -> dict[str, Any]:
        """Check one event against the policy and turn it into a consent_events row."""

        def bad(message: str) -> ConsentError:
            # Built only on error: the happy path of a bulk import pays no formatting.
            return ConsentError(f"{self._where(e, index)}: {message}")

        if not isinstance(e.subject_id, str) or not _SUBJECT.fullmatch(e.subject_id):
            raise bad("subject id must be 1-32 letters, digits or _.:-")
        try:
            kind = EventKind(e.kind)
        except ValueError:
            raise bad(f"unknown event kind; one of {', '.join(EventKind)}") from None
        scope = e.scope
        if not isinstance(scope, str) or not 0 < len(scope) <= MAX_SCOPE:
            raise bad(f"scope must be 1-{MAX_SCOPE} characters")
        self._check_scope(kind, scope, e.value, bad)

        if e.channel not in CHANNELS:
            raise bad(f"unknown channel {e.channel!r}; one of {', '.join(sorted(CHANNELS))}")
        if not isinstance(e.policy_version, str) or not 0 < len(e.policy_version) <= 64:
            raise bad("policy_version must be 1-64 characters")
        method = e.method if e.method is not None else DEFAULT_METHOD.get(e.channel)
        if method is not None and (not isinstance(method, str) or not _METHOD.fullmatch(method)):
            raise bad(f"method {method!r} must be a lower-case word of at most 24 characters")
        if e.notice_text is not None and e.notice_hash is not None:
            raise bad("give notice_text or notice_hash, not both")
        if e.notice_text is not None:
            if not isinstance(e.notice_text, str) or not e.notice_text:
                raise bad("notice_text must be the non-empty text shown to the person")
            notice: str | None = notice_digest(e.notice_text)
        elif e.notice_hash is not None:
            if not isinstance(e.notice_hash, str) or not _HASH.fullmatch(e.notice_hash):
                raise bad("notice_hash must be 64 lower-case hex digits (SHA-256)")
            notice = e.notice_hash
        else:
            notice = None
        language = e.language
        if language is not None and (not isinstance(language, str) or not _LANGUAGE.fullmatch(language)):
            raise bad(f"language {e.language!r} is not a language tag such as 'en' or 'pt-BR'")
        ip = None
        if e.ip is not None:
            try:
                ip = truncate_ip(e.ip)
            except ValueError as exc:
                raise bad(f"ip: {exc}") from None
        try:
            at = _utc(e.at, "at") if e.at is not None else now
            expires = _utc(e.expires_at, "expires_at") if e.expires_at is not None else None
        except ConsentError as exc:
            raise bad(str(exc)) from None
        if expires is not None:
            if kind != EventKind.consent_given:
                raise bad("expires_at applies to consent_given only")
            if expires <= at:
                raise bad(f"expires_at {expires.isoformat()} is not after the event time {at.isoformat()}")
        if e.actor is not None and (not isinstance(e.actor, str) or not 0 < len(e.actor) <= 128):
            raise bad("actor must be 1-128 characters")
        return {
            "subject_id": e.subject_id,
            "kind": kind.value,
            "scope": scope,
            "value": e.value,
            "at": at,
            "policy_version": e.policy_version,
            "notice_hash": notice,
            "language": e.language,
            "method": method,
            "channel": e.channel,
            "ip": ip,
            "expires_at": expires,
            "actor": e.actor,
        }

    def _check_scope(
        self, kind: EventKind, scope: str, value: str | None, bad: Callable[[str], ConsentError]
    ) -> None:
        family = FAMILY[kind]
        purposes = self.cp.purposes
        if family not in ("accepted", "setting") and value is not None:
            raise bad("value is only for setting and version_accepted events")
        if family == "consent":
            if scope not in purposes:
                raise bad(f"unknown purpose {scope!r}{_suggest(scope, purposes)}")
        elif family == "objection":
            if scope == "*":
                return
            p = purposes.get(scope)
            if p is None:
                raise bad(f"unknown purpose {scope!r}{_suggest(scope, purposes)}; '*' objects to all")
            if not (p.objection or p.direct_marketing):
                raise bad(
                    f"purpose {scope!r} (basis {p.basis.value}) cannot be objected to: the right to "
                    "object (GDPR Art. 21, LAW-7) covers legitimate-interest and public-task "
                    "purposes the policy opens to objection, and direct marketing"
                )
        elif family == "restriction":
            if scope != "*":
                raise bad("a restriction covers all processing; its scope is '*'")
        elif family == "sale":
            if scope != "sale":
                raise bad("the scope of a sale opt-out or opt-in is 'sale'")
        elif family == "recipient":
            if scope not in self.cp.recipients:
                raise bad(f"unknown recipient {scope!r}{_suggest(scope, self.cp.recipients)}")
        elif family == "accepted":
            if scope != "*" and scope not in purposes:
                raise bad(f"unknown purpose {scope!r}{_suggest(scope, purposes)}; '*' accepts all")
            if not isinstance(value, str) or not value.isdigit() or int(value) <= 0:
                raise bad("value must be the accepted policy version's sequence number (a positive integer)")
        else:  # setting
            if not _SETTING.fullmatch(scope):
                raise bad("a setting name is a lower-case word, optionally 'name:qualifier'")
            if not isinstance(value, str) or not _SETTING_VALUE.fullmatch(value):
                raise bad("a setting's value must be 1-128 letters, digits or _.:- (a choice, not free text)")
            name, _, rest = scope.partition(":")
            if name == "visibility":
                rule = self.cp.visibility.get(rest)
                if rule is None:
                    raise bad(f"the policy has no visibility rule for category {rest!r}")
                if not rule.settable:
                    raise bad(f"the visibility of {rest!r} is fixed by the policy")
                if value not in rule.audiences:
                    raise bad(f"audience {value!r} is not offered for {rest!r}; one of {rule.audiences}")
            elif name == "linked" and rest not in self.cp.recipients:
                raise bad(f"unknown recipient {rest!r}{_suggest(rest, self.cp.recipients)}")

    def _check_subjects(self, conn: Connection, rows: list[dict[str, Any]], single: bool) -> None:
        wanted = list(dict.fromkeys(r["subject_id"] for r in rows))
        known: set[str] = set()
        if len(wanted) == 1:  # record(): a plain equality
            known.update(conn.execute(_KNOWN_ONE, {"sid": wanted[0]}).scalars())
        for chunk in _chunks(wanted) if len(wanted) > 1 else ():
            known.update(conn.execute(self._known_in, {"ids": self._ids_param(chunk)}).scalars())
        if len(known) == len(wanted):
            return
        for i, r in enumerate(rows):
            if r["subject_id"] not in known:
                at = "" if single else f" #{i}"
                raise UnknownSubject(f"consent event{at}: unknown subject {r['subject_id']!r}")

    def _append(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert checked rows, update consent_state, audit; all in ``conn``'s transaction."""
        ids = self._insert_events(conn, rows)
        # The state comes from the rows just written, by the same SELECT as rebuild(), so
        # incremental and rebuilt states cannot drift apart. The range may also hold another
        # transaction's committed events (PostgreSQL sequences interleave): harmless, they
        # are real events and the upsert keeps whichever is latest.
        conn.execute(self._upsert_range, {"lo": min(ids), "hi": max(ids)})
        if self.audit is not None:
            entries = [self._audit_entry(event_id, r) for event_id, r in zip(ids, rows, strict=True)]
            if len(entries) == 1:
                self.audit.append(conn, **entries[0])
            else:
                self.audit.append_many(conn, entries)
        return ids

    def _insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Append the rows to consent_events; their ids, in order.

        A bulk INSERT ... RETURNING cannot promise which id belongs to which row (SQLAlchemy
        then falls back to one statement per row), so a batch takes its ids first and
        inserts them explicitly: from the sequence on PostgreSQL, after max(id) on SQLite,
        whose BEGIN IMMEDIATE transaction holds the write lock, so no one else can take them.
        """
        if len(rows) == 1:
            return [int(conn.execute(_INSERT_ONE, rows[0]).scalar_one())]
        if self._pg:
            ids = sorted(int(i) for i in conn.execute(_PG_NEXT_IDS, {"n": len(rows)}).scalars())
            # COPY: psycopg streams the rows in C, several times faster than any INSERT.
            # Same DBAPI connection, so same transaction as everything else here.
            raw = conn.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cur, cur.copy(_PG_COPY_EVENTS) as copy:
                for event_id, r in zip(ids, rows, strict=True):
                    r["id"] = event_id
                    copy.write_row([r[c] for c in _EVENT_COLUMNS])
            return ids
        top = int(conn.execute(_SQLITE_TOP_EVENT).scalar_one())
        ids = list(range(top + 1, top + 1 + len(rows)))
        # sqlite3's executemany runs one prepared statement over plain tuples in C; the
        # times are turned into text by SQLAlchemy's own SQLite DATETIME processor, so
        # they are stored exactly as every other statement stores and compares them.
        stamp = self._sqlite_time
        conn.exec_driver_sql(
            _SQLITE_INSERT_EVENTS,
            [
                (
                    event_id,
                    r["subject_id"],
                    r["kind"],
                    r["scope"],
                    r["value"],
                    stamp(r["at"]),
                    r["policy_version"],
                    r["notice_hash"],
                    r["language"],
                    r["method"],
                    r["channel"],
                    r["ip"],
                    None if r["expires_at"] is None else stamp(r["expires_at"]),
                    r["actor"],
                )
                for event_id, r in zip(ids, rows, strict=True)
            ],
        )
        return ids

    def _upsert_latest(self, where: ColumnElement[bool]) -> Insert:
        """INSERT the latest event per slot among the events ``where`` selects into
        consent_state, replacing a row only with a later one."""
        cs = tables.consent_state
        stmt = self._dialect_insert(cs).from_select(list(_STATE_COLUMNS), _latest(where))
        new = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=[cs.c.subject_id, cs.c.scope],
            set_={c: new[c] for c in _STATE_COLUMNS if c not in ("subject_id", "scope")},
            where=or_(cs.c.at < new.at, and_(cs.c.at == new.at, cs.c.event_id < new.event_id)),
        )

    def _audit_entry(self, event_id: int, r: Mapping[str, Any]) -> dict[str, Any]:
        family = FAMILY[EventKind(r["kind"])]
        purpose = r["scope"] if family in ("consent", "objection", "accepted") and r["scope"] != "*" else None
        return {
            "actor": r["actor"] or f"channel:{r['channel']}",
            "action": f"consent.{r['kind']}",
            "purpose": purpose,
            "subject_id": r["subject_id"],
            "result": "ok",
            # Identifiers only: the IP, notice hash and language stay in the ledger.
            "detail": {"event_id": event_id, "scope": r["scope"], "channel": r["channel"]},
        }

    @contextmanager
    def _tx(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn  # the caller's transaction: it commits or rolls back everything
            return
        with self.data.begin() as c:
            yield c

    # ------------------------------------------------------------------ conveniences
    # Each is one call of the same shape: withdrawing is exactly as easy as giving (LAW-8).
    def give(self, subject_id: str, purpose: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.consent_given, purpose, **kw)

    def withdraw(self, subject_id: str, purpose: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.consent_withdrawn, purpose, **kw)

    def object(self, subject_id: str, purpose: str = "*", **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.objection, purpose, **kw)

    def withdraw_objection(self, subject_id: str, purpose: str = "*", **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.objection_withdrawn, purpose, **kw)

    def restrict(self, subject_id: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.restriction, "*", **kw)

    def lift_restriction(self, subject_id: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.restriction_lifted, "*", **kw)

    def opt_out_of_sale(self, subject_id: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.sale_opt_out, "sale", **kw)

    def opt_in_to_sale(self, subject_id: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.sale_opt_in, "sale", **kw)

    def opt_out_of_recipient(self, subject_id: str, recipient: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.recipient_opt_out, recipient, **kw)

    def opt_in_to_recipient(self, subject_id: str, recipient: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.recipient_opt_in, recipient, **kw)

    def set_setting(self, subject_id: str, name: str, value: str, **kw: Unpack[EventOptions]) -> int:
        return self.record(subject_id, EventKind.setting, name, value=value, **kw)

    def accept_version(
        self, subject_id: str, scope: str, version_seq: int, **kw: Unpack[EventOptions]
    ) -> int:
        """The person accepts the material changes up to policy version ``version_seq``
        (a policy_versions id) for ``scope``: a purpose, or '*' for all (PUT-3)."""
        return self.record(subject_id, EventKind.version_accepted, scope, value=str(version_seq), **kw)

    def unsubscribe(
        self,
        keyring: HasTokenKey,
        token: str,
        *,
        policy_version: str,
        max_age: float | None = None,
        ip: str | None = None,
        now: datetime | None = None,
        conn: Connection | None = None,
    ) -> int:
        """One-click unsubscribe (LAW-14): withdraw the purpose named in a signed token.
        Raises tokens.BadToken for a bad token, before anything is written."""
        subject_id, purpose = read_unsubscribe_token(keyring, token, max_age=max_age, now=now)
        return self.withdraw(
            subject_id,
            purpose,
            channel="email_link",
            policy_version=policy_version,
            ip=ip,
            actor="subject",
            now=now,
            conn=conn,
        )

    # ------------------------------------------------------------------ expiry
    def expire_due(self, now: datetime | None = None, *, conn: Connection | None = None) -> int:
        """Append consent_expired for every consent whose expires_at has passed; returns how
        many. Idempotent: an expired consent is no longer 'given', so it is not seen twice."""
        moment = _utc(now, "now") if now is not None else datetime.now(UTC)
        cs = tables.consent_state
        prefix = "consent:"
        with self._tx(conn) as c:
            # FOR UPDATE (PostgreSQL; SQLite writers are serial already): a consent renewed
            # concurrently waits for this transaction instead of being overwritten blindly.
            due = c.execute(
                select(cs.c.subject_id, cs.c.scope, cs.c.expires_at)
                .where(
                    cs.c.kind == EventKind.consent_given.value,
                    cs.c.expires_at.is_not(None),
                    cs.c.expires_at <= moment,
                )
                .order_by(cs.c.subject_id, cs.c.scope)
                .with_for_update()
            ).all()
            if not due:
                return 0
            rows = [
                {
                    "subject_id": subject_id,
                    "kind": EventKind.consent_expired.value,
                    "scope": scope[len(prefix) :],
                    "value": None,
                    "at": moment,
                    "policy_version": self.cp.version,
                    "notice_hash": None,
                    "language": None,
                    "method": "expiry",
                    "channel": "system",
                    "ip": None,
                    "expires_at": _from_db(expires_at),
                    "actor": "system",
                }
                for subject_id, scope, expires_at in due
            ]
            self._append(c, rows)
            return len(rows)

    # ------------------------------------------------------------------ reading
    def events(self, subject_id: str) -> list[ConsentEvent]:
        """Every event of one subject, oldest first (append order)."""
        ce = tables.consent_events
        with self.data.connect() as conn:
            rows = conn.execute(select(ce).where(ce.c.subject_id == subject_id).order_by(ce.c.id)).mappings()
            return [_event(r) for r in rows]

    def proof(self, event_id: int) -> dict[str, Any]:
        """Everything LAW-8 asks to prove about one event, JSON-ready: who (subject id),
        when, what (purpose, hash of the notice text, policy version, language), how
        (method, channel), from where (truncated IP), until when (expiry)."""
        ce = tables.consent_events
        with self.data.connect() as conn:
            row = conn.execute(select(ce).where(ce.c.id == event_id)).mappings().first()
        if row is None:
            raise UnknownEvent(f"no consent event with id {event_id}")
        return self._proof(_event(row))

    def proofs(self, subject_id: str) -> list[dict[str, Any]]:
        """proof() of every event of one subject, oldest first, with one SELECT (for an
        access request's consent history)."""
        return [self._proof(e) for e in self.events(subject_id)]

    def _proof(self, e: ConsentEvent) -> dict[str, Any]:
        family = FAMILY[e.kind]
        purpose = e.scope if family in ("consent", "objection", "accepted") and e.scope != "*" else None
        p = self.cp.purposes.get(purpose) if purpose else None
        return {
            "event_id": e.id,
            "subject_id": e.subject_id,
            "kind": e.kind.value,
            "scope": e.scope,
            "value": e.value,
            "at": e.at.isoformat(),
            "purpose": purpose,
            "purpose_name": p.name if p else None,
            "basis": p.basis.value if p else None,
            "notice_hash": e.notice_hash,
            "notice_hash_algorithm": "sha256" if e.notice_hash else None,
            "policy_version": e.policy_version,
            "language": e.language,
            "method": e.method,
            "channel": e.channel,
            "ip": e.ip,
            "expires_at": e.expires_at.isoformat() if e.expires_at else None,
            "actor": e.actor,
        }

    def state(
        self, subject_id: str, versions: Mapping[str, int] | None = None, *, now: datetime | None = None
    ) -> SubjectState:
        """The subject's state now, for the decision engine. ``versions`` maps a policy
        version label to its sequence number (PUT-3's data_since)."""
        found = self.states([subject_id], versions, now=now)
        if subject_id not in found:
            raise UnknownSubject(f"unknown subject {subject_id!r}")
        return found[subject_id]

    def states(
        self,
        subject_ids: Iterable[str],
        versions: Mapping[str, int] | None = None,
        *,
        now: datetime | None = None,
    ) -> dict[str, SubjectState]:
        """States of many subjects with two SELECTs (per 5,000 subjects): the subjects rows
        and their consent_state rows. Unknown ids are left out."""
        moment = _utc(now, "now") if now is not None else datetime.now(UTC)
        versions = versions or {}
        ids = list(dict.fromkeys(subject_ids))
        out: dict[str, SubjectState] = {}
        with self.data.connect() as conn:
            for chunk in _chunks(ids):
                param = {"ids": self._ids_param(chunk)}
                subjects = conn.execute(self._subjects_in, param).all()
                by_subject: dict[str, list[Any]] = {row.id: [] for row in subjects}
                for row in conn.execute(self._states_in, param):
                    if row.subject_id in by_subject:
                        by_subject[row.subject_id].append(row)
                for subj in subjects:
                    out[subj.id] = _build_state(subj, by_subject[subj.id], versions, moment)
        return out

    # ------------------------------------------------------------------ rebuild
    def rebuild(self, subject_ids: Iterable[str] | None = None) -> int:
        """Recompute consent_state from consent_events (all subjects, or some) with one
        DELETE and one INSERT ... SELECT per 5,000 subjects; returns the rows written."""
        cs, ce = tables.consent_state, tables.consent_events
        cols = list(_STATE_COLUMNS)

        def statement(where: ColumnElement[bool]) -> Insert:
            # rowcount of an INSERT is only kept when asked for (SQLAlchemy >= 2.0.28).
            return insert(cs).from_select(cols, _latest(where)).execution_options(preserve_rowcount=True)

        written = 0
        with self.data.begin() as conn:
            if subject_ids is None:
                conn.execute(delete(cs))
                written += conn.execute(statement(true())).rowcount
            else:
                clear, fill = (
                    delete(cs).where(self._ids_in(cs.c.subject_id)),
                    statement(self._ids_in(ce.c.subject_id)),
                )
                for chunk in _chunks(list(dict.fromkeys(subject_ids))):
                    param = {"ids": self._ids_param(chunk)}
                    conn.execute(clear, param)
                    written += conn.execute(fill, param).rowcount
        return written

    def _ids_in(self, column: ColumnElement[str]) -> ColumnElement[bool]:
        """``column`` is one of the ids given as the parameter ``ids`` (``_ids_param``):
        an array on PostgreSQL, a JSON array read by ``json_each`` on SQLite."""
        if self._pg:
            return column == any_(bindparam("ids", type_=postgresql.ARRAY(String())))
        return column.in_(select(literal_column("value")).select_from(func.json_each(bindparam("ids"))))

    def _ids_param(self, ids: list[str]) -> list[str] | str:
        return ids if self._pg else json.dumps(ids)


# ---------------------------------------------------------------------- helpers


# Built once: SQLAlchemy then reuses their compiled form (building one costs more than
# running it).
_SQLITE_TOP_EVENT = select(func.coalesce(func.max(tables.consent_events.c.id), 0))
_KNOWN_ONE = select(tables.subjects.c.id).where(tables.subjects.c.id == bindparam("sid"))
_INSERT_ONE = insert(tables.consent_events).returning(tables.consent_events.c.id)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


_EVENT_COLUMNS = (
    "id",
    "subject_id",
    "kind",
    "scope",
    "value",
    "at",
    "policy_version",
    "notice_hash",
    "language",
    "method",
    "channel",
    "ip",
    "expires_at",
    "actor",
)
_STATE_COLUMNS = ("subject_id", "scope", "kind", "value", "at", "expires_at", "event_id")
_PG_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('consent_events', 'id')) FROM generate_series(1, :n)"
)
_PG_COPY_EVENTS = f"COPY consent_events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN"
_SQLITE_INSERT_EVENTS = "INSERT INTO consent_events ({}) VALUES ({})".format(
    ", ".join(_EVENT_COLUMNS), ", ".join("?" * len(_EVENT_COLUMNS))
)


def _latest(where: ColumnElement[bool]) -> Select[Any]:
    """The latest event per (subject, slot) among the events ``where`` selects, as
    consent_state rows: the one definition of "current state" (rebuild and appends)."""
    ce = tables.consent_events
    family = case({k.value: v for k, v in FAMILY.items()}, value=ce.c.kind)
    slot_sql = type_coerce(family, String()) + literal(":", String()) + ce.c.scope
    ranked = (
        select(
            ce.c.subject_id,
            slot_sql.label("scope"),
            ce.c.kind,
            ce.c.value,
            ce.c.at,
            ce.c.expires_at,
            ce.c.id.label("event_id"),
            func.row_number()
            .over(partition_by=(ce.c.subject_id, slot_sql), order_by=(ce.c.at.desc(), ce.c.id.desc()))
            .label("rn"),
        )
        # A kind this version does not know has no family (NULL): left out, not guessed.
        .where(family.is_not(None), where)
        .subquery()
    )
    return select(*(ranked.c[n] for n in _STATE_COLUMNS)).where(ranked.c.rn == 1)


def _event(r: RowMapping) -> ConsentEvent:
    return ConsentEvent(
        id=int(r["id"]),
        subject_id=r["subject_id"],
        kind=EventKind(r["kind"]),
        scope=r["scope"],
        value=r["value"],
        at=cast(datetime, _from_db(r["at"])),
        policy_version=r["policy_version"],
        notice_hash=r["notice_hash"],
        language=r["language"],
        method=r["method"],
        channel=r["channel"],
        ip=r["ip"],
        expires_at=_from_db(r["expires_at"]),
        actor=r["actor"],
    )


_STATUS = ("active", "closed", "erased")
_AGE = ("unknown", "adult", "under_age")


def _build_state(subj: Any, rows: list[Any], versions: Mapping[str, int], now: datetime) -> SubjectState:
    if subj.status not in _STATUS or subj.age_status not in _AGE:
        raise ConsentError(
            f"subject {subj.id!r} has status {subj.status!r} / age_status {subj.age_status!r}; "
            f"expected one of {_STATUS} / {_AGE}"
        )
    consents: dict[str, str] = {}
    objections: set[str] = set()
    restricted = sale_opt_out = False
    recipient_opt_outs: set[str] = set()
    settings: dict[str, str] = {}
    accepted: dict[str, int] = {}
    for r in rows:
        scope = r.scope.partition(":")[2]
        kind = r.kind
        if kind == EventKind.consent_given:
            expires = _from_db(r.expires_at)
            # Expired even before expire_due() has written it down: a decision is "now".
            consents[scope] = "expired" if expires is not None and expires <= now else "given"
        elif kind == EventKind.consent_withdrawn:
            consents[scope] = "withdrawn"
        elif kind == EventKind.consent_expired:
            consents[scope] = "expired"
        elif kind == EventKind.objection:
            objections.add(scope)
        elif kind == EventKind.restriction:
            restricted = True
        elif kind == EventKind.sale_opt_out:
            sale_opt_out = True
        elif kind == EventKind.recipient_opt_out:
            recipient_opt_outs.add(scope)
        elif kind == EventKind.version_accepted:
            accepted[scope] = int(r.value)
        elif kind == EventKind.setting and r.value is not None:
            settings[scope] = r.value
        # objection_withdrawn, restriction_lifted, sale_opt_in, recipient_opt_in: the
        # absence of the opposite choice is the state.
    return SubjectState(
        subject_id=subj.id,
        kind=subj.kind,
        jurisdiction=subj.jurisdiction,
        status=cast(Literal["active", "closed", "erased"], subj.status),
        age_status=cast(Literal["unknown", "adult", "under_age"], subj.age_status),
        consents=consents,
        objections=frozenset(objections),
        restricted=restricted,
        sale_opt_out=sale_opt_out,
        recipient_opt_outs=frozenset(recipient_opt_outs),
        settings=settings,
        data_since=versions.get(subj.policy_version, 0),
        accepted=accepted,
    )


__all__ = [
    "CHANNELS",
    "FAMILY",
    "AuditSink",
    "ConsentError",
    "ConsentEvent",
    "ConsentLedger",
    "EventKind",
    "EventOptions",
    "NewEvent",
    "UnknownEvent",
    "UnknownSubject",
    "notice_digest",
    "slot",
]
