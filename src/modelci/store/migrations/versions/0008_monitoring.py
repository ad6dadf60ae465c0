"""Monitoring: request ids on predictions, feedback labels, reference profiles, drift
reports and each model's watch state (store.monitoring).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("predictions", sa.Column("request_id", sa.String(32)))
    op.create_index("ix_predictions_request_id", "predictions", ["request_id"])
    op.create_table(
        "reference_profiles",
        sa.Column("model_name", sa.String(300), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("profile", sa.LargeBinary, nullable=False),
        sa.Column("settings", Json, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", Id, primary_key=True),
        sa.Column("model_name", sa.String(300), nullable=False),
        sa.Column("request_id", sa.String(32), nullable=False),
        sa.Column("labels", Json, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.UniqueConstraint("model_name", "request_id", name="uq_feedback_request"),
    )
    op.create_table(
        "drift_reports",
        sa.Column("id", Id, primary_key=True),
        sa.Column("model_name", sa.String(300), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("window_start", Stamp),
        sa.Column("window_end", Stamp),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("share_drifted", sa.Float, nullable=False),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("report", Json, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_index("ix_drift_reports_model_id", "drift_reports", ["model_name", "id"])
    op.create_table(
        "monitor_state",
        sa.Column("model_name", sa.String(300), primary_key=True),
        sa.Column("last_prediction_id", Id, nullable=False),
        sa.Column("issue_number", sa.Integer),
        sa.Column("alert_open", sa.Boolean, nullable=False),
        sa.Column("clean_windows", sa.Integer, nullable=False),
        sa.Column("last_retrain_at", Stamp),
        sa.Column("updated_at", Stamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_state")
    op.drop_index("ix_drift_reports_model_id", table_name="drift_reports")
    op.drop_table("drift_reports")
    op.drop_table("feedback")
    op.drop_table("reference_profiles")
    op.drop_index("ix_predictions_request_id", table_name="predictions")
    op.drop_column("predictions", "request_id")
