"""Alembic, run from code: ``upgrade(engine, "data")`` brings a store to the latest schema.

The data store and the key store are separate databases with separate histories: two
branches ("data", "keys") in one script directory, each with its own version table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

Store = Literal["data", "keys"]
SCRIPTS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine, store: Store) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.attributes["engine"] = engine
    cfg.attributes["store"] = store
    return cfg


def upgrade(engine: Engine, store: Store, revision: str = "head") -> None:
    """Apply every migration of ``store`` up to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(engine, store), f"{store}@{revision}")


def downgrade(engine: Engine, store: Store, revision: str = "base") -> None:
    command.downgrade(alembic_config(engine, store), f"{store}@{revision}")
