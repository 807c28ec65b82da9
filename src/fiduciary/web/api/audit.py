"""The audit trail: query it, and verify its hash chain and signed checkpoints."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from fiduciary.web.api.models import AuditEntryOut, AuditPage, AuditProblemOut, VerifyOut
from fiduciary.web.deps import Caller, access

router = APIRouter(tags=["audit"])
Read = Annotated[Caller, access("audit:read")]
Word = Annotated[str | None, Query(max_length=128)]


@router.get("/audit", response_model=AuditPage)
def query(
    caller: Read,
    subject_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")] = None,
    action: Word = None,
    actor: Word = None,
    purpose: Word = None,
    since: Annotated[AwareDatetime | None, Query(description="Inclusive.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Exclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_seq: Annotated[
        int | None, Query(ge=0, le=2**62, description="The last seq of the previous page.")
    ] = None,
) -> AuditPage:
    """Entries matching every filter, in seq order. ``subject_id`` is matched through its
    pseudonym: the log never holds the id itself."""
    entries = caller.web.fid.audit.query(
        subject_id=subject_id,
        action=action,
        actor=actor,
        purpose=purpose,
        since=since,
        until=until,
        limit=limit,
        after_seq=after_seq,
    )
    out = [
        AuditEntryOut(
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            action=e.action,
            purpose=e.purpose,
            subject=e.subject,
            result=e.result,
            detail=e.detail if not isinstance(e.detail, str) else json.loads(e.detail),
            prev_hash=e.prev_hash,
            hash=e.hash,
        )
        for e in entries
    ]
    return AuditPage(entries=out, next_after_seq=out[-1].seq if len(out) == limit else None)


@router.get("/audit/verify", response_model=VerifyOut)
def verify(caller: Read) -> VerifyOut:
    """Recompute the chain and check every signed checkpoint; each problem is named by
    seq and kind (edited, deleted, reordered, inserted, bad_checkpoint, head_mismatch)."""
    r = caller.web.fid.audit.verify()
    return VerifyOut(
        ok=r.ok,
        entries=r.entries,
        checkpoints=r.checkpoints,
        head_seq=r.head_seq,
        last_checkpoint=r.last_checkpoint,
        key_id=r.key_id,
        omitted=r.omitted,
        problems=[AuditProblemOut(seq=p.seq, kind=p.kind, message=p.message) for p in r.problems],
        text=r.to_text(),
    )
