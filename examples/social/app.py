"""Plutro's own application database: the schema its policy.yaml annotates, and seed data.

The tables match the ``social_db`` datastore in policy.yaml column for column, so rights
requests and retention can run against a real database. Types are portable (SQLite,
PostgreSQL, MariaDB). ``seed`` is deterministic and set-based: rows are generated one
chunk of members at a time and inserted in batches, so a million members fit in bounded
memory.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

from fiduciary.examples import PendingRows, create_seeded, foreign_key_column, id_column, subject_chunks

metadata = MetaData()


def _member_fk(name: str = "member_id", nullable: bool = False) -> Column[int]:
    return foreign_key_column(name, "members.id", nullable=nullable)


members = Table(
    "members",
    metadata,
    id_column(),
    Column("email", String(255), nullable=False, unique=True),
    Column("name", String(200)),  # nullable: erasure sets it to NULL
    Column("password_hash", String(255)),
    Column("username", String(50), nullable=False, unique=True),
    Column("created_at", DateTime, nullable=False),
    Column("closed_at", DateTime),
)

profiles = Table(
    "profiles",
    metadata,
    id_column(),
    _member_fk(),
    Column("headline", String(200)),
    Column("about", Text),
    Column("sensitive_info", Text),
    Column("photo_url", String(500)),
    Column("website", String(500)),
    Column("city", String(100)),
    # Who may see the profile: self, members or public (PLU-3).
    Column("visibility", String(16), nullable=False),
    Column("sensitive_visibility", String(16), nullable=False),
    Column("searchable", Boolean, nullable=False),
    Column("read_receipts", Boolean, nullable=False),
    Column("network_updates", Boolean, nullable=False),
    Column("promotional_messages", Boolean, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

posts = Table(
    "posts",
    metadata,
    id_column(),
    _member_fk(nullable=True),  # NULL once unlinked from a closed account (PLU-11)
    Column("body", Text, nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

comments = Table(
    "comments",
    metadata,
    id_column(),
    foreign_key_column("post_id", "posts.id"),
    _member_fk(nullable=True),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

reactions = Table(
    "reactions",
    metadata,
    id_column(),
    foreign_key_column("post_id", "posts.id"),
    _member_fk(),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

post_reads = Table(
    "post_reads",
    metadata,
    id_column(),
    _member_fk(),
    foreign_key_column("post_id", "posts.id", index=False),
    Column("read_at", DateTime, nullable=False),
)

connections = Table(
    "connections",
    metadata,
    id_column(),
    _member_fk(),
    _member_fk("connected_member_id"),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

follows = Table(
    "follows",
    metadata,
    id_column(),
    _member_fk(),
    Column("topic", String(100)),
    _member_fk("followed_member_id", nullable=True),
    Column("created_at", DateTime, nullable=False),
)

messages = Table(
    "messages",
    metadata,
    id_column(),
    _member_fk("sender_id", nullable=True),
    _member_fk("recipient_id", nullable=True),
    Column("body", Text, nullable=False),
    Column("sent_at", DateTime, nullable=False),
    Column("delivered_at", DateTime),
    Column("read_at", DateTime),
)

devices = Table(
    "devices",
    metadata,
    id_column(),
    _member_fk(),
    Column("device_id", String(64), nullable=False),
    Column("user_agent", String(300)),
    Column("ip_address", String(45)),
    Column("location_allowed", Boolean, nullable=False),
    Column("latitude", Numeric(9, 6)),
    Column("longitude", Numeric(9, 6)),
    Column("last_seen_at", DateTime, nullable=False),
)

visit_logs = Table(
    "visit_logs",
    metadata,
    id_column(),
    _member_fk(nullable=True),  # NULL for visitors, who have no account (PLU-1)
    Column("cookie_id", String(64), nullable=False),
    Column("ip_address", String(45), nullable=False),
    Column("user_agent", String(300)),
    Column("path", String(500), nullable=False),
    Column("search_terms", String(200)),
    Column("referrer_url", String(500)),
    Column("next_url", String(500)),
    Column("plugin_site", String(200)),
    Column("visited_at", DateTime, nullable=False),
)

linked_services = Table(
    "linked_services",
    metadata,
    id_column(),
    _member_fk(),
    Column("service", String(50), nullable=False),
    Column("external_account_id", String(100), nullable=False),
    Column("scopes", String(200), nullable=False),
    Column("linked_at", DateTime, nullable=False),
    Column("unlinked_at", DateTime),
)

# --------------------------------------------------------------------------- seed data

BASE = datetime(2020, 1, 1)  # fixed, so two runs with one seed give the same rows
BATCH = 5_000  # rows per INSERT statement
CHUNK = 250  # members generated at a time; bounds memory whatever the size

FIRST = ["Ada", "Ben", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas",
         "Kira", "Luis", "Mei", "Nils", "Olga", "Pavel", "Rosa", "Sami", "Tara", "Umar"]
LAST = ["Adler", "Banerjee", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad",
        "Ivanova", "Jensen", "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Petrov"]
WORDS = ["quiet", "river", "copper", "lantern", "maple", "orbit", "pixel", "saffron",
         "tundra", "velvet", "willow", "zephyr", "ember", "harbor", "meadow", "nimbus"]
TOPICS = ["design", "python", "privacy", "gardening", "startups", "climate", "music",
          "photography", "history", "cycling", "cooking", "astronomy"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Osaka", "Lyon", "Austin", "Pune", "Quito"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/115.0",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 13_4) Safari/605.1.15",
          "Mozilla/5.0 (Linux; Android 13) Chrome/114.0 Mobile",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 16_5 like Mac OS X) Mobile/15E148"]
PATHS = ["/", "/feed", "/search", "/topics/{t}", "/post/{p}", "/u/{u}", "/messages"]
SITES = ["news.example.org", "blog.example.net", "shop.example.com"]
SERVICES = ["writeboard", "chatloop", "picshare"]
AUDIENCES = ["public", "public", "public", "members", "self"]

TABLES: tuple[Table, ...] = (
    members, profiles, posts, comments, reactions, post_reads,
    connections, follows, messages, devices, visit_logs, linked_services,
)


def _ip(rng: random.Random) -> str:
    return f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def seed(conn: Connection, size: int, seed: int = 0) -> dict[str, int]:
    """Insert ``size`` members plus related rows (and visitors' visits); row counts per table."""
    return _populate(conn, size, seed)


def _populate(conn: Connection, size: int, seed_value: int) -> dict[str, int]:
    rng = random.Random(seed_value)
    rows = PendingRows(t.name for t in TABLES)
    for member_ids in subject_chunks(size, CHUNK):
        _chunk(rng, member_ids, rows)
        rows.flush(conn, TABLES, BATCH)  # parents before children, for engines that check FKs at once
    return rows.written


def _chunk(rng: random.Random, member_ids: range, rows: PendingRows) -> None:
    """Rows for one chunk of members. Links go only to members and posts that exist by the
    time the chunk is inserted (earlier chunks and this one)."""
    last_member = member_ids[-1]
    for n in member_ids:
        joined = BASE + timedelta(days=rng.randrange(0, 900), seconds=rng.randrange(86_400))
        first, last = rng.choice(FIRST), rng.choice(LAST)
        rows.add("members", {
            "email": f"user{n}@example.com",
            "name": f"{first} {last}",
            "password_hash": f"$argon2id$v=19$m=65536,t=3,p=4${rng.getrandbits(64):016x}",
            # A username, not the real name (PLU-2).
            "username": f"{rng.choice(WORDS)}_{rng.choice(WORDS)}{n}",
            "created_at": joined,
            "closed_at": joined + timedelta(days=400) if rng.random() < 0.05 else None,
        })
        if rng.random() < 0.7:  # the profile is optional (PLU-2)
            rows.add("profiles", {
                "member_id": n,
                "headline": f"{rng.choice(TOPICS).capitalize()} enthusiast",
                "about": f"I write about {rng.choice(TOPICS)} and {rng.choice(TOPICS)}.",
                "sensitive_info": "Member of a trade union" if rng.random() < 0.05 else None,
                "photo_url": f"https://cdn.plutro.test/p/{n}.jpg" if rng.random() < 0.6 else None,
                "website": f"https://{rng.choice(WORDS)}{n}.example.net" if rng.random() < 0.3 else None,
                "city": rng.choice(CITIES) if rng.random() < 0.5 else None,
                "visibility": rng.choice(AUDIENCES),
                "sensitive_visibility": "self",
                "searchable": rng.random() < 0.9,
                "read_receipts": rng.random() < 0.8,
                "network_updates": rng.random() < 0.85,
                "promotional_messages": rng.random() < 0.6,
                "updated_at": joined + timedelta(days=rng.randrange(30)),
            })
        for _ in range(rng.randrange(0, 6)):
            rows.add("posts", {
                "member_id": n,
                "body": f"Notes on {rng.choice(TOPICS)}: {rng.choice(WORDS)} {rng.choice(WORDS)}.",
                "visibility": rng.choice(AUDIENCES),
                "created_at": joined + timedelta(days=rng.randrange(1, 300)),
            })
        for _ in range(rng.randrange(0, 4)):
            other = rng.randint(1, last_member)
            if other != n:
                rows.add("connections", {
                    "member_id": n,
                    "connected_member_id": other,
                    "status": rng.choice(["accepted", "accepted", "pending"]),
                    "created_at": joined + timedelta(days=rng.randrange(1, 200)),
                })
        for _ in range(rng.randrange(0, 5)):
            person = rng.random() < 0.4
            rows.add("follows", {
                "member_id": n,
                "topic": None if person else rng.choice(TOPICS),
                "followed_member_id": rng.randint(1, last_member) if person else None,
                "created_at": joined + timedelta(days=rng.randrange(1, 200)),
            })
        for _ in range(rng.randrange(0, 6)):
            sent = joined + timedelta(days=rng.randrange(1, 300), minutes=rng.randrange(1440))
            delivered = sent + timedelta(seconds=rng.randrange(1, 60))
            rows.add("messages", {
                "sender_id": n,
                "recipient_id": rng.randint(1, last_member),
                "body": f"Did you see the {rng.choice(TOPICS)} thread?",
                "sent_at": sent,
                "delivered_at": delivered,
                "read_at": delivered + timedelta(minutes=rng.randrange(1, 600))
                if rng.random() < 0.7 else None,
            })
        for d in range(rng.choice([1, 1, 2])):
            mobile = rng.random() < 0.5
            allowed = mobile and rng.random() < 0.5  # location only as the phone allows
            rows.add("devices", {
                "member_id": n,
                "device_id": f"dev-{n}-{d}-{rng.getrandbits(32):08x}",
                "user_agent": rng.choice(AGENTS[2:] if mobile else AGENTS[:2]),
                "ip_address": _ip(rng),
                "location_allowed": allowed,
                "latitude": Decimal(rng.randrange(-90_000_000, 90_000_000)) / 1_000_000
                if allowed else None,
                "longitude": Decimal(rng.randrange(-180_000_000, 180_000_000)) / 1_000_000
                if allowed else None,
                "last_seen_at": joined + timedelta(days=rng.randrange(1, 400)),
            })
        if rng.random() < 0.3:
            rows.add("linked_services", {
                "member_id": n,
                "service": rng.choice(SERVICES),
                "external_account_id": f"ext-{rng.getrandbits(48):012x}",
                "scopes": "profile.read shares.write",
                "linked_at": joined + timedelta(days=rng.randrange(1, 100)),
                "unlinked_at": joined + timedelta(days=200) if rng.random() < 0.2 else None,
            })
        # Member visits, and about as many by visitors (no member_id, only a cookie).
        for v in range(rng.randrange(2, 9)):
            visitor = v % 2 == 1
            rows.add("visit_logs", _visit(rng, None if visitor else n, joined))

    # Engagement with posts from this chunk and earlier ones.
    known_posts = rows.last_id("posts")
    for n in member_ids:
        if known_posts == 0:
            break
        when = BASE + timedelta(days=rng.randrange(300, 1200))
        for _ in range(rng.randrange(0, 5)):
            rows.add("comments", {
                "post_id": rng.randint(1, known_posts),
                "member_id": n,
                "body": rng.choice(["Great point.", "Thanks for sharing!", "I disagree."]),
                "created_at": when + timedelta(minutes=rng.randrange(10_000)),
            })
        for _ in range(rng.randrange(0, 8)):
            rows.add("reactions", {
                "post_id": rng.randint(1, known_posts),
                "member_id": n,
                "kind": rng.choice(["like", "like", "share"]),
                "created_at": when + timedelta(minutes=rng.randrange(10_000)),
            })
        for _ in range(rng.randrange(0, 12)):
            rows.add("post_reads", {
                "member_id": n,
                "post_id": rng.randint(1, known_posts),
                "read_at": when + timedelta(minutes=rng.randrange(10_000)),
            })


def _visit(rng: random.Random, member: int | None, around: datetime) -> dict[str, Any]:
    path = rng.choice(PATHS).format(t=rng.choice(TOPICS), p=rng.randrange(1, 1000), u="x")
    return {
        "member_id": member,
        "cookie_id": f"c{rng.getrandbits(64):016x}",
        "ip_address": _ip(rng),
        "user_agent": rng.choice(AGENTS),
        "path": path,
        "search_terms": rng.choice(TOPICS) if path == "/search" else None,
        "referrer_url": rng.choice([None, "https://www.example.com/search?q=plutro",
                                    f"https://{rng.choice(SITES)}/"]),
        "next_url": rng.choice([None, f"https://{rng.choice(SITES)}/article"]),
        "plugin_site": rng.choice(SITES) if rng.random() < 0.2 else None,
        "visited_at": around + timedelta(days=rng.randrange(0, 400), seconds=rng.randrange(86_400)),
    }


def create(engine: Engine, size: int, seed: int = 0) -> dict[str, int]:
    """Create the schema and seed it, in one transaction."""
    return create_seeded(engine, metadata, _populate, size, seed)
