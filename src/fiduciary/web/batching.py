"""Batching across requests: many requests' writes in one transaction (group commit), and
many requests' reads in one query.

A consent event or a decision's audit entry written one transaction at a time costs a
commit each (~0.5-1.5 ms on SQLite, more on PostgreSQL), and concurrent writers queue for
the database's lock. Here requests hand their write to one writer thread per process
and wait; the writer takes everything queued, writes it with one set-based call (one
transaction) and answers each request. When the server is idle a batch is a single item
(no added delay); under load batches grow by themselves, as in a database's group commit:
whatever arrives while a batch is written (or while another process holds the database's
write lock) goes into the next one.

Reads work the same way: subject states that are not cached yet are loaded by one
thread, all pending subjects with one query, so a burst of requests for different subjects
costs one query rather than one each.

Nothing is acknowledged before it is committed: a crash loses only writes whose requests
had not been answered. When a batch fails as a whole on bad input (one invalid event
refuses ``record_many``), its items are retried one by one, so each request gets its own
answer and one bad item never fails the others.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger("fiduciary.web")

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class Batcher(Generic[T, R]):
    """``submit(item)`` returns a Future resolved once ``run_many`` handled the item.

    ``run_many(items)`` handles a batch with one set-based call (one transaction) in this
    batcher's thread and returns one result per item. ``isolate``: exception classes that
    mean "some item is bad" rather than "the store failed"; on those, a batch is retried
    item by item."""

    def __init__(
        self,
        name: str,
        run_many: Callable[[Sequence[T]], Sequence[R]],
        *,
        isolate: tuple[type[BaseException], ...] = (ValueError, LookupError),
        max_batch: int = 1000,
    ) -> None:
        self.name = name
        self._run_many = run_many
        self._isolate = isolate
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0
        self.items = 0

    def submit(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        if self._thread is None:
            self._start()
        if self._closed:
            future.set_exception(RuntimeError(f"{self.name}: closed"))
            return future
        self._queue.put((item, future))
        return future

    def call(self, item: T, timeout: float | None = 30.0) -> R:
        """Submit and wait (for code already running in a worker thread)."""
        return self.submit(item).result(timeout)

    def call_many(self, items: Sequence[T], timeout: float | None = 60.0) -> list[R]:
        """Submit several and wait for all (they may share a batch with others)."""
        futures = [self.submit(item) for item in items]
        return [f.result(timeout) for f in futures]

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name=f"fiduciary-{self.name}", daemon=True)
                self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[tuple[T, Future[R]]] = [first]  # type: ignore[list-item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            self._flush(batch)

    def _flush(self, batch: list[tuple[T, Future[R]]]) -> None:
        items = [item for item, _ in batch]
        self.batches += 1
        self.items += len(items)
        try:
            results = self._run_many(items)
        except self._isolate as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for item, future in batch:
                try:
                    future.set_result(self._run_many([item])[0])
                except BaseException as one:
                    future.set_exception(one)
            return
        except BaseException as exc:
            log.error("%s: a batch of %d failed: %s", self.name, len(batch), type(exc).__name__)
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
