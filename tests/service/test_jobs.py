"""The job engine on real PostgreSQL (the embedded server and the one scripts/test starts).

Real Procrastinate workers (threads here, or a subprocess that is SIGKILLed)
run the tasks; only our own callables (``jobs.Services``) are small recorders.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procrastinate
import psycopg
import pytest
from procrastinate.jobs import Job
from sqlalchemy.engine import make_url

from modelci.errors import ConfigError, RunFailed
from modelci.github import BadDelivery
from modelci.service import jobs
from modelci.service.pullrequests import EvaluationJob
from modelci.store.pgembed import EmbeddedPostgres

ALL_QUEUES = [jobs.QUEUE_EVENTS, jobs.QUEUE_EVALUATIONS]


@pytest.fixture(scope="module")
def embedded_server() -> Iterator[str]:
    """The embedded PostgreSQL `modelci serve` uses by default, started for this module."""
    directory = Path(tempfile.mkdtemp(prefix="modelci-jobs-pg-", dir="/var/tmp"))
    server = EmbeddedPostgres(directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["embedded", "server"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the embedded server, or on the external one (postgres_url)."""
    fixture = "embedded_server" if request.param == "embedded" else "postgres_url"
    base: str = request.getfixturevalue(fixture)
    name = f"modelci_jobs_{uuid.uuid4().hex[:8]}"
    admin = base.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Recorder:
    """Our side of the tasks: records calls; evaluations wait until released or cancelled."""

    deliveries: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # head shas, in start order
    ended: dict[str, str | None] = field(default_factory=dict)  # head sha -> cancel reason
    release: dict[str, threading.Event] = field(default_factory=dict)
    hold: bool = False  # evaluations block until released (or cancelled)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Heads whose commit "sets limits.gpu": off the gpu queue, they are moved
    # there, as PullRequestService does.
    gpu_heads: set[str] = field(default_factory=set)
    queue: jobs.ProcrastinateQueue | None = None
    on_gpu: list[bool] = field(default_factory=list)  # job.gpu of each evaluation

    def process_delivery(self, delivery_id: str) -> None:
        with self.lock:
            self.deliveries.append(delivery_id)

    def evaluate(self, job: EvaluationJob, cancel: threading.Event) -> None:
        with self.lock:
            self.started.append(job.head_sha)
            self.on_gpu.append(job.gpu)
            gate = self.release.setdefault(job.head_sha, threading.Event())
        if job.head_sha in self.gpu_heads and not job.gpu:
            assert self.queue is not None
            self.queue.move_to_gpu(job)
            return
        if self.hold:
            while not gate.is_set() and not cancel.wait(0.05):
                pass
        with self.lock:
            self.ended[job.head_sha] = getattr(cancel, "reason", None)

    def services(self, *, timeout_s: float = 3600) -> jobs.Services:
        return jobs.Services(
            process_delivery=self.process_delivery, evaluate=self.evaluate, job_timeout_s=timeout_s
        )


@dataclass
class Engine:
    url: str
    app: procrastinate.App  # open, for deferring and inspecting

    def queue(self, repo_concurrency: int = 1) -> jobs.ProcrastinateQueue:
        return jobs.ProcrastinateQueue(self.app, repo_concurrency=repo_concurrency)

    def status(self, job_id: int) -> str:
        (found,) = self.app.job_manager.list_jobs(id=job_id)
        return str(found.status)

    def job(self, job_id: int) -> Any:
        (found,) = self.app.job_manager.list_jobs(id=job_id)
        return found


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    app = jobs.make_job_app(database_url)
    jobs.apply_schema(app)
    with app.open():
        yield Engine(database_url, app)


@contextmanager
def worker(
    engine: Engine, *, queues: list[str] | None = None, concurrency: int = 2
) -> Iterator[None]:
    """A real Procrastinate worker in a thread, as `modelci serve` runs them."""
    stop = threading.Event()
    thread = threading.Thread(
        target=jobs.run_worker,
        kwargs={
            "app": jobs.make_job_app(engine.url),
            "queues": queues or ALL_QUEUES,
            "concurrency": concurrency,
            "stop": stop,
        },
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


def wait_until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def evaluation(number: int, head: str, repo: str = "octo/model") -> EvaluationJob:
    return EvaluationJob(
        repo=repo,
        number=number,
        head_sha=head,
        base_ref="main",
        clone_url=f"https://example.invalid/{repo}.git",
        installation_id=7,
        delivery_id=str(uuid.uuid4()),
    )


def test_a_delivery_deferred_twice_runs_once(engine: Engine) -> None:
    recorder = Recorder()
    jobs.install_services(recorder.services())
    queue = engine.queue()
    job_id = queue.defer_delivery("d-1")
    assert job_id is not None
    assert queue.defer_delivery("d-1") is None  # still queued: the queueing lock holds
    with worker(engine):
        wait_until(lambda: engine.status(job_id) == "succeeded")
    assert recorder.deliveries == ["d-1"]


def test_a_new_head_replaces_the_queued_evaluation_of_its_pull_request(engine: Engine) -> None:
    recorder = Recorder()
    jobs.install_services(recorder.services())
    queue = engine.queue(repo_concurrency=2)
    old = queue.enqueue_evaluation(evaluation(1, "old"))
    other = queue.enqueue_evaluation(evaluation(2, "other"))
    new = queue.enqueue_evaluation(evaluation(1, "new"))  # no cancel first: still one queued
    assert engine.status(old) == "cancelled"
    assert engine.status(new) == engine.status(other) == "todo"
    with worker(engine):
        wait_until(lambda: engine.status(new) == engine.status(other) == "succeeded")
    assert sorted(recorder.started) == ["new", "other"]


def test_cancel_aborts_the_running_evaluation_and_cancels_the_queued_one(engine: Engine) -> None:
    recorder = Recorder(hold=True)
    jobs.install_services(recorder.services())
    queue = engine.queue()
    running = queue.enqueue_evaluation(evaluation(1, "first"))
    with worker(engine):
        wait_until(lambda: recorder.started == ["first"])
        # A newer head queues behind the running one (same pull request, same lock).
        queued = queue.enqueue_evaluation(evaluation(1, "second"))
        assert engine.status(queued) == "todo"
        assert queue.cancel_evaluations(repo="octo/model", number=1) == 2
        assert engine.status(queued) == "cancelled"
        wait_until(lambda: engine.status(running) == "aborted")
        # A later job, fetched after the cancelled one would have been (jobs are
        # fetched in id order): once it runs, the cancelled one was passed over.
        queue.enqueue_evaluation(evaluation(2, "sentinel"))
        wait_until(lambda: "sentinel" in recorder.started)
        recorder.release["sentinel"].set()
    assert recorder.ended["first"] == jobs.CANCEL_ABORTED
    assert recorder.started == ["first", "sentinel"]
    assert queue.cancel_evaluations(repo="octo/model", number=1) == 0


def test_an_evaluation_past_the_job_timeout_is_stopped_and_not_retried(engine: Engine) -> None:
    recorder = Recorder(hold=True)
    jobs.install_services(recorder.services(timeout_s=1))
    job_id = engine.queue().enqueue_evaluation(evaluation(1, "slow"))
    with worker(engine):
        wait_until(lambda: engine.status(job_id) == "failed")
    assert recorder.ended == {"slow": jobs.CANCEL_TIMEOUT}
    assert engine.job(job_id).attempts == 1  # a timeout is final: no retry


def test_a_job_whose_commit_asks_for_a_gpu_moves_to_the_gpu_queue(engine: Engine) -> None:
    queue = engine.queue()
    recorder = Recorder(gpu_heads={"needs-gpu"}, queue=queue)
    jobs.install_services(recorder.services())
    first = queue.enqueue_evaluation(evaluation(1, "needs-gpu"))
    cpu = queue.enqueue_evaluation(evaluation(2, "cpu"))
    with worker(engine):  # `modelci serve`'s queues: events and evaluations
        wait_until(lambda: engine.status(first) == engine.status(cpu) == "succeeded")
        (moved,) = engine.app.job_manager.list_jobs(queue=jobs.QUEUE_GPU)
        assert moved.task_kwargs["gpu"] is True
        # A later cpu job: a worker that wrongly read the gpu queue would have
        # fetched the (older) moved job first (another repository: no shared lock).
        sentinel = queue.enqueue_evaluation(evaluation(3, "sentinel", repo="octo/other"))
        wait_until(lambda: engine.status(sentinel) == "succeeded")
        assert engine.status(moved.id) == "todo"
    with worker(engine, queues=[jobs.QUEUE_GPU]):
        wait_until(lambda: engine.status(moved.id) == "succeeded")
    assert sorted(zip(recorder.started, recorder.on_gpu, strict=True)) == [
        ("cpu", False),
        ("needs-gpu", False),
        ("needs-gpu", True),
        ("sentinel", False),
    ]


def test_moving_to_the_gpu_queue_never_replaces_a_newer_head(engine: Engine) -> None:
    queue = engine.queue()
    newer = queue.enqueue_evaluation(evaluation(1, "newer"))
    assert queue.move_to_gpu(evaluation(1, "older")) is None
    assert engine.status(newer) == "todo"
    moved = queue.move_to_gpu(evaluation(2, "alone"))
    assert moved is not None
    assert engine.job(moved).queue == jobs.QUEUE_GPU


@pytest.mark.parametrize("limit", [1, 2])
def test_evaluations_of_one_repository_run_at_most_repo_concurrency_at_once(
    engine: Engine, limit: int
) -> None:
    recorder = Recorder(hold=True)
    jobs.install_services(recorder.services())
    queue = engine.queue(repo_concurrency=limit)
    ids = [queue.enqueue_evaluation(evaluation(n, f"pr{n}")) for n in (1, 2)]
    elsewhere = queue.enqueue_evaluation(evaluation(1, "elsewhere", repo="octo/other"))
    with worker(engine, concurrency=3):
        if limit == 1:
            wait_until(lambda: sorted(recorder.started) == ["elsewhere", "pr1"])
            # The third slot takes a later job of another repository: pr2, older,
            # would have been fetched first had the repository's lock let it.
            queue.enqueue_evaluation(evaluation(2, "later", repo="octo/third"))
            wait_until(lambda: "later" in recorder.started)
            assert "pr2" not in recorder.started
            recorder.release["pr1"].set()
            wait_until(lambda: "pr2" in recorder.started)
        else:
            # Both are running at once, each still held.
            wait_until(lambda: sorted(recorder.started) == ["elsewhere", "pr1", "pr2"])
        for gate in list(recorder.release.values()):
            gate.set()
        wait_until(lambda: all(engine.status(i) == "succeeded" for i in [*ids, elsewhere]))


def test_a_stopping_worker_puts_its_running_evaluation_back_in_the_queue(engine: Engine) -> None:
    recorder = Recorder(hold=True)
    jobs.install_services(recorder.services())
    job_id = engine.queue().enqueue_evaluation(evaluation(1, "head"))
    with worker(engine):
        wait_until(lambda: recorder.started == ["head"])
    # The worker stopped (SIGTERM, a restart): the job was aborted for the
    # shutdown, which Procrastinate retries, not left running or lost.
    assert recorder.ended == {"head": jobs.CANCEL_SHUTDOWN}
    assert engine.status(job_id) == "todo"
    recorder.hold = False
    with worker(engine):
        wait_until(lambda: engine.status(job_id) == "succeeded", timeout=30)
    assert recorder.started == ["head", "head"]


KILLED_WORKER = textwrap.dedent(
    """\
    import sys, threading, time
    from modelci.service import jobs

    def evaluate(job, cancel):
        print("started", flush=True)
        time.sleep(600)

    jobs.install_services(
        jobs.Services(process_delivery=print, evaluate=evaluate, job_timeout_s=3600)
    )
    jobs.run_worker(
        jobs.make_job_app(sys.argv[1]),
        queues=["evaluations"],
        concurrency=1,
        stop=threading.Event(),
    )
    """
)


def start_and_kill_a_worker(engine: Engine, job_id: int) -> float:
    """Run ``job_id`` in a worker process, SIGKILL it mid-job; return when (monotonic)."""
    doomed = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, engine.url],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert doomed.stdout is not None
        assert doomed.stdout.readline() == b"started\n"
        assert engine.status(job_id) == "doing"
    finally:
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    return time.monotonic()


def test_a_job_whose_worker_was_killed_is_retried(engine: Engine) -> None:
    recorder = Recorder()
    jobs.install_services(recorder.services())
    job_id = engine.queue().enqueue_evaluation(evaluation(1, "head"))
    killed = start_and_kill_a_worker(engine, job_id)
    with worker(engine):
        wait_until(lambda: recorder.started == ["head"])
        print(f"SIGKILL to the retried job starting: {time.monotonic() - killed:.1f} s")
        wait_until(lambda: engine.status(job_id) == "succeeded")
    assert engine.job(job_id).attempts == 2  # the lost attempt and the retry


def test_a_job_cancelled_while_its_worker_died_is_not_retried(engine: Engine) -> None:
    recorder = Recorder()
    jobs.install_services(recorder.services())
    queue = engine.queue()
    job_id = queue.enqueue_evaluation(evaluation(1, "head"))
    start_and_kill_a_worker(engine, job_id)
    assert queue.cancel_evaluations(repo="octo/model", number=1) == 1
    with worker(engine):
        wait_until(lambda: engine.status(job_id) == "aborted")
    assert recorder.started == []


def test_the_periodic_task_runs_once_per_tick_across_two_workers(engine: Engine) -> None:
    jobs.install_services(Recorder().services())
    manager = engine.app.job_manager

    def ticks() -> list[Any]:
        return list(manager.list_jobs(task=jobs.TASK_RETRY_STALLED))

    with worker(engine), worker(engine):
        wait_until(lambda: len({j.task_kwargs["timestamp"] for j in ticks()}) >= 2, timeout=30)
    stamps = [j.task_kwargs["timestamp"] for j in ticks()]
    assert len(stamps) == len(set(stamps)), stamps


def test_a_failure_that_cannot_succeed_on_retry_fails_at_once(engine: Engine) -> None:
    def malformed(delivery_id: str) -> None:
        raise BadDelivery(f"the payload of {delivery_id} has no 'repository' object")

    services = Recorder().services()
    services.process_delivery = malformed
    jobs.install_services(services)
    job_id = engine.queue().defer_delivery("malformed")
    assert job_id is not None
    with worker(engine):
        wait_until(lambda: engine.status(job_id) == "failed")
    assert engine.job(job_id).attempts == 1


def test_only_transient_failures_are_retried() -> None:
    job = Job(id=1, queue=jobs.QUEUE_EVENTS, lock=None, queueing_lock=None, task_name="t")
    for permanent in (BadDelivery("bad"), ConfigError("bad"), ValueError("bad"), KeyError("k")):
        assert jobs._DELIVERY_RETRY.get_retry_decision(exception=permanent, job=job) is None
    for transient in (RunFailed("crashed"), OSError("disk"), RuntimeError("?")):
        assert jobs._DELIVERY_RETRY.get_retry_decision(exception=transient, job=job) is not None


def test_housekeeping_jobs_are_logged_at_debug_only(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    jobs.install_services(Recorder().services())
    caplog.set_level(logging.INFO)
    manager = engine.app.job_manager

    def ticks() -> list[Any]:
        return list(manager.list_jobs(task=jobs.TASK_RETRY_STALLED))

    with worker(engine):
        # Two ticks done: the first one's lines (deferred, started, succeeded) are logged.
        wait_until(lambda: sum(t.status == "succeeded" for t in ticks()) >= 2, timeout=30)
        jobs_logged = [r for r in caplog.records if r.name.startswith("procrastinate")]
        assert any("Starting worker" in r.getMessage() for r in jobs_logged)  # info still shows
        about_ticks = [  # per job: deferred, started, ended (not the start-up registration)
            r
            for r in jobs_logged
            if jobs.TASK_RETRY_STALLED in r.getMessage() and hasattr(r, "job")
        ]
        assert about_ticks == [], [r.getMessage() for r in about_ticks]
