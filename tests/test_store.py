"""The store on both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from modelci import store
from modelci.db import Database, open_database
from modelci.errors import StoreError
from modelci.pgembed import EmbeddedPostgres
from modelci.settings import Settings


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """CI's server (MODELCI_TEST_POSTGRES_URL), else an embedded one for this session."""
    url = os.environ.get("MODELCI_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if os.environ.get("CI"):
        pytest.fail("CI must set MODELCI_TEST_POSTGRES_URL (scripts/test starts a server)")
    directory = Path(tempfile.mkdtemp(prefix="modelci-pg-", dir="/var/tmp"))
    server = EmbeddedPostgres(directory)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _reset_postgres(url: str) -> None:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    database = open_database(Settings(data_dir=tmp_path, database_url=database_url))
    yield database
    database.close()


def test_runs_are_recorded_and_reused_by_cache_key(db: Database) -> None:
    with db.session() as session:
        repo = store.get_or_create_repository(session, url="/srv/repo", name="repo")
        again = store.get_or_create_repository(session, url="/srv/repo", name="repo")
        assert again.id == repo.id
        failed = store.create_run(
            session, repository_id=repo.id, sha="a" * 40, role="base", cache_key="k1"
        )
        store.finish_run(session, run_id=failed.id, status="failed", error="boom")
    with db.session() as session:
        assert store.find_reusable_run(session, cache_key="k1") is None
        ok = store.create_run(
            session, repository_id=repo.id, sha="a" * 40, role="head", cache_key="k1"
        )
        store.finish_run(
            session,
            run_id=ok.id,
            status="succeeded",
            metrics={"accuracy": 0.9, "nested.loss": 0.1},
            timings={"train_s": 1.5},
            outputs_dir="/x",
            log_path="/log",
        )
    with db.session() as session:
        found = store.find_reusable_run(session, cache_key="k1")
        assert found is not None and found.id == ok.id
        assert found.metrics == {"accuracy": 0.9, "nested.loss": 0.1}
        assert found.finished_at is not None and found.finished_at.tzinfo is not None
        assert [r.id for r in store.list_runs(session, repository_id=repo.id)] == [ok.id, failed.id]


def test_evaluations(db: Database) -> None:
    with db.session() as session:
        repo = store.get_or_create_repository(session, url="u", name="n")
        evaluation = store.create_evaluation(
            session, repository_id=repo.id, base_sha="b" * 40, head_sha="h" * 40, job_id=7
        )
        store.finish_evaluation(
            session,
            evaluation_id=evaluation.id,
            status="succeeded",
            passed=True,
            report={"error": None},
            seconds=1.0,
        )
    with db.session() as session:
        assert store.evaluations_for_job(session, job_id=7)[0]["passed"] is True
        assert store.list_evaluations(session)[0].id == evaluation.id


def test_deliveries_are_stored_once(db: Database) -> None:
    payload = {"action": "labeled", "number": 1}
    with db.session() as session:
        assert store.record_delivery(
            session, delivery_id="d1", event="pull_request", action="labeled", payload=payload
        )
    with db.session() as session:
        assert not store.record_delivery(
            session, delivery_id="d1", event="pull_request", action="labeled", payload=payload
        )
        assert store.undispatched_deliveries(session) == ["d1"]
        store.mark_delivery_dispatched(session, delivery_id="d1", job_id=3)
    with db.session() as session:
        assert store.undispatched_deliveries(session) == []
        store.mark_delivery_processed(session, delivery_id="d1", outcome="queued", detail="x")
        stored = store.get_delivery(session, delivery_id="d1")
        assert stored is not None and stored.payload == payload and stored.processed_at


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), store.Base.metadata)
    assert diff == []


def test_opening_twice_and_concurrently_is_safe(database_url: str, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def open_close() -> None:
        try:
            open_database(Settings(data_dir=tmp_path, database_url=database_url)).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql://user:hunter2@127.0.0.1:1/none"
    with pytest.raises(StoreError) as info:
        open_database(Settings(data_dir=tmp_path, database_url=url))
    assert "hunter2" not in str(info.value)
    assert "MODELCI_DATABASE_URL" in str(info.value)
