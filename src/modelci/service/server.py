"""``modelci serve`` and ``modelci worker``: the long-running processes.

``serve`` starts, in one process: the database (embedded PostgreSQL unless
``MODELCI_DATABASE_URL`` is set), the webhook receiver and API (uvicorn),
worker threads, and the prediction API of every registered model's champion.
``worker`` runs only workers, on any machine pointed at the
same PostgreSQL. Deliveries that were stored but not queued (a crash between
the two) are queued again at start.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import uv

from modelci.errors import ConfigError
from modelci.evaluate.evaluation import Evaluator
from modelci.github import GitHubClient, make_auth
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import make_sandbox
from modelci.service import jobs
from modelci.service.deliveries import DeliveryService
from modelci.service.evaluations import PullRequestService
from modelci.service.intake import dispatch_delivery
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import Database, open_database

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modelci.serving.manager import ServingManager

__all__ = ["Runtime", "run_server", "run_workers", "server_runtime"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    database: Database
    job_app: object
    queue: jobs.ProcrastinateQueue
    service: PullRequestService
    delivery: DeliveryService


def configure_logging() -> None:
    """INFO to stderr for the long-running processes, so operators see jobs come and go.

    Without this only warnings reach stderr (Python's last-resort handler), and
    a ``modelci worker`` that picks up, retries or finishes jobs says nothing.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    # One line per GitHub request drowns out the jobs; failures still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root.setLevel(logging.INFO)


def github_client(settings: Settings) -> GitHubClient:
    token = settings.github_token.get_secret_value() if settings.github_token else None
    auth = make_auth(
        app_id=settings.github_app_id, private_key_pem=settings.read_private_key(), token=token
    )
    return GitHubClient(
        settings.github_api_url,
        auth,
        max_concurrency=settings.github_max_concurrency,
        max_wait_s=settings.github_max_rate_limit_wait_s,
    )


@contextmanager
def server_runtime(settings: Settings, *, unsafe: bool = False) -> Iterator[Runtime]:
    """Open the database and job engine and build the services a worker needs."""
    sandbox = make_sandbox(unsafe=unsafe, uid_base=settings.sandbox_uid_base)
    github = github_client(settings)
    database = open_database(settings)
    try:
        job_app = jobs.make_job_app(database.url)
        jobs.apply_schema(job_app)
        with job_app.open():
            queue = jobs.ProcrastinateQueue(job_app, repo_concurrency=settings.repo_concurrency)
            environments = EnvironmentManager(
                envs_dir=settings.envs_dir,
                python=settings.python,
                uv_bin=uv.find_uv_bin(),
                resolution_ttl_s=settings.env_resolution_ttl_s,
            )
            evaluator = Evaluator(
                settings=settings,
                database=lambda: database,
                sandbox=sandbox,
                environments=environments,
            )
            service = PullRequestService(
                database=database,
                github=github,
                evaluator=evaluator,
                queue=queue,
                label=settings.github_trigger_label,
                check_name=settings.github_check_name,
                public_url=settings.public_url,
            )
            delivery = DeliveryService(
                database=database,
                github=github,
                evaluator=evaluator,
                check_name=settings.github_check_name,
                queue=queue,
            )
            jobs.install_services(
                jobs.Services(
                    process_delivery=service.process_delivery,
                    evaluate=service.evaluate,
                    job_timeout_s=settings.job_timeout_s,
                    deliver=delivery.deliver,
                    database=database,
                )
            )
            yield Runtime(settings, database, job_app, queue, service, delivery)
    finally:
        github.close()
        database.close()


def requeue_undispatched(runtime: Runtime) -> int:
    with runtime.database.session() as session:
        pending = store.undispatched_deliveries(session)
    for delivery_id in pending:
        dispatch_delivery(runtime.database, runtime.queue, delivery_id=delivery_id)
    return len(pending)


def _worker_thread(
    runtime: Runtime, queues: list[str], concurrency: int, stop: threading.Event
) -> threading.Thread:
    # Each worker loop gets its own App: Procrastinate's async connector must
    # live in the loop that uses it.
    app = jobs.make_job_app(runtime.database.url)
    thread = threading.Thread(
        target=jobs.run_worker,
        kwargs={"app": app, "queues": queues, "concurrency": concurrency, "stop": stop},
        name="modelci-worker",
        daemon=True,
    )
    thread.start()
    return thread


def run_workers(
    settings: Settings, *, queues: list[str], concurrency: int, unsafe: bool = False
) -> None:
    """``modelci worker``: run jobs until interrupted."""
    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server_runtime(settings, unsafe=unsafe) as runtime:
        thread = _worker_thread(runtime, queues, concurrency, stop)
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            stop.set()
            thread.join(30)


def _serve_models(app: FastAPI, runtime: Runtime, *, unsafe: bool) -> ServingManager:
    """Serve every registered model's champion from this process's API.

    Champions load in the background (MLflow's first start on a new store takes
    seconds); ``/readyz`` says which are not loaded yet. A promotion made by
    this process's workers switches at once; one made elsewhere within
    MODELCI_SERVING_POLL_S.
    """
    from modelci.deliver.tracking import Registry
    from modelci.serving.http import mount_serving
    from modelci.serving.manager import serving_manager

    registry = Registry.from_settings(runtime.settings, runtime.database.url)
    manager = serving_manager(
        runtime.settings, registry, sessions=runtime.database.session, unsafe=unsafe
    )
    mount_serving(app, manager)
    runtime.delivery.on_champion_change = manager.refresh
    manager.start()
    return manager


def _serving_requests_filter(record: logging.LogRecord) -> bool:
    # uvicorn.access's args are (client, method, path, http version, status).
    path = str(record.args[2]) if isinstance(record.args, tuple) and len(record.args) > 2 else ""
    return not path.startswith(("/predict", "/models"))


def run_server(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    unsafe: bool = False,
    queues: list[str] | None = None,
    poll: bool = False,
) -> None:
    """``modelci serve``: receiver, API and ``workers`` worker threads in one process.

    ``poll`` also watches ``settings.poll_repositories`` through the REST API
    (:mod:`modelci.service.polling`); a webhook secret is then optional.
    """
    import uvicorn

    from modelci.service.api import ApiContext, create_app

    configure_logging()
    secret = settings.read_webhook_secret()
    if not secret and not poll:
        raise ConfigError(
            "no webhook secret is configured",
            hint="set MODELCI_GITHUB_WEBHOOK_SECRET_PATH (a file holding the "
            "secret you gave GitHub) or MODELCI_GITHUB_WEBHOOK_SECRET",
        )
    stop = threading.Event()
    with server_runtime(settings, unsafe=unsafe) as runtime:
        requeued = requeue_undispatched(runtime)
        if requeued:
            log.warning("queued %d stored deliveries that had not been queued", requeued)
        poller = None
        if poll:
            from modelci.service.polling import start_poller

            poller = start_poller(
                github=runtime.service.github,
                database=runtime.database,
                queue=runtime.queue,
                repositories=settings.poll_repositories,
                label=settings.github_trigger_label,
                data_dir=settings.data_dir,
                interval_s=settings.poll_interval_s,
                stop=stop,
            )
        worker = None
        if workers > 0:
            worker = _worker_thread(
                runtime, queues or [jobs.QUEUE_EVENTS, jobs.QUEUE_EVALUATIONS], workers, stop
            )
        # Without a secret (polling only) every webhook is refused with a ConfigError.
        app = create_app(
            ApiContext(
                runtime.database,
                runtime.queue,
                secret or b"",
                predict_auth=settings.predict_auth,
            )
        )
        models = _serve_models(app, runtime, unsafe=unsafe)
        try:
            if not settings.predict_access_log:
                logging.getLogger("uvicorn.access").addFilter(_serving_requests_filter)
            uvicorn.run(app, host=host, port=port, log_level="info")
        finally:
            stop.set()
            models.close()
            if poller is not None:
                poller.join(30)
            if worker is not None:
                worker.join(30)
