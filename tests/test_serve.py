"""`fiduciary serve` as an operator starts it (a subprocess on a free port)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILELOCKER = ROOT / "examples" / "filelocker" / "policy.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serving(tmp_path: Path, *options: str) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIDUCIARY_")}
    log = (tmp_path / f"serve-{port}.log").open("w+b")
    data = tmp_path / "data"
    command = ["serve", "--policy", str(FILELOCKER), "--port", str(port), "--data-dir", str(data)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fiduciary.cli", *command, "--retention-every", "off", *options],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"serve did not start:\n{log.read().decode()}")
            time.sleep(0.2)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        log.close()


def _cookie_behind_tls_proxy(base: str) -> str:
    """The privacy center's cookie for a visitor who reached the proxy over HTTPS."""
    req = urllib.request.Request(f"{base}/", headers={"X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.headers["set-cookie"])


def test_forwarded_headers_are_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    """Behind a TLS-terminating proxy the center's cookie must be Secure; a server that
    trusts no proxy ignores X-Forwarded-* (anyone could send them), so it is not."""
    with _serving(tmp_path, "--trusted-proxies", "127.0.0.1") as base:
        assert "; Secure" in _cookie_behind_tls_proxy(base)
    with _serving(tmp_path) as base:
        cookie = _cookie_behind_tls_proxy(base)
        assert cookie.startswith("fid_center=") and "Secure" not in cookie
