"""A sweep killed halfway resumes without touching a row twice (SQLite and PostgreSQL):
the access-log rules of PLA-3 are kept exactly once per due row, whatever the crash.

The sweep runs in a subprocess that is SIGKILLed: either at the worst moment (a batch's
statement committed in the company's database, the job not yet told), injected by the
subprocess itself, or from outside at a random moment while batches run. Another process
then resumes the sweep. Triggers on the swept table record every row deleted or updated:
each row must be touched exactly once if it was due, never if it was not, and the table
must end as an uninterrupted sweep leaves it.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine, create_engine, text

from fiduciary.core import Fiduciary
from fiduciary.jobs import job_status, progress
from fiduciary.retention import Retention, user_agent_family
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores
from tests.retention_support import app_url, drop_app, utc

REPO = Path(__file__).resolve().parents[1]
AT = utc(2025, 3, 1)
ROWS, BATCH = 3000, 100
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36", "curl/8.4.0", "Googlebot/2.1")

POLICY = """
retention:
  logs_truncate:
    collections: [app_db.logs]
    categories: [user.device.ip_address, user.device.user_agent]
    trigger: collected
    period: 7 days
    action: truncate
    truncate: {ipv4_prefix: 24, ipv6_prefix: 48, user_agent: family}
  logs_delete:
    collections: [app_db.logs]
    trigger: collected
    period: 30 days
datastores:
  - fides_key: app_db
    collections:
      - name: logs
        fields:
          - {name: id, fides_meta: {primary_key: true, data_type: integer}}
          - {name: ip, data_categories: [user.device.ip_address], fides_meta: {data_type: string}}
          - {name: ua, data_categories: [user.device.user_agent], fides_meta: {data_type: string}}
          - {name: visited_at}
"""

SWEEP = """
import os, signal, sys, time
from datetime import datetime
from fiduciary.core import Fiduciary
from fiduciary.jobs import register_step
from fiduciary.policy import load_policy
from fiduciary.retention import Retention
from fiduciary.retention import sweep
from fiduciary.store import make_engine
from fiduciary.vault.keyring import Keyring

kill_after, slow = int(os.environ["KILL_AFTER"]), float(os.environ["SLOW"])
batches = 0


def crashing(ctx):
    global batches
    result = sweep.step_rows(ctx)  # the batch's statement has committed
    batches += 1
    if batches == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)  # before the job records the step done
    time.sleep(slow)
    return result


register_step("ret.rows", crashing, replace=True)
fid = Fiduciary(
    load_policy(os.environ["POLICY"]),
    make_engine(os.environ["DATA_URL"]),
    make_engine(os.environ["KEYS_URL"], secure_delete=True),
    Keyring.from_json(os.environ["KEYRING"]),
)
r = Retention(fid, connections={"app_db": os.environ["APP_URL"]}, batch_size=int(os.environ["BATCH"]),
              lease_seconds=1)
job = r.start(datetime.fromisoformat(os.environ["AT"]))
print(job, flush=True)
r.wait(job, timeout=120)
"""


def _policy(tmp_path: Path) -> Path:
    base = yaml.safe_load((REPO / "tests" / "fixtures" / "minimal.yaml").read_text())
    base["categories"]["user.device.user_agent"] = {"name": "Browser"}
    base.update(yaml.safe_load(POLICY))
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def _ip(i: int) -> str:
    if i % 7 == 0:
        return f"2001:db8:{i % 65536:x}:{(i * 7) % 65536:x}::{i % 4096:x}"
    return f"{10 + i % 200}.{i % 251}.{(i * 3) % 256}.{1 + i % 254}"


@pytest.fixture
def app(stores: Stores, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """The swept table, ``ROWS`` log lines over 60 days, and triggers counting each row
    deleted or updated into ``touches``."""
    url = app_url(stores, tmp_path)
    engine = create_engine(url)
    rows = [
        {"id": i, "ip": _ip(i), "ua": AGENTS[i % 3], "at": datetime(2025, 3, 1) - timedelta(minutes=29 * i)}
        for i in range(1, ROWS + 1)
    ]
    with engine.begin() as conn:
        columns = "id INTEGER PRIMARY KEY, ip VARCHAR(45), ua VARCHAR(512), visited_at TIMESTAMP"
        conn.execute(text(f"CREATE TABLE logs ({columns})"))
        conn.execute(text("CREATE TABLE touches (n INTEGER PRIMARY KEY, pk INTEGER, op VARCHAR(8))"))
        if stores.backend == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER logs_del AFTER DELETE ON logs BEGIN "
                    "INSERT INTO touches (pk, op) VALUES (old.id, 'delete'); END"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER logs_upd AFTER UPDATE ON logs BEGIN "
                    "INSERT INTO touches (pk, op) VALUES (old.id, 'update'); END"
                )
            )
        else:
            conn.execute(text("CREATE SEQUENCE touches_n"))
            conn.execute(text("ALTER TABLE touches ALTER COLUMN n SET DEFAULT nextval('touches_n')"))
            conn.execute(
                text(
                    "CREATE FUNCTION touched() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "INSERT INTO touches (pk, op) VALUES (OLD.id, lower(TG_OP)); RETURN NULL; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER logs_touched AFTER UPDATE OR DELETE ON logs "
                    "FOR EACH ROW EXECUTE FUNCTION touched()"
                )
            )
        conn.execute(text("INSERT INTO logs (id, ip, ua, visited_at) VALUES (:id, :ip, :ua, :at)"), rows)
    yield url, engine
    engine.dispose()
    drop_app(stores, url)


def _expected() -> tuple[dict[int, str], dict[int, tuple[str, str]], set[int]]:
    """pk -> what a full sweep does: 'delete', 'update' (with the truncated values), untouched."""
    ops: dict[int, str] = {}
    values: dict[int, tuple[str, str]] = {}
    kept: set[int] = set()
    for i in range(1, ROWS + 1):
        at = datetime(2025, 3, 1) - timedelta(minutes=29 * i)
        if at < datetime(2025, 1, 30):
            ops[i] = "delete"
        elif at < datetime(2025, 2, 22):
            ops[i] = "update"
            addr = ipaddress.ip_address(_ip(i))
            net = ipaddress.ip_network(f"{addr}/{24 if addr.version == 4 else 48}", strict=False)
            values[i] = (str(net.network_address), str(user_agent_family(AGENTS[i % 3])))
        else:
            kept.add(i)
    return ops, values, kept


def _sweep_in_subprocess(
    stores: Stores, keyring: Keyring, policy: Path, url: str, *, kill_after: int, slow: float
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "POLICY": str(policy),
        "DATA_URL": stores.data_url,
        "KEYS_URL": stores.keys_url,
        "KEYRING": keyring.to_json(),
        "APP_URL": url,
        "BATCH": str(BATCH),
        "AT": AT.isoformat(),
        "KILL_AFTER": str(kill_after),
        "SLOW": str(slow),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, "-c", SWEEP], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


@pytest.mark.parametrize(
    ("kill_after", "when"),
    [(5, "in a deletion batch"), (22, "in a truncation batch"), (0, "from outside")],
)
def test_a_killed_sweep_resumes_without_touching_a_row_twice(
    stores: Stores, app: tuple[str, Engine], tmp_path: Path, kill_after: int, when: str
) -> None:
    url, engine = app
    policy = _policy(tmp_path)
    keyring = Keyring.generate()
    fid = Fiduciary.open(
        policy, database_url=stores.data_url, keys_database_url=stores.keys_url, keyring=keyring
    )
    fid.close()  # migrated and the policy published; the subprocess sweeps
    proc = _sweep_in_subprocess(
        stores, keyring, policy, url, kill_after=kill_after, slow=0.0 if kill_after else 0.15
    )
    try:
        if kill_after == 0:
            # From outside, at whatever moment half the batches are done.
            deadline = time.monotonic() + 60
            job = None
            while job is None or progress(stores.data, job)[0] * 2 < progress(stores.data, job)[1]:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the sweep did not get going"
                with stores.data.connect() as conn:
                    job = conn.execute(text("SELECT job_id FROM retention_sweeps")).scalar()
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    with stores.data.connect() as conn:
        job = conn.execute(text("SELECT job_id FROM retention_sweeps")).scalar_one()
    cut = job_status(stores.data, job)
    assert not cut.finished and 0 < cut.done < cut.total, when
    with engine.connect() as conn:
        touched_at_kill = conn.execute(text("SELECT count(*) FROM touches")).scalar_one()
    assert touched_at_kill > 0

    # Another process picks the sweep up where it stopped.
    fid = Fiduciary.open(
        policy, database_url=stores.data_url, keys_database_url=stores.keys_url, keyring=keyring
    )
    with Retention(fid, connections={"app_db": engine}, batch_size=BATCH, lease_seconds=1) as r:
        assert r.active() == job
        st = r.run(timeout=120)
    fid.close()
    assert st.id == job and st.status == "done", st.error
    assert sum(s.attempts for s in st.steps) <= st.total + 1  # only the step cut short ran again

    ops, values, kept = _expected()
    with engine.connect() as conn:
        touches = conn.execute(text("SELECT pk, op FROM touches ORDER BY n")).all()
        left = {r.id: (r.ip, r.ua) for r in conn.execute(text("SELECT id, ip, ua FROM logs"))}
    per_row: dict[int, list[str]] = {}
    for pk, op in touches:
        per_row.setdefault(int(pk), []).append(str(op))
    twice = {pk: o for pk, o in per_row.items() if len(o) > 1}
    assert twice == {}, f"rows touched twice ({when}): {dict(list(twice.items())[:5])}"
    assert {pk: o[0] for pk, o in per_row.items()} == ops  # every due row once, no other row
    assert set(left) == set(values) | kept
    for pk, v in values.items():
        assert left[pk] == v
    for pk in kept:
        assert left[pk] == (_ip(pk), AGENTS[pk % 3])
    with stores.data.connect() as conn:
        status = conn.execute(text("SELECT status FROM retention_sweeps")).scalar_one()
        marks = conn.execute(text("SELECT count(*) FROM retention_marks")).scalar_one()
    assert status == "done" and marks == 2
