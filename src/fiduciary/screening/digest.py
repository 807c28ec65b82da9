"""Hashing an upload for several algorithms at once: bytes, a stream or a path.

Only the algorithms that have lists loaded are computed. With two or three algorithms the
updates of one chunk run in parallel threads: hashlib releases the GIL on buffers of 2 KiB
and more, so on two cores MD5 runs beside SHA-1 + SHA-256 (docs/benchmarks.md measures it).
Streams are read in chunks into one reused buffer; paths are mapped (``mmap``) and hashed
in slices, without a copy; nothing ever holds a whole file.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Final, Protocol, TypeAlias

__all__ = [
    "DEFAULT_CHUNK",
    "Digester",
    "Source",
    "digest_source",
    "is_unseekable_stream",
]

DEFAULT_CHUNK: Final = 4 << 20
# Below this a thread hand-off costs more than it saves (and hashlib keeps the GIL).
_PARALLEL_MIN: Final = 256 << 10


class _Readable(Protocol):
    def read(self, n: int = ..., /) -> bytes: ...


# bytes-like content; a str or PathLike is a path; anything with read() is a stream.
Source: TypeAlias = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | _Readable

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # Two helpers: with three algorithms the caller's thread hashes one of them.
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fiduciary-hash")
        return _pool


class Digester:
    """Incremental digests of one upload for the given algorithms.

    ``parallel`` (default: when there are two or more algorithms and two or more CPUs)
    hashes each chunk's algorithms in parallel threads.
    """

    def __init__(self, algorithms: Sequence[str], *, parallel: bool | None = None) -> None:
        if not algorithms:
            raise ValueError("no algorithm to compute")
        self.algorithms = tuple(algorithms)
        self._hashes = [hashlib.new(a) for a in self.algorithms]
        if parallel is None:
            parallel = len(self._hashes) > 1 and (os.cpu_count() or 1) > 1
        self._pool = _shared_pool() if parallel and len(self._hashes) > 1 else None
        self.size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        n = len(chunk) if not isinstance(chunk, memoryview) else chunk.nbytes
        self.size += n
        first, *others = self._hashes
        if self._pool is None or n < _PARALLEL_MIN or not others:
            for h in self._hashes:
                h.update(chunk)
            return
        futures: list[Future[None]] = [self._pool.submit(h.update, chunk) for h in others]
        first.update(chunk)
        for f in futures:
            f.result()

    def digests(self) -> dict[str, bytes]:
        return {a: h.digest() for a, h in zip(self.algorithms, self._hashes, strict=True)}


def is_unseekable_stream(source: object) -> bool:
    """A stream that cannot be read twice (a socket, a pipe, a request body)."""
    if isinstance(source, bytes | bytearray | memoryview | str | os.PathLike):
        return False
    seekable = getattr(source, "seekable", None)
    return not (callable(seekable) and seekable())


def digest_source(
    source: Source,
    algorithms: Sequence[str],
    *,
    chunk_size: int = DEFAULT_CHUNK,
    parallel: bool | None = None,
    sink: Callable[[memoryview], None] | None = None,
) -> tuple[dict[str, bytes], int]:
    """(digests by algorithm, size in bytes) of ``source``.

    A stream is read from its current position to its end; a seekable one is then put back
    where it was, so that the caller can store what was screened. ``sink`` sees every chunk
    of a stream as it is read (the screener spools unseekable streams through it); the view
    is only valid during the call.
    """
    if chunk_size < 4096:
        raise ValueError(f"chunk_size {chunk_size}: at least 4096 bytes")
    d = Digester(algorithms, parallel=parallel)
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        for i in range(0, len(view), chunk_size):
            d.update(view[i : i + chunk_size])
        return d.digests(), d.size
    if isinstance(source, str | os.PathLike):
        _digest_path(Path(source), d, chunk_size)
        return d.digests(), d.size
    if not callable(getattr(source, "read", None)):
        raise TypeError(f"cannot screen a {type(source).__name__}: give bytes, a path or a binary stream")
    _digest_stream(source, d, chunk_size, sink)
    return d.digests(), d.size


def _digest_path(path: Path, d: Digester, chunk_size: int) -> None:
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            with contextlib.suppress(AttributeError, OSError):  # not on every platform
                mm.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mm)
            try:
                for i in range(0, len(view), chunk_size):
                    d.update(view[i : i + chunk_size])
            finally:
                view.release()


def _digest_stream(
    stream: Any, d: Digester, chunk_size: int, sink: Callable[[memoryview], None] | None
) -> None:
    start: int | None = None
    seekable = getattr(stream, "seekable", None)
    if callable(seekable) and seekable():
        start = stream.tell()
    readinto = getattr(stream, "readinto", None)
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    while True:
        if callable(readinto):
            n = readinto(view)
            if not n:
                break
            chunk = view[:n]
        else:
            data = stream.read(chunk_size)
            if not data:
                break
            if not isinstance(data, bytes | bytearray | memoryview):
                raise TypeError(f"the stream gave {type(data).__name__}, not bytes: open it in binary mode")
            chunk = memoryview(data)
        d.update(chunk)
        if sink is not None:
            sink(chunk)
    if start is not None:
        stream.seek(start)
