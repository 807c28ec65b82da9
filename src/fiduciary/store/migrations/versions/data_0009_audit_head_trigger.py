"""data store: the audit head follows the log by trigger

Revision ID: data_0009
Revises: data_0008
Create Date: 2026-11-23 05:45:00.000000

The head row (``audit_head``) is the last entry's (seq, hash): appenders lock it to extend
one chain, and the verifier compares it with the log's tail to catch a removed tail. It
used to be set by a statement of its own after each extension; here the database keeps it
current on every INSERT into ``audit_log`` (COPY included), which saves that statement on
every transaction that audits anything. SQLite and PostgreSQL only: on other databases
``AuditLog`` still sets the head itself.
"""

from __future__ import annotations

from alembic import op

revision = "data_0009"
down_revision = "data_0008"
branch_labels = None
depends_on = None

# Never moves the head backwards: it is the highest seq written.
SQLITE_TRIGGER = """
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_log
BEGIN
    UPDATE audit_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1 AND seq < NEW.seq;
END
"""

# One statement-level trigger per INSERT or COPY, reading the rows it added.
PG_FUNCTION = """
CREATE FUNCTION audit_head_follows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audit_head AS h SET seq = n.seq, hash = n.hash
    FROM (SELECT seq, hash FROM added ORDER BY seq DESC LIMIT 1) AS n
    WHERE h.id = 1 AND h.seq < n.seq;
    RETURN NULL;
END
$$
"""
PG_TRIGGER = """
CREATE TRIGGER audit_head_follows AFTER INSERT ON audit_log
REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION audit_head_follows()
"""


def upgrade() -> None:
    name = op.get_bind().dialect.name
    if name == "sqlite":
        op.execute(SQLITE_TRIGGER)
    elif name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)


def downgrade() -> None:
    name = op.get_bind().dialect.name
    if name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_head_follows")
    elif name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_head_follows ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_head_follows()")
