"""The tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them.

Two databases:
- the **data** store: subjects, their blind-indexed identities, encrypted attributes, the
  consent ledger and its derived state, the audit log, published policy versions;
- the **key** store: one wrapped data key per subject. It is kept apart so that its
  backups can be short-lived: destroying a subject's key (crypto-shredding) makes every
  copy of that subject's data, in any backup of the data store, unreadable.

No personal data is stored in clear: identity values and attributes are AES-GCM
ciphertexts under the subject's data key; lookups go through HMAC blind indexes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

data = MetaData(naming_convention=NAMING)
keys = MetaData(naming_convention=NAMING)

TS = DateTime(timezone=True)

subjects = Table(
    "subjects",
    data,
    Column("id", String(32), primary_key=True),  # random, carries no meaning
    Column("kind", String(64), nullable=False),  # a subject kind of the policy
    Column("jurisdiction", String(32), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),  # active|closed|erased
    Column("age_status", String(16), nullable=False, server_default="unknown"),  # unknown|adult|under_age
    Column("policy_version", String(64), nullable=False),  # in force when first collected
    Column("created_at", TS, nullable=False),
    Column("last_activity_at", TS, nullable=True),
    Column("closed_at", TS, nullable=True),
    Column("erased_at", TS, nullable=True),
)

identities = Table(
    "identities",
    data,
    Column("kind", String(32), primary_key=True),  # email | phone_number | user_id | ...
    Column("blind_index", LargeBinary(32), primary_key=True),  # HMAC-SHA256(normalized)
    # subjects.id; no foreign key: the vault alone writes these rows (migration data_0010)
    Column("subject_id", String(32), nullable=False),
    Column("value", LargeBinary, nullable=False),  # AES-GCM under the subject's data key
    Index(None, "subject_id"),
)

attributes = Table(
    "attributes",
    data,
    Column("subject_id", String(32), primary_key=True),  # subjects.id, as in identities
    Column("category", String(128), primary_key=True),
    Column("value", LargeBinary, nullable=False),  # AES-GCM under the subject's data key
    Column("source", String(16), nullable=False),  # subject|observed|inferred|third_party|other_users
    Column("activity", String(64), nullable=True),
    Column("policy_version", String(64), nullable=False),
    Column("collected_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# The consent ledger: append-only. Every change of a person's choices is one row: consent
# given or withdrawn, objection, restriction, opt-out of sale, acceptance of a new policy
# version, a setting (visibility, linked account, caching allowed ...).
consent_events = Table(
    "consent_events",
    data,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False),  # kept after erasure: proof of choices
    Column("kind", String(32), nullable=False),
    Column("scope", String(128), nullable=False),  # purpose key, '*', 'sale', setting name ...
    Column("value", String(128), nullable=True),  # for settings and accepted versions
    Column("at", TS, nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("notice_hash", String(64), nullable=True),  # sha256 of the exact text shown
    Column("language", String(16), nullable=True),
    Column("method", String(24), nullable=True),  # checkbox, button, link, signal, import ...
    Column("channel", String(24), nullable=False),  # web_form|api|email_link|gpc_signal|import|...
    Column("ip", String(64), nullable=True),  # truncated (/24, /48)
    Column("expires_at", TS, nullable=True),
    Column("actor", String(128), nullable=True),
    Index(None, "subject_id", "id"),
)

# Derived from consent_events, rebuildable at any time: the latest event per (subject, scope).
consent_state = Table(
    "consent_state",
    data,
    Column("subject_id", String(32), primary_key=True),
    Column("scope", String(128), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("value", String(128), nullable=True),
    Column("at", TS, nullable=False),
    Column("expires_at", TS, nullable=True),
    Column("event_id", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    data,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", TS, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("purpose", String(64), nullable=True),
    Column("subject", String(64), nullable=True),  # a pseudonym, never the subject id
    Column("result", String(32), nullable=False),
    Column("detail", Text, nullable=True),  # JSON, no personal data
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "subject", "seq"),  # a person's entries, for queries and access reports
)

# The chain's head, one row: appenders lock it (SELECT ... FOR UPDATE on PostgreSQL; SQLite
# transactions are already serial), so concurrent processes extend one chain.
audit_head = Table(
    "audit_head",
    data,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    data,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", TS, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("signature", String(128), nullable=False),
)

policy_versions = Table(
    "policy_versions",
    data,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("effective", String(10), nullable=False),
    Column("published_at", TS, nullable=False),
    Column("text", Text, nullable=False),
    Column("material_purposes", Text, nullable=False, server_default="[]"),  # JSON list
    UniqueConstraint("digest"),
)

subject_keys = Table(
    "subject_keys",
    keys,
    Column("subject_id", String(32), primary_key=True),
    Column("kek_id", String(32), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False),
)

# --------------------------------------------------------------------------- rights requests
# A request's progress is a ledger too: request_events is append-only; `requests.status`
# and `due_at` are the derived view, rewritten with each event in the same transaction.
# What the requester told us (contact, data points, corrections) is personal data: it is
# encrypted under the request's own data key in the key store (request_keys), which is
# destroyed when the request record's retention ends (LAW-13: 24 months), leaving the
# metrics.

requests = Table(
    "requests",
    data,
    Column("id", String(32), primary_key=True),  # random; the public reference
    Column("type", String(32), nullable=False),  # a RequestType
    Column("jurisdiction", String(32), nullable=False),
    Column("status", String(24), nullable=False),  # received|verified|approved|running|done|partial|denied
    Column("subject_id", String(32), nullable=True),  # set once the requester is matched
    Column("requester_index", LargeBinary(32), nullable=False),  # blind index of the contact
    Column("payload", LargeBinary, nullable=False),  # encrypted JSON: contact, data points, details
    Column("verification", String(24), nullable=False),  # level required (policy)
    Column("received_at", TS, nullable=False),
    Column("due_at", TS, nullable=False),
    Column("extended", Integer, nullable=False, server_default="0"),  # 0 or 1: one extension
    Column("closed_at", TS, nullable=True),
    Column("job_id", String(32), nullable=True),
    Index(None, "requester_index", "type"),
    Index(None, "status", "due_at"),
)

request_events = Table(
    "request_events",
    data,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(32), ForeignKey("requests.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", TS, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("detail", Text, nullable=True),  # JSON, no personal data
    Index(None, "request_id", "id"),
)

request_codes = Table(
    "request_codes",
    data,
    Column("request_id", String(32), ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True),
    Column("code_hash", String(64), nullable=False),  # HMAC of the one-time code
    Column("expires_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("used_at", TS, nullable=True),
)

# Jobs: a plan persisted as idempotent steps. Workers lease a step (leased_until); a worker
# that dies loses its lease and another takes the step over. Step results that hold
# personal data (fetched rows, join keys) are encrypted under the job's key (job_keys),
# destroyed when the job ends.

jobs = Table(
    "jobs",
    data,
    Column("id", String(32), primary_key=True),
    Column("kind", String(24), nullable=False),  # access|erase|rectify|...
    Column("status", String(16), nullable=False),  # pending|running|done|failed
    Column("created_at", TS, nullable=False),
    Column("finished_at", TS, nullable=True),
    Column("plan", Text, nullable=False),  # JSON: the plan (no personal data)
)

job_steps = Table(
    "job_steps",
    data,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(24), nullable=False),  # fetch|mask|notify|verify|shred|package ...
    Column("target", String(256), nullable=True),  # collection, recipient ...
    Column("status", String(16), nullable=False),  # pending|running|done|failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("leased_by", String(64), nullable=True),
    Column("leased_until", TS, nullable=True),
    Column("result", LargeBinary, nullable=True),  # encrypted under the job key
    Column("error", Text, nullable=True),
    Column("finished_at", TS, nullable=True),
    Index(None, "status", "leased_until"),
)

request_keys = Table(
    "request_keys",
    keys,
    Column("owner_id", String(32), primary_key=True),  # a request id or a job id
    Column("kek_id", String(32), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False),
)

# Files a request produced (the access package): encrypted under the request's own key
# (request_keys), so forgetting the requester (LAW-13) shreds the file with them.
request_files = Table(
    "request_files",
    data,
    Column("request_id", String(32), ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("content", LargeBinary, nullable=False),  # AES-GCM under the request's key
    Column("created_at", TS, nullable=False),
)

# --------------------------------------------------------------------------- web access
# API keys: the secret is shown once; only SHA-256(key id, secret) is kept. A 256-bit random
# secret needs no slow hash (nothing to brute-force), and a fast one keeps every request's
# check in microseconds. Revoked keys stay, so the audit trail's actors remain resolvable.
api_keys = Table(
    "api_keys",
    data,
    Column("id", String(16), primary_key=True),  # the public part of the key: fid_<id>_<secret>
    Column("name", String(64), nullable=False),
    Column("scopes", String(512), nullable=False),  # space-separated
    Column("secret_hash", String(64), nullable=False),  # hex SHA-256
    Column("created_at", TS, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("revoked_at", TS, nullable=True),
    Column("revoked_by", String(128), nullable=True),
)

# Console users (the privacy team): argon2id password hashes, one role each.
console_users = Table(
    "console_users",
    data,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False),  # a staff handle, not an email address
    Column("password_hash", String(255), nullable=False),  # argon2id, PHC string format
    Column("role", String(16), nullable=False),  # viewer|operator|admin
    Column("created_at", TS, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("password_changed_at", TS, nullable=False),
    Column("last_login_at", TS, nullable=True),
    Column("disabled_at", TS, nullable=True),
    UniqueConstraint("username"),
)

# --------------------------------------------------------------------------- disclosures, breaches
# (migration data_0005)
# Disclosures: every release of data to a recipient, append-only (PLU-9, PLV-13, PUT-8).
# The people a disclosure concerned are listed in disclosure_subjects (none for an
# aggregate export); later facts about it (a gag lifted, the people told) are
# disclosure_events, from which the current notification decision is derived.
disclosures = Table(
    "disclosures",
    data,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),  # when the data went out
    Column("recorded_at", TS, nullable=False),
    Column("kind", String(16), nullable=False),  # routine|legal_demand|aggregate
    Column("recipient", String(64), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("basis", String(32), nullable=False),  # the legal ground
    Column("categories", Text, nullable=False),  # JSON list
    Column("form", String(16), nullable=False),  # identified|pseudonymized|anonymized|aggregate
    Column("subjects", Integer, nullable=False),  # how many people
    Column("gag", String(16), nullable=True),  # law|court_order|emergency (legal demands)
    Column("notify", String(16), nullable=False),  # not_applicable|tell|withheld, when recorded
    Column("reference", String(128), nullable=True),  # the demand's reference; no personal data
    Column("actor", String(128), nullable=False),
    Column("detail", Text, nullable=True),  # JSON, no personal data
    Index(None, "recipient", "at"),
    Index(None, "at"),
)

disclosure_subjects = Table(
    "disclosure_subjects",
    data,
    Column(
        "disclosure_id",
        BigInteger,
        ForeignKey("disclosures.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("subject_id", String(32), primary_key=True),  # kept after erasure: proof, like consent
    Index(None, "subject_id"),
)

disclosure_events = Table(
    "disclosure_events",
    data,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("disclosure_id", BigInteger, ForeignKey("disclosures.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),  # gag_lifted|told
    Column("at", TS, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("detail", Text, nullable=True),  # JSON, no personal data
    Index(None, "disclosure_id", "id"),
)

# Mail to many people (a policy change, a breach, a legal demand), queued per topic and
# subject so that a crashed run resumes where it stopped and nobody is written to twice.
notices = Table(
    "notices",
    data,
    Column("topic", String(64), primary_key=True),  # policy:<version id>|breach:<id>|disclosure:<id>
    Column("subject_id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),  # queued|sent|no_address|failed
    Column("queued_at", TS, nullable=False),
    Column("sent_at", TS, nullable=True),
    Column("error", String(255), nullable=True),  # no personal data
    Index(None, "topic", "status"),
)

# The publish step of a policy version (PUT-3): who announced it, what was material.
policy_publications = Table(
    "policy_publications",
    data,
    Column("version_id", BigInteger, ForeignKey("policy_versions.id"), primary_key=True, autoincrement=False),
    Column("at", TS, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("previous_id", BigInteger, nullable=True),
    Column("material_purposes", Text, nullable=False),  # JSON list
    Column("notices", Integer, nullable=False),  # how many were queued
)

# The breach register (LAW-10): breach_events is append-only; the breaches row holds the
# derived view (risk, status, when notified), rewritten with each event in its transaction.
breaches = Table(
    "breaches",
    data,
    Column("id", String(32), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("nature", Text, nullable=False),  # what happened; no personal data
    Column("detected_at", TS, nullable=False),
    Column("occurred_at", TS, nullable=True),
    Column("authority_due_at", TS, nullable=False),  # detected_at + breaches.authority_within
    Column("categories", Text, nullable=False),  # JSON list
    Column("subjects_estimate", Integer, nullable=True),  # approximate number of people
    Column("records_estimate", Integer, nullable=True),
    Column("risk", String(16), nullable=False),  # unassessed|unlikely|risk|high
    Column("consequences", Text, nullable=True),
    Column("measures", Text, nullable=True),
    Column("advice", Text, nullable=True),  # what people can do themselves
    Column("status", String(16), nullable=False),  # open|closed
    Column("authority_notified_at", TS, nullable=True),
    Column("subjects_notified_at", TS, nullable=True),
    Column("closed_at", TS, nullable=True),
    Column("created_by", String(128), nullable=False),
    Index(None, "status", "authority_due_at"),
)

breach_subjects = Table(
    "breach_subjects",
    data,
    Column("breach_id", String(32), ForeignKey("breaches.id", ondelete="CASCADE"), primary_key=True),
    Column("subject_id", String(32), primary_key=True),
    Index(None, "subject_id"),
)

breach_events = Table(
    "breach_events",
    data,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("breach_id", String(32), ForeignKey("breaches.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),  # detected|assessed|notified_authority|...
    Column("at", TS, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("detail", Text, nullable=True),  # JSON, no personal data
    Index(None, "breach_id", "id"),
)

# --------------------------------------------------------------------------- upload screening
# (migration data_0006)
# An upload that matched a hash list (PUT-9): one row per match. What identifies the
# uploader (email, IP address, file name) is encrypted under the match's own data key,
# kept in the key store like a request's (request_keys, owner id = the match id, so key
# rotation re-wraps it); a quarantined copy of the bytes, when the policy says quarantine,
# is a file encrypted under the same key. Destroying the key shreds both. Clean uploads
# leave no row (PUT-13: a clean file's hash is not kept with the person).
screening_matches = Table(
    "screening_matches",
    data,
    Column("id", String(32), primary_key=True),  # random
    Column("at", TS, nullable=False),
    Column("subject_id", String(32), nullable=True),  # the uploader, when a subject
    Column("matches", Text, nullable=False),  # JSON [{list, algorithm, digest}]
    Column("digests", Text, nullable=False),  # JSON {algorithm: hex}: the upload's digests
    Column("size", BigInteger, nullable=False),
    Column("actions", String(64), nullable=False),  # the policy's on_match, space-separated
    Column("quarantine_file", String(128), nullable=True),  # in the quarantine folder
    Column("context", LargeBinary, nullable=False),  # AES-GCM under the match's key
    Column("status", String(16), nullable=False),  # held|destroyed
    Column("actor", String(128), nullable=False),
    Index(None, "at"),
)

# A report of a match to the designated organisation, queued, then sent (mail).
screening_reports = Table(
    "screening_reports",
    data,
    Column("id", String(32), primary_key=True),  # random; the reference in the report
    Column("match_id", String(32), ForeignKey("screening_matches.id", ondelete="CASCADE"), nullable=False),
    Column("organization", String(255), nullable=False),  # the policy's screening.report_to
    Column("recipient", String(64), nullable=True),  # the policy's recipient key, if any
    Column("address", String(320), nullable=True),  # where it is mailed
    Column("status", String(16), nullable=False),  # queued|sent
    Column("created_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", String(255), nullable=True),  # no personal data
    Column("sent_at", TS, nullable=True),
    Column("message_id", String(255), nullable=True),
    Index(None, "status", "created_at"),
    Index(None, "match_id"),
)

# --------------------------------------------------------------------------- retention
# (migration data_0007)
# A sweep is a job (kind "retention"); this is its record. `active` is 1 while the sweep
# runs and NULL after: the unique constraint lets one sweep run at a time (NULLs differ).
retention_sweeps = Table(
    "retention_sweeps",
    data,
    Column("job_id", String(32), primary_key=True),
    Column("at", TS, nullable=False),  # the moment the sweep's deadlines are computed from
    Column("status", String(16), nullable=False),  # running|done|failed
    Column("active", Integer, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("finished_at", TS, nullable=True),
    Column("summary", Text, nullable=True),  # JSON counts per rule and target, no personal data
    UniqueConstraint("active"),
)

# How far each rule's sweep of a target has gone: rows (or accounts) whose moment is at or
# before `cutoff` were handled by the sweep `job_id`; the next sweep starts after it.
retention_marks = Table(
    "retention_marks",
    data,
    Column("rule", String(64), primary_key=True),
    Column("target", String(256), primary_key=True),  # datastore.collection | subjects | vault
    Column("cutoff", TS, nullable=False),
    Column("job_id", String(32), nullable=False),
    Column("at", TS, nullable=False),
)

# Inactivity notices (PLO-9): one per subject, rule and period of inactivity (`since`, the
# last activity it is about), so a re-run never mails twice for the same silence.
retention_notices = Table(
    "retention_notices",
    data,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("subject_id", String(32), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("since", TS, nullable=False),
    Column("noticed_at", TS, nullable=False),  # the sweep's moment: deletion waits from here
    Column("delete_after", TS, nullable=False),
    Column("status", String(16), nullable=False),  # pending|sent|no_address|failed
    Column("job_id", String(32), nullable=False),
    UniqueConstraint("subject_id", "rule", "since"),
    Index(None, "rule", "status"),
)

# Legal holds and abuse reports on a subject (PLO-10): retention leaves the subject alone
# while a hold names a policy exemption.
retention_holds = Table(
    "retention_holds",
    data,
    Column("subject_id", String(32), primary_key=True),
    Column("exemption", String(64), primary_key=True),
    Column("placed_at", TS, nullable=False),
    Column("placed_by", String(128), nullable=False),
)

# What `action: aggregate` keeps of the rows it deletes: a count per day, per step of the
# sweep that counted them (so that a step run twice counts once).
retention_aggregates = Table(
    "retention_aggregates",
    data,
    Column("job_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD
    Column("rule", String(64), nullable=False),
    Column("collection", String(256), nullable=False),
    Column("rows", BigInteger, nullable=False),
    Index(None, "rule", "collection", "day"),
)

# --------------------------------------------------------------------------- privacy center, console
# (migration data_0008)

# Console sign-in sessions: the browser's signed cookie carries a random token; only its
# SHA-256 is kept here, so a copy of the database opens no session. Signing out ends the
# row at once; a disabled user or a changed password ends every session of that user.
console_sessions = Table(
    "console_sessions",
    data,
    Column("id", String(64), primary_key=True),  # hex SHA-256 of the cookie's token
    Column("user_id", String(32), ForeignKey("console_users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("ended_at", TS, nullable=True),
    Index(None, "expires_at"),  # the sweep of ended and expired sessions at each sign-in
)

# Privacy center sign-ins (preferences): a code mailed to the address the vault's blind
# index matched; once entered, the row is the session (its id is in the center's signed
# cookie). No address is stored: subject_id is NULL when the address matched nobody.
center_sign_ins = Table(
    "center_sign_ins",
    data,
    Column("id", String(32), primary_key=True),  # random
    Column("subject_id", String(32), nullable=True),
    Column("code_hash", String(64), nullable=False),  # HMAC of the one-time code
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),  # of the code
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("verified_at", TS, nullable=True),  # the session starts
    Column("ended_at", TS, nullable=True),  # signed out
    Index(None, "created_at"),  # the sweep of old rows at each sign-in
    Index(None, "subject_id", "created_at"),  # codes per subject per hour
)
