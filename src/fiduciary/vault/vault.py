"""The vault: subjects, their identities and attributes, encrypted under per-subject keys.

Two stores (see ``store/tables.py``):
- the **data** store holds subjects, identities (blind index + ciphertext) and attributes
  (ciphertext + provenance: source, collected-at, policy version, activity);
- the **key** store holds one wrapped data key (DEK) per subject.

Erasure deletes the subject's DEK from the key store (crypto-shredding): from then on the
subject's ciphertexts, in the live data store and in every backup of it, are noise. The
rows are deleted too, but the key delete is what reaches the backups.

Writes go to both stores. They cannot share one transaction, so the order is chosen for
what a crash leaves behind: on create, the data rows are written (not yet committed), then
the keys are committed, then the data. A crash in between leaves at worst a key without
data (harmless) and never data without a key (unreadable). On erase the key goes first:
a crash after it leaves data nobody can read, and erasing again finishes the job.

Every public call that reads or writes personal data appends an audit entry, when an
audit log is given, in the same data-store transaction as the change it records (a failed
audit append undoes the change). ``find`` and ``find_many`` return opaque ids only and are
not audited; the read that follows them is.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    LargeBinary,
    String,
    Table,
    bindparam,
    delete,
    func,
    literal,
    null,
    select,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.taxonomy import is_within, suggest
from fiduciary.store import tables as T
from fiduciary.vault.crypto import (
    KeyWrapper,
    SubjectCipher,
    ValueEncodingError,
    new_data_key,
)
from fiduciary.vault.keyring import Keyring
from fiduciary.vault.normalize import BUILTIN_KINDS, IdentityError, blind_index, normalize
from fiduciary.vault.reconcile import Reconciliation, flush_key_store, reconcile_keys
from fiduciary.vault.rotate import kek_usage, rotate_keys
from fiduciary.vault.workers import PrepareWorker, PrepareWorkers, WorkerFailed, WorkerSetup

log = logging.getLogger(__name__)

SOURCES: Final = frozenset({"subject", "observed", "inferred", "third_party", "other_users"})
AGE_STATUSES: Final = frozenset({"unknown", "adult", "under_age"})
ACTIVE, ERASED = "active", "erased"

# Bound parameters per IN (...) list: well below SQLite's 32766 and PostgreSQL's 65535.
_IN_CHUNK = 5000


# ---------------------------------------------------------------------------------- errors
class VaultError(Exception):
    """Base of the vault's errors."""


class VaultInputError(VaultError, ValueError):
    """Bad input: says what and where. Nothing was stored."""


class UnknownSubject(VaultError, LookupError):
    def __init__(self, subject_id: str) -> None:
        self.subject_id = subject_id
        super().__init__(f"no subject {subject_id!r} in the vault")


class SubjectErased(VaultError):
    def __init__(self, subject_id: str, detail: str = "its data has been erased") -> None:
        self.subject_id = subject_id
        super().__init__(f"subject {subject_id}: {detail}")


class DataKeyDestroyed(SubjectErased):
    """The subject's data key is gone from the key store: its data cannot be decrypted.

    Seen when reading a backup of the data store taken before an erasure, or the data
    store after an erasure that stopped half-way."""

    def __init__(self, subject_id: str) -> None:
        super().__init__(
            subject_id, "its data key has been destroyed (erased); the data can no longer be decrypted"
        )


class DuplicateIdentity(VaultInputError):
    def __init__(self, kind: str, same_as_record: int | None = None) -> None:
        self.kind = kind
        taken = "another subject" if same_as_record is None else f"record #{same_as_record} of this import"
        super().__init__(f"identity {kind} is already taken by {taken}")


class MissingMandatory(VaultInputError):
    """PLV-1: an activity was written without all of its mandatory categories."""

    def __init__(self, activity: str, missing: Sequence[str]) -> None:
        self.activity = activity
        self.missing = tuple(missing)
        super().__init__(
            f"activity {activity!r} needs {', '.join(self.missing)}: "
            f"{'it is' if len(self.missing) == 1 else 'they are'} mandatory; nothing was stored"
        )


class ImportFailed(VaultInputError):
    """A record of a bulk import was refused. Its batch was not stored; earlier batches were."""

    def __init__(self, record: int, imported: int, cause: Exception) -> None:
        self.record = record
        self.imported = imported
        self.cause = cause
        super().__init__(
            f"import record #{record}: {cause} "
            f"({imported} subjects of earlier batches were imported; none of this batch)"
        )


# ------------------------------------------------------------------------------ values
@dataclass(frozen=True, slots=True)
class StoredValue:
    value: object
    source: str
    collected_at: datetime
    policy_version: str
    activity: str | None


@dataclass(frozen=True, slots=True)
class SubjectRead:
    """What ``Vault.read_many`` found of one subject, decrypted."""

    status: str  # active | closed (erased subjects are not read)
    identities: dict[str, str]  # kind -> normalized value
    attributes: dict[str, StoredValue]  # empty unless the subject's values were asked for


@dataclass(frozen=True, slots=True)
class SubjectRow:
    id: str
    kind: str
    jurisdiction: str
    status: str
    age_status: str
    policy_version: str
    created_at: datetime
    last_activity_at: datetime | None
    closed_at: datetime | None
    erased_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewSubject:
    """One subject for ``Vault.import_subjects`` (the arguments of ``create_subject``)."""

    kind: str
    jurisdiction: str
    identities: Mapping[str, str]
    policy_version: str
    attributes: Mapping[str, object] | None = None
    activity: str | None = None
    source: str | None = None  # default: the activity's source, else "subject"
    age_status: str = "unknown"
    now: datetime | None = None


class AuditLog(Protocol):
    """What the vault needs of ``fiduciary.audit`` (duck-typed, so the vault runs without it)."""

    def append(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        purpose: str | None = None,
        subject_id: str | None = None,
        result: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> int: ...

    def append_many(self, conn: Connection, entries: list[dict[str, Any]]) -> None: ...


# ----------------------------------------------------------------------------- helpers
def new_subject_id(prefix: str | None = None) -> str:
    """32 hex characters of randomness; it says nothing about the person or when.

    A bulk import passes a random 16-hex ``prefix`` shared by one batch (locality in the
    indexes): the only thing two ids then tell is that they were imported together."""
    if prefix is None:
        return secrets.token_hex(16)
    return prefix + secrets.token_hex(8)


def _utc(at: datetime | None) -> datetime:
    """Aware UTC. A naive datetime is taken as UTC (SQLite hands them back naive)."""
    if at is None:
        return datetime.now(UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def _utc_or_none(at: datetime | None) -> datetime | None:
    return None if at is None else _utc(at)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass(frozen=True, slots=True)
class _ActivityRule:
    name: str
    subjects: frozenset[str]
    mandatory: tuple[str, ...]
    allowed: tuple[str, ...]  # mandatory + voluntary
    source: str


@dataclass(slots=True)
class _Batch:
    """Rows ready for one set-based insert per table, in the order of the _*_COLS below."""

    first: int  # index of the batch's first record in the whole import
    subjects: list[tuple[Any, ...]] = field(default_factory=list)
    identities: list[tuple[Any, ...]] = field(default_factory=list)
    attributes: list[tuple[Any, ...]] = field(default_factory=list)
    keys: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    # (kind, blind index) -> record index, to name the record behind a duplicate
    seen: dict[tuple[str, bytes], int] = field(default_factory=dict)


_SUBJECT_COLS = (
    "id",
    "kind",
    "jurisdiction",
    "status",
    "age_status",
    "policy_version",
    "created_at",
    "last_activity_at",
)
_IDENTITY_COLS = ("kind", "blind_index", "subject_id", "value")
_ATTRIBUTE_COLS = (
    "subject_id",
    "category",
    "value",
    "source",
    "activity",
    "policy_version",
    "collected_at",
    "updated_at",
)
_KEY_COLS = ("subject_id", "kek_id", "wrapped", "created_at")


def _pg_type(column: Column[Any]) -> str:
    """The PostgreSQL type name binary COPY needs for a column (only the types used here)."""
    t = column.type
    if isinstance(t, LargeBinary):
        return "bytea"
    if isinstance(t, DateTime):
        return "timestamptz" if t.timezone else "timestamp"
    if isinstance(t, String):
        return "text"  # varchar(n) receives text's binary form; the length is still checked
    raise TypeError(f"no COPY type for {column}")  # pragma: no cover - a new column type


class _BulkInsert:
    """Set-based insert of ready tuples into one table: one statement per batch.

    PostgreSQL (psycopg): ``COPY ... FROM STDIN (FORMAT BINARY)``; its executemany sends
    one INSERT per row, three times slower for the server. Elsewhere: the driver's
    executemany with a plain positional INSERT. SQLAlchemy's own executemany would
    process every parameter of every row in Python, which costs more than SQLite takes to
    store the row; the bulk path hands the driver ready tuples instead."""

    def __init__(self, engine: Engine, table: Table, columns: Sequence[str]) -> None:
        dialect = engine.dialect
        q = dialect.identifier_preparer
        cols = ", ".join(q.quote(c) for c in columns)
        self.copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        if self.copy:
            self.sql = f"COPY {q.format_table(table)} ({cols}) FROM STDIN (FORMAT BINARY)"
            self.types = [_pg_type(table.c[c]) for c in columns]
        else:
            mark = "?" if dialect.paramstyle == "qmark" else "%s"
            self.sql = (
                f"INSERT INTO {q.format_table(table)} ({cols}) VALUES ({', '.join([mark] * len(columns))})"
            )

    def __call__(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if not self.copy:
            conn.exec_driver_sql(self.sql, rows)
            return
        raw: Any = conn.connection.driver_connection  # psycopg.Connection, in SQLAlchemy's transaction
        with raw.cursor() as cur, cur.copy(self.sql) as copy:
            copy.set_types(self.types)
            write = copy.write_row
            for row in rows:
                write(row)


def _ts_binder(engine: Engine) -> Callable[[datetime], Any]:
    """How the driver wants a timestamp, as SQLAlchemy's DateTime type would bind it."""
    dialect = engine.dialect
    proc = T.attributes.c.collected_at.type.dialect_impl(dialect).bind_processor(dialect)
    if proc is None:
        return lambda at: at
    return proc


# ------------------------------------------------------------------------------- vault
# read_many's statements, built once: identities (with each subject's status, also for one
# without any) and, for the subjects whose values are wanted, the stored values, in one
# statement. The union takes its column types from its first part, so the placeholders
# there carry the real types.
_i, _a, _sc = T.identities.c, T.attributes.c, T.subjects.c
_Q_READ_IDENTITIES: Any = (
    select(
        _sc.id.label("sid"),
        _sc.status.label("status"),
        literal("i").label("what"),
        _i.kind.label("name"),
        _i.value.label("value"),
        type_coerce(null(), _a.source.type).label("source"),
        type_coerce(null(), _a.collected_at.type).label("collected_at"),
        type_coerce(null(), _a.policy_version.type).label("policy_version"),
        type_coerce(null(), _a.activity.type).label("activity"),
    )
    .select_from(T.subjects.outerjoin(T.identities, _i.subject_id == _sc.id))
    .where(_sc.id.in_(bindparam("p_ids", expanding=True)))
)
_Q_READ_BOTH: Any = union_all(
    _Q_READ_IDENTITIES,
    select(
        _a.subject_id,
        null(),
        literal("a"),
        _a.category,
        _a.value,
        _a.source,
        _a.collected_at,
        _a.policy_version,
        _a.activity,
    ).where(_a.subject_id.in_(bindparam("p_values_of", expanding=True))),
)
_Q_SUBJECT_KEYS: Any = select(
    T.subject_keys.c.subject_id, T.subject_keys.c.kek_id, T.subject_keys.c.wrapped
).where(T.subject_keys.c.subject_id.in_(bindparam("p_ids", expanding=True)))


class _DriverReads:
    """The vault's point reads (find, a subject's values or identities, its key) sent to
    the driver as plain SQL on a pooled connection. Through SQLAlchemy's execute path each
    of these indexed SELECTs paid several times its own cost in Python (the transaction's
    BEGIN and ROLLBACK, events, the compiled-statement cache, result rows): a read by email
    took 1.3 ms of CPU on SQLite (docs/benchmarks.md, vault). The SQL is the same on every
    database but for the placeholder; a single statement reads one snapshot."""

    def __init__(self, data: Engine, keys: Engine) -> None:
        m = "?" if data.dialect.paramstyle == "qmark" else "%s"
        km = "?" if keys.dialect.paramstyle == "qmark" else "%s"
        self.m = m
        self.find = f"SELECT subject_id FROM identities WHERE kind = {m} AND blind_index = {m}"
        self.key = f"SELECT kek_id, wrapped FROM subject_keys WHERE subject_id = {km}"
        self.identities = (
            "SELECT s.status, i.kind, i.value FROM subjects s "
            f"LEFT JOIN identities i ON i.subject_id = s.id WHERE s.id = {m}"
        )
        self._values: dict[int, str] = {}
        dialect = data.dialect
        at = T.attributes.c.collected_at.type.dialect_impl(dialect).result_processor(dialect, None)
        self.datetime: Callable[[Any], Any] = at if at is not None else (lambda v: v)

    def values(self, categories: int | None) -> str:
        """Status and values of one subject: all (None) or of ``categories`` categories
        (their names first in the parameters, then the subject id)."""
        n = -1 if categories is None else categories
        sql = self._values.get(n)
        if sql is None:
            only = "" if n < 0 else f" AND a.category IN ({', '.join([self.m] * n)})"
            sql = self._values[n] = (
                "SELECT s.status, a.category, a.value, a.source, a.collected_at, a.policy_version, "
                f"a.activity FROM subjects s LEFT JOIN attributes a ON a.subject_id = s.id{only} "
                f"WHERE s.id = {self.m}"
            )
        return sql


@contextmanager
def _driver_cursor(engine: Engine) -> Iterator[Any]:
    """A DBAPI cursor on a pooled connection, outside any transaction: PostgreSQL in
    autocommit for the call (no BEGIN, no ROLLBACK round trip); the engine's SQLite
    connections already run statements without an explicit transaction."""
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        autocommit = engine.dialect.name == "postgresql"
        if autocommit:
            driver.autocommit = True
        cur = raw.cursor()
        try:
            yield cur
        finally:
            cur.close()
            if autocommit and not driver.closed:  # a broken connection is invalidated anyway
                driver.autocommit = False
    finally:
        raw.close()


@contextmanager
def _transaction_cursor(conn: Connection) -> Iterator[Any]:
    """A DBAPI cursor inside ``conn``'s transaction (an audited read)."""
    cur = conn.connection.cursor()
    try:
        yield cur
    finally:
        cur.close()


class Vault:
    """Personal data at rest: encrypted, findable by blind index, erasable by key destruction."""

    def __init__(
        self,
        data: Engine,
        keys: Engine,
        keyring: Keyring,
        cp: CompiledPolicy,
        audit: AuditLog | None = None,
        *,
        default_region: str | None = None,
    ) -> None:
        self.data = data
        self.keys = keys
        self.keyring = keyring
        self.cp = cp
        self.audit = audit
        self.default_region = default_region
        self._wrapper = KeyWrapper(keyring)
        self._kinds = frozenset(cp.policy.subjects)
        self._jurisdictions = frozenset(cp.jurisdictions)
        self._categories = cp.categories
        self._identity_kinds = BUILTIN_KINDS | cp.identity_kinds
        self._activities = {
            name: _ActivityRule(
                name=name,
                subjects=frozenset(a.subjects),
                mandatory=tuple(a.mandatory),
                allowed=(*a.mandatory, *a.voluntary),
                source=a.source,
            )
            for name, a in cp.policy.activities.items()
        }
        # Validation of a record's shape (kind, activity, set of categories) is the same
        # for most records of a bulk import: checked once per distinct shape.
        self._checked: set[tuple[str, str | None, frozenset[str]]] = set()
        self._expansions: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._bind_data_ts = _ts_binder(data)
        self._bind_key_ts = _ts_binder(keys)
        self._insert_subjects = _BulkInsert(data, T.subjects, _SUBJECT_COLS)
        self._insert_identities = _BulkInsert(data, T.identities, _IDENTITY_COLS)
        self._insert_attributes = _BulkInsert(data, T.attributes, _ATTRIBUTE_COLS)
        self._insert_keys = _BulkInsert(keys, T.subject_keys, _KEY_COLS)
        self._integrity_errors: tuple[type[Exception], ...] = (
            IntegrityError,
            data.dialect.loaded_dbapi.IntegrityError,  # raised as is by COPY (driver level)
        )
        # Statements built once: building a select() costs more than SQLite takes to run it.
        i = T.identities.c
        self._sql = _DriverReads(data, keys)
        self._q_find_many = select(i.blind_index, i.subject_id).where(
            i.kind == bindparam("kind"), i.blind_index.in_(bindparam("bis", expanding=True))
        )

    # ------------------------------------------------------------------ validation
    def _check_category(self, category: str) -> None:
        if category not in self._categories:
            hint = suggest(category, self._categories)
            also = f"; did you mean {hint[0]!r}?" if hint else ""
            raise VaultInputError(f"attribute {category!r}: not a category of the policy{also}")

    def _check_shape(self, kind: str, activity: str | None, categories: frozenset[str]) -> None:
        """Kind, activity and categories (PLV-1). Cached: raises the same way every time."""
        key = (kind, activity, categories)
        if key in self._checked:
            return
        if kind not in self._kinds:
            raise VaultInputError(
                f"subject kind {kind!r} is not in the policy (known: {', '.join(sorted(self._kinds))})"
            )
        for c in sorted(categories):
            self._check_category(c)
        if activity is not None:
            self._check_activity(self._rule(activity), kind, categories)
        if len(self._checked) > 10_000:  # bounded: shapes come from callers
            self._checked.clear()
        self._checked.add(key)

    def _check_activity(
        self, rule: _ActivityRule, kind: str, categories: Iterable[str], stored: Iterable[str] = ()
    ) -> None:
        """PLV-1: the activity collects from this kind of subject, collects each of these
        categories, and has all its mandatory ones (given now, or ``stored`` already)."""
        given = tuple(categories)
        if rule.subjects and kind not in rule.subjects:
            raise VaultInputError(
                f"activity {rule.name!r} does not collect data of {kind!r} subjects "
                f"(only {', '.join(sorted(rule.subjects))})"
            )
        outside = sorted(c for c in given if not any(is_within(c, a) for a in rule.allowed))
        if outside:
            raise VaultInputError(
                f"activity {rule.name!r} does not collect {', '.join(outside)} "
                f"(it collects {', '.join(rule.allowed) or 'nothing'}); nothing was stored"
            )
        held = (*given, *stored)
        missing = [m for m in rule.mandatory if not any(is_within(c, m) for c in held)]
        if missing:
            raise MissingMandatory(rule.name, missing)

    def _rule(self, activity: str) -> _ActivityRule:
        rule = self._activities.get(activity)
        if rule is None:
            hint = suggest(activity, self._activities)
            also = f"; did you mean {hint[0]!r}?" if hint else ""
            raise VaultInputError(f"activity {activity!r} is not in the policy{also}")
        return rule

    def _source(self, source: str | None, activity: str | None) -> str:
        if source is None:
            return self._activities[activity].source if activity is not None else "subject"
        if source not in SOURCES:
            raise VaultInputError(f"source {source!r}: must be one of {', '.join(sorted(SOURCES))}")
        return source

    def _check_subject_fields(self, jurisdiction: str, age_status: str, policy_version: str) -> None:
        if jurisdiction not in self._jurisdictions:
            raise VaultInputError(
                f"jurisdiction {jurisdiction!r} is not in the policy "
                f"(known: {', '.join(sorted(self._jurisdictions))})"
            )
        if age_status not in AGE_STATUSES:
            raise VaultInputError(
                f"age_status {age_status!r}: must be one of {', '.join(sorted(AGE_STATUSES))}"
            )
        self._check_policy_version(policy_version)

    @staticmethod
    def _check_policy_version(policy_version: str) -> None:
        if not isinstance(policy_version, str) or not policy_version or len(policy_version) > 64:
            raise VaultInputError(f"policy_version {policy_version!r}: must be a non-empty string of <= 64")

    def _normalized(self, kind: str, value: object) -> tuple[str, bytes]:
        if kind not in self._identity_kinds:
            raise VaultInputError(
                f"identity kind {kind!r} is unknown (known: {', '.join(sorted(self._identity_kinds))})"
            )
        norm = normalize(kind, value, default_region=self.default_region)
        return norm, blind_index(self.keyring.index_key, kind, norm)

    def _expand(self, categories: Iterable[str]) -> tuple[str, ...]:
        """Requested categories and every known category below them (``user.contact`` ->
        ``user.contact.email``, ...); an unknown one is an error, not an empty answer."""
        key = tuple(categories)
        found = self._expansions.get(key)
        if found is None:
            out: set[str] = set()
            for c in key:
                below = self.cp.categories_within([c])
                if not below:
                    self._check_category(c)
                out |= below
            found = self._expansions[key] = tuple(sorted(out))
        return found

    # ---------------------------------------------------------------- preparation
    def _prepare(
        self, records: Sequence[NewSubject], first: int | None, actor: str, audited: bool | None = None
    ) -> _Batch:
        """Validate, normalize and encrypt a batch of records (pure CPU, no database).
        ``first``: the number of the first record in an import (None: a single create);
        ``audited``: build the audit entries (default: when the vault has an audit log)."""
        batch = _Batch(first=first or 0)
        wrap = self._wrapper.wrap
        kek_id = self._wrapper.active
        index_key = self.keyring.index_key
        identity_kinds = self._identity_kinds
        bind_data, bind_key = self._bind_data_ts, self._bind_key_ts
        region = self.default_region
        # Ids of one batch share a random prefix, so that the batch's rows land side by
        # side in every index keyed by subject id (a few pages per batch instead of one
        # page per subject). Fully random ids made bulk imports 1.5x slower at 50,000
        # subjects and worse as the indexes outgrow the cache. See new_subject_id().
        prefix = secrets.token_hex(8) if len(records) > 1 else None
        last_now: datetime | None = None
        ts = kts = None
        if audited is None:
            audited = self.audit is not None
        for n, rec in enumerate(records, start=first or 0):
            try:
                attrs = rec.attributes or {}
                self._check_shape(rec.kind, rec.activity, frozenset(attrs))
                self._check_subject_fields(rec.jurisdiction, rec.age_status, rec.policy_version)
                source = self._source(rec.source, rec.activity)
                if rec.now is not last_now or ts is None:
                    at = _utc(rec.now)
                    ts, kts, last_now = bind_data(at), bind_key(at), rec.now
                sid = new_subject_id(prefix)
                found: list[tuple[str, bytes, str]] = []  # kind, blind index, normalized
                for kind, given in rec.identities.items():
                    if kind not in identity_kinds:
                        raise VaultInputError(
                            f"identity kind {kind!r} is unknown (known: {', '.join(sorted(identity_kinds))})"
                        )
                    norm = normalize(kind, given, default_region=region)
                    bi = blind_index(index_key, kind, norm)
                    other = batch.seen.setdefault((kind, bi), n)
                    if other != n:
                        raise DuplicateIdentity(kind, other)
                    found.append((kind, bi, norm))
                dek = new_data_key()
                sealed_idents, sealed_attrs = SubjectCipher(sid, dek).seal_all(
                    [(kind, norm) for kind, _, norm in found], attrs
                )
                batch.identities.extend(
                    [(kind, bi, sid, blob) for (kind, bi, _), blob in zip(found, sealed_idents, strict=True)]
                )
                activity, version = rec.activity, rec.policy_version
                batch.attributes.extend(
                    [
                        (sid, category, blob, source, activity, version, ts, ts)
                        for category, blob in zip(attrs, sealed_attrs, strict=True)
                    ]
                )
                batch.subjects.append(
                    (sid, rec.kind, rec.jurisdiction, ACTIVE, rec.age_status, version, ts, ts)
                )
                batch.keys.append((sid, kek_id, wrap(sid, dek), kts))
                if audited:
                    batch.audit.append(
                        {
                            "actor": actor,
                            "action": "vault.create",
                            "subject_id": sid,
                            "detail": {
                                "kind": rec.kind,
                                "activity": rec.activity,
                                "identities": sorted(rec.identities),
                                "categories": sorted(attrs),
                            },
                        }
                    )
            except (VaultInputError, IdentityError, ValueEncodingError) as exc:
                if first is not None:
                    exc.add_note(f"in record #{n}")
                raise
        return batch

    # ---------------------------------------------------------------------- store
    def _store(self, batch: _Batch) -> None:
        """One transaction per store; keys committed before data (see the module doc)."""
        keys_committed = False
        try:
            with self.data.begin() as dconn:
                self._insert_subjects(dconn, batch.subjects)
                self._insert_identities(dconn, batch.identities)
                self._insert_attributes(dconn, batch.attributes)
                if self.audit is not None and batch.audit:
                    self.audit.append_many(dconn, batch.audit)
                with self.keys.begin() as kconn:
                    self._insert_keys(kconn, batch.keys)
                keys_committed = True
        except self._integrity_errors as exc:
            if keys_committed:  # the data commit failed: take back the keys of this batch
                self._drop_keys([k[0] for k in batch.keys])
            dup = self._taken(batch)
            if dup is not None:
                raise dup from None
            raise VaultInputError(f"the store refused the batch: {exc}") from exc
        except BaseException:
            if keys_committed:
                self._drop_keys([k[0] for k in batch.keys])
            raise

    def _taken(self, batch: _Batch) -> DuplicateIdentity | None:
        """Which identity of a refused batch is already in the store (only on that path)."""
        wanted = list(batch.seen)
        i = T.identities.c
        with self._reading(self.data) as conn:
            for part in _chunks(wanted, _IN_CHUNK):
                rows = conn.execute(
                    select(i.kind, i.blind_index).where(i.blind_index.in_([bi for _, bi in part]))
                ).all()
                for kind, bi in rows:
                    n = batch.seen.get((kind, bytes(bi)))
                    if n is not None:
                        err = DuplicateIdentity(kind)
                        if len(batch.subjects) > 1:
                            err.add_note(f"in record #{n}")
                        return err
        return None

    def _drop_keys(self, subject_ids: Sequence[str]) -> None:
        k = T.subject_keys.c
        with self.keys.begin() as kconn:
            for part in _chunks(subject_ids, _IN_CHUNK):
                kconn.execute(delete(T.subject_keys).where(k.subject_id.in_(part)))

    # -------------------------------------------------------------------- create
    def create_subject(
        self,
        kind: str,
        jurisdiction: str,
        *,
        identities: Mapping[str, str],
        attributes: Mapping[str, object] | None = None,
        activity: str | None = None,
        source: str | None = None,
        policy_version: str,
        age_status: str = "unknown",
        now: datetime | None = None,
        actor: str = "system",
    ) -> str:
        """A new subject; returns its id. Refuses (and stores nothing) on an unknown kind,
        jurisdiction or category, an identity already taken (DuplicateIdentity), or an
        activity's mandatory category missing (MissingMandatory, PLV-1)."""
        rec = NewSubject(
            kind, jurisdiction, identities, policy_version, attributes, activity, source, age_status, now
        )
        batch = self._prepare([rec], None, actor)
        self._store(batch)
        return str(batch.subjects[0][0])

    def import_subjects(
        self,
        records: Iterable[NewSubject],
        batch_size: int = 2000,
        *,
        actor: str = "system",
        workers: int = 0,
    ) -> int:
        """Create many subjects: one set-based insert per table per batch, one transaction
        per batch. Returns how many were created. A refused record raises ImportFailed
        naming it; its batch is not stored, earlier batches are.

        ``workers``: processes that validate, normalize and encrypt batches while this one
        stores them, in order (0: this process does both). Encryption costs about as much
        CPU as storing the rows, so one worker on a second core nearly doubles an import;
        a worker starts in about a second and holds the keyring while it runs (workers.py).
        Worth it from tens of thousands of subjects."""
        if batch_size < 1:
            raise VaultInputError(f"batch_size must be >= 1, got {batch_size}")
        if workers < 0:
            raise VaultInputError(f"workers must be >= 0, got {workers}")
        done = 0
        start = 0
        try:
            with closing(self._prepared(records, batch_size, actor, workers)) as batches:
                for batch in batches:
                    start = batch.first
                    self._store(batch)
                    done += len(batch.subjects)
        except (VaultInputError, IdentityError, ValueEncodingError) as exc:
            raise ImportFailed(_record_of(exc, start), done, exc) from exc
        return done

    def _prepared(
        self, records: Iterable[NewSubject], batch_size: int, actor: str, workers: int = 0
    ) -> Generator[_Batch]:
        """Prepared batches, in order. With ``workers``, by that many processes. Else, on
        PostgreSQL the next batch is prepared in a second thread while the server stores
        the previous one (psycopg releases the GIL while it waits). On SQLite the writes run
        in this process: a second thread would only fight the first for the GIL (measured:
        slower), so batches are prepared in turn."""
        it = iter(records)
        chunks = (
            (n * batch_size, chunk)
            for n, chunk in enumerate(iter(lambda: list(itertools.islice(it, batch_size)), []))
        )
        if workers:
            yield from self._prepared_by_workers(chunks, actor, workers)
            return
        if self.data.dialect.name == "sqlite":
            for first, chunk in chunks:
                yield self._prepare(chunk, first, actor)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vault-import") as pool:
            pending: Future[_Batch] | None = None
            for first, chunk in chunks:
                nxt = pool.submit(self._prepare, chunk, first, actor)
                if pending is not None:
                    try:
                        yield pending.result()
                    except BaseException:
                        nxt.cancel()
                        raise
                pending = nxt
            if pending is not None:
                yield pending.result()

    def _prepared_by_workers(
        self, chunks: Iterable[tuple[int, list[NewSubject]]], actor: str, count: int
    ) -> Generator[_Batch]:
        """Batches prepared by worker processes (workers.py), yielded in order. A batch a
        worker could not prepare (a refused record, a worker gone) is prepared again here:
        that raises the same error, with the same record number, as an import without
        workers, or carries on if the worker was the trouble."""
        setup = WorkerSetup(
            policy=self.cp.policy,
            keyring=self.keyring,
            default_region=self.default_region,
            data_driver=self.data.url.drivername,
            keys_driver=self.keys.url.drivername,
            audited=self.audit is not None,
        )
        pending: deque[tuple[int, list[NewSubject], PrepareWorker]] = deque()

        def collect() -> _Batch:
            first, chunk, worker = pending.popleft()
            try:
                return worker.result()
            except WorkerFailed as exc:
                batch = self._prepare(chunk, first, actor)
                log.warning("vault import: a worker failed on records #%d.. (%s); prepared here", first, exc)
                return batch

        workers = PrepareWorkers(setup, count)
        try:
            for first, chunk in chunks:
                worker = workers.idle()
                ready = None
                if worker is None:  # all busy: the oldest batch's result frees its worker
                    ready = collect()
                    worker = workers.idle()
                    assert worker is not None
                worker.submit(chunk, first, actor)
                pending.append((first, chunk, worker))
                if ready is not None:  # stored while the worker prepares the next one
                    yield ready
            while pending:
                yield collect()
        finally:
            workers.close()

    # ---------------------------------------------------------------------- find
    @contextmanager
    def _reading(self, engine: Engine) -> Iterator[Connection]:
        """A connection for reads. PostgreSQL: autocommit, which saves the BEGIN and
        ROLLBACK round trips (one statement sees one snapshot anyway). SQLite: as the
        engine sets it up; its BEGIN and ROLLBACK are function calls, not round trips."""
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def find(self, kind: str, value: str) -> str | None:
        """The id of the subject with this identity (any spelling that normalizes the same)."""
        _, bi = self._normalized(kind, value)
        with _driver_cursor(self.data) as cur:
            cur.execute(self._sql.find, (kind, bi))
            found = cur.fetchone()
        return None if found is None else str(found[0])

    def find_many(self, kind: str, values: Iterable[str]) -> dict[str, str]:
        """{value as given: subject id} for the values that belong to a subject; one SELECT
        per 5,000 distinct values."""
        by_index: dict[bytes, list[str]] = {}
        for v in values:
            by_index.setdefault(self._normalized(kind, v)[1], []).append(v)
        out: dict[str, str] = {}
        with self._reading(self.data) as conn:
            for part in _chunks(list(by_index), _IN_CHUNK):
                for bi, sid in conn.execute(self._q_find_many, {"kind": kind, "bis": part}):
                    for v in by_index[bytes(bi)]:
                        out[v] = str(sid)
        return out

    # ---------------------------------------------------------------------- read
    def _cipher(self, subject_id: str) -> SubjectCipher:
        with _driver_cursor(self.keys) as cur:
            cur.execute(self._sql.key, (subject_id,))
            row = cur.fetchone()
        if row is None:
            raise DataKeyDestroyed(subject_id)
        kek_id, wrapped = row
        return SubjectCipher(subject_id, self._wrapper.unwrap(subject_id, kek_id, bytes(wrapped)))

    def _read_rows(self, cur: Any, subject_id: str, wanted: tuple[str, ...] | None) -> dict[str, StoredValue]:
        """Status and attributes in one statement (an outer join: a subject without values
        still gives its status), then the key, then decryption. ``cur``: a DBAPI cursor."""
        if wanted is None:
            cur.execute(self._sql.values(None), (subject_id,))
        else:
            cur.execute(self._sql.values(len(wanted)), (*wanted, subject_id))
        rows = cur.fetchall()
        if not rows:
            raise UnknownSubject(subject_id)
        if rows[0][0] == ERASED:
            raise SubjectErased(subject_id)
        out: dict[str, StoredValue] = {}
        if rows[0][1] is not None:
            cipher = self._cipher(subject_id)
            to_datetime = self._sql.datetime
            for _status, category, value, source, collected_at, version, activity in rows:
                out[category] = StoredValue(
                    value=cipher.open_attribute(category, bytes(value)),
                    source=source,
                    collected_at=_utc(to_datetime(collected_at)),
                    policy_version=version,
                    activity=activity,
                )
        return out

    def read(
        self,
        subject_id: str,
        categories: Iterable[str] | None = None,
        *,
        purpose: str | None = None,
        actor: str = "system",
    ) -> dict[str, StoredValue]:
        """The subject's stored values, decrypted: all, or those at or below ``categories``.

        Whether a purpose *may* read them is the decision engine's question (decide.py);
        ``purpose`` here is recorded in the audit entry."""
        if isinstance(categories, str):
            categories = [categories]
        wanted = None if categories is None else self._expand(categories)
        if self.audit is None:
            with _driver_cursor(self.data) as cur:
                return self._read_rows(cur, subject_id, wanted)
        with self.data.begin() as conn, _transaction_cursor(conn) as cur:
            out = self._read_rows(cur, subject_id, wanted)
            self.audit.append(
                conn,
                actor=actor,
                action="vault.read",
                purpose=purpose,
                subject_id=subject_id,
                detail={"categories": sorted(out)},
            )
        return out

    def _identity_rows(self, cur: Any, subject_id: str) -> dict[str, str]:
        cur.execute(self._sql.identities, (subject_id,))
        rows = cur.fetchall()
        if not rows:
            raise UnknownSubject(subject_id)
        if rows[0][0] == ERASED:
            raise SubjectErased(subject_id)
        if rows[0][1] is None:
            return {}
        cipher = self._cipher(subject_id)
        return {kind: cipher.open_identity(kind, bytes(value)) for _status, kind, value in rows}

    def identities(
        self, subject_id: str, *, purpose: str | None = None, actor: str = "system"
    ) -> dict[str, str]:
        """{kind: normalized value}, decrypted."""
        if self.audit is None:
            with _driver_cursor(self.data) as cur:
                return self._identity_rows(cur, subject_id)
        with self.data.begin() as conn, _transaction_cursor(conn) as cur:
            out = self._identity_rows(cur, subject_id)
            self.audit.append(
                conn,
                actor=actor,
                action="vault.read_identities",
                purpose=purpose,
                subject_id=subject_id,
                detail={"identities": sorted(out)},
            )
        return out

    def read_many(
        self,
        subject_ids: Iterable[str],
        *,
        attributes_of: Iterable[str] = (),
        purpose: str | None = None,
        actor: str = "system",
        record: list[dict[str, Any]] | None = None,
        conn: Connection | None = None,
    ) -> dict[str, SubjectRead]:
        """``identities`` of many subjects, and ``read`` (every stored value) of those in
        ``attributes_of``, decrypted, for a batch (the request runner): one SELECT per
        5,000 subjects (identities and values together) and one key read. Unknown and
        erased subjects are left out of the answer.

        Audited as the single calls are, one entry per subject and kind of read. The
        entries are appended in a transaction of their own, or, with ``record``, added to
        that list for the caller to append with its own entries in the transaction that
        acts on what was read (one extension of the audit chain for all of it). ``conn``:
        read through the caller's connection to the data store (on SQLite, a transaction
        that writes holds the database: a second connection would wait for it)."""
        ids = list(dict.fromkeys(subject_ids))
        wanted = set(attributes_of)
        status: dict[str, str] = {}
        rows: list[Any] = []
        with nullcontext(conn) if conn is not None else self._reading(self.data) as dconn:
            for part in _chunks(ids, _IN_CHUNK):
                values_of = [sid for sid in part if sid in wanted]
                q = _Q_READ_BOTH if values_of else _Q_READ_IDENTITIES
                for r in dconn.execute(q, {"p_ids": list(part), "p_values_of": values_of}):
                    if r.status is not None:
                        status[r.sid] = r.status
                    if r.name is not None:
                        rows.append(r)
        readable = {sid for sid, st in status.items() if st != ERASED}
        keyed = sorted({r.sid for r in rows if r.sid in readable})
        ciphers: dict[str, SubjectCipher] = {}
        with self._reading(self.keys) as kconn:
            for part in _chunks(keyed, _IN_CHUNK):
                for sid, kek_id, wrapped in kconn.execute(_Q_SUBJECT_KEYS, {"p_ids": list(part)}):
                    ciphers[sid] = SubjectCipher(sid, self._wrapper.unwrap(sid, kek_id, bytes(wrapped)))
        out = {sid: SubjectRead(status[sid], {}, {}) for sid in ids if sid in readable}
        for r in rows:
            got = out.get(r.sid)
            if got is None:
                continue
            cipher = ciphers.get(r.sid)
            if cipher is None:
                raise DataKeyDestroyed(r.sid)
            if r.what == "i":
                got.identities[r.name] = cipher.open_identity(r.name, bytes(r.value))
            else:
                got.attributes[r.name] = StoredValue(
                    value=cipher.open_attribute(r.name, bytes(r.value)),
                    source=r.source,
                    collected_at=_utc(r.collected_at),
                    policy_version=r.policy_version,
                    activity=r.activity,
                )
        entries: list[dict[str, Any]] = []
        for sid, got in out.items():
            entries.append(
                {
                    "actor": actor,
                    "action": "vault.read_identities",
                    "purpose": purpose,
                    "subject_id": sid,
                    "detail": {"identities": sorted(got.identities)},
                }
            )
            if sid in wanted:
                entries.append(
                    {
                        "actor": actor,
                        "action": "vault.read",
                        "purpose": purpose,
                        "subject_id": sid,
                        "detail": {"categories": sorted(got.attributes)},
                    }
                )
        if record is not None:
            record.extend(entries)
        elif self.audit is not None and entries:
            if conn is not None:
                self.audit.append_many(conn, entries)
            else:
                with self.data.begin() as own:
                    self.audit.append_many(own, entries)
        return out

    def subject(self, subject_id: str) -> SubjectRow:
        """The subject's row (no personal data in it); also for erased subjects."""
        s = T.subjects.c
        with self._reading(self.data) as conn:
            r = conn.execute(select(T.subjects).where(s.id == subject_id)).first()
        if r is None:
            raise UnknownSubject(subject_id)
        return SubjectRow(
            id=r.id,
            kind=r.kind,
            jurisdiction=r.jurisdiction,
            status=r.status,
            age_status=r.age_status,
            policy_version=r.policy_version,
            created_at=_utc(r.created_at),
            last_activity_at=_utc_or_none(r.last_activity_at),
            closed_at=_utc_or_none(r.closed_at),
            erased_at=_utc_or_none(r.erased_at),
        )

    # --------------------------------------------------------------------- write
    def write(
        self,
        subject_id: str,
        attributes: Mapping[str, object],
        *,
        activity: str | None = None,
        source: str | None = None,
        policy_version: str,
        now: datetime | None = None,
        actor: str = "system",
    ) -> None:
        """Store (insert or replace) attributes of an existing subject.

        With an ``activity``, every category must be one it collects, and its mandatory
        categories must be held afterwards: given now or already stored (PLV-1)."""
        if not attributes:
            raise VaultInputError("write: no attributes given")
        cats = frozenset(attributes)
        for c in sorted(cats):
            self._check_category(c)
        self._check_policy_version(policy_version)
        rule = self._rule(activity) if activity is not None else None
        src = self._source(source, activity)
        at = _utc(now)
        a, s = T.attributes.c, T.subjects.c
        with self.data.begin() as conn:
            row = conn.execute(select(s.kind, s.status).where(s.id == subject_id).with_for_update()).first()
            if row is None:
                raise UnknownSubject(subject_id)
            if row.status == ERASED:
                raise SubjectErased(subject_id)
            if rule is not None:
                stored = conn.execute(select(a.category).where(a.subject_id == subject_id)).scalars().all()
                self._check_activity(rule, row.kind, cats, stored)
            cipher = self._cipher(subject_id)
            rows = [
                {
                    "subject_id": subject_id,
                    "category": c,
                    "value": cipher.seal_attribute(c, v),
                    "source": src,
                    "activity": activity,
                    "policy_version": policy_version,
                    "collected_at": at,
                    "updated_at": at,
                }
                for c, v in attributes.items()
            ]
            # Replace = delete + insert in one transaction, the same on every dialect; the
            # subject row lock above keeps concurrent writers of this subject in line.
            conn.execute(delete(T.attributes).where(a.subject_id == subject_id, a.category.in_(cats)))
            conn.execute(T.attributes.insert(), rows)
            conn.execute(update(T.subjects).where(s.id == subject_id).values(last_activity_at=at))
            if self.audit is not None:
                self.audit.append(
                    conn,
                    actor=actor,
                    action="vault.write",
                    subject_id=subject_id,
                    detail={"categories": sorted(cats), "activity": activity, "source": src},
                )

    # --------------------------------------------------------------------- close
    def close(self, subject_id: str, now: datetime | None = None, *, actor: str = "system") -> bool:
        """Close the subject's account (a close_account request): status ``closed`` and
        ``closed_at``; the data stays until retention or an erasure removes it. Returns
        False when it was closed (or erased) already: closing again changes nothing."""
        at = _utc(now)
        s = T.subjects.c
        with self.data.begin() as conn:
            row = conn.execute(select(s.status).where(s.id == subject_id).with_for_update()).first()
            if row is None:
                raise UnknownSubject(subject_id)
            if row.status != ACTIVE:
                return False
            conn.execute(
                update(T.subjects)
                .where(s.id == subject_id, s.status == ACTIVE)
                .values(status="closed", closed_at=at)
            )
            if self.audit is not None:
                self.audit.append(conn, actor=actor, action="vault.close", subject_id=subject_id)
        return True

    # --------------------------------------------------------------------- erase
    def erase(self, subject_id: str, now: datetime | None = None, *, actor: str = "system") -> None:
        """Crypto-shred the subject: destroy its data key, delete its rows, mark it erased.

        Constant work whatever the subject holds: one key delete and two set-based
        deletes. Idempotent: erasing again finishes an erasure that stopped half-way.
        UnknownSubject for an id the vault never had."""
        self.erase_many([subject_id], now, actor=actor)

    def erase_many(
        self,
        subject_ids: Iterable[str],
        now: datetime | None = None,
        *,
        actor: str = "system",
        conn: Connection | None = None,
    ) -> int:
        """``erase`` for many subjects at once (retention, batched requests): one key delete,
        one key-store flush and one delete per table per 5,000 subjects. Returns how many
        were not erased before. An unknown id raises UnknownSubject and changes nothing.

        ``conn``: the data store's part (and its audit entries) in the caller's transaction,
        e.g. with the closing of the erasure requests it serves; the keys are still
        destroyed first, in the key store's own transaction."""
        ids = list(dict.fromkeys(subject_ids))
        if not ids:
            return 0
        with self.data.begin() if conn is None else nullcontext(conn) as c:
            return self._erase_many(c, ids, _utc(now), actor)

    def _erase_many(self, conn: Connection, ids: list[str], at: datetime, actor: str) -> int:
        a, i, s, k = T.attributes.c, T.identities.c, T.subjects.c, T.subject_keys.c
        status: dict[str, str] = {}
        for part in _chunks(ids, _IN_CHUNK):
            q = select(s.id, s.status).where(s.id.in_(part)).with_for_update()
            status.update((str(sid), str(st)) for sid, st in conn.execute(q))
        for sid in ids:
            if sid not in status:
                raise UnknownSubject(sid)
        # The keys first: once they are gone every copy of the data is unreadable, even
        # if what follows fails (erasing again then finishes the job).
        with self.keys.begin() as kconn:
            for part in _chunks(ids, _IN_CHUNK):
                kconn.execute(delete(T.subject_keys).where(k.subject_id.in_(part)))
        flush_key_store(self.keys)
        held: dict[str, int] = {}
        for part in _chunks(ids, _IN_CHUNK):
            if self.audit is not None:  # how many values each had: for the audit entry
                q = (
                    select(a.subject_id, func.count())
                    .where(a.subject_id.in_(part))
                    .group_by(a.subject_id)
                )
                held.update((str(sid), int(n)) for sid, n in conn.execute(q))
            conn.execute(delete(T.attributes).where(a.subject_id.in_(part)))
            conn.execute(delete(T.identities).where(i.subject_id.in_(part)))
            conn.execute(
                update(T.subjects)
                .where(s.id.in_(part), s.status != ERASED)
                .values(status=ERASED, erased_at=at)
            )
        if self.audit is not None:
            self.audit.append_many(
                conn,
                [
                    {
                        "actor": actor,
                        "action": "vault.erase",
                        "subject_id": sid,
                        "result": "already_erased" if status[sid] == ERASED else "ok",
                        "detail": {"attributes_deleted": held.get(sid, 0)},
                    }
                    for sid in ids
                ],
            )
        return sum(1 for sid in ids if status[sid] != ERASED)

    def rotate_keys(self, new_keyring: Keyring, *, batch_size: int = 5000, actor: str = "system") -> int:
        """Re-wrap every data key (subjects', requests' and jobs') under ``new_keyring``'s
        active KEK; returns how many. Only the key store changes (vault/rotate.py). From
        then on this vault uses ``new_keyring``.

        Order for an operator: save the new keyring (old and new KEKs), rotate, check
        ``kek_usage()``, then save the keyring without the old KEKs."""
        done, _ = rotate_keys(self.keys, self.keyring, new_keyring, batch_size=batch_size)
        self.keyring = new_keyring
        self._wrapper = KeyWrapper(new_keyring)
        if self.audit is not None:
            with self.data.begin() as conn:
                self.audit.append(
                    conn,
                    actor=actor,
                    action="keys.rotate",
                    detail={"kek": new_keyring.active_kek, "rewrapped": done},
                )
        return done

    def reconcile_keys(self, *, batch_size: int = 5000, actor: str = "system") -> Reconciliation:
        """Run after restoring the key store from a backup: the data keys of subjects the
        data store says are erased are destroyed again (vault/reconcile.py)."""
        done = reconcile_keys(self.data, self.keys, batch_size=batch_size)
        if self.audit is not None:
            with self.data.begin() as conn:
                self.audit.append(
                    conn,
                    actor=actor,
                    action="keys.reconcile",
                    detail=done.detail(),
                )
        return done

    def kek_usage(self) -> dict[str, int]:
        """{kek id: number of data keys wrapped under it}: which KEKs may be dropped."""
        return kek_usage(self.keys)


def _record_of(exc: BaseException, default: int) -> int:
    """The record number a preparation error noted on itself ("in record #n")."""
    for note in getattr(exc, "__notes__", ()):
        if note.startswith("in record #"):
            return int(note.removeprefix("in record #"))
    return default


__all__ = [
    "AuditLog",
    "DataKeyDestroyed",
    "DuplicateIdentity",
    "ImportFailed",
    "MissingMandatory",
    "NewSubject",
    "StoredValue",
    "SubjectErased",
    "SubjectRow",
    "UnknownSubject",
    "Vault",
    "VaultError",
    "VaultInputError",
    "new_subject_id",
]
