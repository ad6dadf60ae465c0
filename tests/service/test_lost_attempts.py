"""A job whose worker keeps dying is failed after MAX_LOST_ATTEMPTS, with the reason stored
where the jobs API shows it (store.records.job_failures)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from modelci.service import jobs
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import Database, open_database
from tests.service.test_jobs import Engine, Recorder, evaluation, wait_until, worker
from tests.service.test_rate_limits import engine

__all__ = ["engine"]  # the fixture used here


@pytest.fixture
def database(engine: Engine) -> Iterator[Database]:
    data = Path(tempfile.mkdtemp(prefix="modelci-lost-"))
    db = open_database(Settings(data_dir=data, database_url=engine.url))
    try:
        yield db
    finally:
        db.close()
        shutil.rmtree(data, ignore_errors=True)


def lost_its_worker(engine: Engine, job_id: int, *, attempts: int) -> None:
    """What a worker killed mid-job leaves: the job doing, ``attempts`` started, no worker
    (a SIGKILLed worker's heartbeat row is gone or stale; both read as stalled)."""
    conninfo = engine.url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', attempts = %s, worker_id = NULL "
            "WHERE id = %s",
            (attempts, job_id),
        )


def failure(database: Database, job_id: int) -> store.JobFailure | None:
    with database.session() as session:
        return store.job_failures(session, job_ids=[job_id]).get(job_id)


def test_a_job_that_lost_its_worker_max_times_fails_with_the_reason(
    engine: Engine, database: Database
) -> None:
    recorder = Recorder()
    services = recorder.services()
    services.database = database
    jobs.install_services(services)
    job_id = engine.queue().enqueue_evaluation(evaluation(1, "head"))
    lost_its_worker(engine, job_id, attempts=jobs.MAX_LOST_ATTEMPTS)
    with worker(engine):
        wait_until(lambda: engine.status(job_id) == "failed", timeout=30)
    assert recorder.started == []  # not run a fourth time
    stored = failure(database, job_id)
    assert stored is not None and not stored.retried
    assert f"its worker died {jobs.MAX_LOST_ATTEMPTS} times" in stored.error
    assert f"retry it (POST /api/jobs/{job_id}/retry)" in stored.error


def test_a_job_under_the_limit_is_retried_and_says_why(engine: Engine, database: Database) -> None:
    recorder = Recorder()
    services = recorder.services()
    services.database = database
    jobs.install_services(services)
    job_id = engine.queue().enqueue_evaluation(evaluation(1, "head"))
    lost_its_worker(engine, job_id, attempts=jobs.MAX_LOST_ATTEMPTS - 1)
    with worker(engine):
        wait_until(lambda: engine.status(job_id) == "succeeded", timeout=30)
    assert recorder.started == ["head"]
    stored = failure(database, job_id)
    assert stored is not None and stored.retried
    assert "its worker died" in stored.error
