"""How long `fiduciary policy check` takes on the largest example (target: < 300 ms wall).

Prints, in one run:
- the wall time of the whole command in a fresh process (what a person waits for),
- load + check + compile in process (what the server pays on reload),
- baselines: the bare interpreter start, and fideslang validating the same datastores
  (parse the YAML + fideslang's pydantic models, no cross-checks) in a fresh process —
  what a Fides user pays just to parse their datasets.

    python bench/policy_check.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    return times


def show(label: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p90 = ms[max(0, int(len(ms) * 0.9) - 1)]
    print(f"  {label:<58} median {statistics.median(ms):7.1f} ms   p90 {p90:7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()

    from fiduciary.policy import compile_policy, load_policy

    examples = sorted(ROOT.glob("examples/*/policy.yaml"), key=lambda p: p.stat().st_size)
    largest = examples[-1]
    loaded = load_policy(largest)
    cp = compile_policy(loaded)
    print(
        f"largest example: {largest.relative_to(ROOT)} ({largest.stat().st_size:,} bytes, "
        f"{len(cp.purposes)} purposes, {len(cp.declared_categories)} categories, "
        f"{len(cp.recipients)} recipients, {len(cp.collections)} collections)"
    )
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, runs={args.runs}\n")

    exe = shutil.which("fiduciary") or str(Path(sys.executable).with_name("fiduciary"))
    print("fresh process (wall):")
    show("fiduciary policy check (target < 300 ms)", wall([exe, "policy", "check", str(largest)], args.runs))
    show("baseline: python -c pass", wall([sys.executable, "-c", "pass"], args.runs))

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "dataset.yml"
        ds.write_text(
            yaml.safe_dump(
                {"dataset": [d.model_dump(mode="json", exclude_none=True) for d in loaded.policy.datastores]}
            )
        )
        script = (
            "import sys, yaml; from fideslang.models import Dataset; "
            "[Dataset.model_validate(d) for d in yaml.safe_load(open(sys.argv[1]))['dataset']]"
        )
        show(
            "baseline: fideslang parses the same datasets only",
            wall([sys.executable, "-c", script, str(ds)], args.runs),
        )

    print("\nin process:")
    times = []
    for _ in range(max(20, args.runs)):
        t = time.perf_counter()
        compile_policy(load_policy(largest))
        times.append((time.perf_counter() - t) * 1000)
    show("load + check + compile", times)


if __name__ == "__main__":
    main()
