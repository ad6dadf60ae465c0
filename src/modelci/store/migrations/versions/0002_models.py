"""Model lifecycle events (registered, promoted, rejected, rolled back) and the prediction log.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_name", sa.String(300), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("sha", sa.String(40)),
        sa.Column("details", Json),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_model_events_model_name", "model_events", ["model_name"])
    op.create_table(
        "predictions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("model_name", sa.String(300), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("inputs", Json, nullable=False),
        sa.Column("outputs", Json, nullable=False),
        sa.Column("latency_ms", sa.Float),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index(
        "ix_predictions_model_name_created_at", "predictions", ["model_name", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("predictions")
    op.drop_table("model_events")
