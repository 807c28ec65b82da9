"""Every promise of a reference policy is expressed in its example, or listed as a gap.

An example's policy.yaml names the promises it keeps in comments on the element that
expresses them (``# keeps PUT-4, LAW-2``); a promise the language cannot express yet is
written ``# gap PUT-9: why``. PROMISES.md (in ../shared) is the list of record.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fiduciary.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
PROMISES = ROOT.parent / "shared" / "PROMISES.md"

EXAMPLES = {
    "filelocker": "PUT",  # put.io
    "social": "PLU",  # Plutro
    "projects": "PLA",  # Planio
    "dataplatform": "PLO",  # Ploomber
    "voiceapi": "PLV",  # Plivo
}

ID = r"(?:PUT|PLU|PLA|PLO|PLV|LAW)-\d+"
KEEPS = re.compile(r"#.*?\bkeeps\b(.*)")  # every ID after "keeps" in the comment
GAP = re.compile(rf"#\s*gap\s+({ID})\s*:\s*(\S.*)")


def promise_ids() -> dict[str, str]:
    if not PROMISES.is_file():
        pytest.fail(f"{PROMISES} is missing: the shared folder must sit beside the repository")
    found = re.findall(rf"^- ({ID}) (.*)$", PROMISES.read_text(), flags=re.MULTILINE)
    return dict(found)


def cited(text: str) -> tuple[set[str], dict[str, str]]:
    keeps: set[str] = set()
    gaps: dict[str, str] = {}
    for line in text.splitlines():
        m = KEEPS.search(line)
        if m:
            keeps.update(re.findall(ID, m.group(1)))
        g = GAP.search(line)
        if g:
            gaps[g.group(1)] = g.group(2)
    return keeps, gaps


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_every_promise_expressed_or_known_gap(example: str) -> None:
    path = ROOT / "examples" / example / "policy.yaml"
    assert path.is_file(), f"examples/{example}/policy.yaml is missing"
    load_policy(path)  # a comment on a policy that does not load proves nothing
    ids = promise_ids()
    prefix = EXAMPLES[example]
    expected = {i for i in ids if i.startswith((prefix + "-", "LAW-"))}
    keeps, gaps = cited(path.read_text())
    unknown = (keeps | set(gaps)) - set(ids)
    assert not unknown, f"{example} cites promises that PROMISES.md does not have: {sorted(unknown)}"
    foreign = {i for i in keeps if not i.startswith((prefix + "-", "LAW-"))}
    assert not foreign, f"{example} cites another service's promises: {sorted(foreign)}"
    missing = expected - keeps - set(gaps)
    assert not missing, f"examples/{example}/policy.yaml neither keeps nor lists as a gap: " + "; ".join(
        f"{i} ({ids[i][:60]})" for i in sorted(missing)
    )


def test_comment_scanner_reads_lists_and_gaps() -> None:
    text = (
        "a: 1  # keeps PUT-4 (the email uses), LAW-2\n"
        "# gap PUT-9: hash lists not modelled\n"
        "b: 2 # PUT-5 mention only\n"
    )
    keeps, gaps = cited(text)
    assert keeps == {"PUT-4", "LAW-2"}
    assert gaps == {"PUT-9": "hash lists not modelled"}
