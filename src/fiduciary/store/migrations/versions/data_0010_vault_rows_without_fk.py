"""data store: identities and attributes without a foreign key to subjects

Revision ID: data_0010
Revises: data_0009
Create Date: 2026-11-23 08:20:00.000000

Both tables referenced ``subjects.id`` with ON DELETE CASCADE. The cascade never fires (a
subject row is kept, status ``erased``, after its identities and attributes are deleted
by the vault), and the check it made on every inserted row is the vault's own invariant:
the vault is the only writer of these tables and inserts a subject's rows in the
transaction that inserts the subject, or after locking the subject row and reading its
status (``Vault.write``). On PostgreSQL the check is a trigger per row: dropping it
doubled the rows per second of a bulk import (docs/benchmarks.md, vault).
"""

from __future__ import annotations

from alembic import op

revision = "data_0010"
down_revision = "data_0009"
branch_labels = None
depends_on = None

_CHILDREN = ("identities", "attributes")


def upgrade() -> None:
    for table in _CHILDREN:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_subject_id_subjects", type_="foreignkey")


def downgrade() -> None:
    for table in _CHILDREN:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(
                f"fk_{table}_subject_id_subjects", "subjects", ["subject_id"], ["id"], ondelete="CASCADE"
            )
