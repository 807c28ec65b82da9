"""The fast path (fiduciary.web.fastpath) answers exactly as the FastAPI routes it stands in
front of: the same calls, good and bad, sent to a server with it and to one without give
the same status, content type and body, and leave the same consent events and audit
entries behind. And it does serve the good calls itself (counted), handing the rest over.
Among the calls: GPC recorded as an opt-out of sale where the law makes it one (LAW-12),
and consent given with the notice text, language and IP kept as its proof (LAW-8).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fiduciary.config import Settings
from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy
from fiduciary.mail import OutboxMailer
from fiduciary.store import tables as T
from fiduciary.vault.keyring import Keyring
from fiduciary.web import create_app
from fiduciary.web.auth import create_api_key, revoke_api_key
from fiduciary.web.fastpath import MAX_BODY, FastPath

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

DATAPLATFORM = example_policy("dataplatform")
V1 = "/api/v1"

# (name, path with {ca}/{eu} for the subjects, body (JSON value, or bytes sent as is),
# headers: "key" is the API key to use (decide, consent, none, revoked, admin))
CASES: list[tuple[str, str, Any, dict[str, str]]] = [
    ("decide", "/decisions", {"subject_id": "{eu}", "purpose": "newsletter"}, {}),
    (
        "decide categories",
        "/decisions",
        {"subject_id": "{eu}", "purpose": "newsletter", "categories": ["user.contact.email"]},
        {},
    ),
    ("decide unknown purpose", "/decisions", {"subject_id": "{eu}", "purpose": "no_such_purpose"}, {}),
    (
        "decide GPC outside its law",
        "/decisions",
        {"subject_id": "{eu}", "purpose": "{sale}"},
        {"Sec-GPC": "1"},
    ),
    (
        "decide GPC records an opt-out",
        "/decisions",
        {"subject_id": "{ca}", "purpose": "{sale}"},
        {"Sec-GPC": "1"},
    ),
    ("decide after the opt-out", "/decisions", {"subject_id": "{ca}", "purpose": "{sale}"}, {}),
    ("decide unknown subject", "/decisions", {"subject_id": "0123456789abcdef", "purpose": "newsletter"}, {}),
    ("decide bad subject id", "/decisions", {"subject_id": "not an id!", "purpose": "newsletter"}, {}),
    ("decide wrong type", "/decisions", {"subject_id": "{eu}", "purpose": 5}, {}),
    ("decide unknown field", "/decisions", {"subject_id": "{eu}", "purpose": "newsletter", "x": 1}, {}),
    ("decide missing field", "/decisions", {"purpose": "newsletter"}, {}),
    ("decide not JSON", "/decisions", b'{"subject_id": ', {}),
    ("decide a list", "/decisions", [1, 2], {}),
    ("decide no key", "/decisions", {"subject_id": "{eu}", "purpose": "newsletter"}, {"key": "none"}),
    ("decide revoked key", "/decisions", {"subject_id": "{eu}", "purpose": "newsletter"}, {"key": "revoked"}),
    ("decide wrong scope", "/decisions", {"subject_id": "{eu}", "purpose": "newsletter"}, {"key": "consent"}),
    ("decide admin key", "/decisions", {"subject_id": "{eu}", "purpose": "newsletter"}, {"key": "admin"}),
    (
        "decide text body",
        "/decisions",
        b'{"subject_id": "x", "purpose": "newsletter"}',
        {"Content-Type": "text/plain"},
    ),
    (
        "give",
        "/subjects/{eu}/consent/give",
        {"purpose": "newsletter", "channel": "web_form"},
        {"key": "consent"},
    ),
    (
        "give with proof",
        "/subjects/{eu}/consent/give",
        {
            "purpose": "newsletter",
            "notice_text": "Our newsletter, monthly.",
            "language": "de",
            "ip": "192.0.2.77",
        },
        {"key": "consent"},
    ),
    ("decide sees the consent", "/decisions", {"subject_id": "{eu}", "purpose": "newsletter"}, {}),
    ("withdraw", "/subjects/{eu}/consent/withdraw", {"purpose": "newsletter"}, {"key": "consent"}),
    ("object to all", "/subjects/{eu}/consent/object", {}, {"key": "consent"}),
    (
        "object to a consent purpose",
        "/subjects/{eu}/consent/object",
        {"purpose": "newsletter"},
        {"key": "consent"},
    ),
    ("restrict", "/subjects/{ca}/consent/restrict", {"channel": "email"}, {"key": "consent"}),
    ("opt out of sale", "/subjects/{eu}/consent/opt-out-of-sale", {}, {"key": "consent"}),
    (
        "setting refused",
        "/subjects/{eu}/consent/settings",
        {"name": "visibility:nope", "value": "public"},
        {"key": "consent"},
    ),
    (
        "give unknown purpose",
        "/subjects/{eu}/consent/give",
        {"purpose": "no_such_purpose"},
        {"key": "consent"},
    ),
    (
        "give unknown subject",
        "/subjects/0123456789abcdef/consent/give",
        {"purpose": "newsletter"},
        {"key": "consent"},
    ),
    (
        "give bad channel",
        "/subjects/{eu}/consent/give",
        {"purpose": "newsletter", "channel": "pigeon"},
        {"key": "consent"},
    ),
    (
        "give bad ip",
        "/subjects/{eu}/consent/give",
        {"purpose": "newsletter", "ip": "not-an-ip"},
        {"key": "consent"},
    ),
    ("give bad path id", "/subjects/bad%20id!/consent/give", {"purpose": "newsletter"}, {"key": "consent"}),
    ("give no scope", "/subjects/{eu}/consent/give", {"purpose": "newsletter"}, {"key": "decide"}),
    ("unknown choice", "/subjects/{eu}/consent/frobnicate", {"purpose": "newsletter"}, {"key": "consent"}),
    (
        "give too large",
        "/subjects/{eu}/consent/give",
        {"purpose": "newsletter", "notice_text": "x" * MAX_BODY},
        {"key": "consent"},
    ),
]


class Run:
    def __init__(
        self, fid: Fiduciary, client: TestClient, keys: dict[str, str], subjects: dict[str, str]
    ) -> None:
        self.fid = fid
        self.client = client
        self.keys = keys
        self.subjects = subjects

    def fill(self, text: str) -> str:
        for alias, value in self.subjects.items():
            text = text.replace("{" + alias + "}", value)
        return text

    def send(self, path: str, body: Any, headers: dict[str, str]) -> tuple[int, str, Any]:
        h = {k: v for k, v in headers.items() if k != "key"}
        key = self.keys[headers.get("key", "decide")]
        if key:
            h["Authorization"] = f"Bearer {key}"
        if isinstance(body, bytes):
            h.setdefault("Content-Type", "application/json")
            r = self.client.post(V1 + self.fill(path), content=body, headers=h)
        else:
            r = self.client.post(
                V1 + self.fill(path),
                content=self.fill(json.dumps(body)),
                headers={"Content-Type": "application/json", **h},
            )
        return r.status_code, r.headers.get("content-type", ""), self.unfill(r.json())

    def unfill(self, value: Any) -> Any:
        text = json.dumps(value, sort_keys=True)
        for alias, sid in self.subjects.items():
            text = text.replace(sid, "{" + alias + "}")
        return json.loads(text)

    def stored(self) -> tuple[list[Any], list[Any]]:
        ce, al = T.consent_events, T.audit_log
        with self.fid.data.connect() as conn:
            events = conn.execute(
                select(ce.c.subject_id, ce.c.kind, ce.c.scope, ce.c.value, ce.c.channel, ce.c.method,
                       ce.c.notice_hash, ce.c.language, ce.c.ip, ce.c.actor).order_by(ce.c.id)
            ).all()  # fmt: skip
            audit = conn.execute(
                select(al.c.action, al.c.purpose, al.c.result, al.c.detail).order_by(al.c.seq)
            ).all()
        stored_events = [self.unfill([str(v) for v in row]) for row in events]
        return stored_events, [self.unfill(list(row)) for row in audit]


def _run(tmp: Path, fastpath: bool) -> Iterator[tuple[Run, FastPath | None]]:
    fid = Fiduciary.open(DATAPLATFORM, data_dir=tmp / "data", keyring=Keyring.generate())
    try:
        app = create_app(
            fid,
            settings=Settings(data_dir=tmp / "data"),
            mailer=OutboxMailer(tmp / "outbox"),
            key_cache_ttl=0,
            fastpath=fastpath,
        )
        keys = {"none": ""}
        subjects: dict[str, str] = {}
        for name, scope in (
            ("decide", "decisions"),
            ("consent", "consent:write"),
            ("admin", "admin"),
            ("revoked", "decisions"),
        ):
            key_id, keys[name] = create_api_key(fid, name, [scope])
            subjects[f"key:{name}"] = key_id  # actors differ by key id only
        revoke_api_key(fid, subjects["key:revoked"])
        with TestClient(app) as client:
            for alias, region in (("eu", "DE"), ("ca", "US-CA")):
                r = client.post(
                    V1 + "/subjects",
                    json={
                        "kind": "user",
                        "identities": {"email": f"{alias}@example.com"},
                        "region": region,
                        "age": 30,
                    },
                    headers={"Authorization": f"Bearer {keys['admin']}"},
                )
                assert r.status_code == 201, r.text
                subjects[alias] = r.json()["subject_id"]
            subjects["sale"] = next(k for k, p in fid.policy.purposes.items() if p.sale)
            yield Run(fid, client, keys, subjects), _fastpath_of(app) if fastpath else None
    finally:
        fid.close()


def _fastpath_of(app: Any) -> FastPath:
    """The FastPath instance in the app's built middleware stack."""
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, FastPath):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, FastPath), "the fast path is not in the app's middleware"
    return layer


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[tuple[Run, FastPath, Run]]:
    fast = _run(tmp_path / "fast", True)
    slow = _run(tmp_path / "slow", False)
    (f, path), (s, _) = next(fast), next(slow)
    assert path is not None
    yield f, path, s
    for gen in (fast, slow):
        gen.close()


def test_every_call_is_answered_the_same_with_and_without_the_fast_path(
    runs: tuple[Run, FastPath, Run],
) -> None:
    fast, path, slow = runs
    for name, url, body, headers in CASES:
        got, want = fast.send(url, body, headers), slow.send(url, body, headers)
        assert got == want, f"{name}: fast path {got} != FastAPI {want}"
    assert fast.stored() == slow.stored()
    # The good calls were the fast path's own; what it cannot answer went to FastAPI.
    assert path.served >= 15
    assert path.handed_over >= 8


def test_the_fast_path_answers_what_it_serves_with_the_routes_own_statuses(
    runs: tuple[Run, FastPath, Run],
) -> None:
    fast, path, _ = runs
    before = path.served
    status, ctype, body = fast.send("/decisions", {"subject_id": "{eu}", "purpose": "newsletter"}, {})
    assert (status, ctype) == (200, "application/json") and body["subject_id"] == "{eu}"
    status, ctype, body = fast.send(
        "/subjects/{eu}/consent/give", {"purpose": "newsletter"}, {"key": "consent"}
    )
    assert (status, ctype) == (201, "application/json") and body["event_id"] > 0
    assert path.served == before + 2
