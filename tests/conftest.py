"""Shared fixtures: real databases for storage tests.

Every storage test runs on SQLite and on the real PostgreSQL (localhost:5432, trust auth).
A missing service skips the test with the reason, except under
FIDUCIARY_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, create_engine, inspect, text

from fiduciary.store import make_engine, tables, upgrade

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


MARIADB_ADMIN_URL = os.environ.get("FIDUCIARY_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/")


@pytest.fixture
def mariadb_database() -> Iterator[str]:
    """The URL of a fresh, empty MariaDB database (127.0.0.1:3306, root); dropped afterwards."""
    admin = create_engine(MARIADB_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"fiduciary_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
    except Exception as exc:  # any connection failure means "not available here"
        admin.dispose()
        service_missing(f"MariaDB at {MARIADB_ADMIN_URL} unreachable: {type(exc).__name__}: {exc}")
    yield admin.url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@dataclass
class Stores:
    """Migrated data and key stores, for one backend."""

    backend: str
    data_url: str
    keys_url: str
    data: Engine
    keys: Engine


@pytest.fixture(scope="session")
def store_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Migrated SQLite files, copied per test: migrating each test's store costs more."""
    base = tmp_path_factory.mktemp("store-templates")
    out = {"data": base / "fiduciary.db", "keys": base / "keys.db"}
    for store, path in out.items():
        engine = make_engine(f"sqlite:///{path}", secure_delete=store == "keys")
        upgrade(engine, store)  # type: ignore[arg-type]
        engine.dispose()  # the last connection's close checkpoints the WAL into the file
    return out


@pytest.fixture(scope="session")
def pg_stores(pg_admin: Engine) -> Iterator[dict[str, str]]:
    """One migrated pair of PostgreSQL databases for the session; each test empties them
    (TRUNCATE is milliseconds; creating and dropping databases per test cost ~1 s each)."""
    urls = {}
    names = []
    with pg_admin.connect() as conn:
        for store in ("data", "keys"):
            name = f"fiduciary_test_{store}_{uuid.uuid4().hex[:8]}"
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            names.append(name)
            urls[store] = pg_admin.url.set(database=name).render_as_string(hide_password=False)
    for store, url in urls.items():
        engine = make_engine(url)
        upgrade(engine, store)  # type: ignore[arg-type]
        engine.dispose()
    yield urls
    with pg_admin.connect() as conn:
        for name in names:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _empty_pg(engine: Engine, metadata: MetaData) -> None:
    """Back to a freshly migrated state: our tables emptied, tables a test added dropped."""
    ours = {t.name for t in metadata.sorted_tables}
    names = ", ".join(f'"{t}"' for t in sorted(ours))
    with engine.begin() as conn:
        for extra in set(inspect(conn).get_table_names()) - ours:
            if not extra.startswith("alembic_version"):
                conn.execute(text(f'DROP TABLE "{extra}" CASCADE'))
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "sqlite":
        templates: dict[str, Path] = request.getfixturevalue("store_templates")
        for path in templates.values():
            shutil.copyfile(path, tmp_path / path.name)
        data_url = f"sqlite:///{tmp_path / 'fiduciary.db'}"
        keys_url = f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        pg: dict[str, str] = request.getfixturevalue("pg_stores")
        data_url, keys_url = pg["data"], pg["keys"]
    data = make_engine(data_url)
    keys = make_engine(keys_url, secure_delete=True)
    if request.param == "postgresql":
        _empty_pg(data, tables.data)
        _empty_pg(keys, tables.keys)
    yield Stores(request.param, data_url, keys_url, data, keys)
    data.dispose()
    keys.dispose()
