"""One batch of a row sweep: a key range ``(lo, hi]`` of one collection, one statement.

- ``delete``: ``DELETE FROM t WHERE pk > lo AND pk <= hi AND clock < cutoff`` (first,
  where other rows refer to these, one ``UPDATE ... SET ref = NULL WHERE ref IN (SELECT
  ...)`` per referring collection, as the policy's ``unlink`` masking says);
- ``aggregate``: the rows counted per day into ``retention_aggregates`` (Fiduciary's
  store), then deleted as above;
- ``truncate`` / ``anonymize``: one SELECT of the range, the new values computed here,
  and ONE UPDATE of the rows whose values change (joined on ``unnest`` of arrays on
  PostgreSQL, on ``json_each`` on SQLite, ``CASE pk`` elsewhere).

Run twice, a batch changes nothing the second time: deleted rows are gone, and rows
already truncated or masked compute to themselves and are not written. A sweep killed
after a batch committed but before the job recorded it (the worst moment) therefore
touches no row twice when it resumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, case, delete, func, insert, select, text, update
from sqlalchemy.sql import ColumnElement, TableClause, column, table

from fiduciary.connectors.sql import SQLConnector
from fiduciary.requests.masking import MaskContext, strategy_for
from fiduciary.requests.plan import PlanField
from fiduciary.retention.anonymize import truncate_value
from fiduciary.retention.plan import clock_type, clock_value
from fiduciary.store import tables as T

__all__ = ["sweep_rows"]

_MAX_PARAMS: Final = 30_000  # bound parameters per statement: within SQLite's and PostgreSQL's limits
_CASE_ROWS: Final = 1_000  # CASE pk WHEN ... is evaluated branch by branch: keep it short


def _table(p: Mapping[str, Any], connector: SQLConnector, extra: list[str]) -> TableClause:
    names = [p["pk"], *p["clock"], *extra]
    cols = []
    for n in dict.fromkeys(names):
        cols.append(column(n, clock_type(p["ctype"])) if n in p["clock"] else column(n))
    return table(p["collection"], *cols, schema=connector.schemas.get(p["datastore"]))


def _where(t: TableClause, p: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    clock = [t.c[n] for n in p["clock"]]
    expr = clock[0] if len(clock) == 1 else func.coalesce(*clock)
    ctype = p["ctype"]
    pk = t.c[p["pk"]]
    where = [expr.is_not(None), expr < clock_value(ctype, datetime.fromisoformat(p["cutoff"])), pk <= p["hi"]]
    if p.get("since"):
        where.append(expr >= clock_value(ctype, datetime.fromisoformat(p["since"])))
    if p.get("lo") is not None:
        where.append(pk > p["lo"])
    return where


def sweep_rows(
    connector: SQLConnector,
    p: Mapping[str, Any],
    *,
    key: bytes,
    data: Engine,
    job_id: str,
    seq: int,
) -> dict[str, Any]:
    """Carry out one batch (see the module doc); returns what it did, no personal data."""
    op = p["op"]
    if op in ("delete", "aggregate"):
        return _delete(connector, p, data=data, job_id=job_id, seq=seq, aggregate=op == "aggregate")
    if op in ("truncate", "anonymize"):
        return _rewrite(connector, p, key=key)
    raise ValueError(f"unknown row operation {op!r}")


def _delete(
    connector: SQLConnector, p: Mapping[str, Any], *, data: Engine, job_id: str, seq: int, aggregate: bool
) -> dict[str, Any]:
    refs: list[list[str]] = list(p.get("unlink", []))
    t = _table(p, connector, [r[2] for r in refs])
    where = _where(t, p)
    schema = connector.schemas.get(p["datastore"])
    out: dict[str, Any] = {"deleted": 0}
    if aggregate:
        t_ = T.retention_aggregates.c
        with data.connect() as conn:
            counted = conn.execute(select(func.count()).where(t_.job_id == job_id, t_.seq == seq)).scalar()
        if not counted:  # a run before this one counted them already (and maybe deleted them)
            clock = [t.c[n] for n in p["clock"]]
            expr = clock[0] if len(clock) == 1 else func.coalesce(*clock)
            day = func.date(expr)
            with connector.engine.connect() as conn:
                per_day = conn.execute(select(day, func.count()).where(*where).group_by(day)).all()
            if per_day:
                with data.begin() as conn:
                    conn.execute(
                        insert(T.retention_aggregates),
                        [
                            {
                                "job_id": job_id,
                                "seq": seq,
                                "day": str(d)[:10],
                                "rule": p["rule"],
                                "collection": f"{p['datastore']}.{p['collection']}",
                                "rows": int(n),
                            }
                            for d, n in per_day
                        ],
                    )
                out["days"] = len(per_day)
    with connector.engine.begin() as conn:
        for holder, ref_field, target_field in refs:
            h = table(holder, column(ref_field), schema=schema)
            conn.execute(
                update(h)
                .where(h.c[ref_field].in_(select(t.c[target_field]).where(*where)))
                .values({ref_field: None})
            )
        out["deleted"] = conn.execute(delete(t).where(*where)).rowcount
    return out


def _new_value(spec: Any, value: Any, row_key: Any, p: Mapping[str, Any], key: bytes) -> tuple[bool, Any]:
    """(changes?, the new value) of one field of one row."""
    if p["op"] == "truncate":
        new = truncate_value(str(spec), value, p.get("truncate") or {})
        return (new != value, new)
    strategy = strategy_for(spec["strategy"], f"{p['collection']}.{spec['name']}")
    field = PlanField(
        name=spec["name"],
        categories=(),
        data_type=spec.get("data_type"),
        length=spec.get("length"),
        identity=None,
        primary_key=False,
        masking=spec["strategy"],
        masking_configuration=dict(spec.get("configuration") or {}),
        legal_minimums=(),
    )
    ctx = MaskContext(
        request_id=f"retention:{p['rule']}",
        collection=f"{p['datastore']}.{p['collection']}",
        field=field,
        row_key=str(row_key),
        value=value,
        configuration=dict(spec.get("configuration") or {}),
        key=key,
    )
    if value is None or strategy.is_masked(ctx):
        return (False, value)
    new = strategy.value(ctx)
    return (new != value or (new is None) != (value is None), new)


def _rewrite(connector: SQLConnector, p: Mapping[str, Any], *, key: bytes) -> dict[str, Any]:
    fields: Mapping[str, Any] = p["fields"]
    names = list(fields)
    t = _table(p, connector, names)
    pk_name = p["pk"]
    specs = {n: (fields[n] if p["op"] == "truncate" else {**fields[n], "name": n}) for n in names}
    with connector.engine.begin() as conn:
        rows = conn.execute(select(t.c[pk_name], *[t.c[n] for n in names]).where(*_where(t, p))).all()
        changes: dict[Any, dict[str, Any]] = {}
        for r in rows:
            row = r._mapping
            new: dict[str, Any] = {}
            for n in names:
                changed, value = _new_value(specs[n], row[n], row[pk_name], p, key)
                if changed:
                    new[n] = value
            if new:
                changes[row[pk_name]] = {n: new.get(n, row[n]) for n in names}
        written = _update(conn, t, pk_name, names, changes) if changes else 0
    return {"rows": len(rows), "updated": written}


def _kind(values_: Any) -> str | None:
    """The one SQL kind of a column's new values ("int", "text"), None if mixed or other."""
    kinds = {
        "int" if isinstance(v, int) and not isinstance(v, bool) else "text" if isinstance(v, str) else "?"
        for v in values_
        if v is not None
    }
    if not kinds:
        return "text"
    return next(iter(kinds)) if len(kinds) == 1 and "?" not in kinds else None


def _update(
    conn: Connection, t: TableClause, pk_name: str, names: list[str], changes: Mapping[Any, Mapping[str, Any]]
) -> int:
    """ONE UPDATE per chunk of changed rows, every changed field of the chunk at once.

    The new values travel as data, not as statement text: PostgreSQL joins the table on
    ``unnest`` of one array per column, SQLite on ``json_each`` of one JSON array, so a
    batch of 20,000 rows is one statement with a handful of parameters. Elsewhere (or for
    values of other types) ``SET f = CASE pk WHEN ... END`` in chunks of 1,000 rows."""
    used = [n for n in names if any(n in c for c in changes.values())]
    keys = list(changes)
    q = conn.dialect.identifier_preparer
    target = q.format_table(t)
    pk_sql = q.quote(pk_name)
    kinds = {n: _kind(c[n] for c in changes.values()) for n in used}
    key_kind = _kind(keys)
    typed = key_kind is not None and all(kinds.values())
    if conn.dialect.name == "postgresql" and typed:
        sql_type = {"int": "bigint[]", "text": "text[]"}
        sets = ", ".join(f"{q.quote(n)} = v.c{i}" for i, n in enumerate(used))
        arrays = ", ".join(
            [f"CAST(:k AS {sql_type[key_kind or 'text']})"]
            + [f"CAST(:c{i} AS {sql_type[kinds[n] or 'text']})" for i, n in enumerate(used)]
        )
        cols = ", ".join(["k", *(f"c{i}" for i in range(len(used)))])
        stmt = text(
            f"UPDATE {target} SET {sets} FROM unnest({arrays}) AS v({cols}) WHERE {target}.{pk_sql} = v.k"
        )
        params: dict[str, Any] = {"k": keys}
        params.update({f"c{i}": [changes[k][n] for k in keys] for i, n in enumerate(used)})
        conn.execute(stmt, params)
        return len(keys)
    if conn.dialect.name == "sqlite" and typed:
        sets = ", ".join(f"{q.quote(n)} = json_extract(v.value, '$[{i + 1}]')" for i, n in enumerate(used))
        stmt = text(
            f"UPDATE {target} SET {sets} FROM json_each(:data) AS v "
            f"WHERE {target}.{pk_sql} = json_extract(v.value, '$[0]')"
        )
        rows = [[k, *(changes[k][n] for n in used)] for k in keys]
        conn.execute(stmt, {"data": json.dumps(rows)})
        return len(keys)
    pk = t.c[pk_name]
    written = 0
    size = max(1, min(_CASE_ROWS, _MAX_PARAMS // (1 + 2 * len(used))))
    for i in range(0, len(keys), size):
        chunk = keys[i : i + size]
        sets_ = {n: case({k: changes[k][n] for k in chunk}, value=pk, else_=t.c[n]) for n in used}
        conn.execute(update(t).where(pk.in_(chunk)).values(sets_))
        written += len(chunk)
    return written
