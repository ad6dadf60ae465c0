"""Dashboard: signed-in sessions (store.websessions) and the audit log of actions taken
in the browser (store.audit).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-15
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)
Id = sa.BigInteger().with_variant(sa.Integer, "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("login", sa.String(300), nullable=False),
        sa.Column("user_token", sa.LargeBinary),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("expires_at", Stamp, nullable=False),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_index("ix_web_sessions_login", "web_sessions", ["login"])
    op.create_table(
        "audit_log",
        sa.Column("id", Id, primary_key=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("actor_kind", sa.String(10), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("repository", sa.Text),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("details", Json, nullable=False),
    )
    op.create_index("ix_audit_log_repository_id", "audit_log", ["repository", "id"])
    op.create_index("ix_audit_log_target_id", "audit_log", ["target", "id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("web_sessions")
