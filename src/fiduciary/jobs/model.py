"""Jobs: the words and the step registry.

A **job** is a plan persisted as numbered **steps** (``job_steps``), run in ``seq`` order
by whichever worker holds the step's lease. Each step kind has one registered handler.

The idempotency contract
------------------------
A handler may run more than once for the same step: a worker can die (SIGKILL, power
loss, a lost lease during a long pause) after the step's effect reached the company's
database but before the step was marked done; another worker then runs the step again.
So every handler must leave the same state whether it runs once or twice:

- write with set-based statements whose outcome does not depend on how often they run
  (``UPDATE ... SET email = <deterministic mask> WHERE id IN (...)``, ``DELETE ... WHERE``,
  ``INSERT ... ON CONFLICT DO NOTHING``), never "increment" or "append" without a key;
- read its inputs from ``ctx.params`` and ``ctx.results`` (the stored results of earlier
  steps), never from what an earlier, possibly half-finished attempt of itself left;
- tell processors with an idempotency key (job id + seq) so that they can drop a repeat.

Step results are encrypted under the job's own data key (AES-GCM) and the key is destroyed
when the job ends, so results may hold personal data (fetched rows, join keys). Plan
parameters (``StepSpec.params``) are stored in clear and must not; personal inputs go in
``create_job(inputs=...)``, which is encrypted like results.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Job statuses. `pending`: created, no step claimed yet; `running`: a step was claimed.
PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
FINAL = frozenset({DONE, FAILED, CANCELLED})

# Well-known resource names: run_job reads its stores from these.
DATA = "data"
KEYS = "keys"
KEYRING = "keyring"


class JobError(Exception):
    """Base class of the job room's errors."""


class JobNotFound(JobError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")
        self.job_id = job_id


class PlanError(JobError, ValueError):
    """A plan that cannot be stored (unknown step kind, params not JSON ...); nothing was
    stored."""


class UnknownStep(JobError, LookupError):
    """A step kind without a registered handler."""


class PermanentStepError(JobError):
    """Raised by a handler for a failure that a retry cannot fix (an unreachable collection,
    bad input): the step and the job fail at once, without the remaining attempts."""


class LeaseLost(JobError):
    """This worker's lease on a step ended (expired and taken over, or the job was
    cancelled): its work on the step must stop and its result is discarded."""


@dataclass(frozen=True)
class StepSpec:
    """One step of a plan: a registered ``kind``, an optional ``target`` (a collection,
    a recipient ...) and JSON ``params``, stored in clear: no personal data here."""

    kind: str
    target: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepState:
    seq: int
    kind: str
    target: str | None
    status: str  # pending|running|done|failed|cancelled
    attempts: int
    leased_by: str | None
    leased_until: datetime | None
    error: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class JobStatus:
    id: str
    kind: str
    status: str  # pending|running|done|failed|cancelled
    created_at: datetime
    finished_at: datetime | None
    steps: tuple[StepState, ...]

    @property
    def total(self) -> int:
        return len(self.steps)

    @property
    def done(self) -> int:
        return sum(1 for s in self.steps if s.status == DONE)

    @property
    def progress(self) -> tuple[int, int]:
        """(done, total), for progress bars."""
        return self.done, self.total

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def error(self) -> str | None:
        """The error of the step that failed the job, prefixed with where it happened."""
        for s in self.steps:
            if s.status == FAILED:
                where = f"step {s.seq} ({s.kind}{' ' + s.target if s.target else ''})"
                return f"{where}: {s.error}"
        return None

    @property
    def current(self) -> StepState | None:
        """The first step not done yet (the one running or next to run)."""
        return next((s for s in self.steps if s.status != DONE), None)


@dataclass
class StepContext:
    """What a handler gets: where it is in which job, its params, the decrypted results of
    every earlier step, and the caller's resources (engines, connectors, the policy ...)."""

    job_id: str
    job_kind: str
    seq: int
    kind: str
    target: str | None
    params: Mapping[str, Any]
    results: Mapping[int, Mapping[str, Any] | None]  # seq -> result, earlier steps only
    resources: Mapping[str, object]
    inputs: Mapping[str, Any]  # create_job(inputs=...), decrypted
    attempt: int  # 1 on the first run of this step
    worker_id: str
    plan: tuple[StepSpec, ...] = ()  # every step of the job, by seq
    _lost: threading.Event = field(default_factory=threading.Event, repr=False)
    _renew: Callable[[], bool] | None = field(default=None, repr=False)

    @property
    def lease_lost(self) -> bool:
        return self._lost.is_set()

    def check_lease(self) -> None:
        """Raise LeaseLost when another worker took this step over (or the job was
        cancelled). Long handlers call it between batches."""
        if self._lost.is_set():
            raise LeaseLost(f"job {self.job_id} step {self.seq}: lease lost")

    def renew(self) -> None:
        """Extend the lease now (a heartbeat thread also does it every third of the lease)."""
        if self._renew is not None and not self._renew():
            self._lost.set()
        self.check_lease()

    def earlier(self, kind: str, target: str | None = None) -> list[Mapping[str, Any] | None]:
        """Results of the earlier steps of ``kind`` (and ``target``), in seq order."""
        return [
            self.results[seq]
            for seq in sorted(self.results)
            if self.plan[seq].kind == kind and (target is None or self.plan[seq].target == target)
        ]


StepHandler = Callable[[StepContext], Mapping[str, Any] | None]


@dataclass(frozen=True)
class JobEnd:
    """What a job-end hook gets. Results are gone by then (the job key may be destroyed)."""

    job_id: str
    kind: str
    status: str  # done|failed
    error: str | None
    resources: Mapping[str, object]


JobEndHook = Callable[[JobEnd], None]

_steps: dict[str, StepHandler] = {}
_end_hooks: dict[str, list[tuple[JobEndHook, frozenset[str]]]] = {}
_lock = threading.Lock()


def register_step(kind: str, handler: StepHandler, *, replace: bool = False) -> StepHandler:
    """Register the handler of step ``kind`` (see the idempotency contract above). Every
    process that runs jobs (web process, Celery workers) must import the module that
    registers it."""
    if not kind or len(kind) > 24:
        raise ValueError(f"step kind {kind!r}: 1 to 24 characters expected")
    with _lock:
        if kind in _steps and _steps[kind] is not handler and not replace:
            raise ValueError(f"step kind {kind!r} is already registered ({_steps[kind]!r})")
        _steps[kind] = handler
    return handler


def step(kind: str, *, replace: bool = False) -> Callable[[StepHandler], StepHandler]:
    """Decorator form of register_step."""

    def deco(fn: StepHandler) -> StepHandler:
        return register_step(kind, fn, replace=replace)

    return deco


def handler_for(kind: str) -> StepHandler:
    try:
        return _steps[kind]
    except KeyError:
        known = ", ".join(sorted(_steps)) or "none"
        raise UnknownStep(
            f"no handler registered for step kind {kind!r} (registered: {known}); "
            "import the module that registers it in this process"
        ) from None


def registered_steps() -> frozenset[str]:
    return frozenset(_steps)


def register_job_end(kind: str, hook: JobEndHook, *, on: Iterable[str] = (DONE, FAILED)) -> None:
    """Call ``hook`` when a job of ``kind`` ends with a status in ``on`` (done and failed
    by default; not on cancel: the caller of cancel does its own bookkeeping). At least
    once: a worker dying during the end is followed by another that calls it again, so
    hooks must be idempotent. A job whose end no hook waits for ends in the transaction
    that completes its last step (see ``fiduciary.jobs.runner``): say ``on=(FAILED,)``
    when only failures matter."""
    statuses = frozenset(on)
    bad = sorted(statuses - {DONE, FAILED})
    if bad or not statuses:
        raise ValueError(f"on: done and/or failed, got {sorted(statuses)}")
    with _lock:
        hooks = _end_hooks.setdefault(kind, [])
        if all(h != hook for h, _ in hooks):
            hooks.append((hook, statuses))


def unregister_job_end(kind: str, hook: JobEndHook) -> None:
    with _lock:
        hooks = _end_hooks.get(kind, [])
        hooks[:] = [(h, on) for h, on in hooks if h != hook]


def end_hooks(kind: str, status: str | None = None) -> tuple[JobEndHook, ...]:
    """The hooks of jobs of ``kind`` (those waiting for ``status``, when given)."""
    return tuple(h for h, on in _end_hooks.get(kind, ()) if status is None or status in on)


__all__ = [
    "CANCELLED",
    "DATA",
    "DONE",
    "FAILED",
    "FINAL",
    "KEYRING",
    "KEYS",
    "PENDING",
    "RUNNING",
    "JobEnd",
    "JobEndHook",
    "JobError",
    "JobNotFound",
    "JobStatus",
    "LeaseLost",
    "PermanentStepError",
    "PlanError",
    "StepContext",
    "StepHandler",
    "StepSpec",
    "StepState",
    "UnknownStep",
    "end_hooks",
    "handler_for",
    "register_job_end",
    "register_step",
    "registered_steps",
    "step",
    "unregister_job_end",
]
