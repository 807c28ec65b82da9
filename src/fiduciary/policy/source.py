"""YAML with positions: every value read from a policy file remembers where it came from.

PyYAML's composer gives nodes with marks; we build plain Python data from them and keep a
map from the data path (``("purposes", "ads", "basis")``) to the node's position, so that
any later check can point at file:line:column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DataPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class SourceMap:
    """Positions of values (and of mapping keys) in one or more source files."""

    file: str
    values: dict[DataPath, Position] = field(default_factory=dict)
    keys: dict[DataPath, Position] = field(default_factory=dict)

    def value(self, path: Iterable[str | int]) -> Position | None:
        """The position of the value at ``path``, or of its nearest ancestor."""
        p = tuple(path)
        while True:
            if p in self.values:
                return self.values[p]
            if not p:
                return None
            p = p[:-1]

    def key(self, path: Iterable[str | int]) -> Position | None:
        """The position of the mapping key that ends ``path`` (falls back to the value)."""
        p = tuple(path)
        return self.keys.get(p) or self.value(p)

    def merge(self, prefix: DataPath, other: SourceMap) -> None:
        """Graft another file's positions under ``prefix`` (for included files)."""
        for k, v in other.values.items():
            self.values[prefix + k] = v
        for k, v in other.keys.items():
            self.keys[prefix + k] = v


class YamlSyntaxError(Exception):
    def __init__(self, message: str, position: Position) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


class DuplicateKeyError(YamlSyntaxError):
    pass


def _pos(file: str, node: yaml.Node) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


_SCALAR_LOADER = yaml.SafeLoader("")
# LibYAML's parser is ~30x faster than the pure-Python one and gives the same marks.
_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE):  # type: ignore[misc]
    """YAML 1.2 booleans: only true/false. In YAML 1.1 'NO' (Norway), 'yes', 'on' and 'off'
    are booleans too, which turns country codes and words into True/False."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BASE.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_LOADER: Any = _Loader


# A policy has a few thousand values; aliases can make a tiny file expand without bound
# ("billion laughs"), so building stops well past any real policy.
MAX_VALUES = 200_000


_PLAIN_TAGS = frozenset(("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap"))


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_VALUES
        self.open: set[int] = set()


def _build(node: yaml.Node, path: DataPath, smap: SourceMap, budget: _Budget) -> Any:
    budget.left -= 1
    if budget.left < 0:
        raise YamlSyntaxError(
            f"the document expands to more than {MAX_VALUES} values (through aliases?)",
            _pos(smap.file, node),
        )
    if id(node) in budget.open:
        raise YamlSyntaxError("an alias refers to its own anchor (a cycle)", _pos(smap.file, node))
    smap.values[path] = _pos(smap.file, node)
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        if node.tag not in _PLAIN_TAGS:
            raise YamlSyntaxError(f"YAML tag {node.tag!r} is not allowed in a policy", _pos(smap.file, node))
        budget.open.add(id(node))
        try:
            return _build_collection(node, path, smap, budget)
        finally:
            budget.open.discard(id(node))
    assert isinstance(node, yaml.ScalarNode)
    try:
        return _SCALAR_LOADER.construct_object(node, deep=True)
    except ValueError:
        # e.g. a date-shaped scalar that is no date (2024-13-01): keep the text and let
        # validation say what was expected, with this position.
        return node.value


def _build_collection(node: yaml.Node, path: DataPath, smap: SourceMap, budget: _Budget) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlSyntaxError(
                    "YAML merge keys (<<) are not supported in a policy; write the keys out",
                    _pos(smap.file, key_node),
                )
            key = _build(key_node, (*path, "<key>"), smap, budget)
            if not isinstance(key, str | int | bool | float) or key is None:
                raise YamlSyntaxError("mapping keys must be plain scalars", _pos(smap.file, key_node))
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                first = smap.keys[(*path, key)]
                raise DuplicateKeyError(
                    f"duplicate key {key!r} (first defined at line {first.line})",
                    _pos(smap.file, key_node),
                )
            smap.keys[(*path, key)] = _pos(smap.file, key_node)
            out[key] = _build(value_node, (*path, key), smap, budget)
        smap.values.pop((*path, "<key>"), None)
        return out
    return [_build(item, (*path, i), smap, budget) for i, item in enumerate(node.value)]


def parse_yaml(text: str, file: str = "<string>") -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain data plus its source map.

    Raises YamlSyntaxError with a position for malformed YAML and duplicate keys.
    """
    smap = SourceMap(file)
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        col = mark.column + 1 if mark else 1
        msg = exc.problem or str(exc)
        if exc.context:
            msg = f"{msg} ({exc.context})"
        raise YamlSyntaxError(f"invalid YAML: {msg}", Position(file, line, col)) from None
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        raise YamlSyntaxError(f"invalid YAML: {exc}", Position(file, 1, 1)) from None
    if node is None:
        return None, smap
    try:
        return _build(node, (), smap, _Budget()), smap
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        pos = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 1, 1)
        raise YamlSyntaxError(f"invalid YAML value: {exc.problem}", pos) from None


def read_yaml(path: Path) -> tuple[Any, SourceMap]:
    return parse_yaml(path.read_text(encoding="utf-8"), str(path))
