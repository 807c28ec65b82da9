"""The JSON API's request and response bodies (pydantic; they are the OpenAPI schema).

Request bodies refuse unknown fields, so a misspelt field is a 422 naming it rather than
silently ignored. Keys of the policy (purposes, categories, recipients, subject kinds)
are checked for shape here and against the policy by the library, which names what is
unknown and suggests the nearest key.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from fiduciary.policy.model import RequestType
from fiduciary.requests.lifecycle import DenyReason

# A key of the policy: purpose, category, recipient, subject kind, activity.
PolicyKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")]
Category = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")]
# A subject id as issued: in bodies, paths and queries alike.
SUBJECT_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,32}$"
SubjectId = Annotated[str, StringConstraints(pattern=SUBJECT_ID_PATTERN)]
RequestId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,32}$")]
Region = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$")]
Language = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$")]
Audience = Literal["self", "members", "other_users", "public"]
# Where a choice came from ("system", the ledger's own expiry, is never a caller's).
Channel = Literal[
    "web_form", "api", "email_link", "gpc_signal", "import", "account_settings", "privacy_center", "console"
]
Scope = Literal[
    "subjects:read",
    "subjects:write",
    "consent:read",
    "consent:write",
    "decisions",
    "requests:read",
    "requests:write",
    "audit:read",
    "policy:read",
    "metrics:read",
    "disclosures:read",
    "disclosures:write",
    "breaches:read",
    "breaches:write",
    "admin",
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------ subjects
class SignUpIn(Input):
    """A new subject, through the policy's age gate (PUT-2)."""

    kind: PolicyKey = Field(description="A subject kind of the policy (customer, user ...).")
    identities: dict[
        Annotated[str, StringConstraints(max_length=32)],
        Annotated[str, StringConstraints(min_length=1, max_length=320)],
    ] = Field(min_length=1, description="Identity kind -> value: {'email': 'ada@example.com'}.")
    attributes: dict[Category, Any] = Field(default_factory=dict, description="Category -> value.")
    activity: PolicyKey | None = Field(
        None, description="The policy activity collecting the data (signup ...)."
    )
    region: Region | None = Field(None, description="ISO 3166 country or subdivision: DE, US-CA.")
    birth_date: date | None = None
    age: int | None = Field(None, ge=0, le=150)
    consents: list[PolicyKey] = Field(default_factory=list, description="Purposes consented to at sign-up.")
    notice_text: str | None = Field(None, min_length=1, max_length=20000, description="The text shown.")
    language: Language | None = None
    channel: Channel = "api"
    ip: str | None = Field(None, max_length=64, description="The person's IP (kept truncated: /24, /48).")


class SubjectCreated(BaseModel):
    subject_id: str
    jurisdiction: str
    gpc_opt_out: bool = Field(description="Sec-GPC: 1 was honoured as an opt-out of sale and sharing.")


class SubjectInfo(BaseModel):
    """A subject without its data."""

    id: str
    kind: str
    jurisdiction: str
    status: str
    age_status: str
    policy_version: str
    created_at: datetime
    last_activity_at: datetime | None
    closed_at: datetime | None
    erased_at: datetime | None


class FindIn(Input):
    """Find a subject by an identity. In the body, not the URL: addresses stay out of logs."""

    kind: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = Field(
        description="email, phone_number, user_id ... (the policy's identity kinds)"
    )
    value: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    purpose: PolicyKey = Field(description="Why you look the person up; recorded in the audit trail.")


class Found(BaseModel):
    subject_id: str


class DecisionQuery(Input):
    purpose: PolicyKey
    categories: list[Category] | None = Field(
        None, max_length=200, description="Categories to use; none: the purpose alone is decided."
    )
    recipient: PolicyKey | None = None
    audience: Audience | None = None


class ReadIn(DecisionQuery):
    """Read a subject's values for a purpose: only what the decision allows comes back."""


class DecisionIn(DecisionQuery):
    subject_id: SubjectId


class DecisionBatchIn(Input):
    items: list[DecisionIn] = Field(min_length=1, max_length=1000)


class DecisionOut(BaseModel):
    subject_id: str
    purpose: str
    ok: bool = Field(description="The purpose may proceed and every category asked for is allowed.")
    allowed: list[str]
    refused: dict[str, str] = Field(description="Category -> reason code.")
    reason: str | None = Field(description="Why the purpose itself is refused, if it is.")
    reason_text: str | None
    reasons: dict[str, str] = Field(description="Category -> the reason in words.")
    gpc: bool = Field(description="Global Privacy Control counted on this request (LAW-12).")


class DecisionBatchOut(BaseModel):
    decisions: list[DecisionOut]


class StoredValueOut(BaseModel):
    value: Any
    source: str
    collected_at: datetime
    policy_version: str
    activity: str | None


class ReadOut(BaseModel):
    subject_id: str
    values: dict[str, StoredValueOut]
    decision: DecisionOut


# ------------------------------------------------------------------------------ consent
class ChoiceIn(Input):
    """How and where the person expressed the choice (LAW-8 proof)."""

    channel: Channel = "api"
    method: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,23}$")] | None = Field(
        None, description="checkbox, button, link, signal ..."
    )
    notice_text: str | None = Field(
        None, min_length=1, max_length=20000, description="The exact text shown; only its SHA-256 is kept."
    )
    notice_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    language: Language | None = None
    ip: str | None = Field(None, max_length=64, description="The person's IP (kept truncated: /24, /48).")


class GiveIn(ChoiceIn):
    purpose: PolicyKey
    expires_at: AwareDatetime | None = None


class WithdrawIn(ChoiceIn):
    purpose: PolicyKey


class ObjectIn(ChoiceIn):
    purpose: Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63})$")] = Field(
        "*", description="A purpose open to objection, or * for all."
    )


class RestrictIn(ChoiceIn):
    pass


class SaleOptOutIn(ChoiceIn):
    pass


class SettingIn(ChoiceIn):
    name: Annotated[
        str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)?$", max_length=116)
    ] = Field(description="visibility:<category>, linked:<recipient>, or a policy condition's setting")
    value: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class EventCreated(BaseModel):
    event_id: int


class ConsentStateOut(BaseModel):
    subject_id: str
    kind: str
    jurisdiction: str
    status: str
    age_status: str
    consents: dict[str, str] = Field(description="Purpose -> given | withdrawn | expired.")
    objections: list[str]
    restricted: bool
    sale_opt_out: bool
    recipient_opt_outs: list[str]
    settings: dict[str, str]
    allowed_purposes: list[str] = Field(description="Purposes that may use the subject's data now.")
    gpc: bool


class ConsentEventOut(BaseModel):
    id: int
    kind: str
    scope: str
    value: str | None
    at: datetime
    policy_version: str
    notice_hash: str | None
    language: str | None
    method: str | None
    channel: str
    ip: str | None
    expires_at: datetime | None
    actor: str | None


class ProofOut(BaseModel):
    """What LAW-8 asks to prove about one event."""

    event_id: int
    subject_id: str
    kind: str
    scope: str
    value: str | None
    at: str
    purpose: str | None
    purpose_name: str | None
    basis: str | None
    notice_hash: str | None
    notice_hash_algorithm: str | None
    policy_version: str
    language: str | None
    method: str | None
    channel: str
    ip: str | None
    expires_at: str | None
    actor: str | None


# ------------------------------------------------------------------------------ requests
class ContactIn(Input):
    email: Annotated[str, StringConstraints(max_length=320)] | None = None
    phone: Annotated[str, StringConstraints(max_length=64)] | None = None


class SubmitIn(Input):
    type: RequestType
    contact: ContactIn
    region: Region | None = None
    details: dict[str, Any] | None = Field(None, description="Type-specific details (purpose, values ...).")
    data_points: dict[str, Any] | None = Field(None, description="For verification by data points (CCPA).")
    subject_kind: PolicyKey | None = None


class SubmittedOut(BaseModel):
    request_id: str
    status: str
    due_at: datetime
    verification: str
    duplicate_of: str | None
    code_sent: bool
    acknowledge_by: datetime | None
    subject_matched: bool


class CodeIn(Input):
    code: Annotated[str, StringConstraints(min_length=1, max_length=32)]


class DataPointsIn(Input):
    data_points: dict[str, Any] | None = None
    declaration: bool = False


class StatusOut(BaseModel):
    request_id: str
    status: str


class CodeSentOut(BaseModel):
    request_id: str
    code_sent: bool


class DenyIn(Input):
    reason: DenyReason
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class ExtendIn(Input):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class ExtendedOut(BaseModel):
    request_id: str
    due_at: datetime


class RunIn(Input):
    holds: list[PolicyKey] = Field(
        default_factory=list, description="Policy exemptions active for this request (a legal hold ...)."
    )


class RunOut(BaseModel):
    request_id: str
    job_id: str


class RequestEventOut(BaseModel):
    kind: str
    at: datetime
    actor: str
    detail: dict[str, Any] | None


class RequestOut(BaseModel):
    id: str
    type: str
    jurisdiction: str
    status: str
    verification: str
    subject_id: str | None
    received_at: datetime
    due_at: datetime
    days_left: float = Field(description="Days until the due date (negative: overdue).")
    extended: bool
    closed_at: datetime | None
    job_id: str | None
    child_report: bool
    overdue: bool
    events: list[RequestEventOut]


class QueueOut(BaseModel):
    requests: list[RequestOut]


# ------------------------------------------------------------------------------ policy
class PolicyVersionOut(BaseModel):
    id: int
    version: str
    digest: str
    effective: str
    published_at: datetime
    material_purposes: list[str]
    current: bool


class PolicyVersionText(PolicyVersionOut):
    text: str = Field(description="The policy.yaml as published.")


# ------------------------------------------------------------------------------ audit
class AuditEntryOut(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    purpose: str | None
    subject: str | None = Field(description="The subject's pseudonym, never its id.")
    result: str
    detail: dict[str, Any] | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntryOut]
    next_after_seq: int | None = Field(description="Pass as after_seq for the next page; null at the end.")


class AuditProblemOut(BaseModel):
    seq: int
    kind: str
    message: str


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    checkpoints: int
    head_seq: int
    last_checkpoint: int | None
    key_id: str
    omitted: int
    problems: list[AuditProblemOut]
    text: str


# ------------------------------------------------------------------------------ metrics
class MetricRow(BaseModel):
    type: str
    received: int
    done: int
    partial: int
    denied: int
    open: int
    median_days: float | None


class MetricsOut(BaseModel):
    year: int
    jurisdiction: str | None
    rows: list[MetricRow]


# ------------------------------------------------------------------------------ admin
class KeyCreateIn(Input):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    scopes: list[Scope] = Field(min_length=1)


class KeyCreatedOut(BaseModel):
    key_id: str
    key: str = Field(description="The key itself. Shown this once: only its hash is stored.")
    name: str
    scopes: list[str]


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None


class UserCreateIn(Input):
    username: Annotated[str, StringConstraints(min_length=2, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=12, max_length=1024)]
    role: Literal["viewer", "operator", "admin"]


class UserOut(BaseModel):
    id: str
    username: str
    role: str
    created_at: datetime
    created_by: str
    last_login_at: datetime | None
    disabled_at: datetime | None
