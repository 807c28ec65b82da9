"""The review page: the policy's text with every extracted passage highlighted, each linked
to the element of the draft policy.yaml it produced, and back.

One self-contained HTML file (no scripts, no external assets), meant for the person who
checks the draft, who need not read YAML: the text on the left, the draft's elements by
field on the right, the to-do list and the draft itself below. Passages read with low
confidence are marked in words as well as in colour.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from html import escape
from typing import Any

import yaml

from fiduciary.importer.draft import Draft, DraftElement, build_draft
from fiduciary.importer.model import REVIEW_BELOW, Extraction

# The side list's groups, in the order a notice reads.
FIELD_TITLES: dict[str, str] = {
    "service": "Who we are",
    "contact": "Contact",
    "last_updated": "Revision date",
    "policy_changes": "Changes to the policy",
    "categories": "Data collected",
    "purposes": "What the data is used for",
    "legal_bases": "Legal bases",
    "recipients": "Who receives the data",
    "sells_personal_data": "Sale of data",
    "transfers": "Transfers abroad",
    "retention": "How long data is kept",
    "rights": "People's rights",
    "children": "Children",
    "cookies_and_tracking": "Cookies and tracking",
    "security": "Security",
    "special": "Other practices",
}
STATUS_WORDS: dict[str, str] = {
    "element": "in the draft",
    "commented": "commented out: a value is missing",
    "note": "a note in the draft",
}
_CLAIM_REF = re.compile(r"^(\s*# (?:REVIEW )?)c(\d+)( \[)")

_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.6 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: #1b1b1b; background: #fff; }
a { color: #1d4f91; }
a:focus-visible, a:focus { outline: 3px solid #1b1b1b; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1rem; top: 1rem; background: #fff; padding: .5rem; z-index: 2; }
header, .draft-section, .todo-section { padding: 1rem 1.5rem; }
header { border-bottom: 1px solid #c8c8c8; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; }
h2 { font-size: 1.2rem; margin: 1rem 0 .5rem; }
h3 { font-size: 1rem; margin: 1rem 0 .25rem; }
.layout { display: grid; grid-template-columns: minmax(0, 3fr) minmax(18rem, 2fr); gap: 1.5rem;
  padding: 0 1.5rem; }
@media (max-width: 60rem) { .layout { grid-template-columns: 1fr; } }
.source { white-space: pre-wrap; overflow-wrap: anywhere; font-family: Georgia, serif;
  max-width: 48rem; }
mark { background: #fff2a8; color: inherit; padding: 0 .1em; }
mark.low { background: #ffe0cc; text-decoration: underline dashed #8a3c00 2px;
  text-underline-offset: 3px; }
.tag { display: inline-block; font: 600 .75rem/1.4 system-ui, sans-serif; color: #fff;
  background: #1d4f91; border-radius: .6em; padding: 0 .45em; margin: 0 .1em;
  text-decoration: none; vertical-align: text-top; }
.tag.low { background: #8a3c00; }
:target { outline: 3px solid #1d4f91; outline-offset: 2px; }
.tag:target { outline-color: #1b1b1b; }
nav.elements { position: sticky; top: 0; max-height: 100vh; overflow-y: auto;
  border-left: 1px solid #c8c8c8; padding: 0 0 1rem 1rem; }
nav ul { list-style: none; padding: 0; margin: 0; }
nav li.el { padding: .35rem 0; border-bottom: 1px solid #e4e4e4; }
.el-label { font-weight: 600; }
.status { display: block; font-size: .85rem; color: #4a4a4a; }
.commented .status { color: #8a3c00; }
code { font: .85rem/1.4 ui-monospace, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
.passages { display: block; font-size: .9rem; }
.el-todo { margin: .25rem 0 0 1rem; font-size: .9rem; list-style: disc; }
pre.draft { background: #f6f6f6; border: 1px solid #c8c8c8; padding: .75rem; overflow-x: auto;
  font: .85rem/1.5 ui-monospace, Menlo, Consolas, monospace; }
pre.draft .dl { display: block; }
.legend { font-size: .95rem; max-width: 60rem; }
.summary { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; padding: 0; list-style: none; }
"""


def review_html(extraction: Extraction, draft: Draft | str) -> str:
    """The review page of ``draft``, made from ``extraction``: the ``Draft`` that
    ``build_draft`` returned (as the CLI has it), or its YAML text (then built again)."""
    plan = draft if isinstance(draft, Draft) else build_draft(extraction)
    draft_yaml = plan.yaml if isinstance(draft, Draft) else draft
    anchors = _element_anchors(plan.elements)
    of_claim: dict[int, list[int]] = {}  # claim -> the elements it produced, by position
    for n, el in enumerate(plan.elements):
        for i in el.claims:
            of_claim.setdefault(i, []).append(n)
    draft_lines = draft_yaml.splitlines()
    claim_line: dict[int, int] = {}
    for n, line in enumerate(draft_lines):
        m = _CLAIM_REF.match(line)
        if m:
            claim_line.setdefault(int(m[2]), n)
    todo = plan.todo if isinstance(draft, Draft) else _todo_items(draft_yaml)
    low = sum(1 for c in extraction.claims if c.needs_review)
    title = f"Review: the draft policy from {extraction.source}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        '<a class="skip" href="#source">Skip to the policy text</a>',
        '<a class="skip" href="#elements">Skip to the draft\'s elements</a>',
        "<header>",
        f"<h1>{escape(title)}</h1>",
        '<p class="legend">The importer read the privacy policy below and wrote a draft '
        "<code>policy.yaml</code> from it. Each <mark>highlighted passage</mark> is something it "
        "read in the text; the numbered tag after it goes to what the draft made of it, and each "
        "item of the list on the right links back to its passages. Passages marked "
        f'<mark class="low">like this</mark> and tagged <span class="tag low">check</span> were read '
        f"with low confidence (below {REVIEW_BELOW:.2f}): check them first. What the text does not "
        "say is not made up: it is on the to-do list.</p>",
        '<ul class="summary">',
        f"<li>{len(extraction.claims)} passages read</li>",
        f"<li>{low} to check</li>",
        f"<li>{sum(1 for e in plan.elements if e.status == 'element')} elements in the draft</li>",
        f"<li>{sum(1 for e in plan.elements if e.status == 'commented')} waiting for a value</li>",
        f'<li><a href="#todo">{len(todo)} to-do items</a></li>',
        "</ul>",
        "</header>",
        '<div class="layout">',
        '<main id="source" tabindex="-1" aria-labelledby="source-h">',
        f'<h2 id="source-h">The policy text: {escape(extraction.source)}</h2>',
        f'<div class="source">{_highlighted(extraction, plan, of_claim, anchors)}</div>',
        "</main>",
        '<nav class="elements" id="elements" tabindex="-1" aria-labelledby="elements-h">',
        '<h2 id="elements-h">The draft\'s elements</h2>',
        *_element_list(extraction, plan, anchors, claim_line),
        "</nav>",
        "</div>",
        '<section class="todo-section" id="todo" tabindex="-1" aria-labelledby="todo-h">',
        '<h2 id="todo-h">To do: what the text does not say</h2>',
        *_todo_list(todo, plan, anchors),
        "</section>",
        '<section class="draft-section" id="draft" tabindex="-1" aria-labelledby="draft-h">',
        '<h2 id="draft-h">The draft policy.yaml</h2>',
        f'<pre class="draft"><code>{_draft_lines(draft_lines)}</code></pre>',
        "</section>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _element_anchors(elements: Iterable[DraftElement]) -> dict[int, str]:
    """A unique, readable id per element (by position in the plan)."""
    out: dict[int, str] = {}
    used: set[str] = set()
    for n, el in enumerate(elements):
        base = "el-" + re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(str(p) for p in el.path)).strip("-")
        anchor, k = base, 2
        while anchor in used:
            anchor, k = f"{base}-{k}", k + 1
        used.add(anchor)
        out[n] = anchor
    return out


def _highlighted(
    extraction: Extraction, plan: Draft, of_claim: dict[int, list[int]], anchors: dict[int, str]
) -> str:
    """The source, escaped, with every claim's span marked and a tag where it ends."""
    text = extraction.source_text
    claims = extraction.claims
    bounds = sorted({0, len(text), *(c.evidence.start for c in claims), *(c.evidence.end for c in claims)})
    ends: dict[int, list[int]] = {}
    for i, c in enumerate(claims):
        ends.setdefault(c.evidence.end, []).append(i)
    # An empty span at the very start ends at bound 0, before any segment.
    out = [_tag(extraction, plan, i, of_claim, anchors) for i in sorted(ends.get(0, []))]
    for a, b in itertools.pairwise(bounds):
        covering = [c for c in claims if c.evidence.start <= a and c.evidence.end >= b]
        chunk = escape(text[a:b])
        if covering:
            low = any(c.needs_review for c in covering)
            out.append(f'<mark class="low">{chunk}</mark>' if low else f"<mark>{chunk}</mark>")
        else:
            out.append(chunk)
        out += [_tag(extraction, plan, i, of_claim, anchors) for i in sorted(ends.get(b, []))]
    return "".join(out)


def _tag(
    extraction: Extraction, plan: Draft, i: int, of_claim: dict[int, list[int]], anchors: dict[int, str]
) -> str:
    """The numbered link after a passage, to the (first) element it produced."""
    c = extraction.claims[i]
    low = c.needs_review
    made = of_claim.get(i, [])
    what = ""
    href = ""
    if made:
        el = plan.elements[made[0]]
        what = f", goes to {el.label} ({FIELD_TITLES.get(el.field, el.field)})"
        href = f' href="#{anchors[made[0]]}"'
    shown = f"{i} check" if low else f"{i}"
    # The accessible name starts with the visible text, so speech input finds the link.
    label = (
        f"{shown}: passage {i}{what}, confidence {c.confidence:.2f}"
        + (" (low: check it)" if low else "")
        + (f", under the heading {c.section}" if c.section else "")
    )
    cls = "tag low" if low else "tag"
    return (
        f'<a id="c{i}" class="{cls}"{href} aria-label="{escape(label)}" title="{escape(label)}">{shown}</a>'
    )


def _element_list(
    extraction: Extraction, plan: Draft, anchors: dict[int, str], claim_line: dict[int, int]
) -> list[str]:
    groups: dict[str, list[int]] = {}
    for n, el in enumerate(plan.elements):
        groups.setdefault(el.field, []).append(n)
    order = [f for f in FIELD_TITLES if f in groups] + [f for f in groups if f not in FIELD_TITLES]
    out: list[str] = []
    for f in order:
        heading = FIELD_TITLES.get(f, f)
        out.append(f"<h3>{escape(heading)}</h3>")
        out.append("<ul>")
        for n in groups[f]:
            el = plan.elements[n]
            links = []
            for i in el.claims:
                c = extraction.claims[i]
                word = " (check)" if c.needs_review else ""
                links.append(f'<a href="#c{i}" aria-label="passage {i}{word}">{i}{word}</a>')
            unsaid = "The text does not say it" if el.todo else "From no one passage"
            said = "Passages: " + ", ".join(links) if links else unsaid
            passages = f'<span class="passages">{said}</span>'
            line = next((claim_line[i] for i in el.claims if i in claim_line), None)
            in_draft = (
                f' <a href="#d{line + 1}" aria-label="{escape(el.label)}: in the draft">in the draft</a>'
                if line is not None
                else ""
            )
            todo = "".join(f"<li>To do: {escape(t)}</li>" for t in el.todo)
            out.append(
                f'<li class="el {el.status}" id="{anchors[n]}" tabindex="-1">'
                f'<span class="el-label">{escape(el.label)}</span> <code>{escape(el.path_text)}</code>'
                f'<span class="status">{escape(STATUS_WORDS[el.status])}</span>'
                f"{passages}{in_draft}" + (f'<ul class="el-todo">{todo}</ul>' if todo else "") + "</li>"
            )
        out.append("</ul>")
    return out


def _todo_items(draft_yaml: str) -> list[str]:
    """The draft's todo list, as written (a draft edited into invalid YAML has none here)."""
    try:
        data: Any = yaml.safe_load(draft_yaml)
    except yaml.YAMLError:
        return []
    items = data.get("todo") if isinstance(data, dict) else None
    return [str(t) for t in items] if isinstance(items, list) else []


def _todo_list(todo: list[str], plan: Draft, anchors: dict[int, str]) -> list[str]:
    if not todo:
        return ["<p>Nothing: the draft has no open items.</p>"]
    owner: dict[str, int] = {}
    for n, el in enumerate(plan.elements):
        for t in el.todo:
            owner.setdefault(t, n)
    out = ["<ol>"]
    for t in todo:
        at = owner.get(t)
        link = f' <a href="#{anchors[at]}">the element</a>' if at is not None else ""
        out.append(f"<li>{escape(t)}{link}</li>")
    out.append("</ol>")
    return out


def _draft_lines(lines: list[str]) -> str:
    out = []
    for n, line in enumerate(lines, start=1):
        html = escape(line)
        m = _CLAIM_REF.match(html)
        if m:
            html = f'{m[1]}<a href="#c{m[2]}">c{m[2]}</a>{m[3]}{html[m.end() :]}'
        out.append(f'<span class="dl" id="d{n}">{html}</span>')
    return "".join(out)


__all__ = ["review_html"]
