"""`fiduciary demo`: the demo directory's real content, reuse and reset, refusals, and the
command served as a person starts it (a subprocess on a free port)."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select
from typer.testing import CliRunner

from fiduciary.cli import app as cli
from fiduciary.core import Fiduciary
from fiduciary.demo import APP_DB, Demo, DemoError, build_demo, load_demo
from fiduciary.examples import load_example_app
from fiduciary.mail import read_eml
from fiduciary.requests.lifecycle import RequestDesk
from fiduciary.requests.runner import export_package
from fiduciary.store import tables as T
from fiduciary.web import auth
from tests.serving_support import free_port, serving

SIZE = 120  # people: enough for the requests (user11..user18) and a mix of regions
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Demo, str]:
    """The demo built once by the command, as a person runs it (without serving)."""
    d = tmp_path_factory.mktemp("demo") / "fiduciary-demo"
    result = runner.invoke(cli, ["demo", "--dir", str(d), "--no-serve", "--subjects", str(SIZE)])
    assert result.exit_code == 0, result.output
    demo = load_demo(d)
    assert demo is not None, "demo.json missing after a build"
    return demo, result.output


@pytest.fixture
def fid(built: tuple[Demo, str]) -> Iterator[Fiduciary]:
    demo, _ = built
    with Fiduciary.open(demo.policy, settings=demo.settings()) as f:
        yield f


def test_app_database_and_vault_hold_the_same_people(built: tuple[Demo, str], fid: Fiduciary) -> None:
    demo, _ = built
    app = load_example_app("filelocker")
    engine = create_engine(f"sqlite:///{demo.directory / APP_DB}")
    with engine.connect() as conn:
        users = conn.execute(select(func.count()).select_from(app.users)).scalar_one()
        files = conn.execute(select(func.count()).select_from(app.files)).scalar_one()
        u5 = conn.execute(select(app.users).where(app.users.c.id == 5)).mappings().one()
        partner = conn.execute(
            select(func.count())
            .select_from(app.subscriptions)
            .where(app.subscriptions.c.topic == "partner_offers", app.subscriptions.c.subscribed)
        ).scalar_one()
        erased_email = conn.execute(select(app.users.c.email).where(app.users.c.id == 17)).scalar_one()
    engine.dispose()
    assert users == SIZE and files > SIZE
    with fid.data.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T.subjects)).scalar_one() == SIZE
        given = conn.execute(
            select(func.count())
            .select_from(T.consent_events)
            .where(T.consent_events.c.kind == "consent_given", T.consent_events.c.scope == "partner_offers")
        ).scalar_one()
    assert given == partner > 0  # every subscription in the app is a consent in the ledger
    sid = fid.find("email", "user5@example.com")
    assert sid is not None
    values = fid.vault.read(sid, purpose="test")
    assert values["user.contact.email"].value == "user5@example.com"
    assert values["user.demographic.date_of_birth"].value == u5["birth_date"].isoformat()
    # The erasure that ran: the app row is masked and the vault subject shredded.
    assert erased_email != "user17@example.com"
    assert fid.find("email", "user17@example.com") is None


def test_requests_in_every_state(built: tuple[Demo, str], fid: Fiduciary) -> None:
    demo, _ = built
    desk = RequestDesk.from_fiduciary(fid, None)
    views = {label: desk.status(rid) for label, rid in demo.requests.items()}
    assert {k: v.status for k, v in views.items()} == {
        "received": "received",
        "verified": "verified",
        "child_report": "verified",
        "overdue": "verified",
        "extended": "verified",
        "denied": "denied",
        "access_done": "done",
        "erasure_done": "partial",  # payments kept for tax law (LAW-3)
        "opt_out_done": "done",
    }
    assert views["overdue"].overdue and not views["verified"].overdue
    assert views["extended"].extended and not views["extended"].overdue
    assert views["child_report"].child_report
    assert any(e.kind == "denied" and e.detail and e.detail["reason"] == "identity_not_verified"
               for e in views["denied"].events)  # fmt: skip
    # The console's queue: overdue first among the open ones.
    assert desk.queue(overdue=True)[0].id == demo.requests["overdue"]
    package = export_package(fid, desk, demo.requests["access_done"])
    with zipfile.ZipFile(io.BytesIO(package)) as z:
        assert any("user16@example.com" in z.read(n).decode("utf-8", "replace") for n in z.namelist())


def test_outbox_console_user_and_api_key(built: tuple[Demo, str], fid: Fiduciary) -> None:
    demo, output = built
    subjects = [read_eml(m).subject for m in sorted(demo.outbox.glob("*.eml"))]
    assert sum(s.startswith("Your verification code") for s in subjects) == 8
    assert any("more time" in s for s in subjects) and any("cannot act" in s for s in subjects)
    assert any(s.endswith("is done") for s in subjects)
    c = demo.credentials
    user = auth.verify_password(fid, c.username, c.password)
    assert user is not None and user.role == "admin"
    assert auth.verify_password(fid, c.username, c.password + "x") is None
    key = auth.authenticate(fid, c.api_key)
    assert key is not None and key.allows("requests:read")
    cred = demo.directory / "credentials.json"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert json.loads(cred.read_text())["console"]["password"] == c.password
    assert (demo.directory / ".gitignore").read_text() == "*\n"
    # What the person is shown: the URLs, the login, the key, the outbox.
    for shown in ("http://127.0.0.1:8000/", "/console", "/api/v1/docs", c.password, c.api_key, "outbox"):
        assert shown in output, shown


def test_rerun_reuses_and_reset_rebuilds(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    first = build_demo(d, subjects=40)
    mails = sorted(p.name for p in first.outbox.glob("*.eml"))
    again = runner.invoke(cli, ["demo", "--dir", str(d), "--no-serve", "--subjects", "60"])
    assert again.exit_code == 0, again.output
    assert "reusing" in again.output and "--reset rebuilds it with 60" in again.output
    assert first.credentials.password in again.output  # printed again from the demo dir
    second = load_demo(d)
    assert second is not None
    assert second.requests == first.requests and second.credentials == first.credentials
    assert sorted(p.name for p in second.outbox.glob("*.eml")) == mails  # nothing sent twice
    with Fiduciary.open(second.policy, settings=second.settings()) as f, f.data.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T.subjects)).scalar_one() == 40
        assert conn.execute(select(func.count()).select_from(T.console_users)).scalar_one() == 1
    reset = build_demo(d, subjects=60, reset=True)
    assert reset.built_now and reset.subjects == 60
    assert reset.credentials.password != first.credentials.password
    assert set(reset.requests.values()).isdisjoint(first.requests.values())


def test_unfinished_build_is_rebuilt(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    build_demo(d, subjects=30)
    (d / "demo.json").unlink()  # as if the first build had been interrupted
    assert load_demo(d) is None
    assert build_demo(d, subjects=30).built_now


def test_refuses_a_directory_that_is_not_a_demo(tmp_path: Path) -> None:
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    result = runner.invoke(cli, ["demo", "--dir", str(tmp_path), "--no-serve", "--reset"])
    assert result.exit_code == 2
    assert "is not a demo directory" in result.output and "--dir" in result.output
    assert precious.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(DemoError, match="between 20"):
        build_demo(tmp_path / "x", subjects=5)
    assert runner.invoke(cli, ["demo", "--no-serve", "--subjects", "5"]).exit_code == 2


def test_busy_port_is_named_before_anything_is_built(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(cli, ["demo", "--dir", str(tmp_path / "d"), "--port", str(port)])
    assert result.exit_code == 2
    assert f"port {port}" in result.output and "--port" in result.output
    assert not (tmp_path / "d").exists()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status), bytes(r.read())


def test_demo_command_serves(tmp_path: Path) -> None:
    port = free_port()
    d = tmp_path / "demo"
    env = dict(os.environ)
    # A shell pointing at a real deployment must not receive the demo's data.
    elsewhere = tmp_path / "elsewhere.db"
    env["FIDUCIARY_DATABASE_URL"] = f"sqlite:///{elsewhere}"
    command = ["demo", "--dir", str(d), "--port", str(port), "--subjects", "50"]
    log = tmp_path / "demo.log"
    with serving(command, port, cwd=tmp_path, log=log, env=env, within=90) as base:
        status, body = _get(f"{base}/healthz")
        assert json.loads(body)["status"] == "ok"
        status, home = _get(f"{base}/")
        assert status == 200 and b"put.io" in home
        status, spec = _get(f"{base}/api/v1/openapi.json")
        schema: dict[str, Any] = json.loads(spec)
        assert status == 200 and "/api/v1/requests" in schema["paths"]
        key = json.loads((d / "credentials.json").read_text())["api_key"]["key"]
        status, queue = _get(f"{base}/api/v1/requests", {"Authorization": f"Bearer {key}"})
        assert status == 200 and len(json.loads(queue)["requests"]) == 9
    printed = log.read_text()
    assert f"{base}/console" in printed and "password" in printed and "fid_" in printed
    assert not elsewhere.exists()
