"""The job engine: Procrastinate on the store's PostgreSQL.

The only module that imports procrastinate. Tasks:

- ``process_delivery`` (queue ``events``): one stored webhook delivery, once.
- ``evaluate_pull_request`` (queue ``evaluations``, or ``gpu``): one
  evaluation; at most ``repo_concurrency`` per repository run at once
  (Procrastinate locks: the PR number modulo ``repo_concurrency`` picks one,
  so two PRs can share a lock and wait while another is free), and only
  one is queued per pull request (a queueing lock), so a new head replaces
  the old one.
- ``retrain`` (queue ``evaluations``, or ``gpu``): one retrain of a repository's
  branch; it shares the delivery jobs' lock of the repository, so a retrain
  waits while a delivery of the same repository runs (and the other way round),
  and one is queued per branch at a time.
- ``dispatch_retrains`` (periodic, every minute): queues the retrains whose
  schedule slot is due; each slot is claimed in the database, so it fires once
  however many workers run the dispatcher (``service.retrains.dispatch_due``).
- ``check_imports`` / ``dispatch_import_checks``: the new-data trigger of DVC
  imports (``service.imports``).
- ``check_drift`` (periodic, every minute): the champions' new windows of served
  traffic tested for drift, alerts and drift retrains (``service.monitoring``).
- ``retry_stalled`` (periodic, every 5 s): jobs whose worker stopped sending
  heartbeats (killed, machine lost) are put back in their queue, so a SIGKILL
  loses nothing; Procrastinate runs a periodic task once across all workers.

Heartbeat every 2 s, a worker is stalled after 6 s without one, stalled
jobs are looked for every 5 s and workers poll for retried jobs every 1 s: a
killed worker's job restarts about 10 s after the kill (measured by
tests/service/test_jobs.py and tests/service/test_server.py). A job cancelled while its
worker died ends aborted; one that lost its worker 3 times fails (it may be
what kills them), with that reason stored like any other failure's.

A failure that would only happen again (a malformed delivery, a bad
configuration, an argument that does not parse: ``PERMANENT_ERRORS``) fails
the job at once instead of retrying it; every failure's reason is stored
(``store.records.JobFailure``, and on the delivery for ``process_delivery``)
so the jobs API can show it. ``retry_stalled`` runs every 5 s: its jobs are
hidden from job lists unless asked for, and logged at debug level only.

Cancelling uses Procrastinate's abort flag, polled every 0.5 s by the task,
which then kills its sandbox. An evaluation running longer than
``job_timeout_s`` is stopped the same way, reported, and failed without a
retry (it would only time out again). A worker that is stopped (SIGTERM, a
restart) gives its running evaluations 1 s, then aborts them for the
shutdown, which puts them back in the queue at once instead of leaving them
to the stalled-job check.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import procrastinate
from procrastinate import JobContext, RetryStrategy
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.job_context import AbortReason
from procrastinate.jobs import Job, JobDeferrer, Status
from procrastinate.retry import RetryDecision

from modelci.errors import ConfigError, ModelCIError, RunFailed
from modelci.github import BadDelivery, RateLimitExceeded
from modelci.service.pullrequests import DeliveryJob, EvaluationJob, RetrainJob
from modelci.store import records as store
from modelci.store.db import Database

if TYPE_CHECKING:
    from modelci.service.imports import ImportCheckJob

__all__ = [
    "CANCEL_ABORTED",
    "CANCEL_SHUTDOWN",
    "CANCEL_TIMEOUT",
    "HOUSEKEEPING_TASKS",
    "JOB_STATUSES",
    "PERMANENT_ERRORS",
    "QUEUE_EVALUATIONS",
    "QUEUE_EVENTS",
    "QUEUE_GPU",
    "Cancellation",
    "JobConflict",
    "JobNotFound",
    "JobTimedOut",
    "ProcrastinateQueue",
    "Services",
    "apply_schema",
    "install_services",
    "make_job_app",
    "run_worker",
]

log = logging.getLogger(__name__)

QUEUE_EVENTS = "events"
QUEUE_EVALUATIONS = "evaluations"
QUEUE_GPU = "gpu"
HEARTBEAT_S = 2.0
STALLED_AFTER_S = 6.0
ABORT_POLL_S = 0.5
FETCH_POLL_S = 1.0
SHUTDOWN_GRACE_S = 1.0
MAX_LOST_ATTEMPTS = 3

TASK_DELIVERY = "modelci.process_delivery"
TASK_EVALUATE = "modelci.evaluate_pull_request"
TASK_RETRY_STALLED = "modelci.retry_stalled"
TASK_DELIVER = "modelci.deliver_commit"
TASK_RETRAIN = "modelci.retrain"
TASK_DISPATCH_RETRAINS = "modelci.dispatch_retrains"
TASK_CHECK_IMPORTS = "modelci.check_imports"
TASK_DISPATCH_IMPORT_CHECKS = "modelci.dispatch_import_checks"
TASK_CHECK_DRIFT = "modelci.check_drift"


CANCEL_ABORTED = "aborted"  # a newer head, an unlabel, the jobs API
CANCEL_SHUTDOWN = "shutdown"  # the worker is stopping: the job goes back to its queue
CANCEL_TIMEOUT = "timeout"


class Cancellation(threading.Event):
    """The event an evaluation watches; ``reason`` says why it was set."""

    reason: str | None = None
    job_id: int | None = None  # the job it belongs to, for what the job stores

    def cancel(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
        self.set()


class JobTimedOut(RunFailed):
    """An evaluation ran past ``MODELCI_JOB_TIMEOUT_S``."""


HOUSEKEEPING_TASKS = (
    TASK_RETRY_STALLED,
    TASK_DISPATCH_RETRAINS,
    TASK_DISPATCH_IMPORT_CHECKS,
    TASK_CHECK_DRIFT,
)
JOB_STATUSES = tuple(status.value for status in Status)
_PENDING = (Status.TODO.value, Status.DOING.value)
# Failures that a retry would only repeat: a delivery GitHub will never send
# differently, a configuration that must be fixed first, a timeout, arguments
# that do not parse (ValueError, TypeError, KeyError).
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    BadDelivery,
    ConfigError,
    JobTimedOut,
    ValueError,
    TypeError,
    LookupError,
)


class _Retry(RetryStrategy):
    """Procrastinate's strategy, except that a permanent error is never retried, and a
    rate-limited job runs again when GitHub said it may (``RateLimitExceeded.retry_at``):
    sooner it would only be refused again, and the wait is no fault of the job's, so it
    does not count against ``max_attempts``."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, PERMANENT_ERRORS):
            return None
        if isinstance(exception, RateLimitExceeded) and exception.retry_at is not None:
            return RetryDecision(retry_at=dt.datetime.fromtimestamp(exception.retry_at, dt.UTC))
        return super().get_retry_decision(exception=exception, job=job)


class JobNotFound(LookupError):
    """No job has that id."""


class JobConflict(Exception):
    """The job is not in a state that allows it (cancel an ended job, rerun a queued one)."""


@dataclass
class Services:
    """What the tasks need, installed once per worker process."""

    process_delivery: Callable[[str], None]
    evaluate: Callable[[EvaluationJob, threading.Event], None]
    job_timeout_s: float
    deliver: Callable[[DeliveryJob, threading.Event], None] | None = None
    retrain: Callable[[RetrainJob, threading.Event], None] | None = None
    # Queues the retrains whose schedule slot is due at the given time.
    dispatch_retrains: Callable[[dt.datetime], object] | None = None
    # The new-data trigger (service.imports): one repository's check, and the
    # dispatcher that queues the checks that are due at the given time.
    check_imports: Callable[[ImportCheckJob, threading.Event], None] | None = None
    dispatch_import_checks: Callable[[dt.datetime], object] | None = None
    # Monitoring (service.monitoring): tests the champions' new windows of traffic.
    check_drift: Callable[[], object] | None = None
    # Where failures' reasons are stored; None (tests of the engine alone) keeps none.
    database: Database | None = None


_services: Services | None = None


def install_services(services: Services) -> None:
    global _services
    _services = services


def _get_services() -> Services:
    if _services is None:
        raise RuntimeError("modelci's job services are not installed in this worker")
    return _services


def _run_cancellable(
    context: JobContext, what: str, run: Callable[[Cancellation], None], timeout_s: float
) -> None:
    """Run ``run`` with a cancel event that an abort request or the job timeout sets."""
    cancel = Cancellation()
    cancel.job_id = context.job.id
    finished = threading.Event()
    deadline = time.monotonic() + timeout_s

    def watch() -> None:
        # Abort requests (a newer push, an unlabel) and the job timeout both
        # end in the cancel event, which kills the running sandbox.
        while not finished.wait(ABORT_POLL_S):
            reason = context.abort_reason()
            if reason is not None:
                shutdown = reason == AbortReason.SHUTDOWN
                cancel.cancel(CANCEL_SHUTDOWN if shutdown else CANCEL_ABORTED)
                return
            if time.monotonic() >= deadline:
                cancel.cancel(CANCEL_TIMEOUT)
                return

    watcher = threading.Thread(target=watch, name="modelci-abort-watch", daemon=True)
    watcher.start()
    try:
        run(cancel)
    finally:
        finished.set()
        watcher.join()
    if cancel.reason == CANCEL_TIMEOUT:
        log.warning("%s timed out", what)
        raise JobTimedOut(
            f"{what} ran longer than {timeout_s:g} s and was stopped",
            hint="raise MODELCI_JOB_TIMEOUT_S, or make the training faster",
        )
    if cancel.reason is not None or context.should_abort():
        # Procrastinate retries a job aborted by a shutdown and ends one aborted
        # by a user.
        raise procrastinate.exceptions.JobAborted()


@contextlib.contextmanager
def _recording_failures(context: JobContext, retry: RetryStrategy) -> Iterator[None]:
    """Store why the attempt failed (and, for a delivery, on the delivery), then re-raise."""
    try:
        yield
    except procrastinate.exceptions.JobAborted:
        raise
    except Exception as exc:
        job = context.job
        services = _services
        if services is None or services.database is None or job.id is None:
            raise
        will_retry = retry.get_retry_decision(exception=exc, job=job) is not None
        reason = str(exc) or type(exc).__name__
        if not isinstance(exc, ModelCIError):
            reason = f"{type(exc).__name__}: {reason}"
        _store_failure(job, reason, retried=will_retry)
        log.log(
            logging.WARNING if will_retry else logging.ERROR,
            "job %s (%s) failed%s: %s",
            job.id,
            job.task_name,
            "; retrying it" if will_retry else " for good",
            reason,
        )
        raise


def _store_failure(job: Job, reason: str, *, retried: bool) -> None:
    """Keep why the job's attempt failed (and a delivery's final failure on the delivery)."""
    services = _services
    if services is None or services.database is None or job.id is None:
        return
    try:
        with services.database.session() as session:
            store.record_job_failure(
                session, job_id=job.id, task_name=job.task_name, error=reason, retried=retried
            )
            delivery_id = job.task_kwargs.get("delivery_id")
            if job.task_name == TASK_DELIVERY and not retried and delivery_id:
                store.mark_delivery_failed(session, delivery_id=str(delivery_id), detail=reason)
    except Exception:  # the job's own failure matters more than its record
        log.exception("could not store why job %s failed", job.id)


def _evaluate(context: JobContext, fields: dict[str, Any]) -> None:
    services = _get_services()
    job = EvaluationJob(**fields)
    _run_cancellable(
        context,
        f"the evaluation of {job.pr_key} at {job.head_sha[:7]}",
        lambda cancel: services.evaluate(job, cancel),
        services.job_timeout_s,
    )


def _deliver(context: JobContext, fields: dict[str, Any]) -> None:
    services = _get_services()
    job = DeliveryJob(**fields)
    run = _installed(services.deliver, "deliver models (no delivery service installed)")
    what = f"the delivery of {job.repo} at {job.sha[:7]}"
    _run_cancellable(context, what, lambda cancel: run(job, cancel), services.job_timeout_s)


def _retrain(context: JobContext, fields: dict[str, Any]) -> None:
    services = _get_services()
    job = RetrainJob(**fields)
    run = _installed(services.retrain, "retrain models (no retrain service installed)")
    what = f"the retrain of {job.repo} at {job.ref}"
    _run_cancellable(context, what, lambda cancel: run(job, cancel), services.job_timeout_s)


def _check_imports(context: JobContext, fields: dict[str, Any]) -> None:
    from modelci.service.imports import ImportCheckJob

    services = _get_services()
    job = ImportCheckJob(**fields)
    check = services.check_imports
    if check is None:
        raise RuntimeError("this worker cannot check imports (no import check installed)")
    what = f"the new-data check of {job.repo}"
    _run_cancellable(context, what, lambda cancel: check(job, cancel), services.job_timeout_s)


_Job = TypeVar("_Job")


def _installed(
    service: Callable[[_Job, threading.Event], None] | None, what: str
) -> Callable[[_Job, threading.Event], None]:
    if service is None:
        raise RuntimeError(f"this worker cannot {what}")
    return service


_DELIVERY_RETRY = _Retry(max_attempts=5, wait=2, exponential_wait=2)
_RUN_RETRY = _Retry(max_attempts=3, wait=5)


def _register_tasks(app: procrastinate.App) -> None:
    # Tasks are registered per App (the server has one for deferring and one
    # per worker loop), and always deferred by name.
    @app.task(name=TASK_DELIVERY, queue=QUEUE_EVENTS, pass_context=True, retry=_DELIVERY_RETRY)
    def process_delivery(context: JobContext, *, delivery_id: str) -> None:
        with _recording_failures(context, _DELIVERY_RETRY):
            _get_services().process_delivery(delivery_id)

    @app.task(name=TASK_EVALUATE, queue=QUEUE_EVALUATIONS, pass_context=True, retry=_RUN_RETRY)
    def evaluate_pull_request(context: JobContext, /, **fields: Any) -> None:
        with _recording_failures(context, _RUN_RETRY):
            _evaluate(context, fields)

    @app.task(name=TASK_DELIVER, queue=QUEUE_EVALUATIONS, pass_context=True, retry=_RUN_RETRY)
    def deliver_commit(context: JobContext, /, **fields: Any) -> None:
        with _recording_failures(context, _RUN_RETRY):
            _deliver(context, fields)

    @app.task(name=TASK_RETRAIN, queue=QUEUE_EVALUATIONS, pass_context=True, retry=_RUN_RETRY)
    def retrain(context: JobContext, /, **fields: Any) -> None:
        with _recording_failures(context, _RUN_RETRY):
            _retrain(context, fields)

    @app.periodic(cron="* * * * *")
    @app.task(name=TASK_DISPATCH_RETRAINS, queue=QUEUE_EVENTS, queueing_lock="dispatch_retrains")
    async def dispatch_retrains(timestamp: int) -> None:
        dispatch = _services.dispatch_retrains if _services is not None else None
        if dispatch is not None:
            now = dt.datetime.fromtimestamp(timestamp, dt.UTC)
            await asyncio.to_thread(dispatch, now)

    @app.task(name=TASK_CHECK_IMPORTS, queue=QUEUE_EVALUATIONS, pass_context=True, retry=_RUN_RETRY)
    def check_imports(context: JobContext, /, **fields: Any) -> None:
        with _recording_failures(context, _RUN_RETRY):
            _check_imports(context, fields)

    @app.periodic(cron="* * * * *")
    @app.task(
        name=TASK_DISPATCH_IMPORT_CHECKS,
        queue=QUEUE_EVENTS,
        queueing_lock="dispatch_import_checks",
    )
    async def dispatch_import_checks(timestamp: int) -> None:
        dispatch = _services.dispatch_import_checks if _services is not None else None
        if dispatch is not None:
            now = dt.datetime.fromtimestamp(timestamp, dt.UTC)
            await asyncio.to_thread(dispatch, now)

    # Each window is claimed and reported once (monitor.watch), so an overlap of two
    # checks (a slow one, and the next minute's) tests nothing twice.
    @app.periodic(cron="* * * * *")
    @app.task(name=TASK_CHECK_DRIFT, queue=QUEUE_EVENTS, queueing_lock="check_drift")
    async def check_drift(timestamp: int) -> None:
        check = _services.check_drift if _services is not None else None
        if check is not None:
            await asyncio.to_thread(check)

    # Six fields: croniter reads the last one as seconds ("*/5 * * * * *" would
    # mean every second of every fifth minute, leaving stalled jobs for minutes).
    @app.periodic(cron="* * * * * */5")
    @app.task(
        name=TASK_RETRY_STALLED,
        queue=QUEUE_EVENTS,
        queueing_lock="retry_stalled",
        pass_context=True,
    )
    async def retry_stalled(context: JobContext, timestamp: int) -> None:
        manager = context.app.job_manager
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER_S):
            current = list(await manager.list_jobs_async(id=job.id))
            if current and current[0].abort_requested:
                # Cancelled while its worker was dying: nothing left to stop.
                log.warning("job %s lost its worker after a cancel; aborted", job.id)
                await manager.finish_job(job, status=Status.ABORTED, delete_job=False)
            elif job.attempts >= MAX_LOST_ATTEMPTS:
                # A job that keeps killing its worker (e.g. the machine runs out of
                # memory) must not take every worker down in turn.
                log.error("job %s lost its worker %d times; failing it", job.id, job.attempts)
                reason = (
                    f"its worker died {job.attempts} times while running it (killed, or out of "
                    "memory: a training that needs more than the machine has can take its "
                    "worker down), so it is not retried again; check the workers' logs and "
                    f"memory, then retry it (POST /api/jobs/{job.id}/retry)"
                )
                await asyncio.to_thread(_store_failure, job, reason, retried=False)
                await manager.finish_job(job, status=Status.FAILED, delete_job=False)
            else:
                log.warning("job %s (%s) lost its worker; retrying it", job.id, job.task_name)
                reason = "its worker died (killed or out of memory) while running it; retried"
                await asyncio.to_thread(_store_failure, job, reason, retried=True)
                await manager.retry_job(job)


class _HousekeepingToDebug(logging.Filter):
    """Procrastinate's lines about housekeeping jobs, at debug level.

    ``retry_stalled`` runs every 5 s: at info level an idle server would log
    three lines per run (36 a minute) and nothing else.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        about = [getattr(record, "job", None), *(getattr(record, "jobs", None) or [])]
        tasks = {job.get("task_name") for job in about if isinstance(job, dict)}
        if tasks and tasks <= set(HOUSEKEEPING_TASKS) and record.levelno <= logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_housekeeping_filter = _HousekeepingToDebug()
# A logger's filters do not see its children's records: the worker logs on a
# child named after it ("worker" unless run_worker_async gets a name).
for _name in (
    "procrastinate.worker",
    "procrastinate.worker.worker",
    "procrastinate.periodic",
    "procrastinate.jobs",
):
    logging.getLogger(_name).addFilter(_housekeeping_filter)


def _conninfo(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_job_app(database_url: str) -> procrastinate.App:
    """The Procrastinate app on the store's database (a PostgreSQL URL)."""
    if not database_url.startswith(("postgresql://", "postgresql+psycopg://")):
        from modelci.errors import ConfigError

        raise ConfigError(
            "the job engine needs PostgreSQL, and MODELCI_DATABASE_URL is not a PostgreSQL URL",
            hint="unset MODELCI_DATABASE_URL to use the embedded PostgreSQL, or point it at one",
        )
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=_conninfo(database_url)),
        worker_defaults={
            "update_heartbeat_interval": HEARTBEAT_S,
            "stalled_worker_timeout": STALLED_AFTER_S,
            "abort_job_polling_interval": ABORT_POLL_S,
            # New jobs arrive by NOTIFY, but retried jobs and jobs whose lock was
            # freed by another worker are only found by polling.
            "fetch_job_polling_interval": FETCH_POLL_S,
            "install_signal_handlers": False,
            # A stopping worker stops sending heartbeats: its jobs must be back
            # in the queue before STALLED_AFTER_S, or another worker would run
            # them a second time while they still run here.
            "shutdown_graceful_timeout": SHUTDOWN_GRACE_S,
        },
    )
    _register_tasks(app)
    return app


def apply_schema(app: procrastinate.App) -> None:
    """Create Procrastinate's tables once (idempotent, safe across processes)."""
    with app.open():
        connector = app.connector.get_sync_connector()
        exists = connector.execute_query_one(
            "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present"
        )
        indexed = connector.execute_query_one(
            "SELECT to_regclass(%(last)s) IS NOT NULL AS present", last=_LAST_JOB_INDEX
        )
        if not exists["present"] or not indexed["present"]:
            # Two processes creating the same index at once: one fails. So, under a lock.
            connector.execute_query("SELECT pg_advisory_lock(774411)")
            try:
                again = connector.execute_query_one(
                    "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS present"
                )
                if not again["present"]:
                    app.schema_manager.apply_schema()
                for statement in _JOB_INDEXES:
                    connector.execute_query(statement)
            finally:
                connector.execute_query("SELECT pg_advisory_unlock(774411)")


# modelci's own indexes on Procrastinate's table, for the dashboard's job lists
# (store.dashboard.list_jobs): a repository's jobs and the failed ones, newest first,
# among the 17,280 housekeeping jobs a day. Here, not in a migration: the table is
# created by Procrastinate after the migrations ran. IF NOT EXISTS: a no-op once made.
_JOB_INDEXES = (
    "CREATE INDEX IF NOT EXISTS modelci_jobs_repo_id ON procrastinate_jobs ((args->>'repo'), id)",
    "CREATE INDEX IF NOT EXISTS modelci_jobs_status_id ON procrastinate_jobs (status, id)",
    "CREATE INDEX IF NOT EXISTS modelci_jobs_task_id ON procrastinate_jobs (task_name, id)",
)
_LAST_JOB_INDEX = "modelci_jobs_task_id"  # made last: present means all are


def run_worker(
    app: procrastinate.App, *, queues: list[str], concurrency: int, stop: threading.Event
) -> None:
    """Run a worker until ``stop`` is set (blocks; call from a thread or main)."""

    async def main() -> None:
        async with app.open_async():
            task = asyncio.create_task(
                app.run_worker_async(queues=queues, concurrency=concurrency, wait=True)
            )
            while not stop.is_set() and not task.done():
                await asyncio.sleep(0.2)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


class ProcrastinateQueue:
    """The workflow's job queue on Procrastinate."""

    def __init__(self, app: procrastinate.App, *, repo_concurrency: int = 1) -> None:
        self.app = app
        self.repo_concurrency = max(1, repo_concurrency)

    def list_jobs(
        self, *, status: str | None = None, housekeeping: bool = False, limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first; housekeeping jobs (``retry_stalled``) only when asked for.

        One query with the filter and limit in SQL: Procrastinate's own listing
        returns every job, and a server keeps 17,280 housekeeping jobs a day.
        """
        if status is not None and status not in JOB_STATUSES:
            raise ValueError(f"unknown job status {status!r}")
        rows = self.app.connector.get_sync_connector().execute_query_all(
            """
            SELECT id, queue_name, task_name, priority, lock, queueing_lock, args, status,
                   scheduled_at, attempts, abort_requested, worker_id
              FROM procrastinate_jobs
             WHERE (%(status)s::procrastinate_job_status IS NULL OR status = %(status)s)
               AND (%(housekeeping)s OR NOT task_name = ANY(%(hidden)s))
             ORDER BY id DESC
             LIMIT %(limit)s
            """,
            status=status,
            housekeeping=housekeeping,
            hidden=list(HOUSEKEEPING_TASKS),
            limit=limit,
        )
        return [Job.from_row(row) for row in rows]

    def get_job(self, job_id: int) -> Job:
        found = self.app.job_manager.list_jobs(id=job_id)
        if not found:
            raise JobNotFound(f"no job {job_id}")
        return found[0]

    def cancel_job(self, job_id: int) -> Job:
        """Cancel a queued job, or ask a running one to abort (its sandbox is killed)."""
        job = self.get_job(job_id)
        if job.status not in _PENDING:
            raise JobConflict(f"job {job_id} is {job.status}: nothing to cancel")
        self.app.job_manager.cancel_job_by_id(job_id, abort=job.status == Status.DOING.value)
        return self.get_job(job_id)

    def rerun_job(self, job_id: int) -> Job:
        """Queue an ended job again, as a new job with the same task, arguments and locks.

        Procrastinate can only retry a job that is running; an ended one is
        deferred afresh (its queueing lock still keeps one queued per pull request).
        """
        job = self.get_job(job_id)
        if job.status in _PENDING:
            raise JobConflict(f"job {job_id} is {job.status}: it will run anyway")
        deferrer = self.app.configure_task(
            job.task_name,
            queue=job.queue,
            lock=job.lock,
            queueing_lock=job.queueing_lock,
            priority=job.priority,
        )
        try:
            new_id = deferrer.defer(**job.task_kwargs)
        except AlreadyEnqueued:
            raise JobConflict(
                f"another job with queueing lock {job.queueing_lock!r} is queued already"
            ) from None
        return self.get_job(new_id)

    def defer_delivery(self, delivery_id: str) -> int | None:
        try:
            return self.app.configure_task(
                TASK_DELIVERY, queueing_lock=f"delivery:{delivery_id}"
            ).defer(delivery_id=delivery_id)
        except AlreadyEnqueued:
            return None

    def _evaluation_task(self, job: EvaluationJob) -> JobDeferrer:
        slot = job.number % self.repo_concurrency
        return self.app.configure_task(
            TASK_EVALUATE,
            queue=QUEUE_GPU if job.gpu else QUEUE_EVALUATIONS,
            lock=f"repo:{job.repo}:{slot}",
            queueing_lock=f"pr:{job.pr_key}",
        )

    def enqueue_evaluation(self, job: EvaluationJob) -> int:
        """Queue ``job``, replacing an evaluation of the same pull request still queued."""
        task = self._evaluation_task(job)
        for _ in range(5):
            try:
                return task.defer(**job.to_json())
            except AlreadyEnqueued:
                # Another delivery for this pull request queued one between our
                # caller's cancel and now: the newest head wins.
                self._cancel_queued(job.repo, job.number)
        raise RunFailed(
            f"could not queue the evaluation of {job.pr_key}: other deliveries kept queueing one",
            hint="redeliver the webhook from the App's settings",
        )

    def enqueue_delivery(self, job: DeliveryJob) -> int | None:
        """Queue the delivery of a commit once (a merge sends both ``closed`` and ``push``).

        Deliveries of one repository run one at a time, so each is judged
        against the champion the previous one left.
        """
        try:
            return self.app.configure_task(
                TASK_DELIVER,
                queue=QUEUE_GPU if job.gpu else QUEUE_EVALUATIONS,
                lock=f"deliver:{job.repo}",
                queueing_lock=f"deliver:{job.repo}@{job.sha}",
            ).defer(**job.to_json())
        except AlreadyEnqueued:
            return None

    def enqueue_retrain(self, job: RetrainJob) -> int | None:
        """Queue a retrain; None when one of the same branch is queued already.

        It takes the lock of the repository's deliveries: a retrain queued while a
        delivery runs waits for it, so each is judged against the champion the
        other left (Procrastinate runs jobs sharing a lock one at a time, in order).
        """
        try:
            return self.app.configure_task(
                TASK_RETRAIN,
                queue=QUEUE_GPU if job.gpu else QUEUE_EVALUATIONS,
                lock=f"deliver:{job.repo}",
                queueing_lock=f"retrain:{job.repo}@{job.ref}",
            ).defer(**job.to_json())
        except AlreadyEnqueued:
            return None

    def enqueue_import_check(self, job: ImportCheckJob) -> int | None:
        """Queue a repository's new-data check; None when one is queued already."""
        try:
            return self.app.configure_task(
                TASK_CHECK_IMPORTS,
                queue=QUEUE_EVALUATIONS,
                queueing_lock=f"imports:{job.repo}",
            ).defer(**job.to_json())
        except AlreadyEnqueued:
            return None

    def move_to_gpu(self, job: EvaluationJob | DeliveryJob) -> int | None:
        """Queue ``job`` again on the gpu queue, from the job that found its commit
        asks for a GPU (that job, still running, holds no queueing lock).

        None when the move is moot: a newer evaluation of the pull request is
        already queued (it wins), or this delivery is queued already.
        """
        moved = replace(job, gpu=True)
        if isinstance(moved, DeliveryJob):
            return self.enqueue_delivery(moved)
        try:
            return self._evaluation_task(moved).defer(**moved.to_json())
        except AlreadyEnqueued:
            return None

    def _cancel_queued(self, repo: str, number: int) -> int:
        manager = self.app.job_manager
        cancelled = 0
        for found in manager.list_jobs(queueing_lock=f"pr:{repo}#{number}", status="todo"):
            if found.id is not None and manager.cancel_job_by_id(found.id):
                cancelled += 1
        return cancelled

    def cancel_evaluations(self, *, repo: str, number: int) -> int:
        """Cancel the pull request's queued evaluation and abort its running one."""
        manager = self.app.job_manager
        cancelled = self._cancel_queued(repo, number)
        for found in manager.list_jobs(queueing_lock=f"pr:{repo}#{number}", status="doing"):
            if found.id is not None and manager.cancel_job_by_id(found.id, abort=True):
                cancelled += 1
        return cancelled
