"""Shared fixtures: real databases for storage tests.

Every storage test runs on SQLite and on the real PostgreSQL (localhost:5432, trust auth).
A missing service skips the test with the reason, except under
FIDUCIARY_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from fiduciary.store import make_engine, upgrade

PG_ADMIN_URL = os.environ.get(
    "FIDUCIARY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def services_required() -> bool:
    return os.environ.get("FIDUCIARY_REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> None:
    """Skip, or fail when CI requires the real services."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # any connection failure means "not available here"
        engine.dispose()
        service_missing(f"PostgreSQL at {PG_ADMIN_URL} unreachable: {type(exc).__name__}: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_database(pg_admin: Engine) -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database; dropped afterwards."""
    name = f"fiduciary_test_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield pg_admin.url.set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Stores:
    """Migrated data and key stores, for one backend."""

    backend: str
    data_url: str
    keys_url: str
    data: Engine
    keys: Engine


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "sqlite":
        data_url = f"sqlite:///{tmp_path / 'fiduciary.db'}"
        keys_url = f"sqlite:///{tmp_path / 'keys.db'}"
        dropped: list[str] = []
    else:
        admin: Engine = request.getfixturevalue("pg_admin")
        dropped = [f"fiduciary_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
        with admin.connect() as conn:
            for name in dropped:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        data_url, keys_url = (
            admin.url.set(database=n).render_as_string(hide_password=False) for n in dropped
        )
    data = make_engine(data_url)
    keys = make_engine(keys_url, secure_delete=True)
    upgrade(data, "data")
    upgrade(keys, "keys")
    yield Stores(request.param, data_url, keys_url, data, keys)
    data.dispose()
    keys.dispose()
    if dropped:
        admin = request.getfixturevalue("pg_admin")
        with admin.connect() as conn:
            for name in dropped:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
