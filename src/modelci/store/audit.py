"""The audit log: who did what to which repository or model from the dashboard, and why.

One row per action (cancel, retry, promote, rollback, retrain, datasets...),
written by ``web.auth.audit`` once the action succeeded, never updated.
``target`` names what was acted on (``job:12``, ``model:churn``);
``repository`` (``owner/name``) lets a repository's page show its history.
Keyword-only queries taking a ``Session``, as in ``records``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelci.store.records import Base, JsonType, UTCDateTime

__all__ = ["AuditEntry", "list_audit", "record_audit"]

_Id = BigInteger().with_variant(Integer, "sqlite")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_repository_id", "repository", "id"),
        Index("ix_audit_log_target_id", "target", "id"),
    )

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    actor: Mapped[str] = mapped_column(String(300))
    actor_kind: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(50))
    repository: Mapped[str | None] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JsonType)


def record_audit(
    session: Session,
    *,
    actor: str,
    actor_kind: str,
    action: str,
    target: str,
    reason: str,
    details: dict[str, Any],
    repository: str | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        actor=actor,
        actor_kind=actor_kind,
        action=action,
        repository=repository,
        target=target,
        reason=reason,
        details=details,
    )
    session.add(entry)
    session.flush()
    return entry


def list_audit(
    session: Session,
    *,
    repository: str | None = None,
    target: str | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Newest first; by repository or target when given (each has its index)."""
    query = select(AuditEntry)
    if repository is not None:
        query = query.where(AuditEntry.repository == repository)
    if target is not None:
        query = query.where(AuditEntry.target == target)
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
