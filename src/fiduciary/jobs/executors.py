"""Where jobs run: a background thread of the serving process (default), or Celery
workers (``FIDUCIARY_BROKER_URL``, redis:// or amqp://). Both call the same ``run_job``.

Crash safety does not rest on the broker: the job record is the truth. A worker killed
mid-step leaves a step lease that expires; whoever runs the job next (the redelivered
message, or the recover pass) takes the step over. The broker side still helps:
Celery tasks ack late (``acks_late``, ``task_reject_on_worker_lost``), so RabbitMQ
redelivers a killed worker's message at once and Redis after its visibility timeout; the
recover pass covers the rest: every worker runs it in a thread of its own at start and
every ``recover_every`` seconds (not Celery's embedded beat, which is a child process that
outlives a SIGKILLed worker). The app also carries a beat schedule for ``celery beat``.

Celery workers use the ``threads`` pool: one process, so SIGKILL leaves no orphaned child
running steps, and the main thread keeps broker heartbeats going while steps run. A task
runs one whole job; RabbitMQ's ``consumer_timeout`` (30 min by default) bounds how long
one job may take there.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from sqlalchemy import Engine

from fiduciary.config import Settings
from fiduciary.jobs import resources as job_resources
from fiduciary.jobs.model import DATA, KEYS, JobNotFound
from fiduciary.jobs.runner import default_worker_id, drive_job, recover, run_job

log = logging.getLogger("fiduciary.jobs")

TASK_RUN = "fiduciary.run_job"
TASK_RECOVER = "fiduciary.recover_jobs"
DEFAULT_QUEUE = "fiduciary.jobs"


class Executor(Protocol):
    def submit(self, job_id: str) -> None: ...

    def recover(self) -> list[str]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- inline


class InlineExecutor:
    """Runs submitted jobs one after another in a background thread of this process.

    At start it resubmits every unfinished job (its queue died with the previous process);
    while idle it runs the recover pass every ``recover_every`` seconds."""

    def __init__(
        self,
        resources: Mapping[str, object],
        *,
        lease_seconds: float = 30,
        max_attempts: int = 3,
        backoff: float = 1.0,
        recover_on_start: bool = True,
        recover_every: float | None = 60.0,
        owns_resources: bool = False,
        name: str = "fiduciary-jobs",
    ) -> None:
        self.resources = resources
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.recover_every = recover_every
        self._owns = owns_resources
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._queued: set[str] = set()
        self._busy = 0
        self._cond = threading.Condition()
        self._closed = False
        self.worker_id = default_worker_id("inline")
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        if recover_on_start:
            self._recover(startup=True)

    def submit(self, job_id: str) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the inline executor is closed")
            if job_id in self._queued:
                return  # already waiting: running it twice in a row would find it done
            self._queued.add(job_id)
            self._busy += 1
        self._queue.put(job_id)

    def recover(self) -> list[str]:
        return self._recover(startup=False)

    def _recover(self, *, startup: bool) -> list[str]:
        data, keys = self.resources[DATA], self.resources[KEYS]
        assert isinstance(data, Engine) and isinstance(keys, Engine)
        # At start-up any lease still live belongs to a process that is gone (or to a
        # sibling process, whose live lease run_job waits out and leaves alone).
        ids = recover(data, keys, grace=self.lease_seconds, include_pending=startup, include_live=startup)
        for job_id in ids:
            self.submit(job_id)
        if ids:
            log.info("inline executor: resubmitted %d unfinished job(s)", len(ids))
        return ids

    def _loop(self) -> None:
        while True:
            try:
                job_id = self._queue.get(timeout=self.recover_every)
            except queue.Empty:
                try:
                    self._recover(startup=False)
                except Exception:
                    log.exception("inline executor: recover pass failed")
                continue
            if job_id is None:
                return
            with self._cond:
                self._queued.discard(job_id)
            try:
                drive_job(
                    job_id,
                    self.worker_id,
                    self.resources,
                    self.lease_seconds,
                    max_attempts=self.max_attempts,
                    backoff=self.backoff,
                )
            except JobNotFound:
                log.warning("inline executor: job %s does not exist", job_id)
            except Exception:  # the job record keeps the state: recover resubmits it later
                log.exception("inline executor: job %s stopped with an error", job_id)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every submitted job has been run; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._busy == 0, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop after the job in hand (queued jobs stay in the store for the next start)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self._owns:
            close = getattr(self.resources, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> InlineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- celery


class _WorkerState:
    """A worker process's resources: built on the first task (after any fork), once."""

    def __init__(self, settings: Settings | None) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._built: job_resources.Resources | None = None
        self._pid = 0

    def get(self) -> job_resources.Resources:
        with self._lock:
            if self._built is None or self._pid != os.getpid():
                self._built = job_resources.build(self.settings or Settings())
                self._pid = os.getpid()
            return self._built

    def close(self) -> None:
        with self._lock:
            if self._built is not None and self._pid == os.getpid():
                self._built.close()
            self._built = None


def make_celery_app(
    broker_url: str,
    *,
    settings: Settings | None = None,
    queue: str = DEFAULT_QUEUE,
    lease_seconds: float = 30,
    max_attempts: int = 3,
    backoff: float = 1.0,
    recover_every: float = 60.0,
    stale_after: float = 600.0,
    visibility_timeout: int = 3600,
    transport_options: Mapping[str, Any] | None = None,
) -> Any:
    """A Celery app with the two tasks, ``fiduciary.run_job(job_id)`` and
    ``fiduciary.recover_jobs()``; workers build their resources from ``settings``
    (default: the environment) through ``fiduciary.jobs.resources``. ``transport_options``
    go to kombu as they are (e.g. Redis ``global_keyprefix`` to share a Redis)."""
    from celery import Celery  # type: ignore[import-untyped]
    from celery.signals import worker_ready, worker_shutdown  # type: ignore[import-untyped]

    if not broker_url.startswith(("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://", "memory://")):
        raise ValueError(f"broker URL {broker_url.split('://')[0]}://...: redis:// or amqp:// expected")
    app = Celery("fiduciary", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Redis: a message not acked this long after delivery (its worker was killed) is
        # delivered again. The recover pass acts sooner; this is the broker's backstop.
        broker_transport_options={"visibility_timeout": visibility_timeout, **(transport_options or {})},
        beat_schedule={
            "fiduciary-recover-jobs": {
                "task": TASK_RECOVER,
                "schedule": recover_every,
                "options": {"queue": queue},
            }
        },
    )
    state = _WorkerState(settings)
    app.fiduciary_state = state

    def run_job_task(self: Any, job_id: str) -> str:
        res = state.get()
        worker_id = default_worker_id(f"celery-{(self.request.hostname or 'w').split('@')[0]}")
        try:
            st = run_job(job_id, worker_id, res, lease_seconds, max_attempts=max_attempts, backoff=backoff)
        except JobNotFound:
            log.warning("celery: job %s does not exist; dropped", job_id)
            return "missing"
        except Exception as exc:
            # The store was unreachable or the like: try again later; the job record
            # still holds every step's state.
            raise self.retry(exc=exc, countdown=min(5 * 2**self.request.retries, 300), max_retries=8) from exc
        return str(st.status)

    def recover_task() -> list[str]:
        res = state.get()
        data, keys = res[DATA], res[KEYS]
        assert isinstance(data, Engine) and isinstance(keys, Engine)
        ids = recover(data, keys, grace=lease_seconds, stale_after=stale_after)
        for job_id in ids:
            run_task.apply_async((job_id,), queue=queue)
        if ids:
            log.info("celery: resubmitted %d unfinished job(s)", len(ids))
        return ids

    run_task = app.task(name=TASK_RUN, bind=True, acks_late=True, reject_on_worker_lost=True)(run_job_task)
    app.task(name=TASK_RECOVER, acks_late=True)(recover_task)

    stopping = threading.Event()

    def recover_loop() -> None:
        # The first pass at once: a worker starting may be the replacement of one that
        # was killed. Duplicate submissions from several workers are harmless.
        while True:
            try:
                recover_task()
            except Exception:
                log.exception("celery: recover pass failed")
            if recover_every <= 0 or stopping.wait(recover_every):
                return

    def on_ready(sender: Any = None, **_: Any) -> None:
        if id(getattr(sender, "app", None)) != id(app):  # another app's worker
            return
        threading.Thread(target=recover_loop, name="fiduciary-recover", daemon=True).start()

    def on_shutdown(sender: Any = None, **_: Any) -> None:
        stopping.set()
        state.close()

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
    return app


class CeleryExecutor:
    """Submits jobs to Celery workers through the broker."""

    def __init__(self, broker_url: str, *, queue: str = DEFAULT_QUEUE, **app_options: Any) -> None:
        self.queue = queue
        self.app = make_celery_app(broker_url, queue=queue, **app_options)

    def submit(self, job_id: str) -> None:
        self.app.send_task(TASK_RUN, args=[job_id], queue=self.queue)

    def recover(self) -> list[str]:
        """Ask a worker to run the recover pass (the ids are found there)."""
        self.app.send_task(TASK_RECOVER, queue=self.queue)
        return []

    def purge(self) -> int:
        """Drop every message waiting in the queue (tests, or after a wrong submission);
        the jobs stay in the store and the recover pass finds them again."""
        with self.app.connection_for_write() as conn:
            return int(conn.default_channel.queue_purge(self.queue) or 0)

    def close(self) -> None:
        self.app.close()


def executor_from_settings(
    settings: Settings, resources: Mapping[str, object] | None = None, **options: Any
) -> InlineExecutor | CeleryExecutor:
    """Celery when FIDUCIARY_BROKER_URL is set, else the inline executor over
    ``resources`` (the serving process's own; built from settings when not given)."""
    if settings.broker_url:
        return CeleryExecutor(settings.broker_url, **options)
    if resources is None:
        return InlineExecutor(job_resources.build(settings), owns_resources=True, **options)
    return InlineExecutor(resources, **options)


def start_worker(
    settings: Settings,
    concurrency: int = 1,
    *,
    queue: str = DEFAULT_QUEUE,
    imports: Iterable[str] = (),
    loglevel: str = "INFO",
    hostname: str | None = None,
    **app_options: Any,
) -> None:
    """Run a Celery worker in this process until it is stopped (``fiduciary worker``).

    ``imports``: modules that register step handlers and resources (plus every
    ``fiduciary.jobs`` entry point). ``app_options`` go to make_celery_app
    (``lease_seconds``, ``recover_every`` ...)."""
    if not settings.broker_url:
        raise ValueError("no broker: set FIDUCIARY_BROKER_URL (redis://... or amqp://...) to run a worker")
    if concurrency < 1:
        raise ValueError(f"concurrency {concurrency}: at least 1")
    job_resources.import_modules(imports)
    job_resources.load_plugins()
    app = make_celery_app(settings.broker_url, settings=settings, queue=queue, **app_options)
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={concurrency}",
        f"--queues={queue}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv=argv)


__all__ = [
    "DEFAULT_QUEUE",
    "TASK_RECOVER",
    "TASK_RUN",
    "CeleryExecutor",
    "Executor",
    "InlineExecutor",
    "executor_from_settings",
    "make_celery_app",
    "start_worker",
]
