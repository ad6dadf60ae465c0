"""Store rows as modelci's own code writes them, for the dashboard's tests and bench.

Evaluations, runs, model events, retrains and drift reports go through the
store's functions (the same calls the evaluator, the deliverer, the retrainer
and the drift watch make); jobs through Procrastinate's own defer, or, for the
bench's tens of thousands, one INSERT of rows shaped as Procrastinate writes them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import text

from modelci.monitor.verdicts import ColumnDrift, Distribution, DriftReport
from modelci.store import monitoring, records
from modelci.store import retrains as retrain_store
from modelci.store.db import Database

METRICS = ("accuracy", "f1")


def sha(n: int) -> str:
    return hashlib.sha1(str(n).encode()).hexdigest()


def report_json(accuracy: float, *, passed: bool) -> dict[str, Any]:
    """An evaluation's stored report (evaluate.report.render_json's shape)."""
    delta = 0.012 if passed else -0.03
    return {
        "passed": passed,
        "head_only": False,
        "summary": "no regression" if passed else "accuracy regressed",
        "metrics": [
            {
                "name": "accuracy",
                "head": accuracy + delta,
                "base": accuracy,
                "delta": delta,
                "rel_delta": delta / accuracy,
                "direction": "higher",
                "tolerance": 0.0,
                "gated": True,
                "verdict": "improved" if passed else "regressed",
                "scored_by": "repository",
                "ci": {"low": delta - 0.01, "high": delta + 0.01, "confidence": 0.95},
            },
            {
                "name": "train_seconds",
                "head": 1.2,
                "base": 1.1,
                "delta": 0.1,
                "rel_delta": 0.09,
                "direction": None,
                "tolerance": 0.0,
                "gated": False,
                "verdict": "changed",
                "scored_by": "repository",
                "ci": None,
            },
        ],
        "sides": {
            "head": {"timings": {"env_s": 0.4, "prepare_s": 0.9, "train_s": 2.5, "total_s": 3.6}},
            "base": {"timings": {"env_s": 0.3, "prepare_s": 0.8, "train_s": 2.4, "total_s": 3.4}},
        },
        "logs": {},
        "error": None,
    }


def add_evaluation(
    database: Database,
    *,
    repo: str,
    job_id: int | None = None,
    passed: bool = True,
    running: bool = False,
    logs: dict[str, Path] | None = None,
    accuracy: float = 0.9,
    number: int = 0,
) -> int:
    """One evaluation with both runs, finished (or still running, with its log paths)."""
    with database.session() as session:
        repository = records.get_or_create_repository(
            session, url=f"https://github.com/{repo}.git", name=repo
        )
        log_paths = {role: str(path) for role, path in (logs or {}).items()}
        evaluation = records.create_evaluation(
            session,
            repository_id=repository.id,
            base_sha=sha(2 * number + 1),
            head_sha=sha(2 * number + 2),
            job_id=job_id,
            report={"logs": log_paths},
        )
        if running:
            return evaluation.id
        runs = {}
        for role in ("head", "base"):
            run = records.create_run(
                session,
                repository_id=repository.id,
                sha=sha(2 * number + (2 if role == "head" else 1)),
                role=role,
                cache_key=f"k{number}{role}",
            )
            records.finish_run(
                session,
                run_id=run.id,
                status="succeeded",
                metrics={"accuracy": accuracy},
                timings={"env_s": 0.4, "train_s": 2.5, "total_s": 3.6},
                log_path=log_paths.get(role),
            )
            runs[role] = run.id
        records.set_evaluation_runs(
            session, evaluation_id=evaluation.id, base_run_id=runs["base"], head_run_id=runs["head"]
        )
        report = {**report_json(accuracy, passed=passed), "logs": log_paths}
        records.finish_evaluation(
            session,
            evaluation_id=evaluation.id,
            status="succeeded",
            passed=passed,
            report=report,
            seconds=3.6,
        )
        return evaluation.id


def add_model(
    database: Database, *, name: str, repo: str, versions: int, retrain_every: int = 3
) -> None:
    """``versions`` registrations of a model; each promoted but every ``retrain_every``-th
    (a retrain, scored against the champion with an interval, kept or promoted)."""
    rng = random.Random(name)
    champion: int | None = None
    with database.session() as session:
        for version in range(1, versions + 1):
            accuracy = 0.8 + 0.1 * version / versions + rng.uniform(-0.01, 0.01)
            metrics = {"accuracy": accuracy, "f1": accuracy - 0.05}
            records.record_model_event(
                session,
                model_name=name,
                version=version,
                action="registered",
                actor="alice",
                reason=f"trained {sha(version)[:12]}",
                sha=sha(version),
                details={
                    "metrics": metrics,
                    "run_id": f"run{version}",
                    "repository": f"https://github.com/{repo}.git",
                },
            )
            details: dict[str, Any] = {"champion_before": champion, "reasons": [], "checks": []}
            retrain = version % retrain_every == 0 and champion is not None
            if retrain:
                record = retrain_store.create_retrain(
                    session,
                    repository=f"https://github.com/{repo}.git",
                    ref="main",
                    trigger="schedule",
                    actor="schedule",
                )
                champion_score = accuracy - 0.004
                details.update(
                    trigger="schedule",
                    retrain_id=record.id,
                    scores={
                        "new": {"accuracy": accuracy},
                        "champion": {"accuracy": champion_score},
                    },
                    intervals={"accuracy": {"low": -0.002, "high": 0.01, "confidence": 0.95}},
                    data_version={"data/train.csv": f"{version:032x}"},
                )
                promote = version % (2 * retrain_every) != 0
                retrain_store.finish_retrain(
                    session,
                    retrain_id=record.id,
                    sha=sha(version),
                    decision="promoted" if promote else "kept",
                    model_name=name,
                    version=version,
                    champion_version=champion,
                    data_version=details["data_version"],
                    metrics={
                        "new": {"accuracy": accuracy},
                        "champion": {"accuracy": champion_score},
                    },
                )
            else:
                promote = True
            records.record_model_event(
                session,
                model_name=name,
                version=version,
                action="promoted" if promote else "rejected",
                actor="schedule" if retrain else "alice",
                reason="accuracy within the gates" if promote else "accuracy did not improve",
                sha=sha(version),
                details=details,
            )
            if promote:
                champion = version


def drift_report(share: float) -> dict[str, Any]:
    """A drift report's stored body (monitor.verdicts.DriftReport.as_json)."""
    columns = tuple(
        ColumnDrift(
            name=name,
            kind="num",
            test="Wasserstein distance (normed)",
            score=score,
            threshold=0.1,
            drifted=score > 0.1,
            reference_rows=5000,
            current_rows=1000,
            distribution=Distribution(
                labels=["0-1", "1-2"], reference=[0.5, 0.5], current=[0.4, 0.6], edges=[0, 1, 2]
            ),
        )
        for name, score in (("age", share * 0.4), ("income", 0.05), ("score", share * 0.3))
    )
    return DriftReport(columns, (), 0.5, 5000, 1000, label="window").as_json()


def add_drift(database: Database, *, name: str, windows: int, version: int = 1) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with database.session() as session:
        for k in range(windows):
            share = 0.9 if k == windows - 1 else 0.1 * (k % 3)
            body = drift_report(share)
            monitoring.add_drift_report(
                session,
                model_name=name,
                version=version,
                window_start=start + dt.timedelta(hours=k),
                window_end=start + dt.timedelta(hours=k + 1),
                rows=1000,
                share_drifted=body["share_drifted"],
                drifted=body["dataset_drifted"],
                report=body,
            )


JOB_TASKS = (
    ("modelci.evaluate_pull_request", "evaluations"),
    ("modelci.deliver_commit", "evaluations"),
    ("modelci.retrain", "evaluations"),
    ("modelci.process_delivery", "events"),
    ("modelci.retry_stalled", "default"),
)


def bulk_jobs(database: Database, *, count: int, repos: list[str]) -> None:
    """``count`` jobs in Procrastinate's table, as its defer writes them (the bench's load:
    most finished, a few failed with their reasons, housekeeping among them)."""
    statuses = (
        ["succeeded"] * 90 + ["failed"] * 4 + ["todo"] * 3 + ["doing", "cancelled", "aborted"]
    )
    rng = random.Random(7)
    rows = []
    for k in range(count):
        task, queue = JOB_TASKS[k % len(JOB_TASKS)]
        repo = repos[k % len(repos)]
        args = (
            {"repo": repo, "number": k % 500, "head_sha": sha(k)}
            if queue != "default"
            else {"timestamp": k}
        )
        status = rng.choice(statuses) if queue != "default" else "succeeded"
        rows.append({"queue": queue, "task": task, "args": json.dumps(args), "status": status})
    with database.session() as session:
        session.execute(
            text(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
                "VALUES (:queue, :task, CAST(:args AS jsonb), "
                "CAST(:status AS procrastinate_job_status), 1)"
            ),
            rows,
        )
        session.execute(
            text(
                "INSERT INTO job_failures (job_id, task_name, error, retried, failed_at) "
                "SELECT id, task_name, 'RunFailed: training exited with status 1', false, now() "
                "FROM procrastinate_jobs WHERE status = 'failed' ON CONFLICT DO NOTHING"
            )
        )
