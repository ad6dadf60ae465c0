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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from modelci.service.retrains import RetrainingService, dispatch_due
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import Database, open_database

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modelci.deliver.delivery import Deliverer
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
    retraining: RetrainingService
    deliverer: Deliverer | None = None  # promote and roll back (the dashboard's forms)


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


_GITHUB_SETTINGS_HINT = (
    "set MODELCI_GITHUB_APP_ID and MODELCI_GITHUB_PRIVATE_KEY_PATH (or MODELCI_GITHUB_TOKEN) "
    "and MODELCI_GITHUB_WEBHOOK_SECRET_PATH, or --poll with MODELCI_POLL_REPOSITORIES"
)


class GitHubOff:
    """The credentials of a server without GitHub: every use says how to configure it.

    ``modelci serve`` with no GitHub settings still serves models and runs the
    API and workers; a job that needs GitHub fails with this message instead.
    """

    is_app = False

    def token(self, installation_id: int | None, exchanger: object) -> str:
        raise ConfigError("GitHub is not configured on this server", hint=_GITHUB_SETTINGS_HINT)

    def invalidate(self, installation_id: int | None, token: str) -> None:
        pass


def has_github_credentials(settings: Settings) -> bool:
    return bool(
        settings.github_app_id
        or settings.github_private_key is not None
        or settings.github_private_key_path is not None
        or settings.github_token is not None
    )


def github_client(settings: Settings, *, optional: bool = False) -> GitHubClient:
    """The client the settings describe; with ``optional`` and no credentials at all,
    one whose every call fails with a ConfigError saying which settings to set."""
    token = settings.github_token.get_secret_value() if settings.github_token else None
    auth: Any
    if optional and not has_github_credentials(settings):
        auth = GitHubOff()
    else:
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
def server_runtime(
    settings: Settings, *, unsafe: bool = False, github_optional: bool = False
) -> Iterator[Runtime]:
    """Open the database and job engine and build the services a worker needs."""
    sandbox = make_sandbox(unsafe=unsafe, uid_base=settings.sandbox_uid_base)
    github = github_client(settings, optional=github_optional)
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
            from modelci.retrain.retrainer import Retrainer

            retrainer = Retrainer.from_evaluator(evaluator)
            retraining = RetrainingService(
                database=database,
                github=github,
                retrainer=retrainer,
                queue=queue,
                settings=settings,
            )
            from modelci.service.imports import dispatch_checks, server_checker
            from modelci.service.monitoring import check_drift

            checker = server_checker(database, queue, github, retrainer.deliverer, settings)
            delivery = DeliveryService(
                database=database,
                github=github,
                evaluator=evaluator,
                check_name=settings.github_check_name,
                queue=queue,
                # A delivered push to the default branch may change its retrain schedule.
                after_delivery=retraining.refresh_after_delivery,
            )
            jobs.install_services(
                jobs.Services(
                    process_delivery=service.process_delivery,
                    evaluate=service.evaluate,
                    job_timeout_s=settings.job_timeout_s,
                    deliver=delivery.deliver,
                    retrain=retraining.retrain,
                    dispatch_retrains=lambda now: dispatch_due(database, queue, now=now),
                    check_imports=checker.run,
                    dispatch_import_checks=lambda now: dispatch_checks(
                        database, queue, now=now, interval_s=settings.import_check_interval
                    ),
                    check_drift=lambda: check_drift(
                        database=database,
                        registry=retrainer.deliverer.registry,
                        github=github,
                        queue=queue,
                        public_url=settings.public_url,
                        webhook_url=settings.drift_webhook_url,
                    ),
                    database=database,
                )
            )
            yield Runtime(
                settings,
                database,
                job_app,
                queue,
                service,
                delivery,
                retraining,
                deliverer=retrainer.deliverer,
            )
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


class ShutdownRequested(BaseException):
    """SIGTERM or SIGINT arrived while the server was still starting: unwind and clean up.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it.
    """


@contextmanager
def _shutdown_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``on_signal`` for the life of the server.

    uvicorn handles both itself while it serves, then restores these handlers and
    raises the signal again (``capture_signals``): with Python's defaults that
    re-raised SIGTERM would kill the process before the cleanup after
    ``server.run()`` (exit 143, the embedded PostgreSQL left running, queued
    predictions lost). Here it reaches ``on_signal``, which by then only notes it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in handled}
    for sig in handled:
        signal.signal(sig, lambda signum, _frame: on_signal(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def github_loop(settings: Settings, *, poll: bool) -> tuple[bytes | None, str | None]:
    """The webhook secret, and why the GitHub loop is off (None when it is on).

    Without any GitHub setting ``serve`` still serves models and runs the API and
    workers; a half configuration that would accept webhooks and then fail every
    job is refused.
    """
    secret = settings.read_webhook_secret()
    credentials = has_github_credentials(settings)
    if poll and not credentials:
        raise ConfigError(
            "--poll reads pull requests through GitHub's API, and no GitHub credentials are "
            "configured",
            hint="set MODELCI_GITHUB_APP_ID and MODELCI_GITHUB_PRIVATE_KEY_PATH, or "
            "MODELCI_GITHUB_TOKEN",
        )
    if secret and not credentials:
        raise ConfigError(
            "a webhook secret is set but no GitHub credentials: webhooks would be accepted "
            "and every job would then fail",
            hint="set MODELCI_GITHUB_APP_ID and MODELCI_GITHUB_PRIVATE_KEY_PATH (or "
            "MODELCI_GITHUB_TOKEN), or unset the webhook secret to serve models only",
        )
    if poll or secret:
        return secret, None
    if credentials:
        return None, "no webhook secret, so webhooks are refused"
    return None, "no GitHub credentials and no webhook secret"


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
    (:mod:`modelci.service.polling`); a webhook secret is then optional. Without
    GitHub settings the GitHub loop is off and the rest runs.

    SIGTERM and SIGINT stop it cleanly (exit 0): uvicorn stops accepting and
    finishes the requests in flight, then the model workers stop and the queued
    predictions are written, the job workers hand their running jobs back to the
    queue, and the embedded PostgreSQL stops (if no other process uses it).
    """
    import uvicorn

    from modelci.service.api import ApiContext, create_app

    configure_logging()
    secret, github_off = github_loop(settings, poll=poll)
    stop = threading.Event()
    server: uvicorn.Server | None = None
    starting = True

    def on_signal(signum: int) -> None:
        first = not stop.is_set()
        stop.set()
        if first:
            log.info("%s: stopping", signal.Signals(signum).name)
        if server is not None:
            server.should_exit = True
        elif starting and first:
            # Once only: a second signal must not break off the cleanup this started.
            raise ShutdownRequested

    try:
        with (
            _shutdown_signals(on_signal),
            server_runtime(settings, unsafe=unsafe, github_optional=True) as runtime,
        ):
            if github_off:
                log.warning(
                    "the GitHub loop is off (%s): serving models, the API and workers only; "
                    "to turn it on, %s",
                    github_off,
                    _GITHUB_SETTINGS_HINT,
                )
            requeued = requeue_undispatched(runtime)
            if requeued:
                log.warning("queued %d stored deliveries that had not been queued", requeued)
            if not github_off:
                # Pushes missed while the server was down may have changed schedules;
                # reading them fetches every repository, so off the start's path.
                threading.Thread(
                    target=runtime.retraining.refresh_known,
                    name="modelci-retrain-schedules",
                    daemon=True,
                ).start()
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
            from modelci.web.signin import SignIn

            # Without a secret every webhook is answered 503 "GitHub is not configured".
            app = create_app(
                ApiContext(
                    runtime.database,
                    runtime.queue,
                    secret or b"",
                    predict_auth=settings.predict_auth,
                    public_url=settings.public_url,
                    # The dashboard's sign-in (mounted by web.auth.mount_auth).
                    signin=SignIn.from_settings(
                        settings, runtime.database, client=runtime.service.github
                    ),
                )
            )
            models = _serve_models(app, runtime, unsafe=unsafe)
            # The dashboard's parts that exist only now (mount_web ran in create_app).
            app.state.web.settings = settings
            app.state.web.serving = models
            app.state.web.deliverer = runtime.deliverer
            try:
                server = uvicorn.Server(
                    uvicorn.Config(
                        app,
                        host=host,
                        port=port,
                        log_level="info",
                        # Requests in flight get this long to finish after a SIGTERM.
                        timeout_graceful_shutdown=30,
                    )
                )
                if not settings.predict_access_log:
                    logging.getLogger("uvicorn.access").addFilter(_serving_requests_filter)
                if not stop.is_set():
                    server.run()
            finally:
                starting = False
                stop.set()
                models.close()
                if poller is not None:
                    poller.join(30)
                if worker is not None:
                    worker.join(30)
    except ShutdownRequested:
        log.info("stopped while starting")
    log.info("stopped")
