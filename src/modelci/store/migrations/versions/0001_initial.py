"""Repositories, runs, evaluations and webhook deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("url", sa.String(2000), nullable=False, unique=True),
        sa.Column("created_at", Stamp, nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id"), nullable=False),
        sa.Column("sha", sa.String(40), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("cache_key", sa.String(64), nullable=False),
        sa.Column("env_key", sa.String(64)),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("started_at", Stamp),
        sa.Column("finished_at", Stamp),
        sa.Column("timings", Json),
        sa.Column("log_path", sa.String(2000)),
        sa.Column("outputs_dir", sa.String(2000)),
        sa.Column("metrics", Json),
        sa.Column("error", sa.Text),
        sa.Column("reused_from_id", sa.Integer, sa.ForeignKey("runs.id")),
    )
    op.create_index("ix_runs_repository_id", "runs", ["repository_id"])
    op.create_index("ix_runs_cache_key", "runs", ["cache_key"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id"), nullable=False),
        sa.Column("base_sha", sa.String(40), nullable=False),
        sa.Column("head_sha", sa.String(40), nullable=False),
        sa.Column("base_run_id", sa.Integer, sa.ForeignKey("runs.id")),
        sa.Column("head_run_id", sa.Integer, sa.ForeignKey("runs.id")),
        sa.Column("job_id", sa.Integer),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("passed", sa.Boolean),
        sa.Column("report", Json),
        sa.Column("seconds", sa.Float),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("finished_at", Stamp),
    )
    op.create_index("ix_evaluations_repository_id", "evaluations", ["repository_id"])
    op.create_index("ix_evaluations_job_id", "evaluations", ["job_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("event", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100)),
        sa.Column("payload", Json, nullable=False),
        sa.Column("received_at", Stamp, nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("dispatched_at", Stamp),
        sa.Column("processed_at", Stamp),
        sa.Column("outcome", sa.String(30)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_deliveries_dispatched_at", "deliveries", ["dispatched_at"])


def downgrade() -> None:
    for table in ("deliveries", "evaluations", "runs", "repositories"):
        op.drop_table(table)
