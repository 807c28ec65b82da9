"""What the policy importer extracts from a privacy policy's text: claims, each tied to
the span of the source that says it.

The fields and the shape of each claim's ``value`` are those of the hand-made gold labels
in ``../shared/importer-gold/`` (its README, section 1), so an extraction can be scored
against them field by field (``Extraction.to_gold``), and so the draft policy.yaml
(``fiduciary.importer.draft``) and the review page (``fiduciary.importer.review``) read
one vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# List fields: any number of claims. Object fields: at most one claim each.
LIST_FIELDS: Final = (
    "categories",  # value {"key": fideslang data category}
    "purposes",  # value {"key": fideslang data use}
    "legal_bases",  # value {"basis": consent|contract|legal_obligation|vital_interest|...}
    "recipients",  # value {"name": str|None, "role": ..., "categories": [keys], "aggregate_only": bool}
    "retention",  # value {"scope": str, "period": one of the README's periods or an ISO-8601 duration}
    "rights",  # value {"right": ..., "channel": ...|None}
    "transfers",  # value {"country_or_region": str}
    "cookies_and_tracking",  # value {"kind": ...}
    "security",  # value {"measure": str}
    "special",  # value {"practice": str}
)
OBJECT_FIELDS: Final = (
    "last_updated",  # value {"date": "YYYY-MM-DD"}
    "sells_personal_data",  # value {"value": bool|None}
    "children",  # value {"min_age": int|None, "action_on_discovery": str|None}
    "policy_changes",  # value {"notice": [...], "material_change_choice": bool, "previous_...": bool}
    "contact",  # value {"channel": str}
)
FIELDS: Final = LIST_FIELDS + OBJECT_FIELDS

# Below this confidence a claim is flagged for review (draft comments, review page).
REVIEW_BELOW: Final = 0.7


@dataclass(frozen=True, slots=True)
class Evidence:
    """A span of the source: ``text == source_text[start:end]`` (character offsets into
    the decoded file as read, HTML and Markdown included)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Claim:
    field: str  # one of FIELDS
    value: Mapping[str, Any]
    evidence: Evidence
    confidence: float  # 0..1
    section: str | None = None  # the heading the sentence sits under

    @property
    def needs_review(self) -> bool:
        return self.confidence < REVIEW_BELOW


@dataclass(slots=True)
class Extraction:
    """Everything extracted from one file."""

    source: str  # the file's name
    source_text: str  # the file as read (decoded), which Evidence offsets index
    service: str | None = None
    claims: list[Claim] = field(default_factory=list)

    def of(self, name: str) -> list[Claim]:
        return [c for c in self.claims if c.field == name]

    def to_gold(self) -> dict[str, Any]:
        """The gold labels' shape (README section 1): list fields as lists of values with
        ``evidence``, object fields as one value with ``evidence`` or None."""
        out: dict[str, Any] = {"source": self.source, "service": self.service}
        for name in LIST_FIELDS:
            out[name] = [{**c.value, "evidence": c.evidence.text} for c in self.of(name)]
        for name in OBJECT_FIELDS:
            found = self.of(name)
            out[name] = {**found[0].value, "evidence": found[0].evidence.text} if found else None
        return out
