"""Loading a policy: YAML -> Policy model, every problem with file:line:column.

``load_policy`` collects all problems it can find in one pass (YAML syntax stops the pass,
schema errors stop before cross-reference checks) and raises PolicyError when any is an
error; warnings are returned with the loaded policy.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fiduciary.policy.model import Policy
from fiduciary.policy.problems import PolicyError, Problem
from fiduciary.policy.source import DataPath, SourceMap, YamlSyntaxError, parse_yaml
from fiduciary.policy.taxonomy import suggest


@dataclass(frozen=True)
class LoadedPolicy:
    policy: Policy
    source: SourceMap
    text: str
    path: str
    warnings: list[Problem] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """sha256 of the policy's meaning (not its formatting or comments)."""
        return policy_digest(self.policy)


def policy_digest(policy: Policy) -> str:
    canonical = json.dumps(
        policy.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def load_policy(path: str | Path) -> LoadedPolicy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError(
            [Problem("file.not_found", f"no such policy file: {p}", None, value=str(p))]
        ) from None
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem("file.encoding", f"{p} is not UTF-8 text ({exc.reason})", None)]) from None
    return load_policy_text(text, str(p))


def load_policy_text(text: str, file: str = "<string>") -> LoadedPolicy:
    from fiduciary.policy.check import check_policy

    try:
        data, smap = parse_yaml(text, file)
    except YamlSyntaxError as exc:
        code = "yaml.duplicate_key" if "duplicate key" in exc.message else "yaml.syntax"
        raise PolicyError([Problem(code, exc.message, exc.position)]) from None
    if not isinstance(data, dict):
        raise PolicyError(
            [
                Problem(
                    "schema.not_a_mapping",
                    "a policy file must be a YAML mapping with keys such as organization, "
                    "purposes and categories",
                    smap.value(()),
                )
            ]
        )
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, smap, Policy)) from None
    problems = check_policy(policy, smap)
    if any(p.severity == "error" for p in problems):
        raise PolicyError(problems)
    return LoadedPolicy(policy, smap, text, file, problems)


# --------------------------------------------------------------------------- pydantic -> Problem


def validation_problems(
    exc: ValidationError, smap: SourceMap, root: type[BaseModel], prefix: DataPath = ()
) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors():
        loc: DataPath = tuple(err["loc"])
        is_key_error = bool(loc) and loc[-1] == "[key]"
        if is_key_error:
            loc = loc[:-1]
        path = prefix + _data_path(loc, smap, prefix)
        etype = err["type"]
        value = err.get("input")
        suggestion = None
        if etype == "extra_forbidden":
            name = str(path[-1])
            allowed = _allowed_keys(root, loc[:-1])
            near = suggest(name, allowed)
            suggestion = f"did you mean {near[0]!r}?" if near else _list_hint(allowed)
            msg = f"unknown key {name!r}"
            problems.append(Problem("schema.unknown_key", msg, smap.key(path), path, name, suggestion))
            continue
        if etype == "missing":
            msg = f"missing required key {str(path[-1])!r}"
            problems.append(Problem("schema.missing", msg, smap.value(path[:-1]), path))
            continue
        pos = smap.key(path) if is_key_error else smap.value(path)
        msg = err["msg"].removeprefix("Value error, ")
        if etype in ("enum", "literal_error"):
            expected = _expected_values(err)
            near = suggest(str(value), expected) if expected else []
            msg = f"{value!r} is not allowed here; expected one of: {', '.join(expected)}"
            suggestion = f"did you mean {near[0]!r}?" if near else None
            code = "schema.bad_value"
        elif etype == "string_pattern_mismatch":
            code = "schema.bad_key"
            msg = f"{value!r} is not a valid key: use lower-case letters, digits, '_' and '-'"
        elif etype.endswith(("_type", "_parsing")):
            code = "schema.bad_type"
            msg = f"{msg}, got {_describe(value)}"
        else:
            code = "schema.bad_value"
        problems.append(Problem(code, msg, pos, path, value, suggestion))
    return problems


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _list_hint(allowed: list[str]) -> str | None:
    return f"allowed keys: {', '.join(allowed)}" if allowed else None


def _expected_values(err: Any) -> list[str]:
    ctx = err.get("ctx") or {}
    expected = str(ctx.get("expected", ""))
    return [p.strip().strip("'\"") for p in expected.replace(" or ", ",").split(",") if p.strip()]


def _data_path(loc: DataPath, smap: SourceMap, prefix: DataPath) -> DataPath:
    """Pydantic's loc with union/tag segments dropped, so it matches the data path."""
    out: list[str | int] = []
    for part in loc:
        candidate = (*prefix, *out, part)
        if candidate in smap.values or candidate in smap.keys:
            out.append(part)
        elif isinstance(part, str) and (
            part.startswith(("function-", "tagged-union", "list[", "dict[", "literal["))
            or part in ("str", "int", "bool", "date", "none", "literal")
            or "Model" in part
            or part[:1].isupper()
        ):
            continue
        else:
            out.append(part)
    return tuple(out)


def _allowed_keys(root: type[BaseModel], loc: DataPath) -> list[str]:
    model = _model_at(root, loc)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(root: type[BaseModel], loc: DataPath) -> type[BaseModel] | None:
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            fields.update(tp.model_fields)
            if not isinstance(part, str) or part not in fields:
                return None
            tp = fields[part].annotation
        else:
            origin = typing.get_origin(tp)
            args = typing.get_args(tp)
            if origin in (list, tuple) and args:
                tp = args[0]
            elif origin is dict and len(args) == 2:
                tp = args[1]
            else:
                return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated/Union-with-None down to the structural type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            structural = [
                a
                for a in args
                if typing.get_origin(a) in (list, dict) or (isinstance(a, type) and issubclass(a, BaseModel))
            ]
            if len(structural) >= 1:
                tp = structural[0]
                continue
            return args[0] if args else tp
        return tp


def enum_values(enum: type[Enum]) -> list[str]:
    return [str(m.value) for m in enum]
