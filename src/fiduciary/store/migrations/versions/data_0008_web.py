"""data store: privacy center preferences and console

Revision ID: data_0008
Revises: data_0007
Create Date: 2026-11-23 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "data_0008"
down_revision = "data_0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # console: sign-in sessions
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["console_users.id"],
            name=op.f("fk_console_sessions_user_id_console_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_console_sessions")),
    )
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_console_sessions_expires_at"), ["expires_at"], unique=False)

    # privacy center: sign-ins to the preferences pages
    op.create_table(
        "center_sign_ins",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=True),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_center_sign_ins")),
    )
    with op.batch_alter_table("center_sign_ins", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_center_sign_ins_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_center_sign_ins_subject_id_created_at"), ["subject_id", "created_at"], unique=False
        )


def downgrade() -> None:
    # privacy center: sign-ins to the preferences pages
    with op.batch_alter_table("center_sign_ins", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_center_sign_ins_subject_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_center_sign_ins_created_at"))
    op.drop_table("center_sign_ins")

    # console: sign-in sessions
    with op.batch_alter_table("console_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_console_sessions_expires_at"))
    op.drop_table("console_sessions")
