"""Mail to many people at once: a policy change (PUT-3), a breach (LAW-10), a legal demand
they may be told of (PLU-9).

A *topic* (``policy:<version id>``, ``breach:<id>``, ``disclosure:<id>``) gets one row per
person in ``notices``: queued in the transaction that decides they must be told, then
delivered in batches by ``deliver``. Each batch costs one SELECT of the queue, one of the
email identities, one of the data keys (key store), one UPDATE per outcome and one audit
insert, whatever the batch size. Addresses are decrypted only for the batch in hand and
never stored in clear.

A run that stops (crash, mail server down) leaves the rest queued: delivering again
resumes there. A person is written to at least once; a crash between sending a batch and
recording it re-sends that batch, never more. Run one delivery per topic at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, Select, Table, and_, exists, func, insert, literal, select, update

from fiduciary.mail import Letter, Mailer, MailError
from fiduciary.store import tables as T
from fiduciary.vault.crypto import DecryptionError, KeyWrapper, SubjectCipher
from fiduciary.vault.normalize import EMAIL

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary

__all__ = [
    "FAILED",
    "NO_ADDRESS",
    "QUEUED",
    "SENT",
    "Delivery",
    "NoticeError",
    "counts",
    "deliver",
    "enqueue",
    "enqueue_select",
    "insert_rows",
]

QUEUED: Final = "queued"
SENT: Final = "sent"
NO_ADDRESS: Final = "no_address"  # no email identity, or the subject was erased since
FAILED: Final = "failed"
CHUNK: Final = 5000
_TOPIC = re.compile(r"[a-z_]+:[A-Za-z0-9_.-]{1,48}")


class NoticeError(ValueError):
    """Bad input for a delivery; nothing was sent."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one ``deliver`` call did, and what is left for the next."""

    topic: str
    sent: int
    no_address: int
    failed: int
    left: int  # still queued

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "sent": self.sent,
            "no_address": self.no_address,
            "failed": self.failed,
            "left": self.left,
        }


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Many rows in one statement: COPY on PostgreSQL (psycopg's executemany would send one
    INSERT per row), one executemany elsewhere (SQLite runs it in process)."""
    if not rows:
        return
    dialect = conn.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        q = dialect.identifier_preparer
        sql = f"COPY {q.format_table(table)} ({', '.join(q.quote(c) for c in columns)}) FROM STDIN"
        raw: Any = conn.connection.driver_connection  # the same transaction as ``conn``
        with raw.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
        return
    conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def _check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise NoticeError(f"notice topic {topic!r}: expected '<kind>:<id>', e.g. 'breach:3f2a'")
    return topic


def enqueue_select(conn: Connection, topic: str, subject_ids: Select[Any], now: datetime) -> int:
    """Queue the subjects a one-column SELECT of subject ids gives, skipping those already
    queued for the topic: one INSERT ... SELECT. Returns how many were queued."""
    n = T.notices.c
    source = subject_ids.subquery()
    sid = source.c[0]
    stmt = insert(T.notices).from_select(
        ["topic", "subject_id", "status", "queued_at"],
        select(literal(_check_topic(topic)), sid, literal(QUEUED), literal(now, T.notices.c.queued_at.type))
        .where(~exists().where(n.topic == topic, n.subject_id == sid))
        .distinct(),
    )
    return int(conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount)


def enqueue(conn: Connection, topic: str, subject_ids: Iterable[str], now: datetime) -> int:
    """Queue these subjects for the topic (those already queued are skipped): per 5,000,
    one SELECT and one INSERT. Returns how many were queued."""
    _check_topic(topic)
    ids = list(dict.fromkeys(subject_ids))
    n = T.notices.c
    queued = 0
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        have = set(
            conn.execute(select(n.subject_id).where(n.topic == topic, n.subject_id.in_(part))).scalars()
        )
        rows = [(topic, s, QUEUED, now) for s in part if s not in have]
        insert_rows(conn, T.notices, ("topic", "subject_id", "status", "queued_at"), rows)
        queued += len(rows)
    return queued


def counts(fid: Fiduciary, topic: str) -> dict[str, int]:
    """How many notices of the topic are in each status."""
    n = T.notices.c
    with fid.data.connect() as conn:
        rows = conn.execute(select(n.status, func.count()).where(n.topic == topic).group_by(n.status)).all()
    return {str(s): int(c) for s, c in rows}


def _emails(fid: Fiduciary, subject_ids: list[str]) -> dict[str, str]:
    """The email identities of these subjects, decrypted: one SELECT on each store."""
    i, k = T.identities.c, T.subject_keys.c
    with fid.data.connect() as conn:
        blobs = {
            str(sid): bytes(v)
            for sid, v in conn.execute(
                select(i.subject_id, i.value).where(i.kind == EMAIL, i.subject_id.in_(subject_ids))
            )
        }
    if not blobs:
        return {}
    with fid.keys.connect() as kconn:
        wrapped = {
            str(sid): (str(kek), bytes(w))
            for sid, kek, w in kconn.execute(
                select(k.subject_id, k.kek_id, k.wrapped).where(k.subject_id.in_(list(blobs)))
            )
        }
    wrapper = KeyWrapper(fid.keyring)
    out: dict[str, str] = {}
    for sid, blob in blobs.items():
        key = wrapped.get(sid)
        if key is None:  # crypto-shredded meanwhile: nobody to write to
            continue
        try:
            out[sid] = SubjectCipher(sid, wrapper.unwrap(sid, *key)).open_identity(EMAIL, blob)
        except DecryptionError:
            continue
    return out


def deliver(
    fid: Fiduciary,
    mailer: Mailer,
    topic: str,
    letter: Letter | Callable[[str], Letter],
    *,
    purpose: str,
    actor: str = "system",
    batch_size: int = 500,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
    now: Callable[[], datetime] | None = None,
) -> Delivery:
    """Send the topic's queued notices, ``batch_size`` at a time (at most ``limit``).

    ``letter`` is the message, or a function of the subject id giving it. ``purpose`` is
    recorded in the audit entry of each person written to (their address was read for it).
    ``progress`` is called with the number handled after each batch.
    """
    _check_topic(topic)
    if not isinstance(batch_size, int) or not 1 <= batch_size <= CHUNK:
        raise NoticeError(f"batch_size must be 1-{CHUNK}, got {batch_size!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise NoticeError(f"limit must be a positive integer, got {limit!r}")
    clock = now or (lambda: datetime.now(UTC))
    n = T.notices.c
    totals = {SENT: 0, NO_ADDRESS: 0, FAILED: 0}
    done = 0
    while limit is None or done < limit:
        size = batch_size if limit is None else min(batch_size, limit - done)
        with fid.data.connect() as conn:
            ids = [
                str(s)
                for s in conn.execute(
                    select(n.subject_id)
                    .where(n.topic == topic, n.status == QUEUED)
                    .order_by(n.subject_id)
                    .limit(size)
                ).scalars()
            ]
        if not ids:
            break
        addresses = _emails(fid, ids)
        outcome: dict[str, tuple[str, str | None]] = {}
        for sid in ids:
            to = addresses.get(sid)
            if to is None:
                outcome[sid] = (NO_ADDRESS, None)
                continue
            msg = letter(sid) if callable(letter) else letter
            try:
                mailer.send(to, msg.subject, msg.text)
                outcome[sid] = (SENT, None)
            except MailError as exc:
                # The mailer's messages never carry the address (see fiduciary.mail).
                outcome[sid] = (FAILED, str(exc)[:255])
        _record(fid, topic, outcome, purpose, actor, clock())
        for status, _ in outcome.values():
            totals[status] += 1
        done += len(ids)
        if progress is not None:
            progress(done)
    with fid.data.connect() as conn:
        left = int(
            conn.execute(select(func.count()).where(n.topic == topic, n.status == QUEUED)).scalar_one()
        )
    return Delivery(topic, totals[SENT], totals[NO_ADDRESS], totals[FAILED], left)


def _record(
    fid: Fiduciary,
    topic: str,
    outcome: Mapping[str, tuple[str, str | None]],
    purpose: str,
    actor: str,
    at: datetime,
) -> None:
    """One UPDATE per outcome (failures one per distinct error) and one audit insert."""
    n = T.notices.c
    groups: dict[tuple[str, str | None], list[str]] = {}
    for sid, key in outcome.items():
        groups.setdefault(key, []).append(sid)
    with fid.data.begin() as conn:
        for (status, error), ids in groups.items():
            conn.execute(
                update(T.notices)
                .where(and_(n.topic == topic, n.subject_id.in_(ids)))
                .values(status=status, sent_at=at if status == SENT else None, error=error)
            )
        fid.audit.append_many(
            conn,
            [
                {
                    "actor": actor,
                    "action": "notice.send",
                    "purpose": purpose,
                    "subject_id": sid,
                    "result": status,
                    "detail": {"topic": topic},
                }
                for sid, (status, _) in outcome.items()
            ],
        )
