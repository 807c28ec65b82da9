"""The manual connector: work only a person can do (paper archives, a system without an
API), recorded as a task that stays pending until someone confirms it done.

Tasks are plain data (``to_dict`` / ``from_dict``, JSON-ready, no personal data: the
request is named by id); the caller persists them (the job's steps). A task's id is
derived from the connector, the request and the action, so creating it again (a re-run
step) gives the same task rather than a second one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from fiduciary.connectors import Connector, ConnectorError, register

__all__ = ["DONE", "PENDING", "ManualConnector", "ManualTask"]

PENDING = "pending"
DONE = "done"


@dataclass(frozen=True, slots=True)
class ManualTask:
    id: str
    connector: str
    request_id: str
    action: str  # erase, access, rectify ...
    instructions: str
    status: str = PENDING
    created_at: str = ""  # ISO 8601, UTC
    confirmed_by: str | None = None
    confirmed_at: str | None = None
    note: str | None = None

    @property
    def done(self) -> bool:
        return self.status == DONE

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "connector": self.connector,
            "request_id": self.request_id,
            "action": self.action,
            "instructions": self.instructions,
            "status": self.status,
            "created_at": self.created_at,
            "confirmed_by": self.confirmed_by,
            "confirmed_at": self.confirmed_at,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManualTask:
        if data.get("status") not in (PENDING, DONE):
            raise ValueError(f"manual task status must be {PENDING} or {DONE}, not {data.get('status')!r}")
        return cls(**data)


@register("manual")
class ManualConnector(Connector):
    """Creates and confirms manual tasks for one system (``name``)."""

    def __init__(self, name: str, instructions: str = "") -> None:
        if not name:
            raise ValueError("a manual connector needs a name (the system it stands for)")
        self.name = name
        self.instructions = instructions

    def task(
        self,
        request_id: str,
        action: str,
        *,
        instructions: str | None = None,
        at: datetime | None = None,
    ) -> ManualTask:
        """The pending task for ``action`` on ``request_id`` (the same id every time)."""
        if not request_id or not action:
            raise ValueError("a manual task needs a request id and an action")
        when = (at or datetime.now(UTC)).astimezone(UTC)
        return ManualTask(
            id=f"{self.name}:{request_id}:{action}",
            connector=self.name,
            request_id=request_id,
            action=action,
            instructions=instructions if instructions is not None else self.instructions,
            created_at=when.isoformat(),
        )

    def confirm(
        self, task: ManualTask, *, by: str, note: str | None = None, at: datetime | None = None
    ) -> ManualTask:
        """The task marked done by ``by`` (a person's name or account). Confirming a done
        task again returns it unchanged (idempotent)."""
        if task.connector != self.name:
            raise ConnectorError(f"task {task.id} belongs to connector {task.connector!r}, not {self.name!r}")
        if not by:
            raise ValueError("a manual task is confirmed by someone: give 'by'")
        if task.done:
            return task
        when = (at or datetime.now(UTC)).astimezone(UTC)
        return replace(task, status=DONE, confirmed_by=by, confirmed_at=when.isoformat(), note=note)
