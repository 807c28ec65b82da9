"""data store: upload screening: quarantine and reports

Revision ID: data_0006
Revises: data_0005
Create Date: 2026-11-23 02:30:00.000000
"""

from __future__ import annotations

revision = "data_0006"
down_revision = "data_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
