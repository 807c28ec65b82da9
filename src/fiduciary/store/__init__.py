"""The store: engines, tables and migrations for the data store and the key store."""

from fiduciary.store.engine import BackgroundCheckpoints, is_sqlite, make_engine, normalize_url, sqlite_file
from fiduciary.store.migrate import upgrade

__all__ = ["BackgroundCheckpoints", "is_sqlite", "make_engine", "normalize_url", "sqlite_file", "upgrade"]
