"""A real Celery worker killed mid-erasure (SIGKILL) is recovered by another, on the real
Redis and RabbitMQ, and the company's table ends exactly as after an uninterrupted run.

The worker runs in a subprocess that imports this module: the step handler and the
``erasure_app`` resource below are registered there as they are here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from fiduciary.jobs import (
    DONE,
    CeleryExecutor,
    StepContext,
    StepSpec,
    create_job,
    job_status,
    progress,
    register_step,
    run_job,
    wait_for,
)
from fiduciary.jobs import resources as job_resources
from fiduciary.store import make_engine, upgrade
from fiduciary.vault.keyring import Keyring
from tests.conftest import service_missing

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("FIDUCIARY_TEST_REDIS", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("FIDUCIARY_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
ROWS, STEPS = 5000, 20
TABLES = ("people", "people_ref")


# --------------------------------------------------------------------------- the erasure step


def _app_engine(settings: object, built: Mapping[str, object]) -> Engine | None:
    url = os.environ.get("FIDUCIARY_TEST_APP_URL")
    return make_engine(url) if url else None


job_resources.register(
    "erasure_app", _app_engine, close=lambda e: e.dispose() if isinstance(e, Engine) else None, replace=True
)


def mask_slice(ctx: StepContext) -> Mapping[str, Any]:
    """Mask one slice of rows: one set-based UPDATE with values derived from the row
    alone, so running it twice leaves the same table. Then linger, so that a worker can be
    killed after the effect and before the step is marked done."""
    app = ctx.resources.get("erasure_app") or ctx.resources.get("erasure_app_local")
    assert isinstance(app, Engine)
    table = ctx.params["table"]
    assert table in TABLES
    with app.begin() as conn:
        n = conn.execute(
            text(
                f"UPDATE {table} SET email = 'erased-' || id || '@invalid.example', name = NULL, "
                "phone = NULL, note = md5('salt' || id::text) WHERE id BETWEEN :lo AND :hi"
            ),
            {"lo": ctx.params["lo"], "hi": ctx.params["hi"]},
        ).rowcount
        # A probe for the test, not part of the erasure: who ran which step how often.
        conn.execute(
            text("INSERT INTO erasure_runs (tbl, seq, worker) VALUES (:t, :s, :w)"),
            {"t": table, "s": ctx.seq, "w": ctx.worker_id},
        )
    time.sleep(float(ctx.params.get("sleep", 0)))
    return {"masked": n}


register_step("t_mask_slice", mask_slice, replace=True)


# --------------------------------------------------------------------------- services


def _check_broker(kind: str, url: str) -> None:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        service_missing(f"{kind} at {url} unreachable: {type(exc).__name__}: {exc}")


def _cleanup_broker(kind: str, url: str, queue: str, prefix: str) -> None:
    """Leave nothing behind on the shared broker: our queue, exchange and, on Redis, every
    key under this test's prefix (queues, unacked messages of the killed worker)."""
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
        return
    from kombu import Connection

    with Connection(url, connect_timeout=3) as conn:
        ch = conn.default_channel
        with contextlib.suppress(Exception):
            ch.queue_purge(queue)
        with contextlib.suppress(Exception):
            ch.queue_delete(queue)
        with contextlib.suppress(Exception):
            conn.default_channel.exchange_delete(queue)


@pytest.fixture
def app_db(pg_admin: Engine) -> Iterator[Engine]:
    """The company's own database, with the table to erase and its reference copy."""
    name = f"fiduciary_app_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_admin.url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(
                text(
                    f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, email TEXT, name TEXT, "
                    "phone TEXT, note TEXT)"
                )
            )
            conn.execute(
                text(
                    f"INSERT INTO {table} SELECT i, 'user' || i || '@example.com', 'Name ' || i, "
                    "'+1555' || lpad(i::text, 7, '0'), 'note ' || i FROM generate_series(1, :n) AS i"
                ),
                {"n": ROWS},
            )
        conn.execute(
            text("CREATE TABLE erasure_runs (id SERIAL PRIMARY KEY, tbl TEXT, seq INTEGER, worker TEXT)")
        )
    try:
        yield engine
    finally:
        engine.dispose()
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def checksum(engine: Engine, table: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(
                text(
                    "SELECT md5(string_agg(concat_ws('|', id, coalesce(email, '~'), coalesce(name, '~'), "
                    f"coalesce(phone, '~'), coalesce(note, '~')), ',' ORDER BY id)) FROM {table}"
                )
            ).scalar_one()
        )


def plan(table: str, sleep: float) -> list[StepSpec]:
    size = ROWS // STEPS
    return [
        StepSpec(
            "t_mask_slice", table, {"table": table, "lo": k * size + 1, "hi": (k + 1) * size, "sleep": sleep}
        )
        for k in range(STEPS)
    ]


WORKER = """
import sys
import tests.test_jobs_celery  # registers the step handler and the erasure_app resource
from fiduciary.config import Settings
from fiduciary.jobs import start_worker

queue, hostname, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
start_worker(
    Settings(),
    concurrency=1,
    queue=queue,
    hostname=hostname,
    loglevel="INFO",
    lease_seconds=3,
    recover_every=1.0,
    backoff=0.2,
    transport_options={"global_keyprefix": prefix} if prefix else None,
)
"""


def start(env: dict[str, str], log: Path, queue: str, name: str, prefix: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own, so that stop() can kill anything it might have spawned.
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, queue, f"{name}@{uuid.uuid4().hex[:6]}", prefix],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def logs(*paths: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in paths if p.exists())


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_killed_worker_is_recovered_and_the_erasure_is_exact(
    broker: str, pg_database: str, app_db: Engine, tmp_path: Path
) -> None:
    url = REDIS_URL if broker == "redis" else AMQP_URL
    _check_broker(broker, url)
    tag = uuid.uuid4().hex[:10]
    queue = f"fiduciary.test.{tag}"
    prefix = f"fiduciary-test-{tag}:" if broker == "redis" else ""

    # Data and key stores in one PostgreSQL database (each store has its own tables and
    # migration history), the company's table in another.
    data = make_engine(pg_database)
    keys = make_engine(pg_database, secure_delete=True)
    upgrade(data, "data")
    upgrade(keys, "keys")
    keyring = Keyring.generate()
    env = {
        **os.environ,
        "FIDUCIARY_DATABASE_URL": pg_database,
        "FIDUCIARY_KEYS_DATABASE_URL": pg_database,
        "FIDUCIARY_KEYRING": keyring.to_json(),
        "FIDUCIARY_BROKER_URL": url,
        "FIDUCIARY_DATA_DIR": str(tmp_path / "data"),
        "FIDUCIARY_TEST_APP_URL": app_db.url.render_as_string(hide_password=False),
        "PYTHONPATH": str(REPO),
    }
    env.pop("FIDUCIARY_REQUIRE_SERVICES", None)

    # The reference: the same plan on the copy, run uninterrupted in this process.
    ref = create_job(data, keys, keyring, "erase", plan("people_ref", 0))
    local = {"data": data, "keys": keys, "keyring": keyring, "erasure_app_local": app_db}
    assert run_job(ref, "reference", local).status == DONE
    original = checksum(app_db, "people")
    assert checksum(app_db, "people_ref") != original

    executor = CeleryExecutor(
        url, queue=queue, transport_options={"global_keyprefix": prefix} if prefix else None
    )
    w1 = w2 = None
    log1, log2 = tmp_path / "worker1.log", tmp_path / "worker2.log"
    try:
        w1 = start(env, log1, queue, "w1", prefix)
        job = create_job(data, keys, keyring, "erase", plan("people", 0.4))
        executor.submit(job)

        deadline = time.monotonic() + 60
        while progress(data, job)[0] < 3:
            assert w1.poll() is None, logs(log1)
            assert time.monotonic() < deadline, "worker 1 did not get going\n" + logs(log1)
            time.sleep(0.05)
        os.kill(w1.pid, signal.SIGKILL)
        w1.wait(10)
        done_at_kill = progress(data, job)[0]
        assert 3 <= done_at_kill < STEPS
        assert checksum(app_db, "people") not in (original, checksum(app_db, "people_ref"))

        # The replacement runs the recover pass at start and every second.
        w2 = start(env, log2, queue, "w2", prefix)
        try:
            st = wait_for(data, job, timeout=120)
        except TimeoutError:
            pytest.fail(f"job not finished: {job_status(data, job)}\n{logs(log1, log2)}")

        assert st.status == DONE, f"{st}\n{logs(log1, log2)}"
        assert [s.seq for s in st.steps if s.status == DONE] == list(range(STEPS))
        attempts = [s.attempts for s in st.steps]
        assert max(attempts) <= 2 and sum(attempts) <= STEPS + 1, attempts
        # The final state equals the uninterrupted run's.
        assert checksum(app_db, "people") == checksum(app_db, "people_ref")

        with app_db.connect() as conn:
            runs = conn.execute(
                text("SELECT seq, worker FROM erasure_runs WHERE tbl = 'people' ORDER BY id")
            ).all()
        by_seq: dict[int, list[str]] = {}
        for seq, worker in runs:
            by_seq.setdefault(seq, []).append(worker)
        assert sorted(by_seq) == list(range(STEPS))
        twice = [seq for seq, ws in by_seq.items() if len(ws) > 1]
        assert len(twice) <= 1, by_seq  # only the step the kill interrupted ran again
        first, last = runs[0][1], runs[-1][1]
        assert first.startswith("celery-w1") and last.startswith("celery-w2"), (first, last)
        # The killed attempt is in the job record as an extra attempt of that step.
        assert all(st.steps[s].attempts == 2 for s in twice)
    finally:
        stop(w1)
        stop(w2)
        with contextlib.suppress(Exception):
            executor.purge()
        executor.close()
        _cleanup_broker(broker, url, queue, prefix)
        data.dispose()
        keys.dispose()
