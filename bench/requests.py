"""Rights requests over examples/filelocker's app database with 1,000,000 subjects.

Targets (issue 4), on the real PostgreSQL: one access request end to end (plan, fetch,
package) <= 50 ms; one erasure (find, mask, verify, notify, shred) <= 100 ms; <= 20
bookkeeping statements (Fiduciary's own stores) per request; 10,000 erasures submitted
together finish in <= 60 s.

What runs, in one process:

0. The company's database: examples/filelocker's 10 tables, seeded by the example's own
   generator (``app.create``) into ``fiduciary_bench_filelocker`` (``..._<size>`` for other
   sizes). Built once (about 8 minutes for 1,000,000 accounts, 17.2 million rows) and
   reused while it holds the accounts; ``--rebuild`` starts again. Fiduciary's own stores
   (data + keys) are two fresh PostgreSQL databases, created here and dropped at the end.
1. Access requests, one at a time, through the public library path: ``RequestDesk.submit``
   and ``verify_code`` (the code read from an in-memory mailer), then the run: the
   ``RequestRunner`` when it exists, else ``desk.start`` -> ``build_plan`` ->
   ``SQLConnector.find`` -> vault read + consent proofs -> ``build_access_package`` ->
   ``desk.finish`` (the output says which).
2. Erasures, one at a time, the same way: intake, then ``build_plan`` ->
   ``SQLConnector.mask`` (find, mask, verification pass, one transaction) -> notify (no
   recipient connector is configured here: none) -> ``Vault.erase`` (crypto-shred) ->
   ``desk.finish``.
3. The naive baseline, measured on the same database: the same erasure row by row, as
   Fides does it: per user, one SELECT per collection, then one UPDATE (or DELETE, where
   the policy deletes the row) per row. It runs in a transaction that is rolled back, so
   the baseline consumes no accounts (and saves itself the commit). The published Fides
   2.78.2 figures are printed beside it as reference numbers.
4. A batch: ``--batch`` (10,000) erasures submitted and verified one by one (intake, timed
   apart), then run together: through the runner, ONE job for them all; without it,
   ``start_many``, ONE plan, ``SQLConnector.mask`` per chunk of ``--chunk`` requests
   (set-based statements, one transaction each), one ``Vault.erase_many``,
   ``finish_many``. Target: the run <= 60 s.

``--path runner`` (the default once the runner exists) or ``--path direct`` (the runner's
library calls made in turn, without a job: shows what the job machinery costs). Each
section prints the time of every part (the runner's steps from their finish times) and the
bookkeeping statements per table.

SQL statements are counted with SQLAlchemy ``before_cursor_execute`` listeners, apart for
the company's database ("company") and for Fiduciary's data and key stores
("bookkeeping"); an executemany counts once per cursor call, and so does each COPY the
audit log or the vault runs on psycopg's own cursor (counted by wrapping ``Cursor.copy``).
The run's statements on our stores are also split by table: those on the person's own data
(the vault's subjects, identities, attributes and keys, the consent ledger, disclosures:
what an access reads and an erasure crypto-shreds) and the bookkeeping (requests, events,
keys, jobs, steps, the audit chain, files). After a job has ended, the bench reads its
status for the steps' times; that read is the bench's, not the request's, and is not
counted.

Accounts are not used up across runs unnoticed: every user picked for an erasure is one
whose email is still the generated ``user<id>@example.com`` (an erased account's email is
an HMAC), picked at random with a seed printed in the output, so each run erases accounts
no earlier run erased (about 10,100 per run: a 1M database lasts ~95 runs; the output says
how many are left, and ``--rebuild`` restores them).

    python bench/requests.py [--size 1000000] [--rebuild] [--runs 30] [--batch 10000]
                             [--chunk 1000] [--naive 5] [--only access,erase,naive,batch]
                             [--path auto|runner|direct] [--seed N]
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import re
import secrets
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, or_, select, text, update
from sqlalchemy.sql import column, table

from fiduciary.connectors.sql import SQLConnector
from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy, load_example_app
from fiduciary.mail import Mailer
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import RequestType
from fiduciary.requests.lifecycle import RequestDesk
from fiduciary.requests.masking import MaskContext, field_rules, strategy_for
from fiduciary.requests.package import PackageRequest, build_access_package
from fiduciary.requests.plan import Plan, build_plan
from fiduciary.vault import Keyring, NewSubject

PG_ADMIN_URL = os.environ.get(
    "FIDUCIARY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
APP_DB = "fiduciary_bench_filelocker"
FULL_SIZE = 1_000_000
DATASTORE = "filelocker_db"
ROOT = f"{DATASTORE}.users"  # the identity root: every other row hangs off an account
REGION = "NL"  # put.io's own jurisdiction: GDPR, codes by email for access and erasure
# An erased account's email is an HMAC: one that still reads as generated was never erased.
NEVER_ERASED = "email = 'user' || id::text || '@example.com'"
WARMUP = 3  # requests of each kind run first and left out (template and plan caches)

# Fides 2.78.2, published for this kind of machine (2 cores) against a 10-table,
# 1,000,000-user file-locker database: reference numbers, not measured here.
FIDES_ACCESS_S = 1.44
FIDES_ERASE_S = 2.8
FIDES_ACCESS_STMTS = 1_200
FIDES_ERASE_STMTS = 2_470

TARGET_ACCESS_MS = 50.0
TARGET_ERASE_MS = 100.0
TARGET_BOOKKEEPING = 20
TARGET_BATCH_S = 60.0
# Tables of our stores that hold the person's own data (what an access reads, an erasure
# shreds), as opposed to the bookkeeping of requests, jobs and the audit trail.
PERSONAL_TABLES = frozenset(
    {"subjects", "identities", "attributes", "subject_keys", "consent_events", "disclosures"}
)


# --------------------------------------------------------------------------- counting


class Statements:
    """SQL statements sent, per side: the company's database and Fiduciary's own stores.

    A statement is one cursor execution as SQLAlchemy sees it (an executemany counts once),
    plus each COPY run on the driver's own cursor (the audit log and the vault write large
    batches that way), which SQLAlchemy does not see: ``watch_copy`` counts those from
    psycopg itself."""

    _TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|COPY)\s+\"?(\w+)", re.IGNORECASE)

    def __init__(self) -> None:
        self.n = {"company": 0, "bookkeeping": 0}
        self.tally: Counter[str] | None = None  # bookkeeping statements by table, when set
        self.paused = False

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Not counted: the bench's own reads (the job's status, for the steps' times)."""
        self.paused = True
        try:
            yield
        finally:
            self.paused = False

    def count(self, side: str, statement: str) -> None:
        if self.paused:
            return
        self.n[side] += 1
        if side == "bookkeeping" and self.tally is not None:
            found = self._TABLE.search(statement)
            self.tally[found.group(1) if found else statement.split(None, 2)[:2][-1]] += 1

    def watch(self, engine: Engine, side: str) -> None:
        def count(_c: object, _cur: object, statement: str, *_: object) -> None:
            self.count(side, statement)

        event.listen(engine, "before_cursor_execute", count)

    def watch_copy(self, sides: Mapping[str, str]) -> None:
        """Count COPY statements too, by database name -> side."""
        import psycopg

        original = psycopg.Cursor.copy

        def copy(cur: Any, statement: Any, *a: Any, **kw: Any) -> Any:
            side = sides.get(cur.connection.info.dbname)
            if side is not None:
                self.count(side, str(statement))
            return original(cur, statement, *a, **kw)

        psycopg.Cursor.copy = copy  # type: ignore[method-assign]

    def snap(self) -> tuple[int, int]:
        return self.n["company"], self.n["bookkeeping"]


@dataclass
class Sample:
    ms: float
    company: int
    bookkeeping: int


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    def ms(self) -> list[float]:
        return [s.ms for s in self.samples]

    def median(self) -> float:
        return statistics.median(self.ms())

    def p95(self) -> float:
        return pct(self.ms(), 0.95)

    def stmts(self, side: str) -> str:
        values = sorted(getattr(s, side) for s in self.samples)
        lo, hi = values[0], values[-1]
        return f"{lo}" if lo == hi else f"{lo}-{hi}"


@contextmanager
def measure(stmts: Statements, into: Series) -> Iterator[None]:
    c0, b0 = stmts.snap()
    t0 = time.perf_counter()
    yield
    ms = (time.perf_counter() - t0) * 1000
    c1, b1 = stmts.snap()
    into.samples.append(Sample(ms, c1 - c0, b1 - b0))


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------- databases


def app_db_name(size: int) -> str:
    # Smaller runs get their own database, so a quick run never costs the 1M build.
    return APP_DB if size == FULL_SIZE else f"{APP_DB}_{size}"


def _url(admin: Engine, database: str) -> str:
    return admin.url.set(database=database).render_as_string(hide_password=False)


def app_database(admin: Engine, app: ModuleType, size: int, *, rebuild: bool) -> tuple[Engine, str]:
    """The filelocker app database with ``size`` accounts: reused when it already holds
    them, else (or with ``rebuild``) created and seeded with the example's own generator."""
    name = app_db_name(size)
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    held = -1
    if exists and not rebuild:
        engine = create_engine(_url(admin, name))
        with engine.connect() as conn:
            has_users = conn.execute(text("SELECT to_regclass('public.users') IS NOT NULL")).scalar()
            if has_users:
                # The seed runs in one transaction (tables and rows), so the users table
                # exists only when every table was filled; erasure masks users, never
                # deletes them, so the count stays the size it was built with.
                held = int(conn.execute(text("SELECT count(*) FROM users")).scalar_one())
        if held == size:
            return engine, f"reused {name} ({held:,} accounts)"
        engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(_url(admin, name))
    started = time.perf_counter()
    counts = app.create(engine, size, seed=0)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    took = time.perf_counter() - started
    rows = sum(counts.values())
    return engine, f"built {name}: {size:,} accounts, {rows:,} rows in 10 tables, {took:.0f} s"


def describe_app(engine: Engine, app: ModuleType) -> tuple[str, int]:
    """Rows per table (the planner's estimates: exact counts of 17M rows take seconds) and
    how many accounts were never erased."""
    names = [t.name for t in app.metadata.sorted_tables]
    with engine.connect() as conn:
        est = dict(
            conn.execute(
                text("SELECT relname, reltuples::bigint FROM pg_class WHERE relname = ANY(:n)"),
                {"n": names},
            ).all()
        )
        fresh = int(conn.execute(text(f"SELECT count(*) FROM users WHERE {NEVER_ERASED}")).scalar_one())
        size = conn.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
    total = sum(int(v) for v in est.values())
    per = ", ".join(f"{n} {int(est.get(n, 0)):,}" for n in names)
    return f"~{total:,} rows, {size} ({per})", fresh


def pick_fresh(engine: Engine, size: int, want: int, rng: random.Random) -> list[int]:
    """``want`` distinct random accounts never erased (email still the generated one)."""
    chosen: list[int] = []
    seen: set[int] = set()
    with engine.connect() as conn:
        while len(chosen) < want:
            if len(seen) >= size:
                raise SystemExit(
                    f"only {len(chosen):,} accounts left that were never erased, {want:,} needed: "
                    "run again with --rebuild"
                )
            ask = min(size - len(seen), max(1000, (want - len(chosen)) * 2))
            batch: list[int] = []
            while len(batch) < ask:
                uid = rng.randint(1, size)
                if uid not in seen:
                    seen.add(uid)
                    batch.append(uid)
            ok = conn.execute(
                text(f"SELECT id FROM users WHERE id = ANY(:ids) AND {NEVER_ERASED}"),
                {"ids": batch},
            ).scalars()
            good = set(ok)
            chosen.extend(u for u in batch if u in good)
    return chosen[:want]


def email_of(uid: int) -> str:
    return f"user{uid}@example.com"


@contextmanager
def our_stores(admin: Engine) -> Iterator[tuple[str, str]]:
    """Two fresh PostgreSQL databases for Fiduciary's data and key stores; dropped after."""
    tag = uuid.uuid4().hex[:10]
    names = [f"fiduciary_bench_req_{store}_{tag}" for store in ("data", "keys")]
    with admin.connect() as conn:
        for n in names:
            conn.execute(text(f'CREATE DATABASE "{n}"'))
    try:
        yield _url(admin, names[0]), _url(admin, names[1])
    finally:
        with admin.connect() as conn:
            for n in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)'))


# --------------------------------------------------------------------------- the library path


class MemoryMailer(Mailer):
    """Keeps the last code mailed to each address, so the bench can type it in."""

    _CODE = re.compile(r"verification code: (\d+)")

    def __init__(self) -> None:
        super().__init__()
        self.codes: dict[str, str] = {}
        self.sent = 0

    def deliver(self, msg: EmailMessage, at: datetime | None = None) -> None:
        self.sent += 1
        found = self._CODE.search(str(msg["Subject"]))
        if found:
            self.codes[str(msg["To"])] = found.group(1)

    @property
    def describe(self) -> str:
        return "memory (bench)"


@dataclass
class Bench:
    cp: CompiledPolicy
    fid: Fiduciary
    desk: RequestDesk
    mailer: MemoryMailer
    connector: SQLConnector
    stmts: Statements
    erase_key: bytes
    runner: Any = None  # fiduciary.requests.runner.RequestRunner, when it exists
    subjects: dict[str, str] = field(default_factory=dict)  # email -> vault subject id

    def intake(self, kind: str, email: str) -> tuple[str, datetime]:
        """Submit and verify with the mailed code: what the privacy center does."""
        received = datetime.now(UTC)
        sub = self.desk.submit(kind, contact={"email": email}, region=REGION, now=received)
        self.desk.verify_code(sub.request_id, self.mailer.codes.pop(email))
        return sub.request_id, received

    def recipients_to_notify(self) -> list[str]:
        # Recipients reached through a connector (LAW-5). The bench configures none, so
        # the step finds nothing to do: "notify none".
        return []


def try_runner() -> type | None:
    """The RequestRunner class, when src/fiduciary/requests/runner.py exists."""
    try:
        module = importlib.import_module("fiduciary.requests.runner")
    except ImportError:
        return None
    cls = getattr(module, "RequestRunner", None)
    return cls if isinstance(cls, type) else None


def access_direct(b: Bench, rid: str, email: str, received: datetime, parts: dict[str, Series]) -> bytes:
    """One access request after verification, without the runner: start, plan, fetch,
    vault + consents, package, finish."""

    def part(label: str) -> Any:
        return measure(b.stmts, parts.setdefault(label, Series()))

    with part("desk.start"):
        b.desk.start(rid)
    with part("build_plan"):
        plan = build_plan(b.cp, ["email"])
    with part("SQLConnector.find"):
        found = b.connector.find(plan, {rid: {"email": [email]}})
        rows = found.for_request(rid)
    sid = b.subjects.get(email)
    vault: dict[str, object] = {}
    consents: list[dict[str, Any]] = []
    with part("Vault.read + ConsentLedger.proofs"):
        if sid is not None:
            vault = dict(b.fid.vault.read(sid, purpose="request_fulfilment", actor="request"))
            consents = b.fid.consent.proofs(sid)
    with part("build_access_package"):
        own = [k[0] for k, reqs in found.by_identity.get(ROOT, {}).items() if rid in reqs]
        request = PackageRequest(
            reference=rid,
            jurisdiction=b.cp.jurisdiction_for(REGION),
            received_at=received,
            request_type=RequestType.access,
            self_keys={ROOT: own},
            identities={"email": [email]},
            subject_id=sid,
        )
        package = build_access_package(
            b.cp, request=request, data=rows, vault=vault, consents=consents, generated_at=datetime.now(UTC)
        )
    with part("desk.finish"):
        b.desk.finish(rid, detail={"collections": len(rows), "rows": sum(len(r) for r in rows.values())})
    return package


def erase_direct(
    b: Bench, rids: Mapping[str, str], parts: dict[str, Series] | None = None, chunk: int = 1000
) -> int:
    """Erasures after verification, without the runner: start, one plan, mask (find,
    mask, verify) per chunk of requests, notify, shred, finish. ``rids``: request id ->
    email. Returns the verification failures (0 expected)."""
    into = parts if parts is not None else {}

    def part(label: str) -> Any:
        return measure(b.stmts, into.setdefault(label, Series()))

    ids = list(rids)
    with part("desk.start_many"):
        b.desk.start_many(ids)
    with part("build_plan"):
        plan = build_plan(b.cp, ["email"])
    failures = 0
    partial: dict[str, bool] = {}
    for i in range(0, len(ids), chunk):
        piece = ids[i : i + chunk]
        seeds = {rid: {"email": [rids[rid]]} for rid in piece}
        with part("SQLConnector.mask (find, mask, verify)"):
            result = b.connector.mask(plan, seeds, key=b.erase_key)
        for rid, r in result.requests.items():
            ok = r.verification is not None and r.verification.ok
            failures += 0 if ok else 1
            # Kept fields (tax records) make the answer a partial erasure, said so.
            partial[rid] = not ok or bool(r.verification and r.verification.leftovers)
    for _recipient in b.recipients_to_notify():
        pass  # no recipient connector configured in the bench
    sids = [b.subjects[rids[rid]] for rid in ids if rids[rid] in b.subjects]
    with part("Vault.erase_many (shred)"):
        if sids:
            b.fid.vault.erase_many(sids, actor="request")
    with part("desk.finish_many"):
        b.desk.finish_many(partial)
    return failures


def run_with_runner(
    b: Bench, rids: Sequence[str], parts: dict[str, Series] | None = None
) -> dict[str, float]:
    """One job for the requests; returns when it ended (the inline executor's thread ran
    it), with the seconds spent in ``RequestRunner.run`` (checks, requester details,
    planning, job creation, start) and in each step (from the steps' finish times)."""
    t0 = time.perf_counter()
    job = b.runner.run(list(rids), actor="bench")
    handed = datetime.now(UTC)
    took = {"RequestRunner.run()": time.perf_counter() - t0}
    b.runner.executor.wait_idle()  # the job has ended: what follows only reads its times
    with b.stmts.pause():
        st = b.runner.wait(job)
    if st.status != "done":
        raise SystemExit(f"job {job} ended {st.status}: {st.error}")
    prev = handed
    for step in st.steps:
        end = step.finished_at or prev
        took[f"step {step.kind}"] = max(0.0, (end - prev).total_seconds())
        prev = max(prev, end)
    if parts is not None:
        for k, sec in took.items():
            parts.setdefault(k, Series()).samples.append(Sample(sec * 1000, -1, -1))
    return took


def run_access(b: Bench, rid: str, email: str, received: datetime, parts: dict[str, Series]) -> None:
    if b.runner is not None:
        run_with_runner(b, [rid], parts)
    else:
        access_direct(b, rid, email, received, parts)


def run_erase(b: Bench, rids: Mapping[str, str], parts: dict[str, Series] | None, chunk: int) -> int:
    if b.runner is not None:
        run_with_runner(b, list(rids), parts)
        return 0
    return erase_direct(b, rids, parts, chunk)


# --------------------------------------------------------------------------- naive baseline


def naive_erase(conn: Connection, plan: Plan, email: str, key: bytes, counts: dict[str, int]) -> None:
    """One user's erasure as a row-by-row tool does it: one SELECT per collection (the
    user's identity, or IN the values of the rows found upstream), then, per row the user
    owns, one DELETE (collections the policy deletes) or one UPDATE of its masked fields.
    The same rules and masked values as the connector (``field_rules``, the strategies)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    owned: dict[str, list[dict[str, Any]]] = {}
    for node in plan.nodes:
        cols = {f.name: column(f.name) for f in node.fields if "." not in f.name}
        t = table(node.name, *cols.values())
        conds = []
        ident_fields: list[str] = []
        owning_links: list[tuple[str, set[str]]] = []
        for inp in node.inputs:
            if inp.identity is not None:
                conds.append(cols[inp.field] == email)
                ident_fields.append(inp.field)
                continue
            assert inp.source is not None and inp.source_field is not None
            values = [r[inp.source_field] for r in rows[inp.source] if r[inp.source_field] is not None]
            if values:
                conds.append(cols[inp.field].in_(values))
            if inp.owning:
                mine = {
                    str(r[inp.source_field]) for r in owned[inp.source] if r[inp.source_field] is not None
                }
                owning_links.append((inp.field, mine))
        found: list[dict[str, Any]] = []
        if conds:
            found = [dict(r._mapping) for r in conn.execute(select(*cols.values()).where(or_(*conds)))]
            counts["select"] += 1
        rows[node.collection] = found
        owned[node.collection] = [
            r
            for r in found
            if any(r.get(f) == email for f in ident_fields)
            or any(r.get(f) is not None and str(r[f]) in mine for f, mine in owning_links)
        ]
    for name in plan.erase_order:
        node = plan.node(name)
        rules = field_rules(node, plan.exemptions, (), "erase")
        pk_name = node.primary_key[0]
        t = table(node.name, *(column(f.name) for f in node.fields if "." not in f.name))
        pk = t.c[pk_name]
        for r in owned[name]:
            if rules.delete_row:
                conn.execute(delete(t).where(pk == r[pk_name]))
                counts["delete"] += 1
                continue
            values: dict[str, Any] = {}
            for fname, rule in rules.fields.items():
                if rule.kept or rule.strategy == "delete":
                    continue
                if rule.strategy in ("unlink", "null"):
                    new = None
                else:
                    ctx = MaskContext(
                        request_id="naive",
                        collection=name,
                        field=node.field(fname),
                        row_key=str(r[pk_name]),
                        value=r.get(fname),
                        configuration=rule.configuration or {},
                        key=key,
                    )
                    new = strategy_for(rule.strategy).value(ctx)
                if new != r.get(fname):
                    values[fname] = new
            if values:
                conn.execute(update(t).where(pk == r[pk_name]).values(values))
                counts["update"] += 1


# --------------------------------------------------------------------------- sections


def show(label: str, s: Series, target: str = "") -> None:
    company = s.stmts("company") if s.samples[0].company >= 0 else "-"
    bookkeeping = s.stmts("bookkeeping") if s.samples[0].bookkeeping >= 0 else "-"
    print(f"  {label:<46} {s.median():9.1f} {s.p95():9.1f}   {company:>9}   {bookkeeping:>9}  {target}")


def header() -> None:
    if hasattr(os, "getloadavg"):
        # Other work on the machine shows here: single-request times are sensitive to it.
        print(f"  (load average now {os.getloadavg()[0]:.2f})")
    print(f"  {'':<46} {'median ms':>9} {'p95 ms':>9}   {'company':>9}   {'bookkeep.':>9}")


def section_single(b: Bench, kind: str, users: list[int], warm: list[int]) -> None:
    """``len(users)`` requests of ``kind``, one after the other, each end to end."""
    intake, run, total = Series(), Series(), Series()
    parts: dict[str, Series] = {}
    tally: Counter[str] = Counter()  # the run's statements on our stores, by table
    intake_tally: Counter[str] = Counter()
    for n, uid in enumerate(warm + users):
        email = email_of(uid)
        counted = n >= len(warm)
        b.stmts.tally = intake_tally if counted else None
        c0, b0 = b.stmts.snap()
        t0 = time.perf_counter()
        i, r = Series(), Series()
        with measure(b.stmts, i):
            rid, received = b.intake(kind, email)
        b.stmts.tally = tally if counted else None
        with measure(b.stmts, r):
            if kind == "access":
                run_access(b, rid, email, received, parts if counted else {})
            else:
                run_erase(b, {rid: email}, parts if counted else {}, 1)
        if counted:
            intake.samples += i.samples
            run.samples += r.samples
            c1, b1 = b.stmts.snap()
            total.samples.append(Sample((time.perf_counter() - t0) * 1000, c1 - c0, b1 - b0))
    b.stmts.tally = None
    what = "access request" if kind == "access" else "erasure"
    print(f"\n== one {what}, {len(users)} random accounts never erased ({WARMUP} warm-up runs left out)")
    header()
    show("intake: submit + verify_code", intake)
    targets = f"ms, {TARGET_BOOKKEEPING} statements"
    if kind == "access":
        show(
            "run: plan, fetch, package (verified -> done)", run, f"target <= {TARGET_ACCESS_MS:.0f} {targets}"
        )
    else:
        show(
            "run: find, mask, verify, notify, shred, finish",
            run,
            f"target <= {TARGET_ERASE_MS:.0f} {targets}",
        )
    for label, series in parts.items():
        show(f"  {label}", series)
    show("whole request: intake + run", total)
    fides_s, fides_n = (
        (FIDES_ACCESS_S, FIDES_ACCESS_STMTS) if kind == "access" else (FIDES_ERASE_S, FIDES_ERASE_STMTS)
    )
    extra = "" if kind == "access" else ", one UPDATE per erased row"
    label = "reference, Fides 2.78.2 (published)"
    print(f"  {label:<46} {fides_s * 1000:9.0f}{'':>10}   ~{fides_n:,} statements{extra}")
    per = ", ".join(f"{t} {c / len(users):.1f}" for t, c in tally.most_common())
    print(f"  the run's statements on our stores per request, by table: {per}")
    own = sum(c for t, c in tally.items() if t in PERSONAL_TABLES) / len(users)
    books = sum(c for t, c in tally.items() if t not in PERSONAL_TABLES) / len(users)
    print(
        f"    of which on the person's own data (vault, consent ledger, disclosures) {own:.1f}, "
        f"bookkeeping (requests, events, keys, jobs, steps, audit, files) {books:.1f}"
    )
    per = ", ".join(f"{t} {c / len(users):.1f}" for t, c in intake_tally.most_common())
    print(f"  the intake's, by table: {per}")
    RESULTS[kind] = {"intake": intake, "run": run, "total": total, "parts": parts, "tally": tally}


def section_naive(b: Bench, app_engine: Engine, users: list[int]) -> None:
    plan = build_plan(b.cp, ["email"])
    s = Series()
    kinds = {"select": 0, "update": 0, "delete": 0}
    # Rolled back: the baseline uses no accounts up (and is spared the commit's flush).
    for uid in users:
        with app_engine.connect() as conn:
            trans = conn.begin()
            c0, b0 = b.stmts.snap()
            t0 = time.perf_counter()
            naive_erase(conn, plan, email_of(uid), b.erase_key, kinds)
            ms = (time.perf_counter() - t0) * 1000
            c1, b1 = b.stmts.snap()
            trans.rollback()
        s.samples.append(Sample(ms, c1 - c0, b1 - b0))
    per = {k: v / len(users) for k, v in kinds.items()}
    print(f"\n== baseline, measured: the same erasure row by row, {len(users)} accounts (rolled back)")
    header()
    show("one SELECT per collection, one statement per row", s)
    print(
        f"  per account: {per['select']:.0f} SELECT, {per['update']:.0f} UPDATE, {per['delete']:.1f} DELETE"
    )
    RESULTS["naive"] = {"run": s}
    RESULTS["naive_kinds"] = per


def section_batch(b: Bench, users: list[int], chunk: int) -> None:
    emails = [email_of(u) for u in users]
    n = len(users)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    c0, b0 = b.stmts.snap()
    t0 = time.perf_counter()
    rids: dict[str, str] = {}
    for email in emails:
        rid, _ = b.intake("erase", email)
        rids[rid] = email
    intake_s = time.perf_counter() - t0
    c1, b1 = b.stmts.snap()
    tally: Counter[str] = Counter()
    b.stmts.tally = tally
    parts: dict[str, Series] = {}
    t1 = time.perf_counter()
    failures = run_erase(b, rids, parts, chunk)
    run_s = time.perf_counter() - t1
    b.stmts.tally = None
    c2, b2 = b.stmts.snap()
    print(f"\n== {n:,} erasures submitted together")
    print(f"  (load average before the intake {load:.2f})")
    print(
        f"  intake, one by one (submit + verify_code): {intake_s:7.1f} s ({n / intake_s:,.0f}/s; "
        f"company {c1 - c0:,}, bookkeeping {b1 - b0:,} statements)"
    )
    how = "one job" if b.runner is not None else f"mask in chunks of {chunk:,}"
    print(
        f"  run together ({how}): {run_s:7.1f} s  target <= {TARGET_BATCH_S:.0f} s; company {c2 - c1:,} "
        f"statements, bookkeeping {b2 - b1:,} = {(b2 - b1) / n:.1f} per request"
    )
    for label, series in parts.items():
        print(f"    {label:<44} {sum(series.ms()) / 1000:7.1f} s")
    per = ", ".join(f"{t} {c:,}" for t, c in tally.most_common())
    print(f"  bookkeeping statements by table: {per}")
    print(f"  verification failures: {failures}")
    naive = RESULTS.get("naive")
    if naive:
        each = naive["run"].median() / 1000
        print(f"  baseline, row by row (measured median x {n:,}, extrapolated): {each * n:,.0f} s")
    fides = FIDES_ERASE_S * n
    print(f"  reference, Fides 2.78.2 ({FIDES_ERASE_S} s each, published, one at a time): {fides:,.0f} s")
    RESULTS["batch"] = {"intake_s": intake_s, "run_s": run_s, "company": c2 - c1, "bookkeeping": b2 - b1}


RESULTS: dict[str, Any] = {}


# --------------------------------------------------------------------------- main


def import_subjects(b: Bench, emails: Sequence[str]) -> None:
    """Put the accounts in the vault too (an email identity and one attribute), as a
    company using Fiduciary's vault would have them: submit then matches a subject,
    access reads it, erasure crypto-shreds it."""
    now = datetime.now(UTC)
    records = (
        NewSubject("customer", "eu", {"email": e}, b.cp.version, {"user.contact.email": e}, now=now)
        for e in emails
    )
    b.fid.vault.import_subjects(records, batch_size=2000)
    b.subjects.update(b.fid.vault.find_many("email", emails))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=FULL_SIZE, help="accounts in the app database")
    ap.add_argument("--rebuild", action="store_true", help="build the app database again")
    ap.add_argument("--runs", type=int, default=30, help="single requests of each kind")
    ap.add_argument("--batch", type=int, default=10_000, help="erasures submitted together")
    ap.add_argument("--chunk", type=int, default=1_000, help="requests per set-based mask")
    ap.add_argument("--naive", type=int, default=5, help="accounts for the row-by-row baseline")
    ap.add_argument("--only", default="access,erase,naive,batch")
    ap.add_argument(
        "--path",
        choices=("auto", "runner", "direct"),
        default="auto",
        help="runner: RequestRunner jobs; direct: the runner's parts called in turn; auto: runner if any",
    )
    ap.add_argument("--seed", type=int, default=None, help="which accounts are picked (default: random)")
    args = ap.parse_args()
    only = set(args.only.split(","))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {platform.machine()}, "
        f"load average {load:.2f}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        print(str(conn.execute(text("SELECT version()")).scalar()).split(" on ")[0])
    app = load_example_app("filelocker")
    app_engine, how = app_database(admin, app, args.size, rebuild=args.rebuild)
    print(how)
    rows, fresh = describe_app(app_engine, app)
    print(f"  {rows}")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    need = {
        "access": (args.runs + WARMUP) if "access" in only else 0,
        "erase": (args.runs + WARMUP) if "erase" in only else 0,
        "naive": args.naive if "naive" in only else 0,
        "batch": args.batch if "batch" in only else 0,
    }
    print(
        f"  accounts never erased: {fresh:,}; this run erases {need['erase'] + need['batch']:,} (seed {seed})"
    )
    picked = pick_fresh(app_engine, args.size, sum(need.values()), random.Random(seed))
    groups: dict[str, list[int]] = {}
    at = 0
    for k, n in need.items():
        groups[k] = picked[at : at + n]
        at += n

    runner_cls = try_runner()
    with our_stores(admin) as (data_url, keys_url):
        fid = Fiduciary.open(
            example_policy("filelocker"),
            database_url=data_url,
            keys_database_url=keys_url,
            keyring=Keyring.generate(),
        )
        mailer = MemoryMailer()
        desk = RequestDesk.from_fiduciary(fid, mailer)
        connector = SQLConnector(app_engine, datastores=[DATASTORE])
        stmts = Statements()
        stmts.watch(app_engine, "company")
        stmts.watch(fid.data, "bookkeeping")
        stmts.watch(fid.keys, "bookkeeping")
        stmts.watch_copy(
            {
                str(app_engine.url.database): "company",
                str(fid.data.url.database): "bookkeeping",
                str(fid.keys.url.database): "bookkeeping",
            }
        )
        b = Bench(fid.policy, fid, desk, mailer, connector, stmts, erase_key=secrets.token_bytes(32))
        if args.path == "runner" and runner_cls is None:
            raise SystemExit("--path runner: fiduciary.requests.runner.RequestRunner does not exist yet")
        if runner_cls is not None and args.path != "direct":
            b.runner = make_runner(runner_cls, b)
            print(
                "path: RequestDesk.submit + verify_code, then RequestRunner.run: one job of persisted "
                "steps on the inline executor (fetch/package or erase/notify/shred, then finish)"
            )
        else:
            why = "--path direct" if runner_cls is not None else "RequestRunner does not exist yet"
            print(
                "path: RequestDesk.submit + verify_code, then desk.start, build_plan, SQLConnector "
                f"find/mask, Vault, build_access_package, desk.finish, called directly ({why})"
            )
        vault_emails = [email_of(u) for k in ("access", "erase", "batch") for u in groups[k]]
        t = time.perf_counter()
        import_subjects(b, vault_emails)
        took = time.perf_counter() - t
        print(f"  {len(vault_emails):,} of the picked accounts put in the vault too ({took:.1f} s)")
        try:
            for kind in ("access", "erase"):
                if kind in only:
                    section_single(b, kind, groups[kind][WARMUP:], groups[kind][:WARMUP])
            if "naive" in only:
                section_naive(b, app_engine, groups["naive"])
            if "batch" in only:
                section_batch(b, groups["batch"], args.chunk)
        finally:
            if b.runner is not None:
                b.runner.close()
            connector.close()
            fid.close()
    app_engine.dispose()
    admin.dispose()
    if hasattr(os, "getloadavg"):
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


def make_runner(cls: type, b: Bench) -> Any:
    """The RequestRunner over the bench's desk and the app database, with its default
    inline executor (a background thread of this process) and no webhook: each recipient
    to tell becomes a manual task."""
    factory: Callable[..., Any] = cls
    return factory(b.fid, b.desk, connections={DATASTORE: b.connector})


if __name__ == "__main__":
    main()
