"""The SQL connector on every example's app database, on SQLite, PostgreSQL and MariaDB:
set-based fetch and erasure, exemptions, verification, idempotence, foreign keys.

Statements are counted with a ``before_cursor_execute`` listener: a batch of 50 erasures
takes at most one SELECT, one DELETE and one UPDATE per collection, never one per row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select, text

from fiduciary.connectors import connector_for
from fiduciary.connectors.sql import ErasureError, SQLConnector
from fiduciary.examples import EXAMPLES, example_policy, load_example_app
from fiduciary.policy import CompiledPolicy, compile_policy, load_policy
from fiduciary.requests.masking import MaskingError
from fiduciary.requests.plan import Plan, PlanError, PlanNode, build_plan

SIZE = 200
BATCH = 50
KEY = b"erasure-key-for-tests-0123456789"


@dataclass
class AppDB:
    example: str
    backend: str
    engine: Engine
    app: ModuleType
    cp: CompiledPolicy
    plan: Plan


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_database")
        return url
    url = request.getfixturevalue("mariadb_database")
    return url


def _open(example: str, url: str) -> Iterator[AppDB]:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        # SQLite checks foreign keys only when asked; ask, so it holds us to them too.
        event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA foreign_keys=ON"))
    app = load_example_app(example)
    app.create(engine, SIZE)
    cp = compile_policy(load_policy(example_policy(example)))
    try:
        yield AppDB(example, engine.dialect.name, engine, app, cp, build_plan(cp, cp.identity_kinds))
    finally:
        engine.dispose()


@pytest.fixture(params=EXAMPLES)
def appdb(request: pytest.FixtureRequest, backend_url: str) -> Iterator[AppDB]:
    yield from _open(request.param, backend_url)


@pytest.fixture
def filelocker(tmp_path: Path) -> Iterator[AppDB]:
    yield from _open("filelocker", f"sqlite:///{tmp_path / 'filelocker.db'}")


class Counter:
    """Statements the database receives, by first word."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.counts: dict[str, int] = {}
        event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        word = statement.lstrip().split(None, 1)[0].upper()
        self.counts[word] = self.counts.get(word, 0) + 1

    def reset(self) -> None:
        self.counts = {}

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on)


# --------------------------------------------------------------------------- helpers


def _root(plan: Plan) -> PlanNode:
    return plan.nodes[0]


def _seeds(db: AppDB, n: int, *, step: int = 3) -> dict[str, dict[str, list[Any]]]:
    """``n`` requests for every ``step``-th subject of the root collection, each giving one
    of the root's identity kinds in turn (email, then phone, user id ...)."""
    root = _root(db.plan)
    kinds = [i for i in root.inputs if i.identity is not None]
    table = db.app.metadata.tables[root.name]
    pk = root.primary_key[0]
    with db.engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c[pk])).mappings().all()
    chosen = rows[::step][:n]
    seeds: dict[str, dict[str, list[Any]]] = {}
    for i, row in enumerate(chosen):
        inp = kinds[i % len(kinds)]
        value = row[inp.field]
        if value is None:  # no phone on this account: fall back to the first kind
            inp = kinds[0]
            value = row[inp.field]
        assert inp.identity is not None
        seeds[f"req-{i:03d}"] = {inp.identity: [str(value)]}
    return seeds


def _snapshot(db: AppDB) -> dict[str, dict[Any, dict[str, Any]]]:
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    with db.engine.connect() as conn:
        for t in db.app.metadata.sorted_tables:
            pk = next(iter(t.primary_key.columns)).name
            out[t.name] = {r[pk]: dict(r) for r in conn.execute(select(t)).mappings()}
    return out


def _oracle(db: AppDB, identities: dict[str, list[Any]]) -> dict[str, set[Any]]:
    """The rows one request reaches, the slow obvious way: one query per value, SELECT *,
    following the plan's inputs. Independent of the connector's batching and matching."""
    found: dict[str, dict[Any, dict[str, Any]]] = {}
    with db.engine.connect() as conn:
        for node in db.plan.nodes:
            pk = node.primary_key[0]
            rows: dict[Any, dict[str, Any]] = {}
            for inp in node.inputs:
                if inp.identity is not None:
                    values = list(identities.get(inp.identity, []))
                    if node.field(inp.field).data_type == "integer":
                        values = [int(v) for v in values]
                else:
                    assert inp.source is not None and inp.source_field is not None
                    values = sorted(
                        {
                            r[inp.source_field]
                            for r in found[inp.source].values()
                            if r[inp.source_field] is not None
                        }
                    )
                for v in values:
                    q = text(f"SELECT * FROM {node.name} WHERE {inp.field} = :v")
                    for r in conn.execute(q, {"v": v}).mappings():
                        rows[r[pk]] = dict(r)
            found[node.collection] = rows
    return {c: set(rows) for c, rows in found.items()}


def _foreign_keys_hold(db: AppDB) -> None:
    with db.engine.connect() as conn:
        for t in db.app.metadata.sorted_tables:
            for fk in t.foreign_keys:
                parent = fk.column.table
                q = (
                    select(fk.parent)
                    .select_from(t.outerjoin(parent, fk.parent == fk.column))
                    .where(fk.parent.is_not(None), fk.column.is_(None))
                )
                dangling = conn.execute(q).all()
                assert not dangling, f"{t.name}.{fk.parent.name} -> {parent.name}: {len(dangling)} dangling"


# --------------------------------------------------------------------------- every example, every backend


def test_fetch_batch_returns_exactly_each_requests_rows(appdb: AppDB) -> None:
    db = appdb
    seeds = _seeds(db, 8)
    counter = Counter(db.engine)
    conn = SQLConnector(db.engine)
    fetched = conn.fetch(db.plan, seeds)
    selects = counter.counts.get("SELECT", 0)
    counter.close()
    assert set(fetched) == set(seeds)
    assert selects <= len(db.plan.nodes), counter.counts  # one per collection, for 8 requests
    total = 0
    for rid, idents in seeds.items():
        expected = _oracle(db, idents)
        got = {c: {r[db.plan.node(c).primary_key[0]] for r in rows} for c, rows in fetched[rid].items()}
        assert got == expected, rid
        total += sum(len(v) for v in got.values())
        # the row itself, field for field, as the database holds it
        root = _root(db.plan)
        assert fetched[rid][root.collection], rid
    assert total > len(seeds) * 3  # the subjects have rows beyond their account


def test_erasure_is_set_based_complete_exempt_aware_and_idempotent(appdb: AppDB) -> None:
    db = appdb
    seeds = _seeds(db, BATCH)
    assert len(seeds) == BATCH
    conn = SQLConnector(db.engine)
    before_found = conn.find(db.plan, seeds)
    owned = {
        c: set().union(*([{k[0]} for k in keys] or [set()])) for c, keys in before_found.owned_by.items()
    }
    before = _snapshot(db)

    counter = Counter(db.engine)
    result = conn.mask(db.plan, seeds, key=KEY)
    counts = dict(counter.counts)
    counter.close()

    n = len(db.plan.nodes)
    dml = counts.get("UPDATE", 0) + counts.get("DELETE", 0)
    # 50 people, hundreds of rows: at most one UPDATE and one DELETE per collection,
    # one SELECT per collection to find and one to verify.
    assert dml <= 2 * n, counts
    assert counts.get("SELECT", 0) <= 2 * n, counts
    assert dml == result.statements.get("update", 0) + result.statements.get("delete", 0)
    assert result.ok, {r: v.verification.violations for r, v in result.requests.items() if v.verification}
    changed_rows = sum(
        c.deleted + c.updated for r in result.requests.values() for c in r.collections.values()
    )
    assert changed_rows > 2 * BATCH  # many rows changed, by few statements

    after = _snapshot(db)
    _foreign_keys_hold(db)

    # Other people's rows are untouched; only the requesters' own rows change.
    by_table = {db.plan.node(c).name: c for c in db.plan.collections}
    for table, rows in before.items():
        mine = owned.get(by_table.get(table, ""), set())
        for pk, row in rows.items():
            if pk not in mine:
                assert after[table].get(pk) == row, (table, pk)
        assert set(after[table]) <= set(rows)  # nothing appears

    # No identity a requester gave is left, in their own rows or in any identity field,
    # but in a field an exemption keeps. (Someone else's call log may hold the number
    # they called: that row is the other person's, out of reach of the policy's links.)
    identity_cols = {
        (db.plan.node(c).name, f.name)
        for c in db.plan.collections
        for f in db.plan.node(c).fields
        if f.identity
    }
    for rid, idents in seeds.items():
        report = result.requests[rid]
        given = {str(v).casefold() for vs in idents.values() for v in vs}
        for table, rows in after.items():
            coll = by_table.get(table)
            mine = {k[0] for k, reqs in before_found.owned_by.get(coll or "", {}).items() if rid in reqs}
            for pk, row in rows.items():
                for col, value in row.items():
                    if not isinstance(value, str) or value.casefold() not in given:
                        continue
                    if pk not in mine and (table, col) not in identity_cols:
                        continue
                    assert coll is not None, (rid, table, col)
                    rule = report.collections[coll].fields.get(col, {})
                    assert "exemption" in rule, (rid, table, col, rule)

    # Every field the policy decides on is recorded, with the exemption where one applies.
    for rid, report in result.requests.items():
        for coll, ce in report.collections.items():
            for fname, entry in ce.fields.items():
                assert entry["strategy"] in ("null", "fixed", "hmac", "random", "delete", "unlink", "keep")
                if entry.get("exemption"):
                    assert entry["strategy"] == "keep" and entry.get("reason"), (rid, coll, fname)

    # A second run (a worker that died after the commit) changes nothing and writes nothing.
    counter = Counter(db.engine)
    again = conn.mask(db.plan, seeds, key=KEY)
    counts2 = dict(counter.counts)
    counter.close()
    assert counts2.get("UPDATE", 0) == 0 and counts2.get("DELETE", 0) == 0, counts2
    assert again.ok
    assert _snapshot(db) == after


# --------------------------------------------------------------------------- details, on SQLite


def test_policy_strategies_land_as_written(filelocker: AppDB) -> None:
    db = filelocker
    conn = SQLConnector(db.engine)
    seeds = {"r1": {"email": ["user1@example.com"]}}
    before = _snapshot(db)
    result = conn.mask(db.plan, seeds, key=KEY)
    after = _snapshot(db)
    user = after["users"][1]
    assert user["email"] != "user1@example.com" and len(user["email"]) == 64  # hmac
    assert user["password_hash"] is None and user["birth_date"] is None  # null
    assert user["intercom_opt_out"] in (True, 1)  # fixed: the opt-out outlives the account (PUT-11)
    assert not [f for f in after["files"].values() if f["user_id"] == 1]  # delete
    kept = [p for p in after["payments"].values() if p["user_id"] == 1]
    assert kept == [p for p in before["payments"].values() if p["user_id"] == 1]  # tax law
    assert len(after["content_blobs"]) == len(before["content_blobs"])  # shared content stays (PUT-13)
    fields = result.requests["r1"].collections["filelocker_db.payments"].fields
    assert fields["paypal_email"]["exemption"] == "legal_minimum:payments"
    assert fields["paypal_email"]["basis"] == "legal_obligation"
    assert "seven years" in fields["paypal_email"]["reason"]
    # The same email masks to the same value under the same key (hmac is deterministic).
    from fiduciary.requests.masking import MaskContext, strategy_for

    node = db.plan.node("filelocker_db.users")
    ctx = MaskContext("x", node.collection, node.field("email"), "1", "user1@example.com", {}, KEY)
    assert strategy_for("hmac").value(ctx) == user["email"]


def test_active_legal_hold_keeps_everything_of_that_request_only(filelocker: AppDB) -> None:
    db = filelocker
    conn = SQLConnector(db.engine)
    seeds = {"held": {"email": ["user2@example.com"]}, "free": {"email": ["user3@example.com"]}}
    before = _snapshot(db)
    result = conn.mask(db.plan, seeds, key=KEY, holds={"held": ["abuse_reports"]})
    after = _snapshot(db)
    assert after["users"][2]["email"] == "user2@example.com"  # abuse_reports covers emails
    assert after["users"][3]["email"] != "user3@example.com"
    held = result.requests["held"].collections["filelocker_db.users"].fields["email"]
    assert held["exemption"] == "abuse_reports" and held["basis"] == "legal_claims"
    # rows with an exempt ip address are kept whole: their deletion is suspended
    ips = result.requests["held"].collections["filelocker_db.sessions"]
    if ips.rows:
        assert ips.suspended is not None and ips.deleted == 0
        assert [s for s in after["sessions"].values() if s["user_id"] == 2] == [
            s for s in before["sessions"].values() if s["user_id"] == 2
        ]
    assert result.ok


def test_unlink_cuts_only_the_requesters_link(tmp_path: Path) -> None:
    db = next(_open("social", f"sqlite:///{tmp_path / 'social.db'}"))
    conn = SQLConnector(db.engine)
    before = _snapshot(db)
    member = before["members"][1]
    sent = {k: m for k, m in before["messages"].items() if m["sender_id"] == 1}
    received = {k: m for k, m in before["messages"].items() if m["recipient_id"] == 1}
    assert sent or received
    result = conn.mask(db.plan, {"r": {"email": [member["email"]]}}, key=KEY)
    assert result.ok
    after = _snapshot(db)
    for k, m in sent.items():
        assert after["messages"][k]["sender_id"] is None
        assert after["messages"][k]["recipient_id"] == m["recipient_id"]  # the other person's link stays
        assert after["messages"][k]["body"] == m["body"]  # shared content stays
    for k, m in received.items():
        assert after["messages"][k]["recipient_id"] is None
        assert after["messages"][k]["sender_id"] == m["sender_id"]
    # other people's comments on the person's posts are theirs: untouched
    posts = {k for k, p in before["posts"].items() if p["member_id"] == 1}
    for k, c in before["comments"].items():
        if c["post_id"] in posts and c["member_id"] != 1:
            assert after["comments"][k] == c
    db.engine.dispose()


def test_bad_input_changes_nothing(filelocker: AppDB) -> None:
    db = filelocker
    conn = SQLConnector(db.engine)
    before = _snapshot(db)
    seeds = {"r": {"email": ["user4@example.com"]}}
    with pytest.raises(MaskingError, match="hmac needs the erasure key"):
        conn.mask(db.plan, seeds)
    with pytest.raises(MaskingError, match="no_such_hold"):
        conn.mask(db.plan, seeds, key=KEY, holds={"r": ["no_such_hold"]})
    with pytest.raises(PlanError, match="passport"):
        conn.mask(db.plan, {"r": {"passport": ["X"]}}, key=KEY)
    # a database error mid-way rolls the whole erasure back
    with db.engine.begin() as c:
        c.execute(
            text("CREATE TRIGGER no_delete BEFORE DELETE ON sessions BEGIN SELECT RAISE(ABORT, 'nope'); END")
        )
    with pytest.raises(ErasureError, match="rolled back"):
        conn.mask(db.plan, seeds, key=KEY)
    assert _snapshot(db) == before


def test_large_batches_split_in_lists_but_stay_set_based(filelocker: AppDB) -> None:
    db = filelocker
    conn = SQLConnector(db.engine, chunk_size=7, max_params=21)
    seeds = {f"r{i}": {"email": [f"user{i}@example.com"]} for i in range(1, 41)}
    plain = SQLConnector(db.engine).fetch(db.plan, seeds)
    counter = Counter(db.engine)
    chunked = conn.fetch(db.plan, seeds)
    counter.close()
    assert chunked == plain
    # 40 emails and ~40 user ids in IN lists of 7, at most 21 values a statement
    assert counter.counts["SELECT"] <= 2 + 8 * (len(db.plan.nodes) - 1)


def test_registry_builds_sql_connectors() -> None:
    c = connector_for({"type": "sql", "url": "sqlite://"})
    assert isinstance(c, SQLConnector)
    c.close()
    c2 = connector_for("sqlite://")
    assert isinstance(c2, SQLConnector)
    c2.close()
    with pytest.raises(ValueError, match="no connector named"):
        connector_for("carrier-pigeon")
