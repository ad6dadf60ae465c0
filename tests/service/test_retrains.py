"""Retrains on the server, on the test PostgreSQL and the stand-in GitHub: schedules
fire once across workers and catch up once, a retrain waits for a running delivery
of its repository, the report reaches the commit, and the API queues retrains."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from modelci.github import AppAuth, GitHubClient
from modelci.retrain.result import RetrainResult
from modelci.runner.checkout import open_mirror
from modelci.service import jobs
from modelci.service.api import ApiContext, create_app
from modelci.service.pullrequests import DeliveryJob, RetrainJob
from modelci.service.retrains import RETRAIN_CHECK, RetrainingService, dispatch_due
from modelci.service.tokens import create_token
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store import retrains as retrain_store
from modelci.store import schedules
from modelci.store.db import Database, open_database
from tests.conftest import commit_files
from tests.github.conftest import (
    APP_ID,
    INSTALLATION,
    REPO,
    GitHub,
    app_key,
    github,
    standin_server,
)
from tests.github.helpers import TEST_SECRET
from tests.service.test_jobs import Engine, wait_until, worker

__all__ = ["app_key", "github", "standin_server"]  # fixtures used here

SHA = "d" * 40
CLONE_URL = f"https://example.invalid/{REPO}.git"
T0 = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    name = f"modelci_retrain_{uuid.uuid4().hex[:8]}"
    admin = postgres_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def database(database_url: str, tmp_path: Any) -> Iterator[Database]:
    opened = open_database(Settings(data_dir=tmp_path, database_url=database_url))
    yield opened
    opened.close()


@pytest.fixture
def engine(database_url: str, database: Database) -> Iterator[Engine]:
    app = jobs.make_job_app(database_url)
    jobs.apply_schema(app)
    with app.open():
        yield Engine(database_url, app)


def known(database: Database, *, cron: str | None = None, now: dt.datetime = T0) -> None:
    with database.session() as session:
        schedules.upsert_repository(
            session,
            repository=REPO,
            clone_url=CLONE_URL,
            default_branch="main",
            installation_id=INSTALLATION,
            cron=cron,
            now=now,
        )


def retrain_jobs(engine: Engine) -> list[Any]:
    return [j for j in engine.app.job_manager.list_jobs() if j.task_name == jobs.TASK_RETRAIN]


def test_the_schedules_table_matches_its_migration(database: Database) -> None:
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), store.Base.metadata)
    assert [d for d in diff if "retrain_schedules" in repr(d)] == []
    with database.session() as session:
        assert schedules.list_schedules(session) == []  # the table is there


# -- the dispatcher ----------------------------------------------------------------------


def test_a_schedule_fires_once_across_two_workers(
    database: Database, database_url: str, engine: Engine, tmp_path: Any
) -> None:
    known(database, cron="0 * * * *")  # hourly
    # A second worker process: its own engine and its own Procrastinate connection.
    other = open_database(Settings(data_dir=tmp_path / "other", database_url=database_url))
    other_app = jobs.make_job_app(database_url)
    try:
        with other_app.open():
            pairs = [(database, engine.queue()), (other, jobs.ProcrastinateQueue(other_app))] * 4
            now = T0 + dt.timedelta(minutes=5)
            barrier = threading.Barrier(len(pairs))

            def dispatch(pair: tuple[Database, jobs.ProcrastinateQueue]) -> int:
                barrier.wait()
                return len(dispatch_due(pair[0], pair[1], now=now + dt.timedelta(hours=1)))

            with ThreadPoolExecutor(len(pairs)) as pool:
                fired = list(pool.map(dispatch, pairs))
    finally:
        other.close()
    assert sum(fired) == 1
    (job,) = retrain_jobs(engine)
    assert job.task_kwargs["trigger"] == "schedule"
    assert job.task_kwargs["slot"] == (T0 + dt.timedelta(hours=1)).isoformat()
    assert job.lock == f"deliver:{REPO}"  # the delivery jobs' lock


def test_a_server_down_over_two_slots_catches_up_once(database: Database, engine: Engine) -> None:
    known(database, cron="0 * * * *")
    queue = engine.queue()
    assert dispatch_due(database, queue, now=T0 + dt.timedelta(minutes=59)) == []
    # Down from 09:59 to 12:30: the 10:00, 11:00 and 12:00 slots were missed.
    (caught_up,) = dispatch_due(database, queue, now=T0 + dt.timedelta(hours=3, minutes=30))
    assert caught_up.slot == (T0 + dt.timedelta(hours=3)).isoformat()
    assert dispatch_due(database, queue, now=T0 + dt.timedelta(hours=3, minutes=31)) == []
    assert len(retrain_jobs(engine)) == 1


def test_the_dispatcher_runs_as_a_procrastinate_periodic_task(engine: Engine) -> None:
    periodic = {task.task.name for task in engine.app.periodic_registry.periodic_tasks.values()}
    assert jobs.TASK_DISPATCH_RETRAINS in periodic
    assert jobs.TASK_DISPATCH_RETRAINS in jobs.HOUSEKEEPING_TASKS


# -- schedules from modelci.yaml and from the server ----------------------------------------


def service(database: Database, **parts: Any) -> RetrainingService:
    return RetrainingService(
        database=database,
        github=parts.get("github"),  # type: ignore[arg-type]
        retrainer=parts.get("retrainer"),  # type: ignore[arg-type]
        queue=parts.get("queue"),  # type: ignore[arg-type]
        settings=parts.get("settings") or Settings(public_url=None),
    )


def refresh(retraining: RetrainingService, config: str | None) -> schedules.RetrainSchedule:
    retraining.refresh_from_config(
        repo=REPO,
        clone_url=CLONE_URL,
        default_branch="main",
        installation_id=INSTALLATION,
        config_text=None if config is None else config.encode(),
    )
    with retraining.database.session() as session:
        row = schedules.get_schedule(session, repository=REPO)
        assert row is not None
        session.expunge(row)
        return row


CONFIG = "train: python train.py\nmetrics: metrics.json\n"


def test_the_schedule_follows_modelci_yaml_unless_the_server_set_one(database: Database) -> None:
    retraining = service(database)
    row = refresh(
        retraining, CONFIG + 'retrain:\n  schedule: "0 3 * * 1"\n  timezone: Europe/Berlin\n'
    )
    assert (row.cron, row.timezone, row.source) == ("0 3 * * 1", "Europe/Berlin", "config")
    # A broken file keeps the schedule and says why.
    row = refresh(retraining, CONFIG + 'retrain:\n  schedule: "0 3 * *"\n')
    assert row.cron == "0 3 * * 1" and "has 4 fields" in (row.config_error or "")
    with database.session() as session:
        schedules.set_server_schedule(session, repository=REPO, cron="30 1 * * *")
    row = refresh(retraining, CONFIG)
    assert (row.cron, row.source, row.config_error) == ("30 1 * * *", "server", None)
    with database.session() as session:
        schedules.use_config_schedule(session, repository=REPO)
    row = refresh(retraining, CONFIG + 'retrain:\n  schedule: "0 4 * * *"\n')
    assert (row.cron, row.source) == ("0 4 * * *", "config")


def test_a_changed_schedule_starts_from_now_and_fires_nothing_missed(
    database: Database, engine: Engine
) -> None:
    known(database, cron="0 * * * *", now=T0)
    later = T0 + dt.timedelta(hours=5, minutes=10)
    known(database, cron="5 * * * *", now=later)
    assert dispatch_due(database, engine.queue(), now=later) == []
    assert len(dispatch_due(database, engine.queue(), now=later + dt.timedelta(hours=1))) == 1


# -- a retrain waits for a running delivery --------------------------------------------------


def test_a_retrain_started_while_a_delivery_of_the_repository_runs_waits_for_it(
    engine: Engine,
) -> None:
    started: list[str] = []
    release = threading.Event()

    def deliver(job: DeliveryJob, cancel: threading.Event) -> None:
        started.append("deliver")
        release.wait(30)
        started.append("delivered")

    def retrain(job: RetrainJob, cancel: threading.Event) -> None:
        started.append(f"retrain {job.repo}")

    jobs.install_services(
        jobs.Services(
            process_delivery=lambda _: None,
            evaluate=lambda job, cancel: None,
            job_timeout_s=60,
            deliver=deliver,
            retrain=retrain,
        )
    )
    queue = engine.queue()
    delivery = DeliveryJob(
        repo=REPO,
        sha=SHA,
        ref="main",
        clone_url=CLONE_URL,
        installation_id=INSTALLATION,
        delivery_id="d1",
        actor="maintainer",
    )
    other = RetrainJob(
        repo="octo/other",
        ref="main",
        clone_url=CLONE_URL,
        installation_id=1,
        trigger="manual",
        actor="api",
    )
    try:
        with worker(engine, concurrency=3):
            queue.enqueue_delivery(delivery)
            wait_until(lambda: started == ["deliver"])
            retrain_id = queue.enqueue_retrain(
                RetrainJob(
                    repo=REPO,
                    ref="main",
                    clone_url=CLONE_URL,
                    installation_id=INSTALLATION,
                    trigger="manual",
                    actor="api",
                )
            )
            queue.enqueue_retrain(other)
            # Another repository's retrain runs; this one's waits for the delivery.
            wait_until(lambda: "retrain octo/other" in started)
            assert retrain_id is not None and engine.status(retrain_id) == "todo"
            release.set()
            wait_until(lambda: engine.status(retrain_id) == "succeeded")
    finally:
        release.set()
        jobs.install_services(None)  # type: ignore[arg-type]
    mine = [s for s in started if s != "retrain octo/other"]
    assert mine == ["deliver", "delivered", f"retrain {REPO}"]


# -- the report on the commit ------------------------------------------------------------------


class FakeRetrainer:
    """Stands in for modelci.retrain.Retrainer: records a retrain as the real one
    does (a row in the store) and returns the decision it was given."""

    def __init__(self, database: Database, decisions: list[tuple[str, float, float]]) -> None:
        self.database = database
        self.decisions = decisions  # (decision, new accuracy, champion accuracy)
        self.calls: list[dict[str, Any]] = []

    def retrain(self, repo: str, ref: str, **options: Any) -> RetrainResult:
        self.calls.append({"repo": repo, "ref": ref, **options})
        decision, new, champion = self.decisions.pop(0)
        with self.database.session() as session:
            row = retrain_store.create_retrain(
                session,
                repository=REPO,
                ref=ref,
                trigger=options["trigger"],
                actor=options["actor"],
            )
            retrain_store.finish_retrain(
                session,
                retrain_id=row.id,
                sha=SHA,
                decision=decision,
                model_name="threshold",
                version=row.id,
                metrics={"new": {"accuracy": new}, "champion": {"accuracy": champion}},
            )
            retrain_id = row.id
        return RetrainResult(
            repo=repo,
            ref=ref,
            sha=SHA,
            trigger=options["trigger"],
            actor=options["actor"],
            decision=decision,  # type: ignore[arg-type]
            reasons=[f"accuracy {new:.2f} vs the champion's {champion:.2f} on the same rows"],
            model_name="threshold",
            version=retrain_id,
            champion_version=1,
            retrain_id=retrain_id,
        )


@pytest.fixture
def gh_client(github: GitHub) -> Iterator[GitHubClient]:
    with GitHubClient(github.url, AppAuth(APP_ID, github.key.private_pem)) as client:
        yield client


def run_retrains(
    database: Database, client: GitHubClient, public_url: str | None, *decisions: Any
) -> FakeRetrainer:
    retrainer = FakeRetrainer(database, list(decisions))
    retraining = service(
        database,
        github=client,
        retrainer=retrainer,
        settings=Settings(public_url=public_url, allow_loopback_http=True),
    )
    job = RetrainJob(
        repo=REPO,
        ref="main",
        clone_url="https://github.com/octo/model.git",
        installation_id=INSTALLATION,
        trigger="schedule",
        actor="schedule (0 3 * * 1, UTC)",
    )
    for _ in decisions:
        retraining.retrain(job, threading.Event())
    return retrainer


def test_each_retrain_comments_on_the_commit_and_completes_a_check_run(
    database: Database, github: GitHub, gh_client: GitHubClient
) -> None:
    retrainer = run_retrains(database, gh_client, None, ("promoted", 0.9, 0.8), ("kept", 0.7, 0.9))
    assert [c["trigger"] for c in retrainer.calls] == ["schedule", "schedule"]
    assert retrainer.calls[0]["git_env"]  # the installation's token for git
    comments = github.state.commit_comments
    assert [c["commit_id"] for c in comments] == [SHA, SHA]  # one per retrain
    assert "accuracy 0.70 vs the champion's 0.90" in comments[1]["body"]
    runs = [r for r in github.state.check_runs.values() if r["name"] == RETRAIN_CHECK]
    assert [(r["head_sha"], r["status"], r["conclusion"]) for r in runs] == [
        (SHA, "completed", "success"),
        (SHA, "completed", "neutral"),
    ]
    assert (
        runs[1]["output"]["title"]
        == "retrain of ddddddd: threshold v2 registered, champion stays v1"
    )
    # No public URL: the history as a sparkline, new model's accuracy per retrain.
    assert "accuracy: █▁" in comments[1]["body"]
    assert "/plots/" not in comments[1]["body"]


def test_with_a_public_url_the_comment_links_an_unguessable_png(
    database: Database,
    github: GitHub,
    gh_client: GitHubClient,
    database_url: str,
    engine: Engine,
) -> None:
    run_retrains(
        database, gh_client, "https://ci.example.com/", ("promoted", 0.9, 0.8), ("kept", 0.85, 0.9)
    )
    body = github.state.commit_comments[-1]["body"]
    prefix = "https://ci.example.com/plots/retrains/"
    assert prefix in body
    token = body.split(prefix)[1].split(".png")[0]
    assert len(token) >= 32
    client = TestClient(create_app(ApiContext(database, engine.queue(), TEST_SECRET)))
    png = client.get(f"/plots/retrains/{token}.png")  # no bearer token: GitHub fetches it
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert client.get(f"/plots/retrains/{'x' * 32}.png").status_code == 404
    assert client.get("/plots/retrains/short.png").status_code == 422


# -- the API -------------------------------------------------------------------------------


@pytest.fixture
def api(database: Database, engine: Engine) -> tuple[TestClient, dict[str, str]]:
    app = create_app(ApiContext(database, engine.queue(), TEST_SECRET, token_cache_s=0))
    token = create_token(database, "retrain-test")
    return TestClient(app), {"Authorization": f"Bearer {token}"}


def test_the_api_queues_a_retrain_and_answers_the_job_id(
    database: Database, engine: Engine, api: tuple[TestClient, dict[str, str]]
) -> None:
    client, auth = api
    url = f"/api/repositories/{REPO}/retrain"
    assert client.post(url).status_code == 401
    missing = client.post("/api/repositories/octo/unknown/retrain", headers=auth)
    assert missing.status_code == 404 and "octo/unknown" in missing.json()["detail"]
    known(database)
    queued = client.post(url, headers=auth)
    assert queued.status_code == 202, queued.text
    answer = queued.json()
    assert answer["ref"] == "main" and answer["repository"] == REPO
    job = engine.job(answer["job_id"])
    assert job.task_name == jobs.TASK_RETRAIN and job.task_kwargs["trigger"] == "manual"
    again = client.post(url, headers=auth)
    assert again.status_code == 409 and "queued already" in again.json()["detail"]
    tagged = client.post(url, headers=auth, json={"ref": "v2"})
    assert tagged.status_code == 202 and tagged.json()["ref"] == "v2"
    for bad in ({"ref": "--upload-pack=x"}, {"ref": "a..b"}, {"ref": ""}, {"branch": "main"}):
        refused = client.post(url, headers=auth, json=bad)
        assert refused.status_code == 422, bad


def test_the_api_sets_and_drops_the_servers_schedule(
    database: Database, api: tuple[TestClient, dict[str, str]]
) -> None:
    client, auth = api
    url = f"/api/repositories/{REPO}/retrain-schedule"
    assert client.get(url, headers=auth).status_code == 404
    known(database, cron="0 3 * * 1")
    assert client.get(url, headers=auth).json()["source"] == "config"
    bad = client.put(url, headers=auth, json={"schedule": "0 3 * *"})
    assert bad.status_code == 422 and "has 4 fields" in bad.text
    zone = client.put(url, headers=auth, json={"schedule": "0 3 * * *", "timezone": "Mars/X"})
    assert zone.status_code == 422 and "IANA" in zone.text
    put = client.put(url, headers=auth, json={"schedule": "15 2 * * *", "timezone": "Asia/Tokyo"})
    assert put.status_code == 200
    assert (put.json()["schedule"], put.json()["source"]) == ("15 2 * * *", "server")
    dropped = client.delete(url, headers=auth).json()
    assert (dropped["schedule"], dropped["source"]) == (None, "config")


def test_a_delivered_push_re_reads_the_schedule_from_its_modelci_yaml(
    database: Database, make_repo: Any, tmp_path: Any
) -> None:
    path = make_repo({"modelci.yaml": CONFIG + 'retrain:\n  schedule: "0 3 * * 1"\n'})
    first = commit_files(path, {"x": "1"})
    retraining = service(database, settings=Settings(data_dir=tmp_path / "data"))
    job = DeliveryJob(
        repo=REPO,
        sha=first,
        ref="main",
        clone_url=str(path),
        installation_id=INSTALLATION,
        delivery_id="d",
        actor="maintainer",
    )
    retraining.refresh_after_delivery(job, {})
    second = commit_files(path, {"modelci.yaml": CONFIG + 'retrain:\n  schedule: "0 6 * * *"\n'})
    with database.session() as session:
        row = schedules.get_schedule(session, repository=REPO)
        assert row is not None and row.cron == "0 3 * * 1" and row.clone_url == str(path)
    # The delivery fetched the new commit into the mirror before it was reported.
    open_mirror(str(path), retraining.settings.mirrors_dir).fetch()
    retraining.refresh_after_delivery(replace(job, sha=second), {})
    with database.session() as session:
        row = schedules.get_schedule(session, repository=REPO)
        assert row is not None and row.cron == "0 6 * * *"


def test_two_real_workers_dispatch_a_due_slot_once(database: Database, engine: Engine) -> None:
    now = dt.datetime.now(dt.UTC)
    known(database, cron="* * * * *", now=now - dt.timedelta(hours=2))  # missed 120 slots
    ran: list[RetrainJob] = []
    queue = engine.queue()
    jobs.install_services(
        jobs.Services(
            process_delivery=lambda _: None,
            evaluate=lambda job, cancel: None,
            job_timeout_s=60,
            retrain=lambda job, cancel: ran.append(job),
            dispatch_retrains=lambda at: dispatch_due(database, queue, now=at),
        )
    )
    try:
        with worker(engine), worker(engine):
            wait_until(lambda: len(ran) == 1, timeout=90)
            ticks = {
                j.task_kwargs["timestamp"]
                for j in engine.app.job_manager.list_jobs(task=jobs.TASK_DISPATCH_RETRAINS)
            }
    finally:
        jobs.install_services(None)  # type: ignore[arg-type]
    assert ticks  # the periodic task ran (once per tick across both workers)
    assert len(retrain_jobs(engine)) == 1 and ran[0].trigger == "schedule"
