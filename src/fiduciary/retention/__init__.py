"""Retention: the policy's retention rules, enforced by sweeps over the vault and the
company's datastores.

    from fiduciary.retention import Retention
    with Retention(fid, connections={"projects_db": "postgresql://..."}) as retention:
        print(retention.plan().to_text())   # what would change (nothing is changed)
        retention.run()                     # a sweep: one job of idempotent batches

- ``plan.py``: rules -> tasks (what, where, up to when, how many), cut into key ranges;
- ``rows.py``: one batch of a collection: DELETE, truncate (PLA-3), anonymize, aggregate;
- ``accounts.py``: closure grace periods, inactivity notices and deletion (PLO-9), legal
  holds (PLO-10), carried out with the rights requests' erasure (PLV-7 kept);
- ``sweep.py``: the job, its steps, resuming a killed sweep, one sweep at a time;
- ``schedule.py``: sweeping periodically, inline or through Celery beat;
- ``anonymize.py``: IP to /24 and /48, user agent to its family.

Importing this package registers the step handlers (every process that runs sweeps must
import it, as ``fiduciary worker`` does).
"""

from fiduciary.retention.accounts import HoldError, place_hold, record_activity, release_hold
from fiduciary.retention.anonymize import truncate_ip, user_agent_family
from fiduciary.retention.plan import RetentionPlan, Skipped, Task, plan_sweep
from fiduciary.retention.schedule import (
    BEAT_ENTRY,
    TASK_SWEEP,
    RetentionScheduler,
    install_celery,
)
from fiduciary.retention.sweep import JOB_KIND, Retention, SweepRunning, build_steps

__all__ = [
    "BEAT_ENTRY",
    "JOB_KIND",
    "TASK_SWEEP",
    "HoldError",
    "Retention",
    "RetentionPlan",
    "RetentionScheduler",
    "Skipped",
    "SweepRunning",
    "Task",
    "build_steps",
    "install_celery",
    "place_hold",
    "plan_sweep",
    "record_activity",
    "release_hold",
    "truncate_ip",
    "user_agent_family",
]
