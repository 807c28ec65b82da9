"""Envelope encryption: AES-256-GCM under per-subject data keys, wrapped by the keyring's KEKs.

Every value is ``nonce (12 random bytes) || ciphertext || tag (16 bytes)``. The associated
data (AAD) binds a ciphertext to the row it belongs to: a purpose tag, the subject id, and
the category (attributes) or identity kind (identities). A ciphertext copied to another
subject or another category fails authentication instead of being read as that row's
value. A wrapped data key is bound the same way to its subject and to the KEK id.

Random 96-bit nonces are safe here: a data key encrypts one subject's values only (a few
to a few thousand), far below the 2^32 messages per key where random nonces get risky.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fiduciary.vault.keyring import Keyring

NONCE_SIZE = 12
KEY_SIZE = 32
TAG_SIZE = 16

# Purpose tags keep the three kinds of ciphertext apart even if ids and names collide.
_ATTRIBUTE = b"fiduciary/attribute\x00"
_IDENTITY = b"fiduciary/identity\x00"
_DATA_KEY = b"fiduciary/data-key\x00"

# Built once: json.dumps with non-default options builds a new encoder on every call,
# which is a third of the cost of encrypting a short value.
_encode_json: Callable[[object], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


class DecryptionError(Exception):
    """A ciphertext did not authenticate: wrong key, altered bytes, or moved to another row."""


class ValueEncodingError(ValueError):
    """A value that cannot be stored (not JSON-serialisable)."""


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def attribute_aad(subject_id: str, category: str) -> bytes:
    return _ATTRIBUTE + f"{subject_id}\x00{category}".encode()


def identity_aad(subject_id: str, kind: str) -> bytes:
    return _IDENTITY + f"{subject_id}\x00{kind}".encode()


def data_key_aad(subject_id: str, kek_id: str) -> bytes:
    return _DATA_KEY + f"{subject_id}\x00{kek_id}".encode()


_OWNER_KEY = b"fiduciary/owner-key\x00"


def owner_key_aad(owner_id: str, kek_id: str) -> bytes:
    """AAD of a request's or a job's data key (key store table request_keys): one scheme for
    both, so that key rotation can re-wrap them all."""
    return _OWNER_KEY + f"{owner_id}\x00{kek_id}".encode()


def _encode(value: object) -> bytes:
    if type(value) is str:  # most values: the C string escaper alone, same output
        return encode_basestring(value).encode()
    return _encode_json(value).encode()


def encode_value(value: object, what: str = "value") -> bytes:
    """JSON bytes of a value (str, numbers, booleans, None, lists, dicts); ``what`` names
    it in the error."""
    try:
        return _encode(value)
    except (TypeError, ValueError) as exc:
        raise ValueEncodingError(f"{what}: cannot be stored ({exc})") from None


def decode_value(data: bytes) -> object:
    return json.loads(data)


def seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + aead.encrypt(nonce, plaintext, aad)


def unseal(aead: AESGCM, blob: bytes, aad: bytes, what: str) -> bytes:
    if len(blob) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionError(f"{what}: ciphertext too short ({len(blob)} bytes)")
    try:
        return aead.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag:
        raise DecryptionError(
            f"{what}: does not decrypt (wrong key, altered, or copied from another row)"
        ) from None


class SubjectCipher:
    """Encrypts and decrypts one subject's values under its data key."""

    __slots__ = ("_aead", "subject_id")

    def __init__(self, subject_id: str, data_key: bytes) -> None:
        self.subject_id = subject_id
        self._aead = AESGCM(data_key)

    def seal_all(
        self, identities: Sequence[tuple[str, str]], attributes: Mapping[str, object]
    ) -> tuple[list[bytes], list[bytes]]:
        """Ciphertexts of (kind, normalized) identities and of attributes, in order: the bulk
        path, with one urandom read for all the nonces of the subject."""
        count = len(identities) + len(attributes)
        nonces = os.urandom(NONCE_SIZE * count)
        encrypt = self._aead.encrypt
        sid = self.subject_id
        idents: list[bytes] = []
        pos = 0
        for kind, normalized in identities:
            nonce = nonces[pos : pos + NONCE_SIZE]
            pos += NONCE_SIZE
            idents.append(nonce + encrypt(nonce, normalized.encode(), identity_aad(sid, kind)))
        attrs: list[bytes] = []
        prefix = attribute_aad(sid, "")  # + category: the same bytes as attribute_aad()
        for category, value in attributes.items():
            try:
                plain = _encode(value)
            except (TypeError, ValueError) as exc:
                raise ValueEncodingError(f"attribute {category}: cannot be stored ({exc})") from None
            nonce = nonces[pos : pos + NONCE_SIZE]
            pos += NONCE_SIZE
            attrs.append(nonce + encrypt(nonce, plain, prefix + category.encode()))
        return idents, attrs

    def seal_attribute(self, category: str, value: object) -> bytes:
        plain = encode_value(value, f"attribute {category}")
        return seal(self._aead, plain, attribute_aad(self.subject_id, category))

    def open_attribute(self, category: str, blob: bytes) -> object:
        aad = attribute_aad(self.subject_id, category)
        return decode_value(unseal(self._aead, blob, aad, f"attribute {category}"))

    def seal_identity(self, kind: str, normalized: str) -> bytes:
        return seal(self._aead, normalized.encode(), identity_aad(self.subject_id, kind))

    def open_identity(self, kind: str, blob: bytes) -> str:
        return unseal(self._aead, blob, identity_aad(self.subject_id, kind), f"identity {kind}").decode()


class KeyWrapper:
    """Wraps and unwraps data keys with the keyring's key-encryption keys (KEKs)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._aeads: dict[str, AESGCM] = {}

    def _aead(self, kek_id: str) -> AESGCM:
        aead = self._aeads.get(kek_id)
        if aead is None:
            aead = self._aeads[kek_id] = AESGCM(self.keyring.kek_by_id(kek_id))
        return aead

    @property
    def active(self) -> str:
        return self.keyring.active_kek

    def wrap(self, subject_id: str, data_key: bytes) -> bytes:
        """The data key wrapped under the active KEK (whose id is ``self.active``)."""
        kek_id = self.keyring.active_kek
        return seal(self._aead(kek_id), data_key, data_key_aad(subject_id, kek_id))

    def unwrap(self, subject_id: str, kek_id: str, wrapped: bytes) -> bytes:
        aad = data_key_aad(subject_id, kek_id)
        return unseal(self._aead(kek_id), wrapped, aad, f"data key of subject {subject_id}")


__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "DecryptionError",
    "KeyWrapper",
    "SubjectCipher",
    "ValueEncodingError",
    "attribute_aad",
    "data_key_aad",
    "decode_value",
    "encode_value",
    "identity_aad",
    "new_data_key",
    "owner_key_aad",
    "seal",
    "unseal",
]
