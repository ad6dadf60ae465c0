"""The new-data check per repository: when it last ran, and the data it last queued.

:func:`claim_check` and :func:`claim_version` are single conditional UPDATEs, as
``store.schedules.claim_slot`` is: however many workers look at the same
repository at once, one gets the row back, so a check runs once per interval
and a refreshed data version queues one retrain.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from sqlalchemy import String, Text, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelci.store.records import Base, UTCDateTime

__all__ = ["ImportCheck", "claim_check", "claim_version", "get_check"]


class ImportCheck(Base):
    __tablename__ = "import_checks"

    repository: Mapped[str] = mapped_column(String(300), primary_key=True)  # owner/name
    checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    queued_version: Mapped[str | None] = mapped_column(Text)  # the data version, as JSON
    queued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


def get_check(session: Session, *, repository: str) -> ImportCheck | None:
    return session.get(ImportCheck, repository)


def _ensure(session: Session, repository: str) -> None:
    if session.scalars(select(ImportCheck).where(ImportCheck.repository == repository)).first():
        return
    # A concurrent insert of the same row: the savepoint is rolled back, theirs is kept.
    with contextlib.suppress(IntegrityError), session.begin_nested():
        session.add(ImportCheck(repository=repository))
        session.flush()


def claim_check(
    session: Session, *, repository: str, now: dt.datetime, interval: dt.timedelta
) -> bool:
    """True for exactly one caller per interval: the check is due and now taken."""
    _ensure(session, repository)
    claimed = session.execute(
        update(ImportCheck)
        .where(
            ImportCheck.repository == repository,
            or_(ImportCheck.checked_at.is_(None), ImportCheck.checked_at <= now - interval),
        )
        .values(checked_at=now)
        .returning(ImportCheck.repository)
    ).first()
    return claimed is not None


def claim_version(session: Session, *, repository: str, version: str, now: dt.datetime) -> bool:
    """True for exactly one caller per new data version: that one queues the retrain."""
    _ensure(session, repository)
    claimed = session.execute(
        update(ImportCheck)
        .where(
            ImportCheck.repository == repository,
            or_(ImportCheck.queued_version.is_(None), ImportCheck.queued_version != version),
        )
        .values(queued_version=version, queued_at=now)
        .returning(ImportCheck.repository)
    ).first()
    return claimed is not None
