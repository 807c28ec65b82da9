"""Disclosures, aggregates for partners and the breach register: thin adapters over
``fid.disclosures`` (PLU-9, PLV-13, PUT-8, PLV-5, PLO-6), ``fiduciary.aggregates`` and
``fid.breaches`` (LAW-10). The console's pages call these too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from fiduciary.aggregates import export_aggregates
from fiduciary.breaches import Breach
from fiduciary.disclosures import Disclosure
from fiduciary.notices import Delivery
from fiduciary.web.api.models import Category, Input, PolicyKey, SubjectId
from fiduciary.web.api.subjects import SubjectPath
from fiduciary.web.deps import Caller, access
from fiduciary.web.problems import ProblemException

router = APIRouter()
DisclosuresRead = Annotated[Caller, access("disclosures:read")]
DisclosuresWrite = Annotated[Caller, access("disclosures:write")]
BreachesRead = Annotated[Caller, access("breaches:read")]
BreachesWrite = Annotated[Caller, access("breaches:write")]

DisclosurePath = Annotated[int, Path(ge=1, le=2**62, description="A disclosure's id.")]
BreachPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{1,32}$", description="A breach's id.")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=5000)]
Basis = Literal[
    "consent", "contract", "legal_obligation", "vital_interest", "public_task", "legitimate_interest"
]
Gag = Literal["law", "court_order", "emergency"]
Column = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]


def _mailer(caller: Caller) -> Any:
    if caller.web.mailer is None:
        raise ProblemException(503, "this server has no mailer configured (FIDUCIARY_SMTP_URL or the outbox)")
    return caller.web.mailer


class EventOut(BaseModel):
    id: int
    kind: str
    at: datetime
    actor: str
    detail: dict[str, Any] | None = None


class DeliveryOut(BaseModel):
    """What one round of mailing did; ``left`` are still queued (call again)."""

    topic: str
    sent: int
    no_address: int = Field(description="No email identity, or erased since.")
    failed: int
    left: int


def _delivery(d: Delivery) -> DeliveryOut:
    return DeliveryOut(**d.to_dict())


# --------------------------------------------------------------------------- disclosures
class DisclosureIn(Input):
    """Data of these subjects went to the recipient (every subject passes the decision
    engine first; one refusal refuses the whole disclosure)."""

    recipient: PolicyKey
    purpose: PolicyKey
    categories: list[Category] = Field(min_length=1, max_length=64)
    subject_ids: list[SubjectId] = Field(min_length=1, max_length=10_000)
    basis: Basis | None = Field(None, description="The legal ground; default the purpose's basis.")
    at: AwareDatetime | None = Field(None, description="When the data went out; default now.")
    legal_demand: bool = Field(False, description="Made on a legal demand (PLU-9).")
    gag: Gag | None = Field(None, description="What forbids telling the people, for a legal demand.")
    reference: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        None, description="The demand's reference (no personal data)."
    )
    detail: dict[str, Any] | None = None


class DisclosureOut(BaseModel):
    id: int
    at: datetime
    recorded_at: datetime
    kind: Literal["routine", "legal_demand", "aggregate"]
    recipient: str
    purpose: str
    basis: str
    categories: list[str]
    form: str
    subjects: int = Field(description="How many people.")
    gag: str | None
    notify: Literal["not_applicable", "tell", "withheld"] = Field(description="Are the people told (PLU-9)?")
    notify_reason: str | None
    reference: str | None
    actor: str
    detail: dict[str, Any] | None
    told_at: datetime | None
    events: list[EventOut]


class DisclosurePage(BaseModel):
    disclosures: list[DisclosureOut]
    next_after_id: int | None = Field(None, description="Pass as after_id for the next page.")


def _disclosure(d: Disclosure) -> DisclosureOut:
    return DisclosureOut.model_validate(d.to_dict())


@router.post("/disclosures", status_code=201, response_model=DisclosureOut, tags=["disclosures"])
def record_disclosure(body: DisclosureIn, caller: DisclosuresWrite) -> DisclosureOut:
    """Record a release of data to a recipient. 409 ``disclosure-refused`` when the policy
    does not allow it for some of the subjects (each is listed in ``refused``), e.g. an
    aggregate-only recipient (PUT-8) or a person who opted out of the sale."""
    d = caller.web.fid.disclosures.record(
        body.recipient,
        body.purpose,
        body.categories,
        body.subject_ids,
        basis=body.basis,
        at=body.at,
        legal_demand=body.legal_demand,
        gag=body.gag,
        reference=body.reference,
        detail=body.detail,
        actor=caller.actor,
    )
    return _disclosure(d)


@router.get("/disclosures", response_model=DisclosurePage, tags=["disclosures"])
def list_disclosures(
    caller: DisclosuresRead,
    recipient: Annotated[str | None, Query(max_length=64)] = None,
    kind: Literal["routine", "legal_demand", "aggregate"] | None = None,
    since: Annotated[AwareDatetime | None, Query(description="Inclusive.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Exclusive.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> DisclosurePage:
    """Disclosures matching every filter, oldest first."""
    found = caller.web.fid.disclosures.query(
        recipient=recipient, kind=kind, since=since, until=until, limit=limit, after_id=after_id
    )
    out = [_disclosure(d) for d in found]
    return DisclosurePage(disclosures=out, next_after_id=out[-1].id if len(out) == limit else None)


@router.get("/disclosures/{disclosure_id}", response_model=DisclosureOut, tags=["disclosures"])
def get_disclosure(disclosure_id: DisclosurePath, caller: DisclosuresRead) -> DisclosureOut:
    return _disclosure(caller.web.fid.disclosures.get(disclosure_id))


@router.post("/disclosures/{disclosure_id}/lift-gag", response_model=DisclosureOut, tags=["disclosures"])
def lift_gag(disclosure_id: DisclosurePath, caller: DisclosuresWrite) -> DisclosureOut:
    """The gag on a legal demand no longer holds: the people are queued to be told, unless
    the policy says they never are."""
    return _disclosure(caller.web.fid.disclosures.lift_gag(disclosure_id, actor=caller.actor))


@router.post("/disclosures/{disclosure_id}/tell", response_model=DeliveryOut, tags=["disclosures"])
def tell(disclosure_id: DisclosurePath, caller: DisclosuresWrite) -> DeliveryOut:
    """Mail the people a legal demand concerned, when they are to be told (PLU-9)."""
    return _delivery(caller.web.fid.disclosures.tell(disclosure_id, _mailer(caller), actor=caller.actor))


@router.get("/subjects/{subject_id}/disclosures", response_model=list[DisclosureOut], tags=["disclosures"])
def subject_disclosures(subject_id: SubjectPath, caller: DisclosuresRead) -> list[DisclosureOut]:
    """Every disclosure that concerned the subject, gagged legal demands included (the
    person's own access report leaves those out)."""
    return [_disclosure(d) for d in caller.web.fid.disclosures.of_subject(subject_id)]


class TransparencyOut(BaseModel):
    organization: str
    since: datetime
    until: datetime
    disclosures: int
    people: int
    recipients: list[dict[str, Any]]
    legal_demands: dict[str, Any]


@router.get(
    "/transparency",
    response_model=TransparencyOut,
    tags=["disclosures"],
    responses={200: {"content": {"application/json": {}, "text/markdown": {}}}},
)
def transparency(
    caller: DisclosuresRead,
    since: Annotated[AwareDatetime, Query(description="Inclusive.")],
    until: Annotated[AwareDatetime, Query(description="Exclusive.")],
    format: Annotated[Literal["json", "markdown"], Query(description="json or markdown.")] = "json",
) -> Any:
    """The transparency report of a period: disclosures per recipient, legal demands with
    gags and who was told; counts only, fit to publish."""
    report = caller.web.fid.disclosures.transparency_report(since=since, until=until)
    if format == "markdown":
        return Response(report.to_markdown(), media_type="text/markdown; charset=utf-8")
    return TransparencyOut.model_validate(report.to_dict())


class AggregateIn(Input):
    """Rows to aggregate for an aggregate-only recipient (PUT-8, PLV-5, PLO-6): only groups
    of at least k people (the recipient's min_group, default 10) are released."""

    recipient: PolicyKey
    purpose: PolicyKey
    categories: list[Category] = Field(min_length=1, max_length=64)
    group_by: list[Column] = Field(min_length=1, max_length=8)
    person: Column = Field("subject", description="The column naming the person a row is about.")
    measures: list[Column] = Field(default_factory=list, max_length=16)
    rows: list[dict[str, Any]] = Field(max_length=100_000)


class AggregateOut(BaseModel):
    disclosure_id: int | None = Field(description="None when no group was large enough.")
    recipient: str
    purpose: str
    categories: list[str]
    k: int
    group_by: list[str]
    measures: list[str]
    groups: list[dict[str, Any]]
    suppressed: int = Field(description="Groups left out: fewer than k people.")
    people: int
    at: datetime


@router.post("/aggregates", status_code=201, response_model=AggregateOut, tags=["disclosures"])
def aggregates(body: AggregateIn, caller: DisclosuresWrite) -> AggregateOut:
    """Aggregate statistics for a partner, recorded as an ``aggregate`` disclosure. 409
    ``aggregate-refused`` for a recipient not declared aggregate-only."""
    export = export_aggregates(
        caller.web.fid,
        body.recipient,
        body.purpose,
        body.rows,
        group_by=body.group_by,
        categories=body.categories,
        person=body.person,
        measures=body.measures,
        actor=caller.actor,
    )
    return AggregateOut.model_validate(export.to_dict())


# --------------------------------------------------------------------------- breaches
class BreachIn(Input):
    """A breach, registered the moment it is known: the 72-hour clock starts at
    ``detected_at``. Texts hold no personal data."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    nature: Text
    detected_at: AwareDatetime | None = None
    occurred_at: AwareDatetime | None = None
    categories: list[Category] = Field(default_factory=list, max_length=64)
    subject_ids: list[SubjectId] = Field(default_factory=list, max_length=100_000)
    subjects_estimate: Count | None = None
    records_estimate: Count | None = None


class AssessIn(Input):
    risk: Literal["unlikely", "risk", "high"]
    consequences: Text | None = None
    measures: Text | None = None
    advice: Text | None = Field(None, description="What people can do to protect themselves.")
    categories: list[Category] = Field(default_factory=list, max_length=64)
    subject_ids: list[SubjectId] = Field(default_factory=list, max_length=100_000)
    subjects_estimate: Count | None = None
    records_estimate: Count | None = None


class NotifyAuthorityIn(Input):
    at: AwareDatetime | None = None
    reference: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    delay_reason: Text | None = Field(None, description="Required when later than due (Art. 33(1)).")


class NotifySubjectsIn(Input):
    force: bool = Field(False, description="Tell them even where the policy does not ask for it.")


class CloseIn(Input):
    summary: Text | None = None


class BreachOut(BaseModel):
    id: str
    title: str
    nature: str
    detected_at: datetime
    occurred_at: datetime | None
    authority_due_at: datetime
    hours_left: float = Field(description="Until the authority is due a notification; negative: late.")
    overdue: bool
    categories: list[str]
    subjects_estimate: int | None
    records_estimate: int | None
    subjects: int
    risk: Literal["unassessed", "unlikely", "risk", "high"]
    consequences: str | None
    measures: str | None
    advice: str | None
    status: Literal["open", "closed"]
    authority_notice_required: bool
    subject_notice_required: bool
    authority_notified_at: datetime | None
    subjects_notified_at: datetime | None
    closed_at: datetime | None
    created_by: str
    events: list[EventOut]


class LetterOut(BaseModel):
    subject: str
    text: str


class NoticesOut(BaseModel):
    authority: LetterOut = Field(description="For the supervisory authority (Art. 33(3)).")
    subjects: LetterOut = Field(description="For each person affected (Art. 34(2)).")


def _breach(b: Breach) -> BreachOut:
    return BreachOut.model_validate(b.to_dict())


@router.post("/breaches", status_code=201, response_model=BreachOut, tags=["breaches"])
def detect(body: BreachIn, caller: BreachesWrite) -> BreachOut:
    b = caller.web.fid.breaches.detect(
        body.title,
        body.nature,
        detected_at=body.detected_at,
        occurred_at=body.occurred_at,
        categories=body.categories,
        subject_ids=body.subject_ids,
        subjects_estimate=body.subjects_estimate,
        records_estimate=body.records_estimate,
        actor=caller.actor,
    )
    return _breach(b)


@router.get("/breaches", response_model=list[BreachOut], tags=["breaches"])
def list_breaches(
    caller: BreachesRead,
    status: Literal["open", "closed"] | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[BreachOut]:
    """The register, the most recently detected first, each with its clock."""
    return [_breach(b) for b in caller.web.fid.breaches.query(status=status, limit=limit)]


@router.get("/breaches/{breach_id}", response_model=BreachOut, tags=["breaches"])
def get_breach(breach_id: BreachPath, caller: BreachesRead) -> BreachOut:
    return _breach(caller.web.fid.breaches.get(breach_id))


@router.post("/breaches/{breach_id}/assess", response_model=BreachOut, tags=["breaches"])
def assess(breach_id: BreachPath, body: AssessIn, caller: BreachesWrite) -> BreachOut:
    b = caller.web.fid.breaches.assess(
        breach_id,
        risk=body.risk,
        consequences=body.consequences,
        measures=body.measures,
        advice=body.advice,
        categories=body.categories,
        subject_ids=body.subject_ids,
        subjects_estimate=body.subjects_estimate,
        records_estimate=body.records_estimate,
        actor=caller.actor,
    )
    return _breach(b)


@router.get("/breaches/{breach_id}/notices", response_model=NoticesOut, tags=["breaches"])
def notices(breach_id: BreachPath, caller: BreachesRead) -> NoticesOut:
    """The drafted notices, from the policy's organization and the breach's facts."""
    reg = caller.web.fid.breaches
    a, s = reg.authority_notice(breach_id), reg.subject_notice(breach_id)
    return NoticesOut(
        authority=LetterOut(subject=a.subject, text=a.text),
        subjects=LetterOut(subject=s.subject, text=s.text),
    )


@router.post("/breaches/{breach_id}/notify-authority", response_model=BreachOut, tags=["breaches"])
def notify_authority(breach_id: BreachPath, body: NotifyAuthorityIn, caller: BreachesWrite) -> BreachOut:
    """Record that the authority was notified; later than due, ``delay_reason`` is required."""
    b = caller.web.fid.breaches.notify_authority(
        breach_id, at=body.at, reference=body.reference, delay_reason=body.delay_reason, actor=caller.actor
    )
    return _breach(b)


@router.post("/breaches/{breach_id}/notify-subjects", response_model=DeliveryOut, tags=["breaches"])
def notify_subjects(breach_id: BreachPath, body: NotifySubjectsIn, caller: BreachesWrite) -> DeliveryOut:
    """Mail the notice to every person linked to the breach (call again while ``left``)."""
    result = caller.web.fid.breaches.notify_subjects(
        breach_id, _mailer(caller), force=body.force, actor=caller.actor
    )
    return _delivery(result)


@router.post("/breaches/{breach_id}/close", response_model=BreachOut, tags=["breaches"])
def close(breach_id: BreachPath, body: CloseIn, caller: BreachesWrite) -> BreachOut:
    return _breach(caller.web.fid.breaches.close(breach_id, summary=body.summary, actor=caller.actor))
