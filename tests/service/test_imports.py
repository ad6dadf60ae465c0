"""The new-data trigger on the real PostgreSQL and Procrastinate, with real DVC: an
import whose source changed queues one retrain (trigger data), once across workers."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from modelci.data.versions import data_version
from modelci.evaluate.evaluation import Evaluator
from modelci.retrain.refresh import refresh_imports
from modelci.runner.checkout import Mirror
from modelci.service import jobs
from modelci.service.imports import ImportChecker, ImportCheckJob, dispatch_checks
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import Database
from tests.data.dvcrepos import csv_rows, import_url_repo
from tests.data.test_fetch import place
from tests.evaluate.test_evaluation import open_evaluator
from tests.github.conftest import INSTALLATION, REPO
from tests.service.test_jobs import Engine
from tests.service.test_retrains import T0, database, database_url, engine, known, retrain_jobs

__all__ = ["database", "database_url", "engine", "place"]  # fixtures shared

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)


@pytest.fixture
def evaluator(place: Path, shared_envs: Path) -> Iterator[Evaluator]:
    settings = Settings(data_dir=place / "data", database_url=f"sqlite:///{place}/store.db")
    settings.prepare_data_dir()
    with open_evaluator(settings, shared_envs) as made:
        yield made


def check_jobs(engine: Engine) -> list[Any]:
    return [j for j in engine.app.job_manager.list_jobs() if j.task_name == jobs.TASK_CHECK_IMPORTS]


def test_the_import_checks_table_matches_its_migration(database: Database) -> None:
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), store.Base.metadata)
    assert [d for d in diff if "import_checks" in repr(d)] == []


def test_checks_are_dispatched_once_per_interval(database: Database, engine: Engine) -> None:
    known(database)
    queue = engine.queue()
    hour = 3600.0
    assert len(dispatch_checks(database, queue, now=T0, interval_s=hour)) == 1
    assert (
        dispatch_checks(database, queue, now=T0 + dt.timedelta(minutes=59), interval_s=hour) == []
    )
    (job,) = check_jobs(engine)
    assert job.task_kwargs["repo"] == REPO
    periodic = {task.task.name for task in engine.app.periodic_registry.periodic_tasks.values()}
    assert jobs.TASK_DISPATCH_IMPORT_CHECKS in periodic


def test_an_import_whose_source_changed_triggers_a_retrain(
    database: Database, engine: Engine, evaluator: Evaluator, place: Path
) -> None:
    source = place / "source"
    source.mkdir()
    (source / "data.csv").write_text(csv_rows(ones=3, zeros=7))
    repo = import_url_repo(place / "churn", source / "data.csv", "data/data.csv", remote=None)
    evaluator.settings.dvc_remotes_path.write_text(
        f'[repositories."{repo.name}"]\nallowed_urls = ["{source}"]\n'
    )

    def refresh(mirror: Mirror, sha: str, repo: str, cancel: threading.Event | None) -> Any:
        return refresh_imports(evaluator, mirror, sha, repo=repo, cancel=cancel)

    def champion(mirror: Mirror, sha: str, repo: str) -> dict[str, str]:
        return data_version(mirror, sha)  # the champion was delivered from this commit

    def checker() -> ImportChecker:
        return ImportChecker(
            database=database,
            queue=engine.queue(),
            mirrors_dir=evaluator.settings.mirrors_dir,
            refresh=refresh,
            champion_data=champion,
        )

    job = ImportCheckJob(REPO, "main", str(repo), INSTALLATION)
    assert checker().check(job) is None  # the source as the champion was trained on it
    assert retrain_jobs(engine) == []

    (source / "data.csv").write_text(csv_rows(ones=9, zeros=1))
    # Two workers check at once: one retrain is queued.
    with ThreadPoolExecutor(2) as pool:
        queued = [r for r in pool.map(lambda _: checker().check(job), range(2)) if r]

    assert len(queued) == 1
    (retrain,) = retrain_jobs(engine)
    assert retrain.task_kwargs["trigger"] == "data"
    assert retrain.task_kwargs["clone_url"] == str(repo)
    # Checked again later, the same new data queues nothing more.
    assert checker().check(job) is None
    assert len(retrain_jobs(engine)) == 1
