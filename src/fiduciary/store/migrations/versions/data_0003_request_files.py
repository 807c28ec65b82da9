"""data store: files a request produced (access packages)

Revision ID: data_0003
Revises: data_0002
Create Date: 2026-11-24 00:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "data_0003"
down_revision = "data_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_files",
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_request_files_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "name", name=op.f("pk_request_files")),
    )


def downgrade() -> None:
    op.drop_table("request_files")
