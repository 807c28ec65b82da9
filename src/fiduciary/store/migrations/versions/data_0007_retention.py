"""data store: retention sweeps

Revision ID: data_0007
Revises: data_0006
Create Date: 2026-11-23 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "data_0007"
down_revision = "data_0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "retention_sweeps",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Integer(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_retention_sweeps")),
        sa.UniqueConstraint("active", name=op.f("uq_retention_sweeps_active")),
    )
    op.create_table(
        "retention_marks",
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("cutoff", TS, nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("rule", "target", name=op.f("pk_retention_marks")),
    )
    op.create_table(
        "retention_notices",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("noticed_at", TS, nullable=False),
        sa.Column("delete_after", TS, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_notices")),
        sa.UniqueConstraint(
            "subject_id", "rule", "since", name=op.f("uq_retention_notices_subject_id_rule_since")
        ),
    )
    op.create_index(
        op.f("ix_retention_notices_rule_status"), "retention_notices", ["rule", "status"], unique=False
    )
    op.create_table(
        "retention_holds",
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("exemption", sa.String(length=64), nullable=False),
        sa.Column("placed_at", TS, nullable=False),
        sa.Column("placed_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "exemption", name=op.f("pk_retention_holds")),
    )
    op.create_table(
        "retention_aggregates",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("collection", sa.String(length=256), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq", "day", name=op.f("pk_retention_aggregates")),
    )
    op.create_index(
        op.f("ix_retention_aggregates_rule_collection_day"),
        "retention_aggregates",
        ["rule", "collection", "day"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_retention_aggregates_rule_collection_day"), table_name="retention_aggregates")
    op.drop_table("retention_aggregates")
    op.drop_table("retention_holds")
    op.drop_index(op.f("ix_retention_notices_rule_status"), table_name="retention_notices")
    op.drop_table("retention_notices")
    op.drop_table("retention_marks")
    op.drop_table("retention_sweeps")
