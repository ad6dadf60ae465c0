"""What modelci stores: repositories, runs, evaluations, webhook deliveries, model
lifecycle events and the prediction log.

ORM models plus keyword-only query functions that take a ``Session`` first;
nothing else in the package writes SQL. Works on PostgreSQL (the default,
embedded or external) and SQLite. The schema itself is created by the Alembic
migrations in ``modelci/migrations`` (a test checks that they agree).

Statuses are plain strings: runs are ``queued``, ``running``, ``succeeded``,
``failed`` or ``cancelled``; roles are ``head``, ``base``, ``deliver``, ...
Datetimes are timezone-aware UTC on every backend.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import zlib
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    delete,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, configure_mappers, mapped_column
from sqlalchemy.types import TypeDecorator

from modelci.errors import ConfigError, StoreError

__all__ = [
    "DELIVERY_TEXT_MAX",
    "ApiToken",
    "Base",
    "Delivery",
    "Evaluation",
    "JobFailure",
    "ModelEvent",
    "PredictionRecord",
    "Repository",
    "Run",
    "create_api_token",
    "create_evaluation",
    "create_run",
    "delete_predictions_before",
    "end_running_evaluations",
    "evaluations_for_job",
    "find_api_token",
    "find_reusable_run",
    "finish_evaluation",
    "finish_run",
    "get_delivery",
    "get_or_create_repository",
    "get_run",
    "job_failures",
    "list_api_tokens",
    "list_evaluations",
    "list_model_events",
    "list_predictions",
    "list_runs",
    "lock_key",
    "log_predictions",
    "mark_delivery_dispatched",
    "mark_delivery_failed",
    "mark_delivery_processed",
    "model_event_for_sha",
    "note_evaluation_log",
    "record_delivery",
    "record_job_failure",
    "record_model_event",
    "revoke_api_token",
    "set_evaluation_runs",
    "undispatched_deliveries",
    "warm_up",
]

JsonType = JSON().with_variant(JSONB(), "postgresql")
# Width of a delivery's id, event and action columns: longer values are refused
# before they reach the database (service.intake), which would fail the insert.
DELIVERY_TEXT_MAX = 100
_Row = TypeVar("_Row", bound="Base")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite stores no zone (it would keep a +02:00 time's wall clock), so values
    are converted to UTC on the way in and marked UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware one")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Repository(Base):
    __tablename__ = "repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    sha: Mapped[str] = mapped_column(String(40))
    role: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    env_key: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    timings: Mapped[dict[str, float] | None] = mapped_column(JsonType)
    log_path: Mapped[str | None] = mapped_column(String(2000))
    outputs_dir: Mapped[str | None] = mapped_column(String(2000))
    metrics: Mapped[dict[str, float] | None] = mapped_column(JsonType)
    error: Mapped[str | None] = mapped_column(Text)
    reused_from_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))


class Evaluation(Base):
    __tablename__ = "evaluations"
    # A repository's evaluations newest first (the dashboard).
    __table_args__ = (Index("ix_evaluations_repository_id_id", "repository_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(ForeignKey("repositories.id"), index=True)
    base_sha: Mapped[str] = mapped_column(String(40))
    head_sha: Mapped[str] = mapped_column(String(40))
    base_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    head_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    job_id: Mapped[int | None] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(20))
    passed: Mapped[bool | None] = mapped_column(Boolean)
    report: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    seconds: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    """A webhook delivery, stored before it is acknowledged."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(DELIVERY_TEXT_MAX), primary_key=True)
    event: Mapped[str] = mapped_column(String(DELIVERY_TEXT_MAX))
    action: Mapped[str | None] = mapped_column(String(DELIVERY_TEXT_MAX))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    job_id: Mapped[int | None] = mapped_column(Integer)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    processed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(30))
    detail: Mapped[str | None] = mapped_column(Text)


class ApiToken(Base):
    """A bearer token of the jobs API; only its SHA-256 is kept (the token is random)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class JobFailure(Base):
    """Why a job's last attempt failed (Procrastinate keeps no error message)."""

    __tablename__ = "job_failures"

    job_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    task_name: Mapped[str] = mapped_column(String(128))
    error: Mapped[str] = mapped_column(Text)
    retried: Mapped[bool] = mapped_column(Boolean)
    failed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class ModelEvent(Base):
    """Something that happened to a registered model: who did it and why.

    ``action`` is ``registered``, ``promoted``, ``rejected`` (failed its gates),
    ``rolled_back`` or ``swap_failed`` (the server refused to serve it).
    """

    __tablename__ = "model_events"
    # A model's events newest first, and each model's latest registration (the dashboard).
    __table_args__ = (
        Index("ix_model_events_model_name_id", "model_name", "id"),
        Index("ix_model_events_action_model_name_id", "action", "model_name", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(300), index=True)
    version: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(30))
    actor: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)
    sha: Mapped[str | None] = mapped_column(String(40))
    details: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)


class PredictionRecord(Base):
    """One served prediction, written in batches off the request path."""

    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_model_name_created_at", "model_name", "created_at"),
        # The retention deletes across every model by age.
        Index("ix_predictions_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(300))
    version: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[Any] = mapped_column(JsonType)
    outputs: Mapped[Any] = mapped_column(JsonType)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    # What predict answered as request_id; feedback (true labels) names it.
    request_id: Mapped[str | None] = mapped_column(String(32), index=True)


def get_or_create_repository(session: Session, *, url: str, name: str) -> Repository:
    found = session.scalars(select(Repository).where(Repository.url == url)).first()
    if found is not None:
        return found
    repo = Repository(url=url, name=name)
    try:
        with session.begin_nested():
            session.add(repo)
    except IntegrityError:  # created concurrently by another process
        return session.scalars(select(Repository).where(Repository.url == url)).one()
    return repo


def create_run(
    session: Session,
    *,
    repository_id: int,
    sha: str,
    role: str,
    cache_key: str,
    env_key: str | None = None,
    status: str = "running",
    started_at: dt.datetime | None = None,
    reused_from_id: int | None = None,
) -> Run:
    """A new run; ``started_at`` defaults to now for a run created ``running``."""
    if started_at is None and status == "running":
        started_at = _now()
    run = Run(
        repository_id=repository_id,
        sha=sha,
        role=role,
        status=status,
        cache_key=cache_key,
        env_key=env_key,
        started_at=started_at,
        reused_from_id=reused_from_id,
    )
    session.add(run)
    session.flush()
    return run


def finish_run(
    session: Session,
    *,
    run_id: int,
    status: str,
    metrics: dict[str, float] | None = None,
    error: str | None = None,
    timings: dict[str, float] | None = None,
    log_path: str | None = None,
    outputs_dir: str | None = None,
) -> Run:
    """Record the run's end; fields left None keep what was stored before."""
    run = _get(session, Run, run_id)
    run.status, run.finished_at = status, _now()
    changes = {
        "metrics": metrics,
        "error": error,
        "timings": timings,
        "log_path": log_path,
        "outputs_dir": outputs_dir,
    }
    for field, value in changes.items():
        if value is not None:
            setattr(run, field, value)
    session.flush()
    return run


def _get(session: Session, model: type[_Row], key: int | str) -> _Row:
    found = session.get(model, key)
    if found is None:
        raise StoreError(f"no {model.__tablename__} row with id {key!r}")
    return found


def get_run(session: Session, *, run_id: int) -> Run | None:
    return session.get(Run, run_id)


def warm_up(session: Session) -> None:
    """Configure the ORM and compile the lookup of a reusable run: a fresh process
    (the CLI) otherwise pays for both when it first writes, after the training.
    Only a head start: a failure here is met again, and reported, by the real query."""
    configure_mappers()
    with contextlib.suppress(SQLAlchemyError):
        find_reusable_run(session, cache_key="")


def find_reusable_run(session: Session, *, cache_key: str) -> Run | None:
    """The latest succeeded run with this cache key that kept its outputs, for reuse."""
    return session.scalars(
        select(Run)
        .where(Run.cache_key == cache_key, Run.status == "succeeded", Run.outputs_dir.is_not(None))
        .order_by(Run.id.desc())
        .limit(1)
    ).first()


def list_runs(session: Session, *, repository_id: int | None = None, limit: int = 50) -> list[Run]:
    query = select(Run).order_by(Run.id.desc()).limit(limit)
    if repository_id is not None:
        query = query.where(Run.repository_id == repository_id)
    return list(session.scalars(query))


def create_evaluation(
    session: Session,
    *,
    repository_id: int,
    base_sha: str,
    head_sha: str,
    base_run_id: int | None = None,
    head_run_id: int | None = None,
    job_id: int | None = None,
    status: str = "running",
    report: dict[str, Any] | None = None,
) -> Evaluation:
    evaluation = Evaluation(
        repository_id=repository_id,
        base_sha=base_sha,
        head_sha=head_sha,
        base_run_id=base_run_id,
        head_run_id=head_run_id,
        job_id=job_id,
        status=status,
        report=report,
    )
    session.add(evaluation)
    session.flush()
    return evaluation


def set_evaluation_runs(
    session: Session, *, evaluation_id: int, base_run_id: int | None, head_run_id: int | None
) -> None:
    evaluation = _get(session, Evaluation, evaluation_id)
    evaluation.base_run_id, evaluation.head_run_id = base_run_id, head_run_id
    session.flush()


def note_evaluation_log(session: Session, *, evaluation_id: int, role: str, path: str) -> None:
    """Record a running side's log path in the evaluation's report (``logs``).

    Head and base start at once: the row is locked first, so neither side's path
    overwrites the other's.
    """
    evaluation = session.scalars(
        select(Evaluation).where(Evaluation.id == evaluation_id).with_for_update()
    ).first()
    if evaluation is None:
        raise StoreError(f"no evaluations row with id {evaluation_id!r}")
    report = dict(evaluation.report or {})
    report["logs"] = {**(report.get("logs") or {}), role: path}
    evaluation.report = report
    session.flush()


def end_running_evaluations(session: Session, *, job_id: int, status: str, error: str) -> int:
    """End the job's evaluations still marked running (the job stopped before they
    finished); how many there were."""
    found = list(
        session.scalars(
            select(Evaluation).where(Evaluation.job_id == job_id, Evaluation.status == "running")
        )
    )
    for evaluation in found:
        evaluation.status, evaluation.finished_at = status, _now()
        evaluation.report = {**(evaluation.report or {}), "error": error}
    session.flush()
    return len(found)


def finish_evaluation(
    session: Session,
    *,
    evaluation_id: int,
    status: str,
    passed: bool | None,
    report: dict[str, Any] | None = None,
    seconds: float | None = None,
) -> Evaluation:
    evaluation = _get(session, Evaluation, evaluation_id)
    evaluation.status, evaluation.passed, evaluation.report = status, passed, report
    evaluation.seconds, evaluation.finished_at = seconds, _now()
    session.flush()
    return evaluation


def list_evaluations(
    session: Session, *, repository_id: int | None = None, limit: int = 50
) -> list[Evaluation]:
    query = select(Evaluation).order_by(Evaluation.id.desc()).limit(limit)
    if repository_id is not None:
        query = query.where(Evaluation.repository_id == repository_id)
    return list(session.scalars(query))


def evaluations_for_job(session: Session, *, job_id: int) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Evaluation).where(Evaluation.job_id == job_id).order_by(Evaluation.id)
    )
    return [
        {
            "id": e.id,
            "base_sha": e.base_sha,
            "head_sha": e.head_sha,
            "status": e.status,
            "passed": e.passed,
            "base_run_id": e.base_run_id,
            "head_run_id": e.head_run_id,
            "report": e.report,
        }
        for e in rows
    ]


def record_delivery(
    session: Session, *, delivery_id: str, event: str, action: str | None, payload: dict[str, Any]
) -> bool:
    """Store a delivery; False when that delivery id was stored before (a redelivery)."""
    if session.get(Delivery, delivery_id) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(Delivery(id=delivery_id, event=event, action=action, payload=payload))
    except IntegrityError:
        return False
    return True


def get_delivery(session: Session, *, delivery_id: str) -> Delivery | None:
    return session.get(Delivery, delivery_id)


def mark_delivery_dispatched(session: Session, *, delivery_id: str, job_id: int | None) -> None:
    delivery = _get(session, Delivery, delivery_id)
    delivery.job_id, delivery.dispatched_at = job_id, _now()


def mark_delivery_processed(
    session: Session, *, delivery_id: str, outcome: str, detail: str, job_id: int | None = None
) -> None:
    delivery = _get(session, Delivery, delivery_id)
    # job_id (the job the event queued) is accepted for the callers but not stored yet:
    # Delivery.job_id is the job that processes the delivery.
    delivery.outcome, delivery.detail, delivery.processed_at = outcome, detail, _now()


def mark_delivery_failed(session: Session, *, delivery_id: str, detail: str) -> None:
    """Record why processing failed for good; left unprocessed, so a rerun tries again."""
    delivery = _get(session, Delivery, delivery_id)
    delivery.outcome, delivery.detail = "failed", detail


def undispatched_deliveries(session: Session, *, limit: int = 1000) -> list[str]:
    """Deliveries stored but never queued (the process stopped in between)."""
    return list(
        session.scalars(
            select(Delivery.id)
            .where(Delivery.dispatched_at.is_(None), Delivery.processed_at.is_(None))
            .order_by(Delivery.received_at)
            .limit(limit)
        )
    )


def lock_key(session: Session, *, key: str) -> None:
    """Hold a lock named ``key`` until the transaction ends.

    PostgreSQL: an advisory lock on a hash of the key. SQLite: the database's
    write lock, which every transaction takes when it begins (see ``db``).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode()) - 2**31}
        )
    else:
        session.connection()  # begins the transaction, and so takes the lock


def record_model_event(
    session: Session,
    *,
    model_name: str,
    version: int | None,
    action: str,
    actor: str,
    reason: str,
    sha: str | None = None,
    details: dict[str, Any] | None = None,
) -> ModelEvent:
    event = ModelEvent(
        model_name=model_name,
        version=version,
        action=action,
        actor=actor,
        reason=reason,
        sha=sha,
        details=details,
    )
    session.add(event)
    session.flush()
    return event


def list_model_events(session: Session, *, model_name: str, limit: int = 50) -> list[ModelEvent]:
    """The newest first."""
    return list(
        session.scalars(
            select(ModelEvent)
            .where(ModelEvent.model_name == model_name)
            .order_by(ModelEvent.id.desc())
            .limit(limit)
        )
    )


def model_event_for_sha(session: Session, *, sha: str, action: str) -> ModelEvent | None:
    """The newest ``action`` event of a model version trained from commit ``sha``."""
    return session.scalars(
        select(ModelEvent)
        .where(ModelEvent.sha == sha, ModelEvent.action == action)
        .order_by(ModelEvent.id.desc())
        .limit(1)
    ).first()


def log_predictions(session: Session, *, rows: list[dict[str, Any]]) -> int:
    """Insert a batch; each row has model_name, version, inputs, outputs, latency_ms,
    created_at (timezone-aware)."""
    if rows:
        session.execute(insert(PredictionRecord), rows)
    return len(rows)


def list_predictions(
    session: Session,
    *,
    model_name: str,
    limit: int = 100,
    since: dt.datetime | None = None,
) -> list[PredictionRecord]:
    """The newest first; ``since`` keeps those made at or after it."""
    query = select(PredictionRecord).where(PredictionRecord.model_name == model_name)
    if since is not None:
        query = query.where(PredictionRecord.created_at >= since)
    return list(session.scalars(query.order_by(PredictionRecord.id.desc()).limit(limit)))


def delete_predictions_before(session: Session, *, before: dt.datetime, limit: int) -> int:
    """Delete at most ``limit`` predictions made before ``before`` (the retention);
    the number deleted."""
    oldest = (
        select(PredictionRecord.id)
        .where(PredictionRecord.created_at < before)
        .order_by(PredictionRecord.created_at)
        .limit(limit)
    )
    result = session.execute(delete(PredictionRecord).where(PredictionRecord.id.in_(oldest)))
    return int(getattr(result, "rowcount", 0) or 0)


def create_api_token(session: Session, *, name: str, token_sha256: str) -> ApiToken:
    """Store a token's hash under ``name``; a ``ConfigError`` if the name is taken."""
    token = ApiToken(name=name, token_sha256=token_sha256)
    try:
        with session.begin_nested():
            session.add(token)
    except IntegrityError:
        raise ConfigError(
            f"a token named {name!r} exists already",
            hint=f"pick another name, or `modelci tokens revoke {name}` first",
        ) from None
    return token


def list_api_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))


def revoke_api_token(session: Session, *, name: str) -> bool:
    """Delete the token called ``name``; False when there is none."""
    token = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if token is None:
        return False
    session.delete(token)
    return True


def find_api_token(
    session: Session, *, token_sha256: str, touch_after: dt.timedelta | None = None
) -> ApiToken | None:
    """The token with this hash; its ``last_used_at`` is set to now when older than
    ``touch_after`` (a write on every request would be one per prediction)."""
    token = session.scalars(select(ApiToken).where(ApiToken.token_sha256 == token_sha256)).first()
    if token is not None and touch_after is not None:
        now = _now()
        if token.last_used_at is None or now - token.last_used_at >= touch_after:
            token.last_used_at = now
    return token


def record_job_failure(
    session: Session, *, job_id: int, task_name: str, error: str, retried: bool
) -> None:
    """Keep why the job's latest attempt failed (replacing an earlier attempt's reason)."""
    failure = session.get(JobFailure, job_id)
    if failure is None:
        failure = JobFailure(job_id=job_id, task_name=task_name)
        session.add(failure)
    failure.error, failure.retried, failure.failed_at = error, retried, _now()
    session.flush()


def job_failures(session: Session, *, job_ids: list[int]) -> dict[int, JobFailure]:
    if not job_ids:
        return {}
    rows = session.scalars(select(JobFailure).where(JobFailure.job_id.in_(job_ids)))
    return {row.job_id: row for row in rows}


# Tables defined in modules of their own join Base's metadata when records is
# imported, so the migrations are checked against every model.
from modelci.store import audit as _audit  # noqa: E402, F401
from modelci.store import importchecks as _importchecks  # noqa: E402, F401
from modelci.store import monitoring as _monitoring  # noqa: E402, F401
from modelci.store import retrains as _retrains  # noqa: E402, F401
from modelci.store import schedules as _schedules  # noqa: E402, F401
from modelci.store import websessions as _websessions  # noqa: E402, F401
