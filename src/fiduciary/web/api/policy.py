"""The policy: the public notice (HTML, Markdown) of each published version, the version
list, and the GDPR Art. 30 record of processing.

The notice and the version list are public (the law makes the notice so); the published
policy text and the record of processing need ``policy:read``.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy import select

from fiduciary.policy import compile_policy, load_policy_text
from fiduciary.policy.record import record_csv, record_json
from fiduciary.policy.render import ArchivedVersion, render_notice_html, render_notice_markdown
from fiduciary.store import tables as T
from fiduciary.web.api.models import PolicyVersionOut, PolicyVersionText
from fiduciary.web.deps import Caller, Web, access
from fiduciary.web.problems import ProblemException
from fiduciary.web.state import WebState

router = APIRouter(tags=["policy"])
Read = Annotated[Caller, access("policy:read")]
Format = Annotated[
    Literal["html", "markdown"], Query(description="html (a self-contained page) or markdown.")
]
VersionPath = Annotated[int, Path(ge=1, le=2**62, description="A published version's id.")]

MEDIA = {"html": "text/html; charset=utf-8", "markdown": "text/markdown; charset=utf-8"}
_NOTICE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}, "text/markdown": {}}, "description": "The notice."}
}


def _rows(web: WebState) -> list[Any]:
    pv = T.policy_versions.c
    cols = [pv.id, pv.version, pv.digest, pv.effective, pv.published_at, pv.material_purposes]
    with web.fid.data.connect() as conn:
        return list(conn.execute(select(*cols).order_by(pv.id)))


def _out(r: Any, current: int) -> PolicyVersionOut:
    return PolicyVersionOut(
        id=r.id,
        version=r.version,
        digest=r.digest,
        effective=r.effective,
        published_at=r.published_at,
        material_purposes=json.loads(r.material_purposes),
        current=r.id == current,
    )


def _archive(web: WebState, rows: list[Any], shown: int) -> list[ArchivedVersion]:
    return [
        ArchivedVersion(
            version=r.version,
            url=f"/api/v1/policy/versions/{r.id}/notice",
            effective=date.fromisoformat(r.effective),
        )
        for r in reversed(rows)
        if r.id != shown
    ]


def _notice(web: WebState, version_id: int, fmt: str) -> str:
    cached = web.notices.get((version_id, fmt))
    if cached is not None:
        return cached
    rows = _rows(web)
    if version_id == web.fid.version_seq:
        cp = web.fid.policy
    else:
        with web.fid.data.connect() as conn:
            text = conn.execute(
                select(T.policy_versions.c.text).where(T.policy_versions.c.id == version_id)
            ).scalar()
        if text is None:
            raise ProblemException(404, f"no published policy version {version_id}")
        cp = compile_policy(load_policy_text(text, f"<published version {version_id}>"))
    archive = _archive(web, rows, version_id)
    render = render_notice_html if fmt == "html" else render_notice_markdown
    out = render(cp, archive=archive)
    web.notices[(version_id, fmt)] = out
    return out


@router.get("/policy/notice", response_class=Response, responses=_NOTICE_RESPONSES)
def notice(web: Web, format: Format = "html") -> Response:
    """The public privacy notice of the policy in force, with the version archive and
    changelog (PLO-17, PLA-7). No key needed."""
    return Response(_notice(web, web.fid.version_seq, format), media_type=MEDIA[format])


@router.get("/policy/versions", response_model=list[PolicyVersionOut])
def versions(web: Web) -> list[PolicyVersionOut]:
    """Every published version, oldest first; ``current`` marks the one in force. No key
    needed."""
    return [_out(r, web.fid.version_seq) for r in _rows(web)]


@router.get("/policy/versions/{version_id}", response_model=PolicyVersionText)
def version(version_id: VersionPath, caller: Read) -> PolicyVersionText:
    """One published version with its policy.yaml text."""
    pv = T.policy_versions.c
    with caller.web.fid.data.connect() as conn:
        r = conn.execute(select(T.policy_versions).where(pv.id == version_id)).first()
    if r is None:
        raise ProblemException(404, f"no published policy version {version_id}")
    return PolicyVersionText(**_out(r, caller.web.fid.version_seq).model_dump(), text=r.text)


@router.get("/policy/versions/{version_id}/notice", response_class=Response, responses=_NOTICE_RESPONSES)
def version_notice(version_id: VersionPath, web: Web, format: Format = "html") -> Response:
    """The notice as it read under an earlier (or the current) version. No key needed."""
    return Response(_notice(web, version_id, format), media_type=MEDIA[format])


@router.get("/policy/record")
def record(caller: Read) -> dict[str, Any]:
    """The GDPR Art. 30 record of processing activities, as JSON."""
    return record_json(caller.web.fid.policy)


@router.get(
    "/policy/record.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The record as CSV."}},
)
def record_as_csv(caller: Read) -> Response:
    """The same record as CSV (one row per processing activity)."""
    return Response(
        record_csv(caller.web.fid.policy),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="record-of-processing.csv"'},
    )
