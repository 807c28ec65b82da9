"""Retention sweeps over the example apps' real databases, on SQLite and PostgreSQL: the
access log truncated then deleted (PLA-3, PUT-10), the grace period after an account is
closed, legal minimums (PLV-7, LAW-3), the plan, the CLI and the schedulers."""

from __future__ import annotations

import ipaddress
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from typer.testing import CliRunner

from fiduciary.cli_retention import retention_app
from fiduciary.core import Fiduciary
from fiduciary.examples import EXAMPLES, example_policy, load_example_app
from fiduciary.jobs import make_celery_app
from fiduciary.policy.period import Period
from fiduciary.retention import (
    BEAT_ENTRY,
    TASK_SWEEP,
    Retention,
    RetentionScheduler,
    install_celery,
    truncate_ip,
    user_agent_family,
)
from fiduciary.retention.plan import before, closure_stages
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores
from tests.retention_support import World, utc, world_of

__all__ = ["world_of"]  # the fixture, imported for pytest

FAMILIES = {"Chrome", "Safari", "Firefox", "Edge", "Opera", "Other", "bot", "curl"}


# --------------------------------------------------------------------------- truncation


def test_ip_cut_to_its_network_and_user_agent_to_its_family() -> None:
    assert truncate_ip("203.0.113.77") == "203.0.113.0"
    assert truncate_ip("203.0.113.77", 16) == "203.0.0.0"
    assert truncate_ip("2001:db8:85a3:1234:5678::1") == "2001:db8:85a3::"
    assert truncate_ip("not an address") is None and truncate_ip("1.2.3.4:80") is None
    assert truncate_ip(None) is None
    for ip in ("203.0.113.77", "2001:db8:85a3:1234:5678::1", "10.0.0.1"):
        once = truncate_ip(ip)
        assert truncate_ip(once) == once  # a truncated value truncates to itself
    agents = {
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0": "Firefox",
        "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/120.0 Safari/537.36": "Chrome",
        "Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 Chrome/120.0 Safari/537.36 Edg/120.0": "Edge",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Version/17.2 Safari/605.1.15": "Safari",
        "Googlebot/2.1 (+http://www.google.com/bot.html)": "bot",
        "MyApp/1.0 (device 4711; user 12345)": "MyApp",
        "Mozilla/5.0 (compatible)": "Other",
    }
    for ua, family in agents.items():
        assert user_agent_family(ua) == family, ua
        assert user_agent_family(family) == family


def test_periods_are_counted_back_on_the_calendar() -> None:
    at = utc(2024, 3, 31, 12)
    assert before(at, Period.parse("1 month")) == utc(2024, 2, 29, 12)
    assert before(at, Period.parse("7 days")) == utc(2024, 3, 24, 12)
    assert before(at, Period.parse("2 years")) == utc(2022, 3, 31, 12)
    assert before(utc(2024, 3, 4), Period.parse("1 business day")) == utc(2024, 3, 1)
    assert before(at, None) == at


# --------------------------------------------------------------------------- PLA-3


def _cut(ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    prefix = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False).network_address)


def test_pla3_access_log_truncated_after_a_week_and_deleted_after_six_months(world_of: Any) -> None:
    w: World = world_of("projects", 60)
    at = utc(2024, 9, 1)
    week, half_year = datetime(2024, 8, 25), datetime(2024, 3, 1)  # the app keeps naive UTC
    before_rows = w.rows("access_logs")
    plan = w.retention.plan(at)
    tasks = {(t.rule, t.target): t for t in plan.tasks}
    old = sum(1 for r in before_rows.values() if r["requested_at"] < half_year)
    assert tasks["log_delete", "projects_db.access_logs"].count == old > 0
    assert tasks["log_truncate", "projects_db.access_logs"].action == "truncate"

    st = w.retention.run(at, timeout=60)
    assert st.status == "done", st.error
    after = w.rows("access_logs")
    seen = {"deleted": 0, "v4": 0, "v6": 0, "kept": 0}
    for pk, row in before_rows.items():
        when = row["requested_at"]
        if when < half_year:
            assert pk not in after, "a log line older than six months is deleted"
            seen["deleted"] += 1
        elif when < week:
            got = after[pk]
            assert got["ip_address"] == _cut(row["ip_address"])
            seen["v4" if ":" not in row["ip_address"] else "v6"] += 1
            assert got["user_agent"] == user_agent_family(row["user_agent"]) in FAMILIES
            # the time, the page and the referring address stay (PLA-3: the log is kept)
            assert {k: got[k] for k in ("requested_at", "referrer", "path", "user_id")} == {
                k: row[k] for k in ("requested_at", "referrer", "path", "user_id")
            }
        else:
            assert after[pk] == row, "a line from the last seven days is untouched"
            seen["kept"] += 1
    assert all(seen.values()), seen

    # Swept once: the same sweep again finds nothing to do and writes nothing.
    again = w.retention.plan(at)
    assert {(t.rule, t.target): t.count for t in again.tasks if t.kind == "rows"}[
        ("log_truncate", "projects_db.access_logs")
    ] == 0
    assert w.retention.run(at, timeout=60).status == "done"
    assert w.rows("access_logs") == after
    # Every sweep is in the audit trail, with its counts (no personal data).
    entries = list(w.fid.audit.query(action="retention.sweep"))
    assert len(entries) == 2
    first = entries[0].detail
    assert first is not None
    assert first["rules"]["log_delete"]["projects_db.access_logs"]["deleted"] == seen["deleted"]
    assert first["rules"]["log_truncate"]["projects_db.access_logs"]["updated"] == seen["v4"] + seen["v6"]


# --------------------------------------------------------------------------- account closure


def _users_with_everything(w: World, n: int) -> list[tuple[int, str]]:
    """The first ``n`` users with files, email choices and payments."""
    users = w.rows("users")
    having = [{r["user_id"] for r in w.rows(t).values()} for t in ("files", "subscriptions", "payments")]
    ids = sorted(set(users).intersection(*having))
    assert len(ids) >= n
    return [(uid, str(users[uid]["email"])) for uid in ids[:n]]


def _owned(w: World, table: str, user_id: int) -> set[Any]:
    return {pk for pk, r in w.rows(table).items() if r.get("user_id") == user_id}


def test_grace_period_after_closure_then_erasure_with_legal_minimums_kept(world_of: Any) -> None:
    """filelocker: files go when the account closes; the account, its email choices and
    Intercom's profile 30 days later; payment records stay seven years (LAW-3)."""
    w: World = world_of("filelocker", 60)
    at = utc(2025, 6, 1)
    people = {}
    chosen = _users_with_everything(w, 3)
    for (name, closed), (uid, email) in zip(
        (("gone", 40), ("grace", 10), ("open", None)), chosen, strict=True
    ):
        sid = w.fid.sign_up(
            "customer", identities={"email": email}, region="NL", now=at - timedelta(days=400)
        )
        if closed is not None:
            assert w.fid.vault.close(sid, now=at - timedelta(days=closed))
        people[name] = (uid, email, sid)
    before_users, before_files = w.rows("users"), w.rows("files")
    before_subs, before_pay = w.rows("subscriptions"), w.rows("payments")

    plan = w.retention.plan(at)
    stages = {t.rule: t for t in plan.tasks if t.kind == "closure"}
    assert stages["closure@0"].count == 2 and stages["closure@30 days"].count == 1

    st = w.retention.run(at, timeout=120)
    assert st.status == "done", st.error
    users, files, pay = w.rows("users"), w.rows("files"), w.rows("payments")

    gone_uid, gone_email, gone_sid = people["gone"]
    assert not _owned(w, "files", gone_uid)
    assert not _owned(w, "subscriptions", gone_uid)
    assert users[gone_uid]["email"] != gone_email  # masked (hmac)
    assert users[gone_uid]["password_hash"] is None and users[gone_uid]["hometown"] is None
    # Payment records stay: the legal minimum of seven years (LAW-3, PLV-7).
    assert {k: v for k, v in pay.items() if v["user_id"] == gone_uid} == {
        k: v for k, v in before_pay.items() if v["user_id"] == gone_uid
    }
    assert w.fid.vault.subject(gone_sid).status == "erased"
    with w.fid.keys.connect() as kconn:
        assert (
            kconn.execute(select(T.subject_keys).where(T.subject_keys.c.subject_id == gone_sid)).first()
            is None
        )

    grace_uid, grace_email, grace_sid = people["grace"]
    assert not _owned(w, "files", grace_uid), "files go when the account is closed"
    assert users[grace_uid] == before_users[grace_uid], "the account stays for its 30 days of grace"
    assert _owned(w, "subscriptions", grace_uid) == {
        k for k, v in before_subs.items() if v["user_id"] == grace_uid
    }
    assert w.fid.vault.subject(grace_sid).status == "closed"

    open_uid = people["open"][0]
    assert users[open_uid] == before_users[open_uid]
    # Nobody else's rows changed.
    for table, old, new in (("users", before_users, users), ("payments", before_pay, pay)):
        for pk, row in old.items():
            if row.get("user_id", pk) not in (gone_uid, grace_uid) and pk in new:
                assert new[pk] == row, (table, pk)
    assert set(before_files) - set(files) == {
        pk for pk, r in before_files.items() if r["user_id"] in (gone_uid, grace_uid)
    }

    # 25 days later the grace period of the second account is over too.
    st = w.retention.run(at + timedelta(days=25), timeout=120)
    assert st.status == "done", st.error
    assert w.rows("users")[grace_uid]["email"] != grace_email
    assert w.fid.vault.subject(grace_sid).status == "erased"
    erased = list(w.fid.audit.query(action="retention.erase"))
    assert len(erased) >= 3  # each account, each stage, in the audit trail


# --------------------------------------------------------------------------- PLV-7


LEGAL_POLICY = """
retention:
  logs:
    description: Logs are deleted after 30 days.
    collections: [app_db.logs]
    trigger: collected
    period: 30 days
  fraud:
    description: IP addresses are kept a year for fraud investigations.
    categories: [user.device.ip_address]
    collections: [app_db.logs]
    trigger: collected
    period: 1 year
    legal_minimum: {period: 1 year, reason: fraud investigations, basis: legal_claims}
datastores:
  - fides_key: app_db
    collections:
      - name: logs
        fields:
          - {name: id, fides_meta: {primary_key: true, data_type: integer}}
          - {name: ip, data_categories: [user.device.ip_address], fides_meta: {data_type: string}}
          - {name: at, fides_meta: {data_type: string}}
"""


def _legal_policy(tmp_path: Path) -> Path:
    import yaml

    base = yaml.safe_load((Path(__file__).parent / "fixtures" / "minimal.yaml").read_text())
    base.update(yaml.safe_load(LEGAL_POLICY))
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def test_plv7_a_legal_minimum_holds_rows_past_a_shorter_rule(stores: Stores, tmp_path: Path) -> None:
    app = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with app.begin() as conn:
        conn.execute(text("CREATE TABLE logs (id INTEGER PRIMARY KEY, ip VARCHAR(45), at TIMESTAMP)"))
        conn.execute(
            text("INSERT INTO logs (id, ip, at) VALUES (:id, '198.51.100.7', :at)"),
            [{"id": d, "at": datetime(2025, 1, 1) - timedelta(days=d)} for d in range(1, 500)],
        )
    fid = Fiduciary.open(
        _legal_policy(tmp_path),
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )
    with Retention(fid, connections={"app_db": app}, clocks={"app_db.logs": "at"}) as r:
        plan = r.plan(utc(2025, 1, 1))
        logs = next(t for t in plan.tasks if t.rule == "logs")
        assert "held to the legal minimum of rule fraud (1 year)" in logs.notes
        assert logs.cutoff == utc(2024, 1, 1)
        assert r.run(utc(2025, 1, 1), timeout=60).status == "done"
    with app.connect() as conn:
        ages = sorted(d for (d,) in conn.execute(text("SELECT id FROM logs")))
    assert ages == list(range(1, 367))  # a year (2024 has 366 days) stays; older rows went
    fid.close()
    app.dispose()


# --------------------------------------------------------------------------- the plan


def test_plan_says_what_it_cannot_do_and_why(stores: Stores, tmp_path: Path) -> None:
    fid = Fiduciary.open(
        example_policy("voiceapi"),
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )
    with Retention(fid) as r:  # no connection at all
        plan = r.plan(utc(2026, 1, 1))
        reasons = {(s.rule, s.target): s.reason for s in plan.skipped}
        assert "no connection for datastore voiceapi_db" in reasons["transactions", "voiceapi_db.invoices"]
        assert "held by a processor" in reasons["usage_data", None]
        assert plan.backups is not None and plan.backups["retention"] == "90 days"  # PLO-10
        assert any(
            "no connection for datastore(s) voiceapi_db: the account rules" in w for w in plan.warnings
        )
        text_ = plan.to_text()
        assert "skipped: no connection for datastore voiceapi_db" in text_
        for clocks, message in (
            ({"voiceapi_db.nope": "x"}, "unknown collection"),
            ({"nope:voiceapi_db.invoices": "issued_at"}, "unknown retention rule"),
        ):
            with Retention(fid, clocks=clocks) as bad, pytest.raises(ValueError, match=message):
                bad.plan()
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    load_example_app("voiceapi").create(engine, 20, seed=0)
    with Retention(fid, connections={"voiceapi_db": engine}) as r:
        reasons = {(s.rule, s.target): s.reason for s in r.plan().skipped}
        assert (
            "no column of voiceapi_db.contest_entries says when"
            in reasons["contests", "voiceapi_db.contest_entries"]
        )
    clocked = {"voiceapi_db.contest_entries": "entered_at"}
    with engine.connect() as conn:
        entries = conn.execute(text("SELECT count(*) FROM contest_entries")).scalar()
    assert entries
    with Retention(fid, connections={"voiceapi_db": engine}, clocks=clocked) as r:
        plan = r.plan(utc(2030, 1, 1))
        task = next(t for t in plan.tasks if t.rule == "contests")
        assert task.count == entries and "clock: entered_at" in task.notes
        assert task.cutoff == utc(2030, 1, 1)  # due once the contest is over: no period
        assert "contests" in {t["rule"] for t in json.loads(plan.to_json())["tasks"]}
    fid.close()
    engine.dispose()


def test_one_sweep_at_a_time_and_an_unfinished_one_is_resumed(world_of: Any) -> None:
    w: World = world_of("projects", 30, batch_size=10)
    # A sweep created but not run (its process died before running it).
    from fiduciary.jobs import create_job
    from fiduciary.retention.sweep import build_steps

    plan = w.retention.plan(utc(2024, 9, 1))
    steps = build_steps(plan)
    job = create_job(
        w.fid.data,
        w.fid.keys,
        w.fid.keyring,
        "retention",
        steps,
        within=lambda conn, jid: conn.execute(
            T.retention_sweeps.insert().values(
                job_id=jid, at=plan.at, status="running", active=1, created_at=plan.at, created_by="test"
            )
        ),
    )
    assert w.retention.active() == job
    assert w.retention.start() == job  # resumed, not a second sweep
    st = w.retention.wait(job, timeout=60)
    assert st.status == "done" and len(st.steps) == len(steps) > 3
    assert w.retention.active() is None
    assert w.retention.sweeps(1)[0]["status"] == "done"


# --------------------------------------------------------------------------- CLI


def test_cli_plan_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    load_example_app("projects").create(engine, 30, seed=0)
    engine.dispose()
    monkeypatch.setenv("FIDUCIARY_DATA_DIR", str(tmp_path / "fid"))
    common = [
        "--policy",
        str(example_policy("projects")),
        "--connection",
        f"projects_db=sqlite:///{tmp_path / 'app.db'}",
        "--at",
        "2024-09-01",
    ]
    runner = CliRunner()
    res = runner.invoke(retention_app, ["plan", *common, "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    due = {(t["rule"], t["target"]): t["count"] for t in plan["tasks"]}
    assert due["log_delete", "projects_db.access_logs"] > 0
    res = runner.invoke(retention_app, ["run", *common])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["status"] == "done"
    assert "log_delete" in res.stdout and "deleted" in res.stdout
    with create_engine(f"sqlite:///{tmp_path / 'app.db'}").connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM access_logs WHERE requested_at < '2024-03-01'")
        ).scalar()
    assert left == 0
    # Bad input: a clear error, exit 2, nothing changed.
    for bad, message in (
        (["--at", "yesterday"], "not an ISO 8601"),
        (["--connection", "projects_db"], "expected name=value"),
        (["--clock", "projects_db.nope=x"], "unknown collection"),
        (["--every", "soon"], "--every"),
    ):
        res = runner.invoke(retention_app, ["run", "--policy", str(example_policy("projects")), *bad])
        assert res.exit_code == 2, (bad, res.output)
        assert message in res.output, (bad, res.output)
    res = runner.invoke(retention_app, ["plan"])
    assert res.exit_code == 2 and "no policy" in res.output


# --------------------------------------------------------------------------- scheduling


def test_inline_scheduler_sweeps_when_due(world_of: Any) -> None:
    w: World = world_of("projects", 20)
    s = RetentionScheduler(w.retention, timedelta(hours=12), check_every=0.05)
    assert s.due()
    job = s.tick()
    assert job is not None
    assert w.retention.wait(job, timeout=60).status == "done"
    assert not s.due() and s.tick() is None  # the next one is 12 hours away
    assert s.due(datetime.now(UTC) + timedelta(hours=13))
    s.start()  # the thread starts nothing new either
    s.stop(5)
    assert len(w.retention.sweeps()) == 1


def test_celery_app_gets_the_sweep_task_and_its_beat_entry() -> None:
    app = make_celery_app("memory://")
    install_celery(app, every=3600)
    install_celery(app, every=3600)  # idempotent
    entry = app.conf.beat_schedule[BEAT_ENTRY]
    assert entry["task"] == TASK_SWEEP and entry["schedule"] == 3600.0
    assert entry["options"]["queue"] == app.conf.task_default_queue
    assert TASK_SWEEP in app.tasks
    assert "fiduciary-recover-jobs" in app.conf.beat_schedule  # the jobs' own entry stays
    # The task without a policy in the worker does nothing, and says so.
    app.fiduciary_state.get = dict
    assert app.tasks[TASK_SWEEP]() is None


@pytest.mark.parametrize(
    "keys",
    [
        list(range(1, 5001)),  # dense
        [i * 1_000_003 for i in range(1, 3001)],  # sparse
        list(range(1, 200)) + list(range(10**9, 10**9 + 4000)) + [2 * 10**9],  # one dense bucket
        [f"k{i:06d}" for i in range(2500)],  # text keys
    ],
    ids=["dense", "sparse", "clustered", "text"],
)
def test_batches_cover_every_due_row_once(keys: list[Any], tmp_path: Path) -> None:
    from sqlalchemy.sql import column, table

    from fiduciary.retention.plan import _batches

    engine = create_engine(f"sqlite:///{tmp_path / 'k.db'}")
    kind = "INTEGER" if isinstance(keys[0], int) else "TEXT"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE t (k {kind} PRIMARY KEY, due INTEGER)"))
        rows = [{"k": k, "d": i % 3 != 0} for i, k in enumerate(keys)]
        conn.execute(text("INSERT INTO t VALUES (:k, :d)"), rows)
    k, due = column("k"), column("due")
    with engine.connect() as conn:
        n, ranges = _batches(conn, k, [due == 1], 300, table("t", k, due))
    expected = sorted(key for i, key in enumerate(keys) if i % 3 != 0)
    assert n == len(expected)
    got: list[Any] = []
    for lo, hi in ranges:
        part = [x for x in expected if (lo is None or x > lo) and x <= hi]
        assert 0 < len(part) <= 3 * 300
        got.extend(part)
    assert got == expected  # every due row in exactly one batch, in key order
    engine.dispose()


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_closes_and_erases_accounts(world_of: Any, example: str) -> None:
    """Each example's closure stages run on its own app database: an account closed long
    ago is gone from the accounts table and crypto-shredded; one closed yesterday is kept
    (every example but voiceapi and dataplatform keeps some data after closure)."""
    w: World = world_of(example, 20)
    cp = w.fid.policy
    root = next(c for c in cp.collections.values() if "email" in c.identities and c.primary_key)
    table = w.app.metadata.tables[root.collection]
    email_col = table.c[root.identities["email"]]
    with w.engine.connect() as conn:
        emails = [
            str(e) for e in conn.execute(select(email_col).where(email_col.is_not(None)).limit(2)).scalars()
        ]
    at = utc(2030, 1, 1)
    kind = next(k for k, s in cp.policy.subjects.items() if s.account)
    old, new = (
        w.fid.sign_up(kind, identities={"email": e}, region="DE", now=utc(2020, 1, 1)) for e in emails
    )
    w.fid.vault.close(old, now=utc(2027, 1, 1))
    w.fid.vault.close(new, now=at - timedelta(days=1))
    st = w.retention.run(at, timeout=120)
    assert st.status == "done", st.error
    with w.engine.connect() as conn:
        left = set(conn.execute(select(email_col).where(email_col.is_not(None))).scalars())
    assert emails[0] not in left
    assert w.fid.vault.subject(old).status == "erased"
    final_cutoff = min(before(at, p) for p, _ in closure_stages(cp))
    if at - timedelta(days=1) > final_cutoff:  # a grace period longer than a day: the new one stays
        assert emails[1] in left and w.fid.vault.subject(new).status == "closed"
    else:
        assert w.fid.vault.subject(new).status == "erased"


def test_the_server_sweeps_when_told_to(world_of: Any, tmp_path: Path) -> None:
    """FIDUCIARY_RETENTION_EVERY: the server's own scheduler sweeps as soon as one is due."""
    from fastapi.testclient import TestClient

    from fiduciary.config import Settings
    from fiduciary.web.app import create_app

    w: World = world_of("projects", 60)
    url = w.engine.url.render_as_string(hide_password=False)
    # Today's sweep deletes the generated access log lines older than six months (PLA-3).
    assert any(t.count for t in w.retention.plan().tasks if t.rule == "log_delete")
    s = Settings(data_dir=tmp_path / "server", connections={w.datastore: url}, retention_every="1 day")
    with TestClient(create_app(w.fid, settings=s, mailer=w.outbox)):
        deadline = datetime.now(UTC) + timedelta(seconds=60)
        while not any(sw["status"] == "done" for sw in w.retention.sweeps()):
            assert datetime.now(UTC) < deadline, "the server did not sweep"
            time.sleep(0.05)
    assert not any(t.count for t in w.retention.plan().tasks if t.rule == "log_delete")
    assert len(list(w.fid.audit.query(action="retention.sweep"))) == 1
    with pytest.raises(ValueError, match="fortnight"):
        Settings(retention_every="1 fortnight")
