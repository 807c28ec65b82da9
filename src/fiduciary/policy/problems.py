"""Problems found in a policy: what, where (file:line:column), the value, a suggestion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fiduciary.policy.source import DataPath, Position

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    code: str  # stable, e.g. "taxonomy.unknown_category"; tests and tools match on it
    message: str
    position: Position | None
    path: DataPath = ()
    value: Any = None
    suggestion: str | None = None
    severity: Severity = "error"

    def location(self) -> str:
        return str(self.position) if self.position else "<policy>"

    def path_text(self) -> str:
        out = ""
        for part in self.path:
            if isinstance(part, int) or "." in part:
                out += f"[{part}]" if isinstance(part, int) else f"[{part!r}]"
            else:
                out += f".{part}" if out else part
        return out

    def __str__(self) -> str:
        text = f"{self.location()}: {self.severity}: {self.message}"
        if self.path:
            text += f" (at {self.path_text()})"
        if self.suggestion:
            text += f"\n    hint: {self.suggestion}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.position.file if self.position else None,
            "line": self.position.line if self.position else None,
            "column": self.position.column if self.position else None,
            "path": self.path_text(),
            "value": self.value if isinstance(self.value, str | int | float | bool) else None,
            "suggestion": self.suggestion,
        }


class PolicyError(Exception):
    """A policy that cannot be used. ``problems`` holds every error found (and warnings)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        head = f"{len(errors)} error(s) in policy"
        super().__init__(head + ":\n" + "\n".join(str(p) for p in errors))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]
