"""Retrains: what each retrain of a repository did, for its history and its plot.

One row per retrain, created when it starts (so a crash leaves a record with no
``finished_at``) and finished with the decision, the versions and both sides'
metrics on the same rows. ``plot_token`` is the unguessable name of its plot's
public URL. Keyword-only queries taking a ``Session``, as in ``records``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from sqlalchemy import Index, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelci.errors import StoreError
from modelci.store.records import Base, JsonType, UTCDateTime

__all__ = [
    "RetrainRecord",
    "create_retrain",
    "finish_retrain",
    "get_retrain",
    "list_retrains",
    "retrain_by_plot_token",
]

_FINISH_FIELDS = frozenset(
    {
        "sha",
        "decision",
        "reasons",
        "model_name",
        "version",
        "champion_version",
        "data_version",
        "metrics",
        "error",
        "finished_at",
    }
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RetrainRecord(Base):
    """One retrain: ``decision`` is ``running`` until it finishes, then ``promoted``,
    ``kept``, ``skipped`` or ``failed``."""

    __tablename__ = "retrains"
    __table_args__ = (
        Index("ix_retrains_repository_id", "repository", "id"),
        Index("ix_retrains_model_name_id", "model_name", "id"),  # a model's, newest first
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(Text)
    ref: Mapped[str] = mapped_column(String(300))
    sha: Mapped[str | None] = mapped_column(String(40))
    trigger: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(300))
    decision: Mapped[str] = mapped_column(String(20))
    reasons: Mapped[list[str] | None] = mapped_column(JsonType)
    model_name: Mapped[str | None] = mapped_column(String(300), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    champion_version: Mapped[int | None] = mapped_column(Integer)
    data_version: Mapped[dict[str, str] | None] = mapped_column(JsonType)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    plot_token: Mapped[str | None] = mapped_column(String(64), unique=True)


def create_retrain(
    session: Session, *, repository: str, ref: str, trigger: str, actor: str
) -> RetrainRecord:
    record = RetrainRecord(
        repository=repository,
        ref=ref[:300],
        trigger=trigger,
        actor=actor[:300],
        decision="running",
        reasons=[],
        data_version={},
        metrics={"new": {}, "champion": {}},
        plot_token=secrets.token_urlsafe(24),
    )
    session.add(record)
    session.flush()
    return record


def finish_retrain(session: Session, *, retrain_id: int, **fields: Any) -> None:
    """Set the given fields (and ``finished_at``, unless given)."""
    unknown = set(fields) - _FINISH_FIELDS
    if unknown:
        raise StoreError(
            f"a retrain has no field {', '.join(sorted(unknown))}",
            hint=f"set one of: {', '.join(sorted(_FINISH_FIELDS))}",
        )
    record = session.get(RetrainRecord, retrain_id)
    if record is None:
        raise StoreError(
            f"no retrain {retrain_id}", hint="list them with: modelci retrain --history REPO"
        )
    fields.setdefault("finished_at", _now())
    for key, value in fields.items():
        setattr(record, key, value)
    session.flush()


def list_retrains(
    session: Session,
    *,
    repository: str | None = None,
    model_name: str | None = None,
    limit: int = 50,
) -> list[RetrainRecord]:
    """The newest first."""
    query = select(RetrainRecord)
    if repository is not None:
        query = query.where(RetrainRecord.repository == repository)
    if model_name is not None:
        query = query.where(RetrainRecord.model_name == model_name)
    return list(session.scalars(query.order_by(RetrainRecord.id.desc()).limit(limit)))


def get_retrain(session: Session, *, retrain_id: int) -> RetrainRecord | None:
    return session.get(RetrainRecord, retrain_id)


def retrain_by_plot_token(session: Session, *, token: str) -> RetrainRecord | None:
    return session.scalars(select(RetrainRecord).where(RetrainRecord.plot_token == token)).first()
