"""Publishing a new policy version (PUT-3) on SQLite and the real PostgreSQL: the diff's
material purposes are refused for people whose data predates the version until they
accept; the announcement is recorded once, queued to exactly the people concerned and
mailed in batches; ``pending_changes`` says what to accept. The CLI command too."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner

from fiduciary.cli import app as cli_app
from fiduciary.core import Fiduciary
from fiduciary.decide import Reason
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.notices import counts
from fiduciary.publish import send_notices
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def new_version(example: str, tmp_path: Path, change: Any, version: str = "2026-11-01") -> Path:
    """The example's policy as a new version with ``change`` applied to its data."""
    data = yaml.safe_load(example_policy(example).read_text())
    data["version"] = version
    data["effective"] = version
    data["changelog"].append({"version": version, "date": version, "summary": "A change.", "material": True})
    change(data)
    path = tmp_path / f"{example}-{version}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def offers_use_purchases(data: dict[str, Any]) -> None:
    data["purposes"]["partner_offers"]["categories"].append("user.behavior.purchase_history")


def open_fid(stores: Stores, policy: Path, keyring: Keyring) -> Fiduciary:
    return Fiduciary.open(
        policy, database_url=stores.data_url, keys_database_url=stores.keys_url, keyring=keyring
    )


def test_put3_material_change_waits_for_acceptance(stores: Stores, tmp_path: Path) -> None:
    ring = Keyring.generate()
    with open_fid(stores, example_policy("filelocker"), ring) as v1:
        us = v1.sign_up("customer", identities={"email": "us@example.com"}, region="US", age=30)
        eu = v1.sign_up(
            "customer",
            identities={"email": "eu@example.com"},
            region="DE",
            age=30,
            consents=["partner_offers"],
        )
        gone = v1.sign_up("customer", identities={"email": "gone@example.com"}, region="US", age=30)
        visitor = v1.sign_up("visitor", identities={"email": "v@example.com"}, region="US")
        v1.erase(gone)
        assert v1.decide(us, "partner_offers").ok and v1.decide(eu, "partner_offers").ok
        assert not v1.pending_changes(us)
        first = v1.publish(actor="dpo")
        assert first.previous is None and first.notices == 0 and first.new

    v2_path = new_version("filelocker", tmp_path, offers_use_purchases)
    with open_fid(stores, v2_path, ring) as v2:
        later = v2.sign_up("customer", identities={"email": "new@example.com"}, region="US", age=30)
        # Decisions refuse the changed purpose for earlier data until acceptance (PUT-3).
        assert v2.decide(us, "partner_offers").reason is Reason.needs_acceptance
        assert v2.decide(eu, "partner_offers").reason is Reason.needs_acceptance
        assert v2.decide(us, "payments").ok  # what did not change goes on
        assert v2.decide(later, "partner_offers").ok  # collected under the new version
        pending = v2.pending_changes(us)
        assert [p.purpose for p in pending.purposes] == ["partner_offers"]
        assert pending.version_seq == v2.version_seq and pending.purposes[0].version == "2026-11-01"
        assert (
            "purchase_history" in pending.purposes[0].changes[0] and "Offers for third-party" in pending.text
        )
        assert not v2.pending_changes(later) and not v2.pending_changes(visitor)

        pub = v2.publish(actor="dpo", now=NOW)
        assert pub.new and pub.material and pub.acceptance_needed and pub.email
        assert pub.material_purposes == ("partner_offers",) and pub.previous == "2011-12-01"
        # Exactly the people concerned: customers whose data predates it, not erased.
        with v2.data.connect() as conn:
            queued = set(
                conn.execute(select(T.notices.c.subject_id).where(T.notices.c.topic == pub.topic)).scalars()
            )
        assert queued == {us, eu} and pub.notices == 2
        again = v2.publish(actor="someone_else")
        assert not again.new and again.queued == 0 and again.notices == 2 and again.actor == "dpo"

        outbox = OutboxMailer(tmp_path / "outbox")
        delivery = send_notices(v2, outbox, pub, center_url="https://put.io/privacy", batch_size=1)
        assert (delivery.sent, delivery.left) == (2, 0)
        mails = outbox.outbox_messages()
        assert sorted(m.to for m in mails) == ["eu@example.com", "us@example.com"]
        assert (
            "https://put.io/privacy" in mails[0].text and "Offers for third-party products" in mails[0].text
        )
        assert counts(v2, pub.topic) == {"sent": 2}
        assert send_notices(v2, outbox, pub).sent == 0  # nobody twice

        v2.accept_policy(us)
        assert v2.decide(us, "partner_offers").ok and not v2.pending_changes(us)
        assert v2.decide(eu, "partner_offers").reason is Reason.needs_acceptance  # not yet
        v2.accept_policy(eu, "partner_offers")
        assert v2.decide(eu, "partner_offers").ok  # and the EU consent still counts
        with v2.data.connect() as conn:
            entries = conn.execute(select(T.audit_log).where(T.audit_log.c.action == "policy.publish")).all()
        assert [e.result for e in entries] == ["first", "material"]
        assert json.loads(entries[1].detail)["notices"] == 2


def test_put3_notice_policy_applies_after_notice(stores: Stores, tmp_path: Path) -> None:
    ring = Keyring.generate()
    with open_fid(stores, example_policy("dataplatform"), ring) as v1:
        sid = v1.sign_up("user", identities={"email": "u@example.com"}, region="US", age=30)
        v1.sign_up("subscriber", identities={"email": "s@example.com"}, region="US")

    def personalize_by_email(data: dict[str, Any]) -> None:
        data["purposes"]["personalization"]["categories"].append("user.contact.email")

    with open_fid(stores, new_version("dataplatform", tmp_path, personalize_by_email), ring) as v2:
        assert "personalization" in v2.decider.material
        assert v2.decide(sid, "personalization").ok  # "material: notice": no acceptance needed
        assert not v2.pending_changes(sid)
        pub = v2.publish()
        # The policy announces on the site and in the privacy center, not by mail.
        assert pub.material and not pub.acceptance_needed and not pub.email and pub.notices == 0

    def improve_by_email(data: dict[str, Any]) -> None:
        personalize_by_email(data)
        data["purposes"]["improve_service"]["categories"].append("user.contact.email")

    with open_fid(stores, new_version("dataplatform", tmp_path, improve_by_email, "2026-12-01"), ring) as v3:
        pub = v3.publish(email=True)  # the team chooses to write to people as well
        assert pub.email and pub.notices == 2  # purposes without subject kinds concern everyone


def test_cli_publish_stores_announces_and_mails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    with Fiduciary.open(example_policy("filelocker"), data_dir=data_dir) as v1:
        for i in range(3):
            v1.sign_up("customer", identities={"email": f"c{i}@example.com"}, region="US", age=30)
    monkeypatch.setenv("FIDUCIARY_DATA_DIR", str(data_dir))
    v2 = new_version("filelocker", tmp_path, offers_use_purchases)
    r = CliRunner().invoke(cli_app, ["policy", "publish", str(v2), "--center-url", "https://put.io/privacy"])
    assert r.exit_code == 0, r.output
    assert "MATERIAL  purposes.partner_offers" in r.stdout and "need the acceptance" in r.stdout
    assert "notices queued: 3" in r.stdout and "mailed 3" in r.stdout
    assert len(list((data_dir / "outbox").glob("*.eml"))) == 3
    r = CliRunner().invoke(cli_app, ["policy", "publish", str(v2), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["new"] is False
    r = CliRunner().invoke(cli_app, ["policy", "publish", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 2 and "no such file" in r.output


def test_policy_group_stays_light() -> None:
    """`fiduciary policy check` must not load the runtime for `policy publish`."""
    code = (
        "import sys, fiduciary.cli; print([m for m in ('fiduciary.core', 'sqlalchemy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
