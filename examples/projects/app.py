"""Planio's app database: the 11 tables the ``projects_db`` datastore in policy.yaml
describes (a Redmine-like schema), and a deterministic seed-data generator.

Portable SQLAlchemy Core types only, so the same schema runs on SQLite, PostgreSQL and
MariaDB. ``seed`` generates one chunk of accounts at a time and writes set-based batches of
at most 5,000 rows, so a million users need no more memory than a thousand.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta
from decimal import Decimal

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
    Column("login", String(255), unique=True),
    Column("firstname", String(100)),
    Column("lastname", String(100)),
    Column("email", String(254), unique=True),
    Column("hashed_password", String(128)),
    Column("created_on", DateTime, nullable=False),
    Column("last_login_on", DateTime),
)

accounts = Table(
    "accounts",
    metadata,
    id_column(),
    foreign_key_column("owner_id", "users.id"),
    Column("subdomain", String(63), nullable=False, unique=True),
    Column("plan", String(32), nullable=False),
    Column("company", String(200)),
    Column("billing_name", String(200)),
    Column("street", String(200)),
    Column("postal_code", String(16)),
    Column("city", String(100)),
    Column("country", String(2)),
    Column("phone", String(32)),
    Column("fax", String(32)),
    Column("created_on", DateTime, nullable=False),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    id_column(),
    foreign_key_column("account_id", "accounts.id"),
    Column("kind", String(16), nullable=False),  # credit_card | direct_debit
    Column("holder_name", String(200)),
    Column("card_last4", String(4)),
    Column("card_expiry", String(7)),
    Column("iban", String(34)),
    Column("bic", String(11)),
    Column("created_on", DateTime, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    id_column(),
    foreign_key_column("account_id", "accounts.id"),
    Column("number", String(32), nullable=False),
    Column("billing_name", String(200)),
    Column("billing_address", Text),
    Column("amount", Numeric(10, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("issued_on", Date, nullable=False),
    Column("paid_on", Date),
)

projects = Table(
    "projects",
    metadata,
    id_column(),
    foreign_key_column("account_id", "accounts.id"),
    Column("identifier", String(100), nullable=False),
    Column("name", String(255), nullable=False),
    Column("is_public", Boolean, nullable=False),
    Column("created_on", DateTime, nullable=False),
)

members = Table(
    "members",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id"),
    foreign_key_column("project_id", "projects.id"),
    Column("role", String(32), nullable=False),
    Column("created_on", DateTime, nullable=False),
)

# Content belongs to the project; its author link is cut on erasure (nullable author).
issues = Table(
    "issues",
    metadata,
    id_column(),
    foreign_key_column("project_id", "projects.id"),
    foreign_key_column("author_id", "users.id", nullable=True),
    foreign_key_column("assigned_to_id", "users.id", nullable=True),
    Column("subject", String(255)),
    Column("description", Text),
    Column("is_private", Boolean, nullable=False),
    Column("created_on", DateTime, nullable=False),
    Column("updated_on", DateTime, nullable=False),
)

comments = Table(
    "comments",
    metadata,
    id_column(),
    foreign_key_column("issue_id", "issues.id"),
    foreign_key_column("author_id", "users.id", nullable=True),
    Column("notes", Text),
    Column("created_on", DateTime, nullable=False),
)

wiki_pages = Table(
    "wiki_pages",
    metadata,
    id_column(),
    foreign_key_column("project_id", "projects.id"),
    foreign_key_column("author_id", "users.id", nullable=True),
    Column("title", String(255)),
    Column("text", Text),
    Column("updated_on", DateTime, nullable=False),
)

attachments = Table(
    "attachments",
    metadata,
    id_column(),
    foreign_key_column("issue_id", "issues.id"),
    foreign_key_column("author_id", "users.id", nullable=True),
    Column("filename", String(255)),
    Column("disk_filename", String(255), nullable=False),
    Column("filesize", BigInteger, nullable=False),
    Column("content_type", String(255)),
    Column("digest", String(64), nullable=False),
    Column("created_on", DateTime, nullable=False),
)

access_logs = Table(
    "access_logs",
    metadata,
    id_column(),
    foreign_key_column("user_id", "users.id", nullable=True),  # None: a visitor
    Column("requested_at", DateTime, nullable=False),
    Column("ip_address", String(45)),
    Column("user_agent", String(512)),
    Column("referrer", Text),
    Column("path", String(512)),
)

BATCH = 5_000  # rows per INSERT statement
USERS_PER_ACCOUNT = 5  # the first user of each group of five owns the account
ACCOUNTS_PER_CHUNK = 200  # accounts generated (with all their rows) before writing
BASE = datetime(2024, 1, 1)  # fixed, so two runs with one seed are equal row for row

_FIRST = ("Anna", "Jan", "Lea", "Tom", "Mia", "Ali", "Eva", "Paul", "Zoe", "Ben")
_LAST = ("Schmidt", "Meyer", "Yilmaz", "Novak", "Rossi", "Dubois", "Smith", "Berg")
_CITIES = (("Berlin", "DE"), ("Hamburg", "DE"), ("Wien", "AT"), ("Zürich", "CH"), ("Paris", "FR"))
_PLANS = (("bronze", Decimal("19.00")), ("silver", Decimal("39.00")), ("gold", Decimal("79.00")))
_ROLES = ("manager", "developer", "reporter")
_TOPICS = ("Login fails on Safari", "Export to CSV", "Update the style guide", "Release 2.1")
_REFERRERS = (None, "https://www.google.com/", "https://plan.io/", "https://github.com/")
_PATHS = ("/", "/projects", "/issues", "/wiki", "/my/account", "/login")
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/121.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
)
_TYPES = (("pdf", "application/pdf"), ("png", "image/png"), ("txt", "text/plain"))


def _at(rng: random.Random, days: int = 365) -> datetime:
    return random_time(rng, BASE, days)


def _fill(conn: Connection, size: int, rng_seed: int) -> dict[str, int]:
    rng = random.Random(rng_seed)
    rows = PendingRows(t.name for t in metadata.sorted_tables)
    n_accounts = -(-size // USERS_PER_ACCOUNT)
    for accs in subject_chunks(n_accounts, ACCOUNTS_PER_CHUNK):
        for acc in accs:
            uids = list(
                range((acc - 1) * USERS_PER_ACCOUNT + 1, min(size, acc * USERS_PER_ACCOUNT) + 1)
            )
            opened = _at(rng)
            people: dict[int, str] = {}
            for uid in uids:
                name = (rng.choice(_FIRST), rng.choice(_LAST))
                people[uid] = f"{name[0]} {name[1]}"
                joined = opened + timedelta(days=rng.randint(0, 30)) if uid != uids[0] else opened
                rows.add("users", {
                    "id": uid,
                    "login": f"user{uid}",
                    "firstname": name[0],
                    "lastname": name[1],
                    "email": f"user{uid}@example.com",
                    "hashed_password": random_hex(rng, 64),
                    "created_on": joined,
                    "last_login_on": joined + timedelta(days=rng.randint(0, 300)),
                })
            owner = uids[0]
            city, country = rng.choice(_CITIES)
            plan, price = rng.choice(_PLANS)
            street = f"Musterstraße {rng.randint(1, 200)}"
            postal = f"{rng.randint(10000, 99999)}"
            rows.add("accounts", {
                "id": acc,
                "owner_id": owner,
                "subdomain": f"team{acc}",
                "plan": plan,
                "company": f"Team {acc} GmbH" if rng.random() < 0.7 else None,
                "billing_name": people[owner],
                "street": street,
                "postal_code": postal,
                "city": city,
                "country": country,
                "phone": f"+49 30 {rng.randint(1000000, 9999999)}" if rng.random() < 0.6 else None,
                "fax": f"+49 30 {rng.randint(1000000, 9999999)}" if rng.random() < 0.1 else None,
                "created_on": opened,
            })
            card = rng.random() < 0.6
            rows.add("payment_methods", {
                "account_id": acc,
                "kind": "credit_card" if card else "direct_debit",
                "holder_name": people[owner],
                "card_last4": f"{rng.randint(0, 9999):04d}" if card else None,
                "card_expiry": f"{rng.randint(2025, 2030)}-{rng.randint(1, 12):02d}" if card else None,
                "iban": None if card else f"DE{rng.randint(10, 99)}{rng.randint(10**17, 10**18 - 1)}",
                "bic": None if card else "COBADEFFXXX",
                "created_on": opened,
            })
            for month in range(rng.randint(1, 12)):
                issued = (opened + timedelta(days=30 * month)).date()
                number = rows.next_id("invoices")
                rows.add("invoices", {
                    "id": number,
                    "account_id": acc,
                    "number": f"PL-{number:08d}",
                    "billing_name": people[owner],
                    "billing_address": f"{street}\n{postal} {city}\n{country}",
                    "amount": price,
                    "currency": "EUR",
                    "issued_on": issued,
                    "paid_on": issued + timedelta(days=rng.randint(0, 14)),
                })
            for p in range(rng.randint(1, 3)):
                pid = rows.add("projects", {
                    "account_id": acc,
                    "identifier": f"project-{p + 1}",
                    "name": f"Project {p + 1}",
                    "is_public": rng.random() < 0.1,
                    "created_on": opened,
                })
                team = [u for u in uids if u == owner or rng.random() < 0.7]
                for uid in team:
                    rows.add("members", {
                        "user_id": uid,
                        "project_id": pid,
                        "role": "manager" if uid == owner else rng.choice(_ROLES),
                        "created_on": opened,
                    })
                for _ in range(rng.randint(1, 3)):
                    rows.add("wiki_pages", {
                        "project_id": pid,
                        "author_id": rng.choice(team),
                        "title": rng.choice(("Wiki", "Onboarding", "Release checklist")),
                        "text": "h1. Welcome\n\nSee the issues for what is next.",
                        "updated_on": _at(rng),
                    })
                for _ in range(rng.randint(1, 3) * len(team)):
                    opened_issue = _at(rng)
                    iid = rows.add("issues", {
                        "project_id": pid,
                        "author_id": rng.choice(team),
                        "assigned_to_id": rng.choice(team) if rng.random() < 0.7 else None,
                        "subject": rng.choice(_TOPICS),
                        "description": "Steps to reproduce are in the attached file.",
                        "is_private": rng.random() < 0.05,
                        "created_on": opened_issue,
                        "updated_on": opened_issue + timedelta(hours=rng.randint(0, 500)),
                    })
                    for _ in range(rng.randint(0, 2)):
                        rows.add("comments", {
                            "issue_id": iid,
                            "author_id": rng.choice(team),
                            "notes": "Done, please check.",
                            "created_on": opened_issue + timedelta(hours=rng.randint(1, 500)),
                        })
                    if rng.random() < 0.3:
                        ext, mime = rng.choice(_TYPES)
                        digest = hashlib.sha256(f"{rng_seed}-{iid}".encode()).hexdigest()
                        rows.add("attachments", {
                            "issue_id": iid,
                            "author_id": rng.choice(team),
                            "filename": f"screenshot-{iid}.{ext}",
                            "disk_filename": f"{digest[:16]}.{ext}",
                            "filesize": rng.randint(1_000, 20_000_000),
                            "content_type": mime,
                            "digest": digest,
                            "created_on": opened_issue,
                        })
            for uid in uids:
                for _ in range(rng.randint(1, 5)):
                    rows.add("access_logs", {
                        "user_id": uid if rng.random() < 0.8 else None,
                        "requested_at": _at(rng),
                        "ip_address": random_ip(rng),
                        "user_agent": rng.choice(_AGENTS),
                        "referrer": rng.choice(_REFERRERS),
                        "path": rng.choice(_PATHS),
                    })
        # Parents before children, so foreign keys hold on every backend.
        rows.flush(conn, metadata.sorted_tables, BATCH)
    return rows.written


def seed(conn: Connection, size: int, seed: int = 0) -> dict[str, int]:
    """Fill the tables with ``size`` users, their accounts and rows; return row counts."""
    if size < 0:
        raise ValueError("size must be zero or more")
    return _fill(conn, size, seed)


def create(engine: Engine, size: int, seed: int = 0) -> dict[str, int]:
    """Create the tables and seed them in one transaction."""
    return create_seeded(engine, metadata, _fill, size, seed)
