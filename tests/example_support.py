"""What every example's test checks the same way.

Each ``tests/test_example_<name>.py`` asserts its own promises; the checks here are the
ones all five share: the app schema against the policy's datastore, deterministic seed
data, set-based inserts, and the ``# keeps`` comments. Each example's fixtures come from
``example_fixtures``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Engine, String, Text, create_engine, event, select
from sqlalchemy.engine import Row

from fiduciary import CompiledPolicy, compile_policy, load_policy
from fiduciary.examples import MAX_BATCH, example_policy, load_example_app
from fiduciary.policy import LoadedPolicy

# The fideslang data_type of each portable column type (dates travel as strings in fides).
# A type missing here is not portable to SQLite, PostgreSQL and MariaDB alike.
FIDES_TYPE = {
    "Integer": "integer",
    "BigInteger": "integer",
    "String": "string",
    "Text": "string",
    "Boolean": "boolean",
    "DateTime": "string",
    "Date": "string",
    "Numeric": "float",
}


# --------------------------------------------------------------------------- fixtures


def example_fixtures(name: str) -> tuple[Any, Any, Any]:
    """Module-scoped fixtures ``lp`` (the loaded policy), ``cp`` (compiled) and ``app``
    (the example's app module) for the example ``name``; a test module assigns them:
    ``lp, cp, app = example_fixtures("social")``."""

    @pytest.fixture(scope="module", name="lp")
    def lp_fixture() -> LoadedPolicy:
        return load_policy(example_policy(name))

    @pytest.fixture(scope="module", name="cp")
    def cp_fixture(lp: LoadedPolicy) -> CompiledPolicy:
        return compile_policy(lp)

    @pytest.fixture(scope="module", name="app")
    def app_fixture() -> ModuleType:
        return load_example_app(name)

    return lp_fixture, cp_fixture, app_fixture


def sqlite_engine(path: Path) -> Engine:
    """A SQLite engine on ``path`` that enforces foreign keys (SQLite does not unless
    asked), so a seed that wrote a child before its parent fails."""
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _foreign_keys_on(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    return engine


def seeded_sqlite(app: ModuleType, path: Path, size: int = 50, seed: int = 0) -> Engine:
    """``sqlite_engine(path)`` with the app's schema created and seeded."""
    engine = sqlite_engine(path)
    app.create(engine, size, seed=seed)
    return engine


def purposes_using(cp: CompiledPolicy, category: str) -> set[str]:
    """The purposes whose categories cover ``category``."""
    return {k for k in cp.purposes if cp.purpose_covers(k, category)}


def kept_promises(policy: Path, prefix: str) -> set[str]:
    """The ``PREFIX-n`` and ``LAW-n`` ids named in the policy's ``# keeps ...`` comments."""
    kept: set[str] = set()
    for comment in re.findall(r"#\s*keeps\s+([^\n]*)", policy.read_text(encoding="utf-8")):
        kept.update(re.findall(rf"\b(?:{prefix}|LAW)-\d+\b", comment))
    return kept


def assert_every_promise_kept(policy: Path, prefix: str, count: int) -> None:
    """``PREFIX-1`` .. ``PREFIX-<count>`` and ``LAW-1`` .. ``LAW-14`` are each named in a
    ``# keeps`` comment, and no ``# gap`` comment is left."""
    wanted = {f"{prefix}-{i}" for i in range(1, count + 1)} | {f"LAW-{i}" for i in range(1, 15)}
    assert wanted - kept_promises(policy, prefix) == set()
    text = policy.read_text(encoding="utf-8")
    assert "# gap" not in text
    assert re.findall(r"#\s*gap\s", text) == []


# --------------------------------------------------------------------------- schema


def assert_schema_matches_datastore(
    cp: CompiledPolicy,
    app: ModuleType,
    datastore: str,
    *,
    require_types: bool = True,
    require_lengths: bool = True,
) -> None:
    """The app's tables are exactly the datastore's collections, and each table's columns
    exactly the collection's fields, with the same primary key, matching types and string
    lengths, and foreign keys exactly the references.

    A type or length the datastore declares must match the column. ``require_types`` and
    ``require_lengths`` also demand that every field declares its type, and every
    length-bearing column its length.
    """
    (ds,) = cp.policy.datastores  # one datastore: the service's own app database
    assert ds.fides_key == datastore
    tables = app.metadata.tables
    assert {f"{datastore}.{t}" for t in tables} == set(cp.collections)
    fields_meta = {(c.name, f.name): f.fides_meta for c in ds.collections for f in c.fields}
    for name, table in tables.items():
        info = cp.collections[f"{datastore}.{name}"]
        assert set(table.c.keys()) == set(info.fields), name
        assert tuple(c.name for c in table.primary_key) == info.primary_key, name
        for col in table.c:
            where = (name, col.name)
            field = info.fields[col.name]
            assert field.primary_key == col.primary_key, where
            kind = type(col.type).__name__
            assert kind in FIDES_TYPE, (where, kind)  # portable types only
            if field.data_type is not None or require_types:
                assert field.data_type == FIDES_TYPE[kind], where
            if isinstance(col.type, String) and not isinstance(col.type, Text):
                assert col.type.length, where  # MariaDB needs a length for VARCHAR
            length = getattr(col.type, "length", None)
            meta = fields_meta[where]
            declared = meta.length if meta is not None else None
            if length is not None and (declared is not None or require_lengths):
                assert declared == length, where
    assert_foreign_keys_match_references(cp, app, datastore)


def assert_foreign_keys_match_references(cp: CompiledPolicy, app: ModuleType, datastore: str) -> None:
    """The app's foreign keys are exactly the datastore's references, field for field."""
    from_app = {
        (t.name, c.name, fk.column.table.name, fk.column.name)
        for t in app.metadata.tables.values()
        for c in t.c
        for fk in c.foreign_keys
    }
    prefix = f"{datastore}."
    assert all(r.collection.startswith(prefix) and r.target.startswith(prefix) for r in cp.references)
    from_policy = {
        (r.collection.removeprefix(prefix), r.field, r.target.removeprefix(prefix), r.target_field)
        for r in cp.references
    }
    assert from_app == from_policy


# --------------------------------------------------------------------------- seed data


@dataclass
class SeedRun:
    """What one ``create`` wrote: its row counts, and every table's rows by primary key."""

    counts: dict[str, int]
    rows: dict[str, list[Row[Any]]]

    def column(self, table: str, name: str) -> list[Any]:
        return [getattr(r, name) for r in self.rows[table]]


def seed_run(app: ModuleType, path: Path, size: int, seed: int) -> SeedRun:
    engine = sqlite_engine(path)
    counts = app.create(engine, size, seed=seed)
    with engine.connect() as conn:
        rows = {
            t.name: list(conn.execute(select(t).order_by(*t.primary_key.columns)).all())
            for t in app.metadata.sorted_tables
        }
    engine.dispose()
    return SeedRun(counts, rows)


def assert_seed_deterministic(
    app: ModuleType,
    tmp_path: Path,
    *,
    root: str,
    size: int = 50,
    seed: int = 0,
    other_seed: int = 1,
) -> tuple[SeedRun, SeedRun]:
    """Seed ``size`` subjects twice with ``seed`` and once with ``other_seed``, on SQLite
    with foreign keys enforced. The two runs with one seed are equal row for row; the
    counts ``create`` returns are the rows written, every table has some, and the
    identity root ``root`` holds ``user1@example.com`` .. ``user<size>@example.com``; the
    other seed gives other data. Returns the first run and the other seed's run."""
    first = seed_run(app, tmp_path / "seed-a.db", size, seed)
    again = seed_run(app, tmp_path / "seed-b.db", size, seed)
    assert first.counts == again.counts
    for table in app.metadata.sorted_tables:
        assert first.rows[table.name] == again.rows[table.name], table.name
    assert set(first.counts) == set(app.metadata.tables)
    assert {t: len(r) for t, r in first.rows.items()} == first.counts
    assert all(n > 0 for n in first.counts.values()), first.counts
    assert first.counts[root] == size
    assert first.column(root, "email") == [f"user{n}@example.com" for n in range(1, size + 1)]
    other = seed_run(app, tmp_path / "seed-c.db", size, other_seed)
    assert other.rows != first.rows
    return first, other


@dataclass
class InsertLog:
    """The statements a seed ran: the rows each carried, in order."""

    counts: dict[str, int]
    statements: list[int]
    engine: Engine

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


def assert_set_based_inserts(app: ModuleType, path: Path, size: int, seed: int = 0) -> InsertLog:
    """Seed ``size`` subjects into a fresh schema while counting the statements: all are
    INSERTs, together they carry every row ``seed`` counted, none carries more than
    ``MAX_BATCH`` (nor the app's own ``BATCH``) rows, and there are fewer than rows.
    Each test then bounds the number of statements for its own seed."""
    engine = sqlite_engine(path)
    with engine.begin() as conn:
        app.metadata.create_all(conn)
    statements: list[int] = []
    kinds: set[str] = set()

    def count(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        kinds.add(statement.lstrip().split(None, 1)[0].upper())
        statements.append(len(params) if many else 1)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as conn:
            counts = app.seed(conn, size, seed)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    log = InsertLog(counts, statements, engine)
    assert kinds == {"INSERT"}, kinds
    assert sum(statements) == log.rows
    assert max(statements) <= min(MAX_BATCH, app.BATCH)
    assert len(statements) < log.rows  # never one statement per row
    return log
