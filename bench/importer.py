"""The policy importer's extraction scored against the hand-made gold labels (issue 7).

Runs ``fiduciary.importer.extract`` on the five reference policies
(``../shared/seeds/*.txt``) and scores each field against ``../shared/importer-gold/*.yaml``
by the rules of that folder's README, section 4: per field TP, FP and FN summed over the
five policies (micro-average), precision, recall and F1, and beside them the evidence
accuracy (the share of true positives whose evidence, widened to its reference sentence,
contains the gold quote or one of its ``alt_evidence``).

Targets: precision >= 0.90 and recall >= 0.80 for categories, recipients, rights,
retention and children; every policy extracted in <= 10 s on 2 cores.

    python bench/importer.py [--gold DIR] [--seeds DIR] [--show FIELD ...]

``--show`` lists the false positives and false negatives of the named fields.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from fiduciary.importer.extract import extract
from fiduciary.policy.taxonomy import related

SHARED = Path(__file__).resolve().parents[2] / "shared"
TARGETS = ("categories", "recipients", "rights", "retention", "children")
P_TARGET, R_TARGET, SECONDS_TARGET = 0.90, 0.80, 10.0


def load_validate(gold_dir: Path) -> ModuleType:
    """The reference splitter and normaliser (``validate.py`` beside the gold files)."""
    path = gold_dir / "validate.py"
    if not path.exists():
        sys.exit(
            f"importer bench: the reference helpers {path} are missing; the gold labels live in "
            "../shared/importer-gold beside the repository (pass --gold DIR)"
        )
    spec = importlib.util.spec_from_file_location("importer_gold_validate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ evidence


_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'})


class Policy:
    """One seed policy: its reference sentences, for the evidence check."""

    def __init__(self, v: ModuleType, raw: str) -> None:
        self.v = v
        self.sents: list[str] = v.sentences(raw)

    def N(self, text: str) -> str:
        return str(self.v.normalise(text)).translate(_QUOTES)

    def evidence_ok(self, pred_evidence: str | None, gold: dict[str, Any]) -> bool:
        if not pred_evidence:
            return False
        quotes = [gold.get("evidence"), *(gold.get("alt_evidence") or [])]
        q = [self.N(x) for x in quotes if x]
        p = self.N(pred_evidence)
        if any(x in p for x in q):
            return True
        for sent in self.v.sentences_containing(self.v.normalise(pred_evidence), self.sents):
            widened = self.N(sent)
            if any(x in widened for x in q):
                return True
        return False


# ------------------------------------------------------------------ matching


def max_matching(
    n_left: int, n_right: int, edges: dict[int, list[int]], prefer: set[tuple[int, int]]
) -> dict[int, int]:
    """Maximum one-to-one matching (left -> right), built from the preferred edges first."""
    match_r: dict[int, int] = {}

    def augment(u: int, seen: set[int], allowed: Callable[[int, int], bool]) -> bool:
        for w in sorted(edges.get(u, []), key=lambda w: (u, w) not in prefer):
            if w in seen or not allowed(u, w):
                continue
            seen.add(w)
            if w not in match_r or augment(match_r[w], seen, allowed):
                match_r[w] = u
                return True
        return False

    for allowed in (lambda u, w: (u, w) in prefer, lambda u, w: True):
        for u in range(n_left):
            if u in match_r.values():
                continue
            augment(u, set(), allowed)
    return {u: w for w, u in match_r.items()}


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    ev_ok: int = 0
    extra: dict[str, list[int]] = field(default_factory=dict)  # name -> [right, total]
    misses: list[str] = field(default_factory=list)

    def add_extra(self, name: str, ok: bool) -> None:
        slot = self.extra.setdefault(name, [0, 0])
        slot[0] += int(ok)
        slot[1] += 1

    @property
    def p(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def r(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        return 2 * self.p * self.r / (self.p + self.r) if self.p + self.r else 0.0

    @property
    def evidence(self) -> float:
        return self.ev_ok / self.tp if self.tp else 1.0


def score_pairs(
    sc: Score,
    name: str,
    pol: Policy,
    preds: list[dict[str, Any]],
    golds: list[dict[str, Any]],
    compatible: Callable[[dict[str, Any], dict[str, Any]], bool],
    label: Callable[[dict[str, Any]], str],
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Count a one-to-one matching of compatible items, preferring evidence-correct pairs."""
    edges: dict[int, list[int]] = {}
    prefer: set[tuple[int, int]] = set()
    for i, p in enumerate(preds):
        for j, g in enumerate(golds):
            if compatible(p, g):
                edges.setdefault(i, []).append(j)
                if pol.evidence_ok(p.get("evidence"), g):
                    prefer.add((i, j))
    m = max_matching(len(preds), len(golds), edges, prefer)
    pairs = [(preds[i], golds[j]) for i, j in m.items()]
    sc.tp += len(pairs)
    sc.ev_ok += sum((i, j) in prefer for i, j in m.items())
    sc.fp += len(preds) - len(pairs)
    sc.fn += len(golds) - len(pairs)
    for i, p in enumerate(preds):
        if i not in m:
            sc.misses.append(f"{name} FP {label(p)}  <- {shorten(p.get('evidence'))}")
    matched = set(m.values())
    for j, g in enumerate(golds):
        if j not in matched:
            sc.misses.append(f"{name} FN {label(g)}  <- {shorten(g.get('evidence'))}")
    return pairs


def score_sets(
    sc: Score,
    name: str,
    pol: Policy,
    preds: list[dict[str, Any]],
    golds: list[dict[str, Any]],
    unit: Callable[[dict[str, Any]], Hashable],
) -> None:
    """Set comparison of ``unit(item)``; evidence: any predicted item of a unit against
    any gold item of it."""
    pu: dict[Hashable, list[dict[str, Any]]] = {}
    gu: dict[Hashable, list[dict[str, Any]]] = {}
    for p in preds:
        pu.setdefault(unit(p), []).append(p)
    for g in golds:
        gu.setdefault(unit(g), []).append(g)
    for u in pu.keys() & gu.keys():
        sc.tp += 1
        sc.ev_ok += any(pol.evidence_ok(p.get("evidence"), g) for p in pu[u] for g in gu[u])
    for u in pu.keys() - gu.keys():
        sc.fp += 1
        sc.misses.append(f"{name} FP {u}  <- {shorten(pu[u][0].get('evidence'))}")
    for u in gu.keys() - pu.keys():
        sc.fn += 1
        sc.misses.append(f"{name} FN {u}  <- {shorten(gu[u][0].get('evidence'))}")


def shorten(text: str | None, n: int = 110) -> str:
    if not text:
        return "-"
    t = " ".join(text.split())
    return t if len(t) <= n else t[: n - 1] + "…"


# ------------------------------------------------------------------ field rules

_SUFFIX = re.compile(r"\s+(?:inc|llc|ltd|corp|gmbh|co)$")


def norm_name(name: str | None) -> str | None:
    if name is None:
        return None
    n = re.sub(r"[^\w\s]", "", name.casefold())
    n = " ".join(n.split())
    return _SUFFIX.sub("", n).strip()


_REGIONS = {
    "us": "united states",
    "usa": "united states",
    "united states of america": "united states",
    "european union": "eu",
}


def norm_region(value: str) -> str:
    v = value.casefold().strip()
    return _REGIONS.get(v, v)


def norm_channel(value: str) -> str:
    v = value.casefold().strip()
    v = re.sub(r"^https?://", "", v)
    v = re.sub(r"^www\.", "", v)
    return v.rstrip("/")


_ISO = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")


def same_period(a: str, b: str) -> bool:
    if a == b:
        return True
    ma, mb = _ISO.match(a or ""), _ISO.match(b or "")
    if not (ma and mb):
        return False

    def days(m: re.Match[str]) -> float:
        y, mo, w, d = (int(x) if x else 0 for x in m.groups())
        return y * 365 + mo * 30 + w * 7 + d

    return days(ma) == days(mb)


def score_policy(scores: dict[str, Score], pol: Policy, pred: dict[str, Any], gold: dict[str, Any]) -> None:
    def sc(name: str) -> Score:
        return scores.setdefault(name, Score())

    for name in ("categories", "purposes"):
        score_sets(sc(name), name, pol, pred[name], gold[name], lambda x: x["key"])
        # lenient: ancestors and descendants match, exact pairs first
        lenient = sc(name + " (lenient)")
        pk = [p["key"] for p in pred[name]]
        gk = [g["key"] for g in gold[name]]
        edges = {i: [j for j, g in enumerate(gk) if related(p, g)] for i, p in enumerate(pk)}
        exact = {(i, j) for i, p in enumerate(pk) for j, g in enumerate(gk) if p == g}
        m = max_matching(len(pk), len(gk), edges, exact)
        lenient.tp += len(m)
        lenient.fp += len(pk) - len(m)
        lenient.fn += len(gk) - len(m)
        lenient.ev_ok += sum(
            pol.evidence_ok(pred[name][i].get("evidence"), gold[name][j]) for i, j in m.items()
        )

    score_sets(
        sc("legal_bases"), "legal_bases", pol, pred["legal_bases"], gold["legal_bases"], lambda x: x["basis"]
    )

    def recipient_match(p: dict[str, Any], g: dict[str, Any]) -> bool:
        if p["role"] != g["role"]:
            return False
        pn = norm_name(p.get("name"))
        names = [g.get("name"), *(g.get("aliases") or [])]
        if pn is None or g.get("name") is None:
            return pn is None and g.get("name") is None
        return pn in {norm_name(n) for n in names if n}

    rs = sc("recipients")
    for p, g in score_pairs(
        rs,
        "recipients",
        pol,
        pred["recipients"],
        gold["recipients"],
        recipient_match,
        lambda x: (x["role"], x.get("name"), "agg" if x.get("aggregate_only") else ""),
    ):
        pc, gc = set(p.get("categories") or []), set(g.get("categories") or [])
        slot = rs.extra.setdefault("categories P", [0, 0])
        slot[0] += len(pc & gc)
        slot[1] += len(pc)
        slot = rs.extra.setdefault("categories R", [0, 0])
        slot[0] += len(pc & gc)
        slot[1] += len(gc)
        rs.add_extra("aggregate_only", bool(p.get("aggregate_only")) == bool(g.get("aggregate_only")))

    s = sc("sells_personal_data")
    pv = (pred.get("sells_personal_data") or {}).get("value")
    gv = (gold.get("sells_personal_data") or {}).get("value")
    s.add_extra("accuracy", pv == gv)
    if pv is not None or gv is not None:
        if pv == gv:
            s.tp += 1
            s.ev_ok += pol.evidence_ok(
                pred["sells_personal_data"].get("evidence"), gold["sells_personal_data"]
            )
        else:
            if pv is not None:
                s.fp += 1
            if gv is not None:
                s.fn += 1
            quote = (pred.get("sells_personal_data") or {}).get("evidence")
            s.misses.append(f"sells FP/FN pred={pv} gold={gv} <- {shorten(quote)}")

    ret = sc("retention")
    for p, g in score_pairs(
        ret,
        "retention",
        pol,
        pred["retention"],
        gold["retention"],
        lambda p, g: pol.evidence_ok(p.get("evidence"), g),
        lambda x: x["period"],
    ):
        ret.add_extra("period", same_period(p["period"], g["period"]))
    ret.ev_ok = ret.tp  # pairs are made by the evidence check

    for name, lab in (("security", "measure"), ("special", "practice")):
        s = sc(name)
        score_pairs(
            s,
            name,
            pol,
            pred[name],
            gold[name],
            lambda p, g: pol.evidence_ok(p.get("evidence"), g),
            lambda x, lab=lab: str(x[lab])[:50],
        )
        s.ev_ok = s.tp

    score_sets(sc("rights"), "rights", pol, pred["rights"], gold["rights"], lambda x: x["right"])
    score_sets(
        sc("rights+channel"),
        "rights+channel",
        pol,
        pred["rights"],
        gold["rights"],
        lambda x: (x["right"], x.get("channel")),
    )

    def facts(c: dict[str, Any] | None) -> list[dict[str, Any]]:
        if not c:
            return []
        out = []
        if c.get("min_age") is not None:
            out.append({"fact": f"min_age={c['min_age']}", **c})
        if c.get("action_on_discovery"):
            out.append({"fact": "action", **c})
        return out

    score_sets(
        sc("children"),
        "children",
        pol,
        facts(pred.get("children")),
        facts(gold.get("children")),
        lambda x: x["fact"],
    )
    score_sets(
        sc("transfers"),
        "transfers",
        pol,
        pred["transfers"],
        gold["transfers"],
        lambda x: norm_region(x["country_or_region"]),
    )
    score_sets(
        sc("cookies_and_tracking"),
        "cookies_and_tracking",
        pol,
        pred["cookies_and_tracking"],
        gold["cookies_and_tracking"],
        lambda x: x["kind"],
    )

    pc_pred, pc_gold = pred.get("policy_changes"), gold.get("policy_changes")
    pcs = sc("policy_changes.notice")
    score_sets(
        pcs,
        "policy_changes.notice",
        pol,
        [{"n": n, **pc_pred} for n in (pc_pred or {}).get("notice", [])],
        [{"n": n, **pc_gold} for n in (pc_gold or {}).get("notice", [])],
        lambda x: x["n"],
    )
    for b in ("material_change_choice", "previous_versions_available"):
        pcs.add_extra(b, bool((pc_pred or {}).get(b)) == bool((pc_gold or {}).get(b)))

    c = sc("contact")
    cp, cg = pred.get("contact"), gold.get("contact")
    if (
        cp
        and cg
        and (
            norm_channel(cp["channel"]) == norm_channel(cg["channel"])
            or pol.evidence_ok(cp.get("evidence"), cg)
        )
    ):
        c.tp += 1
        c.ev_ok += pol.evidence_ok(cp.get("evidence"), cg)
    else:
        if cp:
            c.fp += 1
            c.misses.append(f"contact FP {cp['channel']}")
        if cg:
            c.fn += 1
            c.misses.append(f"contact FN {cg['channel']}")

    s = sc("service")
    if (pred.get("service") or "").casefold() == (gold.get("service") or "").casefold():
        s.tp += 1
        s.ev_ok += 1
    else:
        s.fp += bool(pred.get("service"))
        s.fn += bool(gold.get("service"))
        s.misses.append(f"service pred={pred.get('service')} gold={gold.get('service')}")
    lu = sc("last_updated")
    lp, lg = (pred.get("last_updated") or {}).get("date"), (gold.get("last_updated") or {}).get("date")
    if lp and lp == lg:
        lu.tp += 1
        lu.ev_ok += pol.evidence_ok(pred["last_updated"].get("evidence"), gold["last_updated"])
    else:
        lu.fp += bool(lp)
        lu.fn += bool(lg)
        if lp or lg:
            lu.misses.append(f"last_updated pred={lp} gold={lg}")


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gold", type=Path, default=SHARED / "importer-gold")
    ap.add_argument("--seeds", type=Path, default=SHARED / "seeds")
    ap.add_argument("--show", nargs="*", default=[], metavar="FIELD", help="list the misses of these fields")
    args = ap.parse_args(argv)
    v = load_validate(args.gold)
    golds = sorted(args.gold.glob("*.yaml"))
    if not golds:
        sys.exit(f"importer bench: no gold files in {args.gold}")
    scores: dict[str, Score] = {}
    seconds: list[float] = []
    print(
        f"importer bench: {len(golds)} policies, Python {platform.python_version()} on {platform.machine()}"
    )
    for gpath in golds:
        seed = args.seeds / (gpath.stem + ".txt")
        if not seed.exists():
            sys.exit(f"importer bench: no seed policy {seed} for {gpath.name}")
        gold = yaml.safe_load(gpath.read_text(encoding="utf-8"))
        t0 = time.perf_counter()
        extraction = extract(seed, source=seed.name)
        seconds.append(time.perf_counter() - t0)
        pred = extraction.to_gold()
        pol = Policy(v, seed.read_text(encoding="utf-8"))
        score_policy(scores, pol, pred, gold)
        print(f"  {seed.name}  {gold['service']:<9} {len(extraction.claims):>4} claims  {seconds[-1]:.3f} s")

    print()
    print(f"{'field':<30}{'TP':>5}{'FP':>5}{'FN':>5}{'P':>8}{'R':>8}{'F1':>8}{'evid':>8}  target")
    met = True
    for name, s in scores.items():
        target = ""
        if name in TARGETS:
            ok = s.p >= P_TARGET and s.r >= R_TARGET
            met &= ok
            target = "met" if ok else f"MISSED (P>={P_TARGET:.2f}, R>={R_TARGET:.2f})"
        counts = f"{s.tp:>5}{s.fp:>5}{s.fn:>5}"
        print(f"{name:<30}{counts}{s.p:>8.3f}{s.r:>8.3f}{s.f1:>8.3f}{s.evidence:>8.3f}  {target}")
        for extra, (right, total) in s.extra.items():
            if total:
                print(f"{'':<4}{extra:<26}{right:>5}/{total:<5}{right / total:>8.3f}")
    worst = max(seconds)
    print()
    mean = statistics.mean(seconds)
    print(f"seconds per policy: mean {mean:.3f}, max {worst:.3f} (target <= {SECONDS_TARGET:.0f} s)")
    met &= worst <= SECONDS_TARGET
    print("targets:", "all met" if met else "NOT all met")
    for name in args.show:
        print(f"\n--- {name}")
        for line in scores.get(name, Score()).misses:
            print("  " + line)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
