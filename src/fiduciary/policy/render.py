"""The public privacy notice, rendered from the compiled policy.

All the wording lives here, as plain functions over a ``CompiledPolicy``; the templates
(``templates/notice.html`` and ``templates/notice.md``) only lay the words out. So the HTML
and the Markdown notice say exactly the same thing, and a promise that the policy
expresses cannot be stated in one and forgotten in the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import (
    Basis,
    Channel,
    ChildAction,
    ConsentMode,
    Contact,
    Cookie,
    CookieCategory,
    DataForm,
    GpcEffect,
    Jurisdiction,
    RequestType,
    RetentionAction,
    RetentionRule,
    Role,
    Transfer,
    Trigger,
    Verification,
)
from fiduciary.policy.period import Period
from fiduciary.policy.taxonomy import is_within, label

# --------------------------------------------------------------------------- words


def period_words(p: Period | None) -> str:
    """'1 month', '15 business days'; a session lasts 'until you close your browser'."""
    if p is None:
        return ""
    if p.is_session:
        return "until you close your browser"
    if all(n == 0 for n, _ in p.parts):
        return "immediately"
    return str(p)


def format_date(d: date) -> str:
    return f"{d.day} {d:%B %Y}"


BASIS_WORDS: dict[Basis, str] = {
    Basis.consent: "Your consent",
    Basis.contract: "Necessary to provide the service you signed up for (our contract with you)",
    Basis.legal_obligation: "Necessary to comply with a legal obligation",
    Basis.vital_interest: "Necessary to protect someone's life or physical safety",
    Basis.public_task: "Necessary for a task carried out in the public interest",
    Basis.legitimate_interest: "Our legitimate interests, balanced against your rights",
}

BASIS_SHORT: dict[Basis, str] = {
    Basis.consent: "Consent",
    Basis.contract: "Contract",
    Basis.legal_obligation: "Legal obligation",
    Basis.vital_interest: "Vital interests",
    Basis.public_task: "Public task",
    Basis.legitimate_interest: "Legitimate interests",
}

CONSENT_SHORT: dict[ConsentMode, str] = {
    ConsentMode.opt_in: "only with your consent",
    ConsentMode.opt_out: "on unless you opt out",
    ConsentMode.notice_only: "no choice",
}

CONSENT_WORDS: dict[ConsentMode, str] = {
    ConsentMode.opt_in: "only with your consent; you can withdraw it at any time, as easily as you gave it",
    ConsentMode.opt_out: "on unless you say no; you can switch it off at any time",
    ConsentMode.notice_only: "no separate choice is offered",
}

ROLE_WORDS: dict[Role, tuple[str, str]] = {
    Role.processor: (
        "Service providers",
        "They process data on our behalf, only on our instructions and under contract.",
    ),
    Role.affiliate: ("Companies in our group", "They are part of the same group as we are."),
    Role.third_party: (
        "Third parties",
        "They receive data for the purposes stated below and are responsible for it.",
    ),
    Role.advertiser: ("Advertisers", "They receive data to show or measure advertising."),
    Role.other_users: (
        "Other users",
        "People who use the service can see what you share with them.",
    ),
    Role.public: ("The public", "Anyone, including people without an account."),
    Role.authority: (
        "Authorities and courts",
        "Public bodies that may require data from us by law.",
    ),
    Role.successor: (
        "A buyer or successor of our business",
        "If our business is sold, merged or goes bankrupt, data may pass to the new owner.",
    ),
}

TRANSFER_WORDS: dict[Transfer, str] = {
    Transfer.adequacy: "an EU adequacy decision covers that country",
    Transfer.dpf: "the recipient is certified under the EU–US Data Privacy Framework",
    Transfer.scc: "the transfer is protected by the EU standard contractual clauses",
    Transfer.bcr: "the transfer is protected by binding corporate rules approved by a data "
    "protection authority",
    Transfer.consent: "the transfer is made only with your explicit consent",
    Transfer.contract: "the transfer is necessary to perform our contract with you",
    Transfer.legal_claims: "the transfer is necessary to establish, exercise or defend legal claims",
    Transfer.none_needed: "the data stays in the European Economic Area",
}

CONDITION_WORDS: dict[str, str] = {
    "linked_account": "Only after you link your account with them; unlinking stops the flow.",
    "legal_demand": "Only when the law requires it, for example a court order or another "
    "binding legal demand.",
    "business_transfer": "Only in a merger, acquisition, reorganisation, bankruptcy or sale "
    "of all or part of our business.",
    "person_authorised": "Only when you have authorised it.",
    "emergency": "Only in an emergency, to protect someone's life or safety.",
    "screening_match": "Only when an uploaded file matches a list of known illegal content.",
}

NOTIFY_WORDS: dict[str, str] = {
    "always": "We will tell you about any such demand.",
    "unless_prohibited": "We will tell you about any such demand, unless the law, a court "
    "order or an emergency prevents us.",
    "never": "We may not be able to tell you about such a demand.",
}

FORM_WORDS: dict[DataForm, str] = {
    DataForm.identified: "",
    DataForm.pseudonymized: "Only in pseudonymised form: your name and contact details are "
    "replaced by a code.",
    DataForm.anonymized: "Only in anonymised form, with no link to you.",
    DataForm.aggregate: "Only as aggregate statistics that do not identify you.",
}

REQUEST_WORDS: dict[RequestType, tuple[str, str]] = {
    RequestType.access: (
        "Access",
        "Get a copy of your data, with what we use it for, where it came from, who received "
        "it, how long we keep it and how transfers are protected.",
    ),
    RequestType.portability: (
        "Portability",
        "Receive the data you gave us in a structured, machine-readable format, or have it "
        "sent to another company.",
    ),
    RequestType.rectify: ("Correction", "Have inaccurate or incomplete data corrected."),
    RequestType.erase: (
        "Erasure",
        "Have your data deleted, unless the law requires us to keep it.",
    ),
    RequestType.restrict: (
        "Restriction",
        "Have us stop using your data, except to store it or for legal claims.",
    ),
    RequestType.object: (
        "Objection",
        "Object to uses based on our legitimate interests; for direct marketing we always stop.",
    ),
    RequestType.withdraw_consent: (
        "Withdraw consent",
        "Withdraw a consent you gave, at any time and as easily as you gave it. Processing "
        "before the withdrawal stays lawful.",
    ),
    RequestType.opt_out_of_sale: (
        "Opt out of sale and sharing",
        "Tell us not to sell your personal information or share it for cross-context "
        "behavioural advertising.",
    ),
    RequestType.opt_out_of_marketing: ("Opt out of marketing", "Stop marketing messages."),
    RequestType.shine_the_light: (
        "Shine the Light",
        "Ask which third parties received your personal information for their own direct "
        "marketing, with their names and addresses and examples of their products.",
    ),
    RequestType.close_account: ("Close your account", "Close your account with us."),
    RequestType.visibility: ("Visibility", "Change who can see your information."),
}

# California names some rights differently; people look for these words.
CCPA_REQUEST_NAMES: dict[RequestType, str] = {
    RequestType.access: "Know and access",
    RequestType.erase: "Delete",
    RequestType.rectify: "Correct",
}

VERIFICATION_WORDS: dict[Verification, str] = {
    Verification.none: "No identity check is needed.",
    Verification.email_code: "We send a one-time code to an email address we have on file.",
    Verification.two_data_points: "We match two pieces of information you give us with what we hold.",
    Verification.three_data_points: "We match three pieces of information you give us with "
    "what we hold, and ask you to sign a declaration.",
    Verification.signed_in: "Sign in to your account.",
}

TRIGGER_SHORT: dict[Trigger, str] = {
    Trigger.collected: "{p} from collection",
    Trigger.account_closed: "while your account exists, then {p}",
    Trigger.last_activity: "until {p} without activity",
    Trigger.session_end: "{p} after your visit",
    Trigger.purpose_fulfilled: "{p} after its purpose is fulfilled",
    Trigger.transaction: "{p} from the transaction",
}

ACTION_WORDS: dict[RetentionAction, str] = {
    RetentionAction.delete: "deleted",
    RetentionAction.anonymize: "anonymised so that it no longer identifies you",
    RetentionAction.truncate: "shortened",
    RetentionAction.crypto_shred: "made permanently unreadable by destroying its encryption key",
    RetentionAction.aggregate: "reduced to aggregate statistics",
}

LEGAL_BASIS_WORDS: dict[str, str] = {
    "legal_obligation": "a legal obligation",
    "legal_claims": "establishing, exercising or defending legal claims",
    "public_interest": "reasons of public interest",
    "freedom_of_expression": "freedom of expression and information",
    "rights_of_others": "protecting the rights and freedoms of other people",
}


def words_for(table: Mapping[Any, str], key: Any) -> str:
    """The words for ``key``, or the key itself made readable: the policy language grows,
    and a value added there must still show up in the notice rather than crash it."""
    found = table.get(key)
    if found is not None:
        return found
    return str(getattr(key, "value", key)).replace("_", " ")


CHILD_ACTION_WORDS: dict[ChildAction, str] = {
    ChildAction.refuse: "we refuse the sign-up and store nothing about the child",
    ChildAction.delete_account: "we delete the child's data and close the account",
    ChildAction.parental_consent: "we ask for the consent of a parent or guardian",
}

COOKIE_CATEGORY_WORDS: dict[CookieCategory, tuple[str, str]] = {
    CookieCategory.strictly_necessary: (
        "Strictly necessary",
        "Needed for the site to work, for example to keep you signed in. They cannot be "
        "switched off in our systems.",
    ),
    CookieCategory.functional: (
        "Functional",
        "Remember your choices and provide extra features.",
    ),
    CookieCategory.analytics: (
        "Analytics",
        "Help us understand how the site is used, so we can improve it.",
    ),
    CookieCategory.advertising: (
        "Advertising",
        "Used to show and measure advertising, on our site and elsewhere.",
    ),
}

COOKIE_CONSENT_WORDS: dict[ConsentMode, str] = {
    ConsentMode.opt_in: "Only after you agree",
    ConsentMode.opt_out: "Set unless you refuse",
    ConsentMode.notice_only: "No choice offered",
}

KIND_WORDS: dict[str, str] = {
    "cookie": "Cookie",
    "pixel": "Pixel tag",
    "local_storage": "Local storage",
    "sdk": "Software kit",
    "social_plugin": "Social button",
}

ANNOUNCE_WORDS: dict[str, str] = {
    "site_banner": "a prominent notice on our website",
    "email": "an email to you",
    "privacy_center": "a notice in our privacy center",
    "revision_date": "a new revision date at the top of this notice",
}

AUDIENCE_WORDS: dict[str, str] = {
    "self": "only you",
    "members": "signed-in members",
    "other_users": "other users",
    "public": "everyone, including visitors without an account",
}

SOURCE_WORDS: dict[str, str] = {
    "subject": "you give it to us",
    "observed": "we record it when you use the service",
    "inferred": "we infer it from other data",
    "third_party": "we receive it from third parties",
    "other_users": "other users give it to us",
}

ALGORITHM_NAMES: dict[str, str] = {"md5": "MD5", "sha1": "SHA-1", "sha256": "SHA-256"}

COUNTRIES: dict[str, str] = {
    "AT": "Austria", "BE": "Belgium", "BG": "Bulgaria", "HR": "Croatia", "CY": "Cyprus",
    "CZ": "Czechia", "DK": "Denmark", "EE": "Estonia", "FI": "Finland", "FR": "France",
    "DE": "Germany", "GR": "Greece", "HU": "Hungary", "IE": "Ireland", "IT": "Italy",
    "LV": "Latvia", "LT": "Lithuania", "LU": "Luxembourg", "MT": "Malta",
    "NL": "the Netherlands", "PL": "Poland", "PT": "Portugal", "RO": "Romania",
    "SK": "Slovakia", "SI": "Slovenia", "ES": "Spain", "SE": "Sweden", "IS": "Iceland",
    "LI": "Liechtenstein", "NO": "Norway", "CH": "Switzerland", "GB": "the United Kingdom",
    "UK": "the United Kingdom", "US": "the United States", "CA": "Canada", "JP": "Japan",
    "KR": "South Korea", "IL": "Israel", "NZ": "New Zealand", "AR": "Argentina",
    "UY": "Uruguay", "AU": "Australia", "IN": "India", "SG": "Singapore", "BR": "Brazil",
    "CN": "China", "HK": "Hong Kong", "MX": "Mexico", "ZA": "South Africa", "RU": "Russia",
    "UA": "Ukraine", "TR": "Türkiye", "AE": "the United Arab Emirates", "PH": "the Philippines",
    "EU": "the European Union", "EEA": "the European Economic Area", "US-CA": "California",
    "*": "everywhere else",
}  # fmt: skip


def country_name(code: str | None) -> str:
    if not code:
        return ""
    return COUNTRIES.get(code.upper(), code.upper())


def _sentence_case(name: str) -> str:
    """fideslang labels are Title Case ('User Contact Email'); a notice reads better in
    sentence case, keeping acronyms ('IP Address' -> 'IP address')."""
    if name.startswith("User ") and len(name) > 5:
        name = name[5:]
    words = name.split(" ")
    out = [words[0]]
    for w in words[1:]:
        out.append(w if w.isupper() and len(w) > 1 else w.lower())
    return " ".join(out)


def category_name(cp: CompiledPolicy, key: str) -> str:
    """The policy's own name for a category, else the fideslang label in plain words."""
    info = cp.policy.categories.get(key)
    if info and info.name:
        return info.name
    if key == "user":
        return "Any personal data we hold"  # the taxonomy root says only "User Data"
    return _sentence_case(label(key, "category"))


def category_description(cp: CompiledPolicy, key: str) -> str:
    info = cp.policy.categories.get(key)
    if info and info.description:
        return info.description
    from fiduciary.policy.taxonomy import taxonomy

    entry = taxonomy().categories.get(key)
    return entry.description if entry else ""


def subject_name(cp: CompiledPolicy, key: str) -> str:
    s = cp.policy.subjects.get(key)
    return s.name if s else key


def purpose_name(cp: CompiledPolicy, key: str) -> str:
    p = cp.purposes.get(key)
    return p.name if p else key


def humanise(text: str) -> str:
    """An identifier written where words were expected ('hashed_passwords', 'tls') made
    readable; text with spaces or capitals is left as written."""
    if " " in text or text != text.lower():
        return text
    if "_" not in text and len(text) <= 5:
        return text.upper()  # an acronym: tls, https
    words = text.replace("_", " ")
    return words[0].upper() + words[1:]


def inline_name(text: str) -> str:
    """A name that starts with 'The', fit for the middle of a sentence."""
    return re.sub(r"^The ", "the ", text)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def join_words(items: Iterable[str], last: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    xs = [x for x in items if x]
    if not xs:
        return ""
    if len(xs) == 1:
        return xs[0]
    return f"{', '.join(xs[:-1])} {last} {xs[-1]}"


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        if x:
            seen.setdefault(x, None)
    return list(seen)


def condition_words(condition: str | None) -> str:
    """A purpose's condition in words: 'setting:cache_allowed' -> a sentence."""
    if not condition:
        return ""
    kind, _, name = condition.partition(":")
    if kind == "setting" and name:
        return f"Only when your setting “{name.replace('_', ' ')}” allows it."
    return f"Only when this condition holds: {condition}."


def channel_words(cp: CompiledPolicy, channel: Channel | str) -> str:
    org = cp.policy.organization
    email = org.contact.email or org.controller.email
    address = org.contact.address or org.controller.address
    words = {
        Channel.account_settings: "your account settings",
        Channel.email: f"email to {email}" if email else "email",
        Channel.web_form: "our web form",
        Channel.postal_mail: f"post to {address}" if address else "post",
        Channel.unsubscribe_link: "the unsubscribe link in every message",
        Channel.browser_settings: "your browser settings",
        Channel.privacy_center: "our privacy center",
        Channel.gpc_signal: "a Global Privacy Control signal from your browser",
    }
    try:
        return words[Channel(channel)]
    except ValueError:
        return str(channel).replace("_", " ")


def region_words(regions: Sequence[str]) -> str:
    return join_words([country_name(r) for r in regions])


# --------------------------------------------------------------------------- relations


def recipients_for_purpose(cp: CompiledPolicy, purpose: str, *, general: bool = False) -> list[str]:
    """Recipient keys that receive data for ``purpose``.

    With ``general``, also recipients named for no purpose at all (authorities, a buyer
    of the business) whose categories touch the purpose's data: they may receive it
    whatever the purpose was.
    """
    out = [k for k, r in cp.recipients.items() if purpose in r.purposes]
    if general:
        cats = cp.purposes[purpose].categories
        for k, r in cp.recipients.items():
            if r.purposes or k in out:
                continue
            if not r.categories or r.categories & cats:
                out.append(k)
    return out


def retention_rules_for(cp: CompiledPolicy, categories: Iterable[str]) -> list[str]:
    keys: list[str] = []
    for c in categories:
        keys.extend(cp.retention_by_category.get(c, ()))
    order = list(cp.retention)
    return sorted(set(keys), key=order.index)


def rule_categories(cp: CompiledPolicy, rule: RetentionRule) -> list[str]:
    """The categories a retention rule covers, as written plus its collections' data."""
    keys = list(rule.categories)
    for name in rule.collections:
        coll = cp.collections.get(name)
        if coll:
            keys.extend(sorted(coll.categories))
    return _unique(keys)


def retention_short(rule: RetentionRule) -> str:
    """A few words for the summary table: '90 days from collection'."""
    if rule.period is None:
        base = {
            Trigger.collected: "not kept after use",
            Trigger.account_closed: "while your account exists",
            Trigger.last_activity: "while you are active",
            Trigger.session_end: "until you close your browser",
            Trigger.purpose_fulfilled: "until its purpose is fulfilled",
            Trigger.transaction: "until the transaction is complete",
        }[rule.trigger]
    elif rule.period.is_session:
        base = "until you close your browser"
    else:
        base = TRIGGER_SHORT[rule.trigger].format(p=str(rule.period))
    if rule.action not in (RetentionAction.delete, RetentionAction.crypto_shred):
        base += f", then {ACTION_WORDS[rule.action].split(' so ')[0]}"
    return base[0].upper() + base[1:]


def retention_sentence(rule: RetentionRule) -> str:
    """The whole rule in one plain sentence."""
    action = ACTION_WORDS[rule.action]
    p = rule.period
    if p is not None and p.is_session:
        return f"Kept until you close your browser, then {action}."
    ps = str(p) if p else ""
    t = rule.trigger
    if t == Trigger.collected:
        text = (
            f"Kept for {ps} after we collect it, then {action}."
            if p
            else (f"Not kept after use: {action} straight away.")
        )
    elif t == Trigger.account_closed:
        text = (
            f"Kept while your account exists and for {ps} after you close it, then {action}."
            if p
            else f"Kept while your account exists, then {action} when you close it."
        )
    elif t == Trigger.last_activity:
        text = (
            f"Kept while you use the service; after {ps} without any activity it is {action}."
            if p
            else f"Kept while you use the service, then {action}."
        )
    elif t == Trigger.session_end:
        text = (
            f"Kept for {ps} after your visit ends, then {action}."
            if p
            else f"Kept until you close your browser, then {action}."
        )
    elif t == Trigger.purpose_fulfilled:
        text = (
            f"Kept for {ps} after its purpose has been fulfilled, then {action}."
            if p
            else f"Kept only until its purpose has been fulfilled, then {action}."
        )
    else:
        text = (
            f"Kept for {ps} from the date of the transaction, then {action}."
            if p
            else f"Kept until the transaction is complete, then {action}."
        )
    return text


def truncation_words(rule: RetentionRule) -> str:
    tr = rule.truncate
    if tr is None:
        return ""
    text = (
        "IP addresses are shortened so that they point to a network rather than to your "
        f"device (IPv4 addresses to their first {tr.ipv4_prefix} bits, IPv6 addresses to "
        f"their first {tr.ipv6_prefix} bits)"
    )
    if tr.user_agent == "family":
        text += ", and the browser description is reduced to the browser's name"
    elif tr.user_agent == "drop":
        text += ", and the browser description is removed"
    return text + "."


def consent_lines(
    cp: CompiledPolicy, modes: dict[str, ConsentMode], words: dict[ConsentMode, str]
) -> list[tuple[str, str]]:
    """(where, words) pairs, jurisdictions with the same mode grouped; one pair with an
    empty 'where' when the mode is the same everywhere."""
    groups: dict[ConsentMode, list[str]] = {}
    keys = list(cp.jurisdictions) or ["*"]
    for jk in keys:
        mode = modes.get(jk) or modes.get("*")
        if mode is None:
            continue
        groups.setdefault(mode, []).append(jk)
    if len(groups) == 1:
        mode = next(iter(groups))
        return [("", words[mode])]
    return [
        (join_words(_jurisdiction_label(cp, jk) for jk in jks), words[mode]) for mode, jks in groups.items()
    ]


def _jurisdiction_label(cp: CompiledPolicy, key: str) -> str:
    j = cp.jurisdictions.get(key)
    return j.name if j else "everywhere else"


def cookie_consent_modes(cp: CompiledPolicy, cookie: Cookie) -> dict[str, ConsentMode]:
    """The consent mode of a cookie in each jurisdiction: as written, else its purpose's,
    else none for strictly necessary cookies, else the jurisdiction's default."""
    modes: dict[str, ConsentMode] = {}
    for jk, j in [*cp.jurisdictions.items(), ("*", None)]:
        explicit = cookie.consent.get(jk) or cookie.consent.get("*")
        if explicit:
            modes[jk] = explicit
        elif cookie.category == CookieCategory.strictly_necessary:
            modes[jk] = ConsentMode.notice_only
        elif cookie.purpose and cookie.purpose in cp.purposes:
            modes[jk] = cp.purposes[cookie.purpose].consent_mode(jk)
        else:
            modes[jk] = j.default_consent if isinstance(j, Jurisdiction) else ConsentMode.opt_in
    return modes


# --------------------------------------------------------------------------- view model


@dataclass(frozen=True)
class ArchivedVersion:
    """An earlier version of the notice, for the archive list (PLO-17)."""

    version: str
    url: str
    effective: date | None = None


@dataclass(frozen=True)
class Item:
    """A labelled fact: 'Legal basis' -> 'Your consent'."""

    label: str
    text: str


@dataclass
class PurposeView:
    key: str
    name: str
    use: str
    description: str
    basis: str
    basis_short: str
    categories: list[str]
    subjects: list[str]
    recipients: list[str]
    retention: list[str]
    choices: list[str]

    @property
    def retention_summary(self) -> list[str]:
        """At most two periods for the summary table; the rest is one click away."""
        if len(self.retention) <= 2:
            return self.retention
        return [*self.retention[:2], f"{len(self.retention) - 2} more"]

    choices_short: list[str]
    details: list[Item]


@dataclass
class RecipientView:
    key: str
    name: str
    description: str
    details: list[Item]


@dataclass
class RoleView:
    role: str
    title: str
    intro: str
    recipients: list[RecipientView]


@dataclass
class RuleView:
    key: str
    data: list[str]
    description: str
    sentence: str
    short: str
    details: list[str]
    period: str


@dataclass
class RightView:
    name: str
    meaning: str
    channels: str
    deadline: str
    verification: str
    cost: str
    note: str


@dataclass
class JurisdictionView:
    key: str
    name: str
    regions: str
    rights: list[RightView]
    points: list[str]
    authority: Contact | None


@dataclass
class CookieView:
    name: str
    kind: str
    provider: str
    lifetime: str
    purpose: str
    consent: list[tuple[str, str]]
    gpc: str

    @property
    def consent_text(self) -> str:
        return "; ".join(f"{w}: {t}" if w else t for w, t in self.consent)


@dataclass
class CookieGroup:
    key: str
    title: str
    intro: str
    cookies: list[CookieView]


@dataclass
class CategoryView:
    key: str
    name: str
    description: str
    notes: list[str]
    purposes: list[str]


@dataclass
class CategoryGroup:
    title: str
    categories: list[CategoryView]


@dataclass
class Section:
    id: str
    title: str


@dataclass
class Notice:
    """Everything the templates show, already in words."""

    org_name: str
    title: str
    version: str
    effective: str
    digest: str
    accent: str
    accent_tint: str
    logo: str | None
    sections: list[Section] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def _purpose_view(cp: CompiledPolicy, key: str) -> PurposeView:
    p = cp.purposes[key]
    src = p.source
    choices: list[str] = []
    details: list[Item] = []
    modes = {p.consent_mode(j) for j in cp.jurisdictions} or {p.consent_mode("*")}
    if p.essential:
        choices.append("Essential to the service: it cannot be switched off.")
    else:
        if modes == {ConsentMode.notice_only}:
            if p.basis == Basis.legal_obligation:
                choices.append("Required by law: no choice applies.")
        else:
            for where, words in consent_lines(cp, dict(p.consent), CONSENT_WORDS):
                choices.append(f"{where}: {words}." if where else f"{words[0].upper()}{words[1:]}.")
    if p.objection:
        if p.direct_marketing:
            choices.append("You can object at any time, and we will stop without asking why.")
        else:
            choices.append(
                "You can object on grounds relating to your situation; we will then stop "
                "unless we have compelling legitimate grounds."
            )
    if src.opt_out_effective:
        choices.append(f"When you opt out, it takes effect within {period_words(src.opt_out_effective)}.")
    if not choices:
        choices.append("No separate choice is offered.")

    details.append(Item("Legal basis", BASIS_WORDS[p.basis]))
    short: list[str] = []
    if p.essential:
        short.append("Required for the service")
    elif modes != {ConsentMode.notice_only}:
        short.extend(
            f"{where}: {words}" if where else words[0].upper() + words[1:]
            for where, words in consent_lines(cp, dict(p.consent), CONSENT_SHORT)
        )
    if p.objection:
        short.append("You can object")
    if not short:
        short.append("Required by law" if p.basis == Basis.legal_obligation else "No choice")
    if src.channels:
        details.append(Item("Sent by", join_words(src.channels)))
    if p.condition:
        details.append(Item("Condition", condition_words(p.condition)))
    if FORM_WORDS[p.form]:
        details.append(Item("Form", FORM_WORDS[p.form]))
    if src.jurisdictions:
        details.append(Item("Applies to", join_words(_jurisdiction_label(cp, j) for j in src.jurisdictions)))
    if p.sale:
        details.append(
            Item(
                "Sale",
                "This use counts as a sale of personal information under California law; you can opt out.",
            )
        )
    subjects = [subject_name(cp, s) for s in sorted(p.subjects)] or [
        s.name for s in cp.policy.subjects.values()
    ]
    rule_keys = retention_rules_for(cp, p.categories)
    # Most relevant first: the rules covering most of this purpose's data.
    coverage = {r: len(set(rule_categories(cp, cp.retention[r])) & p.categories) for r in rule_keys}
    by_coverage = sorted(rule_keys, key=lambda r: -coverage[r])
    return PurposeView(
        key=key,
        name=p.name,
        use=_sentence_case(label(p.use, "use")),
        description=src.description or "",
        basis=BASIS_WORDS[p.basis],
        basis_short=BASIS_SHORT[p.basis],
        categories=[category_name(cp, c) for c in p.declared_categories],
        subjects=subjects,
        recipients=[cp.recipients[r].source.name for r in recipients_for_purpose(cp, key)],
        retention=_unique(retention_short(cp.retention[r]) for r in by_coverage),
        choices=choices,
        choices_short=short,
        details=details,
    )


def _recipient_view(cp: CompiledPolicy, key: str) -> RecipientView:
    cr = cp.recipients[key]
    r = cr.source
    d: list[Item] = []
    cats = [category_name(cp, c) for c in r.categories]
    if cats:
        d.append(Item("What they receive", join_words(cats)))
    purposes = [purpose_name(cp, p) for p in r.purposes]
    if purposes:
        d.append(Item("Why", join_words(purposes)))
    if r.country:
        where = country_name(r.country)
        where = where[0].upper() + where[1:]
        if r.transfer:
            where += f"; {TRANSFER_WORDS[r.transfer]}"
        elif cr.outside_eea:
            where += "; outside the European Economic Area"
        d.append(Item("Where", where + "."))
    if r.condition and r.condition != "always":
        d.append(Item("When", words_for(CONDITION_WORDS, r.condition)))
    if r.notify_subject:
        d.append(Item("Telling you", words_for(NOTIFY_WORDS, r.notify_subject)))
    if FORM_WORDS[r.form]:
        text = FORM_WORDS[r.form]
        if r.min_group:
            text = text[:-1] + f", over groups of at least {r.min_group} people."
        d.append(Item("Form", text))
    if r.bound_by_policy:
        d.append(
            Item(
                "Bound by this notice", "They may use your data only for the purposes stated in this notice."
            )
        )
    if r.opt_out:
        d.append(Item("Your choice", "You can opt out of this sharing at any time."))
    if r.direct_marketing:
        text = "They may use the data for their own direct marketing."
        if r.products:
            text += f" Examples of their products: {join_words(r.products)}."
        d.append(Item("Their own marketing", text))
    elif r.products:
        d.append(Item("Their products", join_words(r.products)))
    if r.sale:
        d.append(
            Item("Sale", "Under California law this is a sale of personal information; you can opt out.")
        )
    if r.share:
        d.append(
            Item(
                "Sharing for advertising",
                "Under California law this is sharing for "
                "cross-context behavioural advertising; you can opt out.",
            )
        )
    if r.address:
        d.append(Item("Address", r.address))
    if r.privacy_policy:
        d.append(Item("Their privacy notice", r.privacy_policy))
    return RecipientView(key=key, name=r.name, description=r.description or "", details=d)


def _rule_view(cp: CompiledPolicy, key: str) -> RuleView:
    rule = cp.retention[key]
    details: list[str] = []
    if rule.truncate:
        details.append(truncation_words(rule))
    if rule.notice_before:
        details.append(
            f"We will contact you {period_words(rule.notice_before)} before we delete it, so "
            "you can keep your account."
        )
    if rule.legal_minimum:
        lm = rule.legal_minimum
        details.append(
            f"Where the law requires it, we keep it for at least {period_words(lm.period)} "
            f"({lm.reason.rstrip('. ')}; {words_for(LEGAL_BASIS_WORDS, lm.basis)}), even if "
            "you ask us to delete it."
        )
    data = [category_name(cp, c) for c in rule_categories(cp, rule)]
    if not data:
        # A rule over collections that hold no declared category still deserves a name.
        data = [f"Records in {c.rsplit('.', 1)[-1].replace('_', ' ')}" for c in rule.collections]
    return RuleView(
        key=key,
        data=data,
        description=rule.description or "",
        sentence=retention_sentence(rule),
        short=retention_short(rule),
        details=details,
        period=period_words(rule.period),
    )


def _jurisdiction_view(cp: CompiledPolicy, key: str) -> JurisdictionView:
    j = cp.jurisdictions[key]
    rights: list[RightView] = []
    for rt in RequestType:
        right = j.rights.get(rt)
        if right is None:
            continue
        name, meaning = REQUEST_WORDS[rt]
        if j.law == "ccpa":
            name = CCPA_REQUEST_NAMES.get(rt, name)
        deadline = period_words(right.deadline)
        if right.extension:
            deadline += f"; extendable once by {period_words(right.extension)}, and we tell you why"
        rights.append(
            RightView(
                name=name,
                meaning=meaning,
                channels=join_words((channel_words(cp, c) for c in right.channels), "or"),
                deadline=deadline,
                verification=VERIFICATION_WORDS[right.verification],
                cost="Free" if right.free else "A reasonable fee may apply",
                note=right.note or "",
            )
        )
    points: list[str] = []
    if j.acknowledge:
        points.append(f"We confirm that we have received your request within {period_words(j.acknowledge)}.")
    if rights and all(r.cost == "Free" for r in rights):
        points.append("Using your rights is free of charge.")
    if j.gpc == GpcEffect.opt_out:
        points.append(
            "We honour Global Privacy Control (GPC): when your browser sends the GPC signal, "
            "we treat it as a request to opt out of the sale and sharing of your personal "
            "information, effective at once, without you having to sign in."
        )
    if j.non_discrimination:
        points.append(
            "We will not discriminate against you for using your rights: no different prices, "
            "quality or service."
        )
    if j.records_kept:
        points.append(
            f"We keep a record of each request and our response for {period_words(j.records_kept)}."
        )
    if j.law in ("gdpr", "uk_gdpr"):
        points.append("We ask for proof of identity only when we have reasonable doubts about who is asking.")
    return JurisdictionView(
        key=key,
        name=j.name,
        regions=(
            "Applies to everyone not covered above."
            if list(j.regions) == ["*"]
            else f"Applies to people in {region_words(j.regions)}."
            if j.regions
            else ""
        ),
        rights=rights,
        points=points,
        authority=(
            j.supervisory_authority.model_copy(
                update={"name": inline_name(j.supervisory_authority.name or "")}
            )
            if j.supervisory_authority
            else None
        ),
    )


def _identifying(cp: CompiledPolicy, key: str) -> bool:
    """Whether a category counts as identifying: as declared; for an undeclared parent,
    whether any declared category under it does."""
    info = cp.policy.categories.get(key)
    if key in cp.policy.categories:
        return info.personal if info else True
    below = [cp.policy.category_info(d) for d in cp.policy.categories if is_within(d, key)]
    return any(b.personal for b in below) if below else True


def _sale_statements(cp: CompiledPolicy) -> list[str]:
    """What the notice says about selling and sharing (CCPA), from the recipients' flags.
    Where everything sold is data the policy marks as not identifying (PLO-6), the notice
    says so, rather than a bare "we sell"."""
    gpc = any(j.gpc == GpcEffect.opt_out for j in cp.jurisdictions.values())
    opt_out = " You can opt out of this at any time" + (
        ", also with a Global Privacy Control signal from your browser." if gpc else "."
    )
    out: list[str] = []
    for flag, verb, tail in (
        ("sale", "sell", ""),
        ("share", "share", " for cross-context behavioural advertising"),
    ):
        recipients = [r.source for r in cp.recipients.values() if getattr(r.source, flag)]
        purposes = [p for p in cp.purposes.values() if flag == "sale" and p.sale]
        keys = _unique(
            [c for r in recipients for c in r.categories]
            + [c for p in purposes for c in p.declared_categories]
        )
        if not recipients and not purposes:
            out.append(
                "We do not sell your personal data, and we do not rent it out."
                if flag == "sale"
                else f"We do not share your personal data{tail}."
            )
            continue
        whom = join_words(r.name for r in recipients) or "third parties"
        what = join_words(category_name(cp, c) for c in keys) or "some information"
        identifying = [c for c in keys if _identifying(cp, c)]
        if keys and not identifying:
            out.append(
                f"We do not {verb} information that identifies you{tail}. We {verb} "
                f"{what}, which does not identify you on its own, with {whom}{tail}.{opt_out}"
                if flag == "share"
                else f"We do not sell or rent information that identifies you. We sell {what}, "
                f"which does not identify you on its own, to {whom}.{opt_out}"
            )
        else:
            prep = "to" if flag == "sale" else "with"
            out.append(f"We {verb} {what} {prep} {whom}{tail}.{opt_out}")
    return out


def _backups_words(cp: CompiledPolicy) -> str:
    b = cp.policy.backups
    if b is None:
        return ""
    p = period_words(b.retention)
    rule = (
        f"Backups are kept for {p}, then overwritten; data deleted from the service "
        "disappears from backups within that time."
    )
    if b.description and p in b.description:
        return b.description
    return f"{b.description} {rule}" if b.description else rule


def provider_name(cp: CompiledPolicy, provider: str) -> str:
    """A cookie's provider: ourselves, a recipient named by its key, or as written."""
    if provider in ("first_party", ""):
        return f"{cp.policy.organization.name} (first party)"
    if provider in cp.recipients:
        return cp.recipients[provider].source.name
    return humanise(provider)


def _cookie_view(cp: CompiledPolicy, cookie: Cookie) -> CookieView:
    provider = provider_name(cp, cookie.provider)
    purpose_parts = []
    if cookie.purpose and cookie.purpose in cp.purposes:
        purpose_parts.append(cp.purposes[cookie.purpose].name)
    if cookie.description:
        purpose_parts.append(cookie.description)
    if cookie.email:
        purpose_parts.append("Used in our emails to see whether they are opened and clicked.")
    return CookieView(
        name=cookie.name,
        kind=words_for(KIND_WORDS, cookie.kind),
        provider=provider,
        lifetime=period_words(cookie.lifetime),
        purpose=" — ".join(purpose_parts),
        consent=consent_lines(cp, cookie_consent_modes(cp, cookie), COOKIE_CONSENT_WORDS),
        gpc=(
            "Switched off by a Global Privacy Control signal"
            if cookie.gpc == GpcEffect.opt_out
            else "Not affected"
        ),
    )


def _collected_categories(cp: CompiledPolicy) -> list[str]:
    """Declared categories first, in file order; then any other category the policy uses
    that is neither inside a declared one nor a broader parent of a known one."""
    declared = list(cp.policy.categories)
    rest = sorted(
        c
        for c in cp.categories
        if c not in cp.policy.categories
        and not any(is_within(c, d) for d in declared)
        and not any(o != c and is_within(o, c) for o in cp.categories)
    )
    return declared + rest


def _category_view(cp: CompiledPolicy, key: str) -> CategoryView:
    info = cp.policy.category_info(key)
    notes: list[str] = []
    if info.sensitive:
        notes.append("Sensitive data")
    if info.protection == "hashed":
        notes.append("Stored only as a one-way hash")
    elif info.protection == "encrypted":
        notes.append("Stored encrypted")
    if not info.personal:
        notes.append("Does not identify you on its own")
    vis = cp.visibility.get(key)
    if vis:
        notes.append(f"By default visible to {words_for(AUDIENCE_WORDS, vis.default)}")
    purposes = sorted(
        (purpose_name(cp, p) for p in cp.purposes_by_category.get(key, frozenset())),
    )
    if not purposes:
        purposes = sorted(purpose_name(cp, pk) for pk in cp.purposes if cp.purpose_covers(pk, key))
    return CategoryView(
        key=key,
        name=category_name(cp, key),
        description=category_description(cp, key),
        notes=notes,
        purposes=purposes,
    )


def _brand(color: str | None) -> tuple[str, str]:
    """An accent colour from the organisation's, darkened until white text on it and it
    on white both reach WCAG AA (4.5:1); and a light tint of it for table headers."""
    rgb = _parse_hex(color or "") or (0x1F, 0x4E, 0x79)
    while _contrast(rgb, (255, 255, 255)) < 4.6:
        rgb = (int(rgb[0] * 0.92), int(rgb[1] * 0.92), int(rgb[2] * 0.92))
    tint = tuple(round(255 - (255 - c) * 0.08) for c in rgb)
    return _hex(rgb), _hex((tint[0], tint[1], tint[2]))


def _parse_hex(text: str) -> tuple[int, int, int] | None:
    m = re.fullmatch(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})", text.strip())
    if not m:
        return None
    h = m.group(1)
    if len(h) == 3:
        h = "".join(ch * 2 for ch in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else float(((s + 0.055) / 1.055) ** 2.4)

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def build_notice(cp: CompiledPolicy, archive: Sequence[ArchivedVersion] | None = None) -> Notice:
    """The notice as words, ready for either template."""
    pol = cp.policy
    org = pol.organization
    accent, tint = _brand(org.color)
    logo = org.logo if org.logo and org.logo.startswith("data:image/") else None
    n = Notice(
        org_name=org.name,
        title=f"{org.name} privacy notice",
        version=cp.version,
        effective=format_date(cp.effective),
        digest=cp.digest,
        accent=accent,
        accent_tint=tint,
        logo=logo,  # only inline images: the notice loads nothing from elsewhere
    )
    d = n.data
    sec = n.sections

    # -- summary
    purposes = [_purpose_view(cp, k) for k in cp.purposes]
    d["purposes"] = purposes
    general = [cp.recipients[k].source.name for k, r in cp.recipients.items() if not r.purposes]
    d["general_recipients"] = general
    sec.append(Section("summary", "Summary"))

    # -- who we are
    outside = [
        _recipient_view(cp, k)
        for k, r in cp.recipients.items()
        if r.outside_eea or (r.source.transfer and r.source.transfer != Transfer.none_needed)
    ]
    d["org"] = org
    c = org.contact
    d["contact_any"] = c.email or c.url or org.controller.email or c.address or c.phone or ""
    d["storage"] = region_words(org.storage)
    d["transfers"] = [
        Item(
            cp.recipients[v.key].source.name,
            next((i.text for i in v.details if i.label == "Where"), ""),
        )
        for v in outside
    ]
    sec.append(Section("contact", "Who we are and how to reach us"))

    # -- what we collect
    groups: dict[str, list[CategoryView]] = {}
    for key in _collected_categories(cp):
        info = pol.category_info(key)
        groups.setdefault(info.class_ or "", []).append(_category_view(cp, key))
    d["category_groups"] = [
        CategoryGroup(
            title[:1].upper() + title[1:] or ("Data we collect" if i == 0 else "Other data"),
            cats,
        )
        for i, (title, cats) in enumerate(groups.items())
    ]
    d["subjects"] = [
        Item(
            s.name,
            " ".join(
                x
                for x in [
                    s.description or "",
                    "Has an account with us." if s.account else "Has no account with us.",
                    f"Can {join_words(c.replace('_', ' ') for c in s.can)}." if s.can else "",
                ]
                if x
            ),
        )
        for s in pol.subjects.values()
    ]
    d["activities"] = [
        {
            "name": a.name,
            "subjects": join_words(subject_name(cp, s) for s in a.subjects),
            "mandatory": [category_name(cp, c) for c in a.mandatory],
            "voluntary": [category_name(cp, c) for c in a.voluntary],
            "purposes": [purpose_name(cp, p) for p in a.purposes],
            "source": words_for(SOURCE_WORDS, a.source),
            "age_gate": a.age_gate,
        }
        for a in pol.activities.values()
    ]
    sec.append(Section("collect", "What we collect"))
    sec.append(Section("purposes", "Why we use it"))

    # -- recipients
    roles: list[RoleView] = []
    for role in Role:
        keys = [k for k, r in cp.recipients.items() if r.source.role == role]
        if keys:
            title, intro = ROLE_WORDS[role]
            roles.append(RoleView(role.value, title, intro, [_recipient_view(cp, k) for k in keys]))
    d["roles"] = roles
    d["sale_statements"] = _sale_statements(cp)
    sec.append(Section("recipients", "Who receives it"))

    # -- visibility
    d["visibility"] = [
        {
            "data": join_words(category_name(cp, c) for c in v.categories),
            "audiences": join_words((words_for(AUDIENCE_WORDS, a) for a in v.audiences), "or"),
            "default": words_for(AUDIENCE_WORDS, v.default),
            "settable": "Yes, in your settings" if v.settable else "No",
            "searchable": "Yes" if v.searchable else "No",
        }
        for v in pol.visibility
    ]
    if pol.visibility:
        sec.append(Section("visibility", "Who can see what you share"))

    # -- retention
    d["rules"] = [_rule_view(cp, k) for k in cp.retention]
    d["backups"] = _backups_words(cp)
    sec.append(Section("retention", "How long we keep it"))

    d["exemptions"] = [
        {
            "name": e.name,
            "basis": _capital(words_for(LEGAL_BASIS_WORDS, e.basis)),
            "suspends": join_words(REQUEST_WORDS[r][0].lower() for r in e.suspends),
            "data": join_words(category_name(cp, c) for c in e.categories) or "Any data",
            "description": e.description or "",
        }
        for e in cp.exemptions.values()
    ]
    if d["exemptions"]:
        sec.append(Section("exemptions", "When we may keep data after you ask"))

    d["jurisdictions"] = [_jurisdiction_view(cp, k) for k in cp.jurisdictions]
    sec.append(Section("rights", "Your rights"))

    # -- children
    ch = pol.children
    ages: list[Item] = []
    for jk, j in cp.jurisdictions.items():
        age = cp.min_age(jk)
        if age is not None:
            ages.append(Item(j.name, str(age)))
    if ch and "*" in ch.minimum_age and not any("*" in j.regions for j in cp.jurisdictions.values()):
        ages.append(Item("Everywhere else", str(ch.minimum_age["*"])))
    d["ages"] = ages
    d["children"] = (
        {
            "at_signup": CHILD_ACTION_WORDS[ch.at_signup],
            "on_discovery": CHILD_ACTION_WORDS[ch.on_discovery],
            "categories": join_words(category_name(cp, c) for c in ch.categories),
            "report": join_words((channel_words(cp, c) for c in ch.report), "or"),
        }
        if ch
        else None
    )
    if ages or ch:
        sec.append(Section("children", "Children"))

    # -- cookies
    cgroups: list[CookieGroup] = []
    for cat in CookieCategory:
        cookies = cp.cookies_by_category.get(cat, ())
        if cookies:
            title, intro = COOKIE_CATEGORY_WORDS[cat]
            cgroups.append(CookieGroup(cat.value, title, intro, [_cookie_view(cp, c) for c in cookies]))
    d["cookie_groups"] = cgroups
    d["cookie_kinds"] = sorted({c.kind for c in pol.cookies})
    d["pixels"] = [c.name for c in pol.cookies if c.kind == "pixel"]
    d["email_pixels"] = [c.name for c in pol.cookies if c.email]
    plugins = [c for c in pol.cookies if c.kind == "social_plugin"]
    d["social"] = join_words(_unique(provider_name(cp, c.provider) for c in plugins))
    blocked = [
        jk
        for jk in cp.jurisdictions
        if plugins and all(cookie_consent_modes(cp, c)[jk] == ConsentMode.opt_in for c in plugins)
    ]
    d["social_blocked"] = (
        "everywhere"
        if blocked and len(blocked) == len(cp.jurisdictions)
        else join_words(_jurisdiction_label(cp, jk) for jk in blocked)
    )
    d["cookie_types"] = any(c.kind != "cookie" for c in pol.cookies)
    d["cookie_gpc"] = any(c.gpc == GpcEffect.opt_out for c in pol.cookies)
    if pol.cookies:
        sec.append(Section("cookies", "Cookies and similar technologies"))

    sc = pol.screening
    d["screening"] = (
        {
            "algorithms": join_words(words_for(ALGORITHM_NAMES, a) for a in sc.algorithms),
            "lists": join_words(sc.lists),
            "on_match": join_words(
                {"block": "block it", "quarantine": "set it aside", "report": "report it"}[m]
                for m in sc.on_match
            ),
            "report_to": inline_name(sc.report_to),
            "at": "as it is uploaded" if sc.at == "write" else "each time it is accessed",
        }
        if sc
        else None
    )
    if sc:
        sec.append(Section("screening", "Checking uploads for illegal content"))

    protected = [
        (category_name(cp, k), (v or None) and v.protection)
        for k, v in pol.categories.items()
        if v and v.protection in ("hashed", "encrypted")
    ]
    d["security"] = [Item(humanise(s.measure), s.description or "") for s in pol.security]
    d["protected"] = [
        f"{name}: stored only as a one-way hash, never in readable form."
        if how == "hashed"
        else f"{name}: stored encrypted."
        for name, how in protected
    ]
    br = pol.breaches
    d["breaches"] = (
        {
            "monitoring": br.monitoring,
            "authority": inline_name(br.authority or "the competent supervisory authority"),
            "within": period_words(br.authority_within),
            "subjects": {
                "high_risk": "We tell you directly, without undue delay, when a breach is "
                "likely to put your rights and freedoms at high risk.",
                "always": "We tell everyone affected by a breach directly.",
                "never": "",
            }[br.notify_subjects],
        }
        if br
        else None
    )
    if pol.security or br or protected:
        sec.append(Section("security", "How we protect it"))

    # -- changes
    chg = pol.changes
    d["changes"] = {
        "material": (
            "If we make a material change to how we use or disclose your data, the change will "
            "not apply to data we collected before it unless you agree."
            if chg.material == "opt_in"
            else "If we make a material change to how we use or disclose your data, we will "
            "tell you before it applies"
            + (f", at least {period_words(chg.notice_period)} in advance." if chg.notice_period else ".")
        ),
        "announce": join_words(words_for(ANNOUNCE_WORDS, a) for a in chg.announce),
        "archive": chg.archive,
    }
    d["archive"] = list(archive or [])
    d["changelog"] = [
        {
            "version": e.version,
            "date": format_date(e.date),
            "summary": e.summary,
            "material": "Yes" if e.material else "No",
        }
        for e in sorted(pol.changelog, key=lambda e: e.date, reverse=True)
    ]
    sec.append(Section("changes", "Changes to this notice"))
    return n


# --------------------------------------------------------------------------- templates


def _paragraphs(text: str) -> Markup:
    """Blank-line separated text as <p> elements (escaped)."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text or "") if p.strip()]
    return Markup("").join(Markup("<p>{}</p>\n").format(p) for p in parts)


def _md_cell(value: Any) -> str:
    """A value fit for a Markdown table cell: one line, pipes escaped."""
    text = value if isinstance(value, str) else join_words(value) if value else ""
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip() or "—"


def _md_text(text: str) -> str:
    return re.sub(r"[ \t]+\n", "\n", (text or "").strip())


def _link(value: str) -> Markup:
    """A web address or email as a link; anything else as escaped text."""
    v = value.strip()
    if re.match(r"^https?://\S+$", v):
        return Markup('<a class="bare" href="{0}">{0}</a>').format(v)
    if re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", v):
        return Markup('<a class="bare" href="mailto:{0}">{0}</a>').format(v)
    return escape(v)


@cache
def _environment(kind: str) -> Environment:
    env = Environment(
        loader=PackageLoader("fiduciary.policy", "templates"),
        autoescape=kind == "html",
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["paragraphs"] = _paragraphs
    env.filters["cell"] = _md_cell
    env.filters["mdtext"] = _md_text
    env.filters["link"] = _link
    env.filters["words"] = join_words
    env.filters["capitalize_first"] = lambda s: s[:1].upper() + s[1:] if s else s
    return env


def render_notice_html(cp: CompiledPolicy, *, archive: Sequence[ArchivedVersion] | None = None) -> str:
    """The public privacy notice as one self-contained, accessible HTML page."""
    notice = build_notice(cp, archive)
    html = _environment("html").get_template("notice.html").render(n=notice, **notice.data)
    return html.lstrip()


def render_notice_markdown(cp: CompiledPolicy, *, archive: Sequence[ArchivedVersion] | None = None) -> str:
    """The same notice as Markdown (for a repository, a CMS or a diff in review)."""
    notice = build_notice(cp, archive)
    text = _environment("md").get_template("notice.md").render(n=notice, **notice.data)
    return re.sub(r"\n{3,}", "\n\n", text).lstrip()


__all__ = [
    "ArchivedVersion",
    "build_notice",
    "category_name",
    "country_name",
    "period_words",
    "recipients_for_purpose",
    "render_notice_html",
    "render_notice_markdown",
    "retention_sentence",
    "retention_short",
]
