"""The policy importer's output: the draft policy.yaml, the review page, the command.

The extraction here is made by hand over a short policy text, with claims of every field,
so these tests do not depend on how well the extractor reads."""

from __future__ import annotations

import html
import re
import sys
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fiduciary.cli import app
from fiduciary.importer.draft import ExtractionError, build_draft, draft_policy
from fiduciary.importer.model import Claim, Evidence, Extraction
from fiduciary.importer.review import review_html
from fiduciary.policy import PolicyError, load_policy_text

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "tests" / "fixtures" / "minimal.yaml"
runner = CliRunner()

TEXT = """Acme Privacy Policy
Last updated: March 3, 2024.

We collect your email address and your IP address when you sign up.
We use your email address to send you our newsletter, based on your consent.
We process your payment details to perform our contract with you.
We analyse how the site is used.
We share your email address with Mailer Inc., our email service provider.
We may disclose information to law enforcement when required by law.
Partners receive aggregate statistics only.
We do not sell your personal information.
We keep server logs for 30 days. Session cookies expire when you close your browser.
We use analytics cookies and pixel tags.
You can access and delete your data in your account settings.
You may complain to a supervisory authority.
We do not knowingly collect data from children under 13; if we learn we have, we delete the account.
Your data is stored in the Netherlands.
Passwords are stored hashed.
We will email you before a material change and let you choose. Earlier versions stay online.
Questions: privacy@acme.test.
We scan uploads for malware.
Markup stays text: <script>alert("x")</script> & "quotes".
"""


def claim(field: str, value: dict[str, Any], quote: str, confidence: float = 0.9, nth: int = 0) -> Claim:
    start = -1
    for _ in range(nth + 1):
        start = TEXT.index(quote, start + 1)
    return Claim(field, value, Evidence(start, start + len(quote), quote), confidence, "Acme Privacy Policy")


def extraction() -> Extraction:
    claims = [
        claim("last_updated", {"date": "2024-03-03"}, "Last updated: March 3, 2024."),
        claim("categories", {"key": "user.contact.email"}, "your email address", nth=0),
        claim("categories", {"key": "user.device.ip_address"}, "your IP address", 0.55),
        claim("categories", {"key": "user.contact.email"}, "your email address to send you our newsletter"),
        claim("categories", {"key": "user.payment"}, "your payment details"),
        claim("purposes", {"key": "marketing.communications.email"}, "to send you our newsletter"),
        claim("legal_bases", {"basis": "consent"}, "based on your consent"),
        claim("purposes", {"key": "essential.service.payment_processing"}, "We process your payment details"),
        claim("legal_bases", {"basis": "contract"}, "to perform our contract with you"),
        claim("purposes", {"key": "analytics.reporting"}, "We analyse how the site is used.", 0.4),
        claim(
            "recipients",
            {
                "name": "Mailer Inc.",
                "role": "processor",
                "categories": ["user.contact.email"],
                "aggregate_only": False,
            },
            "We share your email address with Mailer Inc., our email service provider.",
        ),
        claim(
            "recipients",
            {"name": None, "role": "authority", "categories": [], "aggregate_only": False},
            "We may disclose information to law enforcement when required by law.",
        ),
        claim(
            "recipients",
            {"name": None, "role": "third_party", "categories": ["user.behavior"], "aggregate_only": True},
            "Partners receive aggregate statistics only.",
        ),
        claim("sells_personal_data", {"value": False}, "We do not sell your personal information."),
        claim("retention", {"scope": "server logs", "period": "P30D"}, "We keep server logs for 30 days."),
        claim(
            "retention",
            {"scope": "session cookies", "period": "end of visit"},
            "Session cookies expire when you close your browser.",
        ),
        claim(
            "cookies_and_tracking", {"kind": "session"}, "Session cookies expire when you close your browser."
        ),
        claim("cookies_and_tracking", {"kind": "analytics"}, "analytics cookies"),
        claim("cookies_and_tracking", {"kind": "pixel"}, "pixel tags"),
        claim(
            "rights",
            {"right": "access", "channel": "account settings"},
            "You can access and delete your data",
        ),
        claim(
            "rights",
            {"right": "erase", "channel": "account settings"},
            "delete your data in your account settings",
        ),
        claim(
            "rights",
            {"right": "complain_to_authority", "channel": None},
            "complain to a supervisory authority",
        ),
        claim(
            "children",
            {"min_age": 13, "action_on_discovery": "delete the account"},
            "We do not knowingly collect data from children under 13; if we learn we have, we delete",
        ),
        claim("transfers", {"country_or_region": "Netherlands"}, "Your data is stored in the Netherlands."),
        claim("security", {"measure": "passwords stored hashed"}, "Passwords are stored hashed."),
        claim(
            "policy_changes",
            {
                "notice": ["email", "post on site"],
                "material_change_choice": True,
                "previous_versions_available": True,
            },
            "We will email you before a material change and let you choose.",
        ),
        claim("contact", {"channel": "privacy@acme.test"}, "Questions: privacy@acme.test."),
        claim("special", {"practice": "Uploads are scanned for malware."}, "We scan uploads for malware."),
    ]
    return Extraction("acme.txt", TEXT, "Acme", claims)


EVIDENCE = re.compile(r'^\s*# (REVIEW )?c(\d+) \[(\d+):(\d+)\] confidence (\d\.\d\d): "(.*)"$')


def evidence_lines(draft: str) -> dict[int, list[re.Match[str]]]:
    found: dict[int, list[re.Match[str]]] = {}
    for line in draft.splitlines():
        m = EVIDENCE.match(line)
        if m:
            found.setdefault(int(m[2]), []).append(m)
    return found


# --------------------------------------------------------------------------- the draft


def test_draft_passes_the_checker_and_reports_every_todo() -> None:
    x = extraction()
    draft = draft_policy(x)
    loaded = load_policy_text(draft, "draft.yaml")  # raises on any error
    todo = yaml.safe_load(draft)["todo"]
    assert todo and loaded.policy.todo == todo
    reported = [w for w in loaded.warnings if w.code == "todo.open"]
    assert [w.message for w in reported] == [f"to do: {t}" for t in todo]
    assert all(w.position is not None and w.position.line > 1 for w in reported)
    # Stated: name, contact, date, change policy, storage words, children, recipients.
    p = loaded.policy
    assert p.organization.name == "Acme" and p.organization.contact.email == "privacy@acme.test"
    assert str(p.effective) == "2024-03-03" and p.version == "2024-03-03"
    assert p.changes.material == "opt_in" and p.changes.announce == ["email"] and p.changes.archive
    assert p.organization.transfers == "Your data is stored in the Netherlands."
    assert p.children is not None and p.children.minimum_age == {"*": 13}
    assert p.children.on_discovery == "delete_account"
    assert p.recipients["mailer_inc"].categories == ["user.contact.email"]
    assert p.recipients["authorities"].condition == "legal_demand"
    assert p.recipients["third_parties_aggregate"].form == "aggregate"
    assert [s.description for s in p.security] == ["passwords stored hashed"]
    # The checker's own warning for what the text leaves open still comes through.
    assert any(w.code == "retention.missing" for w in loaded.warnings)


def test_a_purpose_gets_a_basis_only_where_the_text_states_one() -> None:
    draft = draft_policy(extraction())
    p = load_policy_text(draft).policy
    assert set(p.purposes) == {"marketing_communications_email", "essential_service_payment_processing"}
    assert p.purposes["marketing_communications_email"].basis == "consent"
    assert p.purposes["marketing_communications_email"].categories == ["user.contact.email"]
    assert p.purposes["essential_service_payment_processing"].basis == "contract"
    # The text states no basis for analytics: the purpose waits, commented out, with a TODO.
    assert "#   basis: TODO" in draft and "# analytics_reporting:" in draft
    assert any(t.startswith("purposes.analytics_reporting: the text states no legal basis") for t in p.todo)
    assert "storage" not in draft.split("todo:")[0]  # the Netherlands is a todo, not a country code
    assert p.organization.storage == []
    assert any("(NL)" in t for t in p.todo)


def test_a_commented_element_uncommented_as_it_is_fails_the_check() -> None:
    """The TODO placeholders are not values: the checker refuses them until replaced."""
    draft = draft_policy(extraction())
    lines = draft.splitlines()
    start = lines.index("  # analytics_reporting:")
    for n in range(start, start + 5):
        lines[n] = lines[n].replace("  # ", "  ", 1)
    with pytest.raises(PolicyError) as info:
        load_policy_text("\n".join(lines) + "\n")
    assert any(p.code == "schema.bad_value" and p.path[-1] == "basis" for p in info.value.problems)


def test_every_claim_has_its_evidence_comment_with_offsets_and_confidence() -> None:
    x = extraction()
    found = evidence_lines(draft_policy(x))
    assert set(found) == set(range(len(x.claims)))
    for i, matches in found.items():
        c = x.claims[i]
        for m in matches:
            start, end = int(m[3]), int(m[4])
            assert (start, end) == (c.evidence.start, c.evidence.end)
            assert " ".join(TEXT[start:end].split()) == m[6]
            assert float(m[5]) == pytest.approx(c.confidence, abs=0.005)
            assert bool(m[1]) == c.needs_review


def test_evidence_comment_sits_above_its_element() -> None:
    x = extraction()
    lines = draft_policy(x).splitlines()
    mailer = next(n for n, line in enumerate(lines) if line == "  mailer_inc:")
    assert EVIDENCE.match(lines[mailer - 1]) and "Mailer Inc." in lines[mailer - 1]
    ip = next(n for n, line in enumerate(lines) if line.startswith("  user.device.ip_address:"))
    assert lines[ip - 1].startswith("  # REVIEW c2 ")


def test_stated_together_means_the_same_sentence_even_in_html() -> None:
    text = (
        "<p>We collect your email address.</p><p>We send newsletters with your consent.</p>"
        "<p>We use your phone number for reminders, with your consent.</p>"
    )

    def at(field: str, value: dict[str, Any], quote: str) -> Claim:
        start = text.index(quote)
        return Claim(field, value, Evidence(start, start + len(quote), quote), 0.9)

    x = Extraction(
        "p.html",
        text,
        "Acme",
        [
            at("categories", {"key": "user.contact.email"}, "your email address"),
            at("purposes", {"key": "marketing.communications.email"}, "We send newsletters"),
            at("legal_bases", {"basis": "consent"}, "with your consent."),
            at("categories", {"key": "user.contact.phone_number"}, "your phone number"),
            at("purposes", {"key": "essential.service.notifications"}, "for reminders"),
            at("legal_bases", {"basis": "consent"}, ", with your consent"),
        ],
    )
    purposes = load_policy_text(draft_policy(x)).policy.purposes
    # The email address is in the paragraph before the newsletter: not its category.
    assert set(purposes) == {"essential_service_notifications"}
    assert purposes["essential_service_notifications"].categories == ["user.contact.phone_number"]


def test_an_empty_extraction_drafts_a_valid_skeleton_with_todos() -> None:
    x = Extraction("blank.txt", "Nothing here.", None, [])
    loaded = load_policy_text(draft_policy(x))
    assert loaded.policy.organization.name == "TODO"
    assert any(t.startswith("organization.name") for t in loaded.policy.todo)
    assert any(t.startswith("effective: the text states no revision date") for t in loaded.policy.todo)
    assert not loaded.policy.purposes and not loaded.policy.categories


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (Claim("favourites", {}, Evidence(0, 4, "Acme"), 0.9), "claim 0 (favourites): unknown field"),
        (
            Claim("categories", {"key": "user.email"}, Evidence(0, 4, "Acme"), 0.9),
            "not a fideslang data category",
        ),
        (
            Claim("categories", {"key": "user.name"}, Evidence(0, 5, "Acme"), 0.9),
            "evidence [0:5] is not the quoted",
        ),
        (Claim("purposes", {"key": "essential"}, Evidence(0, 4, "Acme"), 1.5), "confidence 1.5"),
        (Claim("rights", {"right": "vote", "channel": None}, Evidence(0, 4, "Acme"), 0.9), "right 'vote'"),
        (Claim("recipients", {"role": "processor"}, Evidence(0, 4, "Acme"), 0.9), "has no 'name'"),
        (
            Claim("retention", {"scope": "logs", "period": "forever"}, Evidence(0, 4, "Acme"), 0.9),
            "'forever'",
        ),
    ],
)
def test_a_bad_extraction_is_refused_naming_the_claim(bad: Claim, message: str) -> None:
    x = Extraction("acme.txt", TEXT, "Acme", [bad])
    with pytest.raises(ExtractionError, match=re.escape(message)):
        draft_policy(x)


def test_a_second_claim_for_a_one_value_field_is_refused() -> None:
    one = claim("contact", {"channel": "privacy@acme.test"}, "privacy@acme.test")
    x = Extraction("acme.txt", TEXT, "Acme", [one, one])
    with pytest.raises(ExtractionError, match=r"claim 1 \(contact\): a second claim .* claim 0"):
        draft_policy(x)


# --------------------------------------------------------------------------- todo in the language


def test_todo_items_are_warnings_with_positions_and_leave_the_digest_alone() -> None:
    text = MINIMAL.read_text()
    plain = load_policy_text(text, "m.yaml")
    noted = load_policy_text("todo:\n  - name the DPO\n  - check retention\n" + text, "m.yaml")
    todo = [w for w in noted.warnings if w.code == "todo.open"]
    assert [(w.message, w.position.line if w.position else None) for w in todo] == [
        ("to do: name the DPO", 2),
        ("to do: check retention", 3),
    ]
    assert all(w.severity == "warning" for w in todo)
    assert noted.digest == plain.digest
    assert not [w for w in plain.warnings if w.code == "todo.open"]


def test_check_strict_fails_while_todos_are_open(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("todo: [name the DPO]\n" + MINIMAL.read_text())
    relaxed = runner.invoke(app, ["policy", "check", str(path)])
    assert relaxed.exit_code == 0 and "to do: name the DPO" in relaxed.output
    assert runner.invoke(app, ["policy", "check", "--strict", str(path)]).exit_code == 1


# --------------------------------------------------------------------------- the review page


class _Page(HTMLParser):
    """The source text as the page shows it, which characters are marked, and links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.in_source = 0
        self.in_mark = False
        self.in_tag_link = False
        self.text: list[str] = []
        self.marked: list[bool] = []
        self.ids: dict[str, dict[str, str | None]] = {}
        self.low: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids[str(a["id"])] = a
        if tag == "div" and a.get("class") == "source":
            self.in_source = 1
        elif self.in_source and tag == "div":
            self.in_source += 1
        if self.in_source and tag == "mark":
            self.in_mark = True
            if a.get("class") == "low":
                self.low.add(str(len(self.text)))
        if self.in_source and tag == "a" and "tag" in (a.get("class") or ""):
            self.in_tag_link = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark":
            self.in_mark = False
        if tag == "a":
            self.in_tag_link = False
        if tag == "div" and self.in_source:
            self.in_source -= 1

    def handle_data(self, data: str) -> None:
        if self.in_source and not self.in_tag_link:
            self.text += list(data)
            self.marked += [self.in_mark] * len(data)


def test_review_page_highlights_every_span_and_links_both_ways() -> None:
    x = extraction()
    draft = draft_policy(x)
    page = review_html(x, draft)
    parsed = _Page()
    parsed.feed(page)
    assert "".join(parsed.text) == TEXT  # the whole source, as text
    for i, c in enumerate(x.claims):
        assert all(parsed.marked[c.evidence.start : c.evidence.end]), f"claim {i} is not highlighted"
        tag = parsed.ids[f"c{i}"]
        assert "tag" in str(tag["class"]) and ("low" in str(tag["class"])) == c.needs_review
        target = str(tag["href"]).removeprefix("#")
        assert target in parsed.ids, f"claim {i} links to a missing element"
        element = page[page.index(f'id="{target}"') :]
        element = element[: element.index("</li>")]
        assert f'href="#c{i}"' in element, f"element {target} does not link back to claim {i}"
    # The draft on the page links its evidence comments back to the passages.
    for i in range(len(x.claims)):
        assert f'<a href="#c{i}">c{i}</a> [' in page
    # Low-confidence passages are said in words, not only in colour.
    assert re.search(r'class="tag low"[^>]*>\d+ check</a>', page)


def test_review_page_escapes_the_source_and_is_self_contained() -> None:
    x = extraction()
    page = review_html(x, draft_policy(x))
    assert "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no external assets
    assert page.startswith("<!DOCTYPE html>") and '<html lang="en">' in page
    assert 'aria-labelledby="elements-h"' in page and 'href="#source"' in page


def test_review_page_lists_the_todo_items_of_the_draft_it_is_given() -> None:
    x = extraction()
    draft = draft_policy(x)
    page = review_html(x, draft)
    for item in yaml.safe_load(draft)["todo"]:
        assert f"<li>{html.escape(item)}" in page


# --------------------------------------------------------------------------- the command


@pytest.fixture
def fake_extract(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, str]]:
    """The command with the hand-made extraction in place of the extractor."""
    calls: list[tuple[Path, str]] = []

    def extract(path_or_text: Path | str, *, source: str, encoding: str | None = None) -> Extraction:
        calls.append((Path(path_or_text), source))
        if "unreadable" in source:
            raise ValueError("the text cannot be decoded")
        return extraction()

    module = types.ModuleType("fiduciary.importer.extract")
    module.extract = extract  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fiduciary.importer.extract", module)
    return calls


def test_import_text_prints_a_draft_the_checker_accepts(tmp_path: Path, fake_extract: list[Any]) -> None:
    src = tmp_path / "acme.txt"
    src.write_text(TEXT)
    printed = runner.invoke(app, ["policy", "import-text", str(src)])
    assert printed.exit_code == 0, printed.output
    assert fake_extract == [(src, "acme.txt")]
    assert printed.stdout == build_draft(extraction()).yaml
    assert "28 claims, 2 to review" in printed.stderr
    draft, page = tmp_path / "out" / "draft.yaml", tmp_path / "out" / "review.html"
    wrote = runner.invoke(app, ["policy", "import-text", str(src), "-o", str(draft), "--html", str(page)])
    assert wrote.exit_code == 0, wrote.output
    assert draft.read_text() == printed.stdout and 'id="c0"' in page.read_text()
    checked = runner.invoke(app, ["policy", "check", str(draft)])
    assert checked.exit_code == 0, checked.output
    assert "warning: to do: purposes.analytics_reporting" in checked.output
    again = runner.invoke(app, ["policy", "import-text", str(src), "-o", str(draft)])
    assert again.exit_code == 2 and "exists; pass --force" in again.output
    forced = runner.invoke(app, ["policy", "import-text", str(src), "-o", str(draft), "--force"])
    assert forced.exit_code == 0


def test_import_text_bad_input(tmp_path: Path, fake_extract: list[Any]) -> None:
    missing = runner.invoke(app, ["policy", "import-text", str(tmp_path / "nope.txt")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    folder = runner.invoke(app, ["policy", "import-text", str(tmp_path)])
    assert folder.exit_code == 2 and "is not a file" in folder.output
    for raw in (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"):
        binary = tmp_path / "policy.bin"
        binary.write_bytes(raw)
        refused = runner.invoke(app, ["policy", "import-text", str(binary)])
        assert refused.exit_code == 2 and "binary file" in refused.output
    odd = tmp_path / "unreadable.txt"
    odd.write_text("text")
    failed = runner.invoke(app, ["policy", "import-text", str(odd), "-o", str(tmp_path / "d.yaml")])
    assert failed.exit_code == 1 and "the text cannot be decoded" in failed.output
    assert not (tmp_path / "d.yaml").exists()
    assert fake_extract == [(odd, "unreadable.txt")]  # the bad files never reached the extractor


def test_policy_help_lists_check_first() -> None:
    result = runner.invoke(app, ["policy", "--help"])
    names = re.findall(r"^│ ([a-z][a-z-]*) ", result.output, flags=re.MULTILINE)
    assert names[0] == "check" and "import-text" in names and "publish" in names


def test_import_text_with_the_real_extractor(tmp_path: Path) -> None:
    pytest.importorskip("fiduciary.importer.extract")
    src = tmp_path / "acme.txt"
    src.write_text(TEXT)
    draft = tmp_path / "draft.yaml"
    result = runner.invoke(app, ["policy", "import-text", str(src), "-o", str(draft)])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["policy", "check", str(draft)]).exit_code == 0


def test_import_text_names_the_encoding_problem_and_takes_an_encoding(tmp_path: Path) -> None:
    """The real extractor: a Latin-1 file is refused as UTF-8 with where it breaks, and read
    with --encoding."""
    src = tmp_path / "latin.txt"
    src.write_bytes(
        "Privacy policy. We collect your e-mail address and your name.\nCaf\xe9.".encode("latin-1")
    )
    refused = runner.invoke(app, ["policy", "import-text", str(src)])
    assert refused.exit_code == 1
    assert "not valid utf-8" in refused.output and "--encoding" in refused.output
    read = runner.invoke(app, ["policy", "import-text", str(src), "--encoding", "latin-1"])
    assert read.exit_code == 0, read.output
    assert "user.contact.email" in read.stdout
