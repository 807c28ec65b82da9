"""Audit log throughput (target: >= 20,000 entries/s with the chain, SQLite and PostgreSQL).

Prints, in one run, for SQLite (a temp file) and PostgreSQL (a temp database; skipped when
unreachable):
- ``append_many``: entries/s in batches of 1,000, each batch its own transaction (checks,
  pseudonyms, detail JSON, the hash chain, checkpoints every 1,000, the head lock);
- ``append``: entries/s with one transaction per entry;
- ``verify``: entries/s streaming and recomputing the chain and checking the checkpoints;
- baseline: the same rows inserted with executemany in batches of 1,000, one transaction
  per batch, with no checks, no hashing and no chain (values precomputed); on PostgreSQL
  also with COPY, which is what append_many uses there.

    python bench/audit.py [--entries 100000] [--single 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, create_engine, insert, text

from fiduciary.audit import GENESIS, AuditLog
from fiduciary.store import make_engine, upgrade
from fiduciary.store.tables import audit_log
from fiduciary.vault.keyring import Keyring

PG_ADMIN_URL = os.environ.get(
    "FIDUCIARY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BATCH = 1000


@contextmanager
def sqlite_store() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine, "data")
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def pg_store(admin: Engine) -> Iterator[Engine]:
    name = f"fiduciary_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
    try:
        upgrade(engine, "data")
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def entries(n: int) -> list[dict[str, Any]]:
    """Entries like the vault's: a service reading categories of a subject for a purpose."""
    return [
        {
            "actor": f"service:{i % 7}",
            "action": "vault.read",
            "purpose": "service.delivery" if i % 3 else "marketing.communications.email",
            "subject_id": f"subject-{i % 50_000:08d}",
            "result": "ok" if i % 11 else "denied",
            "detail": {"categories": ["user.contact.email", "user.name"], "request": i},
        }
        for i in range(n)
    ]


def baseline_rows(log: AuditLog, batch: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """The rows append_many writes, with every value computed up front (not timed)."""
    at = datetime.now(UTC)
    return [
        {
            "seq": start + i,
            "at": at,
            "actor": e["actor"],
            "action": e["action"],
            "purpose": e["purpose"],
            "subject": log.pseudonym(e["subject_id"]),
            "result": e["result"],
            "detail": json.dumps(e["detail"], sort_keys=True, separators=(",", ":")),
            "prev_hash": GENESIS,
            "hash": GENESIS,
        }
        for i, e in enumerate(batch)
    ]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} /s   ({n:,} in {seconds:6.2f} s)"


def bench(label: str, store: Any, n: int, single: int, keyring: Keyring) -> None:
    print(f"{label}")
    data = entries(n)
    batches = [data[i : i + BATCH] for i in range(0, n, BATCH)]

    with store() as engine:
        log = AuditLog(engine, keyring)
        prepared = [baseline_rows(log, b, i * BATCH + 1) for i, b in enumerate(batches)]
        t = time.perf_counter()
        for rows in prepared:
            with engine.begin() as conn:
                conn.execute(insert(audit_log), rows)
        base = time.perf_counter() - t
    print(f"  baseline: executemany, no chain        {rate(n, base)}")

    if "postgres" in label.lower():
        # append_many writes with COPY on PostgreSQL: compare with COPY too.
        with store() as engine:
            log = AuditLog(engine, keyring)
            prepared = [baseline_rows(log, b, i * BATCH + 1) for i, b in enumerate(batches)]
            cols = [c.name for c in audit_log.columns]
            t = time.perf_counter()
            for rows in prepared:
                with engine.begin() as conn:
                    driver = conn.connection.driver_connection
                    assert driver is not None
                    with (
                        driver.cursor() as cur,
                        cur.copy(f"COPY audit_log ({', '.join(cols)}) FROM STDIN") as cp,
                    ):
                        for r in rows:
                            cp.write_row([r[k] for k in cols])
            copy = time.perf_counter() - t
        print(f"  baseline: COPY, no chain               {rate(n, copy)}")

    with store() as engine:
        log = AuditLog(engine, keyring)
        t = time.perf_counter()
        for b in batches:
            log.append_many(None, b)
        many = time.perf_counter() - t
        print(
            f"  append_many, batches of {BATCH:,}          {rate(n, many)}   x{many / base:.2f} baseline time"
        )
        t = time.perf_counter()
        report = log.verify()
        ver = time.perf_counter() - t
        assert report.ok and report.entries == n, report.to_text()
        print(f"  verify ({report.checkpoints:,} checkpoints)             {rate(n, ver)}")

    with store() as engine:
        log = AuditLog(engine, keyring)
        t = time.perf_counter()
        for e in data[:single]:
            log.append(None, **e)
        one = time.perf_counter() - t
        print(f"  append, one transaction each          {rate(single, one)}")
        assert log.verify().ok
    print()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--single", type=int, default=5_000)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.entries:,} entries\n")
    keyring = Keyring.generate()
    bench("SQLite (file, WAL, synchronous=NORMAL)", sqlite_store, args.entries, args.single, keyring)

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            version = conn.execute(text("show server_version")).scalar()
    except Exception as exc:  # any failure to connect means "not available here"
        print(f"PostgreSQL skipped: {PG_ADMIN_URL} unreachable ({type(exc).__name__})")
        return
    try:
        bench(f"PostgreSQL {version}", lambda: pg_store(admin), args.entries, args.single, keyring)
    finally:
        admin.dispose()


if __name__ == "__main__":
    main()
