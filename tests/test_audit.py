"""The audit log: the chain verifies, and each kind of tampering is named with its seq.

Every test runs on SQLite and on the real PostgreSQL (the ``stores`` fixture). Tampering is
done the way an intruder with database access would: plain SQL on the tables.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, event, func, insert, select, text

from fiduciary import audit
from fiduciary.audit import GENESIS, AuditLog, find_personal_data
from fiduciary.store import make_engine
from fiduciary.store.tables import audit_checkpoints, audit_head, audit_log, subjects
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores

EVERY = 10  # checkpoint cadence in these tests
N = 35  # entries written by fill(): checkpoints at 10, 20, 30; the last 5 after them


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The verifier streams the log in chunks; small ones put chunk boundaries between the
    # rows the tests tamper with.
    monkeypatch.setattr(audit, "CHUNK", 4)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def log(stores: Stores, keyring: Keyring) -> AuditLog:
    return AuditLog(stores.data, keyring, checkpoint_every=EVERY)


def fill(log: AuditLog, n: int = N) -> None:
    """n entries: the first 12 one by one, the rest in two batches."""
    purposes = ["service.delivery", "marketing.communications.email", None]
    for i in range(12):
        seq = log.append(
            None,
            actor=f"service:{i % 2}",
            action="vault.read",
            purpose=purposes[i % 3],
            subject_id=f"subj{i % 4}",
            result="ok" if i % 5 else "denied",
            detail={"categories": ["user.contact.email"], "i": i},
        )
        assert seq == i + 1
    rest = [
        {"actor": "admin:ops", "action": "consent.give", "purpose": "analytics", "subject_id": f"subj{i % 4}"}
        for i in range(12, n)
    ]
    log.append_many(None, rest[:10])
    log.append_many(None, rest[10:])


def sql(engine: Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for s in statements:
            conn.execute(text(s))


def found(log: AuditLog) -> list[tuple[int, str]]:
    report = log.verify()
    assert report.ok == (not report.problems)
    return [(p.seq, p.kind) for p in report.problems]


def swap(engine: Engine, a: int, b: int) -> None:
    # Through a free seq, because seq is the primary key.
    sql(
        engine,
        f"UPDATE audit_log SET seq = -1 WHERE seq = {a}",
        f"UPDATE audit_log SET seq = {a} WHERE seq = {b}",
        f"UPDATE audit_log SET seq = {b} WHERE seq = -1",
    )


def rehash_from(engine: Engine, start: int) -> None:
    """What an intruder who knows the format does: recompute every hash from ``start`` on,
    and the head. No key is needed for the chain itself."""
    with engine.begin() as conn:
        rows = conn.execute(select(audit_log).where(audit_log.c.seq >= start).order_by(audit_log.c.seq)).all()
        prev = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == start - 1)).scalar() or GENESIS
        for r in rows:
            h = audit._entry_hash(
                prev, r.seq, audit._iso(r.at), r.actor, r.action, r.purpose, r.subject, r.result, r.detail
            )
            conn.execute(audit_log.update().where(audit_log.c.seq == r.seq).values(prev_hash=prev, hash=h))
            prev = h
        conn.execute(audit_head.update().values(seq=rows[-1].seq, hash=prev))


# -- an intact log ---------------------------------------------------------------------------


def test_chain_verifies(log: AuditLog, stores: Stores) -> None:
    assert log.verify().ok  # empty log, no head row yet
    fill(log)
    report = log.verify()
    assert report.ok, report.to_text()
    assert (report.entries, report.checkpoints, report.head_seq, report.last_checkpoint) == (N, 3, N, 30)
    assert log.head()[0] == N
    with stores.data.connect() as conn:
        seqs = conn.execute(select(audit_checkpoints.c.seq).order_by(audit_checkpoints.c.seq)).scalars().all()
        chain = conn.execute(select(audit_log.c.prev_hash, audit_log.c.hash).order_by(audit_log.c.seq)).all()
    assert seqs == [10, 20, 30]
    assert chain[0].prev_hash == GENESIS
    assert all(chain[i].prev_hash == chain[i - 1].hash for i in range(1, N))
    assert (
        "OK" in report.to_text() and "last 5 entries are protected by the hash chain only" in report.to_text()
    )


def test_verify_with_the_default_chunk_size(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "CHUNK", 5000)
    fill(log)
    assert log.verify().ok


def test_a_checkpoint_crossed_inside_a_batch(log: AuditLog) -> None:
    log.append_many(None, [{"actor": "svc", "action": "bulk"} for _ in range(45)])
    report = log.verify()
    assert report.ok and report.checkpoints == 4 and report.last_checkpoint == 40


def test_checkpoints_can_be_exported_and_checked_elsewhere(log: AuditLog) -> None:
    fill(log)
    exported = list(log.checkpoints())
    assert [c.seq for c in exported] == [10, 20, 30]
    public = log.keyring.verify_key()
    for c in exported:
        assert c.key_id == log.keyring.verify_key_id()
        public.verify(bytes.fromhex(c.signature), audit._checkpoint_message(c.seq, c.hash, audit._iso(c.at)))
    assert exported[-1].hash == log.query(after_seq=29, limit=1)[0].hash


# -- tampering -------------------------------------------------------------------------------


def test_edited_result_is_named(log: AuditLog, stores: Stores) -> None:
    fill(log)
    sql(stores.data, "UPDATE audit_log SET result = 'denied' WHERE seq = 5")  # was 'ok'
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(5, "edited")]
    assert "seq 5: edited" in report.to_text()


def test_edited_detail_is_named(log: AuditLog, stores: Stores) -> None:
    fill(log)
    with stores.data.begin() as conn:
        conn.execute(audit_log.update().where(audit_log.c.seq == 11).values(detail='{"i":99}'))
    assert found(log) == [(11, "edited")]


def test_edited_and_rehashed_row_is_named(log: AuditLog, stores: Stores) -> None:
    """Editing one row and recomputing its hash keeps the row consistent, but the next row
    still names the old hash: the verifier names the rewritten row, not its successor."""
    fill(log)
    sql(stores.data, "UPDATE audit_log SET actor = 'someone else' WHERE seq = 7")
    with stores.data.begin() as conn:
        r = conn.execute(select(audit_log).where(audit_log.c.seq == 7)).one()
        h = audit._entry_hash(
            r.prev_hash, 7, audit._iso(r.at), r.actor, r.action, r.purpose, r.subject, r.result, r.detail
        )
        conn.execute(audit_log.update().where(audit_log.c.seq == 7).values(hash=h))
    assert found(log) == [(7, "edited")]


def test_rewritten_chain_is_caught_by_the_checkpoints(log: AuditLog, stores: Stores) -> None:
    """Recomputing every hash after an edit leaves a consistent chain; only the signed
    checkpoints, which need the private key, still tell."""
    fill(log)
    sql(stores.data, "UPDATE audit_log SET result = 'denied' WHERE seq = 5")
    rehash_from(stores.data, 5)
    assert found(log) == [(10, "bad_checkpoint"), (20, "bad_checkpoint"), (30, "bad_checkpoint")]


@pytest.mark.parametrize(("deleted", "expected"), [((12,), 12), ((12, 13, 14), 12), ((1,), 1), ((10,), 10)])
def test_deleted_rows_are_named(
    log: AuditLog, stores: Stores, deleted: tuple[int, ...], expected: int
) -> None:
    fill(log)
    sql(stores.data, f"DELETE FROM audit_log WHERE seq IN ({', '.join(map(str, deleted))})")
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(expected, "deleted")]
    if len(deleted) > 1:
        assert f"{deleted[0]}..{deleted[-1]}" in report.problems[0].message


@pytest.mark.parametrize(("a", "b"), [(5, 9), (15, 16), (1, 2), (3, 34)])
def test_swapped_rows_are_reordered(log: AuditLog, stores: Stores, a: int, b: int) -> None:
    """The seq is under the hash, so both rows fail their hash at their new seq; the verifier
    finds the seq each was written with, and reports a move, not an edit."""
    fill(log)
    swap(stores.data, a, b)
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(a, "reordered"), (b, "reordered")]
    assert f"was written as entry {b}" in report.problems[0].message
    assert f"was written as entry {a}" in report.problems[1].message


def test_rotated_rows_are_reordered(log: AuditLog, stores: Stores) -> None:
    fill(log)  # 6 -> 7 -> 8 -> 6: each row's neighbours moved too
    sql(
        stores.data,
        "UPDATE audit_log SET seq = -6 WHERE seq = 6",
        "UPDATE audit_log SET seq = 6 WHERE seq = 8",
        "UPDATE audit_log SET seq = 8 WHERE seq = 7",
        "UPDATE audit_log SET seq = 7 WHERE seq = -6",
    )
    assert found(log) == [(6, "reordered"), (7, "reordered"), (8, "reordered")]


def test_row_moved_into_a_gap(log: AuditLog, stores: Stores) -> None:
    """Row 20 deleted and row 21 renumbered 20: entry 20 is missing, and the row at seq 20
    is entry 21, moved."""
    fill(log)
    sql(stores.data, "DELETE FROM audit_log WHERE seq = 20", "UPDATE audit_log SET seq = 20 WHERE seq = 21")
    assert found(log) == [(20, "deleted"), (20, "reordered")]


def test_edited_differs_from_reordered(log: AuditLog, stores: Stores) -> None:
    """A moved row whose content was also changed is an edit: its hash holds at no seq."""
    fill(log)
    swap(stores.data, 5, 9)
    sql(stores.data, "UPDATE audit_log SET action = 'vault.write' WHERE seq = 9")
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(5, "reordered"), (9, "edited")]
    assert "chained as entry 5" in report.problems[1].message


def test_truncated_tail_is_a_head_mismatch(log: AuditLog, stores: Stores) -> None:
    fill(log)
    sql(stores.data, "DELETE FROM audit_log WHERE seq > 32")
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(33, "head_mismatch")]
    assert "33..35" in report.problems[0].message


def test_truncated_tail_and_rewound_head(log: AuditLog, stores: Stores) -> None:
    """Truncating past a checkpoint and moving the head back: the checkpoint still signs the
    removed entry."""
    fill(log)
    with stores.data.begin() as conn:
        h = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 25)).scalar_one()
        conn.execute(text("DELETE FROM audit_log WHERE seq > 25"))
        conn.execute(audit_head.update().values(seq=25, hash=h))
    assert found(log) == [(30, "bad_checkpoint")]


def test_head_hash_rewritten(log: AuditLog, stores: Stores) -> None:
    fill(log)
    sql(stores.data, f"UPDATE audit_head SET hash = '{'ab' * 32}'")
    assert found(log) == [(N, "head_mismatch")]


def test_rows_forged_after_the_head_are_caught_at_the_next_checkpoint(log: AuditLog, stores: Stores) -> None:
    """Someone with write access to the database appends well-chained rows (the chain uses
    no key, and the head follows every INSERT: migration data_0009). The chain alone cannot
    tell; the missing signed checkpoint at seq 40 does, naming the stretch it leaves unsigned."""
    fill(log)
    with stores.data.begin() as conn:
        prev = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == N)).scalar_one()
        at = datetime.now(UTC)
        for seq in range(N + 1, 2 * EVERY * 2 + 1):
            h = audit._entry_hash(prev, seq, audit._iso(at), "x", "y", None, None, "ok", None)
            conn.execute(
                insert(audit_log).values(
                    seq=seq, at=at, actor="x", action="y", result="ok", prev_hash=prev, hash=h
                )
            )
            prev = h
    assert found(log) == [(N - N % EVERY + 1, "bad_checkpoint")]  # from the last signed entry on


def test_a_row_inserted_after_the_head_with_a_wrong_link_is_caught(log: AuditLog, stores: Stores) -> None:
    fill(log)
    with stores.data.begin() as conn:
        at = datetime.now(UTC)
        h = audit._entry_hash("ab" * 32, N + 1, audit._iso(at), "x", "y", None, None, "ok", None)
        conn.execute(
            insert(audit_log).values(
                seq=N + 1, at=at, actor="x", action="y", result="ok", prev_hash="ab" * 32, hash=h
            )
        )
    # The verifier cannot tell which of the two rows is the false one: it names the link.
    assert found(log) == [(N, "edited")]


def test_copied_row_is_inserted(log: AuditLog, stores: Stores) -> None:
    fill(log)
    sql(
        stores.data,
        "INSERT INTO audit_log (seq, at, actor, action, purpose, subject, result, detail, prev_hash, hash) "
        f"SELECT {N + 1}, at, actor, action, purpose, subject, result, detail, prev_hash, hash "
        "FROM audit_log WHERE seq = 4",
    )
    # The head followed the copy (data_0009), so it no longer names the chain's last entry.
    assert found(log) == [(N + 1, "head_mismatch"), (N + 1, "inserted")]


def test_forged_checkpoint_signature(log: AuditLog, stores: Stores) -> None:
    fill(log)
    with stores.data.begin() as conn:
        cp = conn.execute(select(audit_checkpoints).where(audit_checkpoints.c.seq == 20)).one()
        # Signed over the right message, but with a key that is not the keyring's.
        forged = Ed25519PrivateKey.generate().sign(audit._checkpoint_message(20, cp.hash, audit._iso(cp.at)))
        conn.execute(
            audit_checkpoints.update().where(audit_checkpoints.c.seq == 20).values(signature=forged.hex())
        )
    report = log.verify()
    assert [(p.seq, p.kind) for p in report.problems] == [(20, "bad_checkpoint")]
    assert "signature does not verify" in report.problems[0].message


def test_garbage_signature_and_moved_checkpoint_hash(log: AuditLog, stores: Stores) -> None:
    fill(log)
    sql(
        stores.data,
        "UPDATE audit_checkpoints SET signature = 'not hex' WHERE seq = 10",
        f"UPDATE audit_checkpoints SET hash = '{'cd' * 32}' WHERE seq = 30",
    )
    assert found(log) == [(10, "bad_checkpoint"), (30, "bad_checkpoint")]


def test_removed_checkpoints(log: AuditLog, stores: Stores) -> None:
    fill(log)
    sql(stores.data, "DELETE FROM audit_checkpoints WHERE seq IN (20, 30)")
    assert found(log) == [(11, "bad_checkpoint")]


def test_verify_with_another_public_key(log: AuditLog) -> None:
    fill(log)
    report = log.verify(Ed25519PrivateKey.generate().public_key())
    assert [(p.seq, p.kind) for p in report.problems] == [
        (10, "bad_checkpoint"),
        (20, "bad_checkpoint"),
        (30, "bad_checkpoint"),
    ]
    assert log.verify(log.keyring.verify_key()).ok  # the public key alone suffices


def test_many_problems_at_once(log: AuditLog, stores: Stores) -> None:
    fill(log)
    swap(stores.data, 2, 3)
    sql(
        stores.data,
        "UPDATE audit_log SET purpose = 'other' WHERE seq = 8",
        "DELETE FROM audit_log WHERE seq = 17",
        "DELETE FROM audit_log WHERE seq >= 34",
    )
    assert found(log) == [
        (2, "reordered"),
        (3, "reordered"),
        (8, "edited"),
        (17, "deleted"),
        (34, "head_mismatch"),
    ]


def test_problems_beyond_the_limit_are_counted(log: AuditLog, stores: Stores) -> None:
    fill(log)
    sql(stores.data, "UPDATE audit_log SET result = 'x' WHERE seq <= 6")
    report = log.verify(max_problems=2)
    assert not report.ok and len(report.problems) == 2 and report.omitted == 4
    assert "and 4 more" in report.to_text()


# -- transactions and concurrency ------------------------------------------------------------


def test_rolled_back_caller_transaction_leaves_no_entry(log: AuditLog, stores: Stores) -> None:
    log.append(None, actor="svc", action="first")
    with stores.data.connect() as conn:
        tx = conn.begin()
        conn.execute(
            insert(subjects).values(
                id="s1", kind="member", jurisdiction="EU", policy_version="1", created_at=datetime.now(UTC)
            )
        )
        assert log.append(conn, actor="svc", action="vault.write", subject_id="s1") == 2
        log.append_many(conn, [{"actor": "svc", "action": "vault.write"}] * 3)
        tx.rollback()
    with stores.data.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(subjects)).scalar() == 0
    assert log.verify().ok
    assert log.append(None, actor="svc", action="again") == 2  # the head did not advance


def test_caller_write_and_its_entry_commit_together(log: AuditLog, stores: Stores) -> None:
    with stores.data.begin() as conn:
        conn.execute(
            insert(subjects).values(
                id="s1", kind="member", jurisdiction="EU", policy_version="1", created_at=datetime.now(UTC)
            )
        )
        log.append(conn, actor="svc", action="vault.write", subject_id="s1")
    assert [e.action for e in log.query(subject_id="s1")] == ["vault.write"]
    assert log.verify().ok


@contextmanager
def statements_of(log: AuditLog) -> Iterator[list[str]]:
    """The statements sent to the log's store during the block (BEGIN not counted)."""
    seen: list[str] = []

    def on(_c: object, _cur: object, statement: str, *_: object) -> None:
        if not statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(log.data, "before_cursor_execute", on)
    try:
        yield seen
    finally:
        event.remove(log.data, "before_cursor_execute", on)


@pytest.mark.parametrize("n", [1, 7, audit.COPY_ABOVE + 5])
def test_a_batch_extends_the_chain_with_two_statements(log: AuditLog, n: int) -> None:
    log.append(None, actor="svc", action="first")
    with statements_of(log) as seen:
        log.append_many(None, [{"actor": "svc", "action": "vault.read", "detail": {"n": n}}] * n)
    # The head read and the rows (one INSERT; or COPY, which SQLAlchemy does not see); the
    # head follows by trigger (data_0009); and the signed checkpoints the batch reaches, in
    # one insert.
    copied = n > audit.COPY_ABOVE and log.data.dialect.name == "postgresql"
    checkpoints = [x for x in seen if "audit_checkpoints" in x]
    assert len(checkpoints) == (1 if n >= EVERY else 0)
    assert len(seen) - len(checkpoints) == (1 if copied else 2)
    assert "audit_head" in seen[0] and not any("audit_head" in x for x in seen[1:])
    with log.data.connect() as conn:
        last = conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 1 + n)).scalar_one()
    assert log.head() == (1 + n, last)
    assert log.verify().ok


def test_entries_appended_during_a_batch_are_one_extension(log: AuditLog, stores: Stores) -> None:
    log.append(None, actor="svc", action="first")
    with statements_of(log) as seen, stores.data.begin() as conn, log.batch(conn):
        assert log.append(conn, actor="svc", action="request.read", subject_id="s1") == 0
        log.append_many(conn, [{"actor": "svc", "action": "vault.read", "subject_id": "s1"}] * 2)
        with log.batch(conn):  # an inner block joins the outer one
            log.append(conn, actor="svc", action="request.running", subject_id="s1")
        assert seen == []  # nothing written yet: held until the block ends
        if stores.backend == "postgresql":  # (SQLite: the open transaction holds the database)
            log.append(None, actor="other", action="own.transaction")  # another connection: now
    heads = [s for s in seen if "audit_head" in s]
    assert len(heads) == (2 if stores.backend == "postgresql" else 1)  # 1 per extension: the read
    actions = [e.action for e in log.query()]
    other = ["own.transaction"] if stores.backend == "postgresql" else []
    assert actions == ["first", *other, "request.read", "vault.read", "vault.read", "request.running"]
    assert log.verify().ok


def test_a_batch_left_by_an_error_writes_nothing_and_checks_entries_at_once(
    log: AuditLog, stores: Stores
) -> None:
    with pytest.raises(RuntimeError), stores.data.begin() as conn, log.batch(conn):
        log.append(conn, actor="svc", action="kept.back")
        with pytest.raises(ValueError, match="email address"):
            log.append(conn, actor="svc", action="bad", detail={"to": "ann@example.com"})
        raise RuntimeError("the caller's transaction fails")
    assert log.head() == (0, GENESIS)
    with stores.data.begin() as conn, log.batch(conn):
        log.append(conn, actor="svc", action="after")
    assert [e.action for e in log.query()] == ["after"]
    assert log.verify().ok


def test_concurrent_appenders_extend_one_chain(stores: Stores, keyring: Keyring) -> None:
    """Two engines (two pools, as two processes would have), appending at the same time."""
    engines = [make_engine(stores.data_url) for _ in range(2)]
    logs = [AuditLog(e, keyring, checkpoint_every=EVERY) for e in engines]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(log: AuditLog, name: str) -> None:
        try:
            start.wait()
            for i in range(60):
                if i % 10 == 0:
                    log.append_many(None, [{"actor": name, "action": "batch"}] * 5)
                else:
                    log.append(None, actor=name, action="one")
        except BaseException as exc:  # reported below, with the thread's name
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lg, f"w{i}")) for i, lg in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert not errors, errors
    total = 2 * (54 + 6 * 5)
    with stores.data.connect() as conn:
        seqs = conn.execute(select(audit_log.c.seq).order_by(audit_log.c.seq)).scalars().all()
        actors = conn.execute(select(audit_log.c.actor)).scalars().all()
    assert seqs == list(range(1, total + 1))
    assert set(actors) == {"w0", "w1"}
    report = AuditLog(stores.data, keyring, checkpoint_every=EVERY).verify()
    assert report.ok and report.entries == total and report.checkpoints == total // EVERY, report.to_text()


def test_first_appends_race_for_the_head(stores: Stores, keyring: Keyring) -> None:
    """No head row yet: both create it, one chain results."""
    engines = [make_engine(stores.data_url) for _ in range(4)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def work(engine: Engine) -> None:
        try:
            start.wait()
            AuditLog(engine, keyring).append(None, actor="svc", action="first")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert not errors, errors
    log = AuditLog(stores.data, keyring)
    assert log.head()[0] == 4 and log.verify().ok


def test_verify_while_others_append(stores: Stores, keyring: Keyring) -> None:
    """Appends committed while the verifier streams (in chunks of 4 here) are neither rows
    after the head nor a truncated tail."""
    log = AuditLog(stores.data, keyring, checkpoint_every=EVERY)
    fill(log)
    writer_engine = make_engine(stores.data_url)
    writer = AuditLog(writer_engine, keyring, checkpoint_every=EVERY)
    stop = threading.Event()
    written: list[int] = []

    def work() -> None:
        while not stop.is_set():
            written.append(writer.append(None, actor="svc", action="during"))

    thread = threading.Thread(target=work)
    thread.start()
    try:
        reports = [log.verify() for _ in range(5)]
    finally:
        stop.set()
        thread.join()
        writer_engine.dispose()
    assert written, "the writer never ran"
    assert all(r.ok for r in reports), [r.to_text() for r in reports if not r.ok]
    assert log.verify().entries == N + len(written)


# -- no personal data ------------------------------------------------------------------------


def test_pseudonyms_are_stable_and_not_the_id(stores: Stores, keyring: Keyring) -> None:
    a = AuditLog(stores.data, keyring)
    p = a.pseudonym("subject-42")
    assert p == a.pseudonym("subject-42") == AuditLog(stores.data, keyring).pseudonym("subject-42")
    assert len(p) == 32 and int(p, 16) >= 0 and "subject" not in p
    assert p != a.pseudonym("subject-43")
    assert p != AuditLog(stores.data, Keyring.generate()).pseudonym("subject-42")  # keyed


def test_no_email_in_the_table(log: AuditLog, stores: Stores) -> None:
    log.append(None, actor="svc", action="vault.read", subject_id="alice@example.com", detail={"n": 1})
    log.append_many(None, [{"actor": "svc", "action": "x", "subject_id": "bob@example.org"}])
    with stores.data.connect() as conn:
        dump = json.dumps([list(r) for r in conn.execute(select(audit_log)).all()], default=str)
    assert "@" not in dump and "alice" not in dump and "bob" not in dump
    assert [e.seq for e in log.query(subject_id="alice@example.com")] == [1]


@pytest.mark.parametrize(
    "detail",
    [
        {"to": "alice@example.com"},
        {"note": "sent to Alice <alice.smith+news@mail.example.co.uk> today"},
        {"phone": "+44 20 7946 0958"},
        {"phone": "(555) 123-4567"},
        {"nested": {"list": ["ok", "+15551234567"]}},
        {"alice@example.com": True},
    ],
)
def test_personal_data_in_detail_is_refused(log: AuditLog, stores: Stores, detail: dict[str, object]) -> None:
    log.append(None, actor="svc", action="first")
    with pytest.raises(ValueError, match="no personal data"):
        log.append(None, actor="svc", action="x", detail=detail)
    with pytest.raises(ValueError, match=r"entries\[1\]"):
        log.append_many(
            None, [{"actor": "svc", "action": "ok"}, {"actor": "svc", "action": "x", "detail": detail}]
        )
    assert log.head()[0] == 1  # nothing written, not even the good entry of the batch
    with pytest.raises(ValueError, match="no personal data"):
        log.append(None, actor="admin:alice@example.com", action="x")


def test_error_message_does_not_repeat_the_personal_data() -> None:
    with pytest.raises(ValueError) as exc:
        audit._check_no_personal_data({"to": "alice@example.com"}, "entry detail")
    assert "alice@example.com" not in str(exc.value) and "['to']" in str(exc.value)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-23",
        "2026-11-23 12:30:00",
        "2026-11-23T12:30:00.123456+00:00",
        "1234567890123",  # a bare record id
        "user.contact.email",
        "v1.2.3",
        "192.168.1.0",
        "3f2b9c1e-8a7d-4e6f-9b0a-1c2d3e4f5a6b",
        "12345678-1234-1234-1234-123456789012",
        "42 fields in 3 tables",
    ],
)
def test_ordinary_values_are_not_mistaken_for_personal_data(value: str) -> None:
    assert find_personal_data(value) is None


def test_bad_entries_are_refused_with_what_and_where(log: AuditLog) -> None:
    with pytest.raises(ValueError, match=r"entries\[0\] has unknown keys \['subject'\]"):
        log.append_many(None, [{"actor": "svc", "action": "x", "subject": "s1"}])
    with pytest.raises(ValueError, match=r"entries\[1\] lacks 'action'"):
        log.append_many(None, [{"actor": "svc", "action": "x"}, {"actor": "svc"}])
    with pytest.raises(ValueError, match="actor is 129 characters, at most 128"):
        log.append(None, actor="a" * 129, action="x")
    with pytest.raises(ValueError, match="detail is not plain JSON data"):
        log.append(None, actor="svc", action="x", detail={"at": datetime.now(UTC)})
    with pytest.raises(ValueError, match="action must be a non-empty string"):
        log.append(None, actor="svc", action="")
    with pytest.raises(ValueError, match="checkpoint_every"):
        AuditLog(log.data, log.keyring, checkpoint_every=0)
    assert log.head() == (0, GENESIS)


# -- query -----------------------------------------------------------------------------------


@pytest.fixture
def filled(log: AuditLog) -> Iterator[AuditLog]:
    fill(log)
    yield log


def test_query_filters(filled: AuditLog) -> None:
    log = filled
    by_subject = log.query(subject_id="subj1", limit=1000)
    assert [e.seq for e in by_subject] == [s for s in range(1, N + 1) if (s - 1) % 4 == 1]
    assert all(e.subject == log.pseudonym("subj1") for e in by_subject)
    assert {e.action for e in log.query(action="consent.give", limit=1000)} == {"consent.give"}
    assert len(log.query(action="consent.give", limit=1000)) == N - 12
    assert [e.seq for e in log.query(actor="service:1", limit=1000)] == [2, 4, 6, 8, 10, 12]
    assert [e.seq for e in log.query(purpose="service.delivery", limit=1000)] == [1, 4, 7, 10]
    both = log.query(subject_id="subj0", purpose="service.delivery")
    assert [e.seq for e in both] == [1]
    first = log.query(limit=1)[0]
    assert first.detail == {"categories": ["user.contact.email"], "i": 0}
    assert first.at.tzinfo is not None


def test_query_pages_and_times(filled: AuditLog, stores: Stores) -> None:
    log = filled
    page1 = log.query(limit=10)
    page2 = log.query(limit=10, after_seq=page1[-1].seq)
    assert [e.seq for e in page1 + page2] == list(range(1, 21))
    # Spread the entries over time, as they would be in use.
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with stores.data.begin() as conn:
        for s in range(1, N + 1):
            conn.execute(audit_log.update().where(audit_log.c.seq == s).values(at=base + timedelta(hours=s)))
    window = log.query(since=base + timedelta(hours=3), until=base + timedelta(hours=6))
    assert [e.seq for e in window] == [3, 4, 5]
    # A naive datetime is UTC; another offset means the same instant.
    naive = log.query(since=datetime(2026, 1, 1, 3), until=datetime(2026, 1, 1, 6))
    offset = log.query(since=datetime(2026, 1, 1, 7, tzinfo=timezone(timedelta(hours=2))), limit=2)
    assert [e.seq for e in naive] == [3, 4, 5]
    assert [e.seq for e in offset] == [5, 6]
    assert window[0].at == base + timedelta(hours=3)
    with pytest.raises(ValueError, match="limit"):
        log.query(limit=0)


# -- the hash ---------------------------------------------------------------------------------

text_or_none = st.none() | st.text()


@given(
    seq=st.integers(min_value=1, max_value=2**62),
    at=st.text(),
    actor=st.text(),
    action=st.text(),
    purpose=text_or_none,
    subject=text_or_none,
    result=st.text(),
    detail=text_or_none,
)
def test_entry_hash_is_sha256_of_the_canonical_json(
    seq: int,
    at: str,
    actor: str,
    action: str,
    purpose: str | None,
    subject: str | None,
    result: str,
    detail: str | None,
) -> None:
    """The fast encoding in _entry_hash gives the same bytes as json.dumps of the array."""
    fields = (at, actor, action, purpose, subject, result, detail)
    assert audit._entry_hash(GENESIS, seq, *fields) == audit._entry_hash_reference(GENESIS, seq, *fields)
