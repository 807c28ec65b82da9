"""data store: retention sweeps

Revision ID: data_0007
Revises: data_0006
Create Date: 2026-11-23 02:30:00.000000
"""

from __future__ import annotations

revision = "data_0007"
down_revision = "data_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
