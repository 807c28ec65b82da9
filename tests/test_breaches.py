"""The breach register (LAW-10) on SQLite and the real PostgreSQL: the 72-hour clock, the
people and data affected, notices drafted from the policy's organization and DPO and the
breach's facts, the people mailed in batches, the events ledger; the API and the CLI."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from fiduciary.breaches import BreachError, BreachInputError, UnknownBreach
from fiduciary.cli import app as cli_app
from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from fiduciary.web.auth import create_api_key
from tests.conftest import Stores

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def policy_with_dpo(tmp_path: Path) -> Path:
    """examples/filelocker with a data protection officer."""
    data = yaml.safe_load(example_policy("filelocker").read_text())
    data["organization"]["legal_name"] = "Put.io B.V."
    data["organization"]["dpo"] = {
        "name": "Dana Protector",
        "email": "dpo@put.io",
        "phone": "+31 20 555 0100",
    }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


@pytest.fixture
def fid(stores: Stores, tmp_path: Path) -> Iterator[Fiduciary]:
    f = Fiduciary.open(
        policy_with_dpo(tmp_path),
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )
    yield f
    f.close()


def customers(fid: Fiduciary, n: int) -> list[str]:
    return [
        fid.sign_up("customer", identities={"email": f"c{i}@example.com"}, region="NL", age=30)
        for i in range(n)
    ]


def test_law10_register_clock_notices_and_events(fid: Fiduciary, tmp_path: Path) -> None:
    ids = customers(fid, 7)
    outbox = OutboxMailer(tmp_path / "outbox")
    b = fid.breaches.detect(
        "Backup bucket readable",
        "A storage bucket holding a database backup could be read without a password for two days.",
        detected_at=T0,
        occurred_at=T0 - timedelta(days=2),
        categories=["user.contact.email"],
        subject_ids=ids[:5],
        records_estimate=5000,
        actor="security_team",
        now=T0 + timedelta(minutes=30),
    )
    # The clock: the authority is due a notification 72 hours after detection.
    assert b.authority_due_at == T0 + timedelta(hours=72)
    assert (b.status, b.risk, b.subjects, b.subjects_estimate) == ("open", "unassessed", 5, 5)
    assert b.time_left(T0 + timedelta(hours=70)) == timedelta(hours=2)
    assert not b.overdue(T0 + timedelta(hours=71)) and b.overdue(T0 + timedelta(hours=73))
    assert [x.id for x in fid.breaches.overdue(T0 + timedelta(hours=73))] == [b.id]
    # People are not told before an assessment says what it means for them.
    with pytest.raises(BreachError, match="assess it first"):
        fid.breaches.notify_subjects(b.id, outbox)

    b = fid.breaches.assess(
        b.id,
        risk="high",
        consequences="Your email address may be used for phishing.",
        measures="We closed the bucket and rotated every access key.",
        advice="Be wary of mails that ask for your password.",
        categories=["user.financial.paypal_email"],
        subject_ids=ids[4:6],
        now=T0 + timedelta(hours=5),
    )
    assert b.risk == "high" and b.subjects == 6 and b.subjects_estimate == 6
    assert b.categories == ("user.contact.email", "user.financial.paypal_email")
    assert b.authority_notice_required and b.subject_notice_required

    letter = fid.breaches.authority_notice(b.id, now=T0 + timedelta(hours=6))
    text = letter.text
    assert "To: Autoriteit Persoonsgegevens" in text  # the policy's breaches.authority
    assert "Put.io B.V." in text and "Data protection officer: Dana Protector, dpo@put.io" in text
    assert "Email address" in text and "about 6" in text and "about 5,000" in text
    assert "phishing" in text and "rotated every access key" in text
    assert "Reasons for the delay" not in text
    late = fid.breaches.authority_notice(b.id, now=T0 + timedelta(hours=80)).text
    assert "Reasons for the delay" in late
    notice = fid.breaches.subject_notice(b.id).text
    assert "What you can do: Be wary" in notice and "dpo@put.io" in notice and "@example.com" not in notice

    sent = fid.breaches.notify_subjects(b.id, outbox, batch_size=4, actor="security_team")
    assert (sent.sent, sent.no_address, sent.failed, sent.left) == (6, 0, 0, 0)
    assert sorted(m.to for m in outbox.outbox_messages()) == [f"c{i}@example.com" for i in range(6)]
    assert fid.breaches.notify_subjects(b.id, outbox).sent == 0  # nobody twice

    # Later than 72 hours the reasons for the delay are required (Art. 33(1)).
    with pytest.raises(BreachInputError, match="reasons for the delay"):
        fid.breaches.notify_authority(b.id, at=T0 + timedelta(hours=80), now=T0 + timedelta(hours=80))
    b = fid.breaches.notify_authority(
        b.id,
        at=T0 + timedelta(hours=80),
        reference="AP-2026-42",
        delay_reason="The backup's owner was only reached on day three.",
        now=T0 + timedelta(hours=80),
    )
    assert b.authority_notified_at == T0 + timedelta(hours=80) and not b.overdue(T0 + timedelta(hours=90))
    b = fid.breaches.close(b.id, summary="Closed after the keys were rotated.", now=T0 + timedelta(days=9))
    assert b.status == "closed" and b.closed_at is not None
    assert [e.kind for e in b.events] == [
        "detected",
        "assessed",
        "notified_subjects",
        "notified_authority",
        "closed",
    ]
    with pytest.raises(BreachError, match="is closed"):
        fid.breaches.assess(b.id, risk="risk")
    # The register and its audit entries hold no address.
    with fid.data.connect() as conn:
        audit = [
            r for r in conn.execute(select(T.audit_log)).all() if r.action.startswith(("breach.", "notice."))
        ]
        register = conn.execute(select(T.breaches)).all() + conn.execute(select(T.breach_events)).all()
    assert {r.action for r in audit} >= {"breach.detected", "breach.assessed", "breach.closed", "notice.send"}
    assert "@example.com" not in str(audit) + str(register)


def test_law10_risk_decides_who_must_be_told(fid: Fiduciary, tmp_path: Path) -> None:
    ids = customers(fid, 2)
    outbox = OutboxMailer(tmp_path / "outbox")
    low = fid.breaches.detect("Laptop lost", "An encrypted laptop was lost.", subject_ids=ids)
    low = fid.breaches.assess(
        low.id, risk="unlikely", consequences="None: it is encrypted.", measures="Wiped."
    )
    assert not low.authority_notice_required and not low.subject_notice_required
    assert not low.overdue(datetime.now(UTC) + timedelta(days=10))
    assert fid.breaches.close(low.id).status == "closed"  # registered only (Art. 33(5))

    mid = fid.breaches.detect("Mail to wrong list", "A newsletter went to the wrong list.", subject_ids=ids)
    mid = fid.breaches.assess(mid.id, risk="risk", consequences="Spam.", measures="Recalled the mail.")
    assert mid.authority_notice_required and not mid.subject_notice_required
    with pytest.raises(BreachError, match="need not be told"):
        fid.breaches.notify_subjects(mid.id, outbox)
    assert fid.breaches.notify_subjects(mid.id, outbox, force=True).sent == 2
    with pytest.raises(BreachError, match="authority was not notified"):
        fid.breaches.close(mid.id)


def test_an_authority_reference_is_kept_in_the_register_not_the_audit_log(fid: Fiduciary) -> None:
    """Portal references and reasons are free text: the register keeps them; the audit entry
    binds the event by digest (a reference such as AP-2026-0042 looks like a phone number)."""
    b = fid.breaches.detect("Laptop lost", nature="An unencrypted laptop was lost.")
    fid.breaches.notify_authority(b.id, reference="AP-2026-0042")
    (ev,) = [e for e in fid.breaches.get(b.id).events if e.kind == "notified_authority"]
    assert ev.detail is not None and ev.detail["reference"] == "AP-2026-0042"
    (entry,) = list(fid.audit.query(action="breach.notified_authority"))
    assert entry.detail is not None and "reference" not in entry.detail
    assert entry.detail["breach_id"] == b.id and len(entry.detail["event_sha256"]) == 64
    assert fid.audit.verify().ok


def test_law10_bad_input_changes_nothing(fid: Fiduciary) -> None:
    (sid,) = customers(fid, 1)
    with pytest.raises(BreachInputError, match="nature looks like it holds an email address"):
        fid.breaches.detect("Leak", "The address c0@example.com was exposed.")
    with pytest.raises(BreachInputError, match="did you mean"):
        fid.breaches.detect("Leak", "Data exposed.", categories=["user.contact.emial"])
    with pytest.raises(BreachInputError, match="unknown subject"):
        fid.breaches.detect("Leak", "Data exposed.", subject_ids=[sid, "nobody"])
    with pytest.raises(BreachInputError, match="occurred_at is after detected_at"):
        fid.breaches.detect("Leak", "Data exposed.", detected_at=T0, occurred_at=T0 + timedelta(hours=1))
    with pytest.raises(UnknownBreach):
        fid.breaches.get("nosuchbreach")
    b = fid.breaches.detect("Leak", "Data exposed.")
    with pytest.raises(BreachInputError, match="risk 'severe'"):
        fid.breaches.assess(b.id, risk="severe")  # type: ignore[arg-type]
    with fid.data.connect() as conn:
        assert len(conn.execute(select(T.breaches)).all()) == 1
        assert len(conn.execute(select(T.breach_subjects)).all()) == 0


def test_api_and_cli_over_the_register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = policy_with_dpo(tmp_path)
    fid = Fiduciary.open(policy, data_dir=tmp_path / "data")
    ids = customers(fid, 3)
    app = create_app(
        fid, settings=Settings(data_dir=tmp_path / "data"), mailer=OutboxMailer(tmp_path / "outbox")
    )
    _, writer = create_api_key(fid, "security", ["breaches:write", "breaches:read"])
    _, reader = create_api_key(fid, "viewer", ["breaches:read"])
    h = {"Authorization": f"Bearer {writer}"}
    with TestClient(app) as c:
        body: dict[str, Any] = {
            "title": "Token leaked",
            "nature": "An API token was committed to a public repository.",
            "categories": ["user.contact.email"],
            "subject_ids": ids,
        }
        assert (
            c.post("/api/v1/breaches", json=body, headers={"Authorization": f"Bearer {reader}"}).status_code
            == 403
        )
        r = c.post("/api/v1/breaches", json=body, headers=h)
        assert r.status_code == 201, r.text
        bid = r.json()["id"]
        assert r.json()["subjects"] == 3 and 71.9 < r.json()["hours_left"] <= 72
        r = c.post(f"/api/v1/breaches/{bid}/notify-subjects", json={}, headers=h)
        assert r.status_code == 409 and r.json()["type"] == "/problems/breach-step-refused"
        r = c.post(
            f"/api/v1/breaches/{bid}/assess",
            json={"risk": "high", "consequences": "Spam.", "measures": "Revoked it."},
            headers=h,
        )
        assert r.json()["subject_notice_required"] is True
        notices = c.get(
            f"/api/v1/breaches/{bid}/notices", headers={"Authorization": f"Bearer {reader}"}
        ).json()
        assert "Dana Protector" in notices["authority"]["text"] and "Spam." in notices["subjects"]["text"]
        r = c.post(f"/api/v1/breaches/{bid}/notify-subjects", json={}, headers=h)
        assert r.json()["sent"] == 3
        r = c.post(f"/api/v1/breaches/{bid}/notify-authority", json={"reference": "AP-1"}, headers=h)
        assert r.json()["authority_notified_at"] is not None
        r = c.post("/api/v1/breaches", json={**body, "nature": "see x@example.com"}, headers=h)
        assert r.status_code == 422 and r.json()["type"] == "/problems/invalid-breach"
        assert c.get("/api/v1/breaches/nosuch", headers=h).status_code == 404
        listed = c.get("/api/v1/breaches", params={"status": "open"}, headers=h).json()
        assert [b["id"] for b in listed] == [bid]
    app.state.web.close()
    fid.close()

    monkeypatch.setenv("FIDUCIARY_POLICY", str(policy))
    monkeypatch.setenv("FIDUCIARY_DATA_DIR", str(tmp_path / "data"))
    cli = CliRunner()
    r = cli.invoke(
        cli_app,
        [
            "breach",
            "detect",
            "Old breach",
            "--nature",
            "Found late.",
            "--detected-at",
            "2026-01-01T00:00+00:00",
        ],
    )
    assert r.exit_code == 0, r.output
    old = r.stdout.strip()
    r = cli.invoke(cli_app, ["breach", "overdue"])
    assert r.exit_code == 1 and old in r.output and "OVERDUE" in r.output
    r = cli.invoke(
        cli_app, ["breach", "assess", old, "--risk", "risk", "--consequences", "Few.", "--measures", "Fixed."]
    )
    assert r.exit_code == 0, r.output
    r = cli.invoke(cli_app, ["breach", "notice", old, "--for", "authority"])
    assert r.exit_code == 0 and "Reasons for the delay" in r.stdout
    r = cli.invoke(cli_app, ["breach", "notify-authority", old])
    assert r.exit_code == 1 and "reasons for the delay" in r.output
    r = cli.invoke(cli_app, ["breach", "notify-authority", old, "--delay-reason", "Found in an audit."])
    assert r.exit_code == 0, r.output
    r = cli.invoke(cli_app, ["breach", "close", old])
    assert r.exit_code == 0 and "closed" in r.output
    r = cli.invoke(cli_app, ["breach", "overdue"])
    assert r.exit_code == 0 and "no breach is overdue" in r.output
