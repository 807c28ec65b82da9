"""data store: disclosures, breaches and policy publications

Revision ID: data_0005
Revises: data_0004
Create Date: 2026-11-23 02:30:00.000000
"""

from __future__ import annotations

revision = "data_0005"
down_revision = "data_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
