"""Sweeping periodically: inline (a thread of this process) or through Celery beat.

- Inline (the default): ``RetentionScheduler(retention, every=timedelta(days=1))`` starts a
  sweep whenever the last one (``retention_sweeps``, so a restart does not sweep again at
  once) is ``every`` old, and resumes an unfinished one. ``fiduciary retention run
  --every 1 day`` runs it in the foreground; a server process can start it beside its
  request executor.
- Celery (``FIDUCIARY_BROKER_URL`` set): ``install_celery(app)`` adds the task
  ``fiduciary.retention_sweep`` (plan, create the job, hand it to the workers) and the
  beat entry ``fiduciary-retention-sweep``. A ``fiduciary worker`` gets both when it starts
  (this module listens for Celery's ``worker_init``); ``celery -A
  fiduciary.retention.schedule:beat_app beat`` runs the beat that sends the task. The
  task itself is cheap; the sweep's batches run as the job's steps, on any worker.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from fiduciary.jobs import DEFAULT_QUEUE, TASK_RUN
from fiduciary.retention.sweep import Retention, SweepRunning

log = logging.getLogger("fiduciary.retention")

__all__ = ["BEAT_ENTRY", "DAILY", "TASK_SWEEP", "RetentionScheduler", "install_celery"]

TASK_SWEEP: Final = "fiduciary.retention_sweep"
BEAT_ENTRY: Final = "fiduciary-retention-sweep"
DAILY: Final = timedelta(days=1)


class RetentionScheduler:
    """Starts a sweep every ``every`` (checked every ``check_every`` seconds) in a thread."""

    def __init__(self, retention: Retention, every: timedelta = DAILY, *, check_every: float = 60.0) -> None:
        if every <= timedelta(0):
            raise ValueError(f"every must be a positive duration, not {every}")
        self.retention = retention
        self.every = every
        self.check_every = check_every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def due(self, now: datetime | None = None) -> bool:
        last = self.retention.last_sweep_at()
        return last is None or (now or datetime.now(UTC)) - last >= self.every

    def tick(self, now: datetime | None = None) -> str | None:
        """Start (or resume) a sweep when one is due; its job id, or None."""
        running = self.retention.active()
        if running is not None:
            self.retention.executor.submit(running)
            return running
        if not self.due(now):
            return None
        try:
            return self.retention.start()
        except SweepRunning as exc:  # another process started one meanwhile
            return exc.job_id

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the store briefly unreachable: the next check tries again
                log.exception("retention scheduler: starting a sweep failed")
            if self._stop.wait(self.check_every):
                return

    def start(self) -> RetentionScheduler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="retention-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_forever(self) -> None:
        """The loop in this thread (``fiduciary retention run --every``) until stopped."""
        self._loop()


# --------------------------------------------------------------------------- celery


class _Submit:
    """An executor that hands jobs to Celery workers through an existing app."""

    def __init__(self, app: Any, queue: str) -> None:
        self.app, self.queue = app, queue

    def submit(self, job_id: str) -> None:
        self.app.send_task(TASK_RUN, args=[job_id], queue=self.queue)

    def recover(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def install_celery(app: Any, *, every: float = DAILY.total_seconds(), queue: str | None = None) -> None:
    """Add the sweep task and its beat entry to a Fiduciary Celery app (idempotent)."""
    q = queue or str(app.conf.task_default_queue or DEFAULT_QUEUE)
    if TASK_SWEEP not in app.tasks:

        def sweep_task() -> str | None:
            from fiduciary.core import Fiduciary
            from fiduciary.mail import Mailer

            res = app.fiduciary_state.get()
            fid = res.get("fiduciary")
            if not isinstance(fid, Fiduciary):
                log.warning("retention sweep: this worker has no policy (FIDUCIARY_POLICY); nothing done")
                return None
            settings = res.get("settings")
            mailer = Mailer.from_settings(settings) if settings is not None else None
            retention = Retention(
                fid, connections=res.get("connections") or {}, mailer=mailer, executor=_Submit(app, q)
            )
            try:
                return retention.start(actor="celery-beat")
            except SweepRunning as exc:
                return exc.job_id
            finally:
                retention.close()

        app.task(name=TASK_SWEEP, acks_late=True)(sweep_task)
    schedule = dict(app.conf.beat_schedule or {})
    schedule[BEAT_ENTRY] = {"task": TASK_SWEEP, "schedule": float(every), "options": {"queue": q}}
    app.conf.beat_schedule = schedule


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and hasattr(app, "fiduciary_state"):
        install_celery(app)


def _connect() -> None:
    try:
        from celery.signals import worker_init  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - celery is a dependency
        return
    worker_init.connect(_on_worker_init, weak=False)


_connect()


def __getattr__(name: str) -> Any:
    """``beat_app``: the Celery app for ``celery -A fiduciary.retention.schedule:beat_app
    beat``, built from the FIDUCIARY_* settings on first use."""
    if name != "beat_app":
        raise AttributeError(name)
    from fiduciary.config import Settings
    from fiduciary.jobs import make_celery_app

    settings = Settings()
    if not settings.broker_url:
        raise RuntimeError("no broker: set FIDUCIARY_BROKER_URL to run the retention beat")
    app = make_celery_app(settings.broker_url, settings=settings)
    install_celery(app)
    globals()["beat_app"] = app
    return app
