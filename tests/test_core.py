"""The library as a service uses it: Fiduciary.open, sign-up through the age gate, consent,
reads allowed and refused with reasons, withdrawal, GPC, a material change, erasure.
Runs on SQLite and the real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fiduciary.core import Fiduciary, UnderAge
from fiduciary.decide import Reason
from fiduciary.store import tables
from fiduciary.vault.keyring import Keyring
from fiduciary.vault.vault import SubjectErased
from tests.conftest import Stores

ROOT = Path(__file__).resolve().parents[1]
FILELOCKER = ROOT / "examples" / "filelocker" / "policy.yaml"
DATAPLATFORM = ROOT / "examples" / "dataplatform" / "policy.yaml"
NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def open_fid(stores: Stores, policy: Path, keyring: Keyring) -> Fiduciary:
    return Fiduciary.open(
        policy, database_url=stores.data_url, keys_database_url=stores.keys_url, keyring=keyring
    )


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


def count(fid: Fiduciary, table: object) -> int:
    with fid.data.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_put2_under_age_sign_up_is_refused_and_nothing_is_stored(stores: Stores, keyring: Keyring) -> None:
    with open_fid(stores, FILELOCKER, keyring) as fid:
        before = count(fid, tables.subjects), count(fid, tables.identities), count(fid, tables.attributes)
        with pytest.raises(UnderAge) as info:
            fid.sign_up(
                "customer",
                identities={"email": "kid@example.com"},
                attributes={"user.contact.email": "kid@example.com"},
                region="NL",
                birth_date=date(2015, 5, 1),
                now=NOW,
            )
        assert info.value.minimum >= 13
        after = count(fid, tables.subjects), count(fid, tables.identities), count(fid, tables.attributes)
        assert before == after
        assert fid.find("email", "kid@example.com") is None


def test_consent_read_refusal_withdrawal_and_erasure(stores: Stores, keyring: Keyring) -> None:
    with open_fid(stores, FILELOCKER, keyring) as fid:
        sid = fid.sign_up(
            "customer",
            identities={"email": "Ada@Example.com"},
            attributes={"user.contact.email": "ada@example.com"},
            region="DE",
            age=36,
            now=NOW,
        )
        assert fid.find("email", "ada@example.com") == sid
        # Offers for third-party products are opt-in in the EU: refused until consent.
        refused = fid.read(sid, "partner_offers", ["user.contact.email"])
        assert refused.values == {}
        assert refused.decision.refused == {"user.contact.email": Reason.no_consent}
        fid.give_consent(sid, "partner_offers", notice_text="Offers from our partners?", channel="web_form")
        allowed = fid.read(sid, "partner_offers", ["user.contact.email"])
        assert allowed.values["user.contact.email"].value == "ada@example.com"
        # Withdrawal is one call, like giving (LAW-8), and takes effect at once.
        fid.withdraw_consent(sid, "partner_offers", channel="web_form")
        again = fid.read(sid, "partner_offers", ["user.contact.email"])
        assert again.decision.refused == {"user.contact.email": Reason.withdrawn}
        # Account tasks are essential: no opt-out reaches them (PUT-4).
        assert fid.decide(sid, "account", ["user.contact.email"]).ok
        fid.erase(sid)
        with pytest.raises(SubjectErased):
            fid.vault.read(sid)
        assert fid.decide(sid, "account", ["user.contact.email"]).reason == Reason.erased
        assert fid.audit.verify(keyring.verify_key()).ok


def test_law12_gpc_opts_out_on_the_same_request(stores: Stores, keyring: Keyring) -> None:
    with open_fid(stores, DATAPLATFORM, keyring) as fid:
        sale = next(k for k, p in fid.policy.purposes.items() if p.sale)
        sid = fid.sign_up(
            "user",
            identities={"email": "cal@example.com"},
            region="US-CA",
            age=40,
            now=NOW,
        )
        assert fid.decide(sid, sale).reason is None
        assert fid.decide(sid, sale, gpc=True).reason == Reason.sale_opt_out
        # Recorded in the ledger: later requests without the header stay opted out.
        assert fid.decide(sid, sale).reason == Reason.sale_opt_out
        assert fid.consent.state(sid).sale_opt_out


def test_put3_material_change_waits_for_acceptance(stores: Stores, keyring: Keyring, tmp_path: Path) -> None:
    v1 = FILELOCKER.read_text()
    with open_fid(stores, FILELOCKER, keyring) as fid:
        assert fid.policy.policy.changes.material == "opt_in"
        sid = fid.sign_up("customer", identities={"email": "bo@example.com"}, region="NL", age=30, now=NOW)
        assert fid.decide(sid, "quality_assurance").reason is None
    # Version 2 adds a category to quality assurance: a new use of data already held.
    marker = "  quality_assurance:"
    assert marker in v1
    head, tail = v1.split(marker, 1)
    cats_line = next(line for line in tail.splitlines() if line.strip().startswith("categories:"))
    v2 = head + marker + tail.replace(cats_line, cats_line.replace("]", ", user.device.ip_address]"), 1)
    v2 = v2.replace('version: "2011-12-01"', 'version: "2026-12-01"', 1)
    path = tmp_path / "policy.yaml"
    path.write_text(v2)
    with open_fid(stores, path, keyring) as fid:
        assert "quality_assurance" in fid.decider.material
        assert fid.decide(sid, "quality_assurance").reason == Reason.needs_acceptance
        assert fid.decide(sid, "account").ok  # essential purposes are not held back
        fid.accept_policy(sid)
        assert fid.decide(sid, "quality_assurance").reason is None
        # Someone who signs up under version 2 was told already.
        new = fid.sign_up("customer", identities={"email": "cy@example.com"}, region="NL", age=30, now=NOW)
        assert fid.decide(new, "quality_assurance").reason is None


def test_key_rotation_covers_subject_request_and_job_keys(stores: Stores, keyring: Keyring) -> None:
    from fiduciary.jobs import StepSpec, create_job, register_step, run_job

    seen: list[object] = []
    register_step("test.echo", lambda ctx: seen.append(ctx.inputs) or None, replace=True)
    with open_fid(stores, FILELOCKER, keyring) as fid:
        sid = fid.sign_up(
            "customer",
            identities={"email": "rot@example.com"},
            attributes={"user.contact.email": "rot@example.com"},
            region="NL",
            age=30,
            now=NOW,
        )
        job = create_job(
            fid.data, fid.keys, keyring, "test", [StepSpec("test.echo")], inputs={"email": "rot@example.com"}
        )
        rotated = keyring.with_new_kek()
        assert fid.vault.rotate_keys(rotated) >= 2  # the subject's key and the job's key
        only_new = rotated.without_keks_except({rotated.active_kek})
        fid.vault.keyring = only_new
        run_job(job, "w1", {"data": fid.data, "keys": fid.keys, "keyring": only_new})
        assert seen == [{"email": "rot@example.com"}]
    with Fiduciary.open(
        FILELOCKER, database_url=stores.data_url, keys_database_url=stores.keys_url, keyring=only_new
    ) as fid:
        assert fid.vault.read(sid)["user.contact.email"].value == "rot@example.com"
