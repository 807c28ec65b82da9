"""Aggregates for partners (PUT-8, PLV-5, PLO-6) on SQLite and the real PostgreSQL: only
groups of at least k people leave, k from the recipient's min_group (default 10); each
export is an aggregate disclosure; a recipient not declared aggregate-only is refused, and
individual data to an aggregate-only one too. The API and the CLI over it."""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from fiduciary.aggregates import DEFAULT_K, AggregateError, AggregateRefused, export_aggregates, k_for
from fiduciary.cli import app as cli_app
from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.decide import Reason
from fiduciary.disclosures import DisclosureRefused
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


def open_example(stores: Stores, name: str) -> Fiduciary:
    return Fiduciary.open(
        example_policy(name),
        database_url=stores.data_url,
        keys_database_url=stores.keys_url,
        keyring=Keyring.generate(),
    )


@pytest.fixture
def filelocker(stores: Stores) -> Iterator[Fiduciary]:
    fid = open_example(stores, "filelocker")
    yield fid
    fid.close()


def hits(groups: dict[str, int], per_person: int = 2) -> list[dict[str, Any]]:
    """Pixel hits: ``per_person`` per visitor, ``groups[country]`` visitors per country."""
    rows = []
    for country, people in groups.items():
        for p in range(people):
            for h in range(per_person):
                rows.append({"visitor": f"cookie-{country}-{p}", "country": country, "pages": h + 1})
    return rows


def count(fid: Fiduciary, table: Any) -> int:
    with fid.data.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_put8_only_groups_of_k_people_leave(filelocker: Fiduciary) -> None:
    fid = filelocker
    k = k_for(fid.policy, "statistics_partners")
    assert k == 10  # min_group: 10 in examples/filelocker
    rows = hits({"DE": 12, "NL": k, "BE": k - 1, "FR": 1})
    export = export_aggregates(
        fid,
        "statistics_partners",
        "site_statistics",
        rows,
        group_by=["country"],
        person="visitor",
        measures=["pages"],
        categories=["user.behavior.browsing_history"],
        actor="analyst",
    )
    assert [(g["country"], g["people"], g["records"]) for g in export.groups] == [
        ("DE", 12, 24),
        ("NL", 10, 20),
    ]
    assert export.groups[0]["pages_sum"] == 36 and export.groups[0]["pages_mean"] == 1.5
    assert export.suppressed == 2 and export.people == 22 and export.k == 10
    # Nothing that names a person leaves, and the small groups are not even named.
    text = export.to_csv()
    assert "cookie-" not in text and "BE" not in text and "FR" not in text
    assert next(csv.reader(io.StringIO(text))) == ["country", "people", "records", "pages_sum", "pages_mean"]
    # Recorded as an aggregate disclosure: counts only, nobody linked.
    d = fid.disclosures.get(export.disclosure_id or 0)
    assert (d.kind, d.recipient, d.form, d.subjects, d.purpose) == (
        "aggregate",
        "statistics_partners",
        "aggregate",
        22,
        "site_statistics",
    )
    assert d.detail == {"k": 10, "group_by": ["country"], "groups": 2, "suppressed": 2}
    assert count(fid, T.disclosure_subjects) == 0
    with fid.data.connect() as conn:
        entry = conn.execute(select(T.audit_log).where(T.audit_log.c.action == "disclosure.aggregate")).one()
    assert entry.actor == "analyst" and "cookie-" not in str(entry)


def test_put8_nothing_leaves_when_every_group_is_small(filelocker: Fiduciary) -> None:
    export = export_aggregates(
        filelocker,
        "statistics_partners",
        "site_statistics",
        hits({"DE": 9, "NL": 3}),
        group_by=["country"],
        person="visitor",
        categories=["user.behavior.browsing_history"],
    )
    assert export.groups == () and export.disclosure_id is None and export.suppressed == 2
    assert count(filelocker, T.disclosures) == 0


def test_put8_refusals_record_nothing(filelocker: Fiduciary) -> None:
    fid = filelocker
    sid = fid.sign_up("customer", identities={"email": "a@example.com"}, region="DE", age=30)
    rows = hits({"DE": 12})
    # Not an aggregate-only recipient: raw-data recipients get individual disclosures.
    with pytest.raises(AggregateRefused, match="not declared aggregate-only"):
        export_aggregates(
            fid,
            "paypal",
            "payments",
            rows,
            group_by=["country"],
            person="visitor",
            categories=["user.financial"],
        )
    with pytest.raises(AggregateRefused, match="not declared for purpose"):
        export_aggregates(
            fid,
            "statistics_partners",
            "demographics",
            rows,
            group_by=["country"],
            person="visitor",
            categories=["user.behavior.browsing_history"],
        )
    with pytest.raises(AggregateRefused, match="not declared for category"):
        export_aggregates(
            fid,
            "statistics_partners",
            "site_statistics",
            rows,
            group_by=["country"],
            person="visitor",
            categories=["user.contact.email"],
        )
    with pytest.raises(AggregateError, match=r"rows\[3\]: no 'visitor'"):
        bad = [*rows[:3], {"country": "DE"}]
        export_aggregates(
            fid,
            "statistics_partners",
            "site_statistics",
            bad,
            group_by=["country"],
            person="visitor",
            categories=["user.behavior.browsing_history"],
        )
    with pytest.raises(AggregateError, match="no column 'city'"):
        export_aggregates(
            fid,
            "statistics_partners",
            "site_statistics",
            rows,
            group_by=["city"],
            person="visitor",
            categories=["user.behavior.browsing_history"],
        )
    with pytest.raises(AggregateError, match="a measure is a number"):
        export_aggregates(
            fid,
            "statistics_partners",
            "site_statistics",
            [{**r, "pages": "many"} for r in rows],
            group_by=["country"],
            person="visitor",
            measures=["pages"],
            categories=["user.behavior.browsing_history"],
        )
    # And the other way round: the aggregate-only recipient gets no individual data.
    with pytest.raises(DisclosureRefused) as info:
        fid.disclosures.record(
            "statistics_partners", "site_statistics", ["user.behavior.browsing_history"], [sid]
        )
    assert info.value.refused == {sid: Reason.aggregate_only}
    assert count(fid, T.disclosures) == 0


def test_plv5_advertisers_get_groups_of_ten_by_default(stores: Stores) -> None:
    with open_example(stores, "voiceapi") as fid:
        assert fid.policy.recipients["advertisers"].source.min_group is None
        assert k_for(fid.policy, "advertisers") == DEFAULT_K == 10
        rows = [
            {"subject": f"s{i}", "region": "US-CA" if i < 10 else "US-NY", "age_band": "30-39"}
            for i in range(19)
        ]
        export = export_aggregates(
            fid,
            "advertisers",
            "ad_measurement",
            rows,
            group_by=["region", "age_band"],
            categories=["user.demographic.aggregated"],
        )
        assert [(g["region"], g["age_band"], g["people"]) for g in export.groups] == [("US-CA", "30-39", 10)]
        assert export.suppressed == 1
        # PLV-5: what advertisers get from Plivo is aggregated; individual data is refused.
        sid = fid.sign_up("customer", identities={"email": "c@example.com"}, region="US-CA", age=30)
        with pytest.raises(DisclosureRefused, match="aggregate-only"):
            fid.disclosures.record("advertisers", "ad_measurement", ["user.demographic.aggregated"], [sid])


def test_plo6_aggregates_may_be_shared_personal_information_not(stores: Stores) -> None:
    with open_example(stores, "dataplatform") as fid:
        rows = [{"subject": f"u{i}", "browser": "firefox" if i % 2 else "chrome"} for i in range(40)]
        export = export_aggregates(
            fid,
            "aggregate_recipients",
            "sale_of_additional_information",
            rows,
            group_by=["browser"],
            categories=["user.device.browser"],
        )
        assert sorted((g["browser"], g["people"]) for g in export.groups) == [("chrome", 20), ("firefox", 20)]
        assert fid.disclosures.get(export.disclosure_id or 0).kind == "aggregate"
        # The pseudonymized advertising partners are not aggregate-only: no aggregate path.
        with pytest.raises(AggregateRefused, match="not declared aggregate-only"):
            export_aggregates(
                fid,
                "advertising_partners",
                "sale_of_additional_information",
                rows,
                group_by=["browser"],
                categories=["user.device.browser"],
            )


def test_api_and_cli_export_aggregates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = example_policy("filelocker")
    fid = Fiduciary.open(policy, data_dir=tmp_path / "data", keyring=Keyring.generate())
    app = create_app(
        fid, settings=Settings(data_dir=tmp_path / "data"), mailer=OutboxMailer(tmp_path / "out")
    )
    _, key = create_api_key(fid, "partners", ["disclosures:write"])
    h = {"Authorization": f"Bearer {key}"}
    body = {
        "recipient": "statistics_partners",
        "purpose": "site_statistics",
        "categories": ["user.behavior.browsing_history"],
        "group_by": ["country"],
        "person": "visitor",
        "rows": hits({"DE": 11, "NL": 2}, per_person=1),
    }
    with TestClient(app) as c:
        r = c.post("/api/v1/aggregates", json=body, headers=h)
        assert r.status_code == 201, r.text
        assert [(g["country"], g["people"]) for g in r.json()["groups"]] == [("DE", 11)]
        r = c.post(
            "/api/v1/aggregates", json={**body, "recipient": "paypal", "purpose": "payments"}, headers=h
        )
        assert r.status_code == 409 and r.json()["type"] == "/problems/aggregate-refused"
        r = c.post("/api/v1/aggregates", json={**body, "rows": [{"country": "DE"}]}, headers=h)
        assert r.status_code == 422 and "rows[0]" in r.json()["detail"]
    app.state.web.close()
    fid.close()

    rows_file = tmp_path / "hits.csv"
    with rows_file.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["visitor", "country", "pages"])
        w.writeheader()
        w.writerows(hits({"DE": 10, "BE": 4}))
    monkeypatch.setenv("FIDUCIARY_POLICY", str(policy))
    monkeypatch.setenv("FIDUCIARY_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "stats.csv"
    r = CliRunner().invoke(
        cli_app,
        [
            "disclosures",
            "aggregate",
            "statistics_partners",
            "site_statistics",
            "--rows",
            str(rows_file),
            "--group-by",
            "country",
            "--person",
            "visitor",
            "--measure",
            "pages",
            "--category",
            "user.behavior.browsing_history",
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "1 group(s) of at least 10 people released, 1 left out" in r.output
    assert list(csv.DictReader(out.open())) == [
        {"country": "DE", "people": "10", "records": "20", "pages_sum": "30.0", "pages_mean": "1.5"}
    ]
    r = CliRunner().invoke(cli_app, ["disclosures", "list", "--kind", "aggregate", "--json"])
    assert [d["recipient"] for d in json.loads(r.stdout)] == ["statistics_partners", "statistics_partners"]
