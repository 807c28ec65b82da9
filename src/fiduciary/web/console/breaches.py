"""The breach register (LAW-10, GDPR Art. 33 and 34): the list with each breach's 72-hour
clock, a form to record a breach, and a breach's page with its state, its events, the
drafted notices for the authority and for the people, and the steps ``fid.breaches``
offers (assess, record the authority's notification, mail the people, close), taken with
the actor ``console:<username>`` exactly as the JSON API takes them."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from fiduciary.breaches import (
    RISK_WORDS,
    RISKS,
    Breach,
    BreachError,
    BreachInputError,
    BreachRegister,
    UnknownBreach,
)
from fiduciary.policy.render import category_name
from fiduciary.web.console.base import (
    HEADERS,
    PREFIX,
    detail_text,
    gate,
    gate_form,
    message,
    page,
    when,
    words,
)
from fiduciary.web.console.session import SignedIn

router = APIRouter()

_BREACH_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_IDS = re.compile(r"[\s,;]+")
URGENT: Final = timedelta(hours=12)  # under this, the clock turns red
CLOSED_SHOWN: Final = 100
MAX_IDS_CHARS: Final = 1_000_000  # about 30,000 subject ids in one form; more via the API
TEXT_MAX: Final = 5000  # the register's limit for a long text
STAGE_WORDS: Final[dict[str, str]] = {
    "detected": "Detected",
    "assessed": "Assessed",
    "notified_authority": "Authority notified",
    "notified_subjects": "People notified",
    "closed": "Closed",
}
EVENT_WORDS: Final[dict[str, str]] = {
    "detected": "Detected and registered",
    "assessed": "Assessed",
    "notified_authority": "Authority notified",
    "notified_subjects": "Notice mailed to the people",
    "closed": "Closed",
}
RISK_LABELS: Final[dict[str, str]] = {
    "unassessed": "Not assessed",
    "unlikely": "Unlikely",
    "risk": "Risk",
    "high": "High risk",
}
DONE_WORDS: Final[dict[str, str]] = {
    "recorded": "Breach recorded. The clock runs from the moment you became aware of it.",
    "assessed": "Assessment recorded.",
    "notified-authority": "The authority's notification is recorded.",
    "notified-subjects": "The notice was mailed.",
    "nobody": "Everyone linked to this breach had been told before: nothing was sent.",
    "closed": "Breach closed. It stays in the register with its events.",
}
# A library message names its input first ("title must be ...", "unknown category ..."):
# the form shows it next to that field too.
_FIELD_OF: Final = (
    ("title", "title"),
    ("nature", "nature"),
    ("detected_at", "detected_at"),
    ("occurred_at", "occurred_at"),
    ("unknown category", "categories"),
    ("categories", "categories"),
    ("unknown subject", "subject_ids"),
    ("subject_ids", "subject_ids"),
    ("subjects_estimate", "subjects_estimate"),
    ("records_estimate", "records_estimate"),
    ("consequences", "consequences"),
    ("measures", "measures"),
    ("advice", "advice"),
    ("reference", "reference"),
    ("delay_reason", "delay_reason"),
    ("summary", "summary"),
    ("at ", "at"),
)


# ---------------------------------------------------------------------------- the clock
def span(d: timedelta) -> str:
    """A duration as the team reads a deadline: hours and minutes, days past three."""
    minutes = int(abs(d).total_seconds() // 60)
    hours, mins = divmod(minutes, 60)
    if hours >= 72:
        days, hours = divmod(hours, 24)
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {mins} min"
    return f"{mins} min"


@dataclass(frozen=True)
class Clock:
    """The authority's 72-hour clock of one breach, in words."""

    text: str
    running: bool  # the authority is due a notification that has not been made
    urgent: bool  # running with under 12 hours left, or overdue: shown in red
    overdue: bool


def clock(b: Breach, now: datetime) -> Clock:
    due = when(b.authority_due_at)
    if b.authority_notified_at is not None:
        late = b.authority_notified_at > b.authority_due_at
        return Clock(
            f"authority notified {when(b.authority_notified_at)} ({'late' if late else 'in time'})",
            False,
            False,
            False,
        )
    if not b.authority_notice_required:
        return Clock("no notification due (unlikely to result in a risk)", False, False, False)
    if b.status == "closed":
        return Clock("stopped: closed", False, False, False)
    left = b.time_left(now)
    if left.total_seconds() < 0:
        return Clock(f"overdue by {span(left)} (was due {due})", True, True, True)
    return Clock(f"{span(left)} left (due {due})", True, left < URGENT, False)


def stage(b: Breach) -> str:
    """The furthest step taken (the people may be told before the authority)."""
    if b.status == "closed":
        return "closed"
    if b.subjects_notified_at is not None:
        return "notified_subjects"
    if b.authority_notified_at is not None:
        return "notified_authority"
    if b.risk != "unassessed":
        return "assessed"
    return "detected"


def _row(b: Breach, now: datetime) -> dict[str, Any]:
    return {
        "b": b,
        "clock": clock(b, now),
        "stage": STAGE_WORDS[stage(b)],
        "risk": RISK_LABELS.get(b.risk, b.risk),
        "detected": when(b.detected_at),
    }


# ----------------------------------------------------------------------------- parsing
class _Bad(ValueError):
    def __init__(self, field: str, text: str) -> None:
        super().__init__(text)
        self.field = field


def _moment(value: str, field: str, label: str) -> datetime | None:
    """A form's date and time: the browser's ``YYYY-MM-DDTHH:MM`` is read as UTC, as the
    label says; an ISO time with an offset is taken as written."""
    v = value.strip()
    if not v:
        return None
    try:
        at = datetime.fromisoformat(v)
    except ValueError:
        raise _Bad(field, f"{label}: enter a date and time, e.g. 2026-03-02 09:30 (UTC)") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _number(value: str, field: str, label: str) -> int | None:
    v = value.strip().replace(",", "").replace("_", "")
    if not v:
        return None
    if not v.isdigit() or len(v) > 10:
        raise _Bad(field, f"{label}: a whole number of at least 0")
    return int(v)


def _long(value: str) -> str | None:
    return value.strip() or None


def _ids(value: str) -> list[str]:
    if len(value) > MAX_IDS_CHARS:
        raise _Bad("subject_ids", "Too many subject ids for one form: add them in parts, or use the API")
    return [x for x in _IDS.split(value) if x]


def _field_of(exc: Exception) -> str:
    text = str(exc)
    return next((f for prefix, f in _FIELD_OF if text.startswith(prefix)), "")


def _category_options(signed: SignedIn, exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    cp = signed.web.fid.policy
    return sorted(
        ((k, category_name(cp, k)) for k in cp.categories if k not in exclude), key=lambda kv: kv[1].lower()
    )


def _register(signed: SignedIn) -> BreachRegister:
    return signed.web.fid.breaches


def _now_field(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


# ------------------------------------------------------------------------------ the list
@router.get("/breaches")
def register(request: Request) -> Response:
    signed = gate(request, "breaches:read")
    if isinstance(signed, Response):
        return signed
    reg = _register(signed)
    now = datetime.now(UTC)
    rows = [_row(b, now) for b in reg.query(status="open", limit=10_000)]
    # Running clocks first, soonest due first; then the rest, latest detected first (the
    # register's order).
    running = sorted((r for r in rows if r["clock"].running), key=lambda r: r["b"].authority_due_at)
    opened = running + [r for r in rows if not r["clock"].running]
    closed = [_row(b, now) for b in reg.query(status="closed", limit=CLOSED_SHOWN + 1)]
    return page(
        request,
        "breaches.html",
        signed,
        title="Breaches",
        opened=opened,
        closed=closed[:CLOSED_SHOWN],
        more_closed=len(closed) > CLOSED_SHOWN,
        closed_shown=CLOSED_SHOWN,
        urgent_count=sum(1 for r in opened if r["clock"].urgent),
        overdue_count=sum(1 for r in opened if r["clock"].overdue),
        within=str(reg.within),
        can_write=signed.can("breaches:write"),
    )


# ---------------------------------------------------------------------------- recording
def _new_form(
    request: Request,
    signed: SignedIn,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    error: str = "",
    form: dict[str, Any] | None = None,
) -> Response:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"detected_at": _now_field(now), "categories": []}
    values.update(form or {})
    return page(
        request,
        "breach_new.html",
        signed,
        status=status,
        title="Record a breach",
        errors=errors or {},
        error=error,
        form=values,
        categories=_category_options(signed),
        within=str(_register(signed).within),
        max_text=TEXT_MAX,
    )


@router.get("/breaches/new")
def new(request: Request) -> Response:
    signed = gate(request, "breaches:write")
    if isinstance(signed, Response):
        return signed
    return _new_form(request, signed)


@router.post("/breaches")
def record(
    request: Request,
    csrf: Annotated[str, Form(max_length=256)] = "",
    title: Annotated[str, Form(max_length=400)] = "",
    nature: Annotated[str, Form(max_length=2 * TEXT_MAX)] = "",
    detected_at: Annotated[str, Form(max_length=64)] = "",
    occurred_at: Annotated[str, Form(max_length=64)] = "",
    categories: Annotated[list[str] | None, Form()] = None,
    subject_ids: Annotated[str, Form(max_length=MAX_IDS_CHARS + 1)] = "",
    subjects_estimate: Annotated[str, Form(max_length=32)] = "",
    records_estimate: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    signed = gate_form(request, "breaches:write", csrf)
    if isinstance(signed, Response):
        return signed
    cats = list(categories or [])[:500]
    form = {
        "title": title,
        "nature": nature,
        "detected_at": detected_at,
        "occurred_at": occurred_at,
        "categories": cats,
        "subject_ids": subject_ids,
        "subjects_estimate": subjects_estimate,
        "records_estimate": records_estimate,
    }
    errors: dict[str, str] = {}
    if not title.strip():
        errors["title"] = "Give the breach a short title."
    if not nature.strip():
        errors["nature"] = "Say what happened."
    parsed: dict[str, Any] = {}
    parsers: tuple[tuple[str, str, Callable[[str, str, str], Any]], ...] = (
        ("detected_at", "When you became aware of it", _moment),
        ("occurred_at", "When it happened", _moment),
        ("subjects_estimate", "People affected", _number),
        ("records_estimate", "Records affected", _number),
    )
    texts = {"detected_at": detected_at, "occurred_at": occurred_at}
    texts |= {"subjects_estimate": subjects_estimate, "records_estimate": records_estimate}
    for name, label, parse in parsers:
        try:
            parsed[name] = parse(texts[name], name, label)
        except _Bad as exc:
            errors[exc.field] = str(exc)
    try:
        ids = _ids(subject_ids)
    except _Bad as exc:
        errors[exc.field] = str(exc)
        ids = []
    if parsed.get("detected_at") is None and "detected_at" not in errors:
        errors["detected_at"] = "Say when you became aware of it: the clock starts then."
    if errors:
        return _new_form(request, signed, status=422, errors=errors, form=form)
    try:
        b = _register(signed).detect(
            title,
            nature,
            detected_at=parsed["detected_at"],
            occurred_at=parsed["occurred_at"],
            categories=cats,
            subject_ids=ids,
            subjects_estimate=parsed["subjects_estimate"],
            records_estimate=parsed["records_estimate"],
            actor=signed.actor,
        )
    except BreachError as exc:
        field = _field_of(exc)
        return _new_form(
            request, signed, status=422, errors={field: str(exc)} if field else {}, error=str(exc), form=form
        )
    return _after(b.id, "recorded")


# ---------------------------------------------------------------------------- one breach
def _steps(b: Breach) -> list[dict[str, str]]:
    """Each step of the breach's way through the register, done or not, in words."""
    steps = [{"name": "Detected", "state": "done", "text": f"aware {when(b.detected_at)}"}]
    if b.risk == "unassessed":
        steps.append({"name": "Assessed", "state": "todo", "text": "not yet"})
    else:
        steps.append({"name": "Assessed", "state": "done", "text": RISK_WORDS[b.risk]})
    if b.authority_notified_at is not None:
        text = f"{when(b.authority_notified_at)}"
        steps.append({"name": "Authority notified", "state": "done", "text": text})
    elif not b.authority_notice_required:
        steps.append({"name": "Authority notified", "state": "skip", "text": "not required (unlikely risk)"})
    else:
        steps.append(
            {
                "name": "Authority notified",
                "state": "todo",
                "text": f"not yet; due {when(b.authority_due_at)}",
            }
        )
    if b.subjects_notified_at is not None:
        steps.append({"name": "People notified", "state": "done", "text": when(b.subjects_notified_at)})
    elif b.subject_notice_required:
        steps.append({"name": "People notified", "state": "todo", "text": "not yet; required"})
    elif b.risk == "unassessed":
        steps.append({"name": "People notified", "state": "todo", "text": "depends on the assessment"})
    else:
        steps.append({"name": "People notified", "state": "skip", "text": "not required by the policy"})
    if b.closed_at is not None:
        steps.append({"name": "Closed", "state": "done", "text": when(b.closed_at)})
    else:
        steps.append({"name": "Closed", "state": "todo", "text": "open"})
    return steps


def _last_delivery(b: Breach) -> dict[str, Any] | None:
    for e in reversed(b.events):
        if e.kind == "notified_subjects" and e.detail:
            return e.detail
    return None


def _detail(
    request: Request,
    signed: SignedIn,
    breach_id: str,
    *,
    status: int = 200,
    done: str = "",
    error: str = "",
    action: str = "",
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
) -> Response:
    reg = _register(signed)
    now = datetime.now(UTC)
    try:
        b = reg.get(breach_id) if _BREACH_ID.fullmatch(breach_id) else None
    except UnknownBreach:
        b = None
    if b is None:
        return _missing(request, signed, breach_id)
    cp = signed.web.fid.policy
    values = dict(form or {})
    is_open = b.status == "open"
    at = values.get("at_parsed") if isinstance(values.get("at_parsed"), datetime) else None
    # The library asks for the reasons when the notification comes after the due moment
    # (Art. 33(1)); the field is shown then, and whenever the clock has run out.
    late = (
        b.authority_notified_at is None and b.authority_notice_required and (at or now) > b.authority_due_at
    )
    can_close = (
        is_open
        and b.risk != "unassessed"
        and not (b.authority_notice_required and b.authority_notified_at is None)
    )
    authority, people = reg.authority_notice(b.id, now=now), reg.subject_notice(b.id)
    return page(
        request,
        "breach.html",
        signed,
        status=status,
        title=f"Breach: {b.title}",
        b=b,
        row=_row(b, now),
        steps=_steps(b),
        categories=[(c, category_name(cp, c)) for c in b.categories],
        more_categories=_category_options(signed, exclude=b.categories),
        events=[
            {
                "at": when(e.at),
                "kind": EVENT_WORDS.get(e.kind, words(e.kind)),
                "actor": e.actor,
                "detail": detail_text(e.detail),
            }
            for e in b.events
        ],
        authority=authority,
        people=people,
        risks=[(r, RISK_LABELS[r], RISK_WORDS[r]) for r in RISKS],
        risk_text=RISK_WORDS.get(b.risk, b.risk),
        when=when,
        can_write=signed.can("breaches:write"),
        is_open=is_open,
        late=late,
        can_close=can_close,
        phase=1 + sum(1 for e in b.events if e.kind == "notified_authority"),
        has_mailer=signed.web.mailer is not None,
        assessed_fully=b.risk != "unassessed" and bool(b.consequences) and bool(b.measures),
        delivery=_last_delivery(b) if done == "notified-subjects" else None,
        done=DONE_WORDS.get(done, ""),
        error=error,
        action=action,
        errors=errors or {},
        form=values,
        now_field=_now_field(now),
        max_text=TEXT_MAX,
        rules=signed.web.fid.policy.policy.breaches,
        subjects_rule=reg.subjects_rule,
    )


def _missing(request: Request, signed: SignedIn, breach_id: str) -> Response:
    return message(
        request,
        signed,
        404,
        "No such breach",
        f"There is no breach {breach_id[:32]!r} in the register.",
        back=f"{PREFIX}/breaches",
    )


@router.get("/breaches/{breach_id}")
def detail(request: Request, breach_id: str, done: Annotated[str, Query(max_length=32)] = "") -> Response:
    signed = gate(request, "breaches:read")
    if isinstance(signed, Response):
        return signed
    return _detail(request, signed, breach_id, done=done)


@router.get("/breaches/{breach_id}/notice-{which}.txt")
def notice_text(request: Request, breach_id: str, which: str) -> Response:
    """A drafted notice as plain text, to paste into the authority's portal or a mail."""
    signed = gate(request, "breaches:read")
    if isinstance(signed, Response):
        return signed
    reg = _register(signed)
    try:
        if not _BREACH_ID.fullmatch(breach_id) or which not in ("authority", "people"):
            raise UnknownBreach(breach_id)
        letter = reg.authority_notice(breach_id) if which == "authority" else reg.subject_notice(breach_id)
    except UnknownBreach:
        return _missing(request, signed, breach_id)
    return Response(
        f"Subject: {letter.subject}\n\n{letter.text}",
        media_type="text/plain; charset=utf-8",
        headers=HEADERS,
    )


def _after(breach_id: str, done: str) -> Response:
    return RedirectResponse(f"{PREFIX}/breaches/{breach_id}?done={done}", status_code=303)


def _refused(
    request: Request,
    signed: SignedIn,
    breach_id: str,
    action: str,
    exc: Exception,
    form: dict[str, Any],
) -> Response:
    if isinstance(exc, UnknownBreach):
        return _missing(request, signed, breach_id)
    # Bad input: 422; a step the breach's state does not allow: 409 (as the API answers).
    status = 422 if isinstance(exc, BreachInputError | _Bad) else 409
    field = exc.field if isinstance(exc, _Bad) else _field_of(exc)
    return _detail(
        request,
        signed,
        breach_id,
        status=status,
        error=str(exc),
        action=action,
        errors={field: str(exc)} if field else {},
        form=form,
    )


def _acting(request: Request, csrf: str, breach_id: str) -> SignedIn | Response:
    """The operator's session for a step on ``breach_id`` (role, CSRF, a well-formed id)."""
    signed = gate_form(request, "breaches:write", csrf)
    if isinstance(signed, Response):
        return signed
    if not _BREACH_ID.fullmatch(breach_id):
        return _missing(request, signed, breach_id)
    return signed


@router.post("/breaches/{breach_id}/assess")
def assess(
    request: Request,
    breach_id: str,
    csrf: Annotated[str, Form(max_length=256)] = "",
    risk: Annotated[str, Form(max_length=16)] = "",
    consequences: Annotated[str, Form(max_length=2 * TEXT_MAX)] = "",
    measures: Annotated[str, Form(max_length=2 * TEXT_MAX)] = "",
    advice: Annotated[str, Form(max_length=2 * TEXT_MAX)] = "",
    categories: Annotated[list[str] | None, Form()] = None,
    subject_ids: Annotated[str, Form(max_length=MAX_IDS_CHARS + 1)] = "",
    subjects_estimate: Annotated[str, Form(max_length=32)] = "",
    records_estimate: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    signed = _acting(request, csrf, breach_id)
    if isinstance(signed, Response):
        return signed
    cats = list(categories or [])[:500]
    form = {
        "risk": risk,
        "consequences": consequences,
        "measures": measures,
        "advice": advice,
        "categories": cats,
        "subject_ids": subject_ids,
        "subjects_estimate": subjects_estimate,
        "records_estimate": records_estimate,
    }
    try:
        if risk not in RISKS:
            raise _Bad("risk", "Choose the risk to people.")
        se = _number(subjects_estimate, "subjects_estimate", "People affected")
        re_ = _number(records_estimate, "records_estimate", "Records affected")
        ids = _ids(subject_ids)
        _register(signed).assess(
            breach_id,
            risk=risk,  # type: ignore[arg-type]  # checked against RISKS above
            consequences=_long(consequences),
            measures=_long(measures),
            advice=_long(advice),
            categories=cats,
            subject_ids=ids,
            subjects_estimate=se,
            records_estimate=re_,
            actor=signed.actor,
        )
    except (BreachError, _Bad) as exc:
        return _refused(request, signed, breach_id, "assess", exc, form)
    return _after(breach_id, "assessed")


@router.post("/breaches/{breach_id}/notify-authority")
def notify_authority(
    request: Request,
    breach_id: str,
    csrf: Annotated[str, Form(max_length=256)] = "",
    at: Annotated[str, Form(max_length=64)] = "",
    reference: Annotated[str, Form(max_length=256)] = "",
    delay_reason: Annotated[str, Form(max_length=2 * TEXT_MAX)] = "",
) -> Response:
    signed = _acting(request, csrf, breach_id)
    if isinstance(signed, Response):
        return signed
    form: dict[str, Any] = {"at": at, "reference": reference, "delay_reason": delay_reason}
    try:
        when_at = _moment(at, "at", "When you notified the authority")
        form["at_parsed"] = when_at
        _register(signed).notify_authority(
            breach_id,
            at=when_at,
            reference=reference.strip() or None,
            delay_reason=_long(delay_reason),
            actor=signed.actor,
        )
    except (BreachError, _Bad) as exc:
        if "delay_reason" in str(exc):  # the library's words name the argument; the form's differ
            exc = _Bad("delay_reason", f"Give the reasons for the delay. {exc}")
        return _refused(request, signed, breach_id, "notify-authority", exc, form)
    return _after(breach_id, "notified-authority")


@router.post("/breaches/{breach_id}/notify-subjects")
def notify_subjects(
    request: Request,
    breach_id: str,
    csrf: Annotated[str, Form(max_length=256)] = "",
    force: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    signed = _acting(request, csrf, breach_id)
    if isinstance(signed, Response):
        return signed
    mailer = signed.web.mailer
    form = {"force": force}
    if mailer is None:
        return _detail(
            request,
            signed,
            breach_id,
            status=503,
            error="This server has no mailer configured (FIDUCIARY_SMTP_URL, or the outbox): "
            "nothing was sent.",
            action="notify-subjects",
            form=form,
        )
    try:
        result = _register(signed).notify_subjects(breach_id, mailer, force=bool(force), actor=signed.actor)
    except BreachError as exc:
        return _refused(request, signed, breach_id, "notify-subjects", exc, form)
    if not (result.sent or result.no_address or result.failed or result.left):
        return _after(breach_id, "nobody")
    return _after(breach_id, "notified-subjects")


@router.post("/breaches/{breach_id}/close")
def close(
    request: Request,
    breach_id: str,
    csrf: Annotated[str, Form(max_length=256)] = "",
    summary: Annotated[str, Form(max_length=2 * TEXT_MAX)] = "",
) -> Response:
    signed = _acting(request, csrf, breach_id)
    if isinstance(signed, Response):
        return signed
    form = {"summary": summary}
    try:
        _register(signed).close(breach_id, summary=_long(summary), actor=signed.actor)
    except BreachError as exc:
        return _refused(request, signed, breach_id, "close", exc, form)
    return _after(breach_id, "closed")
