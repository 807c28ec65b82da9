"""Request metrics for a year (``RequestDesk.metrics``, LAW-13): requests by type and
outcome and the median days to respond per type, as inline SVG bar charts and a table; the
report as CSV, the same file the API's ``/metrics/requests.csv`` gives (its download is
audited)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from fiduciary.web.api.metrics import COLUMNS
from fiduciary.web.console import charts
from fiduciary.web.console.base import HEADERS, gate, page, words

router = APIRouter()

OUTCOMES: Final = (
    ("done", "Complied", "#1f5f99"),
    ("partial", "Complied in part", "#5b7f1e"),
    ("denied", "Denied", "#b03a2e"),
    ("open", "Still open", "#767676"),
)
MEDIAN_COLOUR: Final = "#1f5f99"
YEARS_SHOWN: Final = 5


def _year(text: str, now: datetime) -> int | None:
    if not text:
        return now.year
    if text.isdigit() and len(text) == 4 and 1970 <= int(text) <= 9999:
        return int(text)
    return None


def csv_report(rows: list[dict[str, Any]], year: int, jurisdiction: str | None) -> str:
    """The LAW-13 report as CSV: the API's columns, one row per request type."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("year", "jurisdiction", *COLUMNS))
    for r in rows:
        writer.writerow((year, jurisdiction or "all", *("" if r[c] is None else r[c] for c in COLUMNS)))
    return out.getvalue()


@router.get("/metrics")
def metrics(
    request: Request,
    year: Annotated[str, Query(max_length=4)] = "",
    jurisdiction: Annotated[str, Query(max_length=32)] = "",
) -> Response:
    signed = gate(request, "metrics:read")
    if isinstance(signed, Response):
        return signed
    web = signed.web
    cp = web.fid.policy
    now = datetime.now(UTC)
    errors = []
    y = _year(year, now)
    if y is None:
        errors.append(f"{year!r} is not a year: showing {now.year}.")
        y = now.year
    if jurisdiction and jurisdiction not in cp.jurisdictions:
        errors.append(f"Unknown jurisdiction {jurisdiction!r}: showing every jurisdiction.")
        jurisdiction = ""
    rows = web.desk.metrics(y, jurisdiction=jurisdiction or None)
    by_outcome = charts.bars(
        [(words(r["type"]), [float(r[k]) for k, _, _ in OUTCOMES]) for r in rows],
        [(label, colour) for _, label, colour in OUTCOMES],
    )
    timed = [r for r in rows if r["median_days"] is not None]
    median = charts.bars(
        [(words(r["type"]), [float(r["median_days"])]) for r in timed],
        [("Median days", MEDIAN_COLOUR)],
        unit=" d",
        whole=False,
    )
    totals = {k: sum(int(r[k]) for r in rows) for k in ("received", "done", "partial", "denied", "open")}
    suffix = f"?jurisdiction={jurisdiction}" if jurisdiction else ""
    return page(
        request,
        "metrics.html",
        signed,
        title=f"Metrics {y}",
        errors=errors,
        year=y,
        years=list(range(now.year, now.year - YEARS_SHOWN, -1)),
        jurisdiction=jurisdiction,
        jurisdictions=[(k, j.name) for k, j in cp.jurisdictions.items()],
        rows=[{**r, "label": words(r["type"])} for r in rows],
        by_outcome=by_outcome,
        median=median,
        timed=timed,
        totals=totals,
        csv_href=f"/console/metrics/requests-{y}.csv{suffix}",
    )


@router.get("/metrics/requests-{year}.csv")
def metrics_csv(
    request: Request, year: str, jurisdiction: Annotated[str, Query(max_length=32)] = ""
) -> Response:
    signed = gate(request, "metrics:read")
    if isinstance(signed, Response):
        return signed
    web = signed.web
    y = _year(year, datetime.now(UTC))
    if y is None or (jurisdiction and jurisdiction not in web.fid.policy.jurisdictions):
        return Response(
            f"bad report: year {year!r} (1970-9999), jurisdiction {jurisdiction!r} "
            f"(one of {', '.join(web.fid.policy.jurisdictions)} or none)\n",
            status_code=422,
            media_type="text/plain; charset=utf-8",
        )
    body = csv_report(web.desk.metrics(y, jurisdiction=jurisdiction or None), y, jurisdiction or None)
    web.fid.audit.append(
        None,
        actor=signed.actor,
        action="metrics.exported",
        detail={"year": y, "jurisdiction": jurisdiction or "all"},
    )
    headers = {k: v for k, v in HEADERS.items() if k != "Content-Security-Policy"}
    headers["Content-Disposition"] = f'attachment; filename="requests-{y}.csv"'
    return Response(body, media_type="text/csv; charset=utf-8", headers=headers)
