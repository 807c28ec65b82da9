"""The example apps: each reference service's own database, to run Fiduciary against.

Every ``examples/<name>/`` folder of the source checkout holds the service's
``policy.yaml`` and an ``app.py`` with its database schema (SQLAlchemy Core ``metadata``
whose tables match the policy's datastore) and a deterministic seed-data generator
(``seed(conn, size, seed=0)`` and ``create(engine, size, seed=0)``, both returning row
counts per table).

This module finds and loads those apps (for tests, the demo and benchmarks), and holds
what their generators share: id and foreign-key columns, set-based batched inserts, a
buffer of pending rows with running ids, and deterministic fake values.
"""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Engine, ForeignKey, MetaData, Table
from sqlalchemy.types import TypeEngine

__all__ = [
    "EXAMPLES",
    "MAX_BATCH",
    "PendingRows",
    "Seeder",
    "create_seeded",
    "example_dir",
    "example_policy",
    "examples_root",
    "foreign_key_column",
    "id_column",
    "insert_batches",
    "load_example_app",
    "random_hex",
    "random_ip",
    "random_time",
    "subject_chunks",
]

EXAMPLES = ("dataplatform", "filelocker", "projects", "social", "voiceapi")
MAX_BATCH = 5_000  # rows per INSERT statement, at most: set-based, yet within every driver's limits

# A seed-data generator: (connection, size, seed) -> row counts per table.
Seeder = Callable[[Connection, int, int], dict[str, int]]
_ColumnType = type[TypeEngine[Any]] | TypeEngine[Any]


# --------------------------------------------------------------------------- finding and loading


def examples_root() -> Path:
    """The ``examples/`` folder of the source checkout this package runs from."""
    root = Path(__file__).resolve().parents[2] / "examples"
    if not root.is_dir():
        # The examples are not packaged: they live beside src/ in the repository.
        raise FileNotFoundError(f"no examples folder at {root}: run from a source checkout")
    return root


def example_dir(name: str) -> Path:
    """The folder of the example ``name`` (one of ``EXAMPLES``, or any folder with a policy)."""
    path = examples_root() / name
    if not (path / "policy.yaml").is_file():
        raise LookupError(f"no example named {name!r}; the examples are {', '.join(EXAMPLES)}")
    return path


def example_policy(name: str) -> Path:
    """The ``policy.yaml`` of the example ``name``."""
    return example_dir(name) / "policy.yaml"


def load_example_app(example: str | Path) -> ModuleType:
    """Import an example's ``app.py`` by path and return the module.

    ``example`` is an example's name (a ``str``, see ``EXAMPLES``), or a ``Path``: an
    example's folder or an ``app.py``. Each call runs the file afresh (a caller that
    patches the module cannot disturb another) and registers the module in
    ``sys.modules`` as ``fiduciary_example_<folder>``, so that tools which look a module up
    by name (pickling, dataclasses, tracebacks) find it.
    """
    if isinstance(example, str):
        path = example_dir(example) / "app.py"
    else:
        path = example if example.suffix == ".py" else example / "app.py"
    name = f"fiduciary_example_{path.parent.name}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load an example app from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


# --------------------------------------------------------------------------- schema


def id_column(type_: _ColumnType = BigInteger) -> Column[Any]:
    """The primary key ``id``, given by the seed rather than the database: a child row can
    then name its parent before either is written, and two runs give the same ids."""
    return Column("id", type_, primary_key=True, autoincrement=False)


def foreign_key_column(
    name: str,
    target: str,
    type_: _ColumnType = BigInteger,
    *,
    nullable: bool = False,
    index: bool = True,
) -> Column[Any]:
    """A column referring to ``target`` (``"table.column"``), indexed by default because
    rights requests and retention find a subject's rows through it."""
    return Column(name, type_, ForeignKey(target), nullable=nullable, index=index)


# --------------------------------------------------------------------------- writing


def insert_batches(
    conn: Connection,
    table: Table,
    rows: Iterable[Mapping[str, Any]],
    batch_size: int = MAX_BATCH,
) -> int:
    """Insert ``rows`` into ``table`` with one executemany statement per ``batch_size``
    rows (never one per row); return how many were inserted.

    ``rows`` is consumed lazily, so a generator of a million rows holds one batch in
    memory at a time.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    count = 0
    it = iter(rows)
    while batch := list(islice(it, batch_size)):
        conn.execute(table.insert(), batch)
        count += len(batch)
    return count


class PendingRows:
    """Rows generated but not yet written, table by table, with ids 1, 2, 3 ... per table
    that keep counting across flushes.

    Generate a chunk of subjects with their related rows, then ``flush`` them parents first;
    memory stays bounded by the chunk, whatever the total size.
    """

    def __init__(self, tables: Iterable[str]) -> None:
        self.pending: dict[str, list[dict[str, Any]]] = {t: [] for t in tables}
        self.written: dict[str, int] = dict.fromkeys(self.pending, 0)
        self._last_id: dict[str, int] = {}

    def last_id(self, key: str) -> int:
        """The last id handed out for ``key`` (0 before the first)."""
        return self._last_id.get(key, 0)

    def next_id(self, key: str) -> int:
        """Hand out the next id for ``key``: a table, or any other counter a generator keeps."""
        self._last_id[key] = self.last_id(key) + 1
        return self._last_id[key]

    def add(self, table: str, row: dict[str, Any]) -> int:
        """Buffer ``row`` for ``table`` and return its id: the row's own ``id`` if it has
        one (later ids count on from it), else the table's next id."""
        if "id" in row:
            row_id = int(row["id"])
            self._last_id[table] = max(self.last_id(table), row_id)
            self.pending[table].append(row)
        else:
            row_id = self.next_id(table)
            self.pending[table].append({"id": row_id, **row})
        return row_id

    def flush(
        self,
        conn: Connection,
        tables: Iterable[Table],
        batch_size: int = MAX_BATCH,
        *,
        full_only: bool = False,
    ) -> None:
        """Write and clear the pending rows of ``tables`` in the order given (parents
        first, so foreign keys hold on engines that check them at once). With
        ``full_only``, only tables with at least a whole batch pending are written."""
        for table in tables:
            rows = self.pending[table.name]
            if rows and (len(rows) >= batch_size or not full_only):
                self.written[table.name] += insert_batches(conn, table, rows, batch_size)
                rows.clear()


def subject_chunks(size: int, per_chunk: int) -> Iterator[range]:
    """Subject numbers 1 .. ``size`` in consecutive ranges of at most ``per_chunk``."""
    for start in range(1, size + 1, per_chunk):
        yield range(start, min(start + per_chunk, size + 1))


def create_seeded(engine: Engine, metadata: MetaData, fill: Seeder, size: int, seed: int) -> dict[str, int]:
    """Create ``metadata``'s tables and fill them with ``fill``, in one transaction."""
    with engine.begin() as conn:
        metadata.create_all(conn)
        return fill(conn, size, seed)


# --------------------------------------------------------------------------- fake values


def random_hex(rng: random.Random, chars: int) -> str:
    """``chars`` random lower-case hex digits (leading zeros kept)."""
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def random_ip(rng: random.Random) -> str:
    """A public-looking IPv4 address, or (15% of the time) an IPv6 documentation one."""
    if rng.random() < 0.15:
        return "2001:db8:" + ":".join(f"{rng.getrandbits(16):x}" for _ in range(6))
    return f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def random_time(rng: random.Random, start: datetime, days: int = 365) -> datetime:
    """A moment within ``days`` after ``start``, to the second; a fixed ``start`` (never
    now()) keeps two runs with one seed equal."""
    return start + timedelta(seconds=rng.randrange(days * 86_400))
