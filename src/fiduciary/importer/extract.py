"""Privacy policy text -> structured claims, each tied to the sentence that says it.

Rules, not a model: lexicons of the phrasings privacy policies use, run sentence by
sentence over the plain text of :mod:`fiduciary.importer.text`, with the context a reader
uses (the heading a sentence sits under, the lead-in of a list, its paragraph, what the
policy defined earlier). Every claim cites the source (``Evidence``: exact offsets into
the file as read, inside one sentence, 5-25 words where the sentence allows) and carries
a confidence: weak cues (a heading only, an inference from a neighbouring sentence) score
below ``REVIEW_BELOW`` so a person checks them.

Conventions follow the gold labels' guideline (``../shared/importer-gold/README.md``):
fideslang keys by the settled mappings; hedged language ("we may collect") counts;
negations never turn into the positive ("we do not sell" -> ``sells_personal_data``
false; "we do not knowingly collect ... from children under 13" -> ``children.min_age``
13, not a category); "such as" lists give their items, not the general term.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from fiduciary.importer.model import Claim, Evidence, Extraction
from fiduciary.importer.text import Document, Sentence, load_policy, parse_policy, sniff_format

__all__ = ["extract", "extract_document"]

_I = re.IGNORECASE


def _rx(pattern: str, flags: int = _I) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# ====================================================================== entry points


def extract(path_or_text: str | Path, *, source: str, encoding: str | None = None) -> Extraction:
    """Claims of one privacy policy: a file (``Path``, or a ``str`` naming an existing
    file) or the policy's text itself (any other ``str``). ``source`` names it in the
    result (the file name). Raises :class:`fiduciary.importer.text.PolicyTextError` for a
    file that cannot be read as text."""
    if isinstance(path_or_text, Path) or _looks_like_path(path_or_text):
        doc = load_policy(path_or_text, encoding=encoding)
    else:
        doc = parse_policy(path_or_text, sniff_format(path_or_text))
    return extract_document(doc, source=source)


def _looks_like_path(text: str) -> bool:
    if "\n" in text or len(text) > 4096 or not text.strip():
        return False
    if Path(text).exists():
        return True
    # a one-line string ending like a policy file is a path, even if it is missing
    return bool(re.search(r"\.(?:txt|text|md|markdown|html?|xhtml)$", text.strip(), _I))


def extract_document(doc: Document, *, source: str) -> Extraction:
    ctx = _DocContext(doc)
    found: list[_Cand] = []
    for detector in _DETECTORS:
        found.extend(detector(ctx))
    claims = _assemble(ctx, found)
    return Extraction(source=source, source_text=doc.source_text, service=ctx.service, claims=claims)


# ====================================================================== document context


@dataclass(slots=True)
class _Cand:
    """A claim before deduplication: the cue's span in the plain text, its sentence."""

    field: str
    value: dict[str, Any]
    sent: Sentence
    cue: tuple[int, int]
    conf: float
    key: tuple[Any, ...] = ()


_WRAPPER = _rx(
    r"wayback machine|web\.archive\.org|extracted and transformed from|archived (?:on|from)"
    r"|original snapshot"
)
_MD_LINKISH = re.compile(r"!?\[(?:!\[[^\]\n]*\]\([^)\n]*\)|[^\[\]\n])*\]\([^)\n]*\)|<[^>\n]+>")
_CHILD_WORD = _rx(r"\b(?:child(?:ren)?|child['’]s|minors?|kids|teens?|teenagers?|juveniles?|coppa)\b")
_CHILD_AGE = _rx(
    r"\b(?:under(?: the)?(?: age of)?\s+\d{1,2}|(?:aged?|ages)\s+(?:of\s+)?(?:under\s+)?\d{1,2}"
    r"|\d{1,2}\s+years?(?: of age| old)|younger than|below the age|minimum age|parents?|guardians?"
    r"|knowingly|age of (?:consent|majority)|underage|under age)\b"
)
_CHILD_SECTION = _rx(
    r"\b(?:children|child['’]s|minors|kids|coppa|age (?:limit|requirement)s?)\b(?! exploitation| abuse"
    r"| sexual)"
)
_UNDER_AGE_PERSON = _rx(
    r"\b(?:anyone|persons?|individuals?|users?|you are|people|visitors)\s+(?:who (?:is|are)\s+)?"
    r"(?:under|younger than|below)\s+(?:the\s+)?(?:age\s+of\s+)?\d{1,2}\b"
)
_TRACKING = _rx(
    r"\bcookies?\b|\bpixels?\b|\bweb ?beacons?\b|\bclear gifs?\b|\bsingle-pixel\b|\bgifs?\b"
    r"|\btracking\b|\bweb storage\b|\blocal storage\b|\bsdks?\b|\bplug-?ins?\b"
    r"|\banalytics (?:services?|tools?|providers?)\b|\bretargeting\b|\bnetwork tags?\b|\btags\b"
)


class _DocContext:
    """What the extractor knows about the whole document before it reads sentences."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.sentences = [s for s in doc.sentences if not self._wrapper_block(s.block)]
        self.position = {s.index: i for i, s in enumerate(self.sentences)}
        self.block_text = [doc.plain[b.start : b.end] for b in doc.blocks]
        self.by_block: dict[int, list[Sentence]] = {}
        for s in self.sentences:
            self.by_block.setdefault(s.block, []).append(s)
        self.children_block = {
            bi for bi, sents in self.by_block.items() if any(_is_children_sentence(s.text) for s in sents)
        }
        self.children_sentence = {
            s.index
            for s in self.sentences
            if _is_children_sentence(s.text)
            or (s.block in self.children_block and _CHILD_WORD.search(s.text))
        }
        self.tracking_block = {bi for bi in self.by_block if _TRACKING.search(self.block_text[bi])}
        self.service = _service_name(doc, self.sentences)
        self.aliases, self.suppressed = _category_definitions(self)
        self.role_override = _role_overrides(self.sentences)
        self.named_cache: dict[int, list[tuple[str, str, tuple[int, int]]]] = {}

    def _wrapper_block(self, bi: int) -> bool:
        """Text around the policy, never evidence: archive notes, navigation bars."""
        block = self.doc.blocks[bi]
        text = self.doc.plain[block.start : block.end]
        if _WRAPPER.search(text):
            return True
        s, e = self.doc.starts[block.start], self.doc.ends[block.end - 1]
        src = self.doc.source_text[s:e]
        linked = sum(len(m.group(0)) for m in _MD_LINKISH.finditer(src))
        bare = len(_MD_LINKISH.sub("", src).strip(" \t|·•-©0123456789"))
        return linked > 0 and bare < 0.25 * max(linked, 1) and len(text.split()) <= 25

    def children(self, s: Sentence) -> bool:
        """A sentence about children: it says so itself, or it mentions a child in a
        paragraph that does, or its section is about children."""
        if s.index in self.children_sentence:
            return True
        return bool(s.section and _CHILD_SECTION.search(s.section))

    def tracking(self, s: Sentence) -> bool:
        return s.block in self.tracking_block or bool(s.lead_in and _TRACKING.search(s.lead_in))

    def block_of(self, s: Sentence) -> str:
        return self.block_text[s.block]


_SMALL_WORDS: Final = frozenset(
    ["a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "with"]
)


def _is_label(s: Sentence) -> bool:
    """A heading, or a run-in heading: "Business Transfers and Sale." opening a paragraph."""
    if s.kind == "heading":
        return True
    words = s.text.rstrip(".:").split()
    if not words or len(words) > 6 or not s.text.endswith((".", ":")):
        return False
    return all(w[0].isupper() or w.lower() in _SMALL_WORDS or not w[0].isalpha() for w in words)


def _is_children_sentence(text: str) -> bool:
    return bool((_CHILD_WORD.search(text) and _CHILD_AGE.search(text)) or _UNDER_AGE_PERSON.search(text))


# ====================================================================== helpers


_CLAUSE_BREAK = _rx(r"[;:]|\(|\b(?:but|however|although|though|except|unless|whereas|other than|while)\b")


def _clause_before(text: str, pos: int) -> str:
    """The text of the clause a cue at ``pos`` sits in, up to the cue."""
    start = 0
    for m in _CLAUSE_BREAK.finditer(text, 0, pos):
        start = m.end()
    return text[start:pos]


def _cand(
    field_: str,
    value: dict[str, Any],
    s: Sentence,
    m: re.Match[str] | tuple[int, int],
    conf: float,
    key: tuple[Any, ...] = (),
) -> _Cand:
    a, b = (m.start(), m.end()) if isinstance(m, re.Match) else m
    return _Cand(field_, value, s, (s.start + a, s.start + b), conf, key)


_WORD = re.compile(r"\S+")


def _evidence_span(plain: str, s: Sentence, cue: tuple[int, int], max_words: int = 25) -> tuple[int, int]:
    """The sentence if it has at most ``max_words`` words, else the clauses around the
    cue (a parenthesis stays whole) that fit in ``max_words``, else a window of words
    centred on the cue."""
    words = [(s.start + m.start(), s.start + m.end()) for m in _WORD.finditer(s.text)]
    if len(words) <= max_words:
        return s.start, s.end
    cs, ce = cue
    i = next((k for k, (_, we) in enumerate(words) if we > cs), len(words) - 1)
    j = max((k for k, (ws, _) in enumerate(words) if ws < ce), default=i)
    j = max(j, i)
    # clauses: word runs ending at , ; : outside parentheses
    clauses: list[tuple[int, int]] = []
    depth, first = 0, 0
    for k, (ws, we) in enumerate(words):
        w = plain[ws:we]
        depth = max(0, depth + w.count("(") - w.count(")"))
        if (depth == 0 and w.endswith((",", ";", ":"))) or k == len(words) - 1:
            clauses.append((first, k))
            first = k + 1
    ci = next(n for n, (f, last) in enumerate(clauses) if f <= i <= last)
    cj = next(n for n, (f, last) in enumerate(clauses) if f <= j <= last)
    lo, hi = ci, cj
    if clauses[hi][1] - clauses[lo][0] + 1 <= max_words:
        while True:
            if lo > 0 and clauses[hi][1] - clauses[lo - 1][0] + 1 <= max_words:
                lo -= 1
            elif hi < len(clauses) - 1 and clauses[hi + 1][1] - clauses[lo][0] + 1 <= max_words:
                hi += 1
            else:
                break
        i, j = clauses[lo][0], clauses[hi][1]
        while j - i + 1 < 5 and i > 0:
            i -= 1
    else:
        if j - i + 1 > max_words:
            j = i + max_words - 1
        spare = max_words - (j - i + 1)
        i = max(0, i - spare // 2)
        j = min(len(words) - 1, i + max_words - 1)
    start, end = words[i][0], words[j][1]
    while end > start and plain[end - 1] in ",;:":
        end -= 1
    return start, end


# ====================================================================== categories

# (pattern, key or None, kind): None claims a span so later patterns do not misread it;
# kind "hard" needs nothing more, "soft" needs a data verb in the sentence, "general" is a
# general term that examples or a definition may spell out.
_CAT_EXCLUDE: Final = (
    r"\bthe internet address\b",
    r"\b(?:internet|web|mac|wallet) address(?:es)?\b",
    r"\b(?:credit card|card) (?:issuers?|companies|networks|processors)\b",
    r"\b(?:brand|domain|trade|product|service) names?\b(?! and e-?mail)",
    r"\bour (?:company|business|organi[sz]ation|legal) names?\b",
    r"\bnames? (?:and addresses )?of (?:the|those|these|such|any|our|that|its|their|a|an)\b",
    r"\baddress(?:es)? of (?:those|the|these|such|our|its)\b",
    r"[\"“](?:likes?|follows?|tweets?|shares?)[\"”]",
    r"\b(?:account|user)\s*[\"“]?profile[\"”]?\s*page\b|[\"“][A-Z][\w ]*Profile[\"”]",
    r"\bsearch (?:engines?|results)\b(?! keywords)",
    r"\bweb searches\b",
    r"\bpreferences or options menus?\b",
    r"\bdevelopment skills\b",
    r"\bphone settings\b",
    r"\bpublicly available\b",
)

_CATEGORY_RULES: Final[tuple[tuple[str, str, str], ...]] = (
    # contact
    (r"\be-?mail (?:address(?:es)?|ids?)\b", "user.contact.email", "hard"),
    (r"\bpay ?pal(?: account)?\b", "user.payment", "hard"),
    (
        r"\b(?:internet protocol\s*\(?\s*[\"“]?ip[\"”]?\s*\)?|ip)[- ]address(?:es)?\b",
        "user.device.ip_address",
        "hard",
    ),
    (
        r"\bidentifiers? (?:associated with|stored in|contained in|set by) cookies\b|\bcookie (?:ids?"
        r"|identifiers?)\b",
        "user.device.cookie_id",
        "hard",
    ),
    (
        r"\bdevice (?:ids?|identifiers?)\b|\bunique (?:device )?identifiers? (?:assigned )?to (?:the"
        r"|your) device\b"
        r"|\b(?:advertising|mobile) (?:ids?|identifiers?)\b|\b(?:udid|idfa|imei)\b",
        "user.device.device_id",
        "hard",
    ),
    (r"\bsession ids?\b|\bunique user (?:ids?|identifiers?)\b", "user.unique_id", "hard"),
    (
        r"\buser ?names?\b|\baccount names?\b|\blog-?in names?\b|\bscreen names?\b|\bnicknames?\b",
        "user.account.username",
        "hard",
    ),
    (r"\bpass(?:words?|phrases?)\b", "user.authorization.password", "hard"),
    (r"\b(?:cookie|privacy|consent) (?:preferences|choices)\b", "user.privacy_preferences", "hard"),
    (r"\bcookies?\b", "user.device.cookie", "hard"),
    (
        r"\bcompany (?:names?|details|information)\b|\b(?:business|organi[sz]ation) names?\b"
        r"|\b(?:your|the) (?:company|organi[sz]ation)['’]?s? name\b|(?<=, )company(?=,)|\byour (?:company"
        r"|organi[sz]ation)\b",
        "user.contact.organization",
        "hard",
    ),
    (
        r"\byour employer\b|\bemployer (?:name|information|details)\b|\bplace of work\b",
        "user.workplace",
        "hard",
    ),
    (r"\b(?:job|professional) (?:titles?|positions?|roles?)\b|\boccupations?\b", "user.job_title", "hard"),
    (r"\bfirst and last names?\b|\b(?:full|real|legal|given) names?\b", "user.name", "hard"),
    (r"\bfirst names?\b", "user.name.first", "hard"),
    (r"\b(?:last|family|sur) ?names?\b", "user.name.last", "hard"),
    (r"\bnames?\b", "user.name", "list"),
    (
        r"\b(?:physical|postal|mailing|home|street|billing|shipping|residential|business|work|other physical)"
        r"(?: or other physical)? address(?:es)?\b",
        "user.contact.address",
        "hard",
    ),
    (r"\baddress(?:es)?\b", "user.contact.address", "list"),
    (r"\bhome ?towns?\b|\b(?:city|town) of residence\b", "user.contact.address.city", "hard"),
    (r"\bcity\b(?!-level)", "user.contact.address.city", "list"),
    (r"\b(?:zip|postal|post) ?codes?\b|\bzip\b", "user.contact.address.postal_code", "hard"),
    (r"\bcountry of residence\b", "user.contact.address.country", "hard"),
    (r"\bfax numbers?\b", "user.contact.fax_number", "hard"),
    (
        r"\b(?:tele|mobile |cell(?:ular)? |cell )?phone numbers?\b|\bmobile numbers?\b"
        r"|(?<=, )(?:tele)?phone(?=,| and| or)",
        "user.contact.phone_number",
        "hard",
    ),
    (
        r"\bwebsite urls?\b|\bsocial (?:network|media) (?:handles?|profiles?|accounts?|usernames?)\b"
        r"|\blinks? to your (?:website|social|profiles?)\b",
        "user.contact.url",
        "hard",
    ),
    (
        r"\b(?:profile )?(?:photos?|photographs?|pictures?|avatars?|selfies?)\b|\bimages? of (?:you"
        r"|yourself)\b",
        "user.content.self_image",
        "hard",
    ),
    # demographic
    (r"\bgender\b|\bsex\b", "user.demographic.gender", "hard"),
    (r"\b(?:date of birth|birth ?dates?|birthdays?|dob)\b", "user.demographic.date_of_birth", "hard"),
    (r"\bage (?:range|group|bracket)s?\b", "user.demographic.age_range", "hard"),
    (r"\bage\b", "user.demographic.age_range", "list"),
    (
        r"\b(?:browser|preferred) languages?\b|\blanguage (?:preferences?|settings?)\b",
        "user.demographic.language",
        "hard",
    ),
    (r"\blanguages?\b", "user.demographic.language", "browser"),
    (r"\bmarital status\b", "user.demographic.marital_status", "hard"),
    (r"\brace\b|\bethnic(?:ity| origin)\b", "user.demographic.race_ethnicity", "hard"),
    (r"\breligio(?:n|us (?:beliefs?|views))\b", "user.demographic.religious_belief", "hard"),
    (
        r"\bpolitical (?:opinions?|views|affiliations?|beliefs?)\b",
        "user.demographic.political_opinion",
        "hard",
    ),
    (r"\bsexual orientation\b", "user.demographic.sexual_orientation", "hard"),
    (r"\bdemographic (?:information|data|details)\b", "user.demographic", "general"),
    # sensitive and official
    (
        r"\b(?:health|medical) (?:data|information|records?|history|conditions?)\b",
        "user.health_and_medical",
        "hard",
    ),
    (r"\bfinger ?prints?\b", "user.biometric.fingerprint", "hard"),
    (r"\bvoice ?prints?\b", "user.biometric.voice", "hard"),
    (
        r"\bbiometric (?:data|information|identifiers?)\b|\bfac(?:e ?prints?|ial (?:recognition|geometry))\b",
        "user.biometric",
        "hard",
    ),
    (r"\bpassports?(?: numbers?| data| details)?\b", "user.government_id.passport_number", "hard"),
    (r"\bdriver['’]?s['’]? licen[cs]e(?: numbers?)?\b", "user.government_id.drivers_license_number", "hard"),
    (
        r"\b(?:social security|national (?:id|identification|insurance)|tax (?:id"
        r"|identification))(?: numbers?)?\b",
        "user.government_id.national_identification_number",
        "hard",
    ),
    (r"\bcriminal (?:records?|history|convictions?|offen[cs]es)\b", "user.criminal_history", "hard"),
    (
        r"\bvehicle registration(?: numbers?)?\b|\blicen[cs]e plates?(?: numbers?)?\b",
        "user.government_id.vehicle_registration",
        "hard",
    ),
    # financial
    (
        r"\b(?:purchase|order|transaction|buying|payment) histor(?:y|ies)\b|\bpast (?:purchases|transactions"
        r"|orders)\b"
        r"|\bproducts? (?:you|that you) (?:have )?(?:purchased?|bought|buy)\b",
        "user.behavior.purchase_history",
        "hard",
    ),
    (
        r"\b(?:credit|debit|payment|bank) card(?:s)?(?: (?:numbers?|information|details|data))?\b"
        r"|\bcard (?:numbers?|details)\b|\bcvv\b|\bexpiration dates?\b",
        "user.financial.credit_card",
        "hard",
    ),
    (
        r"\bbank(?:ing)? (?:account|details)(?: (?:numbers?|details|information))?\b|\biban\b"
        r"|\brouting numbers?\b",
        "user.financial.bank_account",
        "hard",
    ),
    (r"\b(?:billing|payment) (?:information|data|details)\b", "user.payment", "general"),
    (r"\bbilling\b|\bpayment records?\b", "user.payment", "hard"),
    (r"\bfinancial (?:information|data|details)\b", "user.financial", "general"),
    # behaviour
    (
        r"\bbrowsing (?:history|activity|data|behaviou?r)\b|\bclickstream\b|\breferr?(?:er|ing) (?:urls?"
        r"|pages?|sites?|websites?)\b"
        r"|\breferr?er\b|\b(?:web ?)?pages? (?:you|they) (?:visit(?:ed)?|view(?:ed)?)\b"
        r"|\bweb pages? from which you came\b"
        r"|\bsites? you came from\b|\bpages? (?:viewed|visited)\b|\bpaths? taken\b|\btime spent on\b"
        r"|\blinks? (?:you )?clicked\b|\bwhat links you clicked\b|\b(?:which"
        r"|what) (?:of our )?(?:web )?pages (?:you|they) visit"
        r"|\bnumber of visits\b|\bvisits to (?:other )?(?:websites|sites|web ?pages)\b|\bexit (?:pages?"
        r"|urls?)\b"
        r"|\b(?:url|uniform resource locator)[^.;]{0,60}\b(?:visited|came from|visit after|before coming)\b",
        "user.behavior.browsing_history",
        "hard",
    ),
    (
        r"\b(?:use|usage) of (?:the |our |this )?(?:web ?site|site|web ?pages?)\b(?! (?:and/or|and"
        r"|or) (?:products?|services?))",
        "user.behavior.browsing_history",
        "soft",
    ),
    (
        r"\bsearch (?:history|histories|terms|queries|keywords|requests)\b|\bsearch engine keywords\b"
        r"|\bsearches you (?:make|perform|run)\b|\bperform(?:ed)? (?:a )?searche?s?\b"
        r"|\bcontent (?:you )?searched\b"
        r"|\bwhat you search\b",
        "user.behavior.search_history",
        "hard",
    ),
    (
        r"\bcontent (?:you (?:have )?(?:read|view(?:ed)?|watch(?:ed)?|listen(?:ed)? to)|consumed)\b"
        r"|\b(?:articles|videos|posts) you (?:read|view|watch)\b|\bmedia consumption\b|\bviewing history\b",
        "user.behavior.media_consumption",
        "hard",
    ),
    (
        r"\busage (?:information|data|details|statistics|logs?)\b|\bcall (?:history|logs?|records?"
        r"|detail records?)\b"
        r"|\baccess statistics\b|\bactivity (?:data|logs?|information)\b",
        "user.behavior",
        "hard",
    ),
    (
        r"\b(?:use|usage) of (?:the |our |its )?(?:(?:web ?site|site)s? (?:and/or|and|or) )?(?:services?"
        r"|products?|platform|apps?|applications?|software)\b"
        r"|\bhow you (?:use|used|interact(?:ed)? with) (?:the|our)\b|\byour use of the\b",
        "user.behavior",
        "soft",
    ),
    # device and location
    (
        r"\b(?:precise|exact|gps|fine) (?:geo-?)?location(?: data| information)?\b|\bgps\b",
        "user.location.precise",
        "hard",
    ),
    (
        r"\b(?:general|approximate|coarse|aggregated|imprecise|city-level|country-level)"
        r"(?:(?: and/or| and| or) (?:general|approximate|coarse|aggregated|imprecise))? location\b",
        "user.location.imprecise",
        "hard",
    ),
    (
        r"\bgeo-?location\b|\blocation (?:data|information)\b|\b(?:your|his|her|their|device"
        r"|user['’]s) (?:current )?location\b"
        r"|\b(?:pick-?up|drop-?off|current|approximate|last known|real-time|home) locations?\b",
        "user.location",
        "hard",
    ),
    (r"\b(?:device|browser) (?:information|data|details)\b", "user.device", "general"),
    (
        r"\bdevice (?:type|model|settings|characteristics)\b|\b(?:browser|operating system|os) (?:type"
        r"|version|settings)\b"
        r"|\btype of (?:browser|device|operating system)\b|\bbrowser (?:used|you (?:are )?us(?:e|ing))\b"
        r"|\buser[- ]agents?\b"
        r"|\boperating systems?\b|\bhardware models?\b|\bnetwork connections?(?: information)?\b"
        r"|\bscreen resolution\b",
        "user.device",
        "hard",
    ),
    # content and social
    (
        r"\b(?:files?|documents?|data and content|content) (?:that |which )?(?:you|a user|users|the user"
        r"|customers?) "
        r"(?:upload|store|serve)s?\b|\buploads? or stores?\b|\b(?:your|uploaded|stored|deleted|media"
        r"|customer) files\b"
        r"|\bfiles? (?:to be )?(?:uploaded|written|stored)\b|\ba file from your\b|\bcontent you serve\b"
        r"|\bcustomer content\b"
        r"|\bhttp requests and responses\b|\b(?:e-?mails|messages|correspondence|communications"
        r"|feedback)[^.;]{0,40}"
        r"\byou (?:send|submit|provide) (?:to )?us\b|\bif you (?:communicate|correspond) with us\b"
        r"|\bcorrespondence\b"
        r"|\bcontent of (?:your )?(?:messages|communications)\b|\bprivate messages\b",
        "user.content.private",
        "hard",
    ),
    (
        r"\b(?:content|information) (?:that )?you (?:create|submit|upload|generate)\b"
        r"|\buser[- ]generated content\b",
        "user.content",
        "hard",
    ),
    (
        r"\b(?:content|information|data) (?:that )?you (?:publicly )?(?:post|publish)\b"
        r"|\bpublicly[- ](?:post|share|shared|posted)\b"
        r"|\bpublic (?:content|posts?|profiles?|information about you|comments)\b|\byour posts?\b"
        r"|\bmake (?:\w+ and )?(?:\w+ )?content public\b|\b(?:articles|posts)(?=[,)]| and| or)",
        "user.content.public",
        "hard",
    ),
    (
        r"\b(?:people|members|users) you (?:connect|follow|are connected)\w*\b|\btopics you follow\b"
        r"|\bsocial (?:actions?|activity|interactions?|graph|connections)\b|\byour (?:connections|followers"
        r"|friends(?: list)?)\b"
        r"|\b(?:likes|follows|shares)\b(?=[,)]| and| or)|\bwhen you (?:send|receive)[^.;]{0,30}\bmessages\b"
        r"|\bmessage metadata\b",
        "user.social",
        "hard",
    ),
    (
        r"\b(?:create|creating|set up|complete) (?:a |your )?profiles?\b"
        r"|\byour (?:public )?profiles?\b(?!['’]s)"
        r"|\bprofile (?:information|data|details)\b|\byour preferences\b|\buser preferences\b"
        r"|\binferred (?:interests|preferences)\b"
        r"|\binterest profiles?\b|\b(?:which|what) topics you\b|\b(?:generated|inferred) from your use\b",
        "user.demographic.profile",
        "hard",
    ),
    (
        r"\bsign[- ]?up dates?\b|\bregistration (?:date|data|information|details)\b|\baccount (?:information"
        r"|data|details)\b",
        "user.account",
        "hard",
    ),
    (r"\bcontact (?:(?:and|or) \w+ )?(?:information|info|details|data)\b", "user.contact", "general"),
    (r"\bsocial (?:information|data)\b", "user.social", "general"),
)

_CAT_EXCLUDE_RX: Final = tuple(_rx(p) for p in _CAT_EXCLUDE)
_CAT_RX: Final = tuple((_rx(p), key, kind) for p, key, kind in _CATEGORY_RULES)

_LIST_BEFORE = _rx(
    r"(?:,|such as|including|e\.g\.,?|i\.e\.,?|:|\(|\byour|\bhis or her|\btheir|\band|\bor"
    r"|\bthe user['’]s)\s*$"
)
_ADDRESS_AFTER_NOT = _rx(
    r"^\s*(?:of|found|below|above|you|to|the|your|any|it|this|these|those|questions|concerns|issues|book"
    r"|provided)\b"
)
_AGE_AFTER_NOT = _rx(r"^\s*(?:of|limit|requirement|verification|gate)\b")
_SOFT_VERBS = _rx(
    r"\b(?:collect|gather|log|logs|record|track|monitor|receiv|obtain|captur|analy[sz]|understand|measur"
    r"|generat"
    r"|evaluat|information about|data about|details about|statistic|automatically|includ|contain"
    r"|keep track)\w*"
)
_CATEGORY_NEGATION = _rx(
    r"\b(?:do|does|will|shall|did|would|can|may)\s*(?:not|n['’]t)\s+(?:\w+\s+){0,3}?"
    r"(?:collect|gather|store|keep|ask|request|solicit|require|receive|obtain|process|retain|record|track"
    r"|have access|access|use)"
    r"|\bnever\s+(?:\w+\s+)?(?:collect|gather|store|ask|request|solicit|receive|obtain)|\bnowhere\b"
    r"|\bnot mandatory\b"
)
_COLLECTS = _rx(
    r"\b(?:we|us|it|they)\s+(?:may\s+|will\s+|also\s+|automatically\s+)*(?:collect|record|log|gather|receive"
    r"|obtain|capture|store|keep|ask|require)\w*\b"
    r"|\b(?:need|required|asked) to provide\b|\b(?:information|data) (?:we|that we) collect\b"
)
_COOKIE_DEFINITION = _rx(
    r"\b(?:a |these |such )?[\"“]?cookies?[\"”]?,?\s+(?:is|are|which are)\s+(?:a\s+)?(?:small\s+)?(?:text\s+"
    r"|data\s+)?files?\b"
    r"|\bis a small (?:text |data )?file\b"
)
_INTRO = re.compile(
    r"\s*(?:[^.;:()]{0,30}?)(?:\(\s*(?P<paren>e\.g\.,?|i\.e\.,?|including|such as|like)?"
    r"|,?\s*(?P<word>such as|including|like|e\.g\.,?|i\.e\.,?|namely|that is,?)|(?P<colon>:))",
    _I,
)
_RESIDUAL = _rx(r"\b(?:or|and) (?:any )?other\s+$")
_DEFINITION_END = _rx(r"[,;:)]|\s(?:to|for|in order|which|that|where|when|so)\s")


@dataclass(frozen=True, slots=True)
class _CatHit:
    key: str
    start: int  # offsets into the sentence
    end: int
    kind: str


@lru_cache(maxsize=4096)
def _category_hits(text: str) -> tuple[_CatHit, ...]:
    """Data category mentions of one sentence (no context rules applied)."""
    taken = [False] * (len(text) + 1)

    def free(a: int, b: int) -> bool:
        return not any(taken[a:b])

    def take(a: int, b: int) -> None:
        for i in range(a, b):
            taken[i] = True

    for rx in _CAT_EXCLUDE_RX:
        for m in rx.finditer(text):
            if free(m.start(), m.end()):
                take(m.start(), m.end())
    hits: list[_CatHit] = []
    lower = text.lower()
    for rx, key, kind in _CAT_RX:
        for m in rx.finditer(text):
            a, b = m.start(), m.end()
            if not free(a, b):
                continue
            before, after = text[max(0, a - 40) : a], text[b : b + 40]
            if kind == "list":
                if not _LIST_BEFORE.search(before):
                    continue
                if key == "user.contact.address" and _ADDRESS_AFTER_NOT.match(after):
                    continue
                if key == "user.demographic.age_range" and _AGE_AFTER_NOT.match(after):
                    continue
            if kind == "browser" and "browser" not in lower:
                continue
            take(a, b)
            hits.append(_CatHit(key, a, b, "hard" if kind in ("list", "browser") else kind))
    hits.sort(key=lambda h: h.start)
    return tuple(hits)


def _spelled_out(text: str, hit: _CatHit, hits: tuple[_CatHit, ...]) -> tuple[bool, bool, list[str]]:
    """Whether examples or a definition follow a general term in its sentence:
    (suppress the general key, define it for the whole document, the keys given)."""
    m = _INTRO.match(text, hit.end)
    if not m:
        return False, False, []
    marker = (m.group("paren") or m.group("word") or "").lower()
    span_end = len(text)
    if m.group(0).rstrip().endswith("(") or m.group("paren"):
        close = text.find(")", m.end())
        span_end = close if close >= 0 else span_end
    elif marker.startswith(("i.e", "namely", "that is")):
        # a definition names one thing: it ends with its noun phrase
        stop = _DEFINITION_END.search(text, m.end())
        span_end = stop.start() if stop else span_end
    else:
        semi = text.find(";", m.end())
        span_end = semi if semi >= 0 else span_end
    span_end = min(span_end, m.end() + 220)
    keys = [h.key for h in hits if m.end() <= h.start < span_end and h.kind != "general"]
    if not keys:
        return False, False, []
    defines = not marker.startswith("e.g") and marker not in ("including", "like")
    return True, defines, keys


def _category_definitions(ctx: _DocContext) -> tuple[dict[str, list[str]], set[tuple[int, int]]]:
    """General terms the policy spells out: by "i.e." / a bare parenthesis / "such as"
    (for the whole policy) or by examples (that sentence only)."""
    aliases: dict[str, list[str]] = {}
    suppressed: set[tuple[int, int]] = set()
    for s in ctx.sentences:
        hits = _category_hits(s.text)
        for h in hits:
            if h.kind != "general":
                continue
            suppress, defines, keys = _spelled_out(s.text, h, hits)
            if suppress:
                suppressed.add((s.index, h.start))
            if defines and h.key not in aliases:
                aliases[h.key] = list(dict.fromkeys(keys))
    return aliases, suppressed


def _sentence_categories(
    ctx: _DocContext, s: Sentence, *, negation: bool = True
) -> list[tuple[str, _CatHit, float]]:
    """(key, hit, confidence) for the categories a sentence says are processed."""
    out: list[tuple[str, _CatHit, float]] = []
    hits = _category_hits(s.text)
    soft_ok = bool(_SOFT_VERBS.search(s.text)) or bool(s.lead_in and _SOFT_VERBS.search(s.lead_in))
    collects = bool(_COLLECTS.search(s.text))
    for h in hits:
        if negation and _CATEGORY_NEGATION.search(_clause_before(s.text, h.start)):
            continue
        if h.kind == "soft" and not soft_ok:
            continue
        if h.kind == "general":
            if (s.index, h.start) in ctx.suppressed or _RESIDUAL.search(
                s.text[max(0, h.start - 20) : h.start]
            ):
                continue
            if h.key in ctx.aliases:
                out.extend((k, h, 0.65) for k in ctx.aliases[h.key])
                continue
            out.append((h.key, h, 0.7))
            continue
        conf = 0.85 if h.kind == "hard" else 0.65
        if s.kind == "heading":
            conf -= 0.2
        if collects or (h.key == "user.device.cookie" and _COOKIE_DEFINITION.search(s.text)):
            conf += 0.05  # the sentence says it is collected (or defines it): the best citation
        out.append((h.key, h, conf))
    return out


def _detect_categories(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        if ctx.children(s):
            continue
        for key, h, conf in _sentence_categories(ctx, s):
            yield _cand("categories", {"key": key}, s, (h.start, h.end), conf, (key,))


# ====================================================================== purposes

_PURPOSE_RULES: Final[tuple[tuple[str, str, float], ...]] = (
    # ads first: they claim the words "tailored", "measure" before personalisation and analytics
    (
        r"\b(?:targeted|tailored|personali[sz]ed|interest-based|behaviou?ral|relevant|customi[sz]ed) "
        r"(?:ads|advertisements|advertising)\b|\b(?:ad|ads|advertising|advertisements?) targeting\b"
        r"|\btargeting of (?:ads|advertisements|advertising)\b|\bretargeting\b|\bremarketing\b"
        r"|\badvertisements? about (?:goods|products|services)[^.;]{0,60}\binterest to you\b"
        r"|\bads? (?:based on|related to) your\b",
        "@targeted",
        0.75,
    ),
    (
        r"\b(?:serve|serving|display|displaying|show|showing|deliver|delivering|place|placing) "
        r"(?:you )?(?:ads|advertisements|advertising)\b",
        "marketing.advertising.serving",
        0.75,
    ),
    (
        r"\b(?:advertising|ad|ads) (?:effectiveness|performance|measurement|metrics)\b"
        r"|\beffectiveness of (?:our |the )?(?:overall )?(?:online )?(?:advertising|ads|advertisements)\b"
        r"|\bmeasur\w*[^.;]{0,30}\badvertising\b|\btargeting and measurement\b",
        "analytics.reporting.ad_performance",
        0.75,
    ),
    (
        r"\bpopularity of (?:certain |our )?content\b|\beffectiveness of [^.;]{0,40}\bcontent\b"
        r"|\bcontent (?:performance|popularity)\b",
        "analytics.reporting.content_performance",
        0.75,
    ),
    (
        r"\bmeasure (?:our |the )?(?:promotions|campaigns)\b|\b(?:promotions"
        r"|campaigns?) (?:and )?performance\b"
        r"|\b(?:web ?site )?pages and promotions\b|\bcampaign (?:insights|effectiveness)\b",
        "analytics.reporting.campaign_insights",
        0.7,
    ),
    (
        r"\bnewsletters?\b|\bpromotional (?:e-?mails?|messages|materials?|offers|communications)\b"
        r"|\bmarketing (?:and promotional )?(?:e-?mails?|messages|materials?|communications)\b"
        r"|\b(?:send|receive)\w* (?:you )?(?:offers|promotions)\b|\bpublicize and promote\b"
        r"|\bpromote third[- ]party products\b",
        "@marketing_comms",
        0.75,
    ),
    (
        r"\bsweepstakes\b|\bcontests?\b|\bpromotional (?:efforts|purposes|activities)\b|\bmembership growth\b"
        r"|(?<!direct )\bmarketing\b(?! (?:and promotional )?(?:e-?mails?|messages|materials?|communications"
        r"|partners|purposes of))",
        "marketing",
        0.6,
    ),
    (
        r"\bcomply (?:with )?(?:any |our |all |the )?(?:applicable )?(?:laws?|legal|regulations?|judicial"
        r"|court|governmental|federal)\b"
        r"|\bcompliance with (?:applicable )?(?:laws?|legal)\b|\brequired by (?:applicable )?law\b"
        r"|\blegal (?:requirements?|process|obligations?)\b|\blaw enforcement\b|\bsubpoenas?\b"
        r"|\bcourt orders?\b"
        r"|\bsatisfy any law\b|\bjudicial (?:order|proceeding)s?\b|\bgovernmental requests?\b",
        "@legal",
        0.7,
    ),
    (
        r"\b(?:shar\w+|disclos\w+|sell\w*)\b[^.;]{0,60}\bthird parties\b[^.;]{0,40}\bfor their own\b",
        "third_party_sharing",
        0.7,
    ),
    (
        r"\benforc\w* (?:our |the |these |any |its )?(?:terms|agreements?|policies|rights|user agreement"
        r"|this privacy policy)\b"
        r"|\bresolv\w* (?:any )?disputes\b|\bdefend\w* (?:ourselves|our (?:legal )?rights|against)\b"
        r"|\bprotect (?:or defend )?(?:the|our) (?:legal )?rights\b|\badministrative tasks\b"
        r"|\blegal claims\b",
        "operations",
        0.65,
    ),
    (r"\baudit(?:s|ing)?\b|\baccounting\b|\btax (?:purposes|reporting)\b", "finance", 0.6),
    (
        r"\bpayment processing\b|\bprocess(?:ing)? (?:your )?(?:payments?|orders?|transactions?"
        r"|purchases?)\b|\bpayments\b"
        r"|\bfee-based transactions\b|\bbilling purposes\b|\bto bill you\b|\border (?:and|&) payment\b"
        r"|\bcomplete (?:your )?(?:purchases?|transactions?)\b"
        r"|\bprocess(?:ing)? and (?:deliver|fulfil+|ship)\w* (?:your )?orders?\b",
        "essential.service.payment_processing",
        0.7,
    ),
    (
        r"\bauthenticat\w+\b|\bverify (?:your )?(?:identity|access)\b|\bverification of (?:your )?identity\b"
        r"|\b(?:lost|forgotten|reset(?:ting)?|retriev\w+ lost|chang\w+) passwords?\b|\bpassword resets?\b"
        r"|\bidentify (?:you|the user|a particular user)[^.;]{0,40}\b(?:session|requests|logged in)\b"
        r"|\bre-enter[^.;]{0,40}\bpassword\b|\bsession identification\b",
        "essential.service.authentication",
        0.7,
    ),
    (
        r"\bfor security\b|\bsecurity purposes\b|\b(?:enhance|maintain|ensure|protect|improve"
        r"|safeguard)\w* (?:the )?"
        r"(?:safety and )?security\b|\bprotect (?:the )?(?:interests|safety|security|integrity)\b"
        r"|\bsecurity, fraud\b"
        r"|\bprotect (?:you|our users|users)\b|\bkeep (?:\w+ )?(?:community|users|platform|service"
        r"|members) safe\b|\bsecur(?:e|ing) (?:the|our) (?:service|services|platform|systems?|network"
        r"|accounts?)\b",
        "essential.service.security",
        0.7,
    ),
    (
        r"\bfraud\w*\b|\bmisuse\b|\babuse\b|\billegal (?:activit\w+|content)\b|\bexploitation content\b"
        r"|\bhash(?:es)? of known\b|\bfalse entr\w+\b|\bspam\b",
        "essential.fraud_detection",
        0.75,
    ),
    (
        r"(?<!contact )\bcustomer (?:service|support|care)\b|\b(?:technical |customer )?support requests?\b"
        r"|\brespond to (?:your )?(?:questions|inquiries|enquiries|comments|complaints)\b"
        r"|\banswer (?:your )?(?:questions|inquiries)\b"
        r"|\bassist you with\b|\bsupport team\b|\bresolve complaints\b|\bhelp you\b|\bhelp ?desk\b"
        r"|\bprovide,? support\b"
        r"|,\s*support\s*,",
        "essential.service.operations.support",
        0.7,
    ),
    (
        r"\bcontact you\b|\bservice (?:messages|announcements|notices|notifications|communications)\b"
        r"|\badministrative (?:e-?mails|messages|notices|communications)\b|\b(?:send"
        r"|provide) (?:you )?(?:notices|notifications|alerts)\b"
        r"|\bnotices to your\b|\bmessages about how to use\b|\bmedium for communications\b",
        "@notifications",
        0.65,
    ),
    (
        r"\bset up (?:your |a )?(?:user )?account\b|\bfulfil+ (?:your )?orders?\b"
        r"|\bservices? you (?:have )?requested\b"
        r"|\b(?:provide|deliver|offer)\b(?!\s+us\b)(?=(?:,?\s+(?:and\s+|or\s+"
        r"|and/or\s+)?[\w/]+){0,5}?\s+(?:you\s+(?:with\s+)?)?"
        r"(?:our\s+|the\s+|your\s+|its\s+)?(?:requested\s+)?(?:services?|products?|platform)\b)",
        "essential.service",
        0.7,
    ),
    (
        r"\boperat(?:e|ing) (?:the|our|its)\b|\boperation of\b|\bmaintain(?:ing)? (?:the|our"
        r"|its) (?:services?|site|web ?site|platform|products?|systems?|[A-Z]\w+)\b"
        r"|\bmaintenance\b|(?<!regarding the )\badminist(?:er|ering|ration)\b(?! (?:of )?(?:sweepstakes"
        r"|contests|promotions))"
        r"|\b(?:operate|maintain)(?=,| and\b)"
        r"|\btroubleshoot\w*|\bdiagnos\w+|\bfix (?:bugs|problems|errors|issues)\b|\bdebug\w*|\bbugs\b"
        r"|\btechnical (?:issues|problems)\b",
        "essential.service.operations",
        0.7,
    ),
    (
        r"\bimprov\w*\b(?![^.;]{0,25}\b(?:marketing|ad|ads|advertising|targeting|understanding)\b)"
        r"|\bdevelop(?:ment)?\b(?! skills)"
        r"|\bresearch\b|\bquality assurance\b|\benhance the operation\b|\bneed improvement\b",
        "functional.service.improve",
        0.7,
    ),
    (
        r"\bremember\w*\b|\bfaster access\b|\bsave you time\b|\bremind us who you are\b"
        r"|\bmake login\b[^.;]{0,30}\beasier\b"
        r"|\bkeep you (?:logged|signed) in\b",
        "@storage",
        0.7,
    ),
    (r"\bdata analytics\b|\banaly[sz]e data\b|\banalysis\b", "analytics", 0.6),
    (
        r"\banaly[sz]\w* (?:trends|usage|use|how|the (?:experience|use)|web ?site|site|traffic|visitor)\b"
        r"|\b(?:usage|traffic|visitor|web ?site) (?:statistics|trends)\b|\bstatistic(?:s|al)\b|\btrends\b"
        r"|\bcompil\w+ reports\b"
        r"|\b(?:sales|business) analys[ie]s\b|\bhow many (?:people|users|visitors)\b|\bfigure out (?:how"
        r"|which)\b"
        r"|\banalytics (?:purposes|services?|tools?|providers?)\b|\bweb analytics\b"
        r"|\bunderstanding of (?:visitor )?traffic\b"
        r"|\bunderstand (?:your |how )?(?:usage|use)\b|\bevaluat\w+ your use\b"
        r"|\bgather (?:broad )?demographic information\b"
        r"|\banaly[sz]\w*\b",
        "analytics.reporting",
        0.65,
    ),
    (
        r"\bsuggest\w* (?:connections|content|people|friends|contacts|posts|articles)\b|\brecommend\w*\b"
        r"|\bpeople you may know\b|\bhelp others find your profile\b|\bstay informed about\b",
        "personalize.content",
        0.7,
    ),
    (
        r"\b(?:determine|infer|predict|work out)\w* (?:which |what )?(?:topics|interests|content"
        r"|products)[^.;]{0,20}\b(?:you|your)\b"
        r"|\binterest profiles?\b|\bbuild (?:a )?profiles?\b|\bprofiling\b",
        "personalize.content.profiling",
        0.7,
    ),
    (
        r"\b(?:show|display|serve|present) (?:you )?(?:more )?relevant (?:content|posts|information"
        r"|articles)\b",
        "personalize.content.profiled",
        0.7,
    ),
    (
        r"\bpersonali[sz]\w*|\bcustomi[sz]\w*|\btailor\w*|\bcontextuali[sz]e your (?:user )?experience\b"
        r"|\boptimi[sz]e your experience\b|\benhance your (?:user )?experience\b|\bmore relevant\b",
        "personalize",
        0.7,
    ),
)
_PURPOSE_RX: Final = tuple((_rx(p), key, conf) for p, key, conf in _PURPOSE_RULES)
_AD_WORD_AFTER = _rx(r"^\s*(?:and promotions\s+)?(?:ads|advertisements|advertising|promotions)\b")
_THIRD_PARTY_ADS = _rx(
    r"\bthird[- ]part|\badvertis\w+ (?:companies|networks|partners)\b|\bad networks\b|\bretargeting\b"
    r"|^\s*they\b"
    r"|\bthese companies\b|\bservice providers\b|\bnetwork tags\b|\bdata exchanges\b|\bother (?:websites"
    r"|sites|services|companies)\b"
    r"|(?-i:\b(?:via|through|by) [A-Z]\w+)|\baboutads\b|\byouronlinechoices\b|\bnetworkadvertising\b"
    r"|\boptout\.\w+"
)
_SHARE_VERBS = _rx(
    r"\b(?:shar(?:e|es|ed|ing)|disclos\w*|made available|make (?:it |them |\w+ )?available|releas\w*"
    r"|transfer\w*"
    r"|pass(?:ed)? (?:on|along)|third parties)\b"
)
_USE_VERBS = _rx(r"\b(?:use|used|uses|using|retain\w*|keep|kept|process\w*|stor\w+|maintain\w*|made)\b")
_EMAIL_WORD = _rx(r"\be-?mails?\b|\bnewsletters?\b")
_OTHER_CHANNEL = _rx(
    r"\bmessages within\b|\bin-(?:app|product|service)\b|\bsms\b|\btext messages\b|\bpush\b"
    r"|\bwithin our product"
)
_PURPOSE_NEGATION = _rx(
    r"\b(?:do|does|will|shall|would)\s*(?:not|n['’]t)\s+(?:\w+\s+){0,2}(?:use|process|share|sell|send"
    r"|disclose|analy[sz]e)"
    r"|\bnever\s+(?:use|share|sell|send)"
)
_VERIFY_FOR_REQUEST = _rx(r"\brequests?\b")
_USE_STATEMENT = _rx(
    r"\b(?:we|it|this|they|which)\s+(?:may\s+|will\s+|also\s+|only\s+)*(?:use|uses|process|processes)\b"
    r"|\b(?:is|are|be) used (?:to|for)\b"
    r"|\bfor the purposes? of\b|\bin order to\b|\b(?:to|helps?) (?:help )?us\b"
)


def _detect_purposes(ctx: _DocContext) -> Iterator[_Cand]:
    comms: list[_Cand] = []
    for s in ctx.sentences:
        if ctx.children(s):
            continue
        text = s.text
        # in a long list of data, a word like "statistics" is an item, not a purpose
        data_list = len(_category_hits(text)) >= 5
        taken: list[tuple[int, int]] = []
        heading = s.kind == "heading"
        # "we use X to ..." is where a policy states its purposes; other mentions are weaker
        use_statement = bool(_USE_STATEMENT.search(text))
        for rx, key, conf in _PURPOSE_RX:
            for m in rx.finditer(text):
                if any(a < m.end() and m.start() < b for a, b in taken) and not key.startswith(
                    "analytics.reporting."
                ):
                    continue
                if data_list and not re.search(
                    r"\b(?:to|for)\b", text[max(0, m.start() - 40) : m.start()], _I
                ):
                    continue
                if key != "@legal" and _PURPOSE_NEGATION.search(_clause_before(text, m.start())):
                    continue
                resolved = _resolve_purpose(key, m, s)
                if resolved is None:
                    continue
                taken.append((m.start(), m.end()))
                c = conf - (0.15 if heading else 0.0) + (0.05 if use_statement else 0.0)
                if key == "@targeted" and m.group(0).lower() in ("retargeting", "remarketing"):
                    c -= 0.1  # the name of a kind of service, not a statement of the practice
                cand = _cand("purposes", {"key": resolved}, s, m, c, (resolved,))
                if key == "@marketing_comms":
                    comms.append(cand)
                else:
                    yield cand
    # "marketing" messages of unstated channel are the e-mail ones when the policy names
    # e-mail as their channel anywhere
    if any(c.value["key"] == "marketing.communications.email" for c in comms):
        comms = [c for c in comms if c.value["key"] == "marketing.communications.email"]
    yield from comms


def _resolve_purpose(key: str, m: re.Match[str], s: Sentence) -> str | None:
    text = s.text
    if key == "@targeted":
        return (
            "marketing.advertising.third_party.targeted"
            if _THIRD_PARTY_ADS.search(text)
            else "marketing.advertising.first_party.targeted"
        )
    if key == "@marketing_comms":
        return "marketing.communications.email" if _EMAIL_WORD.search(text) else "marketing.communications"
    if key == "@notifications":
        if re.search(r"\b(?:someone|anyone|others?) to (?:identify you or )?contact you\b", text, _I):
            return None  # a definition of identifying data, not a use
        if re.search(r"\b(?:offers|promotions|promotional|marketing)\b", text, _I):
            return None
        if _EMAIL_WORD.search(text) and not _OTHER_CHANNEL.search(text):
            return "essential.service.notifications.email"
        return "essential.service.notifications"
    if key == "@storage":
        # what cookies (or similar) do for the visitor: remember, keep logged in
        return (
            "functional.storage"
            if re.search(r"\bcookies?\b|\blocal storage\b|^\s*(?:they|these)\b", text, _I)
            else None
        )
    if key == "@legal":
        if _SHARE_VERBS.search(text):
            return "third_party_sharing.legal_obligation"
        if _USE_VERBS.search(text) or (s.lead_in and _USE_VERBS.search(s.lead_in)):
            return "essential.legal_obligation"
        return None
    if key == "essential.service.authentication" and m.group(0).lower().startswith("verif"):
        return None if _VERIFY_FOR_REQUEST.search(text) else key
    if key == "personalize" and _AD_WORD_AFTER.match(text, m.end()):
        return None
    return key


# ====================================================================== legal bases

_BASIS_CONTEXT = _rx(
    r"\b(?:legal|lawful) (?:bas(?:is|es)|grounds?)\b|\bbas(?:is|es) for (?:processing|using|our)\b"
    r"|\brel(?:y|ying|ies) on (?:your consent|(?:our |a |the )?legitimate interests?"
    r"|(?:one of )?the following"
    r"|(?:\w+ ){0,3}(?:legal )?(?:basis|bases|grounds))\b|\bgrounds? for processing\b"
)
_BASIS_RULES: Final = (
    (
        "consent",
        r"\b(?:you|user)s?\s+(?:hereby\s+)?(?:expressly\s+)?(?:and\s+affirmatively\s+)?consent(?:ed)?\s+(?:to|that)\b"
        r"|\bconsenting to\b|\b(?:giving|give|given|provide"
        r"|obtain(?:ed)?)\s+(?:us\s+)?(?:your\s+)?(?:explicit\s+)?consent\b"
        r"|\b(?:based on|with|rely on|relying on|on the basis of) (?:your )?consent\b"
        r"|\bif you consent(?:ed)?\b"
        r"|\bif you (?:have )?consented\b|\bconsent \((?:where|if)\b|\byour consent\b",
        False,
    ),
    (
        "contract",
        r"\bperformance of (?:a|the|our) contract\b|\bnecessary (?:for|to perform) (?:the|a|our) (?:contract"
        r"|agreement)\b"
        r"|\bin consideration (?:for|of)\b|\bcontract (?:you['’]ve|you have|that you have) entered\b"
        r"|\bcontractual necessity\b"
        r"|\bto (?:perform|fulfil+) (?:the|a|our|your) (?:contract|agreement)\b"
        r"|\b(?:on the basis of|based on|under) (?:a|the|our|your) contract\b|\bour contract with you\b"
        r"|\bcontract\b",
        True,
    ),
    ("legitimate_interest", r"\blegitimate interests?\b", False),
    (
        "legal_obligation",
        r"\blegal obligations?\b|\bcompl(?:y|iance) with (?:a|our) legal obligation\b",
        True,
    ),
    ("vital_interest", r"\bvital interests?\b", False),
    ("public_task", r"\bpublic interest\b|\bofficial authority\b|\bpublic task\b", True),
)
_BASIS_RX: Final = tuple((name, _rx(p), needs_ctx) for name, p, needs_ctx in _BASIS_RULES)
_BASIS_NEGATION = _rx(r"\bwithout\s+(?:\w+\s+){0,3}$|\b(?:not|never|no)\s+(?:\w+\s+){0,3}$")


def _detect_legal_bases(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        in_context = bool(
            _BASIS_CONTEXT.search(s.text)
            or (s.section and _BASIS_CONTEXT.search(s.section))
            or _BASIS_CONTEXT.search(ctx.block_of(s)[:200])
        )
        for name, rx, needs_ctx in _BASIS_RX:
            for m in rx.finditer(s.text):
                # "contract" alone, "legal obligation": bases only where bases are the topic
                bare = name != "contract" or m.group(0).lower() == "contract"
                if needs_ctx and not in_context and bare:
                    continue
                before = s.text[max(0, m.start() - 40) : m.start()]
                if _BASIS_NEGATION.search(before) or re.search(r"\bwithout\b", m.group(0), _I):
                    continue
                if (
                    name == "consent"
                    and re.search(r"\bwithout (?:asking for )?your consent\b", s.text, _I)
                    and (m.group(0).lower() == "your consent")
                ):
                    continue
                conf = 0.85 if in_context else 0.7
                yield _cand("legal_bases", {"basis": name}, s, m, conf, (name,))
                break


# ====================================================================== recipients

_ROLE_RULES: Final = (
    (
        "successor",
        r"\bmergers?\b|\bmerge with\b|\bacquisitions?\b|\bacquired by\b|\bbe acquired\b|\bacquir(?:er"
        r"|ing company)\b"
        r"|\b(?:is|are|be|being|gets?) acquired\b|\bthe (?:buyer|acquirer|purchaser)\b|\bbankruptcy\b"
        r"|\binsolvency\b|\breorgani[sz]ation\b|\bliquidation\b|\bdivestiture\b|\bchange (?:in|of) control\b"
        r"|\bsuccessor\b|\bbuys us\b|\basset sale\b|\bbusiness transfers?\b"
        r"|\bsale of (?:all |some |substantially all |part )?(?:or (?:part"
        r"|substantially all) )?(?:of )?(?:our|the|its) "
        r"(?:business|assets|company|stock|shares)\b|\bas part of a sale\b",
    ),
    (
        "authority",
        r"\blaw enforcement\b|\bgovernment(?:al)? (?:authorities|agencies|entities|bodies|officials"
        r"|requests?)\b"
        r"|\bgovernment enforcement agencies\b|\bpublic authorities\b|\bregulators?\b"
        r"|\bregulatory (?:authorities|bodies|agencies)\b"
        r"|\bcourts?\b|\btribunals?\b|\bpolice\b|\bjudicial (?:orders?|proceedings?)\b|\bsubpoenas?\b"
        r"|\blegal process\b"
        r"|\brequired by (?:applicable )?law\b|\bcomply with (?:any )?(?:applicable )?(?:law|laws|legal)\b"
        r"|\blegal requirements?\b|\bsatisfy any law\b|\bwhere required to do so by law\b",
    ),
    (
        "advertiser",
        r"\b(?:third[- ]party )?advertis(?:ers?|ing (?:companies|networks?|partners|service providers))\b"
        r"|\bad (?:networks?|partners|servers)\b|\bretargeting (?:services?|providers?|partners)\b",
    ),
    (
        "affiliate",
        r"\baffiliates?\b|\baffiliated (?:companies|entities|businesses|organi[sz]ations)\b"
        r"|\b[\w.]+-affiliated entities\b"
        r"|\bsubsidiar(?:y|ies)\b|\bparent compan(?:y|ies)\b|\bgroup compan(?:y|ies)\b|\bcorporate (?:family"
        r"|group)\b"
        r"|\bsister compan(?:y|ies)\b",
    ),
    (
        "processor",
        r"\b(?:third[- ]party )?service providers?\b|\bvendors?\b|\bsub-?processors?\b"
        r"|\b(?:data )?processors\b"
        r"|\bcontractors?\b|\bsuppliers\b|\b(?:third[- ]party )?analytics (?:services?|providers?|tools?)\b"
        r"|\bhosting providers?\b|\bpayment processors?\b|\b(?:through|by|via) (?:itself|ourselves"
        r"|us) or (?:through )?third[- ]parties\b"
        r"|\bthird[- ]parties (?:acting )?on (?:our|its) behalf\b|\b(?:use|engage|employ|hire) (?:others"
        r"|other companies|third parties) to (?:help|assist|perform|provide)\b"
        r"|\bothers to help us\b",
    ),
    (
        "other_users",
        r"\bother (?:users|members|participants|customers|people using)\b|\byour (?:network|connections"
        r"|followers|friends)\b"
        r"|\bseen by others\b|\bvisible to (?:all |other )?(?:members|users|others)\b|\bviewed by others\b"
        r"|\bothers will be able to\b"
        r"|\bsenders\b|\bhelp others find\b|\binvitation will include\b|\bshared with others\b",
    ),
    (
        "public",
        r"\bpublicly\b(?! available)|\bthe (?:general )?public\b|\beveryone\b|\bopen web\b|\bgeneral web\b"
        r"|\bsearch engines?\b(?! keywords| queries| terms)|\bweb searches\b|\bpublic areas?\b"
        r"|\bpublish(?:ed)? (?:this|such|the|aggregate)\b"
        r"|\bimmediately public\b|\bmake (?:\w+ and )?(?:\w+ )?(?:\w+ )?public\b",
    ),
    (
        "third_party",
        r"\bthird[- ]parties\b(?! (?:acting )?on (?:our|its) behalf)|\b(?:a|the|any|another"
        r"|such) third[- ]party\b(?!\s+(?:\w+[- ])?(?:products?|services?|sites?|websites?|links?|content"
        r"|offers?|goods|cookies?|applications?|claims?|allegations?|integrations?|service providers?"
        r"|advertis\w*|analytics|plug-?ins?|tools?|technolog\w+|branded))"
        r"|\b(?:business|cooperation|trusted|selected|commercial|marketing) partners\b|\bpartners\b"
        r"|\bother parties\b"
        r"|\bother (?:companies|organi[sz]ations|businesses)\b|\bothers['’] services\b|\bservices of others\b"
        r"|\b(?:with|to|by) other services\b|\bother services may\b"
        r"|\bngos?\b|\bnon-?profits?\b|\bdata (?:brokers|buyers)\b|\bwith whom (?:we"
        r"|such)\b[^.;]{0,40}\bshared\b",
    ),
)
_ROLE_RX: Final = tuple((role, _rx(p)) for role, p in _ROLE_RULES)
_DISCLOSE = _rx(
    r"\b(?:shar(?:e|es|ed|ing)|disclos\w*|provid(?:e|es|ed|ing)\b[^.;]{0,80}\bto\b|transfer\w*|pass(?:ed"
    r"|es)? (?:on|along)"
    r"|sell|sold|selling|rent\w*|lease|made available|make (?:it |them |\w+ )?available|become available"
    r"|access to"
    r"|have access|obtain from us|forward\w*|transmit\w*|distribut\w*|send|sent|publish\w*|visible|viewed"
    r"|seen|see"
    r"|displayed|appear|accessible|look[- ]up|receiv\w*|collect\w*|use|used|uses|using|utili[sz]e|engage"
    r"|employ|rely on"
    r"|perform|on (?:our|its) behalf|help us|process\w*|stor\w+|contact you|include|buys|continue to use"
    r"|read|acquir\w*"
    r"|post\w*|make\b[^.;]{0,30}\bpublic)\b"
)
_DISCLOSE_TIER1 = _rx(
    r"\b(?:shar(?:e|es|ed|ing)|disclos\w*|sell|sold|rent\w*|transfer\w*|pass\w* on|(?:made|become"
    r"|becomes) available"
    r"|forward\w*|distribut\w*|publish\w*|visible|viewed|seen|accessible|public(?:ly)?)\b"
)
_DISCLOSE_TIER2 = _rx(
    r"\b(?:provid(?:e|es|ed|ing)|make\b|give|send|transmit\w*|obtain from us|acquire (?:the|your|all"
    r"|any) (?:information|data|personal))"
)
# after the cue: the recipient receives, sees or uses the data ("Intercom collects ...")
_RECEIVES_AFTER_1 = _rx(
    r"[^.;]{0,50}?\b(?:(?:become|becomes|made|be) available|can see|will see|have access)\b"
)
_RECEIVES_AFTER = _rx(
    r"[^.;]{0,40}?\b(?:collect|receiv|obtain|access|see|view|look|use|process|store|read)\w*\b"
)
_SOURCE_CONTEXT = _rx(r"\b(?:we|you)\s+(?:may\s+)?(?:also\s+)?(?:receive|collect|obtain|gather)\b")
_SOURCE_BEFORE = _rx(
    r"\b(?:from|(?:offered|provided|operated|owned|sold) by)\s+(?:\S+\s+(?:or|and)\s+)?(?:our\s+|other\s+"
    r"|any\s+)?$"
)
_NEGATED_DISCLOSURE = _rx(
    r"(?:\b(?:not|never|no longer)|n['’]t)\s+(?:\w+\s+){0,3}?(?:be\s+)?"
    r"(?:sell|rent|shar|disclos|provid|transfer|pass|made available"
    r"|make|distribut|transmit|forward|give|lease|trade|sold|rented|actively)\w*|\bnor\s+(?:do|does"
    r"|will)\s+we\b"
)
_EXCEPTION = _rx(r"\b(?:unless|except|other than|as long as|without your|save)\b(?P<rest>.*)$")
_USER_DIRECTED = _rx(
    r"\b(?:authori[sz]\w*|consent\w*|direct\w*|instruct\w*|permission|at your request|ask us|you choose"
    r"|you elect)\b"
)
_ANAPHOR = _rx(
    r"\b(?:these|those|such|said|respective|abovementioned|above-mentioned|aforementioned"
    r"|this)\s+(?:\w+[- ]){0,2}$"
)
_THE_BEFORE = _rx(r"\bthe\s+$")
_AGG_HEAD = r"(?:aggregated?|anonymi[sz]ed|anonymous|de-?identified)"
_AGG_ADJ = r"(?:aggregated?|anonymi[sz]ed|anonymous|de-?identified|non-personally identifiable)"
_AGGREGATE = _rx(
    rf"\b{_AGG_HEAD}(?:\s*,?\s*(?:or |and )?{_AGG_ADJ})*\s+(?!location\b)(?:\w+\s+)?(?:information|data"
    rf"|statistics|form)\b"
    r"|\bstatistics\b|\bstatistical (?:information|data)\b|\busage trends\b|\bnot individual\b"
    r"|\b(?:is|are) not personally identifiable\b"
)
_AGG_ANAPHOR = _rx(r"\b(?:this|such|that|the) (?:information|data|statistics)\b")
_NOT_A_RECIPIENT_CONTEXT = _rx(
    r"\b(?:not responsible for|no control over|privacy (?:policies|practices) of|links? to (?:other|external"
    r"|third)"
    r"|we (?:do not|don['’]t) control|governed by)\b"
)
_DEFINED_TERM = re.compile(r"\(\s*(?:collectively,?\s*)?(?:the\s+)?[\"“]([A-Z][\w ]{1,40}?)[\"”]\s*\)")
_BUSINESS_PARTNERS = _rx(
    r"\bbusiness (?:relationships?|partners?)\b|\bwith whom we (?:do business|partner|work)\b"
)

# Named organisations a policy may list, with the role they usually play. A name that is
# also a common English word is matched only as written (capitalised).
_VENDORS: Final = (
    ("Google Analytics", "processor", r"google analytics"),
    ("Google Tag Manager", "processor", r"google tag manager"),
    ("Google Ads", "advertiser", r"google (?:ads|adwords|adsense)|doubleclick"),
    ("Intercom", "processor", r"intercom"),
    ("SnapEngage", "processor", r"snapengage"),
    ("Zendesk", "processor", r"zendesk"),
    ("Freshdesk", "processor", r"freshdesk"),
    ("HubSpot", "processor", r"hubspot"),
    ("Salesforce", "processor", r"salesforce"),
    ("Mailchimp", "processor", r"mail ?chimp"),
    ("SendGrid", "processor", r"sendgrid"),
    ("Mailgun", "processor", r"mailgun"),
    ("Postmark", "processor", r"(?-i:Postmark)"),
    ("Stripe", "processor", r"(?-i:Stripe)"),
    ("Braintree", "processor", r"braintree"),
    ("PayPal", "processor", r"(?-i:PayPal|Paypal)(?! account)"),
    ("Amazon Web Services", "processor", r"amazon web services|(?-i:AWS)"),
    ("Google Cloud", "processor", r"google cloud(?: platform)?"),
    ("Microsoft Azure", "processor", r"(?:microsoft )?(?-i:Azure)"),
    ("Cloudflare", "processor", r"cloudflare"),
    ("Heroku", "processor", r"heroku"),
    ("DigitalOcean", "processor", r"digital ?ocean"),
    ("Mixpanel", "processor", r"mixpanel"),
    ("Amplitude", "processor", r"(?-i:Amplitude)"),
    ("Segment", "processor", r"(?-i:Segment)(?=[ ,.;)]| Inc)"),
    ("Hotjar", "processor", r"hotjar"),
    ("FullStory", "processor", r"fullstory"),
    ("Sentry", "processor", r"(?-i:Sentry)"),
    ("New Relic", "processor", r"new relic"),
    ("Datadog", "processor", r"datadog"),
    ("Twilio", "processor", r"twilio"),
    ("Olark", "processor", r"olark"),
    ("Typeform", "processor", r"typeform"),
    ("AdRoll", "advertiser", r"adroll"),
    ("Criteo", "advertiser", r"criteo"),
    ("Taboola", "advertiser", r"taboola"),
    ("Outbrain", "advertiser", r"outbrain"),
    ("Quantcast", "advertiser", r"quantcast"),
    ("Facebook Pixel", "advertiser", r"facebook pixel|meta pixel"),
)
_VENDOR_RX: Final = tuple((name, role, _rx(rf"\b(?:{p})\b")) for name, role, p in _VENDORS)
_PROVIDER_LEAD = _rx(
    r"\b(?:services?|providers?|partners?|compan(?:y|ies)|vendors?|third parties|processors?|tools?"
    r"|plug-?ins?"
    r"|social network\w*|functions of)\b"
)
_ITEM_NAME = re.compile(
    r"^\s*(?P<name>[A-Z0-9][\w&'’.+-]*(?:\s+(?:[A-Z0-9][\w&'’.+-]*|&|of|for|de))*?)\s*(?:,|\(|;|:|\s[-–—]\s"
    r"|$)"
)
_DESC_PROVIDED_BY = _rx(
    r"^\s*(?P<name>[A-Z][\w&'’.+-]*(?:\s+[A-Z][\w&'’.+-]*){0,3})\s*,\s*(?:an?\s+)?(?P<desc>[^,;]{0,60}?)\s+"
    r"(?:service|tool|platform|provider|product|network)\s+(?:provided|operated|offered"
    r"|run)\s+by\s+(?P<owner>[A-Z][^,;]{1,60})"
)
_NAME_STOP: Final = frozenset(
    [
        "when",
        "we",
        "you",
        "if",
        "the",
        "our",
        "your",
        "this",
        "these",
        "to",
        "for",
        "in",
        "investigate",
        "enforce",
        "protect",
        "exercise",
        "it",
        "they",
        "all",
        "any",
        "some",
        "personal",
        "information",
        "data",
        "privacy",
    ]
)
_COMPANY_WITH = re.compile(
    r"\b(?:to|with)\s+(?P<name>[A-Z][\w&'’.-]*(?:\s+[A-Z][\w&'’.-]*){0,3}),?\s+"
    r"(?:Inc|LLC|Ltd|GmbH|Corp|Corporation|Limited|B\.V|S\.A|AG|plc|SAS|SE)\b\.?"
)
_LEGAL_SUFFIX = re.compile(r"[,\s]+(?:inc|llc|ltd|corp|corporation|gmbh|co|limited|s\.a|b\.v|plc|ag)\.?$", _I)


def _role_of_description(text: str, default: str) -> str:
    low = text.lower()
    if re.search(r"retarget|advertis|\bad network|remarketing|\bads\b", low):
        return "advertiser"
    if re.search(r"social|\blike\b|[\"“]like[\"”]|tweet|\+1|plug-?in|share button", low):
        return "third_party"
    if re.search(
        r"analytics|chat|hosting|payment|e-?mail|newsletter|crm|support|help ?desk|monitor|cdn|storage|cloud"
        r"|processor|service provider",
        low,
    ):
        return "processor"
    return default


def _role_overrides(sentences: Iterable[Sentence]) -> dict[str, str]:
    """Defined terms whose definition contradicts the usual role: "individuals and
    companies ("Affiliates") with whom we have business relationships" are third parties."""
    out: dict[str, str] = {}
    for s in sentences:
        for m in _DEFINED_TERM.finditer(s.text):
            term = m.group(1).strip().lower()
            if re.fullmatch(r"affiliates?", term) and _BUSINESS_PARTNERS.search(s.text):
                out[term] = "third_party"
    return out


def _norm_name(name: str | None) -> str | None:
    if name is None:
        return None
    n = _LEGAL_SUFFIX.sub("", name.strip())
    return re.sub(r"[^\w]+", "", n.casefold())


def _clean_name(name: str) -> str:
    return _LEGAL_SUFFIX.sub("", name.strip()).strip(" ,.")


def _detect_recipients(ctx: _DocContext) -> Iterator[_Cand]:
    service = _norm_name(ctx.service)
    seen_roles: set[str] = set()
    named_roles: set[str] = set()
    prev_agg = False
    for s in ctx.sentences:
        text = s.text
        if ctx.children(s):
            continue
        agg_here = bool(_AGGREGATE.search(text))
        agg = agg_here or (prev_agg and bool(_AGG_ANAPHOR.search(text)))
        prev_agg = agg_here
        cats = sorted({k for k, _, _ in _sentence_categories(ctx, s, negation=False)})
        # named organisations
        for name, role, m in _named_recipients(ctx, s):
            if _norm_name(name) == service:
                continue
            named_roles.add(role)
            seen_roles.add(role)
            yield _cand(
                "recipients",
                {"name": name, "role": role, "categories": cats, "aggregate_only": agg},
                s,
                m,
                0.85,
                (role, _norm_name(name), agg),
            )
        if _is_label(s) or not _DISCLOSE.search(text) or _NOT_A_RECIPIENT_CONTEXT.search(text):
            continue
        roles = _sentence_roles(ctx, s, seen_roles, named_roles)
        if "successor" in roles or "authority" in roles:
            roles.pop("third_party", None)
        elif not roles:
            # "we may share or sell aggregated information": a sale has a buyer
            sale = _SALE.search(text)
            if (
                sale
                and not _SALE_OPT_OUT.search(text)
                and not _sale_denied(_clause_before(text, sale.start()))
            ):
                roles["third_party"] = (sale.start(), sale.end(), 0.65)
        for role, (a, b, conf) in roles.items():
            seen_roles.add(role)
            yield _cand(
                "recipients",
                {"name": None, "role": role, "categories": cats, "aggregate_only": agg},
                s,
                (a, b),
                conf,
                (role, None, agg),
            )


def _sentence_roles(
    ctx: _DocContext, s: Sentence, seen_roles: set[str], named_roles: set[str]
) -> dict[str, tuple[int, int, float]]:
    """role -> (cue start, cue end, confidence) of the recipient classes one sentence
    says data goes to; negated disclosures yield only what their exception names."""
    text = s.text
    roles: dict[str, tuple[int, int, float]] = {}
    definitions = [(m.start(), m.group(1).strip().lower()) for m in _DEFINED_TERM.finditer(text)]
    for role, rx in _ROLE_RX:
        for m in rx.finditer(text):
            found_role = role
            word = m.group(0).lower()
            if word in ctx.role_override and m.group(0)[0].isupper():
                found_role = ctx.role_override[word]
            # a list defined as one class: "third parties, vendors and affiliates ("Service Providers")"
            defined = next(
                (t for pos, t in definitions if 0 <= pos - m.end() <= 150 and ";" not in text[m.end() : pos]),
                None,
            )
            if defined is not None and word != defined:
                def_role = _role_of_term(ctx, defined)
                if def_role is not None:
                    found_role = def_role
            before = text[max(0, m.start() - 60) : m.start()]
            if any(
                0 <= m.start() - e <= 40
                and re.fullmatch(r"[\s,]*(?:[\w\s]*,\s*)?(?:our|a|an|the|its)\b[\w\s-]*", text[e : m.start()])
                for _, _, (_, e) in _named_recipients(ctx, s)
            ):
                continue  # "Mailer Inc., our email service provider": the named one, again
            # "these service providers" refers back to recipients already found
            if _ANAPHOR.search(before) and found_role in seen_roles:
                continue
            if _THE_BEFORE.search(before) and found_role in named_roles:
                continue
            clause = _clause_before(text, m.start())
            if _SOURCE_BEFORE.search(before) or (
                _SOURCE_CONTEXT.search(clause)
                and not _SHARE_VERBS.search(clause.replace("third parties", ""))
            ):
                continue  # where data comes from, not where it goes
            conf = _disclosure_confidence(text, m, found_role)
            if _NEGATED_DISCLOSURE.search(clause) or (
                _NEGATED_DISCLOSURE.search(text[: m.start()]) and not _EXCEPTION.search(text[: m.start()])
            ):
                exc = _EXCEPTION.search(text)
                if not exc:
                    continue
                rest = exc.group("rest")
                if found_role == "authority" and exc.start() < m.start():
                    pass
                elif _USER_DIRECTED.search(rest):
                    found_role, conf = "third_party", 0.6
                else:
                    continue
            if found_role not in roles:
                roles[found_role] = (m.start(), m.end(), conf)
    return roles


def _disclosure_confidence(text: str, m: re.Match[str], role: str) -> float:
    """How plainly the sentence says data goes to the recipient the cue names: a
    sharing verb before it in its clause (parentheses skipped), or a verb of receiving
    after it ("Intercom collects ..."); for mergers and legal demands, anywhere."""
    if role in ("successor", "authority"):
        near = text
    else:
        start = max(text.rfind(";", 0, m.start()), text.rfind(":", 0, m.start())) + 1
        near = re.sub(r"\([^()]*\)", " ", text[start : m.start()])[-100:] + " " + m.group(0)
    after = role not in ("successor", "authority")
    if _DISCLOSE_TIER1.search(near) or (after and _RECEIVES_AFTER_1.match(text, m.end())):
        return 0.85
    if _DISCLOSE_TIER2.search(near) or (after and _RECEIVES_AFTER.match(text, m.end())):
        return 0.8
    return 0.65


def _role_of_term(ctx: _DocContext, term: str) -> str | None:
    if term in ctx.role_override:
        return ctx.role_override[term]
    for role, rx in _ROLE_RX:
        if rx.fullmatch(term):
            return role
    return None


def _named_recipients(ctx: _DocContext, s: Sentence) -> list[tuple[str, str, tuple[int, int]]]:
    """(name, role, cue span in the sentence) of the organisations a sentence names as
    recipients: known vendors, "X, a ... service provided by Y", items of a list of
    providers."""
    if s.index in ctx.named_cache:
        return ctx.named_cache[s.index]
    out: list[tuple[str, str, tuple[int, int]]] = []
    text = s.text
    names: set[str | None] = set()
    if s.kind != "heading":
        for name, role, rx in _VENDOR_RX:
            for m in rx.finditer(text):
                if re.search(r"\byour\s+$", text[max(0, m.start() - 10) : m.start()], _I):
                    continue
                if re.match(r"['’]s\b|\.(?:io|com)\b", text[m.end() : m.end() + 4]) and not _DISCLOSE.search(
                    text
                ):
                    continue
                if _norm_name(name) not in names:
                    names.add(_norm_name(name))
                    out.append((name, role, (m.start(), m.end())))
                break
    if s.kind == "list_item":
        lead = s.lead_in or ""
        m2 = _DESC_PROVIDED_BY.match(text)
        if m2:
            name = _clean_name(m2.group("name"))
            role = _role_of_description(m2.group("desc"), "processor")
            if _norm_name(name) not in names:
                names.add(_norm_name(name))
                out.append((name, role, (m2.start("name"), m2.end("owner"))))
        elif _PROVIDER_LEAD.search(lead):
            m3 = _ITEM_NAME.match(text)
            if m3:
                raw = m3.group("name")
                first = raw.split()[0].lower().strip(".,")
                if first not in _NAME_STOP and len(raw.split()) <= 5:
                    name = _clean_name(raw)
                    role = _role_of_description(text + " " + lead, "processor")
                    if _norm_name(name) not in names:
                        out.append((name, role, (m3.start("name"), m3.end("name"))))
    elif s.kind != "heading" and _DISCLOSE.search(text):
        # "We share your e-mail address with Mailer Inc., our email service provider."
        for m4 in _COMPANY_WITH.finditer(text):
            name = _clean_name(m4.group("name"))
            if _norm_name(name) in names or name.split()[0].lower() in _NAME_STOP:
                continue
            names.add(_norm_name(name))
            role = _role_of_description(text[m4.end() : m4.end() + 80] + " " + text, "processor")
            out.append((name, role, (m4.start("name"), m4.end())))
    ctx.named_cache[s.index] = out
    return out


# ====================================================================== sale


_SALE = _rx(
    r"\b(?:sell|sells|sold|selling|rent|rents|rented|renting|trade|trades)\b"
    r"|\bsale of (?:your )?(?:personal )?(?:information|data)\b|\bour sale of\b"
)
_SALE_OPT_OUT = _rx(r"\bopt[- ]?out\b[^.;]{0,30}\bsale\b|\bdo not sell my\b")
_SALE_NEGATION = _rx(
    r"(?:\b(?:not|never|no)|n['’]t)\s+(?:\w+\s+){0,2}$|(?:\b(?:not|never)|n['’]t)\s+(?:\w+,?\s+){0,4}(?:or\s+)?$"
)
# n't sits inside its word ("don't"): it follows no word boundary.
_DENIED = _rx(r"(?:\b(?:not|never)|n['’]t)\b")


def _sale_denied(clause: str) -> bool:
    """The clause before a sale word denies it ("we do not sell", "never rented")."""
    return bool(_SALE_NEGATION.search(clause) or _DENIED.search(clause))


def _detect_sale(ctx: _DocContext) -> Iterator[_Cand]:
    """``sells_personal_data``: true when the text says data may be sold or offers an
    opt-out of "our sale"; false when sale is denied in so many words. A generic
    statement of the right to opt out of sales counts only when nothing is denied."""
    positive: list[_Cand] = []
    negative: list[_Cand] = []
    generic_opt_out: list[_Cand] = []
    for s in ctx.sentences:
        text = s.text
        if _ROLE_RX[0][1].search(text):  # a merger or bankruptcy is not a sale of data
            continue
        opt = _SALE_OPT_OUT.search(text)
        if opt:
            target = positive if re.search(r"\bour sale\b|\bwe sell\b", text, _I) else generic_opt_out
            target.append(
                _cand("sells_personal_data", {"value": True}, s, opt, 0.8 if target is positive else 0.55)
            )
            continue
        for m in _SALE.finditer(text):
            if _sale_denied(_clause_before(text, m.start())):
                negative.append(_cand("sells_personal_data", {"value": False}, s, m, 0.85))
            else:
                conf = 0.6 if _AGGREGATE.search(text) else 0.8
                positive.append(_cand("sells_personal_data", {"value": True}, s, m, conf))
            break
    yield from positive or negative or generic_opt_out


def _detect_third_party_sharing(ctx: _DocContext) -> Iterator[_Cand]:
    """A positive sale is sharing with third parties for their own use."""
    for c in _detect_sale(ctx):
        if c.value["value"] is True and not _SALE_OPT_OUT.search(c.sent.text) and c.conf >= 0.6:
            yield _Cand(
                "purposes",
                {"key": "third_party_sharing"},
                c.sent,
                c.cue,
                c.conf - 0.05,
                ("third_party_sharing",),
            )


# ====================================================================== retention

_NUM_WORDS: Final = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "eighteen": 18,
    "twenty": 20,
    "thirty": 30,
    "sixty": 60,
    "ninety": 90,
    "a": 1,
    "an": 1,
}
_UNIT: Final = {"day": "D", "week": "W", "month": "M", "year": "Y"}
_RETENTION_RULES: Final = (
    (
        "until third-party cache refresh",
        r"\buntil (?:they|the (?:search engines?|other services?|third parties)) (?:refresh"
        r"|update)\w* (?:their )?(?:data )?cache",
    ),
    (
        "end of visit",
        r"\b(?:expire\w*|deleted|erased|removed|cleared)\b[^.;]{0,60}\b(?:close\w* (?:their|your|his|her"
        r"|the) (?:internet |web )?browser"
        r"|end of (?:your|the|his|her|each) (?:visit|session|browsing session)|termination of (?:his|her"
        r"|your|the) (?:visit|session))"
        r"|\b(?:until|when) you close your browser\b|\bfor the duration of (?:your|the) (?:visit|session)\b",
    ),
    (
        "until account inactive",
        r"\b(?:delete|remove|erase)\w*\b[^.;]{0,80}\bif (?:your|the) account (?:is|has been|becomes"
        r"|remains) inactive\b"
        r"|\binactive accounts?\b[^.;]{0,40}\b(?:deleted|removed)\b|\bafter [^.;]{0,30}\binactivity\b",
    ),
    (
        "while account exists",
        r"\bas long as (?:your account (?:is|remains) (?:in existence|active|open)|you maintain (?:an"
        r"|your) account"
        r"|you (?:have|keep) (?:an|your) account|your account exists)\b|\bwhile your account (?:is"
        r"|remains) (?:active|open)\b"
        r"|\bfor the (?:life|lifetime|duration) of your account\b|\buntil you (?:decide to )?(?:close|delete"
        r"|deactivate) your account\b",
    ),
    (
        "as long as legally permissible",
        r"\bas long as (?:it is |is )?(?:legally )?permi(?:ssible|tted)(?: by law)?\b"
        r"|\bmaximum (?:period|extent) (?:permitted|allowed)\b|\bas long as (?:the )?law (?:allows"
        r"|permits)\b",
    ),
    (
        "@duration",
        r"\b(?:retain|keep|kept|store|delete|hold|maintain|purge|erase"
        r"|anonymi[sz]e)\w*\b[^.;]{0,80}?\b(?:for|after|within|up to|of|than)\s+"
        r"(?:a (?:period|maximum) of\s+)?(?:up to\s+)?(?P<n>\d{1,4}|one|two|three|four|five|six|seven|eight"
        r"|nine|ten|eleven|twelve"
        r"|thirteen|fourteen|fifteen|eighteen|twenty|thirty|sixty|ninety|a|an)\s*(?:\(\d+\)\s*)?(?P<unit>day"
        r"|week|month|year)s?\b",
    ),
    (
        # "deleted two years after your last interaction"
        "@duration",
        r"\b(?:deleted|removed|erased|purged|anonymi[sz]ed|discarded)\s+(?P<n>\d{1,4}|one|two|three|four|five|six"
        r"|seven|eight|nine|ten|eleven|twelve|eighteen|twenty|thirty|sixty|ninety|a|an)\s+(?P<unit>day|week"
        r"|month|year)s?\s+(?:after|from)\b",
    ),
    ("limited period", r"\bfor a (?:limited|short|brief) (?:period(?: of time)?|time)\b"),
    (
        "as long as necessary",
        r"\b(?:as long as|for as long as|only as long as) (?:is |it is |reasonably |strictly )*(?:necessary"
        r"|needed|required)\b"
        r"|\b(?:retain\w*|kept|keep|stor\w+|preserv\w*)\b[^.;]{0,60}\bas (?:reasonably )?necessary\b"
        r"|\b(?:retain\w*|keep)\b[^.;]{0,80}\beven after\b[^.;]{0,80}\bnecessary\b|\bsuspend (?:those |our "
        r"|the )?deletion\b"
        r"|\blegal (?:process|hold)[^.;]{0,60}\bpreserve\b",
    ),
    (
        "until deleted by user",
        r"\buntil (?:you|the user) (?:delete|remove)s?\b|\bwhen you (?:a )?(?:delete|remove)\b[^;]{0,60}"
        r"\b(?:no (?:link|copy|record)|will be (?:deleted|removed|erased)|(?:is|are) (?:deleted|removed"
        r"|erased))",
    ),
    (
        "unspecified",
        r"\b(?:may|will|can|might) (?:stay|remain|persist|continue to (?:be|exist))\b[^.;]{0,30}\b(?:cached"
        r"|stored|visible|available|in (?:our|backup))"
        r"|\bremains? (?:visible|available|accessible|cached)\b[^.;]{0,40}\bafter\b|\bcannot (?:delete"
        r"|remove)\b"
        r"|\bimpossible\b[^.;]{0,40}\b(?:delete|remove)\b|\b(?:residual"
        r"|backup) copies\b[^.;]{0,40}\b(?:remain|retain)",
    ),
)
_RETENTION_RX: Final = tuple((period, _rx(p)) for period, p in _RETENTION_RULES)
_SCOPE_BY_CUE: Final = (
    (r"\bsession ids?\b", "Session ID"),
    (r"\bsession\b[^.]{0,40}\bcookie|\bcookie\b", "session cookie"),
    (r"\bbackups?\b", "backups"),
    (r"\bpast transactions\b", "information associated with past transactions"),
    (r"\bcache\b", "copies held by other services"),
    (r"\blegal process\b|\bpreserve\b", "information under a legal hold"),
    (r"\binactive\b", "account of an inactive user"),
    (r"\bfiles?\b", "files"),
)
_GENERIC_SCOPE = _rx(
    r"^(?:(?:most|all|some|certain|any|such|the|this|that|your|of|our|user|account|associated|other|personal"
    r"|persona"
    r"|personally|identifiable|submitted|for|collected|about|you|information|data|personal data"
    r"|pii)\b[\s,]*)+$"
)
_OBJECT_AFTER_VERB = _rx(
    r"\b(?:retain|keep|store|maintain|hold)\w*\s+(?P<obj>(?:[\w'’-]+\s+){0,8}?[\w'’-]+?)(?=\s+(?:for|as long"
    r"|until|while|if|even|in backup|after|on|when|and)\b|[,.;]|$)"
)
_SUBJECT_BEFORE_PASSIVE = _rx(
    r"(?P<subj>(?:[\w'’-]+\s+){1,6}?)(?:will|may|shall|can|is|are|might|get"
    r"|gets)\s+(?:be\s+)?(?:automatically\s+|permanently\s+)?"
    r"(?:retained|kept|stored|deleted|erased|removed|purged|anonymi[sz]ed|remain|stay|continue)"
)


def _retention_scope(text: str, period: str) -> str:
    low = text.lower()
    for pattern, label in _SCOPE_BY_CUE:
        if re.search(pattern, low) and (period != "while account exists" or label == "Session ID"):
            return label
    m = _OBJECT_AFTER_VERB.search(text)
    if m:
        return m.group("obj").strip()
    m2 = _SUBJECT_BEFORE_PASSIVE.search(text)
    if m2:
        return m2.group("subj").strip()
    return "personal data"


def _scope_key(scope: str) -> str:
    low = scope.lower().strip()
    return "personal data" if _GENERIC_SCOPE.match(low) else low


def _iso(n: str, unit: str) -> str:
    value = int(n) if n.isdigit() else _NUM_WORDS[n.lower()]
    return f"P{value}{_UNIT[unit.lower()]}"


# "..., except invoices, which we keep for 7 years": the exception is a rule of its own.
_RETENTION_EXCEPTION = _rx(
    r"[,;]\s*(?:except(?: for)?|other than|but)\s+(?P<scope>[\w'’ -]{2,60}?),?\s+which\s+(?:we\s+)?"
)


def _detect_retention(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        if ctx.children(s) or s.kind == "heading":
            continue
        # (offset, text, scope given by an exception clause)
        parts: list[tuple[int, str, str | None]] = [(0, s.text, None)]
        ex = _RETENTION_EXCEPTION.search(s.text)
        if ex:
            parts = [(0, s.text[: ex.start()], None), (ex.start(), s.text[ex.start() :], ex.group("scope"))]
        for offset, text, given in parts:
            for period, rx in _RETENTION_RX:
                m = rx.search(text)
                if not m:
                    continue
                value = _iso(m.group("n"), m.group("unit")) if period == "@duration" else period
                scope = given.strip() if given else _retention_scope(text, value)
                conf = 0.8 if period != "unspecified" else 0.7
                span = (offset + m.start(), offset + m.end())
                yield _cand(
                    "retention", {"scope": scope, "period": value}, s, span, conf, (value, _scope_key(scope))
                )
                break


# ====================================================================== rights

_ABILITY = _rx(
    r"\b(?:you|users?|members?|residents?|he or she|your friend|individuals?|customers?)\b[^.;]{0,50}"
    r"\b(?:can|could|may|might|have the (?:right|ability|option)|has the right|are (?:able|entitled)"
    r"|will be able"
    r"|choose|elect|wish|would like|want|need)\b|\b(?:right|rights|ability|choices?|options?|tools?|request"
    r"|requests|ask)\b"
    r"|\ballows? you\b|\blet(?:s)? you\b"
    r"|\b(?:when|if|once) you\b|\bby (?:logging|navigating|accessing|visiting)\b"
)
_RIGHT_NEGATION = _rx(
    r"\b(?:cannot|can ?not|can['’]t|unable to|not be able to|not able to)\b[^.;,]{0,30}$"
    r"|\bno (?:access to or )?control\b[^.;]{0,20}$"
)
_OBJ = (
    r"(?:(?:any of |all of |certain of |some of )?(?:your|his or her|their|the|such|certain|any|this|all|a"
    r"|that)\s+){0,2}"
    r"(?:personal(?:ly identifiable)?\s+|user\s+|contact\s+|account\s+)?"
    r"(?:information|data|profile|details|pii|records?|files?|a file|posts?|content"
    r"|personally identifiable information)\b"
)
_RIGHT_RULES: Final = (
    (
        "opt_out_cookies",
        r"\b(?:disable|refuse|decline|block|reject|delete|remove|control|manage|clear|turn off|opt[- ]out of"
        r"|accept or decline)\b[^.;]{0,60}\bcookies\b|\bcookies\b[^.;]{0,80}\b(?:disable|refuse|decline"
        r"|block|reject|turn off)\b"
        r"|\b(?:refuse|decline|reject|block) the (?:use|acceptance) of\b[^.;]{0,40}\bcookies\b",
        True,
    ),
    (
        "opt_out_targeted_ads",
        r"\bopt[- ]?out\b[^.;]{0,40}\b(?:targeted|interest-based|personali[sz]ed|behaviou?ral|retargeting)\s+"
        r"(?:ads|advertising|advertisements)\b",
        False,
    ),
    (
        "opt_out_sale",
        r"\bopt[- ]?out\b[^.;]{0,30}\bsale\b|\bdo not sell my\b|\bopt[- ]?out of (?:the )?sell",
        False,
    ),
    (
        "opt_out_marketing",
        r"\bunsubscribe\b|\bopt[- ]?out\b[^.;]{0,40}\b(?:marketing|promotional|newsletters?|commercial)\b"
        r"|\b(?:marketing|promotional)\b[^.;]{0,60}\b(?:you can|you may)\s+opt[- ]?out\b"
        r"|\bstop receiving\b[^.;]{0,30}\b(?:marketing|promotional|newsletters?)\b",
        False,
    ),
    ("withdraw_consent", r"\b(?:withdraw|revoke)\w*\b[^.;]{0,30}\bconsent\b", False),
    (
        "complain_to_authority",
        r"\bcomplain\w*\b[^.;]{0,60}\b(?:supervisory|data protection|privacy|regulatory) (?:authority"
        r"|authorities|regulator|commissioner|office)"
        r"|\b(?:lodge|file|make) a complaint with\b",
        False,
    ),
    (
        "object",
        r"\bright to object\b|\bobject to\b[^.;]{0,40}\b(?:processing|use|our use)\b"
        r"|\bopt[- ]?out of having\b"
        r"|\bstop (?:the )?(?:use|processing) of your\b",
        False,
    ),
    (
        "restrict",
        r"\bright to (?:restrict|restriction)\b|\brestriction of processing\b|\brestrict (?:the |our "
        r"|its )?processing\b"
        r"|\b(?:to|may|can) restrict\b(?:\s+or\s+object\s+to)?[^.;]{0,30}\bprocessing\b",
        False,
    ),
    (
        "portability",
        r"\b(?:data )?portability\b|\b(?:obtain|receive|request|get|download) (?:a )?cop(?:y|ies) of "
        + _OBJ
        + r"|\bdownload (?:your|all your) (?:personal )?(?:information|data)\b|\bportable format\b"
        r"|\bmachine-readable\b",
        True,
    ),
    (
        "close_account",
        r"\b(?:close|delete|deactivate|terminate|cancel|remove)\w* (?:your|their"
        r"|his or her) (?:[\w.]+ )?account\b",
        True,
    ),
    (
        "know_categories",
        r"\bright to know\b|\brequest to know\b|\b(?:disclose|tell|inform"
        r"|provide) (?:to )?you (?:with )?the categories\b"
        r"|\bthe categories of (?:personal(?:ly identifiable)? )?(?:information|data)\b",
        False,
    ),
    ("shine_the_light", r"\bshine the light\b|\b1798\.83\b", False),
    (
        "erase",
        r"\b(?:delet|eras|remov)\w*\b[^.;]{0,40}?\b"
        + _OBJ
        + r"|\b(?:delet|eras|remov)\w*\s+(?:it|them|a file)\b"
        r"|\b"
        + _OBJ
        + r"[^.;]{0,30}\b(?:deleted|erased|removed)\b|\bdeletion rights\b|\brequest to delete\b",
        True,
    ),
    ("rectify", r"\b(?:correct|rectif|updat|modif|amend|edit|chang)\w*\b[^.;]{0,40}?\b" + _OBJ, True),
    (
        "access",
        r"\baccess\w*\b[^.;]{0,30}?\b"
        + _OBJ.replace("|posts?|content", "")
        + r"|\bright (?:of|to) access\b|\bspecific pieces of\b",
        True,
    ),
    (
        "visibility_settings",
        r"\bsubject to your (?:privacy )?settings\b|\b(?:your|access to|available|appropriate"
        r"|the) privacy settings\b"
        r"|\bcontrol(?:ling)? (?:the )?visibility\b|\bvisibility (?:of|settings)\b|\b(?:choose|control"
        r"|decide|select) who (?:can )?(?:see|view|access)\b"
        r"|\bsettings help hide\b|\bhide (?:information|your)\b|\bability to (?:share"
        r"|make)\b[^.;]{0,50}\b(?:other users|public)\b"
        r"|\bchoices about the information on your profile\b",
        False,
    ),
)
_RIGHT_RX: Final = tuple((right, _rx(p), needs) for right, p, needs in _RIGHT_RULES)
_DIRECT_MARKETING = _rx(r"\bdirect marketing\b|\b1798\.83\b|\bshine the light\b")
_CHANNELS: Final = (
    (
        "unsubscribe link",
        r"\bunsubscribe\b[^.;]{0,40}\b(?:link|button)\b"
        r"|\bfollowing the (?:specific )?instructions (?:included )?in\b"
        r"|\bat the bottom of\b|\bunsubscribe link\b",
    ),
    ("browser settings", r"\bbrowser\b"),
    (
        "account settings",
        r"\baccount settings\b|\bsettings page\b|\bsettings\b|\blogging in(?:to)? (?:to )?your account\b"
        r"|\blog(?:ging)? into your account\b|\b(?:in|from|on|via|through|edit\w*|updat\w*) your profile\b"
        r"|\bprofile page\b|\bdashboard\b|\bfrom your [\w.]+ account\b"
        r"|[\"“]account profile[\"”]|\bprivacy settings\b|\bdisabling certain features\b"
        r"|\bwith your (?:password|username|log-?in)\b",
    ),
    (
        "email",
        r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b|\be-?mail(?:ing)? us\b|\bby e-?mail\b"
        r"|\bsend(?:ing)? (?:us )?an e-?mail\b|\bemailing\b",
    ),
    ("postal mail", r"\b(?:physical|postal|regular|snail) mail\b|\bby mail\b|\bwrite to us\b|\bin writing\b"),
    (
        "web form",
        r"\bweb ?form\b|\bonline form\b|\bcontact form\b|\bwww\.[\w.-]+/[\w/.-]+|\bhttps?://[\w.-]+/[\w/.-]+",
    ),
    (
        "third-party site",
        r"\bvisit (?:the )?[A-Z]\w* (?:website|site|page)\b|\baboutads\b|\byouronlinechoices\b"
        r"|\bnetworkadvertising\b",
    ),
    ("contact us", r"\bcontact us\b"),
)
_CHANNEL_RX: Final = tuple((name, _rx(p)) for name, p in _CHANNELS)
_DEFAULT_CHANNEL: Final = {"opt_out_cookies": "browser settings", "visibility_settings": "account settings"}


def _channels(text: str, right: str, *, default: bool = True) -> list[str]:
    """The channels a sentence names for exercising ``right``."""
    found = [name for name, rx in _CHANNEL_RX if rx.search(text)]
    if right == "opt_out_cookies":
        found = [c for c in found if c == "browser settings"]
    else:
        found = [c for c in found if c != "browser settings"]
    if right != "opt_out_marketing":
        found = [c for c in found if c != "unsubscribe link"]
    if (
        "web form" in found
        and "email" in found
        and re.search(r"\be-?mail us at (?:www\.|https?://)", text, _I)
    ):
        found.remove("email")
    if "contact us" in found and len(found) > 1:
        found.remove("contact us")
    if "third-party site" in found and "web form" in found:
        found.remove("web form")
    if not found and default and right in _DEFAULT_CHANNEL:
        found = [_DEFAULT_CHANNEL[right]]
    return found


_HOW_TO = _rx(
    r"\b(?:to (?:take advantage of|exercise|make|submit|obtain)|please (?:contact|send|e-?mail|write)"
    r"|you (?:can|may) (?:contact|e-?mail|write)"
    r"|send (?:a|your|us a) request|contact us at)\b"
)


def _inherited_channels(ctx: _DocContext, s: Sentence, right: str) -> list[str]:
    """Channels given by a later "how to" sentence of the same section ("To take
    advantage of these rights, please contact us at ...")."""
    i = ctx.position[s.index]
    for t in ctx.sentences[i + 1 : i + 13]:
        if t.section != s.section or ctx.children(t):
            break
        if _HOW_TO.search(t.text):
            found = [c for c in _channels(t.text, right, default=False) if c != "account settings"]
            if found:
                return found
        if any(rx.search(t.text) for _, rx, _ in _RIGHT_RX) and _channels(t.text, "access", default=False):
            break  # a right stated with its own channel: what follows is about it
    return []


_RIGHT_SKIP = _rx(r"\bnot take effect\b|\bretroactively\b")


def _detect_rights(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        text = s.text
        if ctx.children(s) and not re.search(r"\byour friend\b", text, _I):
            continue
        if _RIGHT_SKIP.search(text):
            continue
        context = " ".join(t.text for t in _neighbours(ctx, s, 3)) + " " + (s.lead_in or "")
        for right, rx, needs_person in _RIGHT_RX:
            for m in rx.finditer(text):
                if _RIGHT_NEGATION.search(text[max(0, m.start() - 40) : m.start()]):
                    continue
                # "delete", "update", "access" are rights only with a person who may act
                person = _ABILITY.search(_clause_before(text, m.start()) + " " + m.group(0)[:12])
                if (
                    needs_person
                    and not person
                    and not (s.kind == "heading" or re.match(r"\s*rights?\b", text, _I))
                ):
                    continue
                r = right
                if r == "know_categories" and (
                    _DIRECT_MARKETING.search(text) or _DIRECT_MARKETING.search(context)
                ):
                    r = "shine_the_light"
                conf = 0.8 if not _is_label(s) else 0.55
                if re.search(r"\buntil you\s+(?:\w+\s+){0,3}$", text[max(0, m.start() - 40) : m.start()], _I):
                    conf = 0.6  # "kept until you close your account": a retention term more than a right
                rights = [r]
                if r == "close_account" and re.match(r"(?:delet|eras|remov)", m.group(0), _I):
                    rights.append("erase")
                for r2 in rights:
                    channels: list[str | None] = list(_channels(text, r2))
                    if not channels:
                        channels = list(_inherited_channels(ctx, s, r2)) or [None]
                    for channel in channels:
                        yield _cand("rights", {"right": r2, "channel": channel}, s, m, conf, (r2, channel))
                break


def _neighbours(ctx: _DocContext, s: Sentence, n: int) -> list[Sentence]:
    i = ctx.position[s.index]
    return ctx.sentences[max(0, i - n) : i]


# ====================================================================== children

_MIN_AGE = _rx(
    r"\b(?:under|younger than|below)\s+(?:the\s+)?(?:age\s+of\s+)?(?P<a>\d{1,2})\b|\b(?:at least|over"
    r"|older than)\s+(?:the\s+)?(?:age\s+of\s+)?(?P<b>\d{1,2})\b"
    r"|\b(?P<c>\d{1,2})\s+(?:years?\s+(?:of\s+age|old)\s+)?or\s+older\b"
)
_DISCOVERY = _rx(r"\b(?:learn|discover|become aware|find out|reason to believe|are notified|determine)\w*\b")
_CHILD_ACTION = _rx(
    r"\b(?:we|will|we['’]ll)\b[^.;]{0,40}?\b(?P<act>(?:take (?:reasonable )?steps to |promptly |immediately "
    r"|try to )?"
    r"(?:delete|remove|erase|terminate|close|destroy|disable|deactivate)\b[^.]{0,140})"
)


def _detect_children(ctx: _DocContext) -> Iterator[_Cand]:
    age: int | None = None
    age_sent: tuple[Sentence, re.Match[str]] | None = None
    action: str | None = None
    action_sent: tuple[Sentence, re.Match[str]] | None = None
    for s in ctx.sentences:
        discovery = s.block in ctx.children_block and _DISCOVERY.search(s.text)
        if not (ctx.children(s) or discovery):
            continue
        if age is None:
            m = _MIN_AGE.search(s.text)
            if m and (_is_children_sentence(s.text) or _CHILD_WORD.search(s.text)):
                age = int(m.group("a") or m.group("b") or m.group("c"))
                age_sent = (s, m)
        if action is None:
            m2 = _CHILD_ACTION.search(s.text)
            if m2 and re.search(
                r"\b(?:such|the|this|that|their|his|her|child|its|any|it|them)\b", m2.group("act"), _I
            ):
                action = m2.group("act").strip().rstrip(".")
                action_sent = (s, m2)
    if age is None and action is None:
        return
    where = action_sent or age_sent
    assert where is not None
    s, m = where
    conf = 0.85 if age is not None else 0.7
    yield _cand("children", {"min_age": age, "action_on_discovery": action}, s, m, conf)


# ====================================================================== transfers

_COUNTRIES: Final = {
    "United States": r"\bthe United States(?: of America)?\b|\bU\.S\.A?\.?(?=[\s,;)])|\bUSA\b|\bUS\b",
    "EU": r"\bthe European Union\b|\bEU\b",
    "EEA": r"\bthe European Economic Area\b|\bEEA\b",
    "United Kingdom": r"\bthe United Kingdom\b|\bUK\b|\bGreat Britain\b",
    "Switzerland": r"\bSwitzerland\b",
}
for _country in [
    "Netherlands",
    "Germany",
    "France",
    "Ireland",
    "Canada",
    "India",
    "Singapore",
    "Japan",
    "Australia",
    "Brazil",
    "Israel",
    "China",
    "Russia",
    "Sweden",
    "Spain",
    "Italy",
    "Poland",
    "Belgium",
    "Denmark",
    "Finland",
    "Norway",
    "Austria",
    "Portugal",
    "Mexico",
    "Taiwan",
    "Turkey",
    "Argentina",
    "Ukraine",
    "Philippines",
    "Indonesia",
    "Vietnam",
    "Malaysia",
    "Thailand",
    "Estonia",
    "Romania",
    "Hungary",
    "Greece",
    "Luxembourg",
    "Iceland",
    "Latvia",
    "Lithuania",
    "Bulgaria",
    "Croatia",
    "Serbia",
    "Chile",
    "Colombia",
    "Peru",
    "Egypt",
    "Nigeria",
    "Kenya",
    "Pakistan",
    "Bangladesh",
]:
    _COUNTRIES[_country] = rf"\b(?:the )?{_country}\b"
_COUNTRIES.update(
    {
        "South Korea": r"\bSouth Korea\b|\bRepublic of Korea\b",
        "Hong Kong": r"\bHong Kong\b",
        "New Zealand": r"\bNew Zealand\b",
        "South Africa": r"\bSouth Africa\b",
        "Czech Republic": r"\bCzech Republic\b",
        "United Arab Emirates": r"\bUnited Arab Emirates\b|\bUAE\b",
    }
)
_COUNTRY_RX: Final = tuple((name, re.compile(p)) for name, p in _COUNTRIES.items())
_TRANSFER_VERB = _rx(
    r"\b(?:stor(?:e|es|ed|ing)|process(?:es|ed|ing)?|transfer\w*|transmit\w*|host\w*|located|servers?"
    r"|data cent(?:er|re)s?"
    r"|mov(?:e|ed|ing)|sen[dt]|maintain\w*)\b"
)
_NOT_DESTINATION = _rx(
    r"(?:outside|out)\s+(?:of\s+)?(?:the\s+)?$|\b(?:users?|residents?|citizens?|based|located|you(?:['’]re"
    r"| are))\s+(?:\w+\s+)?(?:in|of)\s+(?:the\s+)?$|\blaws? of\s+(?:the\s+)?$"
)
_NOT_DESTINATION_AFTER = _rx(
    r"\s+(?:users?|residents?|citizens?|customers?|law|laws|data subjects?|members?)\b"
)
_UNSPECIFIED = _rx(
    r"\boutside (?:of )?(?:your|the user['’]s) (?:country|jurisdiction|state|province)\b|\bother countries\b"
    r"|\boutside of where you live\b"
    r"|\bcountries other than\b|\bacross borders\b|\banother country\b|\bdifferent countries\b"
    r"|\boutside (?:the )?(?:EU|EEA|European)"
)


def _detect_transfers(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        text = s.text
        verb = _TRANSFER_VERB.search(text)
        if not verb:
            continue
        for name, rx in _COUNTRY_RX:
            for m in rx.finditer(text):
                if _NOT_DESTINATION_AFTER.match(text, m.end()):
                    continue
                # a country before any transfer verb is where someone is, not where data goes
                if (
                    m.start() < verb.start()
                    and not re.search(r"\bto\b", text[m.end() : m.end() + 4])
                    and not _TRANSFER_VERB.search(text, m.end())
                ):
                    continue
                if _NOT_DESTINATION.search(text[max(0, m.start() - 40) : m.start()]):
                    continue
                if (
                    name == "United States"
                    and m.group(0) == "US"
                    and re.search(r"\b(?:let|contact|email|tell|ask)\s+$", text[: m.start()], _I)
                ):
                    continue
                yield _cand("transfers", {"country_or_region": name}, s, m, 0.8, (name,))
                break
        u = _UNSPECIFIED.search(text)
        if u:
            yield _cand("transfers", {"country_or_region": "unspecified"}, s, u, 0.7, ("unspecified",))


# ====================================================================== cookies and tracking

_COOKIE = _rx(r"\bcookies?\b")
_KIND_RULES: Final = (
    (
        "session",
        r"\bsession cookies?\b|\bsession ids?\b[^.]{0,60}\bcookie|\bcookie\w*[^.]{0,80}\b(?:during|for"
        r"|throughout) (?:the course of )?"
        r"(?:his|her|your|their|the|a) (?:browsing )?session\b|\b(?:expire\w*|deleted"
        r"|erased)\b[^.]{0,40}\b(?:close\w* (?:their|your|the) "
        r"(?:internet |web )?browser|end of (?:your|the|his|her) (?:visit|session)|termination of (?:his|her"
        r"|your|the) visit)",
        "session",
    ),
    (
        "persistent",
        r"\bpersistent cookies?\b|\bcookies?\b[^.]{0,60}\bremain on your (?:device|computer)\b",
        "cookie",
    ),
    (
        "functional",
        r"\bremember\w*\b|\bfaster access\b|\bsave you time\b|\bremind us who you are\b"
        r"|\bmake login\b[^.]{0,30}\beasier\b"
        r"|\bkeep you (?:logged|signed) in\b|\bfacilitate and customi[sz]e your experience\b"
        r"|\bpersonali[sz]e your pages\b"
        r"|\b(?:functional|preference) cookies\b",
        "cookie",
    ),
    (
        "analytics",
        r"\banaly[sz]\w*|\bstatistic\w*|\bhow many (?:people|users|visitors)\b|\btraffic\b|\bmeasur\w*\b"
        r"|\bhow (?:users|visitors|you) use[ds]?\b|\btrack (?:your )?(?:interaction|use|usage)\b"
        r"|\banalytics\b"
        r"|\b(?:which|what) (?:pages|links) you (?:visit|click)\w*"
        r"|\bunderstand\w*\b[^.]{0,40}\b(?:use|usage|experience|behaviou?r)\b",
        "tracking",
    ),
    (
        "advertising",
        r"\badvertis\w*|\bads\b|\bretarget\w*|\bremarketing\b|\btarget your interests\b|\bad networks?\b",
        "tracking",
    ),
    ("pixel", r"\bpixel(?:s| tags?)?\b|\bsingle-pixel\b|\bclear gifs?\b|\bspacer gifs?\b", ""),
    ("web_beacon", r"\bweb ?beacons?\b", ""),
    (
        "local_storage",
        r"\b(?:web|local|html5|browser) storage\b|\blocalstorage\b|\bsessionstorage\b"
        r"|\blocal shared objects\b",
        "",
    ),
    (
        "social_plugin",
        r"\bsocial (?:media |network(?:ing)? )?(?:plug-?ins?|widgets?|buttons?)\b|\b(?:our|their) plug-?ins\b"
        r"|[\"“]like[\"”]|\blike buttons?\b|\bshare buttons?\b",
        "",
    ),
)
_KIND_RX: Final = tuple((kind, _rx(p), need) for kind, p, need in _KIND_RULES)
_OPT_OUT_WORDS = _rx(r"\b(?:disable|refuse|decline|block|reject|opt[- ]?out|turn off)\b")
_COOKIE_USE = _rx(
    r"\b(?:use|uses|using|collect\w*|place|set|store)\b[^.;]{0,40}\bcookies\b|\bcookies\b[^.;]{0,30}\b(?:to"
    r"|are used)\b"
)


def _detect_cookies(ctx: _DocContext) -> Iterator[_Cand]:
    kinds_by_block: dict[int, set[str]] = {}
    generic: list[_Cand] = []
    for s in ctx.sentences:
        text = s.text
        has_cookie = bool(_COOKIE.search(text))
        names_tech = bool(_TRACKING.search(text))
        tracking = ctx.tracking(s)
        # a sentence listing data ("identifiers associated with cookies, ...") says what
        # is collected, not what cookies are for
        data_list = len(_category_hits(text)) >= 5
        topic = _tracking_topic(ctx, s)
        for kind, rx, need in _KIND_RX:
            if need and data_list:
                continue
            if need == "cookie" and not (
                has_cookie or (re.match(r"\s*(?:they|these|some)\b", text, _I) and tracking)
            ):
                continue
            if need == "session" and not (has_cookie or tracking):
                continue
            if need == "tracking" and not (names_tech or (tracking and topic)):
                continue
            m = rx.search(text)
            if not m or _PURPOSE_NEGATION.search(_clause_before(text, m.start())):
                continue
            if (
                kind == "functional"
                and re.search(r"\bcookie preferences\b", text, _I)
                and not re.search(r"\bremember", text, _I)
            ):
                continue
            conf = (0.8 if (names_tech or need == "") else 0.65) + (0.05 if topic else 0.0)
            if s.kind == "heading":
                conf -= 0.2
            kinds_by_block.setdefault(s.block, set()).add(kind)
            yield _cand("cookies_and_tracking", {"kind": kind}, s, m, conf, (kind,))
        cu = _COOKIE_USE.search(text)
        if (
            cu
            and s.kind != "heading"
            and not _OPT_OUT_WORDS.search(text)
            and not _PURPOSE_NEGATION.search(_clause_before(text, cu.end()))
        ):
            direct = re.search(
                r"\b(?:use|uses|using|collect\w*|place|set|store)\s+(?:\w+\s+){0,1}cookies\b", text, _I
            )
            generic.append(
                _cand("cookies_and_tracking", {"kind": "cookie"}, s, cu, 0.6 if direct else 0.5, ("cookie",))
            )
    for c in generic:
        if not kinds_by_block.get(c.sent.block):
            yield c


def _tracking_topic(ctx: _DocContext, s: Sentence) -> bool:
    """The sentence sits in a paragraph or section about cookies and tracking."""
    first = ctx.by_block[s.block][0]
    return bool(
        _TRACKING.search(first.text)
        or (s.section and _TRACKING.search(s.section))
        or (s.lead_in and _TRACKING.search(s.lead_in))
    )


# ====================================================================== security

_SECURITY_RULES: Final = (
    (
        "encryption in transit (SSL/TLS/HTTPS)",
        r"\b(?:ssl|tls|secure socket layer|transport layer security)\b|(?<![/\w])https\b(?!://)",
    ),
    ("encryption at rest", r"\bencrypt\w*\b[^.;]{0,40}\bat rest\b|\bat rest\b[^.;]{0,30}\bencrypt"),
    ("encryption", r"\bencrypt\w*\b"),
    (
        "breach monitoring",
        r"\bmonitor\w*\b[^.;]{0,40}\b(?:breach\w*|intrusions?|attacks?|vulnerabilit\w+)\b"
        r"|\bintrusion detection\b",
    ),
    (
        "restricted access",
        r"\b(?:limit|restrict)\w*\s+access\b|\bonly (?:selected |authori[sz]ed )?(?:personnel|employees"
        r"|staff)\b"
        r"|\baccess controls?\b|\bsecure servers?\b|\bneed[- ]to[- ]know\b",
    ),
    (
        "confidentiality obligations of recipients",
        r"\bconfidentiality agreements?\b|\bobliged not to (?:disclose|use)\b"
        r"|\b(?:obligated|required|bound) (?:not to disclose|to keep)\b"
        r"|\bkeep such [^.;]{0,40}\bsecure and confidential\b"
        r"|\bfollow similar standards of security\b|\bpartner with companies that do the same\b"
        r"|\b(?:service providers?|vendors?|processors?)\b[^.;]{0,40}\b(?:security"
        r"|confidentiality) (?:standards|obligations|measures)\b",
    ),
    (
        "security safeguards",
        r"\b(?:reasonable|appropriate|industry[- ]standard|commercially reasonable"
        r"|technical and organi[sz]ational)\b"
        r"[^.;]{0,40}\b(?:measures|safeguards|security)\b|\bsecurity (?:measures|safeguards)\b"
        r"|\bsafeguards\b",
    ),
    (
        "anonymisation",
        r"\bin an? (?:anonymi[sz]ed|pseudonymi[sz]ed) form\b|\banonymi[sz]e (?:the|your|ip)\b"
        r"|\bpseudonymi[sz]\w+\b",
    ),
    ("identity verification for requests", r"\bverify your identity\b"),
    ("hashing", r"\bhash(?:ed|ing)\b[^.;]{0,30}\bpasswords?\b|\bpasswords?\b[^.;]{0,30}\bhashed\b"),
    (
        "identifiers used for security",
        r"\b(?:identifiers?|cookies?|tokens?)\b[^.;]{0,80}\bfor security purposes\b",
    ),
    ("malware scanning", r"\bscan\w*\b[^.;]{0,40}\b(?:malware|viruses?)\b|\bantivirus\b|\banti-virus\b"),
    ("two-factor authentication", r"\b(?:two|2|multi)[- ]factor\b"),
    ("firewalls", r"\bfirewalls?\b"),
)
_SECURITY_RX: Final = tuple((label, _rx(p)) for label, p in _SECURITY_RULES)
_NO_GUARANTEE = _rx(
    r"\bno guarantee\b|\bcannot (?:guarantee|warrant|ensure)\b|\bnot (?:be )?(?:guaranteed|100%)\b"
)
_WE_DO = _rx(
    r"\bwe\b[^.;]{0,30}\b(?:maintain|employ|use|implement|have|take|limit|restrict|require|monitor|encrypt"
    r"|seek)\b"
)
_NOT_OURS = _rx(r"\byour (?:browser|device) (?:establishes|connects)\b")


def _detect_security(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        text = s.text
        if s.kind == "heading" or _NOT_OURS.search(text):
            continue
        if _NO_GUARANTEE.search(text) and not _WE_DO.search(text):
            continue
        labels: set[str] = set()
        for label, rx in _SECURITY_RX:
            m = rx.search(text)
            if not m:
                continue
            if label == "identity verification for requests" and not re.search(
                r"\brequests?\b|\bbefore we\b", text, _I
            ):
                continue
            if label == "encryption" and labels & {
                "encryption in transit (SSL/TLS/HTTPS)",
                "encryption at rest",
            }:
                continue
            if label == "security safeguards" and labels & {
                "restricted access",
                "encryption in transit (SSL/TLS/HTTPS)",
            }:
                continue
            labels.add(label)
            yield _cand("security", {"measure": label}, s, m, 0.75, (label,))


# ====================================================================== policy changes

_CHANGE_WORDS = _rx(r"\b(?:chang|modif|updat|revis|amend)\w*\b")
_POLICY_WORDS = _rx(r"\b(?:privacy )?(?:policy|notice|statement)\b|\bversions?\b")
_NOTICE_RULES: Final = (
    (
        "updated date",
        r"\b(?:revis\w+|updat\w+|chang\w+) the (?:[\"“]?(?:last updated|effective|revision)[\"”]? )?date\b"
        r"|\b(?:check|see|refer to|review) the [\"“]?(?:last updated|effective|revision"
        r"|last modified)[\"”]? date\b|\bupdated date\b"
        r"|\bdate at the top\b",
    ),
    (
        "post on site",
        r"\b(?:changes|modifications|revisions|updates|amendments)\b[^.;]{0,30}\b(?:will|shall) be posted\b"
        r"|\bwill post (?:the |any )?(?:changes|revised|updated|new|modified)\b|\bon this page\b"
        r"|\bnotify you here\b"
        r"|\bposted on (?:this|our|the) (?:site|website|page)\b",
    ),
    (
        "notice on site",
        r"\b(?:notice|notification|banner|statement|announcement)s?\b[^.;]{0,60}\b(?:on|to) (?:the |our )?"
        r"(?:web ?site|site|service|homepage|home page)\b|\bpost a notification\b"
        r"|\bprominent(?:ly)? (?:notice|posted)\b"
        r"|\b(?:service|site) homepage\b",
    ),
    (
        "email",
        r"\b(?:by|via|through) e-?mail\b|\bsend(?:ing)? you an? e-?mail\b|\be-?mail (?:notification|notice)\b"
        r"|\b(?:will|may|shall) e-?mail you\b",
    ),
    (
        "in-service notification",
        r"\bin-(?:service|app|product) (?:notification|notice|message)s?\b"
        r"|\b(?:otherwise )?through the (?:service|app|application|platform|[A-Z]\w+ (?:Cloud|App|Platform"
        r"|Service))\b"
        r"|\bwithin the (?:service|app|product)\b",
    ),
)
_NOTICE_RX: Final = tuple((name, _rx(p)) for name, p in _NOTICE_RULES)
_MATERIAL_CHOICE = _rx(
    r"\byou will have a choice\b|\bgive you (?:a |the )?(?:choice|option)\b|\bopt[- ]in\b"
    r"|\b(?:ask for|obtain|seek) your (?:prior )?consent\b|\blet you (?:choose|decide)\b"
)
_MATERIAL = _rx(r"\bmaterial(?:ly)?\b|\bdifferent\b|\bsignificant\b")
_MATERIAL_CHANGE = _rx(r"\b(?:material|significant|substantial) changes?\b")
_PREVIOUS = _rx(
    r"\b(?:previous|prior|earlier|older|archived) versions?\b[^.;]{0,60}\b(?:available|found|archive|access"
    r"|online)\w*"
    r"|\barchive of (?:previous|prior)\b"
)


def _detect_policy_changes(ctx: _DocContext) -> Iterator[_Cand]:
    change_blocks = {
        s.block
        for s in ctx.sentences
        if (_CHANGE_WORDS.search(s.text) and _POLICY_WORDS.search(s.text)) or _MATERIAL_CHANGE.search(s.text)
    }
    notice: list[str] = []
    choice = previous = False
    best: tuple[float, Sentence, tuple[int, int]] | None = None
    for s in ctx.sentences:
        section_change = bool(
            s.section
            and _CHANGE_WORDS.search(s.section)
            and (_POLICY_WORDS.search(s.section) or len(s.section.split()) <= 4)
        )
        if not (s.block in change_blocks or section_change):
            continue
        score = 0.0
        cue: tuple[int, int] | None = None
        for name, rx in _NOTICE_RX:
            m = rx.search(s.text)
            if m:
                score += 1
                cue = cue or (m.start(), m.end())
                if name not in notice:
                    notice.append(name)
        mc = _MATERIAL_CHOICE.search(s.text)
        if mc and (_MATERIAL.search(s.text) or section_change):
            choice = True
            score += 2
            cue = cue or (mc.start(), mc.end())
        pv = _PREVIOUS.search(s.text)
        if pv:
            previous = True
            score += 0.5
            cue = cue or (pv.start(), pv.end())
        if cue is None and _CHANGE_WORDS.search(s.text) and _POLICY_WORDS.search(s.text):
            score, cue = 0.1, (0, len(s.text))
        if cue is not None and (best is None or score > best[0]):
            best = (score, s, cue)
    if best is None:
        return
    _, s, cue = best
    conf = 0.8 if notice or choice else 0.55
    value = {"notice": notice, "material_change_choice": choice, "previous_versions_available": previous}
    yield _cand("policy_changes", value, s, cue, conf)


# ====================================================================== contact, date, service, special

_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_OBFUSCATED = re.compile(
    r"\b[\w.+-]+(?:-at-|\s?\(at\)\s?|\s?\[at\]\s?)[\w-]+(?:(?:\.|\s?\(dot\)\s?|\s?\[dot\]\s?)[\w-]+)+\b", _I
)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s)\]\[<>\"“”]+", _I)
# privacy@, dpo@, data-protection@ ...: a privacy contact point wherever it is written.
_PRIVACY_MAILBOX = re.compile(
    r"\b(?:privacy|dpo|data-?protection|gdpr|dataprotection|legal)@[\w-]+(?:\.[\w-]+)+\b", _I
)
_CONTACT_CUE = _rx(
    r"\bcontact\b|\bcontact(?:ing)? us\b|\be-?mail us\b|\bwrite to us\b|\breach us\b|\bget in touch\b"
    r"|\bquestions\b|\bconcerns\b|\binquiries\b"
)


def _detect_contact(ctx: _DocContext) -> Iterator[_Cand]:
    best: tuple[float, _Cand] | None = None
    for s in ctx.sentences:
        text = s.text
        cue = _CONTACT_CUE.search(text) or _PRIVACY_MAILBOX.search(text)
        if not cue:
            continue
        for rx in (_EMAIL, _OBFUSCATED, _URL):
            m = rx.search(text, cue.start())
            if not m:
                continue
            channel = m.group(0).rstrip(".,;:)")
            if (
                rx is _URL
                and re.search(r"privacy|terms|policy|legal/", channel, _I)
                and not re.search(r"contact|support", channel, _I)
            ):
                continue
            score = 0.6
            if s.section and re.search(r"\bcontact", s.section, _I):
                score += 0.25
            if re.search(r"\b(?:questions|concerns|inquiries)\b", text, _I):
                score += 0.1
            if re.search(r"\bprivacy\b|\bthis policy\b", text, _I):
                score += 0.05
            if ctx.children(s):
                score -= 0.2
            cand = _cand("contact", {"channel": channel}, s, (cue.start(), m.end()), min(score, 0.95))
            if best is None or score > best[0]:
                best = (score, cand)
            break
    if best is not None:
        yield best[1]


_MONTHS: Final = {
    m: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for m in names
}
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DATE = (
    rf"(?P<date>(?P<m1>{_MONTH})\s+(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y1>\d{{4}})"
    rf"|(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<m2>{_MONTH}),?\s+(?P<y2>\d{{4}})"
    r"|(?P<y3>\d{4})-(?P<m3>\d{1,2})-(?P<d3>\d{1,2})"
    r"|(?P<a4>\d{1,2})[/.](?P<b4>\d{1,2})[/.](?P<y4>\d{4}))"
)
_UPDATED = _rx(
    r"\b(?:last (?:updated|revised|modified|edited|changed|amended|reviewed)|effective (?:date|as of|from"
    r"|on)|updated (?:on|as of)"
    r"|revised (?:on|as of)|date of (?:last )?revision|version date|policy date)\b[^0-9a-z]{0,12}(?:on\s+"
    r"|as of\s+)?" + _DATE
)


def _parse_date(m: re.Match[str]) -> str | None:
    try:
        if m.group("y1"):
            d = date(int(m.group("y1")), _MONTHS[m.group("m1").lower().rstrip(".")], int(m.group("d1")))
        elif m.group("y2"):
            d = date(int(m.group("y2")), _MONTHS[m.group("m2").lower().rstrip(".")], int(m.group("d2")))
        elif m.group("y3"):
            d = date(int(m.group("y3")), int(m.group("m3")), int(m.group("d3")))
        else:
            a, b = int(m.group("a4")), int(m.group("b4"))
            month, day = (a, b) if a <= 12 else (b, a)  # US order unless the first cannot be a month
            d = date(int(m.group("y4")), month, day)
    except (ValueError, KeyError):
        return None
    return d.isoformat()


def _detect_last_updated(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        m = _UPDATED.search(s.text)
        if m:
            iso = _parse_date(m)
            if iso:
                yield _cand("last_updated", {"date": iso}, s, m, 0.9)
                return


_TITLE_SERVICE = (
    re.compile(r"^[Ww]elcome to (?P<name>[A-Z][\w.&-]*(?:\s[A-Z][\w.&-]*){0,2})[.!]?$"),
    _rx(r"^privacy (?:policy|notice|statement)\s*[|\-–—:]\s*(?P<name>[^|]{2,40}?)\s*$"),
    _rx(r"^(?P<name>[^|]{2,40}?)\s*[|\-–—:]\s*privacy (?:policy|notice|statement)\s*$"),
    re.compile(
        r"^(?P<name>[A-Z][\w.&-]*(?:\s[A-Z][\w.&-]*){0,2})(?:['’]s)?\s+[Pp]rivacy\s+(?:[Pp]olicy|[Nn]otice"
        r"|[Ss]tatement)\s*$"
    ),
)
_DEFINED_WE = re.compile(r"\(([^()]*[\"“](?:we|us|our)[\"””][^()]*)\)")
_QUOTED = re.compile(r"[\"“]\s*([^\"”“]{2,40}?)\s*[\"”]")
_SUBJECT_NAME = re.compile(
    r"(?<![\w.])(?P<n>(?:[A-Z][A-Za-z0-9]+\s){0,2}[A-Z][A-Za-z0-9]+(?:\.[a-z]{2,4})?"
    r"|[a-z][a-z0-9-]*\.(?:io|com|net|org|co|app|ai))\s+"
    r"(?=(?:is|may|will|uses|collects|does|can|stores|reserves|takes|has|enables|allows|provides|shares"
    r"|processes|might|would|could|should|cannot|can not)\b)"
)
_NOT_NAMES: Final = frozenset(
    [
        "we",
        "you",
        "it",
        "this",
        "that",
        "they",
        "these",
        "those",
        "our",
        "your",
        "he",
        "she",
        "there",
        "here",
        "google",
        "facebook",
        "twitter",
        "intercom",
        "members",
        "member",
        "visitors",
        "users",
        "user",
        "cookies",
        "information",
        "data",
        "personal",
        "please",
        "if",
        "when",
        "each",
        "some",
        "most",
        "any",
        "all",
        "service",
        "services",
        "site",
        "website",
    ]
)


def _service_name(doc: Document, sentences: list[Sentence]) -> str | None:
    candidates = [doc.title] if doc.title else []
    candidates += [s.text for s in sentences[:12] if s.kind == "heading"]
    for text in candidates:
        for rx in _TITLE_SERVICE:
            m = rx.match(text.strip())
            if m:
                return m.group("name").strip()
    for s in sentences[:40]:
        m = _DEFINED_WE.search(s.text)
        if m:
            for q in _QUOTED.finditer(m.group(1)):
                name = q.group(1).strip()
                if name.lower() not in (
                    "we",
                    "us",
                    "our",
                    "its",
                    "company",
                    "the company",
                    "service",
                    "services",
                ):
                    return name
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for s in sentences:
        for m in _SUBJECT_NAME.finditer(s.text):
            words = m.group("n").split()
            while words and words[0].lower() in _NOT_NAMES | _SMALL_WORDS:
                words.pop(0)  # "The Acme app", "Our Service"
            n = " ".join(words)
            if not n or n.lower() in _NOT_NAMES:
                continue
            counts[n] = counts.get(n, 0) + 1
            first.setdefault(n, s.index)
    if counts:
        return max(counts, key=lambda n: (counts[n], -first[n]))
    return None


_SPECIAL_RULES: Final = (
    (
        "Some messages (service, administrative) cannot be opted out of.",
        r"\bcannot opt[- ]?out of\b|\bcan['’]?not opt[- ]?out\b",
    ),
    (
        "No discrimination for exercising privacy rights.",
        r"\b(?:not|never) discriminate\b|\bnon-?discrimination\b",
    ),
    (
        "A response deadline for requests.",
        r"\brespond to (?:your |a |all )?(?:verifiable )?requests? within\b"
        r"|\ballow \d+ (?:business |calendar )?days for (?:a )?response\b|\b(?:respond|reply"
        r"|answer)\w* within (?:\d+|one|thirty|forty-five)\b",
    ),
    (
        "The controller is named.",
        r"\bis the (?:data )?controller\b|\bacts as (?:the |a )?(?:data )?controller\b",
    ),
    (
        "Personal data is received from other sources.",
        r"\b(?:collect|receive|obtain)\w*\b[^.;]{0,80}\bfrom (?:other sources"
        r"|third[- ]part(?:y|ies)|(?:business )?partners|individuals and companies"
        r"|public(?:ly available)? sources"
        r"|other users|data brokers|social (?:media|networks?)|public databases|[\w-]+ (?:check )?providers)"
        r"|\bpublicly available (?:contact|information|data)\b"
        r"|\bcombine it with (?:similar )?information from\b"
        r"|\binformation about your visits and interaction with services provided by others\b",
    ),
    (
        "Uploads are scanned against hashes of known illegal content.",
        r"\bhash(?:es)?\b[^.]{0,80}\b(?:known|database|match)\b|\bphotodna\b",
    ),
    ("Requests may be refused.", r"\b(?:reject|refuse|deny|decline) your request\b"),
    ("No deadline is promised for deletion.", r"\bcannot (?:promise|guarantee) that deletion\b"),
    (
        "Deletion requests have exceptions.",
        r"\bnot be able to (?:fully )?(?:address|complete|honou?r) your (?:deletion )?request\b",
    ),
    (
        "Deletion may be done by de-identifying or aggregating.",
        r"\bdelete [^.]{0,30}\bby (?:de-?identifying|anonymi[sz]ing|aggregating)\b",
    ),
    (
        "Data may be used or shared without consent or notice in some cases.",
        r"\bwithout (?:asking for )?your consent or (?:providing you with )?notice\b",
    ),
    (
        "Changes take effect on posting; continued use means acceptance.",
        r"\bcontinued use\b[^.]{0,80}\b(?:signifies|constitutes|means|indicates)\b",
    ),
    (
        "Opt-out requests may take time to take effect.",
        r"\bnot take effect immediately\b|\breasonable (?:amount of )?time to (?:receive|process"
        r"|take effect)\b",
    ),
    (
        "Data already given to third parties is not retrieved.",
        r"\bcannot be retrieved\b|\bcannot retroactively\b",
    ),
    (
        "An acquirer stays bound by this policy.",
        r"\bremain subject to this privacy policy\b|\bonly in the manner set out in this privacy policy\b",
    ),
    (
        "People are told of legal demands for their data.",
        r"\bnotify (?:members|users|you) (?:about|of) legal (?:demands|requests)\b",
    ),
    ("Recipients' own privacy policies govern their use.", r"\bgoverned by the privacy policies of\b"),
    (
        "Some information is mandatory, some voluntary.",
        r"\bidentified as mandatory\b|\bmandatory and (?:some )?(?:identified as )?voluntary\b",
    ),
    ("Requests are free of charge.", r"\bno charge for\b|\bfree of charge\b"),
    ("A username need not be the real name.", r"\bnot (?:mandatory|required|necessary) for your username\b"),
    ("Data is used for a sole stated purpose.", r"\bfor the sole purpose of\b"),
    ("Logging can be turned off on request.", r"\bturn off (?:other )?(?:application )?logging\b"),
    ("Promotional messages may promote third-party products.", r"\bpromot\w+ third[- ]party products\b"),
    (
        "A recipient commits not to combine the data with other data.",
        r"\bwill not (?:associate|combine|link|merge) your\b",
    ),
    (
        "A recipient may pass the data on to others.",
        r"\b[A-Z][\w.]+ may (?:also )?(?:transfer|share|disclose|pass)\w* (?:this|such|the|that) "
        r"(?:information|data) (?:on )?to third parties\b",
    ),
    (
        "Entries believed false or abusive are removed.",
        r"\b(?:reject|remove|delete)\w*(?: and (?:reject|remove|delete)\w*)? any "
        r"(?:entry|entries|content|submissions?|posts?) (?:that )?we believe\b",
    ),
    (
        "Transfers abroad are safeguarded.",
        r"\b(?:outside (?:of )?(?:the )?(?:EU|EEA|European)|international(?:ly)? transfer\w*)\b[^.]{0,80}"
        r"\b(?:in accordance with|safeguards?|standard contractual clauses|adequacy|privacy shield)\b"
        r"|\bstandard contractual clauses\b|\badequacy decisions?\b|\bbinding corporate rules\b"
        r"|\bdata privacy framework\b",
    ),
    (
        "Data about a person is received from what others post.",
        r"\bpublic information about you\b"
        r"|\binformation about you (?:that )?(?:is )?(?:posted|shared|provided) by (?:others|other users)\b",
    ),
)
_SPECIAL_RX: Final = tuple((label, _rx(p)) for label, p in _SPECIAL_RULES)


def _detect_special(ctx: _DocContext) -> Iterator[_Cand]:
    for s in ctx.sentences:
        if s.kind == "heading":
            continue
        for label, rx in _SPECIAL_RX:
            m = rx.search(s.text)
            if m:  # one item per practice and sentence: a policy may state a practice twice
                yield _cand("special", {"practice": label}, s, m, 0.6, (label, s.index))


_DETECTORS: Final[tuple[Callable[[_DocContext], Iterable[_Cand]], ...]] = (
    _detect_last_updated,
    _detect_categories,
    _detect_purposes,
    _detect_third_party_sharing,
    _detect_legal_bases,
    _detect_recipients,
    _detect_sale,
    _detect_retention,
    _detect_rights,
    _detect_children,
    _detect_transfers,
    _detect_cookies,
    _detect_security,
    _detect_policy_changes,
    _detect_contact,
    _detect_special,
)


# ====================================================================== assembly

_OBJECT_FIELDS: Final = ("last_updated", "sells_personal_data", "children", "policy_changes", "contact")
_FIELD_ORDER: Final = (
    "last_updated",
    "categories",
    "purposes",
    "legal_bases",
    "recipients",
    "sells_personal_data",
    "retention",
    "rights",
    "children",
    "transfers",
    "cookies_and_tracking",
    "security",
    "policy_changes",
    "contact",
    "special",
)


def _assemble(ctx: _DocContext, found: list[_Cand]) -> list[Claim]:
    """One claim per field and key (per field for an object field): the most confident
    candidate, the earliest on ties."""
    best: dict[tuple[str, tuple[Any, ...]], _Cand] = {}
    order: list[tuple[str, tuple[Any, ...]]] = []
    for c in found:
        k = (c.field, () if c.field in _OBJECT_FIELDS else c.key)
        cur = best.get(k)
        if cur is None:
            best[k] = c
            order.append(k)
        elif (c.conf, -c.cue[0]) > (cur.conf, -cur.cue[0]):
            best[k] = c
    chosen = [best[k] for k in order]
    # a right with a stated channel makes its channel-less mention redundant
    channelled = {c.value["right"] for c in chosen if c.field == "rights" and c.value["channel"] is not None}
    chosen = [
        c
        for c in chosen
        if not (c.field == "rights" and c.value["channel"] is None and c.value["right"] in channelled)
    ]
    rank = {f: i for i, f in enumerate(_FIELD_ORDER)}
    chosen.sort(key=lambda c: (rank[c.field], c.cue[0]))
    doc = ctx.doc
    claims: list[Claim] = []
    for c in chosen:
        ps, pe = _evidence_span(doc.plain, c.sent, c.cue)
        s, e = doc.source_span(ps, pe)
        evidence = Evidence(s, e, doc.source_text[s:e])
        claims.append(
            Claim(c.field, dict(c.value), evidence, round(min(max(c.conf, 0.0), 1.0), 2), c.sent.section)
        )
    return claims
