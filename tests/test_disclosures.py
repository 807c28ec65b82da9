"""The disclosure ledger on SQLite and the real PostgreSQL: every release recorded and
checked against the policy, legal demands with their gag and the decision to tell the
person (PLU-9), the ledger feeding the access report and Shine the Light answers (PLV-13)
and the transparency report; the API and the CLI over it."""

from __future__ import annotations

import io
import json
import re
import warnings
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from fiduciary.cli import app as cli_app
from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.decide import Reason
from fiduciary.disclosures import DisclosureError, DisclosureRefused
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from fiduciary.web.auth import create_api_key
from tests.conftest import Stores
from tests.test_requests_types import Env, app_url, env

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

__all__ = ["app_url"]  # the fixture, imported for its use here


def open_example(stores: Stores, name: str) -> Fiduciary:
    return Fiduciary.open(
        example_policy(name),
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )


@pytest.fixture
def social(stores: Stores) -> Iterator[Fiduciary]:
    fid = open_example(stores, "social")
    yield fid
    fid.close()


@pytest.fixture
def filelocker(stores: Stores) -> Iterator[Fiduciary]:
    fid = open_example(stores, "filelocker")
    yield fid
    fid.close()


def members(fid: Fiduciary, n: int, kind: str = "member", region: str = "DE") -> list[str]:
    return [
        fid.sign_up(kind, identities={"email": f"p{i}@example.com"}, region=region, age=30) for i in range(n)
    ]


def count(fid: Fiduciary, table: Any) -> int:
    with fid.data.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def audit_text(fid: Fiduciary) -> str:
    with fid.data.connect() as conn:
        return " ".join(str(r) for r in conn.execute(select(T.audit_log)).all())


# --------------------------------------------------------------------------- PLU-9


def test_plu9_gagged_demand_is_not_told_until_the_gag_is_lifted(social: Fiduciary, tmp_path: Path) -> None:
    fid = social
    ids = members(fid, 3)
    outbox = OutboxMailer(tmp_path / "outbox")
    d = fid.disclosures.record(
        "authorities",
        "legal_disclosures",
        ["user.contact.email"],
        ids[:2],
        legal_demand=True,
        gag="court_order",
        reference="Case 17/2026",
    )
    assert (d.kind, d.subjects, d.basis, d.gag, d.notify) == (
        "legal_demand",
        2,
        "legal_obligation",
        "court_order",
        "withheld",
    )
    assert "court order" in (d.notify_reason or "")
    # While gagged: nobody is queued, and the person's own report does not show it.
    assert count(fid, T.notices) == 0
    assert fid.disclosures.for_subject(ids[0]) == []
    assert [x.id for x in fid.disclosures.of_subject(ids[0])] == [d.id]  # the team sees it
    with pytest.raises(DisclosureError, match="not to be told"):
        fid.disclosures.tell(d.id, outbox)
    assert outbox.outbox_messages() == []

    lifted = fid.disclosures.lift_gag(d.id, actor="privacy_team")
    assert lifted.notify == "tell" and [e.kind for e in lifted.events] == ["gag_lifted"]
    sent = fid.disclosures.tell(d.id, outbox)
    assert (sent.sent, sent.no_address, sent.failed, sent.left) == (2, 0, 0, 0)
    mails = outbox.outbox_messages()
    assert sorted(m.to for m in mails) == ["p0@example.com", "p1@example.com"]
    assert "Case 17/2026" in mails[0].text and "Email address" in mails[0].text
    assert fid.disclosures.get(d.id).told_at is not None
    # Telling again writes to nobody twice.
    assert fid.disclosures.tell(d.id, outbox).sent == 0
    assert len(outbox.outbox_messages()) == 2
    shown = fid.disclosures.for_subject(ids[0])
    assert [(x["recipient"], x["kind"], x["detail"]) for x in shown] == [
        ("authorities", "legal_demand", "Legal demand (reference Case 17/2026)")
    ]
    assert fid.disclosures.for_subject(ids[2]) == []
    # The audit trail names the steps, never an address.
    text = audit_text(fid)
    assert "disclosure.record" in text and "disclosure.gag_lifted" in text and "notice.send" in text
    assert "@example.com" not in text


def test_plu9_ungagged_demand_is_told_and_never_means_never(stores: Stores, tmp_path: Path) -> None:
    with open_example(stores, "social") as fid:
        ids = members(fid, 2)
        d = fid.disclosures.record(
            "authorities", "legal_disclosures", ["user.contact.email"], ids, legal_demand=True
        )
        assert d.notify == "tell" and count(fid, T.notices) == 2  # queued in the same transaction
        with pytest.raises(DisclosureError, match="not a gagged legal demand"):
            fid.disclosures.lift_gag(d.id)
    # dataplatform: "notify_subject: never" for its authorities.
    with open_example(stores, "dataplatform") as fid:
        sid = fid.sign_up("user", identities={"email": "u@example.com"}, region="US", age=30)
        d = fid.disclosures.record(
            "authorities", "legal_obligations", ["user.contact.email"], [sid], legal_demand=True, gag="law"
        )
        assert d.notify == "withheld"
        assert fid.disclosures.lift_gag(d.id).notify == "withheld"
        assert fid.disclosures.for_subject(sid) == []
        with fid.data.connect() as conn:
            topic = T.notices.c.topic == fid.disclosures.topic(d.id)
            assert conn.execute(select(func.count()).where(topic)).scalar_one() == 0


def test_legal_demand_rules_and_refusals_change_nothing(filelocker: Fiduciary) -> None:
    fid = filelocker
    ids = members(fid, 3, kind="customer")
    fid.object(ids[1], "intercom_messaging")
    before = count(fid, T.disclosures), count(fid, T.disclosure_subjects), count(fid, T.audit_log)
    with pytest.raises(DisclosureError, match="only on a legal demand"):
        fid.disclosures.record("authorities", "legal_duties", ["user.contact.email"], ids)
    with pytest.raises(DisclosureError, match="not declared for legal demands"):
        fid.disclosures.record("paypal", "payments", ["user.financial.paypal_email"], ids, legal_demand=True)
    with pytest.raises(DisclosureError, match="only a legal demand carries a gag"):
        fid.disclosures.record("paypal", "payments", ["user.financial.paypal_email"], ids, gag="law")  # type: ignore[arg-type]
    with pytest.raises(DisclosureError, match="did you mean 'paypal'"):
        fid.disclosures.record("paypall", "payments", ["user.financial.paypal_email"], ids)
    with pytest.raises(DisclosureError, match="unknown subject"):
        fid.disclosures.record("paypal", "payments", ["user.financial.paypal_email"], [*ids, "nobody"])
    with pytest.raises(DisclosureError, match="reference looks like it holds an email address"):
        fid.disclosures.record(
            "authorities",
            "legal_duties",
            ["user.contact.email"],
            ids,
            legal_demand=True,
            reference="about p0@example.com",
        )
    with pytest.raises(DisclosureError, match="in the future"):
        fid.disclosures.record(
            "paypal",
            "payments",
            ["user.financial.paypal_email"],
            ids,
            at=datetime.now(UTC) + timedelta(days=1),
        )
    # The policy refuses: a category paypal is not declared for; a person who objected.
    with pytest.raises(DisclosureRefused) as info:
        fid.disclosures.record("paypal", "payments", ["user.contact.email"], ids)
    assert set(info.value.refused.values()) == {Reason.recipient_not_declared}
    with pytest.raises(DisclosureRefused, match=r"objection for 1") as info:
        fid.disclosures.record("intercom", "intercom_messaging", ["user.contact.email"], ids)
    assert info.value.refused == {ids[1]: Reason.objection}
    # PUT-8: an aggregate-only recipient never receives individual data.
    with pytest.raises(DisclosureRefused, match="aggregate-only") as info:
        fid.disclosures.record(
            "statistics_partners", "site_statistics", ["user.behavior.browsing_history"], ids
        )
    assert set(info.value.refused.values()) == {Reason.aggregate_only}
    assert (count(fid, T.disclosures), count(fid, T.disclosure_subjects), count(fid, T.audit_log)) == before

    ok = fid.disclosures.record("intercom", "intercom_messaging", ["user.contact.email"], [ids[0], ids[2]])
    assert ok.kind == "routine" and ok.notify == "not_applicable" and ok.subjects == 2
    assert ok.basis == "legitimate_interest" and ok.form == "identified"
    assert count(fid, T.disclosure_subjects) == before[1] + 2


# --------------------------------------------------------------------------- feeds


def test_transparency_report_counts_a_period(social: Fiduciary) -> None:
    fid = social
    ids = members(fid, 4)
    now = datetime.now(UTC)
    last_year = now - timedelta(days=400)
    fid.disclosures.record("service_providers", "provide_service", ["user.name"], ids, at=last_year)  # before
    fid.disclosures.record("service_providers", "provide_service", ["user.name"], ids[:3])
    fid.disclosures.record("service_providers", "support", ["user.contact.email"], ids[2:])
    fid.disclosures.record(
        "authorities",
        "legal_disclosures",
        ["user.name"],
        ids[:1],
        legal_demand=True,
        gag="law",
        reference="R-1",
    )
    fid.disclosures.record("authorities", "legal_disclosures", ["user.name"], ids[1:2], legal_demand=True)
    r = fid.disclosures.transparency_report(since=now - timedelta(days=30), until=now + timedelta(days=1))
    assert r.disclosures == 4 and r.people == 4
    sp = next(x for x in r.recipients if x["recipient"] == "service_providers")
    assert (sp["disclosures"], sp["people"], sp["people_total"]) == (2, 4, 5)
    assert r.legal_demands == {
        "demands": 2,
        "people": 2,
        "gagged": 1,
        "told": 1,
        "withheld": 1,
        "gags": {"law": 1, "court_order": 0, "emergency": 0},
    }
    md = r.to_markdown()
    assert "2 legal demand(s)" in md and "Email address" in md
    assert "R-1" not in md and not any(i in md for i in ids)  # fit to publish
    with pytest.raises(DisclosureError, match="until must be after since"):
        fid.disclosures.transparency_report(since=now, until=now)


def test_access_report_lists_recorded_disclosures(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("filelocker", stores, app_url, tmp_path) as e:
        email = e.email(4)
        sid = e.fid.sign_up("customer", identities={"email": email}, region="DE", age=30)
        e.fid.disclosures.record("intercom", "intercom_messaging", ["user.contact.email"], [sid])
        e.fid.disclosures.record(
            "authorities",
            "legal_duties",
            ["user.contact.email"],
            [sid],
            legal_demand=True,
            gag="court_order",
            reference="GAGGED-17",
        )
        rid = e.verified("access", email)
        e.run(rid)
        z = zipfile.ZipFile(io.BytesIO(e.runner.export(rid)))
        doc = json.loads(z.read("data.json"))
        assert [(d["recipient"], d["purpose"]) for d in doc["disclosures"]] == [
            ("intercom", "intercom_messaging")
        ]
        assert "intercom" in doc["recipients"]  # the ledger's recipient is in "who received it"
        html = z.read("report.html").decode()
        assert "Intercom" in html and "Disclosures we recorded" in html
        assert "GAGGED-17" not in html and "GAGGED-17" not in str(doc)  # gagged (PLU-9)


def shine(e: Env, email: str) -> dict[str, Any]:
    sub = e.desk.submit("shine_the_light", contact={"email": email}, region="US-CA")
    e.run(sub.request_id)
    z = zipfile.ZipFile(io.BytesIO(e.runner.export(sub.request_id)))
    doc: dict[str, Any] = json.loads(z.read("data.json"))
    doc["report"] = z.read("report.txt").decode()
    return doc


def test_plv13_shine_the_light_answers_from_the_ledger(stores: Stores, app_url: str, tmp_path: Path) -> None:
    with env("voiceapi", stores, app_url, tmp_path) as e:
        shared, kept, opted = e.email(1), e.email(2), e.email(3)
        sids = {
            m: e.fid.sign_up("customer", identities={"email": m}, region="US-CA", age=30)
            for m in (shared, kept, opted)
        }
        cats = ["user.device.cookie_id", "user.behavior.email_interaction"]
        e.fid.disclosures.record("marketing_partners", "campaign_measurement", cats, [sids[shared]])
        # PLV-13: the person can say whom not to share with; the ledger then refuses.
        e.fid.consent.opt_out_of_recipient(
            sids[opted], "marketing_partners", channel="privacy_center", policy_version=e.fid.policy.version
        )
        e.fid.forget_state(sids[opted])
        with pytest.raises(DisclosureRefused) as info:
            e.fid.disclosures.record("marketing_partners", "campaign_measurement", cats, [sids[opted]])
        assert info.value.refused == {sids[opted]: Reason.recipient_opt_out}

        doc = shine(e, shared)
        mp = next(r for r in doc["recipients"] if r["key"] == "marketing_partners")
        assert mp["received_your_data"] is True and mp["categories_disclosed"] == sorted(cats)
        assert mp["name"] and mp["address"] and mp["products"]
        assert doc["subject_known"] is True and "Received yours since" in doc["report"]
        other = shine(e, kept)
        mp = next(r for r in other["recipients"] if r["key"] == "marketing_partners")
        assert mp["received_your_data"] is False and mp["disclosures"] == []
        assert "Received none of yours" in other["report"]


# --------------------------------------------------------------------------- API and CLI


def test_api_records_and_lists_disclosures(stores: Stores, tmp_path: Path) -> None:
    with open_example(stores, "social") as fid:
        ids = members(fid, 2)
        app = create_app(
            fid, settings=Settings(data_dir=tmp_path / "data"), mailer=OutboxMailer(tmp_path / "outbox")
        )
        _, admin = create_api_key(fid, "admin", ["admin"])
        _, reader = create_api_key(fid, "reader", ["disclosures:read"])
        h = {"Authorization": f"Bearer {admin}"}
        with TestClient(app) as c:
            body = {
                "recipient": "authorities",
                "purpose": "legal_disclosures",
                "categories": ["user.contact.email"],
                "subject_ids": ids,
                "legal_demand": True,
                "gag": "emergency",
            }
            r = c.post("/api/v1/disclosures", json=body, headers={"Authorization": f"Bearer {reader}"})
            assert r.status_code == 403
            r = c.post("/api/v1/disclosures", json=body, headers=h)
            assert r.status_code == 201, r.text
            did = r.json()["id"]
            assert r.json()["notify"] == "withheld"
            r = c.get(f"/api/v1/subjects/{ids[0]}/disclosures", headers={"Authorization": f"Bearer {reader}"})
            assert [d["id"] for d in r.json()] == [did]
            r = c.post(f"/api/v1/disclosures/{did}/lift-gag", headers=h)
            assert r.json()["notify"] == "tell"
            r = c.post(f"/api/v1/disclosures/{did}/tell", headers=h)
            assert r.json()["sent"] == 2
            routine = {
                **body,
                "recipient": "service_providers",
                "purpose": "provide_service",
                "categories": ["user.name"],
                "legal_demand": False,
                "gag": None,
            }
            refused = c.post("/api/v1/disclosures", json=routine, headers=h)
            assert refused.status_code == 201  # a processor of the service: allowed
            fid.restrict(ids[1])
            refused = c.post("/api/v1/disclosures", json=routine, headers=h)
            assert refused.status_code == 409, refused.text
            problem = refused.json()
            assert problem["type"] == "/problems/disclosure-refused" and problem["refused"] == {
                ids[1]: "restricted"
            }
            bad = c.post("/api/v1/disclosures", json={**body, "recipient": "nobody"}, headers=h)
            assert bad.status_code == 422 and bad.json()["type"] == "/problems/invalid-disclosure"
            assert c.get("/api/v1/disclosures/99999", headers=h).status_code == 404
            page = c.get("/api/v1/disclosures", params={"kind": "legal_demand"}, headers=h).json()
            assert [d["id"] for d in page["disclosures"]] == [did]
            now = datetime.now(UTC)
            md = c.get(
                "/api/v1/transparency",
                params={
                    "since": (now - timedelta(days=1)).isoformat(),
                    "until": (now + timedelta(days=1)).isoformat(),
                    "format": "markdown",
                },
                headers=h,
            )
            assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
            assert "1 legal demand(s)" in md.text
        app.state.web.close()


def test_cli_records_lists_and_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = example_policy("social")
    monkeypatch.setenv("FIDUCIARY_POLICY", str(policy))
    monkeypatch.setenv("FIDUCIARY_DATA_DIR", str(tmp_path / "data"))
    with Fiduciary.open(policy, data_dir=tmp_path / "data") as fid:
        ids = members(fid, 2)
    cli = CliRunner()
    r = cli.invoke(
        cli_app,
        [
            "disclosures",
            "record",
            "authorities",
            "legal_disclosures",
            "--category",
            "user.contact.email",
            "--subject",
            ids[0],
            "--subject",
            ids[1],
            "--legal-demand",
            "--gag",
            "court_order",
            "--reference",
            "C-9",
        ],
    )
    assert r.exit_code == 0, r.output
    did = r.stdout.strip()
    assert did.isdigit()
    r = cli.invoke(
        cli_app,
        [
            "disclosures",
            "record",
            "authorities",
            "legal_disclosures",
            "--category",
            "user.contact.email",
            "--subject",
            ids[0],
        ],
    )
    assert r.exit_code == 1 and "only on a legal demand" in r.output
    r = cli.invoke(cli_app, ["disclosures", "list", "--json"])
    assert [d["id"] for d in json.loads(r.stdout)] == [int(did)]
    r = cli.invoke(cli_app, ["disclosures", "lift-gag", did])
    assert r.exit_code == 0 and "mailed 2" in r.output, r.output
    assert len(list((tmp_path / "data" / "outbox").glob("*.eml"))) == 2
    out = tmp_path / "report.md"
    r = cli.invoke(
        cli_app,
        ["disclosures", "transparency", "--since", "2000-01-01", "--until", "2100-01-01", "-o", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "1 legal demand(s)" in out.read_text()


def test_docs_walkthrough_runs_and_prints_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "disclosures.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(Path(__file__).resolve().parents[1] / "examples")
    namespace: dict[str, object] = {}
    expected: list[str] = []
    for block in blocks:
        expected += re.findall(r"print\(.*\)\s+# (.*)", block)
        exec(compile(block, "docs/disclosures.md", "exec"), namespace)
    assert capsys.readouterr().out.splitlines() == expected
