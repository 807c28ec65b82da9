"""What the retention tests share: a Fiduciary over the ``stores`` pair and an example's
app database on the same backend, and row snapshots."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url

from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy, load_example_app
from fiduciary.mail import OutboxMailer
from fiduciary.retention import Retention
from fiduciary.vault.keyring import Keyring
from tests.conftest import Stores


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@dataclass
class World:
    fid: Fiduciary
    app: Any  # the example's app module
    engine: Engine  # the app's database
    outbox: OutboxMailer
    retention: Retention
    datastore: str

    def rows(self, table: str) -> dict[Any, dict[str, Any]]:
        t = self.app.metadata.tables[table]
        pk = next(iter(t.primary_key.columns))
        with self.engine.connect() as conn:
            return {r[pk.name]: dict(r) for r in conn.execute(select(t)).mappings()}

    def close(self) -> None:
        self.retention.close()
        self.fid.close()
        self.engine.dispose()


def app_url(stores: Stores, tmp_path: Path) -> str:
    """An empty database for an example app, on the same backend as the stores. On
    PostgreSQL: a schema of its own in the data store's database (dropped afterwards by
    ``drop_app``), as creating and dropping a database costs seconds."""
    if stores.backend == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    schema = f"app_{uuid.uuid4().hex[:10]}"
    with stores.data.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    return str(make_url(stores.data_url).update_query_dict({"options": f"-csearch_path={schema}"}))


def drop_app(stores: Stores, url: str) -> None:
    options = make_url(url).query.get("options")
    if isinstance(options, str) and options.startswith("-csearch_path="):
        with stores.data.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{options.partition("=")[2]}" CASCADE'))


@pytest.fixture
def world_of(stores: Stores, tmp_path: Path) -> Iterator[Any]:
    """``world_of(example, size)``: the example's app database generated, Fiduciary open on
    the stores, a Retention over both with an outbox mailer."""
    made: list[World] = []
    urls: list[str] = []

    def make(example: str, size: int = 60, **options: Any) -> World:
        url = app_url(stores, tmp_path)
        urls.append(url)
        engine = create_engine(url)
        if stores.backend == "sqlite":  # foreign keys held as on PostgreSQL

            @event.listens_for(engine, "connect")
            def _foreign_keys_on(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA foreign_keys=ON")

        app = load_example_app(example)
        app.create(engine, size, seed=0)
        fid = Fiduciary.open(
            example_policy(example),
            database_url=stores.data_url,
            keys_database_url=stores.keys_url,
            keyring=Keyring.generate(),
        )
        outbox = OutboxMailer(tmp_path / "outbox")
        ds = fid.policy.policy.datastores[0].fides_key
        options.setdefault("lease_seconds", 5)
        retention = Retention(fid, connections={ds: engine}, mailer=outbox, **options)
        w = World(fid, app, engine, outbox, retention, ds)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
    for url in urls:
        drop_app(stores, url)
