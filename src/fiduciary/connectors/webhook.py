"""The webhook connector: tell a processor, over HTTP, what a request needs of it.

Each call POSTs one JSON document (PUT-11: tell Intercom to stop; PLA-5: tell the
payment processor; LAW-5: tell every recipient of an erasure or rectification) with:

``Content-Type: application/json``
    The body is canonical JSON (sorted keys, no spaces), so every attempt sends the same
    bytes.
``Fiduciary-Signature: t=<unix seconds>,v1=<hex>``
    ``v1`` is HMAC-SHA256 under the shared secret of ``"<t>." + body`` (the timestamp,
    a dot, then the raw body bytes). A receiver recomputes it, compares in constant time
    and refuses a ``t`` older than its tolerance (five minutes by default), which stops
    replays. :func:`verify_signature` does exactly that.
``Idempotency-Key: <key>``
    The same key on every attempt (and on a re-run of the job step), so the processor
    can drop a repeat.
``Fiduciary-Event: <event>``
    What happened (``erasure``, ``rectification``, ``opt_out`` ...), also in the body.

Failures: connection errors, timeouts, 5xx, 408 and 429 are retried with exponential
backoff (``backoff * 2**(attempt-1)``, capped at ``max_backoff``, with up to ``jitter``
of it added at random, a ``Retry-After`` header honoured within the cap), at most
``max_attempts`` attempts in all; any other 4xx fails at once. Uses only the standard
library (urllib).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fiduciary.connectors import Connector, ConnectorError, register

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookConnector",
    "WebhookError",
    "WebhookResult",
    "canonical_json",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "Fiduciary-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "Fiduciary-Event"
_RETRY_STATUS = frozenset({408, 429})


class WebhookError(ConnectorError):
    """The processor did not accept the call (after the retries allowed)."""

    def __init__(self, message: str, *, status: int | None, attempts: int) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class WebhookResult:
    status: int
    attempts: int
    body: bytes
    idempotency_key: str

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def canonical_json(payload: Any) -> bytes:
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode()


def sign(secret: bytes | str, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes | str,
    header: str | None,
    body: bytes,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` under ``secret`` and is at most ``tolerance``
    seconds old (for receivers, and for tests)."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        ts = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    expected = sign(secret, body, ts).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@register("webhook")
class WebhookConnector(Connector):
    """POSTs signed JSON to ``url``; see the module doc for the scheme."""

    def __init__(
        self,
        url: str,
        secret: bytes | str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        jitter: float = 0.1,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s)://..., not {url!r}")
        if not secret:
            raise ValueError("a webhook needs a shared secret to sign its payloads")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.url = url
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.jitter = jitter
        self.headers = dict(headers or {})
        self._sleep = sleep
        self._clock = clock

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = float(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
        if retry_after and retry_after.strip().isdigit():
            base = min(self.max_backoff, max(base, float(retry_after.strip())))
        return base + (random.uniform(0, self.jitter * base) if self.jitter else 0.0)

    def send(
        self, payload: Mapping[str, Any], *, idempotency_key: str, event: str | None = None
    ) -> WebhookResult:
        """POST ``payload``; retried as the module doc says. Raises :class:`WebhookError`."""
        if not idempotency_key:
            raise ValueError("an idempotency key is required (a job id and step, say)")
        body = canonical_json({**payload, "event": event} if event else dict(payload))
        last_status: int | None = None
        last_error = ""
        for attempt in range(1, self.max_attempts + 1):
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "fiduciary-webhook/1",
                IDEMPOTENCY_HEADER: idempotency_key,
                SIGNATURE_HEADER: sign(self.secret, body, int(self._clock())),
                **self.headers,
            }
            if event:
                headers[EVENT_HEADER] = event
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            retry_after: str | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return WebhookResult(response.status, attempt, response.read(), idempotency_key)
            except urllib.error.HTTPError as exc:
                last_status = exc.code
                last_error = f"HTTP {exc.code} {exc.reason}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                exc.close()
                if exc.code < 500 and exc.code not in _RETRY_STATUS:
                    raise WebhookError(
                        f"webhook {self.url} refused the call: {last_error}",
                        status=exc.code,
                        attempts=attempt,
                    ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last_status = None
                reason = getattr(exc, "reason", exc)
                last_error = f"{type(exc).__name__}: {reason}"
            if attempt < self.max_attempts:
                self._sleep(self.delay(attempt, retry_after))
        raise WebhookError(
            f"webhook {self.url} failed after {self.max_attempts} attempts: {last_error}",
            status=last_status,
            attempts=self.max_attempts,
        )

    def notify(
        self,
        *,
        request_id: str,
        request_type: str,
        identities: Mapping[str, Any],
        idempotency_key: str,
        detail: Mapping[str, Any] | None = None,
    ) -> WebhookResult:
        """Tell the processor of a rights request it must carry out (LAW-5): the request
        type and the identities it knows the person by."""
        payload = {
            "request_id": request_id,
            "request_type": request_type,
            "identities": dict(identities),
            "detail": dict(detail or {}),
        }
        return self.send(payload, idempotency_key=idempotency_key, event=request_type)
