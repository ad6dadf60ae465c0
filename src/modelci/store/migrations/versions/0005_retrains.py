"""Retrains: each retrain's trigger, decision, versions, data version and both sides' metrics.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "retrains",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("repository", sa.Text, nullable=False),
        sa.Column("ref", sa.String(300), nullable=False),
        sa.Column("sha", sa.String(40)),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("reasons", Json),
        sa.Column("model_name", sa.String(300)),
        sa.Column("version", sa.Integer),
        sa.Column("champion_version", sa.Integer),
        sa.Column("data_version", Json),
        sa.Column("metrics", Json),
        sa.Column("error", sa.Text),
        sa.Column("started_at", Stamp, nullable=False),
        sa.Column("finished_at", Stamp),
        sa.Column("plot_token", sa.String(64), unique=True),
    )
    op.create_index("ix_retrains_repository_id", "retrains", ["repository", "id"])
    op.create_index("ix_retrains_model_name", "retrains", ["model_name"])


def downgrade() -> None:
    op.drop_table("retrains")
