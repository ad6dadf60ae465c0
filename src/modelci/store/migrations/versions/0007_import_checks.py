"""The new-data check per repository (store.importchecks).

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "import_checks",
        sa.Column("repository", sa.String(300), primary_key=True),
        sa.Column("checked_at", Stamp),
        sa.Column("queued_version", sa.Text),
        sa.Column("queued_at", Stamp),
    )


def downgrade() -> None:
    op.drop_table("import_checks")
