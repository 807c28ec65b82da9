"""data store: disclosures, breaches and policy publications

Revision ID: data_0005
Revises: data_0004
Create Date: 2026-11-23 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "data_0005"
down_revision = "data_0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "disclosures",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("recipient", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("basis", sa.String(length=32), nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("form", sa.String(length=16), nullable=False),
        sa.Column("subjects", sa.Integer(), nullable=False),
        sa.Column("gag", sa.String(length=16), nullable=True),
        sa.Column("notify", sa.String(length=16), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disclosures")),
    )
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disclosures_recipient_at"), ["recipient", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_disclosures_at"), ["at"], unique=False)

    op.create_table(
        "disclosure_subjects",
        sa.Column("disclosure_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["disclosure_id"],
            ["disclosures.id"],
            name=op.f("fk_disclosure_subjects_disclosure_id_disclosures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("disclosure_id", "subject_id", name=op.f("pk_disclosure_subjects")),
    )
    with op.batch_alter_table("disclosure_subjects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disclosure_subjects_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "disclosure_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("disclosure_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["disclosure_id"],
            ["disclosures.id"],
            name=op.f("fk_disclosure_events_disclosure_id_disclosures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disclosure_events")),
    )
    with op.batch_alter_table("disclosure_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_disclosure_events_disclosure_id_id"), ["disclosure_id", "id"], unique=False
        )

    op.create_table(
        "notices",
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("queued_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("topic", "subject_id", name=op.f("pk_notices")),
    )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_notices_topic_status"), ["topic", "status"], unique=False)

    op.create_table(
        "policy_publications",
        sa.Column("version_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("previous_id", sa.BigInteger(), nullable=True),
        sa.Column("material_purposes", sa.Text(), nullable=False),
        sa.Column("notices", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["policy_versions.id"],
            name=op.f("fk_policy_publications_version_id_policy_versions"),
        ),
        sa.PrimaryKeyConstraint("version_id", name=op.f("pk_policy_publications")),
    )

    op.create_table(
        "breaches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("nature", sa.Text(), nullable=False),
        sa.Column("detected_at", TS, nullable=False),
        sa.Column("occurred_at", TS, nullable=True),
        sa.Column("authority_due_at", TS, nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("subjects_estimate", sa.Integer(), nullable=True),
        sa.Column("records_estimate", sa.Integer(), nullable=True),
        sa.Column("risk", sa.String(length=16), nullable=False),
        sa.Column("consequences", sa.Text(), nullable=True),
        sa.Column("measures", sa.Text(), nullable=True),
        sa.Column("advice", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("authority_notified_at", TS, nullable=True),
        sa.Column("subjects_notified_at", TS, nullable=True),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breaches")),
    )
    with op.batch_alter_table("breaches", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_breaches_status_authority_due_at"), ["status", "authority_due_at"], unique=False
        )

    op.create_table(
        "breach_subjects",
        sa.Column("breach_id", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["breach_id"],
            ["breaches.id"],
            name=op.f("fk_breach_subjects_breach_id_breaches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("breach_id", "subject_id", name=op.f("pk_breach_subjects")),
    )
    with op.batch_alter_table("breach_subjects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_breach_subjects_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "breach_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("breach_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["breach_id"],
            ["breaches.id"],
            name=op.f("fk_breach_events_breach_id_breaches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breach_events")),
    )
    with op.batch_alter_table("breach_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_breach_events_breach_id_id"), ["breach_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("breach_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_breach_events_breach_id_id"))
    op.drop_table("breach_events")
    with op.batch_alter_table("breach_subjects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_breach_subjects_subject_id"))
    op.drop_table("breach_subjects")
    with op.batch_alter_table("breaches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_breaches_status_authority_due_at"))
    op.drop_table("breaches")
    op.drop_table("policy_publications")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_notices_topic_status"))
    op.drop_table("notices")
    with op.batch_alter_table("disclosure_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disclosure_events_disclosure_id_id"))
    op.drop_table("disclosure_events")
    with op.batch_alter_table("disclosure_subjects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disclosure_subjects_subject_id"))
    op.drop_table("disclosure_subjects")
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disclosures_at"))
        batch_op.drop_index(batch_op.f("ix_disclosures_recipient_at"))
    op.drop_table("disclosures")
