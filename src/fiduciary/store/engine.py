"""Engines for the stores: SQLite (default, WAL) or PostgreSQL (psycopg 3).

The same code runs on both; only connection setup differs here.
"""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername in ("mysql", "mariadb"):
        u = u.set(drivername=f"{u.drivername}+pymysql")
    return u.render_as_string(hide_password=False)


def make_engine(url: str, *, secure_delete: bool = False, echo: bool = False) -> Engine:
    """An engine for ``url``. ``secure_delete`` makes SQLite overwrite deleted rows, which
    the key store needs: a destroyed data key must not linger in free pages."""
    url = normalize_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # The driver's own transaction handling is replaced by explicit BEGIN below,
            # so that SQLite takes its write lock when a transaction starts.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=10000")
            if secure_delete:
                cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if u.get_dialect().driver == "psycopg":
        engine = create_engine(url, echo=echo)
        event.listen(engine, "checkout", _psycopg_alive)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _psycopg_alive(dbapi_conn: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
    """A pooled PostgreSQL connection is checked by asking its socket, not the server.

    ``pool_pre_ping`` sends ``SELECT 1`` on every checkout: one round trip and a trip
    through SQLAlchemy's execute path, which was a quarter of a vault read by email
    (docs/benchmarks.md). A server that ends an idle session (a restart, an idle timeout,
    ``pg_terminate_backend``) sends its FATAL message and closes the socket, so the socket
    of an idle connection that is gone is readable; a live idle one has nothing to say
    (no LISTEN here). The pool drops a connection for which this raises and checks out
    another."""
    if dbapi_conn.closed or dbapi_conn.broken:
        raise DisconnectionError("the connection is closed")
    try:
        readable, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
    except (OSError, ValueError) as exc:
        raise DisconnectionError(f"the connection's socket is unusable: {exc}") from exc
    if readable:
        raise DisconnectionError("the server ended the session while the connection was idle")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def sqlite_file(engine: Engine) -> Path | None:
    """The database file of an SQLite engine; None for other databases and in-memory or
    URI-named SQLite databases."""
    db = engine.url.database
    if not is_sqlite(engine) or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


class BackgroundCheckpoints:
    """Moves an SQLite engine's WAL checkpoints off the commit path, for a server.

    By default the connection whose commit takes the WAL past 1,000 pages copies the WAL
    into the database and syncs it, inside that commit: on a virtual disk that is 10-40 ms
    added to one transaction in some tens, which becomes a latency spike for every request
    waiting on it. Here the engine's connections stop checkpointing on commit
    (``wal_autocheckpoint=0``) and a thread makes a PASSIVE checkpoint (never waits for a
    lock, never blocks a writer or a reader) every ``every`` seconds on its own
    connection. Durability is unchanged: committed transactions are in the WAL either way.

    ``close`` stops the thread, checkpoints once more and gives the engine back its
    automatic checkpoints (its pooled connections are replaced)."""

    def __init__(self, engine: Engine, every: float = 0.25) -> None:
        import sqlite3
        import threading

        db = sqlite_file(engine)
        if db is None:
            raise ValueError("background checkpoints need an SQLite database file")
        self.engine = engine
        self.every = every
        self.checkpoints = 0
        self._conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        self._stop = threading.Event()
        event.listen(engine, "connect", _no_autocheckpoint)
        # Connections already pooled checkpoint on commit; new ones will not.
        engine.dispose()
        self._thread = threading.Thread(target=self._run, name="fiduciary-checkpoints", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.checkpoint()

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint: as much of the WAL as no reader still needs."""
        import sqlite3

        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
        except sqlite3.Error:  # e.g. the database is being replaced; try again next turn
            pass

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.checkpoint()
        self._conn.close()
        event.remove(self.engine, "connect", _no_autocheckpoint)
        self.engine.dispose()


def _no_autocheckpoint(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()
