"""A retention sweep of 1,000,000 expired rows on PostgreSQL (issue 6).

Target: >= 100,000 rows/s for the whole sweep (plan, job, every batch, the finish), and a
sweep killed halfway resumes without touching a row twice (that part is a test:
tests/test_retention_resume.py).

What runs, in one process, against the local PostgreSQL:

0. The database ``fiduciary_bench_retention`` (created afresh, dropped at the end unless
   ``--keep``): Fiduciary's data and key stores in its ``public`` schema, and
   examples/projects' app tables in a schema ``app`` (the policy's ``projects_db``).
   ``access_logs`` gets ``--rows`` (1,000,000) lines older than six months, interleaved
   with ``--rows``/5 lines from the last day, which no rule touches yet.
1. The sweep: ``Retention(fid, connections={"projects_db": ...}).run()`` with the
   example's own policy (``log_delete``: access log lines go after six months, PLA-3).
   The truncation rule is marked as swept up to a week ago, as a daily sweep leaves it,
   so this run deletes and nothing else. Timed from the plan to the end of the job;
   the plan (one count, one window query) is timed apart too.
2. Baseline: the same rows (reloaded) deleted by ONE plain ``DELETE ... WHERE
   requested_at < cutoff``: what PostgreSQL itself does, without batches, resumability
   or bookkeeping.
3. Baseline: a row-at-a-time delete (one statement per row, as Fides erases), on
   ``--naive`` rows.
4. Truncation, for the record: ``--truncate`` rows (default ``--rows``/5) between a week
   and six months old, truncated (IP to its network, user agent to its family).

    python bench/retention.py [--rows 1000000] [--batch 20000] [--naive 20000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy, load_example_app
from fiduciary.retention import Retention
from fiduciary.store import make_engine
from fiduciary.vault.keyring import Keyring

ADMIN = os.environ.get("FIDUCIARY_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB = "fiduciary_bench_retention"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


def load(app: Engine, expired: int, *, fresh_every: int = 6, age: str = "400 days") -> tuple[int, int]:
    """``expired`` lines ``age`` old and one fresh line (an hour old) after every
    ``fresh_every - 1`` of them; returns (expired, fresh)."""
    total = expired * fresh_every // (fresh_every - 1)
    with app.begin() as conn:
        conn.execute(text("TRUNCATE access_logs"))
        conn.execute(
            text(
                "INSERT INTO access_logs (id, user_id, requested_at, ip_address, user_agent, referrer, path) "
                "SELECT i, NULL, CASE WHEN i % :k = 0 THEN now() - interval '1 hour' "
                f"ELSE now() - interval '{age}' + (i % 86400) * interval '1 second' END, "
                "'203.0.' || (i % 256) || '.' || (1 + i % 250), :ua, 'https://www.google.com/', '/projects' "
                "FROM generate_series(1, :n) AS i"
            ),
            {"k": fresh_every, "n": total, "ua": UA},
        )
    with app.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE access_logs"))
    with app.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM access_logs")).scalar_one()
    return total - total // fresh_every, int(n) - (total - total // fresh_every)


def count(app: Engine) -> int:
    with app.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM access_logs")).scalar_one())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--naive", type=int, default=20_000)
    ap.add_argument("--truncate", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the bench database")
    args = ap.parse_args()

    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:  # a fresh database each run: nothing left from an earlier one
        conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{DB}"'))
    url = make_url(ADMIN).set(database=DB)
    store_url = url.render_as_string(hide_password=False)
    app_url = url.update_query_dict({"options": "-csearch_path=app"}).render_as_string(hide_password=False)
    try:
        boot = make_engine(store_url)
        with boot.begin() as conn:
            conn.execute(text("CREATE SCHEMA app"))
        boot.dispose()
        app = make_engine(app_url)
        load_example_app("projects").metadata.create_all(app)
        fid = Fiduciary.open(
            example_policy("projects"),
            database_url=store_url,
            keys_database_url=store_url,
            keyring=Keyring.generate(),
        )
        print(f"python {platform.python_version()}, {os.cpu_count()} cores, PostgreSQL at {url.host}")
        with app.connect() as conn:
            print(conn.execute(text("SELECT version()")).scalar_one().split(",")[0])

        # 1. The sweep.
        started = time.perf_counter()
        expired, fresh = load(app, args.rows)
        print(
            f"loaded {expired:,} expired + {fresh:,} fresh log lines in {time.perf_counter() - started:.1f} s"
        )
        now = datetime.now(UTC)
        with fid.data.begin() as conn:  # a daily sweep truncated up to a week ago yesterday
            conn.execute(
                text(
                    "INSERT INTO retention_marks (rule, target, cutoff, job_id, at) "
                    "VALUES ('log_truncate', 'projects_db.access_logs', :c, 'bench', :c)"
                ),
                {"c": now - timedelta(days=7)},
            )
        with Retention(fid, connections={"projects_db": app}, batch_size=args.batch) as r:
            t0 = time.perf_counter()
            plan = r.plan(now)
            t_plan = time.perf_counter() - t0
            due = {(t.rule, t.target): t for t in plan.tasks}
            task = due["log_delete", "projects_db.access_logs"]
            assert task.count == expired, (task.count, expired)
            t0 = time.perf_counter()
            st = r.run(now, timeout=3600)
            t_sweep = time.perf_counter() - t0
            assert st.status == "done", st.error
        left = count(app)
        assert left == fresh, (left, fresh)
        rate = expired / t_sweep
        print(
            f"sweep: {expired:,} rows deleted in {t_sweep:.2f} s = {rate:,.0f} rows/s "
            f"({len(task.batches)} batches of {args.batch:,}, {st.total} steps; plan {t_plan * 1000:.0f} ms) "
            f"target >= 100,000 rows/s: {'met' if rate >= 100_000 else 'NOT met'}"
        )

        # 2. Baseline: one plain DELETE.
        expired, fresh = load(app, args.rows)
        t0 = time.perf_counter()
        with app.begin() as conn:
            n = conn.execute(
                text("DELETE FROM access_logs WHERE requested_at < :c"), {"c": now - timedelta(days=183)}
            ).rowcount
        t_one = time.perf_counter() - t0
        print(f"baseline, one DELETE statement: {n:,} rows in {t_one:.2f} s = {n / t_one:,.0f} rows/s")

        # 3. Baseline: a statement per row.
        ids = list(range(1, args.naive * 6 // 5 + 1))
        expired, fresh = load(app, args.rows)
        t0 = time.perf_counter()
        n = 0
        with app.begin() as conn:
            for i in ids:
                if i % 6:
                    n += conn.execute(text("DELETE FROM access_logs WHERE id = :i"), {"i": i}).rowcount
        t_row = time.perf_counter() - t0
        print(
            f"baseline, one DELETE per row (as Fides erases): {n:,} rows in {t_row:.2f} s "
            f"= {n / t_row:,.0f} rows/s"
        )

        # 4. Truncation: lines between a week and six months old.
        rows = args.truncate if args.truncate is not None else args.rows // 5
        expired, fresh = load(app, rows, age="30 days")
        with fid.data.begin() as conn:
            conn.execute(text("DELETE FROM retention_marks"))
        with Retention(fid, connections={"projects_db": app}, batch_size=args.batch) as r:
            t0 = time.perf_counter()
            st = r.run(timeout=3600)
            t_trunc = time.perf_counter() - t0
            assert st.status == "done", st.error
            summary = r.sweeps(1)[0]["summary"]
        updated = summary["log_truncate"]["projects_db.access_logs"]["updated"]
        assert updated == expired, (updated, expired)
        print(f"truncation: {updated:,} rows truncated in {t_trunc:.2f} s = {updated / t_trunc:,.0f} rows/s")
        fid.close()
        app.dispose()
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
