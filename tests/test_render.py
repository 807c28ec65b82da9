"""The public notice (HTML and Markdown) and the Art. 30 record, rendered from policies.

Every policy we have (the minimal fixture and every example) must render to a notice that
is well-formed, accessible in its structure, self-contained, and states what the policy
says: every purpose, recipient, retention period, cookie, the contact and the version.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import typing
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fiduciary.policy import CompiledPolicy, compile_policy, load_policy, load_policy_text
from fiduciary.policy import model as m
from fiduciary.policy import render as r
from fiduciary.policy.period import Period
from fiduciary.policy.record import RECORD_HEADERS, RECORD_KEYS, record_csv, record_json, record_rows
from fiduciary.policy.render import (
    ArchivedVersion,
    build_notice,
    period_words,
    render_notice_html,
    render_notice_markdown,
)

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "tests" / "fixtures" / "minimal.yaml"
EXAMPLES = sorted(ROOT.glob("examples/*/policy.yaml"))
POLICIES = [MINIMAL, *EXAMPLES]


def _id(path: Path) -> str:
    return "minimal" if path == MINIMAL else path.parent.name


@pytest.fixture(scope="module", params=POLICIES, ids=[_id(p) for p in POLICIES])
def compiled(request: pytest.FixtureRequest) -> CompiledPolicy:
    # No try/except: an example that fails to load fails its tests, never skips them.
    return compile_policy(load_policy(request.param))


def _compile_text(text: str) -> CompiledPolicy:
    return compile_policy(load_policy_text(text, "variant.yaml"))


def _variant(old: str, new: str) -> CompiledPolicy:
    text = MINIMAL.read_text()
    assert old in text, old
    return _compile_text(text.replace(old, new, 1))


# --------------------------------------------------------------------------- HTML reading

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


class Page(HTMLParser):
    """Reads a page once and keeps what the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.html_lang: str | None = None
        self.headings: list[tuple[int, str]] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.tags: list[str] = []
        self.th_in_thead_without_scope = 0
        self.th_in_tbody_without_scope = 0
        self.tables = 0
        self.captions = 0
        self.summary_rows: list[str] = []
        self._text: list[str] = []
        self._heading: list[str] | None = None
        self._in_summary = False
        self._row_header: list[str] | None = None
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed: {self.stack}")
        self.text = re.sub(r"\s+", " ", "".join(self._text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "html":
            self.html_lang = a.get("lang")
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
        if a.get("src"):
            self.srcs.append(str(a["src"]))
        if tag == "link" and a.get("href"):
            self.srcs.append(str(a["href"]))
        if tag == "table":
            self.tables += 1
            if "summary" in (a.get("class") or "").split():
                self._in_summary = True
        if tag == "caption":
            self.captions += 1
        if tag == "th" and not a.get("scope"):
            if "thead" in self.stack:
                self.th_in_thead_without_scope += 1
            else:
                self.th_in_tbody_without_scope += 1
        if tag == "th" and self._in_summary and "tbody" in self.stack:
            self._row_header = []
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.headings.append((int(tag[1]), " ".join("".join(self._heading).split())))
            self._heading = None
        if tag == "th" and self._row_header is not None:
            self.summary_rows.append(" ".join("".join(self._row_header).split()))
            self._row_header = None
        if tag == "table":
            self._in_summary = False

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] in ("style", "script"):
            return
        self._text.append(data)
        if self._heading is not None:
            self._heading.append(data)
        if self._row_header is not None:
            self._row_header.append(data)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _needles(cp: CompiledPolicy) -> list[str]:
    """What any rendering of the notice must contain."""
    pol = cp.policy
    out = [p.name for p in cp.purposes.values()]
    out += [rc.source.name for rc in cp.recipients.values()]
    out += [period_words(rule.period) for rule in pol.retention.values() if rule.period]
    out += [c.name for c in pol.cookies]
    out += [period_words(c.lifetime) for c in pol.cookies]
    out += [j.name for j in pol.jurisdictions.values()]
    out += [period_words(rt.deadline) for j in pol.jurisdictions.values() for rt in j.rights.values()]
    out += [r.category_name(cp, k) for k in pol.categories]
    contact = pol.organization.contact
    out += [x for x in (contact.email, contact.url) if x]
    out += [pol.organization.name, cp.version, r.format_date(cp.effective)]
    if pol.breaches:
        out.append(period_words(pol.breaches.authority_within))
    if pol.backups:
        out.append(period_words(pol.backups.retention))
    return [_norm(n) for n in out if n]


# --------------------------------------------------------------------------- every policy


def test_there_are_examples_to_render() -> None:
    assert EXAMPLES, "no examples/*/policy.yaml found"


def test_html_is_well_formed_and_accessible(compiled: CompiledPolicy) -> None:
    html = render_notice_html(compiled)
    assert html.startswith("<!doctype html>")
    page = Page(html)
    assert page.errors == []
    assert page.html_lang == "en"
    levels = [lvl for lvl, _ in page.headings]
    assert levels.count(1) == 1 and levels[0] == 1
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, f"heading skips from h{before} to h{after}: {page.headings}"
    assert all(text for _, text in page.headings), "empty heading"
    # Landmarks and the skip link.
    for tag in ("header", "nav", "main", "footer"):
        assert tag in page.tags
    assert "#main" in page.hrefs and "main" in page.ids
    # Tables: a caption each, every header cell scoped.
    assert page.tables == page.captions
    assert page.th_in_thead_without_scope == 0
    assert page.th_in_tbody_without_scope == 0
    # Ids unique; every in-page link lands somewhere.
    assert len(page.ids) == len(set(page.ids)), "duplicate ids"
    for href in page.hrefs:
        if href.startswith("#"):
            assert href[1:] in page.ids, f"dangling link {href}"
    # Self-contained: no scripts, nothing loaded from elsewhere.
    assert "script" not in page.tags
    assert all(src.startswith("data:") for src in page.srcs)
    assert "@import" not in html and "url(" not in html
    assert "@media print" in html


def test_html_has_the_sections(compiled: CompiledPolicy) -> None:
    ids = set(Page(render_notice_html(compiled)).ids)
    expected = {"summary", "contact", "collect", "purposes", "recipients", "retention", "rights", "changes"}
    if compiled.policy.children or compiled.minimum_age:
        expected.add("children")
    if compiled.policy.cookies:
        expected.add("cookies")
    if compiled.policy.screening:
        expected.add("screening")
    if compiled.policy.exemptions:
        expected.add("exemptions")
    if compiled.policy.visibility:
        expected.add("visibility")
    assert expected <= ids
    assert {f"purpose-{k}" for k in compiled.purposes} <= ids


def test_html_states_everything(compiled: CompiledPolicy) -> None:
    text = Page(render_notice_html(compiled)).text
    missing = [n for n in _needles(compiled) if n.lower() not in text.lower()]
    assert missing == []


def test_markdown_states_everything(compiled: CompiledPolicy) -> None:
    md = _norm(render_notice_markdown(compiled).replace("\\|", "|"))
    missing = [n for n in _needles(compiled) if n.lower() not in md.lower()]
    assert missing == []


def test_summary_has_one_row_per_purpose(compiled: CompiledPolicy) -> None:
    page = Page(render_notice_html(compiled))
    assert page.summary_rows == [p.name for p in compiled.purposes.values()]
    md = render_notice_markdown(compiled)
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in summary.splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + len(compiled.purposes)  # header, rule, one per purpose
    cells = len(rows[0].split(" | "))
    for row in rows[2:]:
        assert len(re.split(r"(?<!\\)\|", row)) - 2 == cells


def test_every_retention_rule_in_words(compiled: CompiledPolicy) -> None:
    text = Page(render_notice_html(compiled)).text
    for rule in compiled.policy.retention.values():
        assert r.retention_sentence(rule) in text


def test_record_csv(compiled: CompiledPolicy) -> None:
    rows = list(csv.reader(io.StringIO(record_csv(compiled))))
    assert tuple(rows[0]) == RECORD_HEADERS
    for letter in "abcdefg":
        assert any(f"Art. 30(1)({letter})" in h for h in rows[0]), letter
    assert len(rows) == 1 + len(compiled.purposes)
    key_col = RECORD_KEYS.index("purpose_key")
    assert [row[key_col] for row in rows[1:]] == list(compiled.purposes)
    assert all(len(row) == len(RECORD_HEADERS) for row in rows)
    name = compiled.policy.organization.legal_name or compiled.policy.organization.name
    assert all(name in row[0] for row in rows[1:])


def test_record_json_round_trips(compiled: CompiledPolicy) -> None:
    rec = record_json(compiled)
    assert json.loads(json.dumps(rec)) == rec
    assert rec["generated_from"] == {
        "version": compiled.version,
        "effective": compiled.effective.isoformat(),
        "digest": compiled.digest,
    }
    assert len(rec["activities"]) == len(compiled.purposes)
    assert rec["activities"] == record_rows(compiled)


def test_record_names_recipients_and_transfers(compiled: CompiledPolicy) -> None:
    rows = {row["purpose_key"]: row for row in record_rows(compiled)}
    for key, rc in compiled.recipients.items():
        for pk in rc.purposes:
            assert rc.source.name in rows[pk]["recipients"], (key, pk)
            if rc.outside_eea:
                assert rc.source.name in rows[pk]["transfers"]
                assert rc.source.name in rows[pk]["transfer_safeguards"]


# --------------------------------------------------------------------------- behaviour


def test_minimal_specifics() -> None:
    cp = compile_policy(load_policy(MINIMAL))
    text = Page(render_notice_html(cp)).text
    assert "Essential to the service: it cannot be switched off." in text
    assert "We do not sell your personal data" in text
    # the EU/rest-of-world consent modes of the newsletter, in words, per jurisdiction
    assert "European Economic Area (GDPR): only with your consent" in text
    assert "Rest of the world: on unless you say no" in text
    # legitimate interest: the right to object is stated
    assert "You can object on grounds relating to your situation" in text
    # the transfer to the US processor and its safeguard
    assert "standard contractual clauses" in text
    # truncation in words, not as /24
    assert "first 24 bits" in text
    # changelog rows, newest first, and the material-change rule
    assert text.index("Added analytics.") < text.index("First version.")
    assert "will not apply to data we collected before it unless you agree" in text
    assert "1 month; extendable once by 2 months" in text


def test_sale_flag_changes_the_statement() -> None:
    cp = _variant("    transfer: scc\n", "    transfer: scc\n    sale: true\n")
    text = Page(render_notice_html(cp)).text
    assert "We do not sell" not in text
    assert "We sell Email address to Mailer Inc." in text


def test_html_escapes_policy_text() -> None:
    cp = _variant("name: Newsletter", 'name: "News <script>alert(1)</script> & <b>more</b>"')
    html = render_notice_html(cp)
    page = Page(html)
    assert "script" not in page.tags and "b" not in page.tags
    assert "News <script>alert(1)</script> & <b>more</b>" in page.text


def test_markdown_escapes_pipes_in_tables() -> None:
    cp = _variant("name: Newsletter", 'name: "News | letter"')
    md = render_notice_markdown(cp)
    assert "News \\| letter" in md
    test_summary_has_one_row_per_purpose(cp)


def test_session_cookie_lifetime_and_consent_in_words() -> None:
    cookies = (
        "cookies:\n"
        "  - {name: sid, category: strictly_necessary, lifetime: session, purpose: account}\n"
        "  - {name: stats, category: analytics, lifetime: 1 year, purpose: diagnostics,\n"
        "     consent: {eu: opt_in, '*': opt_out}, gpc: opt_out}\n"
        "  - {name: fb_like, category: advertising, lifetime: 30 days, kind: social_plugin,\n"
        "     provider: Facebook, consent: {'*': opt_in}}\n"
        "datastores:\n"
    )
    cp = _variant("datastores:\n", cookies)
    text = Page(render_notice_html(cp)).text
    assert "Until you close your browser" in text
    assert "European Economic Area (GDPR): Only after you agree" in text
    assert "Rest of the world: Set unless you refuse" in text
    assert "Switched off by a Global Privacy Control signal" in text
    assert "We block them until you agree" in text
    md = render_notice_markdown(cp)
    assert "`sid`" in md and "Until you close your browser" in md


def test_brand_colour_is_darkened_to_readable_contrast() -> None:
    cp = _variant("  storage: [NL]\n", "  storage: [NL]\n  color: '#ffee00'\n")
    html = render_notice_html(cp)
    accent = re.search(r"--accent: (#[0-9a-f]{6});", html)
    assert accent
    rgb = r._parse_hex(accent.group(1))
    assert rgb is not None
    assert r._contrast(rgb, (255, 255, 255)) >= 4.5


def test_archive_links_are_listed() -> None:
    cp = compile_policy(load_policy(MINIMAL))
    html = render_notice_html(
        cp, archive=[ArchivedVersion("1.0", "https://acme.test/privacy/1.0", m.date(2023, 1, 1))]
    )
    assert 'href="https://acme.test/privacy/1.0"' in html
    assert "on request" not in Page(html).text
    md = render_notice_markdown(cp, archive=[ArchivedVersion("1.0", "https://acme.test/v1")])
    assert "[Version 1.0](https://acme.test/v1)" in md


def test_period_words() -> None:
    assert period_words(Period.parse("session")) == "until you close your browser"
    assert period_words(Period.parse("15 business days")) == "15 business days"
    assert period_words(Period.parse("1 month")) == "1 month"
    assert period_words(Period.parse("0 days")) == "immediately"
    assert period_words(None) == ""


@pytest.mark.parametrize("trigger", list(m.Trigger))
def test_retention_sentence_names_trigger_and_period(trigger: m.Trigger) -> None:
    rule = m.RetentionRule(categories=["user"], trigger=trigger, period=Period.parse("45 days"))
    assert "45 days" in r.retention_sentence(rule)
    assert "45 days" in r.retention_short(rule)
    bare = m.RetentionRule(categories=["user"], trigger=trigger)
    assert "deleted" in r.retention_sentence(bare)


def _literal_values(annotation: object) -> set[str]:
    out: set[str] = set()
    for arg in typing.get_args(annotation):
        if isinstance(arg, str):
            out.add(arg)
        else:
            out |= _literal_values(arg)
    return out


def test_every_value_of_the_language_has_words() -> None:
    """A value added to the policy language must come with words for the notice."""
    tables: list[tuple[object, type]] = [
        (r.BASIS_WORDS, m.Basis),
        (r.CONSENT_WORDS, m.ConsentMode),
        (r.CONSENT_SHORT, m.ConsentMode),
        (r.COOKIE_CONSENT_WORDS, m.ConsentMode),
        (r.ROLE_WORDS, m.Role),
        (r.TRANSFER_WORDS, m.Transfer),
        (r.REQUEST_WORDS, m.RequestType),
        (r.VERIFICATION_WORDS, m.Verification),
        (r.TRIGGER_SHORT, m.Trigger),
        (r.ACTION_WORDS, m.RetentionAction),
        (r.FORM_WORDS, m.DataForm),
        (r.CHILD_ACTION_WORDS, m.ChildAction),
        (r.COOKIE_CATEGORY_WORDS, m.CookieCategory),
    ]
    for table, enum in tables:
        assert set(table) == set(enum), enum  # type: ignore[call-overload]
    literals = [
        (r.CONDITION_WORDS, m.Recipient, "condition", {"always"}),
        (r.NOTIFY_WORDS, m.Recipient, "notify_subject", set()),
        (r.LEGAL_BASIS_WORDS, m.Exemption, "basis", set()),
        (r.LEGAL_BASIS_WORDS, m.LegalMinimum, "basis", set()),
        (r.AUDIENCE_WORDS, m.Visibility, "audiences", set()),
        (r.SOURCE_WORDS, m.Activity, "source", set()),
        (r.KIND_WORDS, m.Cookie, "kind", set()),
        (r.ANNOUNCE_WORDS, m.ChangePolicy, "announce", set()),
        (r.ALGORITHM_NAMES, m.Screening, "algorithms", set()),
    ]
    for table, model, fieldname, unused in literals:
        values = _literal_values(model.model_fields[fieldname].annotation)
        assert values, (model, fieldname)
        assert values - unused <= set(table), (model.__name__, fieldname, values - set(table))
    cp = compile_policy(load_policy(MINIMAL))
    for channel in m.Channel:
        assert "_" not in r.channel_words(cp, channel)


def test_build_notice_lists_sections_in_order() -> None:
    n = build_notice(compile_policy(load_policy(MINIMAL)))
    ids = [s.id for s in n.sections]
    assert ids[:2] == ["summary", "contact"]
    assert ids.index("purposes") < ids.index("recipients") < ids.index("retention") < ids.index("rights")
    assert ids[-1] == "changes"
