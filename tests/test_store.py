"""Migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text

from fiduciary.policy import compile_policy, load_policy
from fiduciary.store import BackgroundCheckpoints, make_engine, tables, upgrade
from fiduciary.store.migrate import downgrade
from fiduciary.vault import Keyring, NewSubject, Vault
from tests.conftest import Stores

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def test_dropping_the_vaults_foreign_keys_keeps_every_row(fresh_url: str, tmp_path: Path) -> None:
    """data_0010 drops identities' and attributes' foreign keys to subjects (the vault alone
    writes them; the per-row check halved bulk imports on PostgreSQL). Upgrading a store that
    holds subjects keeps every row readable; downgrading puts the keys back, rows intact."""
    cp = compile_policy(load_policy(EXAMPLES / "voiceapi" / "policy.yaml"))
    data, keys = make_engine(fresh_url), make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    upgrade(data, "data", "data_0009")
    upgrade(keys, "keys")
    vault = Vault(data, keys, Keyring.generate(), cp)
    at = datetime(2026, 11, 23, tzinfo=UTC)
    people = [
        NewSubject("customer", "eu", {"email": f"p{i}@example.com"}, "v1", {"user.name": f"P {i}"}, now=at)
        for i in range(20)
    ]
    assert vault.import_subjects(people) == 20

    def foreign_keys() -> list[str]:
        found = inspect(data)
        tables_ = ("identities", "attributes")
        return sorted(str(fk["name"]) for t in tables_ for fk in found.get_foreign_keys(t))

    assert foreign_keys() == ["fk_attributes_subject_id_subjects", "fk_identities_subject_id_subjects"]
    upgrade(data, "data")
    assert foreign_keys() == []
    for i in (0, 19):
        sid = vault.find("email", f"P{i}@Example.com")
        assert sid is not None and vault.read(sid)["user.name"].value == f"P {i}"
    downgrade(data, "data", "data_0009")
    assert foreign_keys() == ["fk_attributes_subject_id_subjects", "fk_identities_subject_id_subjects"]
    with data.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tables.attributes)).scalar_one() == 20
        assert conn.execute(select(func.count()).select_from(tables.identities)).scalar_one() == 20
    data.dispose()
    keys.dispose()


def test_a_postgresql_session_the_server_ended_is_replaced_at_checkout(
    pg_database: str, pg_admin: Engine
) -> None:
    """No SELECT 1 per checkout (pool_pre_ping): a pooled connection whose session the
    server ended while it sat idle is found out by its socket, dropped, and replaced; the
    caller never sees it. Without the check the second block raises OperationalError."""
    engine = make_engine(pg_database)
    assert engine.pool._pre_ping is False
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with pg_admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
        deadline = time.monotonic() + 10  # the session ends asynchronously
        gone = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        while conn.execute(gone, {"pid": pid}).scalar_one() and time.monotonic() < deadline:
            time.sleep(0.05)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    engine.dispose()
