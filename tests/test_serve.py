"""`fiduciary serve` as an operator starts it (a subprocess on a free port)."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.serving_support import free_port, serving

ROOT = Path(__file__).resolve().parents[1]
FILELOCKER = ROOT / "examples" / "filelocker" / "policy.yaml"


@contextmanager
def _serve(tmp_path: Path, *options: str) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIDUCIARY_")}
    data = tmp_path / "data"
    command = ["serve", "--policy", str(FILELOCKER), "--port", str(port), "--data-dir", str(data)]
    command += ["--retention-every", "off", *options]
    with serving(command, port, cwd=tmp_path, log=tmp_path / f"serve-{port}.log", env=env) as base:
        yield base


def _cookie_behind_tls_proxy(base: str) -> str:
    """The privacy center's cookie for a visitor who reached the proxy over HTTPS."""
    req = urllib.request.Request(f"{base}/", headers={"X-Forwarded-Proto": "https"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.headers["set-cookie"])


def test_forwarded_headers_are_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    """LAW-8 (a consent proof's address is the visitor's, not the proxy's): behind a
    TLS-terminating proxy the center's cookie must be Secure; a server that trusts no proxy
    ignores X-Forwarded-* (anyone could send them), so it is not."""
    with _serve(tmp_path, "--trusted-proxies", "127.0.0.1") as base:
        assert "; Secure" in _cookie_behind_tls_proxy(base)
    with _serve(tmp_path) as base:
        cookie = _cookie_behind_tls_proxy(base)
        assert cookie.startswith("fid_center=") and "Secure" not in cookie
