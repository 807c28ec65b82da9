"""The demo: one directory holding everything a first look at Fiduciary needs.

    demo = build_demo(Path("fiduciary-demo"))      # built once; a second call reuses it
    demo.settings()                                # FIDUCIARY_* settings that serve it

``build_demo`` makes, on SQLite and without any server:

- the stores (``fiduciary.db``, ``keys.db``) and a keyring in the directory;
- put.io's app database (``filelocker.db``, examples/filelocker) generated with N people,
  connected as the policy's datastore ``filelocker_db``;
- the same people signed up in the vault (encrypted, with their sign-up date, birth date,
  postal code, hometown and gender) and their choices in the consent ledger, taken from
  the app's own subscriptions and Intercom opt-outs;
- rights requests in each state the console's queue shows: received, verified, a child
  report awaiting approval, overdue, extended, done (an access package, an erasure, a
  California opt-out) and denied, each with the mail it caused in ``outbox/``;
- a console user ``admin`` with a random password and an admin API key, both kept in
  ``credentials.json`` (mode 0600) so a rerun can show them again. They are demo
  credentials over generated people: nothing here is for real data.

The directory is marked (``.fiduciary-demo``) when a build starts and gets ``demo.json``
when it ends. A complete demo is reused as it is; an interrupted one is built again; a
directory that is neither empty nor a demo is never touched (DemoError).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Final

from sqlalchemy import RowMapping, create_engine, select

from fiduciary import __version__
from fiduciary.config import Settings
from fiduciary.consent.ledger import EventKind, NewEvent
from fiduciary.core import Fiduciary
from fiduciary.examples import example_policy, load_example_app
from fiduciary.mail import OutboxMailer
from fiduciary.requests.lifecycle import RequestDesk
from fiduciary.requests.runner import RequestRunner
from fiduciary.vault.vault import NewSubject

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_SUBJECTS",
    "MIN_SUBJECTS",
    "Credentials",
    "Demo",
    "DemoError",
    "build_demo",
    "demo_settings",
    "load_demo",
]

DEFAULT_DIR: Final = Path("fiduciary-demo")
DEFAULT_SUBJECTS: Final = 2000
MIN_SUBJECTS: Final = 20  # the requests are made by user11 .. user18
MAX_SUBJECTS: Final = 1_000_000
EXAMPLE: Final = "filelocker"
DATASTORE: Final = "filelocker_db"
USERNAME: Final = "admin"
ACTOR: Final = "demo"
FORMAT: Final = 1  # of demo.json; another value is rebuilt

MARKER: Final = ".fiduciary-demo"
MANIFEST: Final = "demo.json"
CREDENTIALS: Final = "credentials.json"
APP_DB: Final = "filelocker.db"

# Where the generated people live: mostly the EU (GDPR), some in California (CCPA), the
# rest under the policy's rest-of-the-world rules. Picked per person from the seed.
_REGIONS: Final = (
    ("NL", 30), ("DE", 15), ("FR", 10), ("GB", 8), ("ES", 5), ("IT", 5), ("PL", 3),
    ("US-CA", 10), ("US-NY", 5), ("TR", 4), ("JP", 3), ("BR", 2),
)  # fmt: skip


class DemoError(Exception):
    """The demo cannot be built here (the message says why and what to do)."""


@dataclass(frozen=True)
class Credentials:
    """The demo's console login and API key, kept in clear in ``credentials.json``."""

    username: str
    password: str
    api_key_id: str
    api_key: str


@dataclass(frozen=True)
class Demo:
    """A built demo directory."""

    directory: Path
    policy: Path
    subjects: int
    seed: int
    credentials: Credentials
    requests: dict[str, str]  # what each request shows (label) -> request id
    built_at: datetime
    build_seconds: float
    built_now: bool  # False: an earlier build was reused
    notes: tuple[str, ...] = field(default=())

    @property
    def outbox(self) -> Path:
        return self.directory / "outbox"

    @property
    def app_database_url(self) -> str:
        return f"sqlite:///{self.directory / APP_DB}"

    def settings(self) -> Settings:
        return demo_settings(self.directory, self.policy)

    def outbox_count(self) -> int:
        return len(list(self.outbox.glob("*.eml"))) if self.outbox.is_dir() else 0


def demo_settings(directory: Path, policy: Path | None = None) -> Settings:
    """Settings for the demo in ``directory``: every store, the keyring, the outbox and the
    app database connection there, whatever FIDUCIARY_* variables the shell has (a demo
    must never write into a real deployment's database)."""
    d = directory.resolve()
    return Settings(
        data_dir=d,
        database_url=f"sqlite:///{d / 'fiduciary.db'}",
        keys_database_url=f"sqlite:///{d / 'keys.db'}",
        keyring=None,
        keyring_file=d / "keyring.json",
        broker_url=None,
        smtp_url=None,
        policy=policy if policy is not None else example_policy(EXAMPLE),
        connections={DATASTORE: f"sqlite:///{d / APP_DB}"},
        webhooks={},
    )


# ------------------------------------------------------------------------------ reuse
def load_demo(directory: Path) -> Demo | None:
    """The complete demo in ``directory``, or None (missing, unfinished, older format)."""
    d = directory.resolve()
    try:
        manifest = json.loads((d / MANIFEST).read_text(encoding="utf-8"))
        cred = json.loads((d / CREDENTIALS).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            return None
        if not all((d / name).is_file() for name in ("fiduciary.db", "keys.db", "keyring.json", APP_DB)):
            return None
        policy = Path(manifest["policy"])
        if not policy.is_file():  # the checkout moved: the example is the same policy
            policy = example_policy(EXAMPLE).resolve()
        return Demo(
            directory=d,
            policy=policy,
            subjects=int(manifest["subjects"]),
            seed=int(manifest["seed"]),
            credentials=Credentials(
                cred["console"]["username"],
                cred["console"]["password"],
                cred["api_key"]["id"],
                cred["api_key"]["key"],
            ),
            requests={str(k): str(v) for k, v in manifest["requests"].items()},
            built_at=datetime.fromisoformat(manifest["built_at"]),
            build_seconds=float(manifest["build_seconds"]),
            built_now=False,
        )
    except (OSError, ValueError, LookupError, TypeError):
        return None


def _prepare_directory(d: Path) -> None:
    """Make ``d`` an empty demo directory. Only an empty directory or one this module
    marked is ever emptied: ``--dir ~`` with ``--reset`` must not delete a home."""
    if d.exists() and not d.is_dir():
        raise DemoError(f"{d} is a file, not a directory; choose another --dir")
    if d.is_dir() and any(d.iterdir()):
        if not (d / MARKER).is_file():
            raise DemoError(
                f"{d} exists and is not a demo directory (no {MARKER} in it); "
                "choose another --dir, or an empty or new one"
            )
        for child in d.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    d.mkdir(parents=True, exist_ok=True)
    (d / MARKER).write_text(
        "Made by `fiduciary demo`: generated people, demo credentials. "
        "`fiduciary demo --reset` deletes and rebuilds everything in this directory.\n",
        encoding="utf-8",
    )
    # The demo is never meant to be committed (keyring, credentials, outbox).
    (d / ".gitignore").write_text("*\n", encoding="utf-8")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


# ------------------------------------------------------------------------------ build
def build_demo(
    directory: Path = DEFAULT_DIR,
    *,
    subjects: int | None = None,
    seed: int = 0,
    reset: bool = False,
    public_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Demo:
    """Build the demo in ``directory`` (or reuse the complete one there; ``reset``
    rebuilds). ``subjects``: how many people (default DEFAULT_SUBJECTS; for a reused demo
    a different number is noted, not applied). ``public_url``: where the privacy center
    will be served, for the links in the mails. ``progress`` is told each stage."""
    say = progress or (lambda _msg: None)
    if subjects is not None and not MIN_SUBJECTS <= subjects <= MAX_SUBJECTS:
        raise DemoError(f"subjects: between {MIN_SUBJECTS} and {MAX_SUBJECTS:,}, not {subjects}")
    d = directory.resolve()
    if not reset:
        found = load_demo(d)
        if found is not None:
            notes: tuple[str, ...] = ()
            if subjects is not None and subjects != found.subjects:
                notes = (
                    f"kept the demo built with {found.subjects:,} people; "
                    f"--reset rebuilds it with {subjects:,}",
                )
            return replace(found, notes=notes)
    n = subjects if subjects is not None else DEFAULT_SUBJECTS
    started = time.perf_counter()
    _prepare_directory(d)
    policy = example_policy(EXAMPLE).resolve()
    settings = demo_settings(d, policy)

    say(f"generating put.io's app database with {n:,} people")
    app = load_example_app(EXAMPLE)
    app_engine = create_engine(f"sqlite:///{d / APP_DB}")
    try:
        app.create(app_engine, n, seed)
        with app_engine.connect() as conn:
            people = conn.execute(select(app.users).order_by(app.users.c.id)).mappings().all()
            subs = conn.execute(select(app.subscriptions)).mappings().all()
    finally:
        app_engine.dispose()

    mailer = _RecordingOutbox(d / "outbox")
    with Fiduciary.open(policy, settings=settings) as fid:
        say(f"signing the same {n:,} people up in the vault, with their choices")
        emails = _sign_up(fid, people, subs, seed)
        say("creating the console user and an API key")
        cred = _access(fid)
        say("making rights requests in every state")
        status_url = f"{public_url.rstrip('/')}/requests/{{request_id}}" if public_url else None
        desk = RequestDesk.from_fiduciary(fid, mailer, status_url=status_url)
        requests = _requests(fid, desk, mailer, settings, emails)

    built_at = datetime.now(UTC)
    seconds = time.perf_counter() - started
    _write_private(
        d / CREDENTIALS,
        json.dumps(
            {
                "warning": "Demo credentials for generated people: never use them for real data.",
                "console": {"username": cred.username, "password": cred.password},
                "api_key": {"id": cred.api_key_id, "key": cred.api_key, "scopes": ["admin"]},
            },
            indent=2,
        )
        + "\n",
    )
    # Written last: its presence says the build finished.
    (d / MANIFEST).write_text(
        json.dumps(
            {
                "format": FORMAT,
                "fiduciary": __version__,
                "example": EXAMPLE,
                "policy": str(policy),
                "subjects": n,
                "seed": seed,
                "built_at": built_at.isoformat(),
                "build_seconds": round(seconds, 3),
                "requests": requests,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return Demo(d, policy, n, seed, cred, requests, built_at, seconds, built_now=True)


# ------------------------------------------------------------------------------ people
def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _sign_up(
    fid: Fiduciary, people: Sequence[RowMapping], subs: Sequence[RowMapping], seed: int
) -> dict[int, str]:
    """Every app user as a vault subject (one import, batched) and their choices as ledger
    events (one record_many); returns app user id -> email."""
    rng = random.Random(f"demo-regions-{seed}")
    regions, weights = zip(*_REGIONS, strict=True)
    version = fid.policy.version
    jurisdiction: dict[int, str] = {}
    created: dict[int, datetime] = {}
    emails: dict[int, str] = {}
    records: list[NewSubject] = []
    for p in people:
        uid = int(p["id"])
        email = str(p["email"])
        region = rng.choices(regions, weights)[0]
        j = fid.policy.jurisdiction_for(region)
        at = p["created_at"].replace(tzinfo=UTC)
        jurisdiction[uid], created[uid], emails[uid] = j, at, email
        attributes: dict[str, object] = {"user.contact.email": email}
        for column, category in (
            ("birth_date", "user.demographic.date_of_birth"),
            ("postal_code", "user.contact.address.postal_code"),
            ("hometown", "user.contact.address.city"),
            ("gender", "user.demographic.gender"),
        ):
            value = p[column]
            if value is not None:
                attributes[category] = _iso(value) if isinstance(value, date) else value
        records.append(
            NewSubject(
                kind="customer",
                jurisdiction=j,
                identities={"email": email},
                policy_version=version,
                attributes=attributes,
                age_status="adult",  # the generator makes adults only (PUT-2)
                now=at,
            )
        )
    fid.vault.import_subjects(records, actor=ACTOR)
    sid = fid.vault.find_many("email", list(emails.values()))
    subject_of = {uid: sid[email] for uid, email in emails.items()}

    # The app's own records of each person's choices, as the ledger's events.
    events: list[NewEvent] = []

    def event(uid: int, kind: EventKind, scope: str, value: str | None = None) -> None:
        events.append(
            NewEvent(
                subject_id=subject_of[uid],
                kind=kind,
                scope=scope,
                value=value,
                channel="import",
                policy_version=version,
                actor=ACTOR,
                at=created[uid],
            )
        )

    for s in subs:
        uid, topic, on = int(s["user_id"]), str(s["topic"]), bool(s["subscribed"])
        opt_in = jurisdiction[uid] == "eu" and topic == "partner_offers"
        if on:
            event(uid, EventKind.consent_given, topic)
        elif not opt_in:  # an opt-out purpose runs until the person says no
            event(uid, EventKind.consent_withdrawn, topic)
    for p in people:
        uid = int(p["id"])
        if p["intercom_opt_out"]:
            event(uid, EventKind.recipient_opt_out, "intercom")
        if rng.random() < 0.4:  # accepted the statistics cookies on the banner
            event(uid, EventKind.consent_given, "site_statistics")
            # The banner's own record of the same choice: the center's cookie section
            # must not show "Analytics" off to a person who accepted them.
            event(uid, EventKind.setting, "cookies:analytics", "granted")
    fid.consent.record_many(events)
    return emails


# ------------------------------------------------------------------------------ access
def _access(fid: Fiduciary) -> Credentials:
    import secrets

    from fiduciary.web.auth import create_api_key, create_user

    # 16 URL-safe characters (96 bits): typed once from the terminal, never reused.
    password = secrets.token_urlsafe(12)
    create_user(fid, USERNAME, password, "admin", actor=ACTOR)
    key_id, key = create_api_key(fid, "demo", ["admin"], actor=ACTOR)
    return Credentials(USERNAME, password, key_id, key)


# ------------------------------------------------------------------------------ requests
class _RecordingOutbox(OutboxMailer):
    """The outbox, remembering each message sent in this process, so the demo can read
    the codes it mails to its own requesters (as they would from their inbox)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.sent: list[EmailMessage] = []

    def deliver(self, msg: EmailMessage, at: datetime | None = None) -> None:
        super().deliver(msg, at)
        self.sent.append(msg)

    def code_for(self, request_id: str) -> str:
        for msg in reversed(self.sent):
            body = msg.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""
            found = re.search(r"(\d{6,})", str(msg["Subject"]))
            if found and f"Request reference: {request_id}" in text:
                return found.group(1)
        raise DemoError(f"no verification code was mailed for request {request_id}")


def _requests(
    fid: Fiduciary,
    desk: RequestDesk,
    mailer: _RecordingOutbox,
    settings: Settings,
    emails: Mapping[int, str],
) -> dict[str, str]:
    """One request per state of the queue; returns label -> request id."""
    now = datetime.now(UTC)
    made: dict[str, str] = {}

    def submit(
        label: str, type_: str, contact: str, region: str, *, days_ago: float = 0, **kw: Any
    ) -> tuple[str, datetime]:
        at = now - timedelta(days=days_ago)
        sub = desk.submit(
            type_, contact={"email": contact}, region=region, actor="privacy_center", now=at, **kw
        )
        made[label] = sub.request_id
        return sub.request_id, at

    def verify(rid: str, at: datetime) -> None:
        desk.verify_code(rid, mailer.code_for(rid), now=at + timedelta(minutes=3))

    # Waiting for the requester to enter the mailed code.
    submit("received", "access", emails[11], "NL", days_ago=0.05)
    # Verified; the team may run it (or approve it first).
    rid, at = submit("verified", "portability", emails[12], "DE", days_ago=2)
    verify(rid, at)
    # A parent reports a child's account: verified, it waits for the team's approval.
    rid, at = submit(
        "child_report",
        "erase",
        "parent@example.org",
        "NL",
        days_ago=1,
        details={"child_report": True, "account": {"email": emails[13]}},
    )
    verify(rid, at)
    # Received 40 days ago, verified, never run: one month was the deadline.
    rid, at = submit("overdue", "access", emails[14], "FR", days_ago=40)
    verify(rid, at)
    # Extended once, with the reason the requester was told.
    rid, at = submit("extended", "erase", emails[15], "GB", days_ago=25)
    verify(rid, at)
    desk.extend(
        rid,
        "Your data is also held by a processor whose deletion we must confirm.",
        "console:admin",
        now=at + timedelta(days=20),
    )
    # Refused: the requester never proved the address (no code entered for two weeks).
    rid, _ = submit("denied", "access", "someone@example.net", "NL", days_ago=15)
    desk.deny(
        rid,
        "identity_not_verified",
        "console:admin",
        note="The verification code was never entered.",
        now=now - timedelta(days=1),
    )
    # Run as one job over the app database: an access package, an erasure (payments kept
    # for tax law: done in part) and a California opt-out of sale (no verification).
    ran: list[str] = []
    for label, type_, uid, region in (
        ("access_done", "access", 16, "NL"),
        ("erasure_done", "erase", 17, "DE"),
    ):
        rid, at = submit(label, type_, emails[uid], region, days_ago=3)
        verify(rid, at)
        ran.append(rid)
    rid, _ = submit("opt_out_done", "opt_out_of_sale", emails[18], "US-CA", days_ago=1)
    ran.append(rid)
    with RequestRunner(fid, desk, connections=settings.connections) as runner:
        job = runner.run(ran, actor="console:admin")
        st = runner.wait(job, timeout=120)
        if st.status != "done":
            raise DemoError(f"the demo's request job ended {st.status}: {st.error}")
    return made


def request_states(fid: Fiduciary, demo: Demo) -> Iterator[tuple[str, str, bool]]:
    """(label, status, overdue) of each demo request, as the queue shows them now."""
    desk = RequestDesk.from_fiduciary(fid, None)
    for label, rid in demo.requests.items():
        v = desk.status(rid)
        yield label, v.status, v.overdue
