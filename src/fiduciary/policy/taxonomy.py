"""The fideslang taxonomy: data categories, data uses and data subjects.

Read once from ``fideslang.default_taxonomy``; a policy may add children of existing
keys (``user.content.private.file``), never new roots.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Literal

Kind = Literal["category", "use", "subject"]


@dataclass(frozen=True)
class TaxonomyEntry:
    key: str
    name: str
    description: str
    parent: str | None


@dataclass(frozen=True)
class Taxonomy:
    categories: MappingProxyType[str, TaxonomyEntry]
    uses: MappingProxyType[str, TaxonomyEntry]
    subjects: MappingProxyType[str, TaxonomyEntry]

    def table(self, kind: Kind) -> MappingProxyType[str, TaxonomyEntry]:
        return {"category": self.categories, "use": self.uses, "subject": self.subjects}[kind]


SNAPSHOT = Path(__file__).with_name("taxonomy.json")


@cache
def taxonomy() -> Taxonomy:
    """The default fideslang taxonomy, from a snapshot shipped with the package.

    Importing fideslang itself costs ~90 ms, a third of the time budget of
    ``fiduciary policy check``; ``snapshot_from_fideslang`` rebuilds the snapshot and a test
    keeps it equal to the installed fideslang.
    """
    data = json.loads(SNAPSHOT.read_text(encoding="utf-8"))

    def table(rows: list[list[str | None]]) -> MappingProxyType[str, TaxonomyEntry]:
        return MappingProxyType(
            {
                str(key): TaxonomyEntry(str(key), str(name), str(desc or ""), parent)
                for key, name, desc, parent in rows
            }
        )

    return Taxonomy(table(data["data_category"]), table(data["data_use"]), table(data["data_subject"]))


def snapshot_from_fideslang() -> dict[str, object]:
    """The snapshot's content, read from the installed fideslang package."""
    import fideslang
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY as T

    def rows(items: Iterable[object]) -> list[list[str | None]]:
        return [
            [
                i.fides_key,  # type: ignore[attr-defined]
                i.name or i.fides_key,  # type: ignore[attr-defined]
                i.description or "",  # type: ignore[attr-defined]
                getattr(i, "parent_key", None),
            ]
            for i in items
        ]

    return {
        "fideslang_version": getattr(fideslang, "__version__", "unknown"),
        "data_category": rows(T.data_category),
        "data_use": rows(T.data_use),
        "data_subject": rows(T.data_subject),
    }


def ancestors(key: str) -> list[str]:
    """``user.contact.email`` -> ``['user.contact', 'user']`` (nearest first)."""
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def is_within(key: str, parent: str) -> bool:
    """True when ``key`` equals ``parent`` or lies below it."""
    return key == parent or key.startswith(parent + ".")


def related(a: str, b: str) -> bool:
    return is_within(a, b) or is_within(b, a)


def known_root(key: str, kind: Kind) -> str | None:
    """The nearest taxonomy key at or above ``key``, or None if none exists."""
    table = taxonomy().table(kind)
    if key in table:
        return key
    for anc in ancestors(key):
        if anc in table:
            return anc
    return None


def suggest(value: str, candidates: Iterable[str], n: int = 1) -> list[str]:
    """Did-you-mean: the nearest candidates by whole key, then by last segment."""
    cands = list(candidates)
    found = difflib.get_close_matches(value, cands, n=n, cutoff=0.6)
    if found:
        return found
    last = value.rsplit(".", 1)[-1]
    by_last: dict[str, str] = {}
    for c in cands:
        by_last.setdefault(c.rsplit(".", 1)[-1], c)
    found = difflib.get_close_matches(last, list(by_last), n=n, cutoff=0.7)
    if found:
        return [by_last[f] for f in found]
    # Short keys ('eu' for 'europe') defeat ratio matching; a shared prefix still tells.
    prefixed = [
        c for c in cands if min(len(c), len(value)) >= 2 and (value.startswith(c) or c.startswith(value))
    ]
    return prefixed[:n]


def label(key: str, kind: Kind = "category") -> str:
    """A human name for a taxonomy key (falls back to the key's last segment)."""
    entry = taxonomy().table(kind).get(key)
    if entry:
        return entry.name
    return key.rsplit(".", 1)[-1].replace("_", " ").capitalize()
