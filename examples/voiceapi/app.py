"""Plivo's own application database, as policy.yaml's ``voiceapi_db`` datastore describes it.

SQLAlchemy Core only, with portable types, so the same schema runs on SQLite, PostgreSQL
and MariaDB. ``seed`` fills it with deterministic fake customers and their call logs,
messages, invoices, referrals and so on, generated batch by batch so that a million
customers fit in bounded memory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

from fiduciary.examples import PendingRows, create_seeded, foreign_key_column, id_column

metadata = MetaData()


def _account_fk(name: str = "account_id") -> Column[int]:
    return foreign_key_column(name, "accounts.id", Integer)


accounts = Table(
    "accounts",
    metadata,
    id_column(Integer),
    Column("auth_id", String(20), nullable=False, unique=True),
    Column("email", String(255), nullable=False, unique=True),
    Column("phone_number", String(20)),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(128)),
    Column("first_name", String(64)),
    Column("last_name", String(64)),
    Column("date_of_birth", Date),
    Column("company", String(128)),
    Column("website", String(255)),
    Column("profile_visibility", String(16), nullable=False),
    Column("cache_allowed", Boolean, nullable=False),
    Column("application_logging", Boolean, nullable=False),
    Column("promo_email_opt_out", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("closed_at", DateTime),
)

addresses = Table(
    "addresses",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("kind", String(16), nullable=False),
    Column("street", String(200)),
    Column("city", String(100)),
    Column("state", String(64)),
    Column("postal_code", String(16)),
    Column("country", String(2)),
)

payment_cards = Table(
    "payment_cards",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("cardholder_name", String(128)),
    Column("card_token", String(64)),
    Column("brand", String(16)),
    Column("last4", String(4)),
    Column("exp_month", Integer),
    Column("exp_year", Integer),
    Column("added_at", DateTime, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("number", String(32), nullable=False, unique=True),
    Column("issued_at", DateTime, nullable=False),
    Column("description", String(200)),
    Column("amount", Numeric(12, 4), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(16), nullable=False),
)

call_logs = Table(
    "call_logs",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("call_uuid", String(36), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("from_number", String(20)),
    Column("to_number", String(20)),
    Column("started_at", DateTime, nullable=False),
    Column("duration_seconds", Integer, nullable=False),
    Column("charge", Numeric(10, 5), nullable=False),
)

message_logs = Table(
    "message_logs",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("message_uuid", String(36), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("from_number", String(20)),
    Column("to_number", String(20)),
    Column("body", Text),
    Column("sent_at", DateTime, nullable=False),
    Column("units", Integer, nullable=False),
)

notification_logs = Table(
    "notification_logs",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("resource_uuid", String(36), nullable=False),
    Column("method", String(8), nullable=False),
    Column("url", String(512)),
    Column("request_body", Text),
    Column("response_body", Text),
    Column("status_code", Integer),
    Column("logged_at", DateTime, nullable=False),
)

application_logs = Table(
    "application_logs",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("level", String(8), nullable=False),
    Column("message", Text),
    Column("logged_at", DateTime, nullable=False),
)

cached_media = Table(
    "cached_media",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("source_url", String(512)),
    Column("content_type", String(64)),
    Column("storage_key", String(128)),
    Column("sha256", String(64)),
    Column("size_bytes", Integer),
    Column("cached_at", DateTime, nullable=False),
)

referrals = Table(
    "referrals",
    metadata,
    id_column(Integer),
    _account_fk("referrer_id"),
    Column("friend_name", String(128)),
    Column("friend_email", String(255), index=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("invited_at", DateTime),
)

contest_entries = Table(
    "contest_entries",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("contest", String(128), nullable=False),
    Column("entry", Text),
    Column("entered_at", DateTime, nullable=False),
)

forum_posts = Table(
    "forum_posts",
    metadata,
    id_column(Integer),
    _account_fk(),
    Column("title", String(200)),
    Column("body", Text),
    Column("location", String(100)),
    Column("posted_at", DateTime, nullable=False),
)


# --------------------------------------------------------------------------- seed data

BATCH = 5_000
# Accounts generated per round; every table buffer is flushed at BATCH rows, so memory
# stays bounded whatever ``size`` is.
_CHUNK = 1_000
# A fixed clock (the seed's revision date), never now(): the same seed gives the same rows.
BASE = datetime(2012, 3, 30, 12, 0, 0)

_FIRST = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jo",
          "Kofi", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq"]
_LAST = ["Adams", "Berg", "Costa", "Diaz", "Evans", "Fischer", "Garcia", "Huang", "Ito",
         "Jensen", "Kumar", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi",
         "Silva", "Tanaka", "Weber"]
_CITIES = [("San Francisco", "CA", "941"), ("Austin", "TX", "787"), ("New York", "NY", "100"),
           ("Seattle", "WA", "981"), ("Boston", "MA", "021"), ("Denver", "CO", "802")]
_AREA = ["415", "512", "212", "206", "617", "303"]
_CONTESTS = ["Hack Day 2012", "Best Voice App", "SMS Sweepstakes"]
_VISIBILITY = ["self", "other_users", "public"]


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _phone(rng: random.Random) -> str:
    # 555-01xx numbers are reserved for fiction in the North American plan.
    return f"+1{rng.choice(_AREA)}55501{rng.randrange(100):02d}"


def _accounts(rng: random.Random, size: int) -> Iterator[dict[str, Any]]:
    for n in range(1, size + 1):
        created = BASE - timedelta(days=rng.randrange(30, 900), seconds=rng.randrange(86_400))
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        closed = created + timedelta(days=rng.randrange(1, 29)) if rng.random() < 0.03 else None
        yield {
            "auth_id": f"MA{n:018d}",
            "email": f"user{n}@example.com",
            "phone_number": _phone(rng) if rng.random() < 0.8 else None,
            "username": f"user{n}",
            "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$" + f"{rng.getrandbits(256):064x}",
            "first_name": first,
            "last_name": last,
            # Voluntary, and only adults in the seed data (under-13s are never kept, PLV-14).
            "date_of_birth": (
                date(1950, 1, 1) + timedelta(days=rng.randrange(16_000))
                if rng.random() < 0.5
                else None
            ),
            "company": f"{last} Labs" if rng.random() < 0.6 else None,
            "website": f"https://{last.lower()}{n}.example.com" if rng.random() < 0.3 else None,
            "profile_visibility": rng.choice(_VISIBILITY),
            "cache_allowed": rng.random() < 0.5,
            "application_logging": rng.random() < 0.9,
            "promo_email_opt_out": rng.random() < 0.2,
            "created_at": created,
            "closed_at": closed,
        }


def _related(rows: PendingRows, rng: random.Random, aid: int, acc: dict[str, Any]) -> None:
    """The rows that hang off one account, in proportion to its activity."""
    created: datetime = acc["created_at"]
    name = f"{acc['first_name']} {acc['last_name']}"
    city, state, zip3 = rng.choice(_CITIES)
    kinds = ["billing", "home"] if rng.random() < 0.3 else ["billing"]
    for kind in kinds:
        rows.add("addresses", {
            "account_id": aid, "kind": kind,
            "street": f"{rng.randrange(1, 999)} Market Street", "city": city, "state": state,
            "postal_code": f"{zip3}{rng.randrange(100):02d}", "country": "US",
        })
    if rng.random() < 0.7:  # enrolled: a card and past transactions
        rows.add("payment_cards", {
            "account_id": aid, "cardholder_name": name,
            "card_token": f"tok_{rng.getrandbits(96):024x}",
            "brand": rng.choice(["visa", "mastercard", "amex"]),
            "last4": f"{rng.randrange(10_000):04d}",
            "exp_month": rng.randrange(1, 13), "exp_year": rng.randrange(2012, 2018),
            "added_at": created + timedelta(hours=1),
        })
        for k in range(3):
            iid = rows.last_id("invoices") + 1
            rows.add("invoices", {
                "account_id": aid, "number": f"INV-{iid:08d}",
                "issued_at": created + timedelta(days=30 * (k + 1)),
                "description": rng.choice(["Account recharge", "Phone number rental", "Usage"]),
                "amount": Decimal(rng.randrange(500, 50_000)) / 100,
                "currency": "USD", "status": rng.choice(["paid", "paid", "paid", "refunded"]),
            })
    own = acc["phone_number"] or _phone(rng)
    for _ in range(4):
        uuid = _uuid(rng)
        outbound = rng.random() < 0.6
        other = _phone(rng)
        duration = rng.randrange(0, 1800)
        started = created + timedelta(minutes=rng.randrange(1, 40_000))
        rows.add("call_logs", {
            "account_id": aid, "call_uuid": uuid,
            "direction": "outbound" if outbound else "inbound",
            "from_number": own if outbound else other, "to_number": other if outbound else own,
            "started_at": started, "duration_seconds": duration,
            "charge": Decimal(duration * 12) / 100_000,
        })
        if rng.random() < 0.5:
            rows.add("notification_logs", {
                "account_id": aid, "resource_uuid": uuid, "method": "POST",
                "url": f"https://app{aid}.example.com/answer",
                "request_body": f"CallUUID={uuid}&From={own}&CallStatus=ringing",
                "response_body": "<Response><Speak>Hello</Speak></Response>",
                "status_code": rng.choice([200, 200, 200, 500]), "logged_at": started,
            })
            # PLV-4: a copy of served content only where the customer's server allows it.
            if acc["cache_allowed"]:
                rows.add("cached_media", {
                    "account_id": aid, "source_url": f"https://app{aid}.example.com/hello.mp3",
                    "content_type": "audio/mpeg", "storage_key": f"cache/{aid}/{uuid}",
                    "sha256": f"{rng.getrandbits(256):064x}",
                    "size_bytes": rng.randrange(1_000, 2_000_000), "cached_at": started,
                })
            if acc["application_logging"]:
                rows.add("application_logs", {
                    "account_id": aid, "level": "INFO",
                    "message": f"answer_url responded in {rng.randrange(5, 900)} ms",
                    "logged_at": started,
                })
    for _ in range(3):
        outbound = rng.random() < 0.7
        other = _phone(rng)
        rows.add("message_logs", {
            "account_id": aid, "message_uuid": _uuid(rng),
            "direction": "outbound" if outbound else "inbound",
            "from_number": own if outbound else other, "to_number": other if outbound else own,
            "body": rng.choice(["Your code is 4821", "Meeting at 3?", "Order shipped"]),
            "sent_at": created + timedelta(minutes=rng.randrange(1, 40_000)),
            "units": 1,
        })
    if rng.random() < 0.2:
        rid = rows.last_id("referrals") + 1
        sent = rng.random() < 0.8
        at = created + timedelta(days=rng.randrange(1, 20))
        rows.add("referrals", {
            "referrer_id": aid, "friend_name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            "friend_email": f"friend{rid}@example.com",
            "status": "sent" if sent else "pending", "created_at": at,
            "invited_at": at + timedelta(minutes=5) if sent else None,
        })
    if rng.random() < 0.1:
        rows.add("contest_entries", {
            "account_id": aid, "contest": rng.choice(_CONTESTS),
            "entry": f"My app: {rng.choice(['IVR', 'voicemail', 'SMS alerts'])} for {city}",
            "entered_at": created + timedelta(days=rng.randrange(1, 60)),
        })
    if rng.random() < 0.25:
        rows.add("forum_posts", {
            "account_id": aid, "title": "Question about the Speak XML element",
            "body": "How do I change the voice of <Speak>?",
            "location": city if rng.random() < 0.5 else None,
            "posted_at": created + timedelta(days=rng.randrange(1, 60)),
        })


def seed(conn: Connection, size: int, seed: int = 0) -> dict[str, int]:
    """Insert ``size`` customers and their related rows; returns row counts per table."""
    return _generate(conn, size, seed)


def _generate(conn: Connection, size: int, seed_value: int) -> dict[str, int]:
    if size < 0:
        raise ValueError("size must be >= 0")
    rng = random.Random(seed_value)
    rows = PendingRows(metadata.tables)
    tables = list(metadata.tables.values())  # accounts first, so foreign keys hold at once
    pending = 0
    for acc in _accounts(rng, size):
        aid = rows.add("accounts", acc)
        _related(rows, rng, aid, acc)
        pending += 1
        if pending >= _CHUNK:
            # Accounts go in before their children; full child buffers go in after. Every
            # table's buffer is written once it holds a whole BATCH, so memory stays bounded.
            rows.flush(conn, [accounts], BATCH)
            rows.flush(conn, tables, BATCH, full_only=True)
            pending = 0
    rows.flush(conn, [accounts], BATCH)
    rows.flush(conn, tables, BATCH)
    return rows.written


def create(engine: Engine, size: int, seed: int = 0) -> dict[str, int]:
    """Create the schema and seed it, in one transaction."""
    return create_seeded(engine, metadata, _generate, size, seed)
