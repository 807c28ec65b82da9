"""put.io's app database: the 10 tables the ``filelocker_db`` datastore in policy.yaml
describes, and a deterministic seed-data generator.

Portable SQLAlchemy Core types only, so the same schema runs on SQLite, PostgreSQL and
MariaDB. ``seed`` writes set-based batches of at most 5,000 rows and generates one batch of
accounts at a time, so a million accounts need no more memory than a thousand.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

from fiduciary.examples import (
    PendingRows,
    create_seeded,
    foreign_key_column,
    id_column,
    insert_batches,
    random_hex,
    random_ip,
    random_time,
    subject_chunks,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    id_column(),
    Column("email", String(254), unique=True),  # nullable: hmac masking may rewrite it
    Column("password_hash", String(128)),
    Column("created_at", DateTime),
    Column("birth_date", Date),
    Column("postal_code", String(16)),
    Column("hometown", String(100)),
    Column("gender", String(16)),
    Column("intercom_opt_out", Boolean, nullable=False, default=False),
)

payments = Table(
    "payments",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id"),
    Column("paypal_email", String(254)),
    Column("plan", String(32)),
    Column("amount", Numeric(10, 2)),
    Column("currency", String(3)),
    Column("paypal_transaction_id", String(64)),
    Column("paid_at", DateTime),
)

# Shared, de-duplicated content: no user column, so deleting a file (a ``files`` row)
# leaves no link between the person and the content (PUT-13).
content_blobs = Table(
    "content_blobs",
    metadata,
    id_column(),
    Column("md5", String(32), nullable=False, index=True),
    Column("sha1", String(40), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("storage_node", String(32), nullable=False),
    Column("stored_at", DateTime, nullable=False),
    Column("last_requested_at", DateTime),
)

files = Table(
    "files",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id"),
    foreign_key_column("blob_id", "content_blobs.id", nullable=True),
    Column("name", String(255)),
    Column("folder", String(255)),
    Column("created_at", DateTime),
)

transfers = Table(
    "transfers",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id"),
    # the file a finished transfer produced; deleting the file deletes this row (PUT-13)
    foreign_key_column("file_id", "files.id", nullable=True),
    Column("source_url", Text),
    Column("name", String(255)),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime),
    Column("completed_at", DateTime),
)

access_logs = Table(
    "access_logs",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id", nullable=True),  # None: a visitor
    Column("ip_address", String(45)),
    Column("referrer", Text),
    Column("path", String(512)),
    Column("user_agent", String(512)),
    Column("visited_at", DateTime, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id"),
    Column("session_hash", String(64), nullable=False),
    Column("ip_address", String(45)),
    Column("user_agent", String(512)),
    Column("created_at", DateTime, nullable=False),
    Column("last_seen_at", DateTime),
)

upload_screenings = Table(
    "upload_screenings",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id"),
    # kept only for a match: a clean file's hash is not kept with the person (PUT-13)
    Column("file_md5", String(32)),
    Column("ip_address", String(45)),
    Column("matched", Boolean, nullable=False),
    Column("action", String(16), nullable=False),
    Column("reported_to", String(128)),
    Column("screened_at", DateTime, nullable=False),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id"),
    Column("topic", String(32), nullable=False),
    Column("subscribed", Boolean, nullable=False),
    Column("changed_at", DateTime, nullable=False),
)

support_messages = Table(
    "support_messages",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id", nullable=True),  # None: a visitor
    Column("email", String(254), index=True),
    Column("subject", String(200)),
    Column("body", Text),
    Column("received_at", DateTime, nullable=False),
)

BATCH = 5_000  # rows per INSERT statement
USERS_PER_CHUNK = 1_000  # accounts generated (with their rows) before writing
BASE = datetime(2024, 1, 1)  # fixed, so two runs with one seed are equal row for row
BLOBS_PER_USER = 2  # shared content: about three files per person over two blobs each

_PLANS = (("monthly", Decimal("9.99")), ("yearly", Decimal("99.00")), ("lifetime", Decimal("499.00")))
_FOLDERS = ("", "Movies", "Music", "Books", "Backups", "Photos")
_EXT = ("mkv", "mp4", "mp3", "flac", "pdf", "epub", "zip", "jpg")
_TOWNS = ("Amsterdam", "Istanbul", "Berlin", "Austin", "Lyon", "Leeds", "Osaka", "Porto")
_GENDERS = ("female", "male", "nonbinary", None)
_REFERRERS = (
    None,
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://twitter.com/putdotio",
    "https://put.io/plans/",
)
_PATHS = ("/", "/plans/", "/files", "/transfers", "/account/settings", "/privacy-policy/")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
    "put.io-android/9.1",
)
_TOPICS = ("newsletter", "partner_offers")


def _at(rng: random.Random, days: int = 365) -> datetime:
    return random_time(rng, BASE, days)


def _blob_md5(blob_id: int, rng_seed: int) -> str:
    # A pure function of the id, so a screening row can name its blob's hash later.
    return hashlib.md5(f"blob-{rng_seed}-{blob_id}".encode()).hexdigest()


def _blobs(rng: random.Random, n: int, rng_seed: int) -> Iterator[dict[str, Any]]:
    for i in range(1, n + 1):
        digest = _blob_md5(i, rng_seed)
        stored = _at(rng)
        yield {
            "id": i,
            "md5": digest,
            "sha1": hashlib.sha1(digest.encode()).hexdigest(),
            "size_bytes": rng.randint(1_000, 4_000_000_000),
            "storage_node": f"ams-store-{rng.randint(1, 40):02d}",
            "stored_at": stored,
            "last_requested_at": stored + timedelta(days=rng.randint(0, 60)),
        }


def _fill(conn: Connection, size: int, rng_seed: int) -> dict[str, int]:
    rng = random.Random(rng_seed)
    rows = PendingRows(t.name for t in metadata.sorted_tables)
    n_blobs = max(1, size * BLOBS_PER_USER)
    rows.written["content_blobs"] = insert_batches(conn, content_blobs, _blobs(rng, n_blobs, rng_seed))
    per_user = [t for t in metadata.sorted_tables if t is not content_blobs]
    for uids in subject_chunks(size, USERS_PER_CHUNK):
        for uid in uids:
            created = _at(rng)
            email = f"user{uid}@example.com"
            rows.add("users", {
                "id": uid,
                "email": email,
                "password_hash": "$argon2id$" + random_hex(rng, 64),
                "created_at": created,
                # everyone is an adult: sign-up under 13 is refused (PUT-2)
                "birth_date": date(1950, 1, 1) + timedelta(days=rng.randrange(50 * 365)),
                "postal_code": f"{rng.randint(1000, 9999)}" if rng.random() < 0.6 else None,
                "hometown": rng.choice(_TOWNS) if rng.random() < 0.5 else None,
                "gender": rng.choice(_GENDERS),
                "intercom_opt_out": rng.random() < 0.05,
            })
            for _ in range(rng.choice((0, 0, 1, 1, 2))):
                plan, amount = rng.choice(_PLANS)
                rows.add("payments", {
                    "user_id": uid,
                    "paypal_email": email if rng.random() < 0.7 else f"pay{uid}@example.com",
                    "plan": plan,
                    "amount": amount,
                    "currency": "USD",
                    "paypal_transaction_id": random_hex(rng, 17).upper(),
                    "paid_at": created + timedelta(days=rng.randint(0, 60)),
                })
            for _ in range(rng.randint(0, 6)):
                added = created + timedelta(hours=rng.randint(1, 5000))
                blob = rng.randint(1, n_blobs)
                name = f"file-{blob}.{rng.choice(_EXT)}"
                # every file is screened as it is written; a match is never stored (PUT-9)
                matched = rng.random() < 0.001
                rows.add("upload_screenings", {
                    "user_id": uid,
                    "file_md5": _blob_md5(blob, rng_seed) if matched else None,
                    "ip_address": random_ip(rng),
                    "matched": matched,
                    "action": "blocked" if matched else "stored",
                    "reported_to": "NCMEC" if matched else None,
                    "screened_at": added,
                })
                if matched:
                    continue
                file_id = rows.add("files", {
                    "user_id": uid,
                    "blob_id": blob,
                    "name": name,
                    "folder": rng.choice(_FOLDERS),
                    "created_at": added,
                })
                if rng.random() < 0.4:  # fetched by a transfer rather than uploaded
                    rows.add("transfers", {
                        "user_id": uid,
                        "file_id": file_id,
                        "source_url": f"magnet:?xt=urn:btih:{random_hex(rng, 40)}",
                        "name": name,
                        "status": "completed",
                        "created_at": added - timedelta(minutes=rng.randint(1, 90)),
                        "completed_at": added,
                    })
            if rng.random() < 0.05:  # a transfer that failed leaves no file
                failed = _at(rng)
                rows.add("transfers", {
                    "user_id": uid,
                    "file_id": None,
                    "source_url": f"https://example.org/dl/{random_hex(rng, 12)}.zip",
                    "name": None,
                    "status": "error",
                    "created_at": failed,
                    "completed_at": None,
                })
            for _ in range(rng.randint(1, 6)):
                rows.add("access_logs", {
                    "user_id": uid if rng.random() < 0.8 else None,
                    "ip_address": random_ip(rng),
                    "referrer": rng.choice(_REFERRERS),
                    "path": rng.choice(_PATHS),
                    "user_agent": rng.choice(_AGENTS),
                    "visited_at": _at(rng),
                })
            if rng.random() < 0.6:
                seen = _at(rng)
                rows.add("sessions", {
                    "user_id": uid,
                    "session_hash": random_hex(rng, 64),
                    "ip_address": random_ip(rng),
                    "user_agent": rng.choice(_AGENTS),
                    "created_at": seen,
                    "last_seen_at": seen + timedelta(minutes=rng.randint(0, 600)),
                })
            for topic in _TOPICS:
                rows.add("subscriptions", {
                    "user_id": uid,
                    "topic": topic,
                    "subscribed": rng.random() < (0.7 if topic == "newsletter" else 0.2),
                    "changed_at": created,
                })
            if rng.random() < 0.1:
                member = rng.random() < 0.8
                rows.add("support_messages", {
                    "user_id": uid if member else None,
                    "email": email if member else f"visitor{uid}@example.com",
                    "subject": "Transfer stuck",
                    "body": "My transfer has been at 99% for a day. Can you help?",
                    "received_at": _at(rng),
                })
        # Parents before children, so foreign keys hold on every backend.
        rows.flush(conn, per_user, BATCH)
    return rows.written


def seed(conn: Connection, size: int, seed: int = 0) -> dict[str, int]:
    """Fill the tables with ``size`` accounts and their rows; return row counts per table."""
    if size < 0:
        raise ValueError("size must be zero or more")
    return _fill(conn, size, seed)


def create(engine: Engine, size: int, seed: int = 0) -> dict[str, int]:
    """Create the tables and seed them in one transaction."""
    return create_seeded(engine, metadata, _fill, size, seed)
