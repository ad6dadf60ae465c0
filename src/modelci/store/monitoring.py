"""Monitoring: reference profiles, feedback labels, drift reports and each model's watch state.

- ``reference_profiles``: one per registered version, the per-column profile
  (``monitor.profile``) of the data it was trained for, computed once at
  registration; a window of served rows is tested against it.
- ``feedback``: the true labels of a served request, named by the ``request_id``
  predict answered (one row per request, the latest feedback wins).
- ``drift_reports``: one per window checked, with the report's JSON.
- ``monitor_state``: per model, the end of the last window checked (the drift
  job's watermark), the open alert issue and its clean-window count, and when
  drift last queued a retrain. The claims below are single UPDATEs with the
  old value in their WHERE, so two workers never check one window twice nor
  queue two retrains in one cooldown.

Keyword-only queries taking a ``Session``, as in ``records``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from modelci.store.records import Base, JsonType, PredictionRecord, UTCDateTime

__all__ = [
    "DriftReportRecord",
    "FeedbackRecord",
    "MonitorState",
    "ReferenceProfile",
    "add_drift_report",
    "claim_retrain",
    "claim_window",
    "get_profile",
    "labelled_predictions",
    "list_drift_reports",
    "monitor_state",
    "prediction_by_request",
    "predictions_after",
    "save_feedback",
    "save_profile",
    "set_alert",
]

_Id = BigInteger().with_variant(Integer, "sqlite")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReferenceProfile(Base):
    __tablename__ = "reference_profiles"

    model_name: Mapped[str] = mapped_column(String(300), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text)  # where its rows came from, for the report
    rows: Mapped[int] = mapped_column(Integer)
    profile: Mapped[bytes] = mapped_column(LargeBinary)
    # The version's monitoring: section (window, overrides, alerts), as registered.
    settings: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class FeedbackRecord(Base):
    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("model_name", "request_id", name="uq_feedback_request"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(300))
    request_id: Mapped[str] = mapped_column(String(32))
    labels: Mapped[list[Any]] = mapped_column(JsonType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class DriftReportRecord(Base):
    __tablename__ = "drift_reports"
    __table_args__ = (Index("ix_drift_reports_model_id", "model_name", "id"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(300))
    version: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    window_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    rows: Mapped[int] = mapped_column(Integer)
    share_drifted: Mapped[float] = mapped_column(Float)
    drifted: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class MonitorState(Base):
    __tablename__ = "monitor_state"

    model_name: Mapped[str] = mapped_column(String(300), primary_key=True)
    last_prediction_id: Mapped[int] = mapped_column(_Id, default=0)
    issue_number: Mapped[int | None] = mapped_column(Integer)
    alert_open: Mapped[bool] = mapped_column(Boolean, default=False)
    clean_windows: Mapped[int] = mapped_column(Integer, default=0)
    last_retrain_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


# -- reference profiles -------------------------------------------------------------


def save_profile(
    session: Session,
    *,
    model_name: str,
    version: int,
    source: str,
    rows: int,
    profile: bytes,
    settings: dict[str, Any],
) -> None:
    found = session.get(ReferenceProfile, (model_name, version))
    if found is None:
        found = ReferenceProfile(model_name=model_name, version=version)
        session.add(found)
    found.source, found.rows, found.profile, found.settings = source, rows, profile, settings
    session.flush()


def get_profile(session: Session, *, model_name: str, version: int) -> ReferenceProfile | None:
    return session.get(ReferenceProfile, (model_name, version))


# -- feedback -----------------------------------------------------------------------


def prediction_by_request(
    session: Session, *, model_name: str, request_id: str
) -> PredictionRecord | None:
    return session.scalars(
        select(PredictionRecord).where(
            PredictionRecord.model_name == model_name, PredictionRecord.request_id == request_id
        )
    ).first()


def save_feedback(
    session: Session, *, model_name: str, request_id: str, labels: list[Any]
) -> FeedbackRecord:
    """Store the labels of a request; feedback sent again for it replaces them."""
    found = session.scalars(
        select(FeedbackRecord).where(
            FeedbackRecord.model_name == model_name, FeedbackRecord.request_id == request_id
        )
    ).first()
    if found is None:
        record = FeedbackRecord(model_name=model_name, request_id=request_id, labels=labels)
        try:
            with session.begin_nested():
                session.add(record)
            return record
        except IntegrityError:  # the same request's feedback, sent twice at once
            found = session.scalars(
                select(FeedbackRecord).where(
                    FeedbackRecord.model_name == model_name,
                    FeedbackRecord.request_id == request_id,
                )
            ).one()
    found.labels, found.created_at = labels, _now()
    session.flush()
    return found


def labelled_predictions(
    session: Session, *, model_name: str, first_id: int, last_id: int
) -> list[tuple[PredictionRecord, FeedbackRecord]]:
    """The predictions with ids in [first_id, last_id] that have feedback."""
    query = (
        select(PredictionRecord, FeedbackRecord)
        .join(
            FeedbackRecord,
            (FeedbackRecord.model_name == PredictionRecord.model_name)
            & (FeedbackRecord.request_id == PredictionRecord.request_id),
        )
        .where(
            PredictionRecord.model_name == model_name,
            PredictionRecord.id >= first_id,
            PredictionRecord.id <= last_id,
        )
        .order_by(PredictionRecord.id)
    )
    return [(row[0], row[1]) for row in session.execute(query)]


# -- windows and drift reports ------------------------------------------------------


def predictions_after(
    session: Session, *, model_name: str, after_id: int, limit: int
) -> list[PredictionRecord]:
    """Logged requests of the model after ``after_id``, oldest first, at most ``limit``
    (a request holds one or many rows)."""
    return list(
        session.scalars(
            select(PredictionRecord)
            .where(PredictionRecord.model_name == model_name, PredictionRecord.id > after_id)
            .order_by(PredictionRecord.id)
            .limit(limit)
        )
    )


def add_drift_report(session: Session, **fields: Any) -> DriftReportRecord:
    record = DriftReportRecord(**fields)
    session.add(record)
    session.flush()
    return record


def list_drift_reports(
    session: Session, *, model_name: str, limit: int = 50
) -> list[DriftReportRecord]:
    """The newest first."""
    return list(
        session.scalars(
            select(DriftReportRecord)
            .where(DriftReportRecord.model_name == model_name)
            .order_by(DriftReportRecord.id.desc())
            .limit(limit)
        )
    )


# -- the watch state ----------------------------------------------------------------


def monitor_state(session: Session, *, model_name: str) -> MonitorState:
    """The model's state, created at its first use."""
    found = session.get(MonitorState, model_name)
    if found is not None:
        return found
    try:
        with session.begin_nested():
            state = MonitorState(model_name=model_name, last_prediction_id=0, clean_windows=0)
            session.add(state)
        return state
    except IntegrityError:  # created by another worker meanwhile
        return session.get(MonitorState, model_name, populate_existing=True)  # type: ignore[return-value]


def claim_window(session: Session, *, model_name: str, after_id: int, last_id: int) -> bool:
    """Move the watermark from ``after_id`` to ``last_id``; False when another worker
    moved it first (that worker checks this window)."""
    result = session.execute(
        update(MonitorState)
        .where(MonitorState.model_name == model_name, MonitorState.last_prediction_id == after_id)
        .values(last_prediction_id=last_id, updated_at=_now())
    )
    return bool(getattr(result, "rowcount", 0))


def claim_retrain(
    session: Session, *, model_name: str, now: dt.datetime, cooldown: dt.timedelta
) -> bool:
    """True for exactly one caller per cooldown: the one whose UPDATE moved
    ``last_retrain_at``."""
    result = session.execute(
        update(MonitorState)
        .where(
            MonitorState.model_name == model_name,
            or_(
                MonitorState.last_retrain_at.is_(None),
                MonitorState.last_retrain_at <= now - cooldown,
            ),
        )
        .values(last_retrain_at=now, updated_at=_now())
    )
    return bool(getattr(result, "rowcount", 0))


def set_alert(
    session: Session,
    *,
    model_name: str,
    alert_open: bool,
    clean_windows: int,
    issue_number: int | None,
) -> None:
    session.execute(
        update(MonitorState)
        .where(MonitorState.model_name == model_name)
        .values(
            alert_open=alert_open,
            clean_windows=clean_windows,
            issue_number=issue_number,
            updated_at=_now(),
        )
    )
