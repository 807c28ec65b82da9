"""Ploomber Cloud's application database, as the policy's ``dataplatform_db`` describes it.

The tables match the datastore in ``policy.yaml`` column for column, so that rights
requests and retention can run against a real database. ``seed`` fills it with synthetic,
deterministic data: the same ``size`` and ``seed`` give the same rows on every run and
every dialect (SQLite, PostgreSQL, MariaDB).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

from fiduciary.examples import PendingRows, create_seeded, foreign_key_column, id_column, subject_chunks

metadata = MetaData()

# SQLite only auto-assigns INTEGER keys; we always supply ids, but keep the type honest.
BigId = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    id_column(Integer),
    Column("email", String(255), unique=True),  # nullable: erasure masks it to NULL
    Column("name", String(200)),
    Column("phone", String(40)),
    Column("company", String(200)),
    Column("password_hash", String(255)),
    Column("region", String(6)),
    Column("age_confirmed", Boolean, nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("last_active_at", DateTime),
    Column("inactivity_notice_sent_at", DateTime),
)

organizations = Table(
    "organizations",
    metadata,
    id_column(Integer),
    Column("name", String(200), nullable=False),
    Column("plan", String(20), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    id_column(Integer),
    foreign_key_column("organization_id", "organizations.id", Integer),
    foreign_key_column("user_id", "users.id", Integer),
    Column("role", String(20), nullable=False),
    Column("joined_at", DateTime, nullable=False),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    id_column(Integer),
    foreign_key_column("user_id", "users.id", Integer),
    Column("card_brand", String(20)),
    Column("card_last4", String(4)),
    Column("exp_month", Integer),
    Column("exp_year", Integer),
    Column("processor_token", String(64)),
    Column("created_at", DateTime, nullable=False),
)

billing_addresses = Table(
    "billing_addresses",
    metadata,
    id_column(Integer),
    foreign_key_column("user_id", "users.id", Integer),
    Column("street", String(200)),
    Column("city", String(100)),
    Column("state", String(100)),
    Column("postal_code", String(20)),
    Column("country", String(2)),
    Column("created_at", DateTime, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    id_column(Integer),
    foreign_key_column("user_id", "users.id", Integer),
    Column("billing_name", String(200)),
    Column("billing_address", Text),
    Column("card_last4", String(4)),
    Column("amount", Numeric(10, 2), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("issued_at", DateTime, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    id_column(Integer),
    foreign_key_column("owner_id", "users.id", Integer),
    Column("name", String(200)),
    Column("visibility", String(10), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

notebooks = Table(
    "notebooks",
    metadata,
    id_column(Integer),
    foreign_key_column("project_id", "projects.id", Integer),
    Column("title", String(200)),
    Column("content", Text),
    Column("updated_at", DateTime, nullable=False),
)

compute_jobs = Table(
    "compute_jobs",
    metadata,
    id_column(Integer),
    foreign_key_column("user_id", "users.id", Integer),
    foreign_key_column("notebook_id", "notebooks.id", Integer),
    Column("status", String(20), nullable=False),
    Column("machine_type", String(40)),
    Column("cpu_seconds", Integer),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
)

usage_events = Table(
    "usage_events",
    metadata,
    id_column(BigId),
    # nullable: visitors without an account, and erasure unlinks events from the person
    foreign_key_column("user_id", "users.id", Integer, nullable=True),
    Column("cookie_id", String(64)),
    Column("occurred_at", DateTime, nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("page_url", String(500)),
    Column("referrer_url", String(500)),
    Column("search_query", String(200)),
    Column("ip_address", String(45)),
    Column("user_agent", String(300)),
    Column("os", String(40)),
    Column("location", String(100)),
)

api_keys = Table(
    "api_keys",
    metadata,
    id_column(Integer),
    foreign_key_column("user_id", "users.id", Integer),
    Column("label", String(100)),
    Column("prefix", String(12), nullable=False),
    Column("key_hash", String(128)),
    Column("created_at", DateTime, nullable=False),
    Column("last_used_at", DateTime),
)

newsletter_subscriptions = Table(
    "newsletter_subscriptions",
    metadata,
    id_column(Integer),
    Column("email", String(255), index=True),
    foreign_key_column("user_id", "users.id", Integer, nullable=True),
    Column("consent_version", String(20)),
    Column("source", String(40)),
    Column("subscribed_at", DateTime),
    Column("unsubscribed_at", DateTime),
)

# --------------------------------------------------------------------------- seed data

BATCH = 5_000  # rows per INSERT statement, at most
CHUNK = 1_000  # users generated at a time; bounds memory whatever the size
BASE = datetime(2022, 7, 2)  # the policy's revision date; never now(), so runs repeat

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim",
         "Margaret", "Guido", "Hedy", "John", "Katherine", "Linus", "Sophie", "Yukihiro"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson",
        "Perlman", "Lee", "Hamilton", "Rossum", "Lamarr", "Backus", "Johnson", "Wilson"]
COMPANIES = ["Acme Analytics", "Globex Data", "Initech", "Umbrella Labs", "Hooli", "Vandelay",
             "Stark Industries", "Wayne Research", "Tyrell Corp", "Soylent Data"]
# (region, weight): a share of Californians and EU residents so every jurisdiction appears
REGIONS = [("US-CA", 20), ("US-NY", 12), ("US-TX", 8), ("DE", 10), ("FR", 6), ("NL", 4),
           ("GB", 8), ("IN", 12), ("BR", 8), ("CA", 6), ("JP", 6)]
CITIES = {"US-CA": ("San Francisco", "CA", "US"), "US-NY": ("New York", "NY", "US"),
          "US-TX": ("Austin", "TX", "US"), "DE": ("Berlin", "BE", "DE"), "FR": ("Paris", "IDF", "FR"),
          "NL": ("Amsterdam", "NH", "NL"), "GB": ("London", "LND", "GB"), "IN": ("Bengaluru", "KA", "IN"),
          "BR": ("São Paulo", "SP", "BR"), "CA": ("Toronto", "ON", "CA"), "JP": ("Tokyo", "13", "JP")}
PAGES = ["/", "/pricing", "/docs", "/docs/quickstart", "/blog", "/projects", "/notebooks",
         "/settings", "/jobs", "/login"]
REFERRERS = [None, "https://www.google.com/", "https://github.com/ploomber",
             "https://news.ycombinator.com/", "https://www.reddit.com/r/datascience/"]
SEARCHES = ["pandas", "gpu", "pipeline", "sql", "scheduling", "jupyter", "dashboard"]
EVENTS = ["page_view", "page_view", "page_view", "search", "notebook_open", "job_run", "login"]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/102.0",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 12_4) Safari/605.1.15",
          "Mozilla/5.0 (X11; Linux x86_64) Chrome/103.0.0.0"]
SYSTEMS = ["Windows 10", "macOS 12", "Ubuntu 22.04"]
MACHINES = ["cpu-small", "cpu-large", "gpu-t4"]
BRANDS = ["visa", "mastercard", "amex"]
INVOICE_AMOUNTS = [Decimal("20.00"), Decimal("49.00"), Decimal("99.00"), Decimal("250.00")]


def _user_rows(rng: random.Random, rows: PendingRows, numbers: range) -> None:
    """All rows belonging to the users numbered ``numbers``."""
    regions = [r for r, _ in REGIONS]
    weights = [w for _, w in REGIONS]
    for n in numbers:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        region = rng.choices(regions, weights)[0]
        created = BASE - timedelta(days=rng.randint(30, 1500), seconds=rng.randint(0, 86_399))
        # Most people were active lately; some went quiet long ago (PLO-9 inactivity).
        idle_days = rng.randint(0, 60) if rng.random() < 0.85 else rng.randint(400, 900)
        last_active = max(created, BASE - timedelta(days=idle_days, seconds=rng.randint(0, 86_399)))
        noticed = last_active + timedelta(days=700) if (BASE - last_active).days >= 700 else None
        roll = rng.random()
        status = "active" if roll < 0.97 else "suspended" if roll < 0.99 else "rejected"
        rows.add("users", {
            "id": n,
            "email": f"user{n}@example.com",
            "name": name,
            "phone": f"+1555{n % 10_000_000:07d}" if rng.random() < 0.6 else None,
            "company": rng.choice(COMPANIES) if rng.random() < 0.5 else None,
            "password_hash": f"argon2id${rng.getrandbits(128):032x}",
            "region": region,
            "age_confirmed": True,
            "status": status,
            "created_at": created,
            "last_active_at": last_active,
            "inactivity_notice_sent_at": noticed,
        })

        if n % 10 == 1:  # every tenth user founds a team
            org = rows.next_id("organizations")
            rows.add("organizations", {
                "id": org,
                "name": f"{rng.choice(COMPANIES)} team {org}",
                "plan": rng.choice(["free", "team", "enterprise"]),
                "created_at": created,
            })
            rows.add("memberships", {"organization_id": org, "user_id": n, "role": "owner",
                                     "joined_at": created})
        elif rows.last_id("organizations") and rng.random() < 0.3:
            rows.add("memberships", {
                "organization_id": rng.randint(1, rows.last_id("organizations")),
                "user_id": n,
                "role": rng.choice(["member", "member", "admin"]),
                "joined_at": created + timedelta(days=rng.randint(0, 20)),
            })

        if rng.random() < 0.25:  # a paying user: card, address, invoices (PLO-2)
            last4 = f"{rng.randint(0, 9999):04d}"
            city, state, country = CITIES[region]
            street = f"{rng.randint(1, 999)} Market Street"
            rows.add("payment_methods", {
                "user_id": n, "card_brand": rng.choice(BRANDS),
                "card_last4": last4, "exp_month": rng.randint(1, 12), "exp_year": rng.randint(2022, 2028),
                "processor_token": f"tok_{rng.getrandbits(96):024x}", "created_at": created,
            })
            postal = f"{rng.randint(10000, 99999)}"
            rows.add("billing_addresses", {
                "user_id": n, "street": street, "city": city,
                "state": state, "postal_code": postal, "country": country, "created_at": created,
            })
            for k in range(rng.randint(1, 6)):
                rows.add("invoices", {
                    "user_id": n, "billing_name": name,
                    "billing_address": f"{street}\n{postal} {city}\n{country}", "card_last4": last4,
                    "amount": rng.choice(INVOICE_AMOUNTS), "currency": "USD",
                    "issued_at": created + timedelta(days=30 * (k + 1)),
                })

        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            project = rows.next_id("projects")
            rows.add("projects", {
                "id": project, "owner_id": n, "name": f"{rng.choice(SEARCHES)}-project-{project}",
                "visibility": rng.choice(["private", "private", "team", "public"]), "created_at": created,
            })
            for _ in range(rng.randint(1, 3)):
                notebook = rows.next_id("notebooks")
                edited = created + timedelta(days=rng.randint(0, 30))
                rows.add("notebooks", {
                    "id": notebook, "project_id": project, "title": f"analysis-{notebook}.ipynb",
                    "content": f"import pandas as pd\ndf = pd.read_csv('d{notebook}.csv')\ndf.describe()\n",
                    "updated_at": edited,
                })
                for _ in range(rng.choice([0, 1, 1, 2])):
                    started = edited + timedelta(minutes=rng.randint(1, 600))
                    seconds = rng.randint(5, 7200)
                    rows.add("compute_jobs", {
                        "user_id": n, "notebook_id": notebook,
                        "status": rng.choice(["succeeded", "succeeded", "failed"]),
                        "machine_type": rng.choice(MACHINES), "cpu_seconds": seconds,
                        "started_at": started, "finished_at": started + timedelta(seconds=seconds),
                    })

        cookie = f"{rng.getrandbits(128):032x}"
        ip = f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        agent = rng.randrange(len(AGENTS))
        # Visitors' events carry no user id: Additional Information about someone unknown.
        for owner in [n] * rng.randint(2, 8) + [None] * rng.choice([0, 0, 1]):
            event = rng.choice(EVENTS)
            rows.add("usage_events", {
                "user_id": owner,
                "cookie_id": cookie if owner else f"{rng.getrandbits(128):032x}",
                "occurred_at": last_active - timedelta(minutes=rng.randint(0, 100_000)),
                "event_type": event, "page_url": rng.choice(PAGES),
                "referrer_url": rng.choice(REFERRERS),
                "search_query": rng.choice(SEARCHES) if event == "search" else None,
                "ip_address": ip, "user_agent": AGENTS[agent], "os": SYSTEMS[agent],
                "location": region if rng.random() < 0.7 else None,
            })

        if rng.random() < 0.3:
            for _ in range(rng.randint(1, 2)):
                rows.add("api_keys", {
                    "user_id": n, "label": rng.choice(["ci", "laptop", "scheduler"]),
                    "prefix": f"pk_{rng.getrandbits(32):08x}", "key_hash": f"{rng.getrandbits(256):064x}",
                    "created_at": created + timedelta(days=rng.randint(0, 100)),
                    "last_used_at": last_active if rng.random() < 0.8 else None,
                })

        # Newsletters only after sign-up (PLO-4); some people later unsubscribed.
        if rng.random() < 0.4:
            rows.add("newsletter_subscriptions", _subscription(rng, f"user{n}@example.com", n, created))
        if rng.random() < 0.1:  # someone without an account signs up on the blog
            email = f"subscriber{rows.next_id('subscribers')}@example.com"
            rows.add("newsletter_subscriptions", _subscription(rng, email, None, created))


def _subscription(rng: random.Random, email: str, user_id: int | None, after: datetime) -> dict[str, Any]:
    subscribed = after + timedelta(days=rng.randint(0, 30))
    left = subscribed + timedelta(days=rng.randint(10, 400)) if rng.random() < 0.2 else None
    return {
        "email": email, "user_id": user_id,
        "consent_version": "2022-07-02", "source": rng.choice(["signup_form", "blog", "account_settings"]),
        "subscribed_at": subscribed, "unsubscribed_at": left if left and left < BASE else None,
    }


def _populate(conn: Connection, size: int, rng_seed: int) -> dict[str, int]:
    rng = random.Random(rng_seed)
    rows = PendingRows(t.name for t in metadata.sorted_tables)
    for numbers in subject_chunks(size, CHUNK):
        _user_rows(rng, rows, numbers)
        # Parents before children, so foreign keys hold on every dialect.
        rows.flush(conn, metadata.sorted_tables, BATCH)
    return rows.written


def seed(conn: Connection, size: int, seed: int = 0) -> dict[str, int]:
    """Insert ``size`` users and their related rows; returns row counts per table."""
    return _populate(conn, size, seed)


def create(engine: Engine, size: int, seed: int = 0) -> dict[str, int]:
    """Create the schema and seed it, in one transaction."""
    return create_seeded(engine, metadata, _populate, size, seed)
