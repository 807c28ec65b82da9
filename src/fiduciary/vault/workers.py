"""Worker processes that prepare bulk-import batches while the importing process stores.

Preparing a batch (validate, normalize, blind-index, encrypt, wrap keys) costs about as
much CPU as SQLite takes to store its rows, so ``Vault.import_subjects(workers=N)`` hands
it to N processes running ``serve()`` here (``python -c``, so that this module is not
imported twice in them, once as ``__main__``).

They are plain subprocesses talking over their stdin and stdout, not ``multiprocessing``:
its spawn start method runs the caller's main script again in every worker (a script
without an ``if __name__ == "__main__":`` guard would repeat whatever it did before the
import), and fork is unsafe in a process holding database connections and threads.

Protocol: frames of an 8-byte big-endian length and a pickle, between this package and
itself (a private pipe to a child we started; never data from elsewhere). The first frame
to a worker is its ``WorkerSetup``; then each request is ``(records, first, actor)`` and
each answer ``(True, batch)`` or ``(False, reason)``. A worker holds at most one request at
a time, so neither side can block on a full pipe while the other waits for it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fiduciary.policy.model import Policy
    from fiduciary.vault.keyring import Keyring
    from fiduciary.vault.vault import NewSubject, _Batch

_LENGTH = struct.Struct(">Q")


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to prepare batches as the importing vault would. The workers
    never connect to a database: the drivers only say how timestamps are bound."""

    policy: Policy
    keyring: Keyring
    default_region: str | None
    data_driver: str
    keys_driver: str
    audited: bool


class WorkerFailed(Exception):
    """A worker could not prepare a batch (or is gone); the caller prepares it itself."""


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError("the other side closed the pipe")
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the pipe mid-frame")
    return pickle.loads(data)


class PrepareWorker:
    def __init__(self, setup: WorkerSetup) -> None:
        env = dict(os.environ)
        # The package as this process imported it, wherever that was.
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from fiduciary.vault.workers import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.busy = False
        self.alive = True
        self._ask(setup)

    def _ask(self, obj: object) -> None:
        assert self.proc.stdin is not None
        try:
            _send(self.proc.stdin, obj)
        except (BrokenPipeError, OSError):
            self.alive = False

    def submit(self, records: Sequence[NewSubject], first: int, actor: str) -> None:
        self.busy = True
        if self.alive:
            self._ask((list(records), first, actor))

    def result(self) -> _Batch:
        self.busy = False
        if not self.alive:
            raise WorkerFailed("the worker process is gone")
        assert self.proc.stdout is not None
        try:
            ok, answer = _receive(self.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self.alive = False
            raise WorkerFailed(str(exc)) from None
        if not ok:
            raise WorkerFailed(str(answer))
        batch: _Batch = answer
        return batch

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a dead worker's pipe
                    stream.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PrepareWorkers:
    """``count`` worker processes; ``submit`` hands a batch to an idle one, ``result``
    returns a batch's preparation (``WorkerFailed``: prepare it yourself)."""

    def __init__(self, setup: WorkerSetup, count: int) -> None:
        self._workers: list[PrepareWorker] = []
        try:
            for _ in range(count):
                self._workers.append(PrepareWorker(setup))
        except BaseException:
            self.close()
            raise

    def idle(self) -> PrepareWorker | None:
        return next((w for w in self._workers if not w.busy), None)

    def close(self) -> None:
        for w in self._workers:
            w.close()


def serve() -> None:
    """A worker's life: a setup, then batches until the importer closes the pipe."""
    from sqlalchemy import create_engine

    from fiduciary.policy.compile import compile_policy
    from fiduciary.vault.vault import Vault

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() must not land in the protocol's pipe
    # Ctrl+C reaches the whole process group: the importer handles it and closes the pipes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup: WorkerSetup = _receive(stdin)
    vault = Vault(
        create_engine(f"{setup.data_driver}://"),
        create_engine(f"{setup.keys_driver}://"),
        setup.keyring,
        compile_policy(setup.policy),
        default_region=setup.default_region,
    )
    while True:
        try:
            records, first, actor = _receive(stdin)
        except EOFError:
            return
        try:
            answer: tuple[bool, object] = (True, vault._prepare(records, first, actor, setup.audited))
        except Exception as exc:  # the importer prepares this batch again and raises it
            answer = (False, f"{type(exc).__name__}: {exc}")
        try:
            _send(stdout, answer)
        except BrokenPipeError:
            # The importer stopped (a refused record, Ctrl+C) while this batch was being
            # prepared: nobody wants it. Leave without the interpreter's flush at exit
            # complaining about the same closed pipe.
            os._exit(0)
