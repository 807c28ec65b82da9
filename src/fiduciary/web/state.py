"""The server's state: one per process, shared by every request (``app.state.web``).

Two things here exist for throughput on SQLite, where the store's engine opens every
transaction, reads too, with ``BEGIN IMMEDIATE`` (the write lock):

- subject states for decisions are read through a second, read-only engine whose
  statements take no lock (WAL readers never wait), and cached ``state_ttl`` seconds as
  ``Fiduciary.state`` caches them; this process drops a subject's state when it changes it;
- the group-commit writers of all worker processes take turns through an exclusive lock
  on a file beside the database (``flock``): a waiting writer is woken the moment the
  lock is free, where SQLite's busy handler would poll with sleeps of 1 to 100 ms;
- WAL checkpoints run in a thread of their own (``store.BackgroundCheckpoints``), not
  inside whichever commit crossed the WAL's size limit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import Engine, create_engine, event

from fiduciary.config import Settings
from fiduciary.consent.ledger import ConsentLedger, NewEvent
from fiduciary.consent.ledger import UnknownSubject as UnknownConsentSubject
from fiduciary.core import Fiduciary, decision_entry
from fiduciary.decide import Audience, Decision, SubjectState
from fiduciary.mail import Mailer
from fiduciary.policy.model import GpcEffect
from fiduciary.requests.lifecycle import RequestDesk
from fiduciary.store import BackgroundCheckpoints, sqlite_file
from fiduciary.web.auth import ApiKeyCache
from fiduciary.web.batching import Batcher

if TYPE_CHECKING:
    from fiduciary.requests.runner import RequestRunner
    from fiduciary.retention import Retention
    from fiduciary.retention.schedule import RetentionScheduler

MAX_CACHED = 100_000  # subject states kept before expired ones are swept


@dataclass(frozen=True, slots=True, eq=False)  # each ask is its own, equal or not
class DecisionAsked:
    """A decision for the group-commit writer to make (``WebState.decide``)."""

    actor: str
    subject_id: str
    purpose: str
    categories: Sequence[str] | None
    recipient: str | None
    audience: Audience | None
    gpc: bool


@dataclass(frozen=True, slots=True)
class Decided:
    decision: Decision
    gpc: bool  # GPC counted on this request (LAW-12)


# What the writer answers for a DecisionAsked it could not decide by itself.
UNKNOWN: Final = "unknown"  # no such subject
RECORD_GPC_FIRST: Final = "record-gpc"  # GPC is an opt-out the ledger does not hold yet

WriterItem = NewEvent | Mapping[str, Any] | DecisionAsked
WriterResult = int | None | Decided | str


class WebState:
    """The Fiduciary the server runs, its request desk, API key cache and group-commit
    writers (consent events, decisions' audit entries)."""

    def __init__(
        self,
        fid: Fiduciary,
        settings: Settings,
        mailer: Mailer | None,
        *,
        status_url: str | None = None,
        key_cache_ttl: float = 1.0,
        state_ttl: float = 1.0,
        runner: RequestRunner | None = None,
        owns_fiduciary: bool = False,
    ) -> None:
        self.fid = fid
        self.settings = settings
        self.mailer = mailer
        self.desk = RequestDesk.from_fiduciary(fid, mailer, status_url=status_url)
        self.state_ttl = state_ttl
        self._states: dict[str, tuple[float, SubjectState]] = {}
        # When each subject was last changed here: a state read that began before the
        # change is answered but not cached.
        self._changed: dict[str, float] = {}
        self._reader_engine = _read_only_engine(fid.data)
        self._reader = (
            ConsentLedger(self._reader_engine, fid.policy) if self._reader_engine is not None else fid.consent
        )
        self._lock_path = _write_lock_path(fid.data)
        self._checkpoints = BackgroundCheckpoints(fid.data) if sqlite_file(fid.data) is not None else None
        # Looked up on the event loop once a second per key: never behind the write lock.
        self.keys = ApiKeyCache(self._reader_engine or fid.data, ttl=key_cache_ttl)
        # One writer for both kinds: one transaction (and one turn of the lock) per batch.
        self.writer: Batcher[WriterItem, WriterResult] = Batcher("writes", self._write)
        self.loader: Batcher[str, SubjectState | None] = Batcher("states", self._load_states)
        self._runner = runner
        self._owns_runner = False
        self._runner_lock = threading.Lock()
        self._retention: tuple[Retention, RetentionScheduler] | None = None
        self.owns_fiduciary = owns_fiduciary
        # Rendered notices by (policy version id, format): rendering takes tens of ms.
        self.notices: dict[tuple[int, str], str] = {}

    # -- subject states (for decisions)
    def states(self, subject_ids: Iterable[str]) -> dict[str, SubjectState]:
        """States of these subjects (unknown ids left out): cached ones, the rest read with
        one query per 5,000."""
        now = time.monotonic()
        out: dict[str, SubjectState] = {}
        missing: list[str] = []
        for sid in subject_ids:
            hit = self._states.get(sid)
            if hit is not None and now - hit[0] < self.state_ttl:
                out[sid] = hit[1]
            elif sid not in out:
                missing.append(sid)
        if missing:
            loaded = self._reader.states(missing, self.fid.versions)
            changed = self._changed
            for sid, st in loaded.items():
                if changed.get(sid, -1.0) < now:
                    self._states[sid] = (now, st)
            out.update(loaded)
            if len(self._states) > MAX_CACHED:
                self._sweep(now)
        return out

    def _sweep(self, now: float) -> None:
        """Drop expired states (and change marks): the cache holds the subjects of the last
        ``state_ttl`` seconds, not every subject ever asked about."""
        ttl = self.state_ttl
        self._states = {k: v for k, v in list(self._states.items()) if now - v[0] < ttl}
        self._changed = {k: v for k, v in list(self._changed.items()) if now - v < ttl}

    def _load_states(self, subject_ids: Sequence[str]) -> list[SubjectState | None]:
        found = self.states(dict.fromkeys(subject_ids))
        return [found.get(sid) for sid in subject_ids]

    async def load_state(self, subject_id: str) -> SubjectState:
        """The subject's state: cached, or loaded together with the other requests' (one
        query for all that are waiting). UnknownSubject for an id never issued."""
        st = self.cached_state(subject_id)
        if st is None:
            st = await asyncio.wrap_future(self.loader.submit(subject_id))
            if st is None:
                raise UnknownConsentSubject(f"unknown subject {subject_id!r}")
        return st

    def cached_state(self, subject_id: str) -> SubjectState | None:
        """The state if cached and fresh (no I/O: safe on the event loop)."""
        hit = self._states.get(subject_id)
        if hit is not None and time.monotonic() - hit[0] < self.state_ttl:
            return hit[1]
        return None

    def state(self, subject_id: str) -> SubjectState:
        found = self.states([subject_id])
        if subject_id not in found:
            raise UnknownConsentSubject(f"unknown subject {subject_id!r}")
        return found[subject_id]

    def forget(self, subject_id: str) -> None:
        """Drop a changed subject's cached state, here and in the Fiduciary."""
        now = time.monotonic()
        self._changed[subject_id] = now
        if len(self._changed) > MAX_CACHED:
            self._sweep(now)
        self._states.pop(subject_id, None)
        self.fid.forget_state(subject_id)

    # -- group commit
    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        import fcntl

        # One open file per turn: flock excludes other open files, in this process too.
        with open(self._lock_path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write(self, items: Sequence[WriterItem]) -> list[WriterResult]:
        """Consent events, audit entries and decisions, in one transaction: event ids for
        events, None for audit entries, a Decided (or UNKNOWN, RECORD_GPC_FIRST) for
        decisions. The states decisions need are read before the write lock is taken, with
        one query for all of them."""
        decided = self._decide_all([i for i in items if isinstance(i, DecisionAsked)])
        events = [i for i in items if isinstance(i, NewEvent)]
        entries = [i for i in items if not isinstance(i, NewEvent | DecisionAsked)]
        entries += [
            decision_entry(a.actor, a.subject_id, d.decision, a.recipient, a.audience)
            for a, d in decided.items()
            if isinstance(d, Decided)
        ]
        with self._writing(), self.fid.data.begin() as conn:
            ids = iter(self.fid.consent.record_many(events, conn=conn) if events else [])
            if entries:
                self.fid.audit.append_many(conn, entries)
        for sid in {e.subject_id for e in events}:
            self.forget(sid)
        out: list[WriterResult] = []
        for i in items:
            if isinstance(i, NewEvent):
                out.append(next(ids))
            elif isinstance(i, DecisionAsked):
                out.append(decided[i])
            else:
                out.append(None)
        return out

    def _decide_all(self, asked: list[DecisionAsked]) -> dict[DecisionAsked, Decided | str]:
        if not asked:
            return {}
        states = self.states(dict.fromkeys(a.subject_id for a in asked))
        out: dict[DecisionAsked, Decided | str] = {}
        for a in asked:
            st = states.get(a.subject_id)
            out[a] = UNKNOWN if st is None else self.decide_with(st, a)
        return out

    def decide_with(self, st: SubjectState, a: DecisionAsked) -> Decided | str:
        """The decision on a state in hand (no I/O), or RECORD_GPC_FIRST when the request's
        GPC is an opt-out the ledger does not hold yet (LAW-12: it must be recorded)."""
        applies = a.gpc and self.gpc_applies(st.jurisdiction)
        if applies and not st.sale_opt_out:
            return RECORD_GPC_FIRST
        d = self.fid.decider.decide(
            st, a.purpose, a.categories, a.recipient, audience=a.audience, gpc=applies
        )
        return Decided(d, applies)

    async def decide(self, asked: DecisionAsked) -> Decided | str:
        """Decide and audit in one trip to the writer: the subject's state read with the
        others' of the batch, the decision's audit entry committed with the batch's. UNKNOWN
        for an unknown subject; RECORD_GPC_FIRST when GPC must first be recorded as an
        opt-out (the caller records it and decides again)."""
        return cast(Decided | str, await asyncio.wrap_future(self.writer.submit(asked)))

    async def record(self, event: NewEvent) -> int:
        """Append a consent event (with its state and audit entry); returns its id once
        committed."""
        event_id = await asyncio.wrap_future(self.writer.submit(event))
        assert isinstance(event_id, int)
        return event_id

    async def audit(self, entry: Mapping[str, Any]) -> None:
        """Append an audit entry; returns once committed."""
        await asyncio.wrap_future(self.writer.submit(entry))

    # -- policy facts
    def gpc_applies(self, jurisdiction: str) -> bool:
        """Whether Sec-GPC: 1 is an opt-out of sale and sharing in this jurisdiction
        (LAW-12), as Fiduciary.decide counts it."""
        j = self.fid.policy.jurisdictions.get(jurisdiction)
        return j is not None and j.gpc == GpcEffect.opt_out

    # -- the request runner, made on first use (it starts an executor thread)
    def runner(self) -> RequestRunner:
        with self._runner_lock:
            if self._runner is None:
                from fiduciary.connectors.webhook import WebhookConnector
                from fiduciary.jobs import executor_from_settings
                from fiduciary.requests.runner import RequestRunner

                s = self.settings
                self._runner = RequestRunner(
                    self.fid,
                    self.desk,
                    connections=s.connections,
                    webhooks={name: WebhookConnector(w.url, w.secret) for name, w in s.webhooks.items()},
                    executor=executor_from_settings(s) if s.broker_url else None,
                )
                self._owns_runner = True
            return self._runner

    # -- retention: the inline scheduler, when FIDUCIARY_RETENTION_EVERY is set and no broker
    def start_retention(self) -> None:
        """Sweep retention every ``settings.retention_every`` in a thread of this process.
        With a broker, Celery beat sweeps instead (docs/retention.md); several server
        processes may each run a scheduler: a sweep already running is resumed, not doubled."""
        s = self.settings
        if s.retention_every is None or s.broker_url or self._retention is not None:
            return
        from fiduciary.config import retention_interval
        from fiduciary.retention import Retention
        from fiduciary.retention.schedule import RetentionScheduler

        retention = Retention(self.fid, connections=s.connections, mailer=self.mailer)
        scheduler = RetentionScheduler(retention, retention_interval(s.retention_every))
        self._retention = (retention, scheduler.start())

    def close(self) -> None:
        if self._retention is not None:
            retention, scheduler = self._retention
            scheduler.stop()
            retention.close()
        self.writer.close()
        self.loader.close()
        if self._checkpoints is not None:
            self._checkpoints.close()
        if self._runner is not None and self._owns_runner:
            self._runner.close()
        if self._reader_engine is not None:
            self._reader_engine.dispose()
        if self.owns_fiduciary:
            self.fid.close()


def _read_only_engine(data: Engine) -> Engine | None:
    """For SQLite files: an engine whose statements run without BEGIN (each is its own
    read transaction, which in WAL mode takes no lock) and cannot write (query_only)."""
    if sqlite_file(data) is None:
        return None
    engine = create_engine(data.url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # autocommit: no BEGIN, no lock
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA query_only=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    return engine


def _write_lock_path(data: Engine) -> Path | None:
    db = sqlite_file(data)
    if db is None:
        return None
    try:
        import fcntl  # noqa: F401 - POSIX only; elsewhere SQLite's busy handler does the job
    except ImportError:  # pragma: no cover
        return None
    return db.with_name(db.name + ".web-writes.lock")
