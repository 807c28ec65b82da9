"""The command line as a person uses it: exit codes, messages, files written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from fiduciary.cli import app
from fiduciary.core import Fiduciary

ROOT = Path(__file__).resolve().parents[1]
FILELOCKER = ROOT / "examples" / "filelocker" / "policy.yaml"
MINIMAL = ROOT / "tests" / "fixtures" / "minimal.yaml"
runner = CliRunner()


def test_policy_check_ok_invalid_and_usage(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["policy", "check", str(FILELOCKER)])
    assert ok.exit_code == 0, ok.output
    assert "ok" in ok.output and "purposes" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.read_text().replace("basis: consent", "basis: consnet"))
    invalid = runner.invoke(app, ["policy", "check", str(bad)])
    assert invalid.exit_code == 1
    assert f"{bad}:" in invalid.output and "did you mean 'consent'?" in invalid.output
    as_json = runner.invoke(app, ["policy", "check", "--json", str(bad)])
    problems = json.loads(as_json.stdout)[0]["problems"]
    assert problems[0]["code"] == "schema.bad_value" and problems[0]["line"] > 1
    missing = runner.invoke(app, ["policy", "check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    assert runner.invoke(app, ["policy", "check", "--bogus", str(FILELOCKER)]).exit_code == 2


def test_render_record_export_import(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["policy", "render", str(FILELOCKER), "-o", str(out)]).exit_code == 0
    assert "put.io" in (out / "notice.html").read_text()
    assert runner.invoke(app, ["policy", "record", str(FILELOCKER), "-o", str(out)]).exit_code == 0
    assert (out / "record.csv").read_text().count("\n") > 5
    assert runner.invoke(app, ["policy", "render", str(FILELOCKER), "-f", "pdf"]).exit_code == 2
    fl = tmp_path / "fl"
    assert (
        runner.invoke(app, ["policy", "export", str(FILELOCKER), "--fideslang", "-o", str(fl)]).exit_code == 0
    )
    draft = tmp_path / "draft.yaml"
    result = runner.invoke(app, ["policy", "import", *map(str, sorted(fl.glob("*.yml"))), "-o", str(draft)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["policy", "check", str(draft)]).exit_code == 0


def test_policy_diff_names_material_changes(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(MINIMAL.read_text().replace("period: 30 days", "period: 90 days"))
    result = runner.invoke(app, ["policy", "diff", str(MINIMAL), str(new), "--json"])
    assert result.exit_code == 0
    changes = json.loads(result.stdout)["changes"]
    assert any(c["material"] and c["subject"] == "retention.account" for c in changes)


def test_keys_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert runner.invoke(app, ["keys", "init", "--data-dir", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["keys", "init", "--data-dir", str(tmp_path)])
    assert again.exit_code == 2 and "exists" in again.output


def test_keys_rotate_then_data_still_reads(tmp_path: Path) -> None:
    with Fiduciary.open(FILELOCKER, data_dir=tmp_path) as fid:
        sid = fid.sign_up(
            "customer",
            identities={"email": "r@example.com"},
            attributes={"user.contact.email": "r@example.com"},
            region="NL",
            age=30,
        )
    result = runner.invoke(app, ["keys", "rotate", "--data-dir", str(tmp_path), "--drop-old"])
    assert result.exit_code == 0, result.output
    assert "re-wrapped 1 data keys under k2" in result.output and "dropped unused KEKs: k1" in result.output
    ring = json.loads((tmp_path / "keyring.json").read_text())
    assert list(ring["kek"]["keys"]) == ["k2"]
    with Fiduciary.open(FILELOCKER, data_dir=tmp_path) as fid:
        assert fid.vault.read(sid)["user.contact.email"].value == "r@example.com"
        with fid.data.connect() as conn:
            rotated = conn.execute(
                text("SELECT actor, detail FROM audit_log WHERE action = 'keys.rotate'")
            ).one()
        assert rotated.actor == "cli"
        assert json.loads(rotated.detail) == {"kek": "k2", "rewrapped": 1, "dropped": ["k1"]}
        assert fid.audit.verify(fid.keyring.verify_key()).ok


def test_audit_verify_names_the_tampered_entry(tmp_path: Path) -> None:
    with Fiduciary.open(FILELOCKER, data_dir=tmp_path) as fid:
        sid = fid.sign_up("customer", identities={"email": "t@example.com"}, region="NL", age=30)
        for _ in range(4):
            fid.decide(sid, "account")
    intact = runner.invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert intact.exit_code == 0, intact.output
    with Fiduciary.open(FILELOCKER, data_dir=tmp_path) as fid, fid.data.begin() as conn:
        conn.execute(text("UPDATE audit_log SET result = 'refused' WHERE seq = 3"))
    tampered = runner.invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert tampered.exit_code == 1
    assert "seq 3: edited" in tampered.output


def test_example_create_builds_the_app_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    result = runner.invoke(app, ["example", "create", "filelocker", "--database-url", url, "--size", "20"])
    assert result.exit_code == 0, result.output
    assert "10 tables" in result.output
    unknown = runner.invoke(app, ["example", "create", "nope", "--database-url", url])
    assert unknown.exit_code == 2 and "the examples are" in unknown.output


def test_keys_create_help_names_every_scope() -> None:
    from fiduciary.cli_web import keys_create
    from fiduciary.web.auth import SCOPES

    doc = " ".join((keys_create.__doc__ or "").split())
    assert [s for s in SCOPES if s not in doc] == []


def test_a_group_alone_answers_as_the_whole_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fiduciary policy ...` runs under a root holding the policy group alone (start-up
    time); what a person sees and the exit code are those of the whole command tree."""
    from fiduciary import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.read_text().replace("basis: consent", "basis: consnet"))
    lines = [
        ["policy", "check", str(FILELOCKER)],
        ["policy", "check", str(bad)],
        ["policy", "check", "--bogus", str(FILELOCKER)],
        ["policy", "chek"],
        ["policy", "--help"],
        ["keys", "--help"],
    ]
    for argv in lines:
        assert cli._group_alone(argv) is not app  # the short path is the one taken
        whole = runner.invoke(app, argv)
        monkeypatch.setattr("sys.argv", ["fiduciary", *argv])
        with pytest.raises(SystemExit) as ended:
            cli.main()
        seen = capsys.readouterr()
        assert ended.value.code == whole.exit_code, argv
        timing = re.compile(r"\(\d+ ms\)")
        assert timing.sub("", seen.out + seen.err) == timing.sub("", whole.output), argv
    assert cli._group_alone(["--help"]) is app


def test_keys_reconcile_after_restoring_the_key_store(tmp_path: Path) -> None:
    """LAW-3, PLO-10: the key store restored from before an erasure: `keys reconcile`
    destroys the erased person's key again (their old data turns to noise), keeps everyone
    else's, and the audit trail records who did it."""
    with Fiduciary.open(FILELOCKER, data_dir=tmp_path) as fid:
        gone, kept = (
            fid.sign_up("customer", identities={"email": f"{who}@example.com"}, region="NL", age=30)
            for who in ("gone", "kept")
        )
    keys_db = next(p for p in tmp_path.iterdir() if p.name.startswith("keys") and p.suffix == ".db")
    backup = tmp_path / "keys-backup"
    shutil.copyfile(keys_db, backup)
    with Fiduciary.open(FILELOCKER, data_dir=tmp_path) as fid:
        fid.erase(gone)
    for leftover in tmp_path.glob(keys_db.name + "-*"):  # the WAL of the store being replaced
        leftover.unlink()
    shutil.copyfile(backup, keys_db)
    result = runner.invoke(app, ["keys", "reconcile", "--data-dir", str(tmp_path), "--actor", "ops-ana"])
    assert result.exit_code == 0, result.output
    assert "looked at 2 data keys: destroyed 1 of erased subjects again" in result.output
    with Fiduciary.open(FILELOCKER, data_dir=tmp_path) as fid:
        assert fid.vault.identities(kept) == {"email": "kept@example.com"}  # its key still opens it
        with fid.keys.connect() as conn:
            held = conn.execute(text("SELECT subject_id FROM subject_keys")).scalars().all()
        assert held == [kept]
        with fid.data.connect() as conn:
            by = text("SELECT actor FROM audit_log WHERE action = 'keys.reconcile'")
            who = conn.execute(by).scalar_one()
        assert who == "ops-ana"
        assert fid.audit.verify(fid.keyring.verify_key()).ok


def test_a_database_that_cannot_be_used_is_an_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fiduciary import cli

    assert runner.invoke(app, ["keys", "init", "--data-dir", str(tmp_path)]).exit_code == 0
    cases = {
        "postgresql://nobody@127.0.0.1:1/none": "the database refused or could not be reached: connection",
        "foo://x": "database URL: Can't load plugin: sqlalchemy.dialects:foo",
        "not a url": "database URL: Could not parse",
    }
    for url, said in cases.items():
        for argv in (["audit", "verify"], ["keys", "reconcile"]):
            line = [*argv, "--data-dir", str(tmp_path), "--database-url", url]
            monkeypatch.setattr("sys.argv", ["fiduciary", *line])
            with pytest.raises(SystemExit) as ended:
                cli.main()
            seen = capsys.readouterr()
            assert ended.value.code == 2, (url, argv)
            assert said in seen.err and "Traceback" not in seen.err, (url, argv, seen.err)
    # anything else is not dressed up as a database problem
    assert cli._database_trouble(ValueError("x")) is None
