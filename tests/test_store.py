"""Migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from fiduciary.store import make_engine, tables, upgrade
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
