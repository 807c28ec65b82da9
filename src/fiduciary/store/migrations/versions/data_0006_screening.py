"""data store: upload screening: quarantine and reports

Revision ID: data_0006
Revises: data_0005
Create Date: 2026-11-23 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "data_0006"
down_revision = "data_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_matches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=True),
        sa.Column("matches", sa.Text(), nullable=False),
        sa.Column("digests", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("actions", sa.String(length=64), nullable=False),
        sa.Column("quarantine_file", sa.String(length=128), nullable=True),
        sa.Column("context", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_matches")),
    )
    with op.batch_alter_table("screening_matches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_screening_matches_at"), ["at"], unique=False)

    op.create_table(
        "screening_reports",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("match_id", sa.String(length=32), nullable=False),
        sa.Column("organization", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=True),
        sa.Column("address", sa.String(length=320), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["match_id"],
            ["screening_matches.id"],
            name=op.f("fk_screening_reports_match_id_screening_matches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_reports")),
    )
    with op.batch_alter_table("screening_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_screening_reports_status_created_at"), ["status", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_screening_reports_match_id"), ["match_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("screening_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_reports_match_id"))
        batch_op.drop_index(batch_op.f("ix_screening_reports_status_created_at"))
    op.drop_table("screening_reports")
    with op.batch_alter_table("screening_matches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_screening_matches_at"))
    op.drop_table("screening_matches")
