"""Alembic environment: the engine and the store come from the caller (store/migrate.py)."""

from __future__ import annotations

from alembic import context

from fiduciary.store import tables

config = context.config
engine = config.attributes["engine"]
store = config.attributes["store"]
target_metadata = tables.data if store == "data" else tables.keys
version_table = "alembic_version" if store == "data" else "alembic_version_keys"

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
