"""Consent ledger appends per second, state maintained (target: >= 10,000/s).

Prints, for SQLite (a temp file, WAL) and PostgreSQL (a temp database; skipped when
unreachable):
- record_many(): batches of --batch events, one transaction each, validation, the
  consent_state upsert included;
- record(): one event per transaction (what an API call costs);
- rebuild(): consent_state recomputed from every event (events read per second);
- baseline: a raw executemany of the same, already prepared rows into consent_events
  alone, no validation, no state: the floor the ledger's bookkeeping is measured against.

    python bench/consent.py [--events 20000] [--batch 1000] [--single 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, create_engine, delete, insert, text

from fiduciary.consent import ConsentLedger, NewEvent, truncate_ip
from fiduciary.policy import compile_policy, load_policy
from fiduciary.store import make_engine, tables, upgrade

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("FIDUCIARY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NOTICE = "We send a monthly newsletter about new features. Unsubscribe at any time."
SUBJECTS = 5000

# A realistic mix: consents and withdrawals, objections, GPC opt-outs, settings.
MIX = [
    ("consent_given", "newsletter", None, "web_form"),
    ("consent_given", "ad_targeting", None, "web_form"),
    ("consent_withdrawn", "newsletter", None, "email_link"),
    ("objection", "*", None, "privacy_center"),
    ("objection", "usage_analytics", None, "privacy_center"),
    ("sale_opt_out", "sale", None, "gpc_signal"),
    ("setting", "cache_allowed", "true", "account_settings"),
    ("version_accepted", "*", "2", "privacy_center"),
]


def make_events(n: int, version: str, start: datetime) -> list[NewEvent]:
    out = []
    for i in range(n):
        kind, scope, value, channel = MIX[i % len(MIX)]
        out.append(
            NewEvent(
                subject_id=f"s{i % SUBJECTS:05d}",
                kind=kind,
                scope=scope,
                value=value,
                channel=channel,
                policy_version=version,
                notice_text=NOTICE if kind == "consent_given" else None,
                language="en",
                ip=f"203.0.{i % 250}.{i % 200 + 1}",
                at=start + timedelta(microseconds=i),
            )
        )
    return out


def raw_rows(events: list[NewEvent]) -> list[dict[str, object]]:
    """The rows record_many would write, prepared up front (hash and IP done)."""
    digest = hashlib.sha256(NOTICE.encode()).hexdigest()
    return [
        {
            "subject_id": e.subject_id,
            "kind": str(e.kind),
            "scope": e.scope,
            "value": e.value,
            "at": e.at,
            "policy_version": e.policy_version,
            "notice_hash": digest if e.notice_text else None,
            "language": e.language,
            "method": None,
            "channel": e.channel,
            "ip": truncate_ip(e.ip) if e.ip else None,
            "expires_at": None,
            "actor": None,
        }
        for e in events
    ]


@contextmanager
def sqlite_store() -> Iterator[Engine]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine, "data")
        yield engine
        engine.dispose()


@contextmanager
def pg_store() -> Iterator[Engine | None]:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"fiduciary_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # unreachable, no rights ...: report and skip
        print(f"  PostgreSQL skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        admin.dispose()
        yield None
        return
    engine = make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
    try:
        upgrade(engine, "data")
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(delete(tables.consent_state))
        conn.execute(delete(tables.consent_events))


def timed(label: str, n: int, fn: Callable[[], object], baseline: float | None = None) -> float:
    t = time.perf_counter()
    fn()
    rate = n / (time.perf_counter() - t)
    extra = f"   {rate / baseline:5.2f}x baseline" if baseline else ""
    print(f"  {label:<52} {rate:>10,.0f} /s{extra}")
    return rate


def run(engine: Engine, args: argparse.Namespace) -> None:
    cp = compile_policy(load_policy(ROOT / "examples" / "dataplatform" / "policy.yaml"))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(tables.subjects),
            [
                {
                    "id": f"s{i:05d}",
                    "kind": "user",
                    "jurisdiction": "eu",
                    "policy_version": cp.version,
                    "created_at": now,
                }
                for i in range(SUBJECTS)
            ],
        )
    ledger = ConsentLedger(engine, cp)
    events = make_events(args.events, cp.version, now)
    rows = raw_rows(events)
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    row_batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]

    def baseline() -> None:
        for chunk in row_batches:
            with engine.begin() as conn:
                conn.execute(insert(tables.consent_events), chunk)

    def bulk() -> None:
        for chunk in batches:
            ledger.record_many(chunk)

    def single() -> None:
        for e in events[: args.single]:
            ledger.record(
                e.subject_id,
                e.kind,
                e.scope,
                value=e.value,
                channel=e.channel,
                policy_version=e.policy_version,
                notice_text=e.notice_text,
                language=e.language,
                ip=e.ip,
                now=e.at,
            )

    reset(engine)
    base = timed(f"baseline: raw executemany, batches of {args.batch}", len(rows), baseline)
    reset(engine)
    timed(f"record_many, batches of {args.batch} (target >= 10,000)", len(events), bulk, base)
    timed("rebuild() of every subject's state (events read)", len(events), ledger.rebuild)
    reset(engine)
    base1 = timed(
        "baseline: raw insert, one per transaction",
        args.single,
        lambda: [_one(engine, r) for r in rows[: args.single]],
    )
    reset(engine)
    timed("record, one per transaction", args.single, single, base1)


def _one(engine: Engine, row: dict[str, object]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(tables.consent_events), row)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--single", type=int, default=2000)
    args = ap.parse_args()
    print(
        f"consent ledger: {args.events:,} events over {SUBJECTS:,} subjects; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d}, "
        f"load average {os.getloadavg()[0]:.1f} (other work on the machine lowers every figure)\n"
    )
    print("SQLite (file, WAL, synchronous=NORMAL):")
    with sqlite_store() as engine:
        run(engine, args)
    print("\nPostgreSQL:")
    with pg_store() as pg:
        if pg is not None:
            run(pg, args)


if __name__ == "__main__":
    main()
