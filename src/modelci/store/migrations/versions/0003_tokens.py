"""API bearer tokens (hashed) and why jobs failed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("last_used_at", Stamp),
    )
    op.create_table(
        "job_failures",
        sa.Column(
            "job_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("task_name", sa.String(128), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("retried", sa.Boolean, nullable=False),
        sa.Column("failed_at", Stamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_failures")
    op.drop_table("api_tokens")
