"""Key rotation: re-wrap every data key in the key store under a new KEK.

Subjects' data keys (subject_keys) and requests' and jobs' data keys (request_keys) are
re-wrapped; the data store is never read or written. Batches are set-based (one
executemany per batch) and the WHERE carries the old KEK id, so a key destroyed or
re-wrapped meanwhile by someone else is left alone. Re-running is harmless.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, Table, bindparam, func, select, update

from fiduciary.store import tables as T
from fiduciary.vault.crypto import data_key_aad, owner_key_aad, seal, unseal
from fiduciary.vault.keyring import Keyring


def _rewrap_table(
    keys: Engine,
    table: Table,
    id_column: str,
    aad: Callable[[str, str], bytes],
    old: Keyring,
    new: Keyring,
    batch_size: int,
) -> int:
    target_id, target = new.kek
    sealer = AESGCM(target)
    openers: dict[str, AESGCM] = {}

    def opener(kek_id: str) -> AESGCM:
        if kek_id not in openers:
            ring = new if kek_id in new.keks else old
            openers[kek_id] = AESGCM(ring.kek_by_id(kek_id))
        return openers[kek_id]

    c = table.c
    ident = c[id_column]
    stmt = (
        update(table)
        .where(ident == bindparam("b_id"), c.kek_id == bindparam("b_old"))
        .values(kek_id=bindparam("b_new"), wrapped=bindparam("b_wrapped"))
    )
    done = 0
    last = ""
    while True:
        with keys.begin() as conn:
            rows = conn.execute(
                select(ident, c.kek_id, c.wrapped)
                .where(c.kek_id != target_id, ident > last)
                .order_by(ident)
                .limit(batch_size)
            ).all()
            if not rows:
                return done
            params = []
            for owner, kek_id, wrapped in rows:
                key = unseal(opener(kek_id), bytes(wrapped), aad(owner, kek_id), f"data key of {owner}")
                params.append(
                    {
                        "b_id": owner,
                        "b_old": kek_id,
                        "b_new": target_id,
                        "b_wrapped": seal(sealer, key, aad(owner, target_id)),
                    }
                )
            done += conn.execute(stmt, params).rowcount
            last = rows[-1][0]


def rotate_keys(
    keys: Engine, old: Keyring, new: Keyring, *, batch_size: int = 5000
) -> tuple[int, dict[str, int]]:
    """Re-wrap every data key under ``new``'s active KEK; returns (count, keys per KEK).

    ``new`` must hold the KEKs still in use (``Keyring.with_new_kek`` keeps them). Save the
    new keyring before calling, drop old KEKs only when the usage shows them unused."""
    done = _rewrap_table(keys, T.subject_keys, "subject_id", data_key_aad, old, new, batch_size)
    done += _rewrap_table(keys, T.request_keys, "owner_id", owner_key_aad, old, new, batch_size)
    return done, kek_usage(keys)


def kek_usage(keys: Engine) -> dict[str, int]:
    """{kek id: number of data keys wrapped under it}, over every key table."""
    usage: dict[str, int] = {}
    with keys.connect() as conn:
        for table in (T.subject_keys, T.request_keys):
            for kek, n in conn.execute(select(table.c.kek_id, func.count()).group_by(table.c.kek_id)):
                usage[str(kek)] = usage.get(str(kek), 0) + int(n)
    return usage
