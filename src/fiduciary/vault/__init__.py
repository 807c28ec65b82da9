"""The vault room: envelope encryption, per-subject keys, blind indexes, crypto-shredding.

``Vault`` (vault.py) stores subjects, identities and attributes; ``crypto`` holds the
AES-GCM envelope; ``normalize`` the identity normalization and blind indexes; ``keyring``
every secret key.
"""

from fiduciary.vault.crypto import DecryptionError
from fiduciary.vault.keyring import Keyring, KeyringError
from fiduciary.vault.normalize import IdentityError
from fiduciary.vault.vault import (
    AuditLog,
    DataKeyDestroyed,
    DuplicateIdentity,
    ImportFailed,
    MissingMandatory,
    NewSubject,
    StoredValue,
    SubjectErased,
    SubjectRow,
    UnknownSubject,
    Vault,
    VaultError,
    VaultInputError,
)

__all__ = [
    "AuditLog",
    "DataKeyDestroyed",
    "DecryptionError",
    "DuplicateIdentity",
    "IdentityError",
    "ImportFailed",
    "Keyring",
    "KeyringError",
    "MissingMandatory",
    "NewSubject",
    "StoredValue",
    "SubjectErased",
    "SubjectRow",
    "UnknownSubject",
    "Vault",
    "VaultError",
    "VaultInputError",
]
