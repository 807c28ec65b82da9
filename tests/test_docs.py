"""The documentation's code runs as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)


def test_library_walkthrough_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(ROOT / "docs" / "library.md")
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    os.symlink(ROOT / "examples", tmp_path / "examples")
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/library.md", "exec"), namespace)
    assert (tmp_path / "fiduciary-data" / "keyring.json").is_file()


def test_library_walkthrough_prints_what_it_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The '# ...' comments after print() calls are the real output."""
    blocks = python_blocks(ROOT / "docs" / "library.md")
    monkeypatch.chdir(tmp_path)
    os.symlink(ROOT / "examples", tmp_path / "examples")
    namespace: dict[str, object] = {}
    expected: list[str] = []
    for block in blocks:
        expected += re.findall(r"print\(.*\)\s+# (.*)", block)
        exec(compile(block, "docs/library.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed == expected
