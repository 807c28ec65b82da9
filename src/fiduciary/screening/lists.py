"""Hash lists of known illegal content (PUT-9): loading, a compact index, a binary cache.

A list holds, per algorithm (MD5, SHA-1, SHA-256), its digests as **one sorted buffer of
fixed-width records** plus a **prefix bucket index**: the first ``bits`` bits of a digest
(8 to 24, about n/8 buckets) select a bucket, ``offsets[p] .. offsets[p + 1]`` in an
``array('I')``, and the digest is searched inside that bucket's few bytes with the
buffer's own ``find`` (C speed, no Python objects per entry). 10,000,000 SHA-256 digests
take 320 MB plus a 8 MB index; a Python set of the same digests would take ~1.1 GB.

Text files are parsed in blocks: a block of plain ``hex\\n`` lines is checked and decoded
with a few C-level operations (strided slicing, ``translate``, ``unhexlify``); any other
block (comments, ``sha256sum`` output, CSV) goes line by line. Sorting never holds one
Python object per digest: the digests are spread over 256 buckets by their first byte and
each bucket is sorted on its own, so the peak is about the final size.

Bad lines are never silently dropped: by default one bad line refuses the whole file
(``HashListError`` lists each as ``file:line: reason``) and nothing is loaded; with
``skip_bad=True`` they are skipped and returned in the load report.

``HashList.save`` writes a binary cache (``.fhl``) that ``HashList.open`` maps with
``mmap``: a restart reads no text, and its SHA-256 checksum is verified on open.
"""

from __future__ import annotations

import binascii
import csv
import ctypes
import hashlib
import io
import json
import mmap
import os
import re
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "HashList",
    "HashListError",
    "HashSet",
    "LineProblem",
    "LoadReport",
    "load_hash_list",
    "normalize_algorithm",
]

Algorithm = Literal["md5", "sha1", "sha256"]
# Digest width in bytes; the order is the canonical order everywhere (output, cache).
ALGORITHMS: Final[dict[str, int]] = {"md5": 16, "sha1": 20, "sha256": 32}
_BY_HEX_LENGTH: Final = {2 * w: a for a, w in ALGORITHMS.items()}
_ALIASES: Final = {"md5": "md5", "sha1": "sha1", "sha256": "sha256"}

MAGIC: Final = b"FIDHASH1"
FORMAT: Final = 1
_ALIGN: Final = 4096
_BLOCK: Final = 8 << 20  # text parsed in blocks of this many bytes (whole lines)
_MAX_KEPT_PROBLEMS: Final = 1000
_HEX: Final = b"0123456789abcdefABCDEF"


class HashListError(ValueError):
    """A hash list that cannot be loaded: says what and where (``problems``: file:line)."""

    def __init__(self, message: str, problems: Sequence[LineProblem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


@dataclass(frozen=True)
class LineProblem:
    """One bad line of a hash-list file."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


def normalize_algorithm(name: str) -> str:
    """``MD5``, ``SHA-1``, ``sha_256`` ... -> md5, sha1, sha256; ValueError otherwise."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if key not in _ALIASES:
        raise ValueError(f"unknown hash algorithm {name!r}: one of md5, sha1, sha256")
    return _ALIASES[key]


# --------------------------------------------------------------------------- the index


class _Findable(Protocol):
    """What holds the digests: bytes, bytearray or an mmap (all have C-level ``find``)."""

    def find(self, sub: bytes | bytearray, start: int = ..., end: int = ..., /) -> int: ...


def _bits_for(count: int) -> int:
    """Prefix bits: 4 to 8 digests per bucket, between 8 and 24 bits."""
    return min(24, max(8, (count // 8).bit_length()))


class HashSet:
    """One algorithm's digests of one list: sorted, unique, fixed width, in one buffer."""

    __slots__ = ("_base", "_data", "_end", "_offsets", "_shift", "algorithm", "bits", "count", "width")

    def __init__(
        self,
        algorithm: str,
        data: _Findable,
        base: int,
        count: int,
        offsets: Sequence[int],
        bits: int,
    ) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown hash algorithm {algorithm!r}")
        if not 8 <= bits <= 24 or len(offsets) != (1 << bits) + 1:
            raise ValueError(f"{algorithm}: bad index ({bits} bits, {len(offsets)} offsets)")
        self.algorithm = algorithm
        self.width = ALGORITHMS[algorithm]
        self.count = count
        self.bits = bits
        self._shift = 24 - bits
        self._data = data
        self._base = base
        self._end = base + count * self.width
        self._offsets = offsets

    # -- building
    @classmethod
    def build(cls, algorithm: str, digests: Iterable[bytes]) -> HashSet:
        """A set from digests in any order (duplicates are dropped)."""
        b = _Builder(algorithm)
        for d in digests:
            if not isinstance(d, bytes) or len(d) != b.width:
                raise ValueError(f"{algorithm}: a digest is {b.width} bytes, got {d!r}")
            b.add(d)
        return b.finish()

    # -- lookup
    def __len__(self) -> int:
        return self.count

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, bytes | bytearray) or len(digest) != self.width:
            return False
        w = self.width
        p = int.from_bytes(digest[:3], "big") >> self._shift
        offsets = self._offsets
        start = self._base + offsets[p] * w
        end = self._base + offsets[p + 1] * w
        find = self._data.find
        at = find(digest, start, end)
        # A hit must start on a record boundary; one straddling two records is a false
        # match (astronomically rare with real digests, but cheap to rule out).
        while at >= 0 and (at - start) % w:
            at = find(digest, at + 1, end)
        return at >= 0

    def digests(self) -> Iterator[bytes]:
        """Every digest in order (for tests and export; not for the hot path)."""
        view = memoryview(cast(Any, self._data))
        w = self.width
        for i in range(self._base, self._end, w):
            yield bytes(view[i : i + w])

    @property
    def nbytes(self) -> int:
        """Bytes the set occupies: the digests and the index."""
        return self.count * self.width + 4 * len(self._offsets)

    def _sections(self) -> tuple[memoryview, memoryview]:
        digests = memoryview(cast(Any, self._data))[self._base : self._end]
        offsets = self._offsets
        if isinstance(offsets, memoryview):
            raw = offsets.cast("B")
        else:
            arr = offsets if isinstance(offsets, array) else array("I", offsets)
            raw = memoryview(arr).cast("B")
        return digests, raw


class _Builder:
    """Collects one algorithm's digests into 256 buckets by first byte, then sorts each."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.width = ALGORITHMS[algorithm]
        self._buckets = [bytearray() for _ in range(256)]
        self.added = 0

    def add(self, digest: bytes) -> None:
        self._buckets[digest[0]] += digest
        self.added += 1

    def add_block(self, block: bytes) -> None:
        """Many digests, concatenated (the fast path of the text parser)."""
        w = self.width
        extend = [b.extend for b in self._buckets]
        view = memoryview(block)
        for i in range(0, len(block), w):
            extend[block[i]](view[i : i + w])
        self.added += len(block) // w

    def finish(self) -> HashSet:
        w = self.width
        bits = _bits_for(self.added)
        if self.added >= 1 << 32:
            raise HashListError(f"{self.algorithm}: {self.added:,} digests; at most 4,294,967,295 per list")
        sub = bits - 8
        # Within first-byte bucket k, sub-bucket j starts at the first digest >= this key.
        suffixes = [(j << (16 - sub)).to_bytes(2, "big") for j in range(1 << sub)]
        records = re.compile(b"(?s).{%d}" % w)  # the records of a bucket, split at C speed
        # The sorted digests go into an anonymous map of the size read: a page costs memory
        # only once written (duplicates leave an untouched tail), there is no growth slack,
        # and the whole map goes back to the system with the set.
        out = mmap.mmap(-1, max(1, self.added * w))
        offsets = array("I")
        total = 0
        for k in range(256):
            bucket = self._buckets[k]
            self._buckets[k] = bytearray()  # freed as we go, so the peak stays near the final size
            items = sorted(set(records.findall(bucket)))
            del bucket
            head = bytes((k,))
            if sub:
                offsets.extend(
                    total + i for i in map(bisect_left, repeat(items), [head + s for s in suffixes])
                )
            else:
                offsets.append(total)
            out.write(b"".join(items))
            total += len(items)
            if k % 32 == 31:
                release_free_memory()
        offsets.append(total)
        return HashSet(self.algorithm, out, 0, total, offsets, bits)


def release_free_memory() -> None:
    """Hand freed heap pages back to the system (glibc's ``malloc_trim``; a no-op where it
    is missing). Building a list frees its buckets one by one; without this glibc keeps
    most of that memory, and the process would hold the list about twice."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None


# --------------------------------------------------------------------------- lists


@dataclass
class LoadReport:
    """What a load read: digests per algorithm, lines skipped (with ``skip_bad``)."""

    files: list[str] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)  # digests read, duplicates included
    problems: list[LineProblem] = field(default_factory=list)  # the first 1,000
    bad_lines: int = 0

    def note(self, problem: LineProblem) -> None:
        self.bad_lines += 1
        if len(self.problems) < _MAX_KEPT_PROBLEMS:
            self.problems.append(problem)


class HashList:
    """A named hash list (``NCMEC``, ``IWF`` ...): one HashSet per algorithm it has."""

    def __init__(
        self,
        name: str,
        sets: Mapping[str, HashSet],
        *,
        sources: Sequence[str] = (),
        created_at: datetime | None = None,
        path: Path | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > 128 or "\n" in name:
            raise HashListError(f"hash list name {name!r}: one line of 1 to 128 characters")
        self.name = name.strip()
        self.sets = {a: sets[a] for a in ALGORITHMS if a in sets}
        self.sources = list(sources)
        self.created_at = created_at or datetime.now(UTC)
        self.path = path

    def __len__(self) -> int:
        return sum(s.count for s in self.sets.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{a}: {s.count:,}" for a, s in self.sets.items())
        return f"HashList({self.name!r}, {counts})"

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self.sets)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.sets.values())

    def contains(self, algorithm: str, digest: bytes) -> bool:
        s = self.sets.get(algorithm)
        return s is not None and digest in s

    # -- the binary cache
    def save(self, path: str | Path) -> Path:
        """Write the list as a binary cache file (written aside, then renamed; mode 0600:
        the lists themselves are often confidential)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        sections: list[dict[str, Any]] = []
        parts: list[tuple[memoryview, memoryview]] = []
        for algorithm, s in self.sets.items():
            digests, offsets = s._sections()
            parts.append((offsets, digests))
            sections.append(
                {"algorithm": algorithm, "count": s.count, "bits": s.bits, "offsets": len(offsets)}
            )
        checksum = hashlib.sha256()
        for offsets, digests in parts:
            checksum.update(offsets)
            checksum.update(digests)
        header = {
            "format": FORMAT,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "sources": self.sources,
            "byteorder": sys.byteorder,
            "sections": sections,
            "sha256": checksum.hexdigest(),
        }
        head = json.dumps(header, ensure_ascii=False).encode()
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + len(head).to_bytes(4, "little") + head)
                for offsets, digests in parts:
                    _pad(fh)
                    fh.write(offsets)
                    _pad(fh)
                    fh.write(digests)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.path = target
        return target

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> HashList:
        """Map a cache file written by ``save``. ``verify`` checks its SHA-256 (reads the
        file once: ~0.3 s for 10M SHA-256 digests); a damaged file is a HashListError."""
        p = Path(path)
        try:
            with p.open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < len(MAGIC) + 4:
                    raise HashListError(f"{p}: not a hash-list cache (too short)")
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise HashListError(f"{p}: cannot open the hash-list cache: {exc.strerror or exc}") from None
        if mm[: len(MAGIC)] != MAGIC:
            raise HashListError(f"{p}: not a hash-list cache (bad magic)")
        head_len = int.from_bytes(mm[len(MAGIC) : len(MAGIC) + 4], "little")
        pos = len(MAGIC) + 4
        try:
            header = json.loads(mm[pos : pos + head_len])
            if header.get("format") != FORMAT:
                raise HashListError(
                    f"{p}: hash-list cache format {header.get('format')!r}, {FORMAT} expected"
                )
            pos += head_len
            view = memoryview(mm)
            sets: dict[str, HashSet] = {}
            checksum = hashlib.sha256()
            for sec in header["sections"]:
                algorithm = str(sec["algorithm"])
                count, bits, n_off = int(sec["count"]), int(sec["bits"]), int(sec["offsets"])
                if algorithm not in ALGORITHMS:
                    raise HashListError(f"{p}: unknown algorithm {algorithm!r} in the cache")
                pos = _aligned(pos)
                off_view = view[pos : pos + n_off]
                pos += n_off
                pos = _aligned(pos)
                dig_len = count * ALGORITHMS[algorithm]
                if pos + dig_len > size or len(off_view) != n_off:
                    raise HashListError(f"{p}: truncated ({algorithm} section)")
                if verify:
                    checksum.update(off_view)
                    checksum.update(view[pos : pos + dig_len])
                offsets: Sequence[int]
                if header["byteorder"] == sys.byteorder:
                    offsets = off_view.cast("I")
                else:  # written on a machine of the other endianness: one copy, swapped
                    arr = array("I", bytes(off_view))
                    arr.byteswap()
                    offsets = arr
                if offsets[len(offsets) - 1] != count:
                    raise HashListError(f"{p}: the {algorithm} index does not match its digests")
                sets[algorithm] = HashSet(algorithm, mm, pos, count, offsets, bits)
                pos += dig_len
            if verify and checksum.hexdigest() != header["sha256"]:
                raise HashListError(
                    f"{p}: checksum mismatch: the cache was altered or damaged; load the list again"
                )
            created = datetime.fromisoformat(str(header["created_at"]))
            return cls(
                str(header["name"]), sets, sources=header.get("sources", []), created_at=created, path=p
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, HashListError):
                raise
            raise HashListError(f"{p}: damaged hash-list cache header ({exc})") from None


def _aligned(pos: int) -> int:
    return -(-pos // _ALIGN) * _ALIGN


def _pad(fh: io.BufferedWriter) -> None:
    pos = fh.tell()
    fh.write(b"\0" * (_aligned(pos) - pos))


# --------------------------------------------------------------------------- text files


def load_hash_list(
    name: str,
    files: Sequence[str | Path],
    *,
    algorithms: Iterable[str] | None = None,
    skip_bad: bool = False,
) -> tuple[HashList, LoadReport]:
    """Read hash-list text files into one list named ``name``.

    Formats (recognised per file):

    - one hex digest per line; blank lines and ``#`` comments are ignored, and anything
      after the digest and a space, tab or comma is ignored too (``sha256sum`` output,
      ``digest,description``). The algorithm comes from the digest's length (32 MD5, 40
      SHA-1, 64 SHA-256);
    - CSV with a header row naming the digest columns (``MD5``, ``SHA-1``, ``SHA256`` ...,
      as in NIST NSRL files); other columns are ignored, quotes are allowed.

    ``algorithms`` keeps only those (a digest of another algorithm is then a bad line in a
    plain file, and the column is ignored in a CSV). A bad line refuses the whole load
    (HashListError, every bad line as file:line) unless ``skip_bad``: then the bad lines
    are skipped and listed in the report.
    """
    wanted = (
        tuple(a for a in ALGORITHMS if a in {normalize_algorithm(x) for x in algorithms})
        if algorithms is not None
        else tuple(ALGORITHMS)
    )
    if not wanted:
        raise HashListError("no algorithm chosen: give md5, sha1 or sha256")
    if not files:
        raise HashListError(f"hash list {name!r}: no file given")
    builders = {a: _Builder(a) for a in wanted}
    report = LoadReport()
    for f in files:
        path = Path(f)
        report.files.append(str(path))
        try:
            with path.open("rb") as fh:
                _parse_file(fh, str(path), builders, report)
        except OSError as exc:
            raise HashListError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if report.bad_lines and not skip_bad:
        shown = "\n".join(f"  {p}" for p in report.problems[:20])
        more = f"\n  ... and {report.bad_lines - 20:,} more" if report.bad_lines > 20 else ""
        raise HashListError(
            f"hash list {name!r}: {report.bad_lines:,} bad line(s); nothing was loaded "
            f"(fix them, or skip them explicitly):\n{shown}{more}",
            report.problems,
        )
    report.added = {a: b.added for a, b in builders.items() if b.added}
    if not report.added:
        raise HashListError(f"hash list {name!r}: no digest found in {', '.join(report.files)}")
    release_free_memory()  # what the buckets' growth left behind
    sets = {a: b.finish() for a, b in builders.items() if b.added}
    return HashList(name, sets, sources=[Path(f).name for f in files]), report


def _parse_file(
    fh: io.BufferedReader, where: str, builders: Mapping[str, _Builder], report: LoadReport
) -> None:
    first = fh.peek(1 << 16)[: 1 << 16]
    if first.startswith(b"\xef\xbb\xbf"):
        fh.read(3)
        first = first[3:]
    header_line = _first_content_line(first)
    delimiter = _csv_delimiter(header_line) if header_line is not None else None
    if delimiter is not None:
        _parse_csv(fh, where, builders, report, delimiter)
    else:
        _parse_plain(fh, where, builders, report)


def _first_content_line(head: bytes) -> bytes | None:
    for line in head.splitlines():
        s = line.strip()
        if s and not s.startswith(b"#"):
            return s
    return None


def _csv_delimiter(line: bytes) -> str | None:
    """The delimiter of a CSV header row (the most frequent of , ; tab), or None when the
    line is not a header: no cell names a digest algorithm."""
    counts = {d: line.count(d.encode()) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: counts[d])
    if not counts[delimiter]:
        return None
    for cell in line.split(delimiter.encode()):
        try:
            normalize_algorithm(cell.strip().strip(b"\"'").decode("utf-8", "replace"))
            return delimiter
        except ValueError:
            continue
    return None


def _parse_plain(
    fh: io.BufferedReader, where: str, builders: Mapping[str, _Builder], report: LoadReport
) -> None:
    line_no = 0  # lines before the current block
    rest = b""
    while True:
        chunk = fh.read(_BLOCK)
        if not chunk:
            if rest:
                _plain_block(rest + b"\n", line_no, where, builders, report)
            return
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        block, rest = data[:cut], data[cut:]
        _plain_block(block, line_no, where, builders, report)
        line_no += block.count(b"\n")


def _plain_block(
    block: bytes, line_no: int, where: str, builders: Mapping[str, _Builder], report: LoadReport
) -> None:
    """Whole lines, each ending in \\n. Fast path: every line is one digest of one width."""
    clean = block.replace(b"\r\n", b"\n") if b"\r" in block else block
    eol = clean.find(b"\n")
    algorithm = _BY_HEX_LENGTH.get(eol)
    if algorithm is not None and algorithm in builders:
        step = eol + 1
        n = len(clean) // step
        if (
            n * step == len(clean)
            and clean[eol::step] == b"\n" * n
            and not clean.translate(None, _HEX + b"\n")
        ):
            builders[algorithm].add_block(binascii.unhexlify(clean.replace(b"\n", b"")))
            return
    for i, line in enumerate(block.split(b"\n")[:-1], start=line_no + 1):
        _plain_line(line, i, where, builders, report)


def _plain_line(
    line: bytes, no: int, where: str, builders: Mapping[str, _Builder], report: LoadReport
) -> None:
    s = line.strip()
    if not s or s.startswith(b"#"):
        return
    token = re.split(rb"[\s,;]", s, maxsplit=1)[0].strip(b"\"'")
    problem = _digest_problem(token, builders)
    if problem is not None:
        report.note(LineProblem(where, no, problem))
        return
    builders[_BY_HEX_LENGTH[len(token)]].add(binascii.unhexlify(token))


def _digest_problem(token: bytes, builders: Mapping[str, _Builder]) -> str | None:
    algorithm = _BY_HEX_LENGTH.get(len(token))
    if algorithm is None:
        return (
            f"not a digest: {_show(token)} has {len(token)} characters "
            "(MD5 has 32, SHA-1 40, SHA-256 64 hex digits)"
        )
    if token.translate(None, _HEX):
        return f"not hexadecimal: {_show(token)}"
    if algorithm not in builders:
        return f"a {algorithm} digest, but only {', '.join(builders)} is loaded: {_show(token)}"
    return None


def _show(text: bytes) -> str:
    shown = text[:80].decode("utf-8", "replace")
    return repr(shown + ("..." if len(text) > 80 else ""))


def _parse_csv(
    fh: io.BufferedReader, where: str, builders: Mapping[str, _Builder], report: LoadReport, delimiter: str
) -> None:
    text = io.TextIOWrapper(fh, encoding="utf-8", errors="replace", newline="")
    rows = csv.reader(text, delimiter=delimiter)
    columns: dict[int, str] = {}
    header_at = 0
    for row in rows:
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        header_at = rows.line_num
        for i, cell in enumerate(row):
            try:
                algorithm = normalize_algorithm(cell.strip())
            except ValueError:
                continue
            if algorithm in builders:
                columns[i] = algorithm
        break
    if not columns:
        loaded = ", ".join(builders)
        report.note(
            LineProblem(where, header_at, f"the header names none of the loaded algorithms ({loaded})")
        )
        return
    width = max(columns) + 1
    for row in rows:
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < width:
            report.note(LineProblem(where, rows.line_num, f"{len(row)} column(s), {width} expected"))
            continue
        for i, algorithm in columns.items():
            value = row[i].strip().encode("ascii", "replace")
            if not value:
                continue  # NSRL rows may leave a digest empty
            problem = _digest_problem(value, builders)
            if problem is None and _BY_HEX_LENGTH[len(value)] != algorithm:
                problem = f"column {algorithm}: a {_BY_HEX_LENGTH[len(value)]} digest: {_show(value)}"
            if problem is not None:
                report.note(LineProblem(where, rows.line_num, problem))
                continue
            builders[algorithm].add(binascii.unhexlify(value))
