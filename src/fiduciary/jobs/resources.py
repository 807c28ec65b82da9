"""What a worker hands to step handlers, built from settings.

A Celery worker has no serving process to borrow engines from: it builds its resources
from ``Settings`` (FIDUCIARY_* variables) once per process, on its first task. Built in:
``settings``, ``data`` and ``keys`` (engines), ``keyring``. More are plugged in with
``register``, e.g. by the rights-requests room::

    from fiduciary.jobs import resources
    resources.register("fiduciary", lambda settings, built: Fiduciary.open(...))

A factory gets the settings and the resources built before it (registration order), so
it can reuse the engines. Packages outside this one can do the same from a
``fiduciary.jobs`` entry point (a module imported by ``load_plugins``).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

from sqlalchemy import Engine

from fiduciary.config import Settings
from fiduciary.jobs.model import DATA, KEYRING, KEYS
from fiduciary.store import make_engine
from fiduciary.vault.keyring import Keyring

log = logging.getLogger("fiduciary.jobs")

Factory = Callable[[Settings, Mapping[str, object]], object]
Closer = Callable[[object], None]


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    close: Closer | None


_factories: dict[str, _Entry] = {}
_lock = threading.Lock()


def register(name: str, factory: Factory, *, close: Closer | None = None, replace: bool = False) -> None:
    """Add a resource built by ``factory(settings, built_so_far)``; ``close`` releases it
    when the worker stops."""
    with _lock:
        if name in _factories and not replace:
            raise ValueError(f"job resource {name!r} is already registered")
        _factories[name] = _Entry(factory, close)


def unregister(name: str) -> None:
    with _lock:
        _factories.pop(name, None)


def registered() -> tuple[str, ...]:
    return tuple(_factories)


class Resources(Mapping[str, object]):
    """The built resources: a read-only mapping that can be closed."""

    def __init__(self, items: dict[str, object], closers: list[tuple[str, Closer]]) -> None:
        self._items = items
        self._closers = closers

    def __getitem__(self, key: str) -> object:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        for name, closer in reversed(self._closers):
            try:
                closer(self._items[name])
            except Exception:  # closing the rest matters more than this one's error
                log.warning("closing job resource %s failed", name, exc_info=True)
        self._closers = []


def build(settings: Settings, extra: Mapping[str, object] | None = None) -> Resources:
    """Build every registered resource, in registration order. ``extra`` (e.g. a serving
    process's own engines) is used as is and skips the factories of the same names."""
    items: dict[str, object] = {"settings": settings, **(extra or {})}
    closers: list[tuple[str, Closer]] = []
    with _lock:
        entries = list(_factories.items())
    try:
        for name, entry in entries:
            if name in items:
                continue
            items[name] = entry.factory(settings, dict(items))
            if entry.close is not None:
                closers.append((name, entry.close))
    except BaseException:
        Resources(items, closers).close()
        raise
    return Resources(items, closers)


def load_keyring(settings: Settings) -> Keyring:
    """FIDUCIARY_KEYRING, else the keyring file. A worker never creates a keyring: one
    made up here would not open anything the service stored."""
    if settings.keyring:
        return Keyring.from_json(settings.keyring, "FIDUCIARY_KEYRING")
    return Keyring.load(settings.resolved_keyring_file())


def _dispose(engine: object) -> None:
    if isinstance(engine, Engine):
        engine.dispose()


register(DATA, lambda s, _: make_engine(s.resolved_database_url()), close=_dispose)
register(KEYS, lambda s, _: make_engine(s.resolved_keys_database_url(), secure_delete=True), close=_dispose)
register(KEYRING, lambda s, _: load_keyring(s))


def import_modules(names: Iterable[str]) -> None:
    """Import the modules that register step handlers and resources."""
    for name in names:
        importlib.import_module(name)


_plugins_loaded = False


def load_plugins() -> None:
    """Import every ``fiduciary.jobs`` entry point (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group="fiduciary.jobs"):
        log.info("loading job plugin %s (%s)", ep.name, ep.value)
        ep.load()


__all__ = [
    "Factory",
    "Resources",
    "build",
    "import_modules",
    "load_keyring",
    "load_plugins",
    "register",
    "registered",
    "unregister",
]
