"""The vault: bulk import, read by email, erasure time. SQLite and PostgreSQL.

Targets (issue 3): import of subjects with 10 encrypted attributes >= 20,000/s on SQLite,
>= 10,000/s on PostgreSQL (Databunker Pro publishes 5,800/s per instance); read by email
among 1,000,000 subjects p99 <= 2 ms on SQLite, <= 5 ms on PostgreSQL (Databunker Pro
publishes p99 16 ms); erasure takes the same time whatever the subject holds.

Prints, in one run, for SQLite (temp files) and PostgreSQL (temp databases, created and
dropped here; skipped when unreachable):
1. import: ``Vault.import_subjects`` of N subjects (an email identity and 10 attributes,
   3 of them JSON objects), batches of 2,000, in this process and with ``workers=1``
   (batches prepared in a second process); records built before timing; baseline: the
   same rows written the same way (executemany on SQLite, COPY on PostgreSQL, same
   batches, same ids) in clear:
   no validation, no normalization, no HMAC, no encryption, no key store.
2. read: ``find(email)`` + ``read(3 categories)`` for random subjects among M (the store
   is built with import_subjects), p50/p99 over L lookups, the email spelled with
   capitals (normalization on every lookup); baselines: the same two indexed SELECTs,
   no normalization, no key, no decryption, through the driver and through SQLAlchemy
   Core.
3. erase: ``Vault.erase`` of subjects holding 10 attributes vs 1,000 attributes
   (a policy with 1,000 extra categories), median and p90 of each.

    python bench/vault.py [--n 50000] [--subjects 1000000] [--lookups 10000]
                          [--erase-runs 100] [--backends sqlite,postgresql] [--only import,read,erase]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, select, text

from fiduciary.policy import compile_policy, load_policy
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import Category
from fiduciary.store import make_engine, upgrade
from fiduciary.store import tables as T
from fiduciary.vault import Keyring, NewSubject, Vault
from fiduciary.vault.normalize import blind_index
from fiduciary.vault.vault import _ATTRIBUTE_COLS, _IDENTITY_COLS, _SUBJECT_COLS, _BulkInsert, new_subject_id

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "FIDUCIARY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
VERSION = "2012-03-30"
BATCH = 2000
READ_CATEGORIES = ["user.name", "user.contact.email", "user.contact.address"]
DATABUNKER_IMPORT = 5800  # subjects/s per instance, Databunker Pro's published figure
DATABUNKER_P99_MS = 16.0  # ms, Databunker Pro's published p99 for a read


# ------------------------------------------------------------------------------ data
def email(i: int) -> str:
    return f"user{i}@example{i % 100}.com"


def attributes(i: int) -> dict[str, object]:
    return {
        "user.name": f"Person {i}",
        "user.contact.email": email(i),
        "user.contact.phone_number": f"+1415555{i % 10000:04d}",
        "user.contact.address": {"street": f"{i} Main St", "city": "Springfield", "postal_code": "12345"},
        "user.demographic.date_of_birth": "1990-01-01",
        "user.contact.organization": "ACME",
        "user.contact.url": "https://acme.example",
        "user.account.username": f"user{i}",
        "user.account.settings": {"visibility": "self", "cache_allowed": True},
        "user.privacy_preferences": {"promotional_email": False},
    }


def records(n: int, now: datetime) -> Iterator[NewSubject]:
    for i in range(n):
        yield NewSubject("customer", "eu", {"email": email(i)}, VERSION, attributes(i), now=now)


# ---------------------------------------------------------------------------- stores
@dataclass
class Backend:
    name: str
    make: Any  # () -> context manager yielding (data, keys) migrated engines


@contextmanager
def sqlite_stores() -> Iterator[tuple[Engine, Engine]]:
    with tempfile.TemporaryDirectory(prefix="fiduciary-bench-") as d:
        data = make_engine(f"sqlite:///{d}/fiduciary.db")
        keys = make_engine(f"sqlite:///{d}/keys.db", secure_delete=True)
        upgrade(data, "data")
        upgrade(keys, "keys")
        try:
            yield data, keys
        finally:
            data.dispose()
            keys.dispose()


@contextmanager
def pg_stores() -> Iterator[tuple[Engine, Engine]]:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"fiduciary_bench_vault_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    data, keys = (make_engine(admin.url.set(database=n).render_as_string(hide_password=False)) for n in names)
    try:
        upgrade(data, "data")
        upgrade(keys, "keys")
        yield data, keys
    finally:
        data.dispose()
        keys.dispose()
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means "not here"
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


# ---------------------------------------------------------------------------- import
def import_vault(data: Engine, keys: Engine, cp: CompiledPolicy, n: int, workers: int = 0) -> float:
    """The records are built before the clock starts: what is timed is the vault's work
    (building 50k NewSubject objects costs the bench ~30 us each on a slow day)."""
    vault = Vault(data, keys, Keyring.generate(), cp)
    ready = list(records(n, datetime.now(UTC)))
    t = time.perf_counter()
    done = vault.import_subjects(ready, batch_size=BATCH, workers=workers)
    elapsed = time.perf_counter() - t
    assert done == n
    return n / elapsed


def import_baseline(data: Engine, n: int) -> float:
    """The same rows, in clear, written the same set-based way; no key store."""
    subjects = _BulkInsert(data, T.subjects, _SUBJECT_COLS)
    identities = _BulkInsert(data, T.identities, _IDENTITY_COLS)
    attrs = _BulkInsert(data, T.attributes, _ATTRIBUTE_COLS)
    dialect = data.dialect
    proc = T.attributes.c.collected_at.type.dialect_impl(dialect).bind_processor(dialect)
    now = datetime.now(UTC)
    ts = proc(now) if proc else now
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    given = [(email(i), attributes(i)) for i in range(n)]  # built before the clock, as for the vault
    t = time.perf_counter()
    for start in range(0, n, BATCH):
        s_rows, i_rows, a_rows = [], [], []
        prefix = secrets.token_hex(8)  # ids as the vault makes them (locality per batch)
        for i in range(start, min(n, start + BATCH)):
            sid = new_subject_id(prefix)
            s_rows.append((sid, "customer", "eu", "active", "unknown", VERSION, ts, ts))
            address, values = given[i]
            e = address.encode()
            i_rows.append(("email", e, sid, e))
            for category, value in values.items():
                a_rows.append((sid, category, dumps(value).encode(), "subject", None, VERSION, ts, ts))
        with data.begin() as conn:
            subjects(conn, s_rows)
            identities(conn, i_rows)
            attrs(conn, a_rows)
    return n / (time.perf_counter() - t)


def bench_import(backend: Backend, cp: CompiledPolicy, n: int) -> None:
    with backend.make() as (data, keys):
        rate = import_vault(data, keys, cp, n)
    with backend.make() as (data, keys):
        rate_w = import_vault(data, keys, cp, n, workers=1)
    with backend.make() as (data, _keys):
        base = import_baseline(data, n)
    print(f"  import {n:,} subjects x 10 encrypted attributes: {rate:10,.0f} subjects/s")
    print(f"  the same, workers=1 (encryption in a 2nd process): {rate_w:10,.0f} subjects/s")
    rate = max(rate, rate_w)
    share = f"(the faster vault line = {rate / base:.0%} of it)"
    print(f"  baseline, same rows in clear, same method:      {base:10,.0f} subjects/s  {share}")
    print(
        f"  reference, Databunker Pro (published):          {DATABUNKER_IMPORT:10,} subjects/s per instance"
    )


# ------------------------------------------------------------------------------ read
def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def bench_read(backend: Backend, cp: CompiledPolicy, subjects: int, lookups: int) -> None:
    ring = Keyring.generate()
    with backend.make() as (data, keys):
        vault = Vault(data, keys, ring, cp)
        now = datetime.now(UTC)
        t = time.perf_counter()
        vault.import_subjects(records(subjects, now), batch_size=BATCH)
        built = time.perf_counter() - t
        print(f"  built {subjects:,} subjects in {built:,.0f} s ({subjects / built:,.0f}/s)")
        if data.dialect.name == "postgresql":
            # As an operator would after a bulk load: otherwise autovacuum works through
            # the new rows during the first lookups, and they pay for it.
            for engine in (data, keys):
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("VACUUM ANALYZE"))
        rng = random.Random(42)
        picks = [rng.randrange(subjects) for _ in range(lookups)]
        # warm-up: the first lookups pay for connections and statement compilation
        for i in picks[:200]:
            vault.read(vault.find("email", email(i)) or "", READ_CATEGORIES)

        times: list[float] = []
        for i in picks:
            spelled = email(i).capitalize().replace("@example", "@Example")
            t = time.perf_counter()
            sid = vault.find("email", spelled)
            assert sid is not None
            got = vault.read(sid, READ_CATEGORIES)
            times.append((time.perf_counter() - t) * 1000)
            assert len(got) == 3

        # baselines: the same two indexed SELECTs, no normalization, key or decryption;
        # through the driver on one pooled connection, and through SQLAlchemy Core
        ic, ac = T.identities.c, T.attributes.c
        indexes = [(i, blind_index(ring.index_key, "email", email(i))) for i in picks]
        mark = "?" if data.dialect.paramstyle == "qmark" else "%s"
        find_sql = f"SELECT subject_id FROM identities WHERE kind = {mark} AND blind_index = {mark}"
        read_sql = (
            f"SELECT category, value FROM attributes WHERE subject_id = {mark} "
            f"AND category IN ({', '.join([mark] * len(READ_CATEGORIES))})"
        )
        driver: list[float] = []
        for _, bi in indexes:
            t = time.perf_counter()
            raw = data.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute(find_sql, ("email", bi))
                (sid,) = cur.fetchone()
                cur.execute(read_sql, (sid, *READ_CATEGORIES))
                rows = cur.fetchall()
                cur.close()
            finally:
                raw.close()
            driver.append((time.perf_counter() - t) * 1000)
            assert len(rows) == 3
        base: list[float] = []
        for _, bi in indexes:
            t = time.perf_counter()
            with data.connect() as conn:
                sid = conn.execute(
                    select(ic.subject_id).where(ic.kind == "email", ic.blind_index == bi)
                ).scalar_one()
                rows = conn.execute(
                    select(ac.category, ac.value).where(
                        ac.subject_id == sid, ac.category.in_(READ_CATEGORIES)
                    )
                ).all()
            base.append((time.perf_counter() - t) * 1000)
            assert len(rows) == 3
    print(f"  find(email) + read(3 categories), {lookups:,} random lookups among {subjects:,} subjects:")
    print(
        f"    vault:    p50 {pct(times, 0.5):6.3f} ms   p99 {pct(times, 0.99):6.3f} ms   "
        f"max {max(times):6.2f} ms   mean {statistics.fmean(times):6.3f} ms"
    )
    print(
        f"    baseline: p50 {pct(driver, 0.5):6.3f} ms   p99 {pct(driver, 0.99):6.3f} ms   "
        f"max {max(driver):6.2f} ms   (the 2 SELECTs in clear, through the driver)"
    )
    print(
        f"    baseline: p50 {pct(base, 0.5):6.3f} ms   p99 {pct(base, 0.99):6.3f} ms   "
        f"max {max(base):6.2f} ms   (the same through SQLAlchemy Core)"
    )
    print(f"    reference, Databunker Pro (published): p99 {DATABUNKER_P99_MS:.0f} ms")


# ----------------------------------------------------------------------------- erase
def wide_policy(cp: CompiledPolicy, extra: int) -> CompiledPolicy:
    """The voiceapi policy with ``extra`` more categories, for subjects holding 1,000."""
    cats: dict[str, Category | None] = dict(cp.policy.categories)
    for i in range(extra):
        cats[f"user.content.private.item_{i:04d}"] = Category(name=f"Item {i}")
    return compile_policy(cp.policy.model_copy(update={"categories": cats}))


def bench_erase(backend: Backend, cp: CompiledPolicy, runs: int) -> None:
    wide = wide_policy(cp, 1000)
    small_cats = list(attributes(0))
    big_cats = [f"user.content.private.item_{i:04d}" for i in range(1000)]
    now = datetime.now(UTC)
    with backend.make() as (data, keys):
        vault = Vault(data, keys, Keyring.generate(), wide)
        # a store that is not empty: 20,000 ordinary subjects around the measured ones
        vault.import_subjects(records(20_000, now), batch_size=BATCH)
        small = [
            NewSubject(
                "customer",
                "eu",
                {"email": f"small{i}@example.org"},
                VERSION,
                {c: f"value {i} {c}" for c in small_cats},
                now=now,
            )
            for i in range(runs)
        ]
        big = [
            NewSubject(
                "customer",
                "eu",
                {"email": f"big{i}@example.org"},
                VERSION,
                {c: f"value {i} {c}" for c in big_cats},
                now=now,
            )
            for i in range(runs)
        ]
        vault.import_subjects(small, batch_size=100)
        vault.import_subjects(big, batch_size=20)
        ids_small = vault.find_many("email", [f"small{i}@example.org" for i in range(runs)])
        ids_big = vault.find_many("email", [f"big{i}@example.org" for i in range(runs)])
        t_small: list[float] = []
        t_big: list[float] = []
        for i in range(runs):  # interleaved, so that drift affects both alike
            for ids, out, prefix in ((ids_small, t_small, "small"), (ids_big, t_big, "big")):
                sid = ids[f"{prefix}{i}@example.org"]
                t = time.perf_counter()
                vault.erase(sid)
                out.append((time.perf_counter() - t) * 1000)
        with data.connect() as conn:
            ac = T.attributes.c
            left = conn.execute(
                select(ac.subject_id).where(ac.subject_id.in_(list(ids_big.values())[:50]))
            ).all()
        assert not left
    ratio = statistics.median(t_big) / statistics.median(t_small)
    print(f"  erase, {runs} subjects of each size (store of 20,000 subjects):")
    print(
        f"    10 attributes:    median {statistics.median(t_small):6.2f} ms   p90 {pct(t_small, 0.9):6.2f} ms"
    )
    print(f"    1,000 attributes: median {statistics.median(t_big):6.2f} ms   p90 {pct(t_big, 0.9):6.2f} ms")
    print(f"    ratio of medians (1,000 / 10): {ratio:.2f}")


# ------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="subjects for the import test")
    ap.add_argument("--subjects", type=int, default=1_000_000, help="subjects in the store for the read test")
    ap.add_argument("--lookups", type=int, default=10_000)
    ap.add_argument("--erase-runs", type=int, default=100)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--only", default="import,read,erase")
    args = ap.parse_args()

    cp = compile_policy(load_policy(ROOT / "examples/voiceapi/policy.yaml"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {platform.machine()}, "
        f"load average {load:.2f}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    backends: list[Backend] = []
    for name in args.backends.split(","):
        if name == "sqlite":
            backends.append(Backend("SQLite", sqlite_stores))
        elif name == "postgresql":
            why = pg_reachable()
            if why:
                print(f"PostgreSQL skipped: {PG_ADMIN_URL} unreachable ({why})")
            else:
                backends.append(Backend("PostgreSQL", pg_stores))
    only = set(args.only.split(","))
    for backend in backends:
        print(f"\n== {backend.name}")
        if "import" in only:
            bench_import(backend, cp, args.n)
        if "read" in only:
            bench_read(backend, cp, args.subjects, args.lookups)
        if "erase" in only:
            bench_erase(backend, cp, args.erase_runs)


if __name__ == "__main__":
    main()
