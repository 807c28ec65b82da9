"""The sweep task on a real Celery worker (Redis broker, PostgreSQL stores): the task that
beat sends plans the sweep and hands its job to the workers, which carry it out."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy, load_example_app
from fiduciary.jobs import job_status, make_celery_app
from fiduciary.retention import TASK_SWEEP, install_celery
from fiduciary.store import make_engine
from fiduciary.vault.keyring import Keyring
from tests.conftest import service_missing

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("FIDUCIARY_TEST_REDIS", "redis://127.0.0.1:6379/0")

WORKER = """
import sys
from fiduciary.config import Settings
from fiduciary.jobs import start_worker

queue, prefix = sys.argv[1], sys.argv[2]
start_worker(
    Settings(),
    queue=queue,
    imports=["fiduciary.requests.runner", "fiduciary.retention"],
    hostname=f"retention-{prefix}",
    lease_seconds=3,
    recover_every=1.0,
    transport_options={"global_keyprefix": prefix},
)
"""


def _redis_or_skip() -> None:
    from kombu import Connection

    try:
        with Connection(REDIS_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        service_missing(f"Redis at {REDIS_URL} unreachable: {type(exc).__name__}: {exc}")


def test_beat_task_sweeps_on_a_real_worker(pg_database: str, tmp_path: Path) -> None:
    _redis_or_skip()
    tag = uuid.uuid4().hex[:10]
    queue, prefix = f"fiduciary.test.{tag}", f"fiduciary-test-{tag}:"
    schema = f"app_{tag}"
    admin = make_engine(pg_database)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    app_url = str(make_url(pg_database).update_query_dict({"options": f"-csearch_path={schema}"}))
    app_db = create_engine(app_url)
    load_example_app("projects").create(app_db, 20, seed=0)
    keyring = Keyring.generate()
    policy = example_policy("projects")
    Fiduciary.open(policy, database_url=pg_database, keys_database_url=pg_database, keyring=keyring).close()
    env = {
        **os.environ,
        "FIDUCIARY_DATABASE_URL": pg_database,
        "FIDUCIARY_KEYS_DATABASE_URL": pg_database,
        "FIDUCIARY_KEYRING": keyring.to_json(),
        "FIDUCIARY_BROKER_URL": REDIS_URL,
        "FIDUCIARY_POLICY": str(policy),
        "FIDUCIARY_CONNECTIONS": json.dumps({"projects_db": app_url}),
        "FIDUCIARY_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("FIDUCIARY_REQUIRE_SERVICES", None)
    log = tmp_path / "worker.log"
    beat = make_celery_app(REDIS_URL, queue=queue, transport_options={"global_keyprefix": prefix})
    install_celery(beat, every=86400)
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, queue, prefix],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with app_db.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM access_logs")).scalar_one() > 0
        # What beat sends on schedule, sent now.
        beat.send_task(TASK_SWEEP, queue=queue)
        deadline = time.monotonic() + 90
        job = None
        while True:
            assert worker.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "no sweep\n" + log.read_text(errors="replace")[-4000:]
            with admin.connect() as conn:
                job = conn.execute(text("SELECT job_id FROM retention_sweeps")).scalar()
            if job is not None and job_status(admin, job).finished:
                break
            time.sleep(0.2)
        st = job_status(admin, job)
        assert st.status == "done", f"{st.error}\n{log.read_text(errors='replace')[-4000:]}"
        with admin.connect() as conn:
            creator = conn.execute(text("SELECT created_by FROM retention_sweeps")).scalar_one()
        assert creator == "celery-beat"
        # Every line of the generated log (2024) is more than six months old now (PLA-3).
        with app_db.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM access_logs")).scalar_one() == 0
            assert conn.execute(text("SELECT count(*) FROM invoices")).scalar_one() > 0  # ten years
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.wait(10)
        beat.close()
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
        app_db.dispose()
        admin.dispose()
