"""Library values -> API bodies."""

from __future__ import annotations

from datetime import datetime

from fiduciary.decide import REASON_TEXT, Decision
from fiduciary.requests.lifecycle import RequestView
from fiduciary.web.api.models import DecisionOut, RequestEventOut, RequestOut


def decision_out(subject_id: str, d: Decision, gpc: bool) -> DecisionOut:
    return DecisionOut(
        subject_id=subject_id,
        purpose=d.purpose,
        ok=d.ok,
        allowed=sorted(d.allowed),
        refused={c: r.value for c, r in d.refused.items()},
        reason=d.reason.value if d.reason is not None else None,
        reason_text=REASON_TEXT[d.reason] if d.reason is not None else None,
        reasons=d.reasons(),
        gpc=gpc,
    )


def request_out(v: RequestView, now: datetime) -> RequestOut:
    return RequestOut(
        id=v.id,
        type=v.type,
        jurisdiction=v.jurisdiction,
        status=v.status,
        verification=v.verification,
        subject_id=v.subject_id,
        received_at=v.received_at,
        due_at=v.due_at,
        days_left=round((v.due_at - now).total_seconds() / 86400, 1),
        extended=v.extended,
        closed_at=v.closed_at,
        job_id=v.job_id,
        child_report=v.child_report,
        overdue=v.overdue,
        events=[RequestEventOut(kind=e.kind, at=e.at, actor=e.actor, detail=e.detail) for e in v.events],
    )
