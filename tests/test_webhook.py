"""The webhook connector against a real HTTP server on 127.0.0.1 (http.server in a
thread): signatures, idempotency keys, retries with backoff; and the manual connector."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fiduciary.connectors import connector_for, registered
from fiduciary.connectors.manual import DONE, PENDING, ManualConnector, ManualTask
from fiduciary.connectors.webhook import (
    SIGNATURE_HEADER,
    WebhookConnector,
    WebhookError,
    canonical_json,
    sign,
    verify_signature,
)

SECRET = b"shared-secret-with-the-processor"


class Processor:
    """A processor's endpoint: fails ``failures`` times with ``status``, then accepts."""

    def __init__(self, failures: int = 0, status: int = 503) -> None:
        self.failures = failures
        self.status = status
        self.calls: list[dict[str, Any]] = []
        processor = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                processor.calls.append(
                    {
                        "body": body,
                        "signature_ok": verify_signature(SECRET, self.headers.get(SIGNATURE_HEADER), body),
                        "idempotency_key": self.headers.get("Idempotency-Key"),
                        "event": self.headers.get("Fiduciary-Event"),
                        "path": self.path,
                    }
                )
                if not processor.calls[-1]["signature_ok"]:
                    self._reply(401, {"error": "bad signature"})
                elif len(processor.calls) <= processor.failures:
                    self._reply(processor.status, {"error": "try later"})
                else:
                    self._reply(200, {"received": json.loads(body)["request_id"]})

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/fiduciary"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Processor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def sleeps() -> list[float]:
    return []


def _connector(url: str, sleeps: list[float], secret: bytes = SECRET, **kw: Any) -> WebhookConnector:
    return WebhookConnector(url, secret, jitter=0.0, backoff=0.25, sleep=sleeps.append, timeout=5, **kw)


def test_fails_twice_then_succeeds_with_backoff_and_one_idempotency_key(sleeps: list[float]) -> None:
    with Processor(failures=2) as proc:
        hook = _connector(proc.url, sleeps)
        result = hook.notify(
            request_id="req-1",
            request_type="erase",
            identities={"email": "ada@example.com"},
            idempotency_key="job-7:step-3",
        )
    assert result.status == 200 and result.attempts == 3
    assert result.json() == {"received": "req-1"}
    assert len(proc.calls) == 3
    assert all(c["signature_ok"] for c in proc.calls)
    assert {c["idempotency_key"] for c in proc.calls} == {"job-7:step-3"}
    assert len({c["body"] for c in proc.calls}) == 1  # the same bytes every attempt
    assert proc.calls[0]["event"] == "erase"
    assert json.loads(proc.calls[0]["body"])["identities"] == {"email": "ada@example.com"}
    assert sleeps == [0.25, 0.5]  # exponential backoff between attempts


def test_gives_up_after_max_attempts(sleeps: list[float]) -> None:
    with Processor(failures=10, status=502) as proc:
        hook = _connector(proc.url, sleeps, max_attempts=4, max_backoff=0.6)
        with pytest.raises(WebhookError, match="failed after 4 attempts: HTTP 502") as err:
            hook.send({"request_id": "r"}, idempotency_key="k")
    assert err.value.attempts == 4 and err.value.status == 502
    assert len(proc.calls) == 4
    assert sleeps == [0.25, 0.5, 0.6]  # capped


def test_client_error_is_not_retried(sleeps: list[float]) -> None:
    with Processor() as proc:
        hook = _connector(proc.url, sleeps, secret=b"not-the-shared-secret")
        with pytest.raises(WebhookError, match="refused the call: HTTP 401") as err:
            hook.send({"request_id": "r"}, idempotency_key="k")
    assert err.value.attempts == 1 and len(proc.calls) == 1 and sleeps == []


def test_too_many_requests_is_retried(sleeps: list[float]) -> None:
    with Processor(failures=1, status=429) as proc:
        result = _connector(proc.url, sleeps).send({"request_id": "r"}, idempotency_key="k")
    assert result.attempts == 2


def test_connection_errors_are_retried(sleeps: list[float]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = _connector(f"http://127.0.0.1:{port}/", sleeps, max_attempts=3)
    with pytest.raises(WebhookError, match="failed after 3 attempts") as err:
        hook.send({"request_id": "r"}, idempotency_key="k")
    assert err.value.status is None and sleeps == [0.25, 0.5]


def test_signature_scheme() -> None:
    body = canonical_json({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'.encode()
    header = sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body + b" ", now=1_700_000_100)  # tampered
    assert not verify_signature(b"other", header, body, now=1_700_000_100)
    assert not verify_signature(SECRET, header, body, now=1_700_000_000 + 301)  # replayed late
    assert not verify_signature(SECRET, None, body)
    assert not verify_signature(SECRET, "garbage", body)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookConnector("ftp://x", SECRET)
    with pytest.raises(ValueError, match="secret"):
        WebhookConnector("https://x", b"")
    with pytest.raises(ValueError, match="idempotency"):
        WebhookConnector("https://x", SECRET).send({}, idempotency_key="")


def test_registry() -> None:
    assert {"sql", "webhook", "manual"} <= set(registered())
    hook = connector_for("https://processor.example/hook", secret="s")
    assert isinstance(hook, WebhookConnector)
    task_conn = connector_for({"type": "manual", "name": "paper-archive"})
    assert isinstance(task_conn, ManualConnector)
    with pytest.raises(ValueError, match="bad options"):
        connector_for({"type": "webhook", "url": "https://x"})  # no secret


@pytest.fixture
def archive() -> Iterator[ManualConnector]:
    yield ManualConnector("paper-archive", "Shred the signed contract in cabinet B.")


def test_manual_task_is_pending_until_a_person_confirms(archive: ManualConnector) -> None:
    at = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    task = archive.task("req-9", "erase", at=at)
    assert task.status == PENDING and not task.done
    assert task.id == "paper-archive:req-9:erase"
    assert archive.task("req-9", "erase", at=at) == task  # a re-run step: the same task
    stored = json.loads(json.dumps(task.to_dict()))
    assert ManualTask.from_dict(stored) == task
    done = archive.confirm(task, by="privacy@putio", note="shredded", at=at)
    assert done.status == DONE and done.confirmed_by == "privacy@putio" and done.note == "shredded"
    assert archive.confirm(done, by="someone else") == done  # idempotent
    with pytest.raises(ValueError, match="confirmed by someone"):
        archive.confirm(task, by="")
    with pytest.raises(ValueError, match="status"):
        ManualTask.from_dict({**stored, "status": "maybe"})
