"""Audit search (``AuditLog.query``: actor, action, subject, time range; paged by seq) with
the chain's status from the verifier (``AuditLog.verify``): intact, or broken at entry N.

The verifier reads the whole log (about 30 µs an entry: half a minute for a million), so it
runs in a background thread, at most one at a time per process: on the first visit, when
its report is older than ``VERIFY_TTL``, or on "Verify now". The page waits for it up to
``VERIFY_WAIT`` seconds, then shows the previous report (or says it is running); the
report says up to which entry it covers.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from fiduciary.audit import AuditLog, VerifyReport
from fiduciary.web.console.base import detail_text, gate, page, when

router = APIRouter()

PAGE: Final = 100
VERIFY_TTL: Final = 300.0
VERIFY_WAIT: Final = 3.0
_SUBJECT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
_WORD = re.compile(r"[A-Za-z0-9_.:@ -]{1,128}")


@dataclass
class ChainCheck:
    """The last verifier report of this process, and the run under way, if any."""

    report: VerifyReport | None = None
    finished: datetime | None = None
    finished_at: float = 0.0  # monotonic
    running: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ensure(self, log: AuditLog, *, fresh: bool) -> None:
        """Start a run unless one is under way or the report is recent (and not ``fresh``)."""
        with self.lock:
            if self.running is not None and self.running.is_alive():
                return
            if not fresh and self.report is not None and time.monotonic() - self.finished_at < VERIFY_TTL:
                return
            self.running = threading.Thread(
                target=self._run, args=(log,), name="console-audit-verify", daemon=True
            )
            self.running.start()

    def _run(self, log: AuditLog) -> None:
        report = log.verify(max_problems=20)
        with self.lock:
            self.report, self.finished, self.finished_at = report, datetime.now(UTC), time.monotonic()

    def wait(self, seconds: float) -> None:
        t = self.running
        if t is not None:
            t.join(seconds)

    @property
    def busy(self) -> bool:
        return self.running is not None and self.running.is_alive()


def chain_check(request: Request) -> ChainCheck:
    found: ChainCheck | None = getattr(request.app.state, "console_chain_check", None)
    if found is None:
        found = ChainCheck()
        request.app.state.console_chain_check = found
    return found


def _day(text: str, field: str, errors: dict[str, str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors[field] = f"{text!r} is not a date: use YYYY-MM-DD."
        return None


@router.get("/audit")
def audit(
    request: Request,
    actor: Annotated[str, Query(max_length=128)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    subject: Annotated[str, Query(max_length=32)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    after: Annotated[str, Query(max_length=20)] = "",
    verify: Annotated[str, Query(max_length=4)] = "",
) -> Response:
    signed = gate(request, "audit:read")
    if isinstance(signed, Response):
        return signed
    web = signed.web
    errors: dict[str, str] = {}
    actor, action, subject = actor.strip(), action.strip(), subject.strip()
    if actor and not _WORD.fullmatch(actor):
        errors["actor"] = "An actor is letters, digits and _.:@- (e.g. console:ann, api-key:0123…)."
    if action and not _WORD.fullmatch(action):
        errors["action"] = "An action is letters, digits and _.:- (e.g. request.approved)."
    if subject and not _SUBJECT_ID.fullmatch(subject):
        errors["subject"] = "A subject id is 1-32 letters, digits or _.:-."
    start = _day(since, "since", errors)
    end = _day(until, "until", errors)
    if start and end and end < start:
        errors["until"] = "The end is before the start."
    after_seq = int(after) if after.isdigit() and len(after) <= 18 else None
    entries = []
    if not errors:
        entries = web.fid.audit.query(
            actor=actor or None,
            action=action or None,
            subject_id=subject or None,
            since=datetime(start.year, start.month, start.day, tzinfo=UTC) if start else None,
            # The end day is included: the query's bound is exclusive.
            until=datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1) if end else None,
            limit=PAGE,
            after_seq=after_seq,
        )
    check = chain_check(request)
    check.ensure(web.fid.audit, fresh=bool(verify))
    check.wait(VERIFY_WAIT)
    report = check.report
    first = report.problems[0] if report is not None and report.problems else None
    head_seq = web.fid.audit.head()[0]
    rows = [
        {
            "seq": e.seq,
            "at": when(e.at),
            "actor": e.actor,
            "action": e.action,
            "purpose": e.purpose or "",
            "subject": (e.subject or "")[:12],
            "result": e.result,
            "detail": detail_text(e.detail),
        }
        for e in entries
    ]
    params = {"actor": actor, "action": action, "subject": subject, "since": since, "until": until}
    query = urlencode({k: v for k, v in params.items() if v})
    return page(
        request,
        "audit.html",
        signed,
        status=422 if errors else 200,
        title="Audit trail",
        errors=errors,
        form=params,
        rows=rows,
        next_after=rows[-1]["seq"] if len(rows) == PAGE else None,
        query=query,
        paged=after_seq is not None,
        report=report,
        first=first,
        verifying=check.busy,
        verified_at=when(check.finished),
        since=head_seq - report.head_seq if report is not None else 0,
        page_size=PAGE,
    )
