"""Starting `fiduciary ...` as a server the way a person does: a subprocess on a free
port, waited for on /healthz, stopped with Ctrl+C (SIGINT)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(
    command: list[str],
    port: int,
    *,
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
    within: float = 60,
) -> Iterator[str]:
    """Runs ``fiduciary <command>`` (which must listen on ``port``) until the block ends;
    yields its base URL once /healthz answers. Its output goes to ``log``."""
    out = log.open("w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fiduciary.cli", *command],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + within
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out.flush()
                raise AssertionError(f"`fiduciary {command[0]}` did not serve:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        out.close()
