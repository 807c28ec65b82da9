"""Request metrics for the yearly report (LAW-13, CCPA 7102): per request type, how many
were received, complied with in whole or in part, denied, still open, and the median
days to answer."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Query, Response

from fiduciary.web.api.models import MetricRow, MetricsOut
from fiduciary.web.deps import Caller, access

router = APIRouter(tags=["metrics"])
Read = Annotated[Caller, access("metrics:read")]
Year = Annotated[int, Query(ge=1970, le=9999, description="Requests received in this calendar year (UTC).")]
Jurisdiction = Annotated[
    str | None, Query(max_length=32, description="One jurisdiction of the policy; default all.")
]
COLUMNS = ("type", "received", "done", "partial", "denied", "open", "median_days")


@router.get("/metrics/requests", response_model=MetricsOut)
def requests_metrics(caller: Read, year: Year, jurisdiction: Jurisdiction = None) -> MetricsOut:
    rows = caller.web.desk.metrics(year, jurisdiction=jurisdiction)
    return MetricsOut(year=year, jurisdiction=jurisdiction, rows=[MetricRow(**r) for r in rows])


@router.get(
    "/metrics/requests.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "The same rows as CSV."}},
)
def requests_metrics_csv(caller: Read, year: Year, jurisdiction: Jurisdiction = None) -> Response:
    """The same report as CSV, one row per request type, with the year and jurisdiction."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("year", "jurisdiction", *COLUMNS))
    for r in caller.web.desk.metrics(year, jurisdiction=jurisdiction):
        writer.writerow((year, jurisdiction or "all", *("" if r[c] is None else r[c] for c in COLUMNS)))
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="requests-{year}.csv"'},
    )
