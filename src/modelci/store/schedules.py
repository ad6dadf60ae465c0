"""Retrain schedules per repository, and the claim that fires each slot once.

One row per repository the server retrains: where to clone it, its default
branch and installation, and its schedule. The schedule comes from the default
branch's ``modelci.yaml`` (``source = "config"``, refreshed on every delivered
push and at start) unless one was set on the server (``source = "server"``),
which a later push does not overwrite.

``last_slot`` is the newest slot already fired (or when the schedule was set):
:func:`claim_slot` moves it forward with one conditional UPDATE, so however
many dispatchers look at the same due slot, exactly one gets the row back.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from sqlalchemy import BigInteger, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelci.store.records import Base, UTCDateTime

__all__ = [
    "RetrainSchedule",
    "claim_slot",
    "get_schedule",
    "list_schedules",
    "set_server_schedule",
    "upsert_repository",
    "use_config_schedule",
]

Source = Literal["config", "server"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RetrainSchedule(Base):
    __tablename__ = "retrain_schedules"

    repository: Mapped[str] = mapped_column(String(300), primary_key=True)  # owner/name
    clone_url: Mapped[str] = mapped_column(String(2000))
    default_branch: Mapped[str] = mapped_column(String(300))
    installation_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite")
    )
    cron: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(100), default="UTC")
    source: Mapped[str] = mapped_column(String(20), default="config")
    last_slot: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    # Why the last refresh from modelci.yaml failed (the schedule kept is the previous one).
    config_error: Mapped[str | None] = mapped_column(Text)


def get_schedule(session: Session, *, repository: str) -> RetrainSchedule | None:
    return session.get(RetrainSchedule, repository)


def list_schedules(session: Session, *, scheduled_only: bool = False) -> list[RetrainSchedule]:
    query = select(RetrainSchedule).order_by(RetrainSchedule.repository)
    if scheduled_only:
        query = query.where(RetrainSchedule.cron.is_not(None))
    return list(session.scalars(query))


def _set(row: RetrainSchedule, cron: str | None, timezone: str, now: dt.datetime) -> None:
    if (row.cron, row.timezone) != (cron, timezone):
        # A new schedule starts now: slots before it were never asked for.
        row.cron, row.timezone, row.last_slot = cron, timezone, now
    row.updated_at = now


def upsert_repository(
    session: Session,
    *,
    repository: str,
    clone_url: str,
    default_branch: str,
    installation_id: int | None,
    cron: str | None = None,
    timezone: str = "UTC",
    from_config: bool = True,
    config_error: str | None = None,
    now: dt.datetime | None = None,
) -> RetrainSchedule:
    """Remember the repository; with ``from_config``, take the schedule from its
    ``modelci.yaml`` unless the server set one (``config_error`` keeps the old one)."""
    now = now or _now()
    row = session.get(RetrainSchedule, repository, with_for_update=True)
    if row is None:
        row = RetrainSchedule(repository=repository, source="config", last_slot=now, timezone="UTC")
        session.add(row)
    row.clone_url, row.default_branch = clone_url, default_branch
    if installation_id is not None:
        row.installation_id = installation_id
    if from_config:
        row.config_error = config_error
        if row.source == "config" and config_error is None:
            _set(row, cron, timezone, now)
    row.updated_at = now
    session.flush()
    return row


def set_server_schedule(
    session: Session,
    *,
    repository: str,
    cron: str | None,
    timezone: str = "UTC",
    now: dt.datetime | None = None,
) -> RetrainSchedule | None:
    """Set the schedule on the server (``cron`` None: no schedule); None if the
    repository is unknown. :func:`use_config_schedule` gives it back to modelci.yaml."""
    row = session.get(RetrainSchedule, repository, with_for_update=True)
    if row is None:
        return None
    row.source = "server"
    _set(row, cron, timezone, now or _now())
    session.flush()
    return row


def use_config_schedule(session: Session, *, repository: str) -> RetrainSchedule | None:
    """Drop the server's schedule: the next refresh from modelci.yaml sets it again.

    Until then the repository has none (the file is read from the default branch,
    which this module cannot do)."""
    row = session.get(RetrainSchedule, repository, with_for_update=True)
    if row is None:
        return None
    row.source = "config"
    _set(row, None, "UTC", _now())
    session.flush()
    return row


def claim_slot(session: Session, *, repository: str, cron: str, slot: dt.datetime) -> bool:
    """Mark ``slot`` fired; True for exactly one caller per slot.

    The WHERE clause is re-checked after a concurrent UPDATE of the row commits
    (PostgreSQL's READ COMMITTED; SQLite's writers are serialised anyway), so a
    second claimer of the same slot updates nothing. ``cron`` must still be the
    schedule the slot was computed from: a schedule changed meanwhile fires on its own.
    """
    claimed = session.execute(
        update(RetrainSchedule)
        .where(
            RetrainSchedule.repository == repository,
            RetrainSchedule.cron == cron,
            RetrainSchedule.last_slot < slot,
        )
        .values(last_slot=slot)
        .returning(RetrainSchedule.repository)
    ).first()
    return claimed is not None
