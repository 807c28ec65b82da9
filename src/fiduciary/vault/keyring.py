"""The keyring: every secret key Fiduciary holds, in one JSON document.

- ``kek``: key-encryption keys by id, and which one is active. They wrap the per-subject
  data keys; rotating adds a key and re-wraps the data keys, never touching the data.
- ``index``: the HMAC key of the blind indexes (finding a subject by email or phone).
- ``audit``: the HMAC key that turns subject ids into audit pseudonyms.
- ``checkpoint``: an Ed25519 private key that signs audit checkpoints; anyone holding the
  public key can verify them.
- ``token``: the HMAC key of unsubscribe and other signed links.

Each role has its own key, so one leaking does not expose the others. The keyring comes
from FIDUCIARY_KEYRING (the JSON itself) or from a file written with mode 0600.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = 1


class KeyringError(Exception):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str, size: int | None = 32) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise KeyringError(f"keyring: {what} is not valid base64") from exc
    if size is not None and len(raw) != size:
        raise KeyringError(f"keyring: {what} must be {size} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class Keyring:
    keks: dict[str, bytes]
    active_kek: str
    index_key: bytes
    audit_key: bytes
    checkpoint_key: bytes  # Ed25519 private key, raw 32 bytes
    token_key: bytes
    source: str = field(default="<memory>", compare=False)

    # -- construction
    @classmethod
    def generate(cls) -> Keyring:
        return cls(
            keks={"k1": secrets.token_bytes(32)},
            active_kek="k1",
            index_key=secrets.token_bytes(32),
            audit_key=secrets.token_bytes(32),
            checkpoint_key=secrets.token_bytes(32),
            token_key=secrets.token_bytes(32),
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> Keyring:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"{source}: keyring is not JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise KeyringError(f"{source}: not a Fiduciary keyring (format {FORMAT} expected)")
        try:
            kek = data["kek"]
            keks = {str(k): _unb64(v, f"kek {k}") for k, v in kek["keys"].items()}
            active = str(kek["active"])
            if active not in keks:
                raise KeyringError(f"{source}: active kek {active!r} is not in the keyring")
            return cls(
                keks=keks,
                active_kek=active,
                index_key=_unb64(data["index"], "index"),
                audit_key=_unb64(data["audit"], "audit"),
                checkpoint_key=_unb64(data["checkpoint"], "checkpoint"),
                token_key=_unb64(data["token"], "token"),
                source=source,
            )
        except KeyError as exc:
            raise KeyringError(f"{source}: keyring lacks {exc.args[0]!r}") from None

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            return cls.from_json(path.read_text(encoding="utf-8"), str(path))
        except FileNotFoundError:
            raise KeyringError(f"no keyring at {path}; create one with `fiduciary keys init`") from None

    @classmethod
    def load_or_create(cls, path: Path) -> Keyring:
        """The keyring at ``path``; a new one is generated and saved when there is none."""
        if path.exists():
            return cls.load(path)
        ring = cls.generate()
        ring.save(path)
        return ring

    # -- persistence
    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": FORMAT,
            "kek": {"active": self.active_kek, "keys": {k: _b64(v) for k, v in self.keks.items()}},
            "index": _b64(self.index_key),
            "audit": _b64(self.audit_key),
            "checkpoint": _b64(self.checkpoint_key),
            "token": _b64(self.token_key),
        }
        return json.dumps(data, indent=2) + "\n"

    def save(self, path: Path) -> None:
        """Write atomically with mode 0600 (the file holds every secret)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.to_json())
        os.replace(tmp, path)

    # -- use
    @property
    def kek(self) -> tuple[str, bytes]:
        return self.active_kek, self.keks[self.active_kek]

    def kek_by_id(self, kek_id: str) -> bytes:
        try:
            return self.keks[kek_id]
        except KeyError:
            raise KeyringError(
                f"key-encryption key {kek_id!r} is not in the keyring ({self.source})"
            ) from None

    def with_new_kek(self) -> Keyring:
        """A keyring with a fresh active KEK; older KEKs stay to unwrap until re-wrapped."""
        n = 1 + max((int(k[1:]) for k in self.keks if k[1:].isdigit()), default=0)
        new_id = f"k{n}"
        return replace(self, keks={**self.keks, new_id: secrets.token_bytes(32)}, active_kek=new_id)

    def without_keks_except(self, keep: set[str]) -> Keyring:
        return replace(self, keks={k: v for k, v in self.keks.items() if k in keep})

    def signing_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.checkpoint_key)

    def verify_key(self) -> Ed25519PublicKey:
        return self.signing_key().public_key()

    def verify_key_id(self) -> str:
        raw = self.verify_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return raw.hex()[:16]
