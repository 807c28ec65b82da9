"""The policy language: what a ``policy.yaml`` may say, as pydantic models.

Every model forbids unknown keys, so a typo is an error with a position, never a
silently ignored promise. Cross-references (a purpose naming a category, a recipient
naming a purpose) are checked after parsing, in ``check.py``; taxonomy keys are checked
there too, so that the error can suggest the nearest key.

docs/policy.md is the reference for everything here; keep them in step.
"""

from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from fiduciary.policy.period import Period

LANGUAGE_VERSION = 1


def _as_text(value: Any) -> Any:
    """A version label written as a date (2011-12-01) is YAML's date; keep it as text."""
    return value.isoformat() if isinstance(value, date) else value


VersionLabel = Annotated[str, BeforeValidator(_as_text)]


class Model(BaseModel):
    # Numbers become text where text is expected (version: 2.0 means "2.0").
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, coerce_numbers_to_str=True
    )


# --------------------------------------------------------------------------- vocabulary


class Basis(StrEnum):
    """GDPR Art. 6(1) legal bases."""

    consent = "consent"
    contract = "contract"
    legal_obligation = "legal_obligation"
    vital_interest = "vital_interest"
    public_task = "public_task"
    legitimate_interest = "legitimate_interest"


# Bases ordered from the person's strongest control to weakest; a change of basis that
# moves right is "weaker" for the diff (the person loses control).
BASIS_STRENGTH: dict[Basis, int] = {
    Basis.consent: 0,
    Basis.contract: 1,
    Basis.legitimate_interest: 2,
    Basis.legal_obligation: 3,
    Basis.public_task: 3,
    Basis.vital_interest: 3,
}


class ConsentMode(StrEnum):
    opt_in = "opt_in"  # refused until the person says yes
    opt_out = "opt_out"  # allowed until the person says no
    notice_only = "notice_only"  # allowed; told, no choice offered


class Role(StrEnum):
    processor = "processor"
    third_party = "third_party"
    affiliate = "affiliate"
    authority = "authority"
    other_users = "other_users"
    public = "public"
    successor = "successor"
    advertiser = "advertiser"


class Transfer(StrEnum):
    """How a transfer out of the EEA is safeguarded (GDPR Chapter V)."""

    adequacy = "adequacy"  # Art. 45 adequacy decision (incl. EU-US Data Privacy Framework)
    dpf = "dpf"  # EU-US Data Privacy Framework certification
    scc = "scc"  # Art. 46 standard contractual clauses
    bcr = "bcr"  # binding corporate rules
    consent = "consent"  # Art. 49(1)(a) explicit consent
    contract = "contract"  # Art. 49(1)(b) necessary for a contract with the person
    legal_claims = "legal_claims"  # Art. 49(1)(e)
    none_needed = "none_needed"  # inside the EEA


class RequestType(StrEnum):
    """The rights requests a person can make."""

    access = "access"
    portability = "portability"
    rectify = "rectify"
    erase = "erase"
    restrict = "restrict"
    object = "object"
    withdraw_consent = "withdraw_consent"
    opt_out_of_sale = "opt_out_of_sale"
    opt_out_of_marketing = "opt_out_of_marketing"
    shine_the_light = "shine_the_light"
    close_account = "close_account"
    visibility = "visibility"  # change who may see one's data (PLU-3, PLV-11)


class Verification(StrEnum):
    """How sure we must be of a requester's identity before acting."""

    none = "none"
    email_code = "email_code"  # a one-time code sent to an address on file
    two_data_points = "two_data_points"  # CCPA "reasonable degree of certainty"
    three_data_points = "three_data_points"  # CCPA "reasonably high degree" + declaration
    signed_in = "signed_in"


class Channel(StrEnum):
    account_settings = "account_settings"
    email = "email"
    web_form = "web_form"
    postal_mail = "postal_mail"
    unsubscribe_link = "unsubscribe_link"
    browser_settings = "browser_settings"
    privacy_center = "privacy_center"
    gpc_signal = "gpc_signal"


class Trigger(StrEnum):
    """When a retention period starts running."""

    collected = "collected"  # fixed period from collection
    account_closed = "account_closed"  # kept while the account exists, then the period
    last_activity = "last_activity"  # inactivity
    session_end = "session_end"  # the visit ends (browser closed)
    purpose_fulfilled = "purpose_fulfilled"  # e.g. an invitation has been sent
    transaction = "transaction"  # from the transaction date (tax records)


class RetentionAction(StrEnum):
    delete = "delete"
    anonymize = "anonymize"
    truncate = "truncate"  # IP to /24 and /48, user agent to its family
    crypto_shred = "crypto_shred"
    aggregate = "aggregate"


class DataForm(StrEnum):
    """In what form a purpose or recipient uses the data."""

    identified = "identified"
    pseudonymized = "pseudonymized"
    anonymized = "anonymized"
    aggregate = "aggregate"


class CookieCategory(StrEnum):
    strictly_necessary = "strictly_necessary"
    functional = "functional"
    analytics = "analytics"
    advertising = "advertising"


class GpcEffect(StrEnum):
    none = "none"  # GPC does not apply (strictly necessary)
    opt_out = "opt_out"  # treated as an opt-out of sale and sharing (LAW-12)


class ChildAction(StrEnum):
    refuse = "refuse"  # sign-up refused, nothing stored (PUT-2)
    delete_account = "delete_account"  # data deleted and account closed (PLO-13, PLV-14)
    parental_consent = "parental_consent"


class Masking(StrEnum):
    null = "null"
    fixed = "fixed"
    hmac = "hmac"
    random = "random"
    delete = "delete"  # the whole row
    unlink = "unlink"  # break the link person -> shared content (PUT-13, PLU-11)
    keep = "keep"  # exempt: kept as is (a legal minimum applies)


# --------------------------------------------------------------------------- organization


class Contact(Model):
    name: str | None = None
    email: str | None = None
    url: str | None = None
    phone: str | None = None
    address: str | None = None

    @model_validator(mode="after")
    def _some_way_to_reach(self) -> "Contact":
        if not (self.email or self.url or self.phone or self.address):
            raise ValueError("a contact needs at least one of email, url, phone or address")
        return self


class Organization(Model):
    name: str = Field(description="The controller's name as the public knows it.")
    legal_name: str | None = None
    website: str | None = None
    controller: Contact
    contact: Contact = Field(description="Where people send privacy questions (PUT-14).")
    dpo: Contact | None = None
    eu_representative: Contact | None = None
    storage: list[str] = Field(
        default_factory=list,
        description="ISO 3166 alpha-2 countries where personal data is stored (PUT-12).",
    )
    transfers: str | None = Field(
        None,
        description="What the notice says about storing or using data outside the person's "
        "country, for a policy that cannot name the countries in storage (PLU-15).",
    )
    logo: str | None = None
    color: str | None = None


class ChangelogEntry(Model):
    version: VersionLabel
    date: date
    summary: str
    material: bool = False


Announcement = Literal["site_banner", "email", "privacy_center", "revision_date"]


class ChangePolicy(Model):
    """What happens when the policy changes (PUT-3, PLO-17, PLA-7)."""

    material: Literal["opt_in", "notice"] = Field(
        "notice",
        description="opt_in: a material change applies to earlier data only after the "
        "person accepts it (PUT-3). notice: it applies after notice.",
    )
    announce: list[Announcement] = Field(
        default_factory=lambda: list[Announcement](["privacy_center", "revision_date"])
    )
    archive: bool = Field(True, description="Earlier versions stay public (PLO-17).")
    notice_period: Period | None = None


# --------------------------------------------------------------------------- taxonomy use


class Subject(Model):
    name: str
    description: str | None = None
    fideslang: str | None = Field(
        None, description="The fideslang data subject this kind maps to (e.g. customer)."
    )
    account: bool = Field(True, description="Whether subjects of this kind have an account.")
    can: list[str] = Field(
        default_factory=list,
        description="Capabilities, e.g. publish; visitors cannot (PLU-16).",
    )


class Category(Model):
    name: str | None = None
    description: str | None = None
    sensitive: bool = False
    protection: Literal["encrypted", "hashed", "none"] | None = Field(
        None, description="How the value is protected at rest (PLV-9: hashed passwords)."
    )
    personal: bool = Field(
        True,
        description="False for data the policy treats as not identifying a person "
        "(PLO-6 'Additional Information', PLV-5 'Non-PII'); it still needs a purpose.",
    )
    class_: str | None = Field(
        None,
        alias="class",
        description="The policy's own class for this data (PLO-1: 'Personal Information').",
    )


class Right(Model):
    deadline: Period
    extension: Period | None = None
    verification: Verification = Verification.email_code
    channels: list[Channel] = Field(default_factory=lambda: [Channel.privacy_center])
    free: bool = True
    note: str | None = None


class Jurisdiction(Model):
    """A body of law and the rights it gives (LAW-1, LAW-11)."""

    name: str
    law: str = Field(description="gdpr, uk_gdpr, ccpa, pipeda, ... or 'general'.")
    regions: list[str] = Field(
        default_factory=list,
        description="ISO 3166 country or subdivision codes (US-CA); '*' for everywhere else.",
    )
    supervisory_authority: Contact | None = None
    acknowledge: Period | None = Field(
        None, description="Time to acknowledge a request (CCPA: 10 business days)."
    )
    rights: dict[RequestType, Right] = Field(default_factory=dict)
    gpc: GpcEffect = Field(GpcEffect.none, description="Effect of a Sec-GPC: 1 signal.")
    records_kept: Period | None = Field(
        None, description="How long request records are kept (LAW-13: 24 months)."
    )
    default_consent: ConsentMode = ConsentMode.opt_in
    minimum_age: int | None = Field(None, ge=0, le=21)
    non_discrimination: bool = False




class Purpose(Model):
    name: str
    use: str = Field(description="The fideslang data use key.")
    description: str | None = None
    basis: Basis
    categories: list[str]
    subjects: list[str] = Field(default_factory=list)
    essential: bool = Field(
        False, description="Cannot be opted out of (PLU-6, PLV-8). Not for consent purposes."
    )
    consent: dict[str, ConsentMode] = Field(
        default_factory=dict,
        description="Consent mode per jurisdiction key ('*' for the rest).",
    )
    objection: bool | None = Field(
        None,
        description="Whether the person may object (LAW-7). Default: true for "
        "legitimate_interest, false otherwise.",
    )
    jurisdictions: list[str] = Field(default_factory=list)
    form: DataForm = DataForm.identified
    condition: str | None = Field(
        None,
        description="A subject setting that must hold, e.g. 'setting:cache_allowed' (PLV-4).",
    )
    opt_out_effective: Period | None = Field(
        None, description="How long an opt-out may take to take effect (PLO-4, LAW-14)."
    )
    channels: list[str] = Field(
        default_factory=list, description="Delivery channels for communications purposes."
    )
    direct_marketing: bool = False
    sale: bool = False


class Visibility(Model):
    """Who may see a category, and whether the person controls it (PLU-3, PLV-11)."""

    categories: list[str]
    audiences: list[Literal["self", "members", "other_users", "public"]]
    default: Literal["self", "members", "other_users", "public"]
    settable: bool = True
    searchable: bool = False


class Recipient(Model):
    name: str
    role: Role
    description: str | None = None
    country: str | None = Field(None, description="ISO 3166 alpha-2 country.")
    address: str | None = Field(None, description="Postal address (Shine the Light, PLV-13).")
    transfer: Transfer | None = None
    categories: list[str] = Field(default_factory=list)
    purposes: list[str] = Field(default_factory=list)
    sale: bool = Field(False, description="A sale under CCPA.")
    share: bool = Field(False, description="Sharing for cross-context behavioural ads (CCPA).")
    form: DataForm = Field(DataForm.identified, description="aggregate: PUT-8, PLV-5.")
    min_group: int | None = Field(
        None, ge=2, description="k for aggregate-only exports: no smaller group is disclosed (null: 10)."
    )
    condition: (
        Literal[
            "always",
            "linked_account",
            "legal_demand",
            "business_transfer",
            "person_authorised",
            "emergency",
            # only when an upload matches a hash list (PUT-9 report to the designated body)
            "screening_match",
        ]
        | None
    ) = "always"
    opt_out: bool = Field(False, description="The person can opt out of this sharing (PUT-11).")
    bound_by_policy: bool = Field(
        False, description="Bound to this policy's purposes (PLU-8, PLU-10)."
    )
    notify_subject: Literal["always", "unless_prohibited", "never"] | None = Field(
        None, description="For legal demands: tell the person unless forbidden (PLU-9)."
    )
    direct_marketing: bool = Field(False, description="Receives data for its own marketing.")
    products: list[str] = Field(default_factory=list)
    privacy_policy: str | None = None
    webhook: str | None = Field(
        None, description="Name of the connector that notifies this recipient (LAW-5)."
    )


class Truncation(Model):
    ipv4_prefix: int = Field(24, ge=0, le=32)
    ipv6_prefix: int = Field(48, ge=0, le=128)
    user_agent: Literal["family", "drop"] | None = "family"


class LegalMinimum(Model):
    """A period the law makes us keep data, even against an erasure request (PLV-7)."""

    period: Period
    reason: str
    basis: Literal["legal_obligation", "legal_claims", "public_interest", "freedom_of_expression"]


class RetentionRule(Model):
    description: str | None = None
    categories: list[str] = Field(default_factory=list)
    collections: list[str] = Field(
        default_factory=list, description="datastore.collection names this rule covers."
    )
    trigger: Trigger
    period: Period | None = Field(None, description="None: ends at the trigger itself.")
    action: RetentionAction = RetentionAction.delete
    truncate: Truncation | None = None
    notice_before: Period | None = Field(
        None, description="Warn the person this long before deletion (PLO-9)."
    )
    legal_minimum: LegalMinimum | None = None

    @model_validator(mode="after")
    def _scope(self) -> "RetentionRule":
        if not self.categories and not self.collections:
            raise ValueError("a retention rule needs categories or collections")
        if self.action == RetentionAction.truncate and self.truncate is None:
            raise ValueError("action 'truncate' needs a 'truncate' block (ipv4_prefix ...)")
        return self


class Backups(Model):
    retention: Period
    description: str | None = None


class Exemption(Model):
    """A reason to keep data despite an erasure request (LAW-3, PLO-10)."""

    name: str
    # rights_of_others: a copy would expose other people's data (GDPR Art. 15(4), 20(4);
    # PLO-11), so it limits access and portability rather than erasure.
    basis: Literal[
        "legal_obligation",
        "legal_claims",
        "public_interest",
        "freedom_of_expression",
        "rights_of_others",
    ]
    suspends: list[RequestType] = Field(default_factory=lambda: [RequestType.erase])
    categories: list[str] = Field(default_factory=list)
    description: str | None = None


class Children(Model):
    minimum_age: dict[str, int] = Field(
        description="Minimum age per jurisdiction key ('*' for the rest)."
    )
    on_discovery: ChildAction = ChildAction.delete_account
    at_signup: ChildAction = ChildAction.refuse
    categories: list[str] = Field(
        default_factory=list,
        description="Categories never collected from a child (PUT-2); empty means all.",
    )
    report: list[Channel] = Field(default_factory=list)


class Cookie(Model):
    name: str
    category: CookieCategory
    provider: str = "first_party"
    lifetime: Period
    purpose: str | None = None
    description: str | None = None
    consent: dict[str, ConsentMode] = Field(default_factory=dict)
    gpc: GpcEffect = GpcEffect.none
    kind: Literal["cookie", "pixel", "local_storage", "sdk", "social_plugin"] = "cookie"
    email: bool = Field(False, description="Used in emails (PLV-10 open tracking).")


class Activity(Model):
    """A way data is collected, with mandatory and voluntary fields (PLV-1, PLU-2)."""

    name: str
    subjects: list[str] = Field(default_factory=list)
    mandatory: list[str] = Field(default_factory=list)
    voluntary: list[str] = Field(default_factory=list)
    purposes: list[str] = Field(default_factory=list)
    age_gate: bool = False
    source: Literal["subject", "observed", "inferred", "third_party", "other_users"] = "subject"


class Screening(Model):
    """Checking uploads against hash lists of known illegal content (PUT-9)."""

    algorithms: list[Literal["md5", "sha1", "sha256"]]
    lists: list[str] = Field(description="Names of the hash lists, e.g. NCMEC.")
    on_match: list[Literal["block", "quarantine", "report"]]
    report_to: str
    at: Literal["write", "read"] = "write"


class Breaches(Model):
    """How personal-data breaches are handled (LAW-10, PLU-14)."""

    authority_within: Period = Field(description="GDPR Art. 33: 72 hours.")
    notify_subjects: Literal["high_risk", "always", "never"] = "high_risk"
    monitoring: bool = True
    authority: str | None = None


class Security(Model):
    measure: str
    description: str | None = None


# --------------------------------------------------------------------------- datastores
# The fideslang Dataset shape, accepted unchanged (Fides users bring their datasets).


class DatasetReference(Model):
    dataset: str
    field: str
    direction: Literal["from", "to"] | None = None


class FieldMaskingOverride(Model):
    strategy: str
    configuration: dict[str, Any] | None = None

    @field_validator("strategy", mode="before")
    @classmethod
    def _bare_null(cls, value: Any) -> Any:
        # `strategy: null` is YAML's null; the masking strategy of that name is meant.
        return "null" if value is None else value


class FieldMeta(Model):
    references: list[DatasetReference] | None = None
    identity: str | None = None
    primary_key: bool | None = None
    data_type: str | None = None
    length: int | None = Field(None, gt=0)
    return_all_elements: bool | None = None
    read_only: bool | None = None
    custom_request_field: str | None = None
    masking_strategy_override: FieldMaskingOverride | None = None
    redact: Literal["name"] | None = None


class DatasetField(Model):
    name: str
    description: str | None = None
    data_categories: list[str] | None = None
    data_uses: list[str] | None = None
    data_purposes: list[str] | None = None
    data_subjects: list[str] | None = None
    fides_meta: FieldMeta | None = None
    fields: "list[DatasetField] | None" = None


class CollectionMasking(Model):
    strategy: Literal["delete"]


class CollectionMeta(Model):
    after: list[str] | None = None
    erase_after: list[str] | None = None
    skip_processing: bool | None = None
    masking_strategy_override: CollectionMasking | None = None
    partitioning: dict[str, Any] | list[dict[str, Any]] | None = None
    redact: Literal["name"] | None = None


class DatasetCollection(Model):
    name: str
    description: str | None = None
    data_categories: list[str] | None = None
    data_uses: list[str] | None = None
    data_purposes: list[str] | None = None
    data_subjects: list[str] | None = None
    fields: list[DatasetField]
    fides_meta: CollectionMeta | None = None


class DatasetMeta(Model):
    resource_id: str | None = None
    after: list[str] | None = None
    namespace: dict[str, Any] | None = None
    redact: Literal["name"] | None = None


class Dataset(Model):
    fides_key: str
    organization_fides_key: str = "default_organization"
    tags: list[str] | None = None
    name: str | None = None
    description: str | None = None
    meta: dict[str, Any] | None = None
    data_categories: list[str] | None = None
    data_uses: list[str] | None = None
    data_purposes: list[str] | None = None
    data_subjects: list[str] | None = None
    fides_meta: DatasetMeta | None = None
    collections: list[DatasetCollection]


# --------------------------------------------------------------------------- the policy


Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_\-]*$")]


class Policy(Model):
    fiduciary: Literal[1] = Field(1, description="Version of the policy language.")
    # Review notes, not promises: excluded from dumps, so the digest ignores them as it
    # ignores comments.
    todo: list[str] = Field(
        default_factory=list,
        exclude=True,
        description="Open questions of a draft, each reported as a warning (todo.open).",
    )
    organization: Organization
    version: VersionLabel
    effective: date
    changelog: list[ChangelogEntry] = Field(default_factory=list)
    changes: ChangePolicy = Field(default_factory=ChangePolicy)
    jurisdictions: dict[str, Jurisdiction]
    subjects: dict[str, Subject]
    categories: dict[str, Category | None]
    purposes: dict[str, Purpose]
    recipients: dict[str, Recipient] = Field(default_factory=dict)
    retention: dict[str, RetentionRule] = Field(default_factory=dict)
    backups: Backups | None = None
    exemptions: dict[str, Exemption] = Field(default_factory=dict)
    children: Children | None = None
    cookies: list[Cookie] = Field(default_factory=list)
    visibility: list[Visibility] = Field(default_factory=list)
    activities: dict[str, Activity] = Field(default_factory=dict)
    screening: Screening | None = None
    security: list[Security] = Field(default_factory=list)
    breaches: Breaches | None = None
    datastores: list[Dataset] = Field(default_factory=list)

    def category_info(self, key: str) -> "Category":
        return self.categories.get(key) or Category()
