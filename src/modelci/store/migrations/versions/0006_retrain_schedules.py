"""Retrain schedules per repository (store.schedules).

Revision ID: 0006
Revises: 0005
Create Date: 2027-01-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "retrain_schedules",
        sa.Column("repository", sa.String(300), primary_key=True),
        sa.Column("clone_url", sa.String(2000), nullable=False),
        sa.Column("default_branch", sa.String(300), nullable=False),
        sa.Column("installation_id", sa.BigInteger().with_variant(sa.Integer, "sqlite")),
        sa.Column("cron", sa.String(200)),
        sa.Column("timezone", sa.String(100), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("last_slot", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.Column("config_error", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("retrain_schedules")
