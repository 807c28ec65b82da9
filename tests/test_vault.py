"""The vault, on SQLite and on the real PostgreSQL (the ``stores`` fixture).

Policy: examples/voiceapi (subject kinds customer / referral_contact / visitor; activity
create_account with mandatory name, email, username, password; PLV-1).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, inspect, select, text, update

from fiduciary.policy import CompiledPolicy, compile_policy, load_policy
from fiduciary.store import make_engine
from fiduciary.store import tables as T
from fiduciary.vault import (
    DataKeyDestroyed,
    DecryptionError,
    DuplicateIdentity,
    IdentityError,
    ImportFailed,
    Keyring,
    KeyringError,
    MissingMandatory,
    NewSubject,
    SubjectErased,
    UnknownSubject,
    Vault,
    VaultInputError,
)
from fiduciary.vault.crypto import KeyWrapper, ValueEncodingError
from fiduciary.vault.normalize import normalize, normalize_email, normalize_phone
from fiduciary.vault.workers import PrepareWorkers, WorkerFailed, WorkerSetup
from tests.conftest import Stores

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2012-03-30"
T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture(scope="module")
def cp() -> CompiledPolicy:
    return compile_policy(load_policy(ROOT / "examples/voiceapi/policy.yaml"))


@pytest.fixture
def ring() -> Keyring:
    return Keyring.generate()


@pytest.fixture
def vault(stores: Stores, ring: Keyring, cp: CompiledPolicy) -> Vault:
    return Vault(stores.data, stores.keys, ring, cp, default_region="US")


def account(name: str, email: str, **more: object) -> dict[str, object]:
    return {
        "user.name": name,
        "user.contact.email": email,
        "user.account.username": email.split("@")[0],
        "user.authorization.password": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        **more,
    }


def make(vault: Vault, name: str, email: str, **more: object) -> str:
    return vault.create_subject(
        "customer",
        "eu",
        identities={"email": email},
        attributes=account(name, email, **more),
        activity="create_account",
        policy_version=VERSION,
        now=T0,
    )


def counts(stores: Stores) -> dict[str, int]:
    """Rows in every table of both stores."""
    out: dict[str, int] = {}
    for engine in (stores.data, stores.keys):
        with engine.connect() as conn:
            for name in inspect(conn).get_table_names():
                out[name] = conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
    return out


def all_cells(engine: Engine) -> Iterator[tuple[str, str, object]]:
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            result = conn.execute(text(f'SELECT * FROM "{name}"'))
            cols = list(result.keys())
            for row in result:
                for col, cell in zip(cols, row, strict=True):
                    yield name, col, cell


# ------------------------------------------------------------------------- round trips
def test_round_trip_with_provenance(vault: Vault, stores: Stores) -> None:
    sid = vault.create_subject(
        "customer",
        "us-ca",
        identities={"email": " Ada.Lovelace@Example.ORG ", "phone_number": "(415) 555-0132"},
        attributes=account(
            "Ada Lovelace",
            "ada.lovelace@example.org",
            **{"user.contact.address": {"street": "12 St James's Sq", "zip": "SW1Y"}},
        ),
        activity="create_account",
        policy_version=VERSION,
        age_status="adult",
        now=T0,
    )
    assert len(sid) == 32 and int(sid, 16) >= 0

    got = vault.read(sid)
    assert got["user.name"].value == "Ada Lovelace"
    assert got["user.contact.address"].value == {"street": "12 St James's Sq", "zip": "SW1Y"}
    assert set(got) == {
        "user.name",
        "user.contact.email",
        "user.account.username",
        "user.authorization.password",
        "user.contact.address",
    }
    v = got["user.name"]
    assert (v.source, v.policy_version, v.activity) == ("subject", VERSION, "create_account")
    assert v.collected_at == T0

    # parent categories select everything below them; unknown ones are refused
    assert set(vault.read(sid, ["user.contact"])) == {"user.contact.email", "user.contact.address"}
    with pytest.raises(VaultInputError, match=r"user\.contact\.emali.*did you mean"):
        vault.read(sid, ["user.contact.emali"])

    assert vault.identities(sid) == {"email": "ada.lovelace@example.org", "phone_number": "+14155550132"}
    row = vault.subject(sid)
    assert (row.kind, row.jurisdiction, row.status, row.age_status) == (
        "customer",
        "us-ca",
        "active",
        "adult",
    )
    assert row.policy_version == VERSION and row.created_at == T0 and row.erased_at is None


def test_write_replaces_and_records_provenance(vault: Vault) -> None:
    sid = make(vault, "Grace Hopper", "grace@example.com")
    later = T0 + timedelta(days=3)
    vault.write(
        sid,
        {"user.name": "Grace B. Hopper", "user.contact.organization": ["US Navy", 1906, None, True]},
        source="third_party",
        policy_version="2013-01-01",
        now=later,
    )
    got = vault.read(sid, ["user.name", "user.contact.organization", "user.contact.email"])
    assert got["user.name"].value == "Grace B. Hopper"
    assert got["user.name"].source == "third_party" and got["user.name"].collected_at == later
    assert got["user.name"].policy_version == "2013-01-01" and got["user.name"].activity is None
    assert got["user.contact.organization"].value == ["US Navy", 1906, None, True]
    # untouched values keep their own provenance
    assert got["user.contact.email"].collected_at == T0
    assert vault.subject(sid).last_activity_at == later


def test_unknown_subject(vault: Vault) -> None:
    for call in (vault.read, vault.identities, vault.subject, vault.erase):
        with pytest.raises(UnknownSubject):
            call("0" * 32)
    with pytest.raises(UnknownSubject):
        vault.write("0" * 32, {"user.name": "x"}, policy_version=VERSION)


# ---------------------------------------------------------------- nothing in clear
def test_nothing_in_clear_in_any_table(vault: Vault, stores: Stores) -> None:
    secrets_ = {
        "email": "zelda.quixote@example.net",
        "name": "Zelda Quixote",
        "phone": "4155550199",
        "phone_e164": "+14155550199",
        "street": "Xylophone Boulevard",
    }
    sid = vault.create_subject(
        "customer",
        "eu",
        identities={"email": "Zelda.Quixote@Example.NET", "phone_number": "415 555 0199"},
        attributes=account(
            secrets_["name"],
            secrets_["email"],
            **{
                "user.contact.address": {"street": secrets_["street"]},
                "user.contact.phone_number": "4155550199",
            },
        ),
        activity="create_account",
        policy_version=VERSION,
    )
    vault.write(sid, {"user.contact.organization": "Zelda Quixote Ltd"}, policy_version=VERSION)
    needles = [s.lower().encode() for s in secrets_.values()] + [b"zelda", b"quixote"]
    scanned = 0
    for engine in (stores.data, stores.keys):
        for table, col, cell in all_cells(engine):
            if isinstance(cell, str):
                blob = cell.lower().encode()
            elif isinstance(cell, bytes | memoryview):
                blob = bytes(cell).lower()
            else:
                continue
            scanned += 1
            for needle in needles:
                assert needle not in blob, f"{needle!r} in clear in {table}.{col}"
    assert scanned > 20  # the scan did see the rows (identities, attributes, keys ...)
    assert vault.read(sid, ["user.name"])["user.name"].value == secrets_["name"]


# ------------------------------------------------------------------- blind index
def test_find_normalizes_email_and_phone(vault: Vault) -> None:
    alice = vault.create_subject(
        "customer",
        "eu",
        identities={"email": "alice@example.com", "phone_number": "+1 415-555-0132", "user_id": " MAabc123 "},
        policy_version=VERSION,
    )
    bob = vault.create_subject(
        "customer", "eu", identities={"email": "bob@example.com"}, policy_version=VERSION
    )
    assert vault.find("email", "Alice@Example.COM") == alice
    assert vault.find("email", "  alice@EXAMPLE.com") == alice
    for spelling in ("(415) 555-0132", "415.555.0132", "+14155550132", "+1 (415) 555 0132"):
        assert vault.find("phone_number", spelling) == alice, spelling
    assert vault.find("user_id", "MAabc123") == alice
    assert vault.find("user_id", "maabc123") is None  # external ids are opaque, case kept
    assert vault.find("email", "carol@example.com") is None
    # the same string under another kind is another index
    assert vault.find("user_id", "alice@example.com") is None

    found = vault.find_many("email", ["ALICE@example.com", "bob@EXAMPLE.com", "nobody@example.com"])
    assert found == {"ALICE@example.com": alice, "bob@EXAMPLE.com": bob}

    with pytest.raises(IdentityError, match="identity email: not a valid email"):
        vault.find("email", "not an email")
    with pytest.raises(VaultInputError, match="identity kind 'passport' is unknown"):
        vault.find("passport", "X123")


def test_phone_needs_a_region_without_country_code() -> None:
    assert normalize_phone("(415) 555-0132", "us") == "+14155550132"
    assert normalize_phone("020 7946 0958", "GB") == "+442079460958"
    with pytest.raises(IdentityError, match=r"phone_number.*no default region"):
        normalize_phone("415 555 0132")
    with pytest.raises(IdentityError, match=r"phone_number.*wrong number of digits"):
        normalize_phone("+1 415 555 01321234")
    with pytest.raises(IdentityError, match="user_id: is empty"):
        normalize("user_id", "   ")
    with pytest.raises(IdentityError, match="email: must be a string"):
        normalize("email", 42)


# Mostly plausible addresses (the fast path), some wild ones (the fallback).
_LOCAL = st.one_of(
    st.from_regex(r"[A-Za-z0-9%+'!#&*/=?^_`{|}~-]{1,40}(\.[A-Za-z0-9_+-]{1,30}){0,2}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._%+'!#&*/=?^`{|}~-]{1,70}", fullmatch=True),
    st.text(alphabet="abcXYZ019.+-_'!#%&*/=?^`{|}~\"@ é", max_size=70),
)
_DOMAIN = st.one_of(
    st.from_regex(r"([A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?\.){0,3}[A-Za-z0-9]{1,12}", fullmatch=True),
    st.from_regex(r"([A-Za-z0-9-]{1,12}\.){0,3}[A-Za-z0-9-]{1,12}", fullmatch=True),
    st.text(alphabet="abcXYZ019.-_ éü", max_size=30),
)


@settings(max_examples=600, deadline=None)
@given(
    local=_LOCAL,
    domain=_DOMAIN,
    tld=st.sampled_from([".com", ".CO.uk", ".org", ".io", "", ".test", ".local", ".xn--p1ai", ".123", ".x"]),
    labels=st.integers(0, 4),
    width=st.integers(1, 64),
)
def test_email_fast_path_agrees_with_email_validator(
    local: str, domain: str, tld: str, labels: int, width: int
) -> None:
    """normalize_email's cached fast path answers exactly as email-validator does, length
    limits included (long domains are built from labels of ``width`` characters)."""
    address = f"{local}@{('b' * width + '.') * labels}{domain}{tld}"
    try:
        expected: str | None = validate_email(address.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = normalize_email(address)
    except IdentityError:
        got = None
    if address.strip():
        assert got == expected, address


# ---------------------------------------------------------------------------- AAD
def test_ciphertext_moved_to_another_row_does_not_decrypt(vault: Vault, stores: Stores) -> None:
    a = make(vault, "Alan Turing", "alan@example.com")
    b = make(vault, "Barbara Liskov", "barbara@example.com")
    at, it = T.attributes.c, T.identities.c

    def cell(conn: Connection, sid: str, category: str) -> bytes:
        q = select(at.value).where(at.subject_id == sid, at.category == category)
        return bytes(conn.execute(q).scalar_one())

    with stores.data.begin() as conn:
        a_name = cell(conn, a, "user.name")
        a_email = cell(conn, a, "user.contact.email")
        # A's name into B's name row (same category, other subject) ...
        conn.execute(
            update(T.attributes).where(at.subject_id == b, at.category == "user.name").values(value=a_name)
        )
        # ... and A's email into A's username row (same subject, other category)
        conn.execute(
            update(T.attributes)
            .where(at.subject_id == a, at.category == "user.account.username")
            .values(value=a_email)
        )
        a_ident = bytes(conn.execute(select(it.value).where(it.subject_id == a)).scalar_one())
        conn.execute(update(T.identities).where(it.subject_id == b).values(value=a_ident))

    with pytest.raises(DecryptionError, match=r"attribute user.name"):
        vault.read(b, ["user.name"])
    with pytest.raises(DecryptionError, match=r"attribute user.account.username"):
        vault.read(a, ["user.account.username"])
    with pytest.raises(DecryptionError, match="identity email"):
        vault.identities(b)
    # the rows that were not touched still read
    assert vault.read(a, ["user.name"])["user.name"].value == "Alan Turing"
    assert vault.read(b, ["user.contact.email"])["user.contact.email"].value == "barbara@example.com"


def test_wrapped_key_moved_to_another_subject_does_not_unwrap(vault: Vault, stores: Stores) -> None:
    a = make(vault, "Ada", "ada@example.com")
    b = make(vault, "Bea", "bea@example.com")
    k = T.subject_keys.c
    with stores.keys.begin() as conn:
        wrapped = conn.execute(select(k.wrapped).where(k.subject_id == a)).scalar_one()
        conn.execute(update(T.subject_keys).where(k.subject_id == b).values(wrapped=wrapped))
    with pytest.raises(DecryptionError, match=f"data key of subject {b}: does not decrypt"):
        vault.read(b)


# ------------------------------------------------------------------------- PLV-1
def test_missing_mandatory_is_refused_and_stores_nothing(vault: Vault, stores: Stores) -> None:
    make(vault, "Existing Person", "existing@example.com")
    before = counts(stores)
    attrs = account("Nora", "nora@example.com")
    del attrs["user.authorization.password"]
    del attrs["user.account.username"]
    with pytest.raises(MissingMandatory) as err:
        vault.create_subject(
            "customer",
            "eu",
            identities={"email": "nora@example.com"},
            attributes=attrs,
            activity="create_account",
            policy_version=VERSION,
        )
    assert err.value.missing == ("user.account.username", "user.authorization.password")
    assert "create_account" in str(err.value) and "user.authorization.password" in str(err.value)
    assert counts(stores) == before
    assert vault.find("email", "nora@example.com") is None

    # a category the activity does not collect is refused too
    with pytest.raises(VaultInputError, match=r"does not collect user.behavior.call_history"):
        vault.create_subject(
            "customer",
            "eu",
            identities={"email": "nora@example.com"},
            attributes={**account("Nora", "nora@example.com"), "user.behavior.call_history": []},
            activity="create_account",
            policy_version=VERSION,
        )
    # an activity for another kind of subject
    with pytest.raises(VaultInputError, match="does not collect data of 'visitor' subjects"):
        vault.create_subject(
            "visitor",
            "eu",
            identities={"email": "nora@example.com"},
            attributes=account("Nora", "nora@example.com"),
            activity="create_account",
            policy_version=VERSION,
        )
    assert counts(stores) == before


def test_write_for_an_activity_counts_what_is_stored(vault: Vault, stores: Stores) -> None:
    sid = vault.create_subject(
        "customer", "eu", identities={"email": "pat@example.com"}, policy_version=VERSION
    )
    before = counts(stores)
    with pytest.raises(MissingMandatory, match=r"enroll.*user.contact.address, user.financial.credit_card"):
        vault.write(sid, {"user.name": "Pat"}, activity="enroll", policy_version=VERSION)
    assert counts(stores) == before
    vault.write(sid, {"user.name": "Pat", "user.contact.address": "1 Road"}, policy_version=VERSION)
    # name and address are stored already: the card completes the activity
    vault.write(
        sid, {"user.financial.credit_card": {"token": "tok_1"}}, activity="enroll", policy_version=VERSION
    )
    assert vault.read(sid, ["user.financial"])["user.financial.credit_card"].activity == "enroll"


def test_bad_input_is_named_and_stores_nothing(vault: Vault, stores: Stores) -> None:
    before = counts(stores)
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"kind": "alien"}, VaultInputError, "subject kind 'alien' is not in the policy"),
        ({"jurisdiction": "mars"}, VaultInputError, "jurisdiction 'mars' is not in the policy"),
        ({"attributes": {"user.contact.emial": "x"}}, VaultInputError, "did you mean 'user.contact.email'"),
        ({"attributes": {"user.name": {1, 2}}}, ValueEncodingError, "attribute user.name: cannot be stored"),
        ({"attributes": {"user.name": float("nan")}}, ValueEncodingError, "attribute user.name"),
        ({"identities": {"email": "no-at-sign"}}, IdentityError, "identity email: not a valid email"),
        ({"identities": {"shoe_size": "42"}}, VaultInputError, "identity kind 'shoe_size' is unknown"),
        ({"activity": "skydive"}, VaultInputError, "activity 'skydive' is not in the policy"),
        ({"source": "rumour"}, VaultInputError, "source 'rumour'"),
        ({"age_status": "old"}, VaultInputError, "age_status 'old'"),
        ({"policy_version": ""}, VaultInputError, "policy_version"),
    ]
    for change, exc, message in cases:
        args: dict[str, Any] = {
            "kind": "customer",
            "jurisdiction": "eu",
            "identities": {"email": "ok@example.com"},
            "attributes": {"user.name": "Ok"},
            "policy_version": VERSION,
            **change,
        }
        kind, jurisdiction = args.pop("kind"), args.pop("jurisdiction")
        with pytest.raises(exc, match=message):
            vault.create_subject(kind, jurisdiction, **args)
    assert counts(stores) == before


def test_duplicate_identity_is_refused(vault: Vault, stores: Stores) -> None:
    make(vault, "First", "same@example.com")
    before = counts(stores)
    with pytest.raises(DuplicateIdentity, match="identity email is already taken"):
        make(vault, "Second", "SAME@Example.com")
    assert counts(stores) == before


# ------------------------------------------------------------------------ bulk
@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
def test_import_subjects_in_batches(
    vault: Vault, stores: Stores, workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches prepared by worker processes store and fail exactly as those prepared here:
    same rows, same record numbers in errors, earlier batches kept."""
    def records(n: int, dup_at: int | None = None) -> Iterator[NewSubject]:
        for i in range(n):
            email = f"person{0 if i == dup_at else i}@example.com"
            yield NewSubject(
                "customer",
                "eu",
                {"email": email},
                VERSION,
                account(f"Person {i}", email),
                activity="create_account",
                now=T0,
            )

    assert vault.import_subjects(records(2500), batch_size=1000, workers=workers) == 2500
    assert not [r for r in caplog.records if "worker failed" in r.getMessage()]  # none fell back
    assert counts(stores)["subjects"] == 2500 and counts(stores)["attributes"] == 2500 * 4
    emails = [f"PERSON{i}@example.com" for i in range(0, 2500, 7)]
    found = vault.find_many("email", emails)
    assert len(found) == len(emails)
    some = found["PERSON700@example.com"]
    assert vault.read(some, ["user.name"])["user.name"].value == "Person 700"

    # a record of the 3rd batch takes an identity already stored: batches 1-2 stay
    before = counts(stores)
    more = (
        NewSubject(
            "customer",
            "eu",
            {"email": f"new{i}@example.com" if i != 2100 else "person5@example.com"},
            VERSION,
            {"user.name": f"N{i}"},
        )
        for i in range(3000)
    )
    with pytest.raises(ImportFailed) as err:
        vault.import_subjects(more, batch_size=1000, workers=workers)
    assert isinstance(err.value.cause, DuplicateIdentity)
    assert err.value.imported == 2000 and err.value.record == 2100
    assert "record #2100" in str(err.value)
    after = counts(stores)
    assert after["subjects"] == before["subjects"] + 2000
    assert after["subject_keys"] == before["subject_keys"] + 2000  # no orphan keys
    assert vault.find("email", "new1999@example.com") is not None
    assert vault.find("email", "new2000@example.com") is None

    # a duplicate inside one batch, and an invalid record, are named too
    with pytest.raises(ImportFailed, match=r"record #3: identity email is already taken by record #0 "):
        vault.import_subjects(records(5, dup_at=3), workers=workers)
    with pytest.raises(ImportFailed, match=r"record #1: identity email"):
        vault.import_subjects(
            [
                NewSubject("customer", "eu", {"email": e}, VERSION)
                for e in ("z1@example.com", "bad@", "z3@x.com")
            ],
            workers=workers,
        )
    assert counts(stores)["subjects"] == after["subjects"]


# ------------------------------------------------------------------------ erase
def test_erase_shreds_and_is_idempotent(vault: Vault, stores: Stores) -> None:
    a = make(vault, "Erin Erased", "erin@example.com")
    b = make(vault, "Kim Kept", "kim@example.com")
    later = T0 + timedelta(hours=1)
    vault.erase(a, now=later)
    with pytest.raises(SubjectErased):
        vault.read(a)
    with pytest.raises(SubjectErased):
        vault.identities(a)
    with pytest.raises(SubjectErased):
        vault.write(a, {"user.name": "back"}, policy_version=VERSION)
    assert vault.find("email", "erin@example.com") is None
    row = vault.subject(a)
    assert row.status == "erased" and row.erased_at == later
    c = counts(stores)
    assert c["subjects"] == 2 and c["subject_keys"] == 1 and c["identities"] == 1 and c["attributes"] == 4
    vault.erase(a)  # again: no error, nothing else changes
    assert counts(stores) == c
    assert vault.read(b, ["user.name"])["user.name"].value == "Kim Kept"
    # the identity is free again: the person may come back as a new subject
    assert make(vault, "Erin Again", "erin@example.com") != a


def test_erase_many(vault: Vault, stores: Stores) -> None:
    ids = [make(vault, f"Many {i}", f"many{i}@example.com") for i in range(6)]
    before = counts(stores)
    with pytest.raises(UnknownSubject):
        vault.erase_many([ids[0], "f" * 32])
    assert counts(stores) == before  # an unknown id changes nothing
    vault.erase(ids[0])
    assert vault.erase_many([ids[0], ids[1], ids[2], ids[1]]) == 2  # ids[0] was erased already
    assert [vault.subject(sid).status for sid in ids] == ["erased"] * 3 + ["active"] * 3
    c = counts(stores)
    assert c["subject_keys"] == 3 and c["attributes"] == 3 * 4 and c["identities"] == 3
    assert vault.erase_many([]) == 0


def _backup_data_store(stores: Stores, request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    return _backup(stores.backend, stores.data, request, tmp_path / "backup-of-data.db")


def _backup(backend: str, engine: Engine, request: pytest.FixtureRequest, to: Path) -> Engine:
    """A copy of a store as a backup would hold it: SQLite copies the file, PostgreSQL
    clones the database (CREATE DATABASE ... TEMPLATE)."""
    if backend == "sqlite":
        with engine.connect() as conn:  # fold the WAL into the file, as a backup tool does
            raw: Any = conn.connection.driver_connection  # autocommit: outside BEGIN
            assert raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        shutil.copyfile(Path(str(engine.url.database)), to)
        return make_engine(f"sqlite:///{to}")
    admin: Engine = request.getfixturevalue("pg_admin")
    name = f"fiduciary_backup_{uuid.uuid4().hex[:12]}"
    engine.dispose()  # a template database must have no other connections
    with admin.connect() as conn:
        # An engine an earlier test left open (a pool is closed by the garbage collector,
        # not at once) would still hold a session: end those as a backup tool's lock would.
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": engine.url.database},
        )
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{engine.url.database}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    request.addfinalizer(drop)
    return make_engine(admin.url.set(database=name).render_as_string(hide_password=False))


def test_a_restored_key_store_is_reconciled_with_the_erasures(
    vault: Vault,
    stores: Stores,
    ring: Keyring,
    cp: CompiledPolicy,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    """LAW-3, PLO-10, PLV-7: erasure must reach backups. Restoring the key store from
    before an erasure brings the erased person's key back, and with it their data in every
    old backup of the data store; reconcile_keys destroys it again, from what the live data
    store says, and touches no one else's key."""
    a = make(vault, "Anna Erased", "anna@example.com")
    b = make(vault, "Boris Kept", "boris@example.com")
    old_data = _backup(stores.backend, stores.data, request, tmp_path / "data-backup.db")
    old_keys = _backup(stores.backend, stores.keys, request, tmp_path / "keys-backup.db")
    request.addfinalizer(old_data.dispose)
    request.addfinalizer(old_keys.dispose)
    vault.erase(a)

    # The key store is restored from its backup: A's old data is readable again.
    restored = Vault(old_data, old_keys, ring, cp)
    assert restored.read(a, ["user.name"])["user.name"].value == "Anna Erased"

    live = Vault(stores.data, old_keys, ring, cp, audit=RecordingAudit())
    orphan = "0" * 32  # a key whose subject the data store does not have
    with old_keys.begin() as conn:
        conn.execute(
            T.subject_keys.insert().values(
                subject_id=orphan, kek_id=ring.active_kek, wrapped=b"x" * 60, created_at=T0
            )
        )
    done = live.reconcile_keys(batch_size=2)  # pages of two: the walk crosses pages
    assert (done.keys, done.destroyed, done.without_subject) == (3, 1, 1)
    with pytest.raises(DataKeyDestroyed):
        restored.read(a)
    assert restored.read(b, ["user.name"])["user.name"].value == "Boris Kept"
    assert live.reconcile_keys().destroyed == 0  # nothing left to do
    assert [e["action"] for e in cast(RecordingAudit, live.audit).entries] == ["keys.reconcile"] * 2


def test_backup_copy_is_unreadable_for_the_erased_subject_only(
    vault: Vault,
    stores: Stores,
    ring: Keyring,
    cp: CompiledPolicy,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    a = make(vault, "Anna Erased", "anna@example.com", **{"user.contact.url": "https://anna.example"})
    b = make(vault, "Boris Kept", "boris@example.com")
    backup = _backup_data_store(stores, request, tmp_path)
    request.addfinalizer(backup.dispose)

    vault.erase(a)

    # The backup still holds A's rows, ciphertexts and all ...
    at = T.attributes.c
    with backup.connect() as conn:
        held = conn.execute(select(at.category).where(at.subject_id == a)).scalars().all()
    assert len(held) == 5
    # ... and, read with today's key store, they are noise for A and fine for B.
    restored = Vault(backup, stores.keys, ring, cp)
    assert restored.find("email", "anna@example.com") == a  # the backup's index still finds A
    with pytest.raises(DataKeyDestroyed, match="can no longer be decrypted"):
        restored.read(a)
    with pytest.raises(DataKeyDestroyed):
        restored.identities(a)
    assert restored.read(b, ["user.name"])["user.name"].value == "Boris Kept"
    assert restored.identities(b) == {"email": "boris@example.com"}


# secure_delete and the key file are SQLite's; PostgreSQL relies on the key store's backups.
@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
def test_erased_key_is_overwritten_in_the_sqlite_key_file(
    vault: Vault, stores: Stores, ring: Keyring
) -> None:
    a = make(vault, "Sam Shredded", "sam@example.com")
    k = T.subject_keys.c
    with stores.keys.connect() as conn:
        wrapped = bytes(conn.execute(select(k.wrapped).where(k.subject_id == a)).scalar_one())
    dek = KeyWrapper(ring).unwrap(a, "k1", wrapped)
    key_files = [Path(str(stores.keys.url.database))]
    key_files.append(key_files[0].with_name(key_files[0].name + "-wal"))

    def on_disk(needle: bytes) -> bool:
        return any(needle in p.read_bytes() for p in key_files if p.exists())

    assert on_disk(wrapped)  # the test can see the key while it exists
    assert not on_disk(dek)  # the data key itself never touches the disk unwrapped
    vault.erase(a)
    assert not on_disk(wrapped)
    assert not on_disk(wrapped[12:28])  # not even a fragment of the ciphertext


# ------------------------------------------------------------------------ keys
def test_rotation_then_dropping_the_old_kek(
    vault: Vault, stores: Stores, ring: Keyring, cp: CompiledPolicy
) -> None:
    ids = [make(vault, f"Rot {i}", f"rot{i}@example.com") for i in range(7)]
    vault.erase(ids[3])
    data_before = counts(stores)
    with stores.data.connect() as conn:
        cipher_before = conn.execute(select(T.attributes.c.value).order_by(T.attributes.c.subject_id)).all()
    ring2 = ring.with_new_kek()
    assert vault.rotate_keys(ring2, batch_size=4) == 6
    assert vault.kek_usage() == {ring2.active_kek: 6}
    assert vault.rotate_keys(ring2) == 0  # nothing left to re-wrap
    with stores.data.connect() as conn:  # the data store was not touched
        assert (
            conn.execute(select(T.attributes.c.value).order_by(T.attributes.c.subject_id)).all()
            == cipher_before
        )
    assert counts(stores) == data_before

    only_new = ring2.without_keks_except({ring2.active_kek})
    fresh = Vault(stores.data, stores.keys, only_new, cp)
    for i, sid in enumerate(ids):
        if i == 3:
            continue
        assert fresh.read(sid, ["user.name"])["user.name"].value == f"Rot {i}"
    assert fresh.find("email", "rot5@example.com") == ids[5]  # index key unchanged
    # the old keyring alone can no longer unwrap anything
    with pytest.raises(KeyringError, match=f"{ring2.active_kek!r} is not in the keyring"):
        Vault(stores.data, stores.keys, ring, cp).read(ids[0])


# ------------------------------------------------------------------------ audit
class RecordingAudit:
    """Stands in for fiduciary.audit: records entries and the transaction they came in."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.entries: list[dict[str, Any]] = []
        self.fail_on = fail_on

    def append(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        purpose: str | None = None,
        subject_id: str | None = None,
        result: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> int:
        assert conn.in_transaction()
        if action == self.fail_on:
            raise RuntimeError("audit log unavailable")
        entry = {
            "actor": actor,
            "action": action,
            "purpose": purpose,
            "subject_id": subject_id,
            "result": result,
            "detail": detail,
        }
        self.entries.append(entry)
        return len(self.entries)

    def append_many(self, conn: Connection, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            self.append(conn, **e)


def test_audit_entries_share_the_transaction(stores: Stores, ring: Keyring, cp: CompiledPolicy) -> None:
    audit = RecordingAudit()
    vault = Vault(stores.data, stores.keys, ring, cp, audit)
    sid = make(vault, "Audrey Audit", "audrey@example.com")
    vault.import_subjects(
        [
            NewSubject("customer", "eu", {"email": f"i{i}@example.com"}, VERSION, {"user.name": "I"})
            for i in range(3)
        ],
        actor="importer",
    )
    vault.read(sid, ["user.name"], purpose="service", actor="app")
    vault.write(sid, {"user.contact.url": "https://audrey.example"}, policy_version=VERSION, actor="app")
    vault.erase(sid, actor="dpo")
    actions = [(e["action"], e["actor"]) for e in audit.entries]
    assert actions == [
        ("vault.create", "system"),
        *[("vault.create", "importer")] * 3,
        ("vault.read", "app"),
        ("vault.write", "app"),
        ("vault.erase", "dpo"),
    ]
    assert audit.entries[4]["purpose"] == "service"
    assert audit.entries[4]["detail"] == {"categories": ["user.name"]}
    flat = repr(audit.entries).lower()
    assert "audrey" not in flat and "example.com" not in flat  # no personal data

    # an audit failure undoes the change it would have recorded
    failing = Vault(stores.data, stores.keys, ring, cp, RecordingAudit(fail_on="vault.write"))
    other = make(vault, "Otto", "otto@example.com")
    before = counts(stores)
    with pytest.raises(RuntimeError, match="audit log unavailable"):
        failing.write(other, {"user.name": "Changed"}, policy_version=VERSION)
    assert counts(stores) == before
    assert vault.read(other, ["user.name"])["user.name"].value == "Otto"
    with pytest.raises(RuntimeError):
        Vault(stores.data, stores.keys, ring, cp, RecordingAudit(fail_on="vault.create")).create_subject(
            "customer", "eu", identities={"email": "x@example.com"}, policy_version=VERSION
        )
    assert counts(stores) == before  # neither data rows nor an orphan key


def test_with_the_real_audit_log(stores: Stores, ring: Keyring, cp: CompiledPolicy) -> None:
    from fiduciary.audit import AuditLog

    log = AuditLog(stores.data, ring)
    vault = Vault(stores.data, stores.keys, ring, cp, log)
    sid = make(vault, "Lou Logged", "lou@example.com")
    vault.import_subjects(
        [
            NewSubject("customer", "eu", {"email": f"l{i}@example.com"}, VERSION, {"user.name": "L"})
            for i in range(5)
        ],
        batch_size=2,
        workers=1,  # the audit entries are built in the worker, appended here
    )
    vault.read(sid, purpose="service", actor="app")
    vault.write(sid, {"user.contact.url": "https://lou.example"}, policy_version=VERSION)
    vault.erase(sid, actor="dpo")
    with stores.data.connect() as conn:
        logged = conn.execute(select(T.audit_log.c.action, T.audit_log.c.subject, T.audit_log.c.detail)).all()
    assert [r.action for r in logged] == ["vault.create"] * 6 + ["vault.read", "vault.write", "vault.erase"]
    # the subject appears as its pseudonym only, and no personal data is in the log
    assert sid not in repr(logged) and "lou" not in repr(logged).lower()
    assert {r.subject for r in [logged[0], *logged[-3:]]} == {log.pseudonym(sid)}
    assert log.verify().ok


def test_a_worker_that_dies_is_reported_not_waited_for(ring: Keyring, cp: CompiledPolicy) -> None:
    """The importer prepares a dead worker's batch itself (Vault._prepared_by_workers)."""
    setup = WorkerSetup(cp.policy, ring, None, "sqlite", "sqlite", audited=False)
    workers = PrepareWorkers(setup, 1)
    try:
        worker = workers.idle()
        assert worker is not None
        rec = NewSubject("customer", "eu", {"email": "w@example.com"}, VERSION, {"user.name": "W"}, now=T0)
        worker.submit([rec], 0, "system")
        batch = worker.result()
        assert [row[1] for row in batch.attributes] == ["user.name"] and batch.keys[0][1] == ring.active_kek
        worker.proc.kill()
        worker.proc.wait()
        worker.submit([rec], 1, "system")
        with pytest.raises(WorkerFailed):
            worker.result()
    finally:
        workers.close()
