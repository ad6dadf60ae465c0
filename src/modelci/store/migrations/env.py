"""Alembic environment: migrations run on the connection modelci passes in."""

from __future__ import annotations

from alembic import context

from modelci.store.records import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("modelci runs its migrations itself: use `modelci` commands")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
