"""Read-only queries for the dashboard's pages (``modelci.web``).

Keyword-only functions taking a ``Session`` first, as in ``records``; they
return plain dicts (a page renders them after the session is closed). Each is
one or two indexed queries, so that a page stays within its time budget with
tens of thousands of jobs (``bench/dashboard.py``): lists are newest first,
bounded by ``limit``, and filtered in SQL by the repositories the viewer may
read (``repos``; None means every repository).

Jobs are read from Procrastinate's own table (``procrastinate_jobs``): the
filters a page needs (repository, kind, status, newest first) are one query
there, on the indexes ``service.jobs.apply_schema`` adds. Changing a job goes
through ``service.jobs.ProcrastinateQueue``, never through here.

Needs PostgreSQL (the server's database): the jobs and the latency percentiles
use its SQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from modelci.store.monitoring import DriftReportRecord
from modelci.store.records import Evaluation, ModelEvent, PredictionRecord, Repository, Run
from modelci.store.retrains import RetrainRecord
from modelci.store.schedules import RetrainSchedule

__all__ = [
    "DELIVERY_ACTIONS",
    "drift_history",
    "evaluation_detail",
    "evaluation_status",
    "latest_drift",
    "latest_evaluations",
    "latest_model_events",
    "latest_retrains",
    "list_jobs",
    "model_events",
    "model_repositories",
    "model_repository",
    "model_retrains",
    "repository_names",
    "serving_stats",
]

# The events that end a delivery (or a manual change): what the overview lists.
DELIVERY_ACTIONS = ("promoted", "rejected", "rolled_back", "swap_failed")
# Retrain rows read per row shown: a retrain's repository is a clone URL or a path,
# so the viewer's repositories are matched on each row's short name, after the query.
_RETRAIN_OVERREAD = 5


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def repository_names(session: Session) -> list[str]:
    """Every repository modelci has evaluated or delivered (owner/name), sorted."""
    names = set(session.scalars(select(Repository.name)))
    names.update(session.scalars(select(RetrainSchedule.repository)))
    return sorted(names)


def _evaluation_row(evaluation: Evaluation, repo: str, number: Any) -> dict[str, Any]:
    return {
        "id": evaluation.id,
        "repo": repo,
        "number": int(number) if isinstance(number, int | str) and str(number).isdigit() else None,
        "status": evaluation.status,
        "passed": evaluation.passed,
        "head_sha": evaluation.head_sha,
        "base_sha": evaluation.base_sha,
        "job_id": evaluation.job_id,
        "seconds": evaluation.seconds,
        "created_at": _iso(evaluation.created_at),
        "finished_at": _iso(evaluation.finished_at),
    }


def _job_number(session: Session, job_ids: list[int]) -> dict[int, Any]:
    """The pull request number each evaluation job was queued for."""
    if not job_ids:
        return {}
    rows = session.execute(
        text("SELECT id, args->>'number' AS number FROM procrastinate_jobs WHERE id = ANY(:ids)"),
        {"ids": job_ids},
    )
    return {int(row.id): row.number for row in rows}


def latest_evaluations(
    session: Session, *, repos: Sequence[str] | None, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest evaluations of the given repositories (None: all)."""
    query = (
        select(Evaluation, Repository.name)
        .join(Repository, Repository.id == Evaluation.repository_id)
        .order_by(Evaluation.id.desc())
        .limit(limit)
    )
    if repos is not None:
        query = query.where(Repository.name.in_(list(repos)))
    rows = list(session.execute(query))
    numbers = _job_number(session, [e.job_id for e, _ in rows if e.job_id is not None])
    return [_evaluation_row(e, name, numbers.get(e.job_id or -1)) for e, name in rows]


def _run_row(run: Run | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "sha": run.sha,
        "status": run.status,
        "timings": dict(run.timings or {}),
        "log_path": run.log_path,
        "metrics": dict(run.metrics or {}),
        "error": run.error,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "reused_from_id": run.reused_from_id,
    }


def evaluation_detail(session: Session, *, evaluation_id: int) -> dict[str, Any] | None:
    """One evaluation with its report and both runs; None when there is none."""
    found = session.execute(
        select(Evaluation, Repository.name)
        .join(Repository, Repository.id == Evaluation.repository_id)
        .where(Evaluation.id == evaluation_id)
    ).first()
    if found is None:
        return None
    evaluation, repo = found
    numbers = _job_number(session, [evaluation.job_id] if evaluation.job_id else [])
    row = _evaluation_row(evaluation, repo, numbers.get(evaluation.job_id or -1))
    row["report"] = dict(evaluation.report or {})
    row["runs"] = {
        "head": _run_row(
            session.get(Run, evaluation.head_run_id) if evaluation.head_run_id else None
        ),
        "base": _run_row(
            session.get(Run, evaluation.base_run_id) if evaluation.base_run_id else None
        ),
    }
    return row


def evaluation_status(session: Session, *, evaluation_id: int) -> tuple[str, dict[str, Any]] | None:
    """Status and report of one evaluation (what a log stream polls); None: no such row."""
    row = session.execute(
        select(Evaluation.status, Evaluation.report).where(Evaluation.id == evaluation_id)
    ).first()
    if row is None:
        return None
    return str(row.status), dict(row.report or {})


def list_jobs(
    session: Session,
    *,
    repos: Sequence[str] | None,
    task: str | None = None,
    status: str | None = None,
    before_id: int | None = None,
    hidden_tasks: Sequence[str] = (),
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Jobs newest first, with why each one's latest attempt failed.

    ``repos`` filters on the repository in the job's arguments: a job without one
    (housekeeping, a webhook's processing) is shown only when ``repos`` is None.
    ``before_id`` pages back from a job id.
    """
    rows = session.execute(
        text(
            """
            SELECT j.id, j.task_name, j.queue_name, j.status::text AS status, j.attempts,
                   j.args, j.scheduled_at, j.abort_requested, f.error
              FROM procrastinate_jobs j
              LEFT JOIN job_failures f ON f.job_id = j.id
             WHERE (CAST(:status AS text) IS NULL
                    OR j.status = CAST(:status AS procrastinate_job_status))
               AND (CAST(:task AS text) IS NULL OR j.task_name = :task)
               AND (CAST(:before AS bigint) IS NULL OR j.id < :before)
               AND NOT j.task_name = ANY(CAST(:hidden AS text[]))
               AND (CAST(:all_repos AS boolean) OR j.args->>'repo' = ANY(CAST(:repos AS text[])))
             ORDER BY j.id DESC
             LIMIT :limit
            """
        ),
        {
            "status": status,
            "task": task,
            "before": before_id,
            "hidden": list(hidden_tasks),
            "all_repos": repos is None,
            "repos": list(repos or []),
            "limit": limit,
        },
    )
    return [
        {
            "id": int(row.id),
            "task": row.task_name,
            "queue": row.queue_name,
            "status": row.status,
            "attempts": row.attempts,
            "args": dict(row.args or {}),
            "repo": (row.args or {}).get("repo"),
            "scheduled_at": _iso(row.scheduled_at),
            "abort_requested": bool(row.abort_requested),
            "error": row.error,
        }
        for row in rows
    ]


def model_repositories(session: Session) -> dict[str, str]:
    """Each registered model's repository, as its latest registration names it."""
    latest = (
        select(func.max(ModelEvent.id).label("id"))
        .where(ModelEvent.action == "registered")
        .group_by(ModelEvent.model_name)
        .subquery()
    )
    rows = session.execute(
        select(ModelEvent.model_name, ModelEvent.details["repository"].as_string()).join(
            latest, latest.c.id == ModelEvent.id
        )
    )
    return {name: repo or "" for name, repo in rows}


def model_repository(session: Session, *, model_name: str) -> str | None:
    """The repository of the model's latest registration; None: no such model."""
    found = session.execute(
        select(ModelEvent.details["repository"].as_string())
        .where(ModelEvent.action == "registered", ModelEvent.model_name == model_name)
        .order_by(ModelEvent.id.desc())
        .limit(1)
    ).first()
    return None if found is None else str(found[0] or "")


# Pages read rows, not ORM objects: hundreds of events per page, and building an
# object for each costs more than the query.
_EVENTS = ModelEvent.__table__
_RETRAINS = RetrainRecord.__table__


def _event_row(event: Any) -> dict[str, Any]:
    return {
        "id": event.id,
        "model": event.model_name,
        "version": event.version,
        "action": event.action,
        "actor": event.actor,
        "reason": event.reason,
        "sha": event.sha,
        "details": dict(event.details or {}),
        "at": _iso(event.created_at),
    }


def latest_model_events(
    session: Session,
    *,
    models: Sequence[str] | None,
    actions: Sequence[str] = DELIVERY_ACTIONS,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The newest events of these kinds across the given models (None: all)."""
    query = (
        select(_EVENTS)
        .where(ModelEvent.action.in_(list(actions)))
        .order_by(ModelEvent.id.desc())
        .limit(limit)
    )
    if models is not None:
        query = query.where(ModelEvent.model_name.in_(list(models)))
    return [_event_row(e) for e in session.execute(query)]


def model_events(session: Session, *, model_name: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """A model's events, newest first (the champion stack needs them all)."""
    return [
        _event_row(e)
        for e in session.execute(
            select(_EVENTS)
            .where(ModelEvent.model_name == model_name)
            .order_by(ModelEvent.id.desc())
            .limit(limit)
        )
    ]


def _retrain_row(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "repository": record.repository,
        "ref": record.ref,
        "sha": record.sha,
        "trigger": record.trigger,
        "actor": record.actor,
        "decision": record.decision,
        "reasons": list(record.reasons or []),
        "model": record.model_name,
        "version": record.version,
        "champion_version": record.champion_version,
        "data_version": dict(record.data_version or {}),
        "metrics": dict(record.metrics or {}),
        "error": record.error,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
    }


def latest_retrains(
    session: Session, *, limit: int = 10, overread: int = _RETRAIN_OVERREAD
) -> list[dict[str, Any]]:
    """The newest retrains (``limit * overread`` rows: the caller keeps the visible ones)."""
    query = select(_RETRAINS).order_by(RetrainRecord.id.desc()).limit(limit * overread)
    return [_retrain_row(r) for r in session.execute(query)]


def model_retrains(session: Session, *, model_name: str, limit: int = 200) -> list[dict[str, Any]]:
    """A model's retrains, newest first."""
    query = (
        select(_RETRAINS)
        .where(RetrainRecord.model_name == model_name)
        .order_by(RetrainRecord.id.desc())
        .limit(limit)
    )
    return [_retrain_row(r) for r in session.execute(query)]


def serving_stats(
    session: Session, *, model_name: str, since: dt.datetime
) -> dict[str, float | int | None]:
    """Requests, their rate and latency percentiles from the prediction log since ``since``."""
    row = session.execute(
        select(
            func.count(),
            func.percentile_cont(0.5).within_group(PredictionRecord.latency_ms),
            func.percentile_cont(0.99).within_group(PredictionRecord.latency_ms),
        ).where(PredictionRecord.model_name == model_name, PredictionRecord.created_at >= since)
    ).one()
    seconds = max(1.0, (dt.datetime.now(dt.UTC) - since).total_seconds())
    count = int(row[0] or 0)
    return {
        "requests": count,
        "per_second": count / seconds,
        "p50_ms": None if row[1] is None else float(row[1]),
        "p99_ms": None if row[2] is None else float(row[2]),
    }


# The columns of a report shown in lists: its body (every column's distributions) stays.
_DRIFT_COLUMNS = (
    DriftReportRecord.id,
    DriftReportRecord.model_name,
    DriftReportRecord.version,
    DriftReportRecord.window_start,
    DriftReportRecord.window_end,
    DriftReportRecord.rows,
    DriftReportRecord.share_drifted,
    DriftReportRecord.drifted,
)


def _drift_row(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "model": record.model_name,
        "version": record.version,
        "window_start": _iso(record.window_start),
        "window_end": _iso(record.window_end),
        "rows": record.rows,
        "share_drifted": record.share_drifted,
        "drifted": record.drifted,
    }


def latest_drift(session: Session, *, models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each given model's latest drift report (without its body), by model."""
    found: dict[str, dict[str, Any]] = {}
    for name in models:  # one index lookup each: (model_name, id) newest first
        record = session.execute(
            select(*_DRIFT_COLUMNS)
            .where(DriftReportRecord.model_name == name)
            .order_by(DriftReportRecord.id.desc())
            .limit(1)
        ).first()
        if record is not None:
            found[name] = _drift_row(record)
    return found


def drift_history(session: Session, *, model_name: str, limit: int = 50) -> list[dict[str, Any]]:
    """A model's drift reports, newest first, without their bodies."""
    query = (
        select(*_DRIFT_COLUMNS)
        .where(DriftReportRecord.model_name == model_name)
        .order_by(DriftReportRecord.id.desc())
        .limit(limit)
    )
    return [_drift_row(r) for r in session.execute(query)]
