"""The decision and consent endpoints under a loopback load generator (wrk).

Target (issue 5): >= 2,000 requests/s with p99 <= 20 ms on 2 cores. Baseline in the same
run: a bare FastAPI endpoint returning a constant, served the same way (uvicorn, same
worker count, no access log): the framework's ceiling on this machine.

Prints, per scenario and wrk connection count: requests/s, p50/p90/p99 latency and the
count of non-2xx answers (which must be 0):
- baseline: GET /ping of a bare FastAPI app;
- decide: POST /api/v1/decisions over --subjects subjects x 4 purposes, each subject
  asked again only after its cached state expired (1 s): every decision reads the
  subject's state from the store (batched with the other requests'), then is audited;
- decide-hot: the same over 100 subjects, whose states stay cached;
- consent: POST /api/v1/subjects/{id}/consent/give | withdraw (a ledger event, its state
  and audit entry committed before the answer);
- batch: POST /api/v1/decisions/batch with 100 decisions per request (decisions/s = x100).

The server is `python -m fiduciary.cli_web serve` over examples/dataplatform (SQLite,
WAL) in a temporary directory; wrk runs on the same 2 cores (one thread).

    apt-get install -y wrk
    python bench/api.py [--workers 2] [--duration 10] [--connections 8,16,32] [--subjects 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "examples" / "dataplatform" / "policy.yaml"
PURPOSES = ("newsletter", "usage_analytics", "ad_targeting", "sale_of_additional_information")

BARE_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server did not answer {url} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def lua_script(path: Path, key: str | None, requests: list[tuple[str, str, str | None]]) -> Path:
    """A wrk script cycling through (method, path, body) requests."""
    lines = ['wrk.headers["Content-Type"] = "application/json"']
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    lines.append("local reqs = {")
    for method, p, body in requests:
        b = "nil" if body is None else json.dumps(body)
        lines.append(f"  {{{json.dumps(method)}, {json.dumps(p)}, {b}}},")
    lines.append("}")
    lines.append(
        textwrap.dedent(
            """
            local i = 0
            request = function()
              i = i + 1
              local r = reqs[(i % #reqs) + 1]
              return wrk.format(r[1], r[2], nil, r[3])
            end
            """
        )
    )
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def run_wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    text = res.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.MULTILINE)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    return {
        "rps": rps,
        "p50": pct.get("50", float("nan")),
        "p90": pct.get("90", float("nan")),
        "p99": pct.get("99", float("nan")),
        "non2xx": float(bad.group(1)) if bad else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def setup(tmp: Path, subjects: int) -> tuple[str, list[str]]:
    """A data dir with ``subjects`` subjects (EU and California, consents mixed) and an
    API key for decisions and consent writes."""
    from sqlalchemy import select

    from fiduciary.consent import NewEvent
    from fiduciary.core import Fiduciary
    from fiduciary.store import tables
    from fiduciary.vault.vault import NewSubject
    from fiduciary.web.auth import create_api_key

    with Fiduciary.open(POLICY, data_dir=tmp / "data") as fid:
        records = [
            NewSubject(
                kind="user",
                jurisdiction="us-ca" if i % 2 else "eu",
                identities={"email": f"bench{i}@example.com"},
                policy_version=fid.policy.version,
                age_status="adult",
            )
            for i in range(subjects)
        ]
        fid.vault.import_subjects(records)
        with fid.data.connect() as conn:
            ids = [
                str(r)
                for r in conn.execute(select(tables.subjects.c.id).order_by(tables.subjects.c.id)).scalars()
            ]
        fid.consent.record_many(
            [
                NewEvent(
                    subject_id=sid,
                    kind="consent_given",
                    scope="newsletter",
                    channel="import",
                    policy_version=fid.policy.version,
                )
                for sid in ids[::3]
            ]
        )
        _, key = create_api_key(fid, "bench", ["decisions", "consent:write"])
    return key, ids


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", default="8,16,32", help="wrk connection counts, comma-separated")
    ap.add_argument("--subjects", type=int, default=10000)
    ap.add_argument("--scenarios", default="baseline,decide,decide-hot,consent,batch")
    args = ap.parse_args()

    if shutil.which("wrk") is None:
        print(
            "wrk is missing: this benchmark drives the server with wrk. Install it with\n"
            "    apt-get install -y wrk\n"
            "and run again.",
            file=sys.stderr,
        )
        return 2
    conns = [int(c) for c in args.connections.split(",")]
    wanted = args.scenarios.split(",")
    cores = os.cpu_count()
    print(f"machine: {cores} cores; server: uvicorn, {args.workers} worker(s), no access log; wrk: 1 thread")

    with tempfile.TemporaryDirectory(prefix="fiduciary-bench-api-") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        key, ids = setup(tmp, args.subjects)
        took = time.perf_counter() - t0
        print(f"setup: {len(ids)} subjects, policy {POLICY.relative_to(ROOT)} ({took:.1f} s)")

        scripts: dict[str, tuple[Path, str]] = {}
        scripts["baseline"] = (lua_script(tmp / "ping.lua", None, [("GET", "/ping", None)]), "/ping")
        decide = [
            (
                "POST",
                "/api/v1/decisions",
                json.dumps({"subject_id": sid, "purpose": p, "categories": ["user.contact.email"]}),
            )
            for p in PURPOSES
            for sid in ids
        ]
        scripts["decide"] = (lua_script(tmp / "decide.lua", key, decide), "/api/v1/decisions")
        hot = [
            (
                "POST",
                "/api/v1/decisions",
                json.dumps({"subject_id": sid, "purpose": p, "categories": ["user.contact.email"]}),
            )
            for p in PURPOSES
            for sid in ids[:100]
        ]
        scripts["decide-hot"] = (lua_script(tmp / "decide-hot.lua", key, hot), "/api/v1/decisions")
        consent = [
            (
                "POST",
                f"/api/v1/subjects/{sid}/consent/{verb}",
                json.dumps({"purpose": "newsletter", "channel": "web_form"}),
            )
            for verb in ("give", "withdraw")
            for sid in ids
        ]
        scripts["consent"] = (lua_script(tmp / "consent.lua", key, consent), "/api/v1/subjects")
        batch = []
        for start in range(0, len(ids), 100):
            items = [
                {"subject_id": sid, "purpose": PURPOSES[n % len(PURPOSES)]}
                for n, sid in enumerate(ids[start : start + 100])
            ]
            batch.append(("POST", "/api/v1/decisions/batch", json.dumps({"items": items})))
        scripts["batch"] = (lua_script(tmp / "batch.lua", key, batch), "/api/v1/decisions/batch")

        (tmp / "bare").mkdir()
        (tmp / "bare" / "bare_app.py").write_text(BARE_APP, encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        results: list[tuple[str, int, dict[str, float]]] = []
        log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
        try:
            if "baseline" in wanted:
                port = free_port()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(tmp / "bare"),
                     "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
                     "--no-access-log", "--log-level", "warning"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
                try:
                    base = f"http://127.0.0.1:{port}"
                    wait_up(base + "/ping", proc)
                    run_wrk(base + "/ping", scripts["baseline"][0], 8, 2)  # warm-up
                    for c in conns:
                        results.append(
                            ("baseline", c, run_wrk(base + "/ping", scripts["baseline"][0], c, args.duration))
                        )
                finally:
                    stop(proc)

            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "fiduciary.cli_web", "serve", "--policy", str(POLICY),
                 "--data-dir", str(tmp / "data"), "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(args.workers), "--no-access-log"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                wait_up(base + "/healthz", proc)
                for name in ("decide", "decide-hot", "consent", "batch"):
                    if name not in wanted:
                        continue
                    script, path = scripts[name]
                    run_wrk(base + path, script, 8, 2)  # warm-up: caches, connections
                    for c in conns:
                        results.append((name, c, run_wrk(base + path, script, c, args.duration)))
            finally:
                stop(proc)
        finally:
            log.close()
        server_log = (tmp / "server.log").read_text(errors="replace")
        tracebacks = server_log.count("Traceback")

    print()
    print(
        f"{'scenario':<10} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'non-2xx':>8}"
    )
    for name, c, r in results:
        lat = f"{r['p50']:>8.2f} {r['p90']:>8.2f} {r['p99']:>8.2f}"
        print(f"{name:<11} {c:>5} {r['rps']:>9,.0f} {lat} {r['non2xx']:>8.0f}")
    print()
    for name in ("decide", "decide-hot", "consent"):
        met = [
            c for n, c, r in results if n == name and r["rps"] >= 2000 and r["p99"] <= 20 and r["non2xx"] == 0
        ]
        if any(n == name for n, _, _ in results):
            verdict = f"met at {', '.join(map(str, met))} connections" if met else "NOT met"
            print(f"target {name} >= 2,000 req/s with p99 <= 20 ms: {verdict}")
    if tracebacks:
        print(f"server log: {tracebacks} traceback(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
