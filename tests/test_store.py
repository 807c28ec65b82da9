"""Migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from fiduciary.store import BackgroundCheckpoints, make_engine, tables, upgrade
from fiduciary.store.migrate import downgrade
from tests.conftest import Stores


def test_migrations_match_the_declared_tables(stores: Stores) -> None:
    for engine, metadata in ((stores.data, tables.data), (stores.keys, tables.keys)):
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"include_name": lambda name, kind, _: not str(name).startswith("alembic_version")}
            )
            diff = compare_metadata(ctx, metadata)
        assert diff == [], f"{stores.backend}: migrations differ from tables.py: {diff}"


def test_key_store_is_apart_from_the_data(stores: Stores) -> None:
    data_tables = set(inspect(stores.data).get_table_names())
    key_tables = set(inspect(stores.keys).get_table_names())
    assert "subject_keys" in key_tables and "subject_keys" not in data_tables
    assert {"subjects", "identities", "attributes", "consent_events", "audit_log"} <= data_tables
    assert not ({"subjects", "attributes"} & key_tables)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    url: str = request.getfixturevalue("pg_database")
    return url


def test_upgrade_is_idempotent_and_downgrade_works(fresh_url: str) -> None:
    engine = make_engine(fresh_url)
    upgrade(engine, "data")
    upgrade(engine, "data")
    downgrade(engine, "data")
    assert "subjects" not in inspect(engine).get_table_names()
    upgrade(engine, "data")
    assert "subjects" in inspect(engine).get_table_names()
    engine.dispose()


def test_background_checkpoints_take_the_wal_off_the_commit_path(tmp_path: Path) -> None:
    """A server's commits stop checkpointing (a checkpoint inside a commit is a 10-40 ms
    stall); a thread checkpoints instead, so the WAL is still copied back and reused; when
    it stops, the engine checkpoints on commit again."""
    db = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{db}")

    def autocheckpoint() -> int:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())

    def write(n: int) -> None:
        for i in range(n):
            with engine.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t (v) VALUES (?)", (f"{i:04d}" * 100,))

    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    assert autocheckpoint() == 1000
    background = BackgroundCheckpoints(engine, every=0.05)
    try:
        assert autocheckpoint() == 0
        write(300)
        deadline = time.monotonic() + 10
        while background.checkpoints < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert background.checkpoints >= 3
        # Everything committed is in the database file itself now, not only in the WAL.
        background.checkpoint()
        with sqlite3.connect(db) as other:
            busy, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied
    finally:
        background.close()
    assert autocheckpoint() == 1000
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar_one() == 300
    engine.dispose()
    with pytest.raises(ValueError, match="SQLite database file"):
        BackgroundCheckpoints(make_engine("sqlite://"))
