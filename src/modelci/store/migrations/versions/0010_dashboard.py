"""Dashboard: the indexes its pages' queries use (store.dashboard, bench/dashboard.py).

Each list a page shows is newest first within one model or repository, so each
index ends with the id it is ordered by. Procrastinate's table gets its own
indexes in service.jobs.apply_schema: it does not exist yet when a new database
is migrated.

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-10
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_model_events_model_name_id", "model_events", ["model_name", "id"]),
    ("ix_model_events_action_model_name_id", "model_events", ["action", "model_name", "id"]),
    ("ix_evaluations_repository_id_id", "evaluations", ["repository_id", "id"]),
    ("ix_retrains_model_name_id", "retrains", ["model_name", "id"]),
)


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
