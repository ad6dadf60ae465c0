"""Rate limits reschedule work for when GitHub allows it: jobs (through Procrastinate's
retry time) and polling (its pause), instead of failing or retrying at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from procrastinate.jobs import Job
from sqlalchemy.engine import make_url

from modelci.github import AppAuth, GitHubClient, RateLimitExceeded
from modelci.service import jobs
from modelci.service.polling import STATE_FILE, Poller
from modelci.service.pullrequests import EvaluationJob
from modelci.store.db import Database
from tests.github import conftest as github_fixtures
from tests.github.conftest import APP_ID, REPO, GitHub
from tests.service.test_jobs import Engine, evaluation, wait_until, worker

app_key = github_fixtures.app_key
standin_server = github_fixtures.standin_server
github = github_fixtures.github
__all__ = ["app_key", "github", "standin_server"]  # fixtures used here


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    """A fresh database on the test server, with Procrastinate's schema."""
    name = f"modelci_rl_{uuid.uuid4().hex[:8]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    app = jobs.make_job_app(url)
    jobs.apply_schema(app)
    with app.open():
        yield Engine(url, app)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


JOB = Job(id=1, queue=jobs.QUEUE_EVALUATIONS, lock=None, queueing_lock=None, task_name="t")


def test_a_rate_limited_job_is_retried_when_github_allows_not_sooner() -> None:
    retry_at = time.time() + 3600
    limited = RateLimitExceeded("GitHub asks for a 3600 s wait", retry_at=retry_at)
    for strategy in (jobs._RUN_RETRY, jobs._DELIVERY_RETRY):
        decision = strategy.get_retry_decision(exception=limited, job=JOB)
        assert decision is not None and decision.retry_at is not None
        assert decision.retry_at.timestamp() == pytest.approx(retry_at)
        # Waiting out GitHub's limit is no fault of the job's: past max_attempts, still retried.
        late = Job(**{**JOB.__dict__, "attempts": 10})
        assert strategy.get_retry_decision(exception=limited, job=late) is not None


def test_a_rate_limited_evaluation_is_rescheduled_for_githubs_retry_time(engine: Engine) -> None:
    retry_at = time.time() + 3600
    calls: list[str] = []

    def limited(job: EvaluationJob, cancel: threading.Event) -> None:
        calls.append(job.head_sha)
        raise RateLimitExceeded(
            "GitHub asks for a 3600 s wait, over the 900 s allowed", retry_at=retry_at
        )

    jobs.install_services(
        jobs.Services(process_delivery=lambda _: None, evaluate=limited, job_timeout_s=60)
    )
    job_id = engine.queue().enqueue_evaluation(evaluation(1, "head"))
    with worker(engine):
        wait_until(lambda: calls == ["head"] and engine.status(job_id) == "todo")
    job = engine.job(job_id)
    assert job.attempts == 1
    assert job.scheduled_at.timestamp() == pytest.approx(retry_at, abs=1)


class _RecordingStop(threading.Event):
    """The poller's stop event: records the pause it was asked to wait, then stops it."""

    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.pauses.append(timeout or 0.0)
        self.set()
        return True


def test_polling_pauses_until_githubs_reset_after_a_rate_limit(
    github: GitHub, tmp_path: Path
) -> None:
    github.state.add_pull(REPO, 5, head_sha="c" * 40)
    github.state.fail_next(403, reset_in=1800, times=10)  # the hourly quota is spent
    now = time.time()
    with GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem), max_wait_s=5) as client:
        poller = Poller(
            github=client,
            database=_unused_database(),
            queue=_NoQueue(),
            repositories=[REPO],
            label="evaluate",
            state_path=tmp_path / STATE_FILE,
            interval_s=60,
        )
        stop = _RecordingStop()
        poller.run(stop)
    assert len(stop.pauses) == 1
    # Until GitHub's reset (half an hour), not the 60 s interval.
    assert stop.pauses[0] == pytest.approx(now + 1800 - time.time(), abs=5)


class _NoQueue:
    def defer_delivery(self, delivery_id: str) -> int | None:
        raise AssertionError("nothing is stored while rate limited")


def _unused_database() -> Database:
    return None  # type: ignore[return-value]  # a rate-limited round reaches no store
