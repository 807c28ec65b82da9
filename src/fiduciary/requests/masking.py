"""Masking strategies and the erasure rules that choose one per field.

Strategies live in a registry (Presidio-style: one small class each, ``register_strategy``
adds one): ``null``, ``fixed`` (the configuration's ``value``), ``hmac`` (keyed and
deterministic: one input, one output, so a masked value still joins), ``random``
(deterministic from the request id and the row key, so a re-run after a crash writes the
same value), and the row-level ``delete``, ``unlink`` (cut the link from the row to the
person, leave shared content: PUT-13, PLU-11) and ``keep``.

:func:`field_rules` applies the policy to one collection for one request: which strategy
each field gets, or which exemption keeps it (LAW-3, PLO-10, PLV-7), in this order:

1. an *active* exemption (a legal hold ... passed in by the caller) covering the field's
   categories keeps it;
2. a retention rule's legal minimum covering the field keeps it;
3. the field's ``masking_strategy_override``;
4. the collection's ``masking_strategy_override: delete`` deletes the row;
5. in a collection whose link to the person is cut (``unlink``), the rest is shared
   content and stays;
6. a privacy choice (``user.privacy_preferences``: an opt-out must go on being honoured)
   and a yes/no value (it identifies no one) stay;
7. any other field with categories is set to NULL.

Primary keys are never changed (other rows refer to them); a row with a kept field is
never deleted (the delete is suspended and recorded with the exemption that suspends it).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fiduciary.policy.taxonomy import is_within
from fiduciary.requests.plan import PlanExemption, PlanField, PlanNode

__all__ = [
    "DEFAULT_RANDOM_LENGTH",
    "POLICY_KEEPS",
    "STRATEGIES",
    "FieldRule",
    "MaskContext",
    "MaskingError",
    "NodeRules",
    "Strategy",
    "field_rules",
    "register_strategy",
    "strategy_for",
]

DEFAULT_RANDOM_LENGTH = 16
POLICY_KEEPS = "the policy keeps this field on erasure"
# An opt-out or objection must outlive the erasure, or the person would be contacted again.
KEEPS_CHOICE = "a privacy choice is kept so that it goes on being honoured"
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


class MaskingError(ValueError):
    """A masking strategy cannot be applied as configured (names collection and field)."""


@dataclass(frozen=True, slots=True)
class MaskContext:
    """What a value strategy sees for one field of one row."""

    request_id: str
    collection: str
    field: PlanField
    row_key: str  # the row's primary key, as text
    value: Any  # the current value
    configuration: Mapping[str, Any]
    key: bytes | None  # the erasure key (hmac, random)

    @property
    def where(self) -> str:
        return f"{self.collection}.{self.field.name}"


class Strategy:
    """A masking strategy. ``row_level`` strategies are carried out by the connector
    (delete, unlink, keep); value strategies compute the new value of one field."""

    name: ClassVar[str]
    row_level: ClassVar[bool] = False
    needs_key: ClassVar[bool] = False

    def value(self, ctx: MaskContext) -> Any:
        raise NotImplementedError(f"{self.name} is carried out by the connector, not per value")

    def is_masked(self, ctx: MaskContext) -> bool:
        """True when ``ctx.value`` already is this strategy's output (a re-run)."""
        return bool(ctx.value == self.value(ctx))


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy to the registry under ``cls.name`` (usable as a decorator)."""
    STRATEGIES[cls.name] = cls()
    return cls


def strategy_for(name: str, where: str = "") -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        at = f" on {where}" if where else ""
        raise MaskingError(
            f"unknown masking strategy {name!r}{at}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None


def _max_length(ctx: MaskContext, default: int) -> int:
    wanted = ctx.configuration.get("length", default)
    if not isinstance(wanted, int) or isinstance(wanted, bool) or wanted < 1:
        raise MaskingError(f"{ctx.where}: configuration length must be a positive integer, not {wanted!r}")
    if ctx.field.length:
        wanted = min(wanted, ctx.field.length)
    return wanted


@register_strategy
class Null(Strategy):
    name = "null"

    def value(self, ctx: MaskContext) -> Any:
        return None


@register_strategy
class Fixed(Strategy):
    name = "fixed"

    def value(self, ctx: MaskContext) -> Any:
        if "value" not in ctx.configuration:
            raise MaskingError(f"{ctx.where}: strategy fixed needs configuration {{value: ...}}")
        return ctx.configuration["value"]


_ALGORITHMS = {"SHA-256": "sha256", "SHA256": "sha256", "SHA-512": "sha512", "SHA512": "sha512"}


@register_strategy
class Hmac(Strategy):
    """HMAC of the value under the erasure key, as lower-case hex.

    The output carries its own check: the last ``t`` hex digits are an HMAC of the first
    ones, so a value that already is a mask is recognised and left alone. A re-run of an
    erasure (after a crash) therefore leaves the same state instead of hashing a hash.
    """

    name = "hmac"
    needs_key = True

    @staticmethod
    def _digest(ctx: MaskContext, data: bytes) -> str:
        algo = str(ctx.configuration.get("algorithm", "SHA-256")).upper()
        if algo not in _ALGORITHMS:
            raise MaskingError(f"{ctx.where}: hmac algorithm {algo!r} not one of SHA-256, SHA-512")
        if ctx.key is None:
            raise MaskingError(f"{ctx.where}: strategy hmac needs the erasure key")
        return _hmac.new(ctx.key, data, _ALGORITHMS[algo]).hexdigest()

    @staticmethod
    def _split(n: int) -> int:
        return max(4, min(16, n // 3))

    def value(self, ctx: MaskContext) -> Any:
        if ctx.value is None:
            return None
        if ctx.field.data_type == "integer":
            return int(self._digest(ctx, b"v\0" + str(ctx.value).encode())[:12], 16)
        n = _max_length(ctx, 64)
        if n < 8:
            raise MaskingError(f"{ctx.where}: hmac needs a column of at least 8 characters")
        t = self._split(n)
        head = self._digest(ctx, b"v\0" + str(ctx.value).encode())[: n - t]
        return head + self._digest(ctx, b"t\0" + head.encode())[:t]

    def is_masked(self, ctx: MaskContext) -> bool:
        v = ctx.value
        if v is None:
            return True
        if ctx.field.data_type == "integer" or not isinstance(v, str):
            return False
        n = _max_length(ctx, 64)
        t = self._split(n)
        if len(v) != n or any(c not in "0123456789abcdef" for c in v):
            return False
        return _hmac.compare_digest(v[-t:], self._digest(ctx, b"t\0" + v[:-t].encode())[:t])


@register_strategy
class Random(Strategy):
    """A random-looking value, the same for the same request, collection, field and row."""

    name = "random"

    def value(self, ctx: MaskContext) -> Any:
        seed = "\0".join((ctx.request_id, ctx.collection, ctx.field.name, ctx.row_key)).encode()
        digest = _hmac.new(ctx.key or b"fiduciary-random", seed, hashlib.sha512).digest()
        if ctx.field.data_type == "integer":
            return int.from_bytes(digest[:6], "big")
        n = _max_length(ctx, DEFAULT_RANDOM_LENGTH)
        out: list[str] = []
        stream = digest
        while len(out) < n:
            out.extend(_ALNUM[b % len(_ALNUM)] for b in stream)
            stream = hashlib.sha512(stream).digest()
        return "".join(out[:n])


class _RowLevel(Strategy):
    row_level = True

    def is_masked(self, ctx: MaskContext) -> bool:
        return False


@register_strategy
class Delete(_RowLevel):
    name = "delete"


@register_strategy
class Unlink(_RowLevel):
    name = "unlink"


@register_strategy
class Keep(_RowLevel):
    name = "keep"


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What erasure does to one field: a strategy, or a reason to keep it."""

    strategy: str
    exemption: str | None = None  # exemption key, or "legal_minimum:<retention rule>"
    reason: str | None = None
    basis: str | None = None
    configuration: Mapping[str, Any] | None = None

    @property
    def kept(self) -> bool:
        return self.strategy == "keep"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strategy": self.strategy}
        if self.exemption:
            out["exemption"] = self.exemption
        if self.reason:
            out["reason"] = self.reason
        if self.basis:
            out["basis"] = self.basis
        return out


@dataclass(frozen=True, slots=True)
class NodeRules:
    collection: str
    delete_row: bool
    fields: Mapping[str, FieldRule]  # every field erasure decides on
    suspended: FieldRule | None = None  # why a row delete did not happen


def _exemption_rule(ex: PlanExemption) -> FieldRule:
    return FieldRule("keep", exemption=ex.key, reason=ex.name, basis=ex.basis)


def field_rules(
    node: PlanNode,
    exemptions: Mapping[str, PlanExemption],
    active: Collection[str] = (),
    request_type: str = "erase",
) -> NodeRules:
    """The erasure rules of ``node`` for a request with the ``active`` exemptions."""
    unknown = [a for a in active if a not in exemptions]
    if unknown:
        raise MaskingError(
            f"active exemption(s) {', '.join(sorted(unknown))} not declared in the policy for "
            f"erasure; declared: {', '.join(sorted(exemptions)) or 'none'}"
        )
    actives = [exemptions[a] for a in sorted(active) if request_type in exemptions[a].suspends]
    link_fields = {i.field for i in node.inputs if i.identity is None}
    rules: dict[str, FieldRule] = {}
    wants_delete = node.delete_rows or (node.link_table and any(f.masking == "unlink" for f in node.fields))
    for f in node.fields:
        if "." in f.name:
            continue  # nested (document) fields: not columns of their own
        if f.primary_key:
            rules[f.name] = FieldRule("keep", reason="primary key: other rows refer to it")
            continue
        ex = next((e for e in actives if e.covers(f.categories) and (f.categories or not e.categories)), None)
        if ex is not None:
            rules[f.name] = _exemption_rule(ex)
            continue
        if f.legal_minimums:
            lm = f.legal_minimums[0]
            rules[f.name] = FieldRule(
                "keep",
                exemption=f"legal_minimum:{lm.rule}",
                reason=f"{lm.reason} ({lm.period})",
                basis=lm.basis,
            )
            continue
        if f.masking:
            strategy_for(f.masking, f"{node.collection}.{f.name}")
            if f.masking == "delete":
                wants_delete = True
            if f.masking == "keep":
                rules[f.name] = FieldRule("keep", reason=POLICY_KEEPS)
            else:
                rules[f.name] = FieldRule(f.masking, configuration=f.masking_configuration)
            continue
        if node.delete_rows:
            rules[f.name] = FieldRule("delete")
        elif node.detached and f.categories:
            rules[f.name] = FieldRule("keep", reason="shared content: only its link to the person is cut")
        elif f.name in link_fields:
            rules[f.name] = FieldRule("keep", reason="link to the person's other rows")
        elif any(is_within(c, "user.privacy_preferences") for c in f.categories):
            rules[f.name] = FieldRule("keep", reason=KEEPS_CHOICE)
        elif f.data_type == "boolean":
            rules[f.name] = FieldRule("keep", reason="a yes/no value identifies no one")
        elif f.categories:
            rules[f.name] = FieldRule("null")
    # A row with a field that must stay cannot be deleted: the exemption suspends it.
    suspended: FieldRule | None = None
    if wants_delete:
        holder = next(
            (r for r in rules.values() if r.exemption is not None or r.reason == POLICY_KEEPS),
            None,
        )
        if holder is not None:
            suspended = holder
            wants_delete = False
            rules = {
                name: r
                if r.kept
                else FieldRule(
                    "keep",
                    exemption=holder.exemption,
                    reason=f"row kept, deletion suspended: {holder.reason}",
                    basis=holder.basis,
                )
                for name, r in rules.items()
            }
        else:
            rules = {name: FieldRule("delete") if not r.kept else r for name, r in rules.items()}
            for f in node.fields:
                if "." not in f.name and not f.primary_key:
                    rules.setdefault(f.name, FieldRule("delete"))
    return NodeRules(node.collection, wants_delete, rules, suspended)
