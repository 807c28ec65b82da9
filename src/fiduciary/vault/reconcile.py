"""After a restore: destroy again the data keys of subjects the data store says are erased.

Crypto-shredding holds only as long as a destroyed key stays destroyed. Restoring the key
store from a backup taken before an erasure brings the subject's key back, and with it
every copy of the subject's data in the data store's backups. The data store keeps the
fact of the erasure (``subjects.status = 'erased'``, rows gone), so after any restore of
the key store this walks its keys, asks the data store about their subjects, and deletes
the keys of erased ones again. Keys whose subject the data store does not have at all are
counted, not deleted: after a partial restore of the data store they may still be needed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select

from fiduciary.store import tables as T

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciliation:
    keys: int  # data keys looked at
    destroyed: int  # of subjects the data store says are erased: deleted again
    without_subject: int  # of subjects the data store does not have: left alone

    def detail(self) -> dict[str, int]:
        """The audit entry's detail."""
        return {"keys": self.keys, "destroyed": self.destroyed, "without_subject": self.without_subject}


def reconcile_keys(data: Engine, keys: Engine, *, batch_size: int = 5000) -> Reconciliation:
    """Walk the key store in subject-id order, ``batch_size`` keys at a time: one read of
    the data store and at most one delete in the key store per batch."""
    k, s = T.subject_keys.c, T.subjects.c
    seen = destroyed = missing = 0
    after = ""
    while True:
        with keys.connect() as kconn:
            page = [
                str(sid)
                for sid in kconn.execute(
                    select(k.subject_id).where(k.subject_id > after).order_by(k.subject_id).limit(batch_size)
                ).scalars()
            ]
        if not page:
            break
        after = page[-1]
        seen += len(page)
        with data.connect() as dconn:
            rows = dconn.execute(select(s.id, s.status).where(s.id.in_(page)))
            status = {str(sid): str(st) for sid, st in rows}
        erased = [sid for sid in page if status.get(sid) == "erased"]
        missing += sum(1 for sid in page if sid not in status)
        if erased:
            with keys.begin() as kconn:
                destroyed += kconn.execute(delete(T.subject_keys).where(k.subject_id.in_(erased))).rowcount
    if destroyed:
        flush_key_store(keys)
    return Reconciliation(keys=seen, destroyed=destroyed, without_subject=missing)


def flush_key_store(keys: Engine) -> None:
    """SQLite: secure_delete zeroes a deleted key in its page, but in WAL mode the page's
    older versions, key included, stay in the -wal file until a checkpoint copies the pages
    back and the WAL restarts. TRUNCATE does both now, so a destroyed key is gone from the
    disk when the erasure returns, not at some later checkpoint."""
    if keys.dialect.name != "sqlite":
        return
    with keys.connect() as kconn:
        # The driver connection is in autocommit: a checkpoint cannot run inside BEGIN.
        raw: Any = kconn.connection.driver_connection
        busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:
        # A reader held an old snapshot past the busy timeout: the key is zeroed in its
        # database page, but an old WAL frame may survive until the next checkpoint.
        log.warning("key store checkpoint was blocked by a reader; the next one completes the erasure")
