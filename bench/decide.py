"""The decision engine: one decision for a cached subject state, and the batch form.

Targets (issue 3): decide() for a cached state p50 <= 2 us in process; decide_many >= 1,000,000
decisions/s on one core. Baselines in the same run: the same purpose-level rules written for
pycasbin (an ABAC model: one policy line per purpose, its rule evaluated against the
subject's attributes) and for cedarpy (one Cedar `permit` per purpose over a Subject entity),
the libraries a Python team would reach for. Both get their best case: the model and policy
set parsed once, Cedar's entities pre-parsed into a handle. Their answers are checked against
the Decider's on the same questions before any timing, so the three answer the same rules.

    python bench/decide.py [--policy dataplatform] [--subjects 100000] [--purposes 8]

The baselines need `pip install -e .[bench]`; without them the run still prints our figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fiduciary import compile_policy, load_policy
from fiduciary.decide import Decider, SubjectState
from fiduciary.policy.compile import CompiledPolicy
from fiduciary.policy.model import Basis, ConsentMode

ROOT = Path(__file__).resolve().parents[1]
CHOICES = ("none", "given", "withdrawn", "expired")


# --------------------------------------------------------------------------- workload


def make_states(cp: CompiledPolicy, n: int, rng: random.Random) -> list[SubjectState]:
    """Subjects with realistic spread: most have made a few choices, a few object, restrict,
    opted out of sale or are under age."""
    kinds = sorted(cp.policy.subjects)
    jurisdictions = sorted(cp.jurisdictions)
    purposes = sorted(cp.purposes)
    conditions = sorted(
        {p.condition.removeprefix("setting:") for p in cp.purposes.values() if p.condition}
        | {f"linked:{k}" for k, r in cp.recipients.items() if r.source.condition == "linked_account"}
    )
    out = []
    for i in range(n):
        consents = {p: c for p in purposes if (c := rng.choice(CHOICES)) != "none"}
        roll = rng.random()
        out.append(
            SubjectState(
                subject_id=f"s{i}",
                kind=rng.choice(kinds),
                jurisdiction=rng.choice(jurisdictions),
                status="erased" if roll < 0.005 else "active",
                age_status="under_age" if 0.005 <= roll < 0.015 else "adult",
                consents=consents,
                objections=frozenset(rng.sample(purposes, 1)) if rng.random() < 0.1 else frozenset(),
                restricted=rng.random() < 0.01,
                sale_opt_out=rng.random() < 0.1,
                settings={c: "true" for c in conditions if rng.random() < 0.5},
            )
        )
    return out


# --------------------------------------------------------------------------- the same rules, as
# a Python team would write them for a general policy engine: one rule per purpose.


@dataclass(frozen=True)
class Rule:
    """The purpose-level rules of one purpose as a conjunction of clauses; each clause is a
    disjunction of atoms, and an atom is (attribute, op, value, negated)."""

    purpose: str
    clauses: tuple[tuple[tuple[str, str, Any, bool], ...], ...]


def rules_for(cp: CompiledPolicy) -> list[Rule]:
    out = []
    for key, p in cp.purposes.items():
        clauses: list[tuple[tuple[str, str, Any, bool], ...]] = [(("erased", "is", True, True),)]
        if p.basis != Basis.legal_obligation:
            clauses += [(("restricted", "is", True, True),), (("under_age", "is", True, True),)]
        if p.subjects:
            clauses.append(tuple(("kind", "==", k, False) for k in sorted(p.subjects)))
        if p.source.jurisdictions:
            clauses.append(tuple(("jurisdiction", "==", j, False) for j in p.source.jurisdictions))
        if p.condition:
            clauses.append((("conditions", "contains", p.condition.removeprefix("setting:"), False),))
        if not p.essential:
            modes: list[tuple[str, str, Any, bool]] = []
            for j in sorted(cp.jurisdictions):
                mode = p.consent_mode(j)
                if mode == ConsentMode.opt_in:
                    modes.append(("jurisdiction&consent", "given", (j, key), False))
                elif mode == ConsentMode.opt_out:
                    modes.append(("jurisdiction&consent", "not_withdrawn", (j, key), False))
                else:
                    modes.append(("jurisdiction", "==", j, False))
            clauses.append(tuple(modes))
            if p.objection or p.direct_marketing:
                clauses.append((("objections", "contains", key, True),))
                clauses.append((("objections", "contains", "*", True),))
            if p.sale:
                clauses.append((("sale_opt_out", "is", True, True),))
                clauses.append((("gpc", "is", True, True),))
        out.append(Rule(key, tuple(clauses)))
    return out


def attrs(s: SubjectState, purposes: Sequence[str]) -> dict[str, Any]:
    return {
        "kind": s.kind,
        "jurisdiction": s.jurisdiction,
        "erased": s.status == "erased",
        "restricted": s.restricted,
        "under_age": s.age_status == "under_age",
        "consents": {p: s.consents.get(p, "none") for p in purposes},
        "objections": sorted(s.objections),
        "sale_opt_out": s.sale_opt_out,
        "conditions": sorted(k for k, v in s.settings.items() if v == "true"),
    }


def casbin_expr(rule: Rule) -> str:
    def atom(a: tuple[str, str, Any, bool]) -> str:
        name, op, value, negated = a
        if name == "jurisdiction&consent":
            j, purpose = value
            test = "==" if op == "given" else "!="
            want = "given" if op == "given" else "withdrawn"
            text = f"(r.sub.jurisdiction == '{j}' && r.sub.consents['{purpose}'] {test} '{want}')"
        elif op == "contains":
            text = f"('{value}' in r.sub.{name})"
        elif op == "is":
            text = f"r.sub.{name}"
        else:
            text = f"r.sub.{name} == '{value}'"
        return f"!{text}" if negated else text

    return " && ".join("(" + " || ".join(atom(a) for a in clause) + ")" for clause in rule.clauses)


def cedar_expr(rule: Rule) -> str:
    def atom(a: tuple[str, str, Any, bool]) -> str:
        name, op, value, negated = a
        subject = "context" if name == "gpc" else "principal"
        if name == "jurisdiction&consent":
            j, purpose = value
            test = "==" if op == "given" else "!="
            want = "given" if op == "given" else "withdrawn"
            text = f'(principal.jurisdiction == "{j}" && principal.consents.{purpose} {test} "{want}")'
        elif op == "contains":
            text = f'principal.{name}.contains("{value}")'
        elif op == "is":
            text = f"{subject}.{name}"
        else:
            text = f'principal.{name} == "{value}"'
        return f"!{text}" if negated else text

    return " && ".join("(" + " || ".join(atom(a) for a in clause) + ")" for clause in rule.clauses)


class CasbinBaseline:
    MODEL = """
[request_definition]
r = sub, pur

[policy_definition]
p = pur, rule

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.pur == p.pur && eval(p.rule)
"""

    def __init__(self, cp: CompiledPolicy) -> None:
        self.enforcer = self.make_enforcer()
        for rule in rules_for(cp):
            self.enforcer.add_policy(rule.purpose, casbin_expr(rule))
        self.purposes = sorted(cp.purposes)

    def make_enforcer(self) -> Any:
        import casbin  # type: ignore[import-untyped]
        from casbin import model as casbin_model

        model = casbin_model.Model()
        model.load_model_from_text(self.MODEL.replace("\\\n", ""))  # joined continuation lines
        return casbin.Enforcer(model)

    def subject(self, s: SubjectState, gpc: bool) -> Any:
        class Sub:  # casbin's ABAC reads request attributes off an object
            pass

        sub = Sub()
        for k, v in attrs(s, self.purposes).items():
            setattr(sub, k, frozenset(v) if isinstance(v, list) else v)
        sub.gpc = gpc  # type: ignore[attr-defined]
        return sub

    def one(self, sub: Any, purpose: str) -> bool:
        return bool(self.enforcer.enforce(sub, purpose))

    def batch(self, pairs: list[tuple[Any, str]]) -> list[bool]:
        return [bool(x) for x in self.enforcer.batch_enforce([[s, p] for s, p in pairs])]


class CasbinMatcherBaseline(CasbinBaseline):
    """pycasbin's fast form: one matcher, compiled once, and the rules as data rows (one per
    purpose and jurisdiction, like RBAC with domains) instead of an eval() per rule."""

    MODEL = """
[request_definition]
r = sub, pur

[policy_definition]
p = pur, jur, legal, kinds, cond, mode, obj, sale

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.pur == p.pur && r.sub.jurisdiction == p.jur && !r.sub.erased \
  && (p.legal == 'y' || (!r.sub.restricted && !r.sub.under_age)) \
  && (p.kinds == '*' || ('|' + r.sub.kind + '|') in p.kinds) \
  && (p.cond == '' || p.cond in r.sub.conditions) \
  && (p.mode == 'notice_only' || (p.mode == 'opt_in' && r.sub.consents[p.pur] == 'given') \
      || (p.mode == 'opt_out' && r.sub.consents[p.pur] != 'withdrawn')) \
  && (p.obj == 'n' || !(p.pur in r.sub.objections || '*' in r.sub.objections)) \
  && (p.sale == 'n' || !(r.sub.sale_opt_out || r.sub.gpc))
"""

    def __init__(self, cp: CompiledPolicy) -> None:
        self.enforcer = self.make_enforcer()
        for key, p in cp.purposes.items():
            for j in cp.jurisdictions:
                where = p.source.jurisdictions
                if where and j not in where:
                    continue
                self.enforcer.add_policy(
                    key,
                    j,
                    "y" if p.basis == Basis.legal_obligation else "n",
                    "|" + "|".join(sorted(p.subjects)) + "|" if p.subjects else "*",
                    p.condition.removeprefix("setting:") if p.condition else "",
                    str(ConsentMode.notice_only if p.essential else p.consent_mode(j)),
                    "y" if not p.essential and (p.objection or p.direct_marketing) else "n",
                    "y" if not p.essential and p.sale else "n",
                )
        self.purposes = sorted(cp.purposes)


class CedarBaseline:
    def __init__(self, cp: CompiledPolicy, states: Sequence[SubjectState]) -> None:
        import cedarpy

        self.cedarpy = cedarpy
        text = "\n".join(
            f'permit(principal, action == Action::"use", resource == Purpose::"{r.purpose}") '
            f"when {{ {cedar_expr(r)} }};"
            for r in rules_for(cp)
        )
        self.policies = cedarpy.PolicySet.from_str(text)
        purposes = sorted(cp.purposes)
        entities = [
            {"uid": {"type": "Subject", "id": s.subject_id}, "attrs": attrs(s, purposes), "parents": []}
            for s in states
        ]
        self.entities = cedarpy.Entities.from_json_str(json.dumps(entities))

    @staticmethod
    def request(s: SubjectState, purpose: str, gpc: bool) -> dict[str, Any]:
        return {
            "principal": f'Subject::"{s.subject_id}"',
            "action": 'Action::"use"',
            "resource": f'Purpose::"{purpose}"',
            "context": {"gpc": gpc},
        }

    def one(self, request: dict[str, Any]) -> bool:
        result = self.cedarpy.is_authorized(request, self.policies, self.entities)
        if result.diagnostics.errors:
            raise RuntimeError(f"cedar: {result.diagnostics.errors}")
        return bool(result.allowed)

    def batch(self, requests: list[dict[str, Any]]) -> list[bool]:
        return [
            bool(r.allowed) for r in self.cedarpy.is_authorized_batch(requests, self.policies, self.entities)
        ]


# --------------------------------------------------------------------------- timing


def percentiles_us(ns: list[int]) -> tuple[float, float]:
    ns = sorted(ns)
    return ns[len(ns) // 2] / 1000, ns[min(len(ns) - 1, int(len(ns) * 0.99))] / 1000


def time_each(fn: Callable[[int], object], n: int) -> list[int]:
    """Time ``n`` single calls, one perf_counter_ns pair around each."""
    clock = time.perf_counter_ns
    out = [0] * n
    for i in range(n):
        t = clock()
        fn(i)
        out[i] = clock() - t
    return out


def best_rate(fn: Callable[[], object], count: int, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return count / best


def row(label: str, p50: float | None = None, p99: float | None = None, rate: float | None = None) -> None:
    cells = f"  {label:<62}"
    if p50 is not None:
        cells += f" p50 {p50:8.2f} us"
    if p99 is not None:
        cells += f"   p99 {p99:8.2f} us"
    if rate is not None:
        cells += f"   {rate:14,.0f} decisions/s"
    print(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="dataplatform", help="examples/<name>/policy.yaml")
    ap.add_argument("--subjects", type=int, default=100_000)
    ap.add_argument("--purposes", type=int, default=8, help="purposes asked per subject in the batch")
    ap.add_argument("--calls", type=int, default=200_000, help="single decide() calls timed")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the target says
    rng = random.Random(args.seed)
    cp = compile_policy(load_policy(ROOT / "examples" / args.policy / "policy.yaml"))
    decider = Decider(cp)
    purposes = sorted(cp.purposes)
    print(
        f"decision engine on examples/{args.policy} ({len(purposes)} purposes, "
        f"{len(cp.recipients)} recipients, {len(cp.jurisdictions)} jurisdictions)"
    )
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), {platform.machine()}, "
        f"{os.cpu_count()} cores (pinned to one), {time.strftime('%Y-%m-%d')}\n"
    )

    t = time.perf_counter()
    states = make_states(cp, args.subjects, rng)
    print(f"  {len(states):,} subject states built in {time.perf_counter() - t:.1f} s\n")

    # -- (a) one decision for a cached state
    print("(a) decide() for a cached subject state (target p50 <= 2 us)")
    overhead = percentiles_us(time_each(lambda i: None, args.calls))[0]
    print(f"  (timer + loop overhead p50 {overhead:.2f} us, included in every figure below)")
    questions = []
    for s in states[:1000]:
        p = rng.choice(purposes)
        recipients = sorted(cp.recipients_by_purpose.get(p, ()))
        cats = sorted(cp.purposes[p].categories)[:3]
        questions.append((s, p, cats, recipients[0] if recipients else None))
    for s, p, cats, rec in questions:  # fill the caches: the question is then a lookup
        decider.decide(s, p)
        decider.decide(s, p, cats, rec)
    q = len(questions)
    row(
        "decide(state, purpose)",
        *percentiles_us(
            time_each(lambda i: decider.decide(questions[i % q][0], questions[i % q][1]), args.calls)
        ),
    )
    row(
        "decide(state, purpose, categories, recipient)",
        *percentiles_us(time_each(lambda i: decider.decide(*questions[i % q]), args.calls)),
    )
    fresh = make_states(cp, 5000, random.Random(args.seed + 1))
    row(
        "first question for a new state (uncached, for reference)",
        *percentiles_us(time_each(lambda i: decider.decide(fresh[i], rng.choice(purposes)), len(fresh))),
    )
    print()

    # -- (b) the batch form
    k = min(args.purposes, len(purposes))
    pairs = [(s, p) for s in states for p in rng.sample(purposes, k)]
    print(f"(b) decide_many over {len(states):,} subjects x {k} purposes = {len(pairs):,} pairs, one core")
    print("    (target >= 1,000,000 decisions/s)")
    t = time.perf_counter()
    first = decider.decide_many(pairs)
    cold = len(pairs) / (time.perf_counter() - t)
    row("first pass (computes each state's allowed purposes)", rate=cold)
    warm = best_rate(lambda: decider.decide_many(pairs), len(pairs), args.runs)
    row(f"states cached (best of {args.runs})", rate=warm)
    print(f"  allowed: {sum(first) / len(first):.1%} of the pairs")
    print()

    # -- (c) baselines
    print("(c) baselines: the same purpose-level rules")
    sample = [(rng.choice(states[:2000]), rng.choice(purposes), rng.random() < 0.2) for _ in range(3000)]
    expected = [decider.decide(s, p, gpc=g).ok for s, p, g in sample]
    ours_batch = [(s, p) for s, p, _ in sample]
    ours_one = percentiles_us(
        time_each(lambda i: decider.decide(sample[i][0], sample[i][1], gpc=sample[i][2]), len(sample))
    )
    row("fiduciary decide() (cached state)", *ours_one)
    cold_states = make_states(cp, 3000, random.Random(args.seed + 2))
    row(
        "fiduciary decide() (state not cached: every rule evaluated)",
        *percentiles_us(time_each(lambda i: decider.decide(cold_states[i], sample[i][1]), len(cold_states))),
    )
    row(
        "fiduciary decide_many",
        rate=best_rate(lambda: decider.decide_many(ours_batch), len(ours_batch), args.runs),
    )

    try:
        casbins = [
            ("pycasbin, one matcher + rule rows", CasbinMatcherBaseline(cp), len(sample)),
            ("pycasbin, eval() of a rule per purpose", CasbinBaseline(cp), 300),
        ]
    except ImportError:
        print("  pycasbin: baseline unavailable: install .[bench]")
        casbins = []
    for label, base, n in casbins:
        casbin_run(label, base, [(base.subject(s, g), p) for s, p, g in sample[:n]], expected[:n])

    try:
        cedar = CedarBaseline(cp, states[:2000])
    except ImportError:
        print("  cedarpy: baseline unavailable: install .[bench]")
    else:
        requests = [cedar.request(s, p, g) for s, p, g in sample]
        agree([cedar.one(r) for r in requests], expected, "cedarpy")
        row(
            "cedarpy is_authorized() (parsed policies and entities)",
            *percentiles_us(time_each(lambda i: cedar.one(requests[i % len(requests)]), len(requests))),
        )
        agree(cedar.batch(requests), expected, "cedarpy batch")
        row("cedarpy is_authorized_batch()", rate=best_rate(lambda: cedar.batch(requests), len(requests), 3))


def casbin_run(label: str, base: CasbinBaseline, subs: list[tuple[Any, str]], expected: list[bool]) -> None:
    agree([base.one(sub, p) for sub, p in subs], expected, label)
    row(f"{label}: enforce()", *percentiles_us(time_each(lambda i: base.one(*subs[i]), len(subs))))
    agree(base.batch(subs), expected, label)
    row(f"{label}: batch_enforce()", rate=best_rate(lambda: base.batch(subs), len(subs), 3))


def agree(got: list[bool], expected: list[bool], who: str) -> None:
    """The baseline must answer the same rules, or its timing means nothing."""
    wrong = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    if wrong:
        sys.exit(
            f"{who} disagrees with the Decider on {len(wrong)} of {len(got)} questions (first: #{wrong[0]})"
        )


if __name__ == "__main__":
    main()
