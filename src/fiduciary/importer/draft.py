"""The draft policy.yaml: what an ``Extraction`` found, written in the policy language, each
element under the passage of the text that states it.

The text is never filled in. What it does not say becomes a TODO, in one of two forms the
checker sees:

* an item of the top-level ``todo`` list, which ``fiduciary policy check`` reports as a
  warning (``todo.open``) until a person deletes it;
* an element that lacks a value the language requires (a purpose whose legal basis the
  text does not state, a right without a deadline, a cookie without a name) is written
  out as a comment in its section, with ``TODO`` where the value goes, and has its own
  ``todo`` item. Uncommented as it is, it fails the check until the TODO is replaced.

Every element, commented or not, is preceded by one comment line per claim that produced
it: ``# c12 [1043:1101] confidence 0.82: "the quoted passage"``, with ``REVIEW`` in front
when the claim is below ``REVIEW_BELOW``. ``c12`` is the claim's index in
``Extraction.claims``; the review page (``fiduciary.importer.review``) finds elements in
the draft by it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

import yaml

from fiduciary.importer.model import FIELDS, OBJECT_FIELDS, Claim, Extraction
from fiduciary.policy.model import Basis, Role
from fiduciary.policy.period import Period, PeriodError
from fiduciary.policy.taxonomy import label, taxonomy

TODO: Final = "TODO"  # where a required value goes that the text does not give

# rights.right (gold README) -> the policy's request type; None: no request type says it.
RIGHTS: Final[Mapping[str, str | None]] = {
    "access": "access",
    "rectify": "rectify",
    "erase": "erase",
    "portability": "portability",
    "restrict": "restrict",
    "object": "object",
    "opt_out_marketing": "opt_out_of_marketing",
    "opt_out_sale": "opt_out_of_sale",
    # The CCPA opt-out of sale covers sharing for cross-context behavioural advertising.
    "opt_out_targeted_ads": "opt_out_of_sale",
    "withdraw_consent": "withdraw_consent",
    "close_account": "close_account",
    "know_categories": "access",  # the CCPA right to know is the access request
    "shine_the_light": "shine_the_light",
    "visibility_settings": "visibility",
    "opt_out_cookies": None,  # cookies' consent modes, not a request
    "complain_to_authority": None,  # a jurisdiction's supervisory_authority
}
CHANNELS: Final[Mapping[str, str | None]] = {
    "account settings": "account_settings",
    "email": "email",
    "web form": "web_form",
    "postal mail": "postal_mail",
    "browser settings": "browser_settings",
    "unsubscribe link": "unsubscribe_link",
    "third-party site": None,
    "contact us": None,  # no medium given
}
# retention.period -> (trigger, whether the language still needs a period for it).
RETENTION_PERIODS: Final[Mapping[str, tuple[str | None, bool]]] = {
    "end of visit": ("session_end", False),
    # Kept while the account exists: deleted when it is closed, no period after.
    "while account exists": ("account_closed", False),
    "until account inactive": ("last_activity", True),
    "until deleted by user": (None, True),
    "as long as necessary": (None, True),
    "as long as legally permissible": (None, True),
    "limited period": (None, True),
    "until third-party cache refresh": (None, True),
    "unspecified": (None, True),
}
# cookies_and_tracking.kind -> what it says of a Cookie.
COOKIE_KINDS: Final[Mapping[str, Mapping[str, str]]] = {
    "session": {"lifetime": "session"},
    "persistent": {},
    "analytics": {"category": "analytics"},
    "advertising": {"category": "advertising"},
    "pixel": {"kind": "pixel"},
    "web_beacon": {"kind": "pixel"},
    "social_plugin": {"kind": "social_plugin"},
    "local_storage": {"kind": "local_storage"},
    "functional": {"category": "functional"},
    "cookie": {},
}
# policy_changes.notice -> changes.announce; None: the language has no word for it.
ANNOUNCE: Final[Mapping[str, str | None]] = {
    "updated date": "revision_date",
    "notice on site": "site_banner",
    "email": "email",
    "post on site": None,
    "in-service notification": None,
}
ROLE_NAMES: Final[Mapping[str, tuple[str, str]]] = {  # role -> (key, name) for unnamed ones
    "processor": ("service_providers", "Service providers"),
    "third_party": ("third_parties", "Third parties"),
    "affiliate": ("affiliates", "Affiliated companies"),
    "authority": ("authorities", "Authorities, courts and law enforcement"),
    "other_users": ("other_users", "Other users"),
    "public": ("the_public", "The public"),
    "successor": ("successor", "A buyer or successor of the business"),
    "advertiser": ("advertisers", "Advertisers and ad networks"),
}
# What a role implies about when data goes there (gold README, recipients.role).
ROLE_CONDITIONS: Final[Mapping[str, str]] = {
    "authority": "legal_demand",
    "successor": "business_transfer",
}
BASES: Final = tuple(b.value for b in Basis)
# YAML refuses these characters anywhere in a stream, comments included.
_NOT_YAML = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A sentence ends at . ! ? and a space, at a line break, or at an HTML block tag (HTML
# written without line breaks between paragraphs).
_SENTENCE_END = re.compile(
    r"[.!?][\"'”’)\]]*\s|\n|</?(?:p|br|li|h[1-6]|div|td|tr|ul|ol|section|article)\b[^>]*>",
    re.IGNORECASE,
)
_ABBREVIATIONS: Final = frozenset(
    {"e.g.", "i.e.", "etc.", "inc.", "ltd.", "co.", "corp.", "vs.", "st.", "no."}
)

Status = Literal["element", "commented", "note"]


class ExtractionError(ValueError):
    """An extraction the draft cannot be written from: names the claim and what is wrong."""


@dataclass
class DraftElement:
    """One thing the draft says, and the claims that made it."""

    field: str  # the extraction field it comes from
    path: tuple[str | int, ...]  # where it is in the draft: ("purposes", "analytics")
    label: str  # what a person calls it
    claims: list[int] = dataclasses.field(default_factory=list)  # indexes into Extraction.claims
    status: Status = "element"  # element; commented out (a required value is missing); a note
    todo: list[str] = dataclasses.field(default_factory=list)  # its items of the draft's todo list

    @property
    def path_text(self) -> str:
        out = ""
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            elif "." in part:
                out += f"[{part!r}]"
            else:
                out += f".{part}" if out else part
        return out


@dataclass
class Draft:
    """The draft policy.yaml and what it is made of, for the review page."""

    yaml: str
    elements: list[DraftElement]
    todo: list[str]


def draft_policy(extraction: Extraction, *, today: date | None = None) -> str:
    """A draft policy.yaml for the claims of ``extraction``, accepted by the checker with
    warnings: one ``todo.open`` per open question. ``today`` stands in for the effective
    date when the text states none (flagged as a TODO)."""
    return build_draft(extraction, today=today).yaml


def build_draft(extraction: Extraction, *, today: date | None = None) -> Draft:
    validate_extraction(extraction)
    return _Drafter(extraction, today or date.today()).build()


# --------------------------------------------------------------------------- validation


def validate_extraction(extraction: Extraction) -> None:
    """Raise ExtractionError, naming the claim, for anything the draft cannot read."""
    seen_objects: dict[str, int] = {}
    text = extraction.source_text
    for i, claim in enumerate(extraction.claims):
        where = f"claim {i} ({claim.field})"
        if claim.field not in FIELDS:
            raise ExtractionError(f"{where}: unknown field; expected one of {', '.join(FIELDS)}")
        if claim.field in OBJECT_FIELDS:
            if claim.field in seen_objects:
                raise ExtractionError(
                    f"{where}: a second claim for a one-value field (the first is claim "
                    f"{seen_objects[claim.field]})"
                )
            seen_objects[claim.field] = i
        ev = claim.evidence
        if not (0 <= ev.start <= ev.end <= len(text)) or text[ev.start : ev.end] != ev.text:
            raise ExtractionError(
                f"{where}: evidence [{ev.start}:{ev.end}] is not the quoted text in "
                f"{extraction.source} ({len(text)} characters)"
            )
        if not 0.0 <= claim.confidence <= 1.0:
            raise ExtractionError(f"{where}: confidence {claim.confidence!r} is not between 0 and 1")
        if not isinstance(claim.value, Mapping):
            raise ExtractionError(f"{where}: the value must be a mapping, got {type(claim.value).__name__}")
        _validate_value(where, claim.field, claim.value)


def _need(where: str, value: Mapping[str, Any], key: str, kinds: tuple[type, ...]) -> Any:
    if key not in value:
        raise ExtractionError(f"{where}: the value has no {key!r}")
    got = value[key]
    if not isinstance(got, kinds):
        wanted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ExtractionError(f"{where}: {key!r} must be {wanted}, got {type(got).__name__}")
    return got


def _one_of(where: str, key: str, got: Any, allowed: Iterable[Any]) -> None:
    allowed = list(allowed)
    if got not in allowed:
        shown = ", ".join(str(a) for a in allowed if a is not None)
        raise ExtractionError(f"{where}: {key} {got!r} is not one of: {shown}")


def _validate_value(where: str, name: str, v: Mapping[str, Any]) -> None:
    tax = taxonomy()
    if name == "categories":
        key = _need(where, v, "key", (str,))
        if key not in tax.categories:
            raise ExtractionError(f"{where}: {key!r} is not a fideslang data category")
    elif name == "purposes":
        key = _need(where, v, "key", (str,))
        if key not in tax.uses:
            raise ExtractionError(f"{where}: {key!r} is not a fideslang data use")
    elif name == "legal_bases":
        _one_of(where, "basis", _need(where, v, "basis", (str,)), BASES)
    elif name == "recipients":
        _need(where, v, "name", (str, type(None)))
        _one_of(where, "role", _need(where, v, "role", (str,)), (r.value for r in Role))
        for key in v.get("categories") or []:
            if not isinstance(key, str) or key not in tax.categories:
                raise ExtractionError(f"{where}: category {key!r} is not a fideslang data category")
        if not isinstance(v.get("aggregate_only", False), bool):
            raise ExtractionError(f"{where}: 'aggregate_only' must be true or false")
    elif name == "retention":
        _need(where, v, "scope", (str,))
        period = _need(where, v, "period", (str,))
        if period not in RETENTION_PERIODS and _iso_period(period) is None:
            raise ExtractionError(
                f"{where}: period {period!r} is neither an ISO 8601 duration (P30D) nor one of: "
                + ", ".join(RETENTION_PERIODS)
            )
    elif name == "rights":
        _one_of(where, "right", _need(where, v, "right", (str,)), RIGHTS)
        _one_of(where, "channel", v.get("channel"), [*CHANNELS, None])
    elif name == "transfers":
        _need(where, v, "country_or_region", (str,))
    elif name == "cookies_and_tracking":
        _one_of(where, "kind", _need(where, v, "kind", (str,)), COOKIE_KINDS)
    elif name == "security":
        _need(where, v, "measure", (str,))
    elif name == "special":
        _need(where, v, "practice", (str,))
    elif name == "last_updated":
        try:
            date.fromisoformat(_need(where, v, "date", (str,)))
        except ValueError:
            raise ExtractionError(f"{where}: date {v['date']!r} is not YYYY-MM-DD") from None
    elif name == "sells_personal_data":
        _need(where, v, "value", (bool, type(None)))
    elif name == "children":
        age = v.get("min_age")
        if age is not None and (isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 21):
            raise ExtractionError(f"{where}: min_age {age!r} is not an age from 0 to 21")
        if not isinstance(v.get("action_on_discovery"), str | None):
            raise ExtractionError(f"{where}: 'action_on_discovery' must be text or null")
    elif name == "policy_changes":
        notice = v.get("notice") or []
        if not isinstance(notice, list):
            raise ExtractionError(f"{where}: 'notice' must be a list")
        for n in notice:
            _one_of(where, "notice", n, ANNOUNCE)
        for flag in ("material_change_choice", "previous_versions_available"):
            if not isinstance(v.get(flag, False), bool):
                raise ExtractionError(f"{where}: {flag!r} must be true or false")
    elif name == "contact":
        _need(where, v, "channel", (str,))


def _iso_period(text: str) -> Period | None:
    if not text.upper().startswith("P"):
        return None
    try:
        return Period.parse(text)
    except PeriodError:
        return None


# --------------------------------------------------------------------------- the draft


def _quote(text: str) -> str:
    """A span as one comment line: whitespace runs become one space."""
    return _NOT_YAML.sub("\ufffd", " ".join(text.split()))


class _Dumper(yaml.SafeDumper):
    """Block mappings; lists of scalars on one line, as the examples write them."""

    flow_lists = True

    def represent_list(self, data: Iterable[Any]) -> yaml.SequenceNode:
        items = list(data)
        scalars = all(not isinstance(i, dict | list) for i in items)
        return self.represent_sequence(
            "tag:yaml.org,2002:seq", items, flow_style=bool(self.flow_lists and scalars and items)
        )


class _BlockDumper(_Dumper):
    flow_lists = False


_Dumper.add_representer(list, _Dumper.represent_list)


def _dump(value: Any, indent: int, *, flow_lists: bool = True) -> list[str]:
    text = yaml.dump(
        value,
        Dumper=_Dumper if flow_lists else _BlockDumper,
        sort_keys=False,
        allow_unicode=True,
        width=1_000_000,
        default_flow_style=False,
    )
    pad = " " * indent
    return [pad + line for line in text.rstrip("\n").split("\n")]


def _slug(text: str, fallback: str) -> str:
    """A policy key from words: lower-case, '_' between words, whole words up to ~40."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    kept: list[str] = []
    for w in words:
        if kept and len("_".join([*kept, w])) > 40:
            break
        kept.append(w)
    s = "_".join(kept)[:40]
    if not s or not s[0].isalpha():
        s = f"{fallback}_{s}" if s else fallback
    return s


def _unique(key: str, taken: Iterable[str]) -> str:
    used = set(taken)
    out, n = key, 2
    while out in used:
        out, n = f"{key}_{n}", n + 1
    return out


class _Drafter:
    def __init__(self, extraction: Extraction, today: date) -> None:
        self.x = extraction
        self.today = today
        self.lines: list[str] = []
        self.todo: list[str] = []
        self.elements: list[DraftElement] = []
        self.sentences = [self.sentence_of(c) for c in extraction.claims]
        self.declared: set[str] = set()  # category keys under 'categories'

    # -- helpers
    def ids(self, name: str) -> list[int]:
        return [i for i, c in enumerate(self.x.claims) if c.field == name]

    def sentence_of(self, claim: Claim) -> tuple[int, int]:
        """The sentence around a claim's span: two claims there are stated together."""
        text = self.x.source_text
        start, end = claim.evidence.start, claim.evidence.end
        before = max((m.end() for m in _sentence_ends(text, 0, start)), default=0)
        after = next(iter(_sentence_ends(text, max(end - 1, start), len(text))), None)
        return before, after.end() if after else len(text)

    def together(self, a: int, b: int) -> bool:
        (s1, e1), (s2, e2) = self.sentences[a], self.sentences[b]
        return s1 < e2 and s2 < e1

    def evidence(self, ids: Iterable[int], indent: int) -> None:
        pad = " " * indent
        for i in ids:
            c = self.x.claims[i]
            flag = "REVIEW " if c.needs_review else ""
            self.lines.append(
                f"{pad}# {flag}c{i} [{c.evidence.start}:{c.evidence.end}] confidence "
                f'{c.confidence:.2f}: "{_quote(c.evidence.text)}"'
            )

    def comment(self, text: str, indent: int) -> None:
        self.lines.append(f"{' ' * indent}# {_quote(text)}")

    def add_todo(self, element: DraftElement | None, text: str) -> None:
        self.todo.append(text)
        if element is not None:
            element.todo.append(text)

    def element(
        self,
        name: str,
        path: tuple[str | int, ...],
        label_: str,
        ids: Sequence[int],
        status: Status = "element",
    ) -> DraftElement:
        el = DraftElement(name, path, label_, list(ids), status)
        self.elements.append(el)
        return el

    def write(
        self, el: DraftElement, value: Mapping[str, Any] | list[Any], indent: int, why: str | None = None
    ) -> None:
        """An element: its evidence, then its YAML, commented out when it lacks a value."""
        self.evidence(el.claims, indent)
        if why:
            self.comment(why, indent)
        lines = _dump(value, indent)
        if el.status == "commented":
            pad = " " * indent
            lines = [f"{pad}# {line[indent:]}" for line in lines]
        self.lines += lines

    # -- sections
    def build(self) -> Draft:
        body: list[str] = []
        for section in (
            self.organization,
            self.version,
            self.changes,
            self.jurisdictions,
            self.categories,
            self.purposes,
            self.recipients,
            self.retention,
            self.children,
            self.cookies,
            self.security,
            self.special,
        ):
            self.lines = []
            section()
            body += self.lines
        head = [
            f"# Draft policy.yaml, imported from the text of {_quote(self.x.source)} by",
            "# `fiduciary policy import-text`. A person reviews every element before it is used.",
            '# Above each element: the claims that made it, as `# cN [start:end] confidence C: "quote"`',
            "# (N: the claim's number on the review page; start:end: character offsets into the",
            "# file as read). `REVIEW` marks a claim read with low confidence.",
            "# What the text does not say is not filled in: it is listed under `todo`, which",
            "# `fiduciary policy check` reports as warnings. Elements that lack a value the language",
            "# requires are commented out, with TODO where the value goes: fill it in, uncomment the",
            "# element and delete its todo item.",
            "fiduciary: 1",
        ]
        if self.todo:
            head += ["todo:", *_dump(self.todo, 2, flow_lists=False)]
        text = "\n".join([*head, *body]) + "\n"
        return Draft(text, self.elements, list(self.todo))

    def organization(self) -> None:
        service = self.x.service
        org = self.element("service", ("organization",), "Organization", [])
        name = service or TODO
        if not service:
            self.add_todo(org, "organization.name: the service's name as the public knows it")
        self.lines.append("organization:")
        if service:
            self.comment("the service's name, as the text gives it", 2)
        self.lines += _dump({"name": name}, 2)
        contact_ids = self.ids("contact")
        reach: dict[str, str] = {"email": TODO}
        if contact_ids:
            i = contact_ids[0]
            el = self.element("contact", ("organization", "contact"), "Privacy contact", [i])
            channel = str(self.x.claims[i].value["channel"]).strip().rstrip(".,;:")
            reach, note = _contact(channel)
            self.evidence([i], 2)
            if note:
                self.comment(note, 2)
        else:
            el = self.element("contact", ("organization", "contact"), "Privacy contact", [], "note")
            self.add_todo(el, "organization.contact: the text gives no privacy contact; write one")
        self.lines += _dump({"contact": reach}, 2)
        ctl = self.element("contact", ("organization", "controller"), "Controller", [])
        self.add_todo(
            ctl,
            "organization.controller: the controller's legal name and postal address "
            "(GDPR Art. 13(1)(a)); the draft repeats the privacy contact",
        )
        self.lines += _dump({"controller": {"name": name, **reach}}, 2)
        transfer_ids = self.ids("transfers")
        if transfer_ids:
            el = self.element("transfers", ("organization", "transfers"), "Transfers abroad", transfer_ids)
            self.evidence(transfer_ids, 2)
            quotes = [_quote(self.x.claims[i].evidence.text) for i in transfer_ids]
            self.lines += _dump({"transfers": " ".join(dict.fromkeys(quotes))}, 2)
            places = [str(self.x.claims[i].value["country_or_region"]) for i in transfer_ids]
            named = [_with_code(p) for p in dict.fromkeys(places) if p.casefold() != "unspecified"]
            self.add_todo(
                el,
                "organization.storage: the ISO 3166 codes of the countries where personal data is "
                f"stored{' (the text names ' + ', '.join(named) + ')' if named else ''}, and a country "
                "and transfer mechanism for each recipient outside the EEA",
            )

    def version(self) -> None:
        ids = self.ids("last_updated")
        if ids:
            el = self.element("last_updated", ("effective",), "Revision date", ids)
            when = date.fromisoformat(str(self.x.claims[ids[0]].value["date"]))
            self.evidence(ids, 0)
            self.lines += _dump({"version": when.isoformat(), "effective": when}, 0)
            return
        el = self.element("last_updated", ("effective",), "Revision date", [], "note")
        self.add_todo(
            el,
            "effective: the text states no revision date; the draft's date stands in for it "
            "(and version: draft)",
        )
        self.lines += _dump({"version": "draft", "effective": self.today}, 0)

    def changes(self) -> None:
        ids = self.ids("policy_changes")
        if not ids:
            el = self.element("policy_changes", ("changes",), "Policy changes", [], "note")
            self.add_todo(
                el,
                "changes: the text does not say how a change of the policy is announced; the "
                "language's defaults apply (announce in the privacy center and by revision date)",
            )
            return
        el = self.element("policy_changes", ("changes",), "Policy changes", ids)
        v = self.x.claims[ids[0]].value
        notice = [str(n) for n in v.get("notice") or []]
        announce = [a for a in dict.fromkeys(ANNOUNCE[n] for n in notice) if a]
        unsaid = [n for n in notice if ANNOUNCE[n] is None]
        data: dict[str, Any] = {
            # Without a promised choice, a change applies after notice.
            "material": "opt_in" if v.get("material_change_choice") else "notice",
            "announce": announce,
        }
        if v.get("previous_versions_available"):
            data["archive"] = True
        else:
            self.add_todo(
                el,
                "changes.archive: the text does not say earlier versions stay available; "
                "the language's default (true) applies",
            )
        if unsaid:
            self.add_todo(
                el,
                f"changes.announce: the text also announces changes by {', '.join(unsaid)}, which "
                "the language has no word for",
            )
        self.write(el, {"changes": data}, 0)

    def jurisdictions(self) -> None:
        base = ("jurisdictions", "everywhere")
        j = self.element("rights", base, "Where the policy applies", [], "note")
        self.add_todo(
            j,
            "jurisdictions.everywhere: the text names no law; write a jurisdiction per law that "
            "applies (GDPR, CCPA, ...) and move each right under the ones that give it",
        )
        self.lines.append("jurisdictions:")
        self.lines += _dump({"everywhere": {"name": "Everywhere", "law": "general", "regions": ["*"]}}, 2)
        self.supervisory_authority()
        self.lines.append("    rights: {}")
        groups: dict[str, list[int]] = {}
        for i in self.ids("rights"):
            request = RIGHTS[str(self.x.claims[i].value["right"])]
            if request is not None:
                groups.setdefault(request, []).append(i)
        for request, ids in groups.items():
            el = self.element("rights", (*base, "rights", request), _words(request), ids, "commented")
            channels: list[str] = []
            said: list[str] = []
            for i in ids:
                given = self.x.claims[i].value.get("channel")
                mapped = CHANNELS.get(given) if given else None
                if mapped and mapped not in channels:
                    channels.append(mapped)
                elif given and not mapped:
                    said.append(str(given))
            right = {"deadline": TODO, "channels": channels or [TODO]}
            why = (
                f"the text names no channel the language has a word for: {', '.join(said)}" if said else None
            )
            self.add_todo(
                el,
                f"{el.path_text}: the text states no deadline"
                + ("" if channels else " nor channel")
                + "; write what is missing, then uncomment the right",
            )
            self.write(el, {request: right}, 6, why)
        subjects = self.element("special", ("subjects",), "Kinds of people", [], "note")
        self.add_todo(
            subjects,
            "subjects: the kinds of people the data is about (customers, visitors, ...); the "
            "importer does not read them from the text",
        )
        self.lines.append("subjects: {}")

    def supervisory_authority(self) -> None:
        ids = [i for i in self.ids("rights") if self.x.claims[i].value["right"] == "complain_to_authority"]
        if not ids:
            return
        path = ("jurisdictions", "everywhere", "supervisory_authority")
        el = self.element("rights", path, "Complaint to an authority", ids, "commented")
        self.add_todo(el, f"{el.path_text}: the text says people may complain to an authority; name it")
        self.write(el, {"supervisory_authority": {"name": TODO, "url": TODO}}, 4)

    def categories(self) -> None:
        keys: dict[str, list[int]] = {}
        for i in self.ids("categories"):
            keys.setdefault(str(self.x.claims[i].value["key"]), []).append(i)
        for i in self.ids("recipients"):
            for key in self.x.claims[i].value.get("categories") or []:
                keys.setdefault(str(key), [])
        self.declared = set(keys)
        if not keys:
            self.lines.append("categories: {}")
            return
        self.lines.append("categories:")
        for key, ids in keys.items():
            el = self.element("categories", ("categories", key), label(key), ids)
            why = None if ids else "named only where the text says who receives it (recipients below)"
            self.write(el, {key: None}, 2, why)

    def purposes(self) -> None:
        uses: dict[str, list[int]] = {}
        for i in self.ids("purposes"):
            uses.setdefault(str(self.x.claims[i].value["key"]), []).append(i)
        bases = self.ids("legal_bases")
        tied: set[int] = set()
        live: list[tuple[DraftElement, dict[str, Any], list[int]]] = []
        pending: list[tuple[DraftElement, dict[str, Any], list[int]]] = []
        for use, ids in uses.items():
            key = use.replace(".", "_")
            stated = [b for b in bases if any(self.together(b, i) for i in ids)]
            tied.update(stated)
            basis_values = list(dict.fromkeys(str(self.x.claims[b].value["basis"]) for b in stated))
            cats = [
                str(self.x.claims[c].value["key"])
                for c in self.ids("categories")
                if any(self.together(c, i) for i in ids)
            ]
            cats = list(dict.fromkeys(cats))
            data: dict[str, Any] = {
                "name": label(use, "use"),
                "use": use,
                "basis": basis_values[0] if len(basis_values) == 1 else TODO,
                "categories": cats or [TODO],
            }
            ok = len(basis_values) == 1 and bool(cats)
            el = self.element(
                "purposes",
                ("purposes", key),
                label(use, "use"),
                [*ids, *stated],
                "element" if ok else "commented",
            )
            (live if ok else pending).append((el, data, stated))
            if not ok:
                missing = []
                if not basis_values:
                    missing.append("no legal basis")
                elif len(basis_values) > 1:
                    missing.append(f"several legal bases ({', '.join(basis_values)})")
                if not cats:
                    missing.append("no categories")
                self.add_todo(
                    el,
                    f"{el.path_text}: the text states {' and '.join(missing)} for this purpose; "
                    "write what is missing, then uncomment the purpose",
                )
        untied = [b for b in bases if b not in tied]
        if untied:
            note = self.element(
                "legal_bases", ("purposes",), "Legal bases stated in the text", untied, "note"
            )
            if pending:
                self.add_todo(
                    note,
                    "purposes: the text states these legal bases without tying them to a purpose: "
                    + ", ".join(dict.fromkeys(str(self.x.claims[b].value["basis"]) for b in untied)),
                )
        if uses:
            general = self.element("purposes", ("purposes",), "Choices people have", [], "note")
            self.add_todo(
                general,
                "purposes: the text does not say which purposes people can refuse; write essential, "
                "consent modes per jurisdiction and objection where it does",
            )
        self.lines.append("purposes:" if live else "purposes: {}")
        if untied:
            self.comment("The text states these legal bases, but not for which purpose:", 2)
            self.evidence(untied, 2)
        for el, data, _ in live:
            self.write(el, {str(el.path[-1]): data}, 2, "categories: those named in the same sentence")
        for el, data, _ in pending:
            self.write(el, {str(el.path[-1]): data}, 2)

    def recipients(self) -> None:
        ids = self.ids("recipients")
        sells = self.ids("sells_personal_data")
        merged: dict[tuple[str, str, bool], list[int]] = {}
        for i in ids:
            v = self.x.claims[i].value
            name = v.get("name")
            merged.setdefault(
                (str(name).casefold() if name else "", str(v["role"]), bool(v.get("aggregate_only"))), []
            ).append(i)
        if not merged and not sells:
            return
        self.lines.append("recipients:" if merged else "recipients: {}")
        for i in sells:
            said = self.x.claims[i].value.get("value")
            el = self.element("sells_personal_data", ("recipients",), "Sale of personal data", [i], "note")
            self.evidence([i], 2)
            if said is True:
                self.comment("The text says personal data may be sold.", 2)
                self.add_todo(
                    el,
                    "sale: the text says personal data may be sold; mark the purposes and recipients "
                    "involved with sale: true",
                )
            elif said is False:
                self.comment("The text says personal data is not sold: sale stays false throughout.", 2)
        taken: list[str] = []
        for (_, role, aggregate), group in merged.items():
            first = self.x.claims[group[0]].value
            name = first.get("name")
            if name:
                key, shown = _slug(str(name), "recipient"), str(name)
            else:
                key, shown = ROLE_NAMES[role]
                if aggregate:
                    key, shown = f"{key}_aggregate", f"{shown} (aggregate data only)"
            key = _unique(key, taken)
            taken.append(key)
            cats: list[str] = []
            for i in group:
                cats += [str(c) for c in self.x.claims[i].value.get("categories") or []]
            data: dict[str, Any] = {"name": shown, "role": role}
            if role in ROLE_CONDITIONS:
                data["condition"] = ROLE_CONDITIONS[role]
            if aggregate:
                data["form"] = "aggregate"
            if cats:
                data["categories"] = list(dict.fromkeys(cats))
            el = self.element("recipients", ("recipients", key), shown, group)
            why = "condition: what the role means" if role in ROLE_CONDITIONS else None
            self.write(el, {key: data}, 2, why)

    def retention(self) -> None:
        ids = self.ids("retention")
        if not ids:
            return
        rules: list[tuple[DraftElement, dict[str, Any]]] = []
        taken: list[str] = []
        for i in ids:
            v = self.x.claims[i].value
            scope, period = str(v["scope"]), str(v["period"])
            trigger, needs_period = RETENTION_PERIODS.get(period, (None, False))
            iso = _iso_period(period)
            cats = [str(self.x.claims[c].value["key"]) for c in self.ids("categories") if self.together(c, i)]
            cats = list(dict.fromkeys(cats))
            rule: dict[str, Any] = {
                "description": _quote(self.x.claims[i].evidence.text),
                "categories": cats or [TODO],
                "trigger": trigger or TODO,
            }
            if iso is not None:
                rule["period"] = period
            elif needs_period:
                rule["period"] = TODO
            ok = bool(cats) and trigger is not None and (iso is not None or not needs_period)
            key = _unique(_slug(scope, "rule"), taken)
            taken.append(key)
            el = self.element("retention", ("retention", key), scope, [i], "element" if ok else "commented")
            if not ok:
                missing = [
                    what
                    for what, absent in (
                        ("the categories it covers", not cats),
                        ("when the period starts (trigger)", trigger is None),
                        ("how long (period)", needs_period and iso is None),
                    )
                    if absent
                ]
                self.add_todo(
                    el,
                    f"{el.path_text}: the text says {scope!r} is kept: {iso or period}; it does not state "
                    f"{', '.join(missing)}; write what is missing, then uncomment the rule",
                )
            rules.append((el, rule))
        self.lines.append("retention:" if any(el.status == "element" for el, _ in rules) else "retention: {}")
        for el, rule in rules:
            self.write(el, {str(el.path[-1]): rule}, 2)

    def children(self) -> None:
        ids = self.ids("children")
        if not ids:
            return
        v = self.x.claims[ids[0]].value
        age, action = v.get("min_age"), v.get("action_on_discovery")
        data: dict[str, Any] = {"minimum_age": {"*": age if age is not None else TODO}}
        reading = _child_action(str(action)) if action else None
        if reading:
            data["on_discovery"] = reading
        el = self.element(
            "children", ("children",), "Children", ids, "element" if age is not None else "commented"
        )
        if age is None:
            self.add_todo(el, "children.minimum_age: the text states no age; write it, then uncomment")
        if not reading:
            said = f" (it says: {_quote(str(action))})" if action else ""
            self.add_todo(
                el,
                "children.on_discovery and at_signup: the text does not say what happens to a "
                f"child's account{said}; the language's defaults (delete_account, refuse) apply",
            )
        self.write(el, {"children": data}, 0)

    def cookies(self) -> None:
        ids = self.ids("cookies_and_tracking")
        refusals = [i for i in self.ids("rights") if self.x.claims[i].value["right"] == "opt_out_cookies"]
        if not ids and not refusals:
            return
        self.lines.append("# cookies:")
        if refusals:
            el = self.element("rights", ("cookies",), "Refusing cookies", refusals, "note")
            self.evidence(refusals, 0)
            self.add_todo(
                el,
                "cookies: the text says people can refuse cookies; give each cookie its consent modes",
            )
        for n, i in enumerate(ids):
            kind = str(self.x.claims[i].value["kind"])
            said = COOKIE_KINDS[kind]
            cookie: dict[str, Any] = {
                "name": TODO,
                "kind": said.get("kind", "cookie"),
                "category": said.get("category", TODO),
                "lifetime": said.get("lifetime", TODO),
            }
            el = self.element(
                "cookies_and_tracking", ("cookies", n), f"{_words(kind)} cookies", [i], "commented"
            )
            missing = [k for k in ("name", "category", "lifetime") if cookie[k] == TODO]
            self.add_todo(
                el,
                f"cookies: the text mentions {_words(kind).lower()} cookies or tracking but not their "
                f"{', '.join(missing)}; write each such cookie",
            )
            self.write(el, [cookie], 0)

    def security(self) -> None:
        ids = self.ids("security")
        if not ids:
            return
        self.lines.append("security:")
        for n, i in enumerate(ids):
            text = str(self.x.claims[i].value["measure"]).strip()
            el = self.element("security", ("security", n), text, [i])
            self.write(el, [{"measure": _slug(text, "measure"), "description": text}], 2)

    def special(self) -> None:
        ids = self.ids("special")
        if not ids:
            return
        self.lines.append("# Other practices the text states, which no element above expresses:")
        for i in ids:
            practice = str(self.x.claims[i].value["practice"]).strip()
            el = self.element("special", ("todo",), practice, [i], "note")
            self.evidence([i], 0)
            self.comment(practice, 0)
            self.add_todo(el, f"the text also says: {_quote(practice)} (c{i}); express it or note why not")


def _sentence_ends(text: str, pos: int, endpos: int) -> Iterator[re.Match[str]]:
    """Ends of sentences in text[pos:endpos], found as they are asked for: a line break, or
    . ! ? and a space, except after a common abbreviation ("e.g. ", "Inc. ")."""
    for m in _SENTENCE_END.finditer(text, pos, endpos):
        if m.group()[0] in ".!?":
            word = text[max(0, m.start() - 6) : m.start() + 1].rsplit(None, 1)[-1].lstrip('("“')
            if word.lower() in _ABBREVIATIONS:
                continue
        yield m


def _contact(channel: str) -> tuple[dict[str, str], str | None]:
    """A contact as the text gives it: an address, a web page, a number."""
    email = re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", channel)
    if email:
        return {"email": channel}, None
    spelled = re.fullmatch(r"([^@\s]+?)\s*[-\[( ]+at[-\]) ]+\s*([^@\s]+\.[^@\s]+)", channel, re.IGNORECASE)
    if spelled:
        return {"email": f"{spelled[1]}@{spelled[2]}"}, f"the text writes the address as {channel!r}"
    if re.match(r"(https?://|www\.)", channel, re.IGNORECASE) or re.fullmatch(r"\S+\.\S+/\S*", channel):
        return {"url": channel}, None
    if re.fullmatch(r"\+?[\d\s().-]{7,}", channel):
        return {"phone": channel}, None
    return {"address": channel}, "the text gives this contact; check it is a postal address"


def _child_action(text: str) -> str | None:
    low = text.lower()
    if "parent" in low or "guardian" in low:
        return "parental_consent"
    if any(w in low for w in ("delete", "remove", "terminat", "erase", "close")):
        return "delete_account"
    return None


def _with_code(place: str) -> str:
    code = _country_code(place)
    return f"{place} ({code})" if code else place


def _country_code(name: str) -> str | None:
    """ISO 3166 alpha-2 for an English country name, from phonenumbers' region names."""
    from phonenumbers.geodata.locale import LOCALE_DATA

    wanted = name.casefold().removeprefix("the ")
    aliases = {"usa": "US", "us": "US", "united states of america": "US", "uk": "GB", "eu": "EU"}
    if wanted in aliases:
        return aliases[wanted]
    for code, names in LOCALE_DATA.items():
        english = names.get("en", "")
        if english.startswith("*"):
            english = names.get(english[1:], "")
        if english.casefold() == wanted:
            return code
    return None


def _words(key: str) -> str:
    return key.replace("_", " ").capitalize()


__all__ = ["Draft", "DraftElement", "ExtractionError", "build_draft", "draft_policy", "validate_extraction"]
