"""Connectors: how Fiduciary reaches the company's datastores and processors.

A registry, Presidio-style: each connector is one small class in one file, registered
under a name (``register("sql", SQLConnector)``), and found by name or configuration
(``connector_for("sql", url=...)``, ``connector_for({"type": "webhook", "url": ...})``,
or a bare URL: ``http(s)://`` gives a webhook, anything else an SQLAlchemy database).
The built-in connectors:

- ``sql`` — :class:`~fiduciary.connectors.sql.SQLConnector`: any SQLAlchemy dialect;
  set-based fetch, masking and verification driven by a :class:`~fiduciary.requests.plan.Plan`;
- ``webhook`` — :class:`~fiduciary.connectors.webhook.WebhookConnector`: signed JSON
  POSTs to a processor, retried with backoff (PUT-11, PLA-5, LAW-5);
- ``manual`` — :class:`~fiduciary.connectors.manual.ManualConnector`: a task a person
  confirms (paper archives, a system without an API).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

__all__ = ["Connector", "ConnectorError", "connector_for", "register", "registered"]


class ConnectorError(RuntimeError):
    """A connector could not do its work (names the connector and what failed)."""


class Connector:
    """The base of every connector: a name in the registry and a way to let go."""

    kind: ClassVar[str] = ""

    def close(self) -> None:
        """Release what the connector holds (connections); a no-op by default."""


_C = TypeVar("_C", bound=type[Connector])
_REGISTRY: dict[str, type[Connector]] = {}


def register(name: str, cls: type[Connector] | None = None) -> Any:
    """Register ``cls`` under ``name``; without ``cls``, a class decorator."""

    def add(c: _C) -> _C:
        if not isinstance(c, type) or not issubclass(c, Connector):
            raise TypeError(f"a connector must subclass fiduciary.connectors.Connector, not {c!r}")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not c:
            raise ValueError(f"connector name {name!r} is already taken by {existing.__qualname__}")
        _REGISTRY[name] = c
        if not c.kind:
            c.kind = name
        return c

    if cls is not None:
        return add(cls)
    decorator: Callable[[_C], _C] = add
    return decorator


def registered() -> dict[str, type[Connector]]:
    """The registered connectors by name."""
    return dict(sorted(_REGISTRY.items()))


def connector_for(spec: str | Mapping[str, Any], **options: Any) -> Connector:
    """A connector from a registered name, a configuration mapping (``{"type": name,
    ...options}``) or a URL."""
    if isinstance(spec, Mapping):
        config = dict(spec)
        name = config.pop("type", None) or config.pop("connector", None)
        if not isinstance(name, str):
            raise ValueError(
                f"connector configuration needs a 'type' (one of {', '.join(_REGISTRY)}): {spec!r}"
            )
        config.update(options)
        return _make(name, config)
    if spec in _REGISTRY:
        return _make(spec, options)
    if "://" in spec or spec.startswith("sqlite:"):
        scheme = spec.split(":", 1)[0].lower()
        if scheme in ("http", "https"):
            return _make("webhook", {"url": spec, **options})
        return _make("sql", {"url": spec, **options})
    raise ValueError(f"no connector named {spec!r}; registered: {', '.join(_REGISTRY) or 'none'}")


def _make(name: str, options: Mapping[str, Any]) -> Connector:
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"no connector named {name!r}; registered: {', '.join(_REGISTRY)}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValueError(f"connector {name!r}: bad options {sorted(options)}: {exc}") from exc


# The built-in connectors register themselves on import.
import fiduciary.connectors.manual  # noqa: E402
import fiduciary.connectors.sql  # noqa: E402
import fiduciary.connectors.webhook  # noqa: E402, F401
