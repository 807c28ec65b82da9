"""The lists in use, and the pure check: an upload's digests against them (no side effects).

``HashLists.check(source)`` hashes only the algorithms that some loaded list has, and
returns a ``Verdict`` naming each list and algorithm that matched. Recording, refusing,
quarantining and reporting a match is the screener's job (``screener.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fiduciary.screening.digest import DEFAULT_CHUNK, Source, digest_source
from fiduciary.screening.lists import ALGORITHMS, HashList, HashListError

__all__ = ["CACHE_SUFFIX", "HashLists", "Match", "Verdict"]

CACHE_SUFFIX = ".fhl"


@dataclass(frozen=True)
class Match:
    """One list that has the upload's digest for one algorithm."""

    list: str
    algorithm: str
    digest: str  # hex

    def to_dict(self) -> dict[str, str]:
        return {"list": self.list, "algorithm": self.algorithm, "digest": self.digest}


@dataclass(frozen=True)
class Verdict:
    """The result of screening one upload."""

    digests: Mapping[str, str]  # algorithm -> hex, for the algorithms computed
    size: int
    matches: tuple[Match, ...] = ()
    record: str | None = field(default=None, compare=False)  # the screener's match record id

    @property
    def clean(self) -> bool:
        return not self.matches

    @property
    def lists(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.list for m in self.matches))

    def describe(self) -> str:
        if self.clean:
            computed = ", ".join(self.digests) or "no algorithm"
            return f"clean ({self.size:,} bytes; {computed} checked)"
        found = "; ".join(f"{m.list} ({m.algorithm} {m.digest})" for m in self.matches)
        return f"matches {found}"


class HashLists:
    """The hash lists in use, by name."""

    def __init__(self, lists: Iterable[HashList] = ()) -> None:
        self._lists: dict[str, HashList] = {}
        for hl in lists:
            self.add(hl)

    @classmethod
    def open_dir(cls, folder: str | Path, *, verify: bool = True) -> HashLists:
        """Every cache file (``*.fhl``) in ``folder``; none when the folder does not exist."""
        path = Path(folder)
        found = sorted(path.glob(f"*{CACHE_SUFFIX}")) if path.is_dir() else []
        return cls(HashList.open(p, verify=verify) for p in found)

    def add(self, hash_list: HashList) -> None:
        """Add a list, replacing one of the same name."""
        self._lists[hash_list.name] = hash_list

    def remove(self, name: str) -> None:
        if name not in self._lists:
            raise HashListError(f"no hash list named {name!r}; loaded: {', '.join(self._lists) or 'none'}")
        del self._lists[name]

    def __iter__(self) -> Iterator[HashList]:
        return iter(self._lists.values())

    def __len__(self) -> int:
        return len(self._lists)

    def __getitem__(self, name: str) -> HashList:
        return self._lists[name]

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms some list has, in canonical order: what an upload is hashed with."""
        have = {a for hl in self._lists.values() for a in hl.sets}
        return tuple(a for a in ALGORITHMS if a in have)

    def lookup(self, digests: Mapping[str, bytes]) -> tuple[Match, ...]:
        """Every (list, algorithm) that has the given digest."""
        found: list[Match] = []
        for hl in self._lists.values():
            for algorithm, s in hl.sets.items():
                d = digests.get(algorithm)
                if d is not None and d in s:
                    found.append(Match(hl.name, algorithm, d.hex()))
        return tuple(found)

    def check(
        self, source: Source, *, chunk_size: int = DEFAULT_CHUNK, parallel: bool | None = None
    ) -> Verdict:
        """Hash ``source`` (bytes, a path, a binary stream) and look it up. No list loaded:
        a clean verdict with no digest computed."""
        algorithms = self.algorithms
        if not algorithms:
            return Verdict({}, 0)
        digests, size = digest_source(source, algorithms, chunk_size=chunk_size, parallel=parallel)
        return Verdict({a: d.hex() for a, d in digests.items()}, size, self.lookup(digests))
