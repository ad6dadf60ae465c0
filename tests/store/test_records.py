"""The store on both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError, StatementError

from modelci.errors import ConfigError, StoreError
from modelci.settings import Settings
from modelci.store import db as dbmodule
from modelci.store import records as store
from modelci.store.db import Database, masked_url, normalise_url, open_database

SHA_A, SHA_B = "a" * 40, "b" * 40


def _reset_postgres(url: str) -> None:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sub/store.db"  # the missing parent is created
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> Iterator[Database]:
    database = open_database(Settings(data_dir=tmp_path, database_url=database_url))
    yield database
    database.close()


def _repo_and_run(db: Database, **finish: object) -> tuple[int, int]:
    with db.session() as session:
        repo = store.get_or_create_repository(session, url="/srv/repo", name="repo")
        run = store.create_run(
            session, repository_id=repo.id, sha=SHA_A, role="head", cache_key="k"
        )
        if finish:
            store.finish_run(session, run_id=run.id, **finish)  # type: ignore[arg-type]
        return repo.id, run.id


def test_runs_are_recorded_and_reused_by_cache_key(db: Database) -> None:
    with db.session() as session:
        repo = store.get_or_create_repository(session, url="/srv/repo", name="repo")
        assert store.get_or_create_repository(session, url="/srv/repo", name="repo").id == repo.id
        failed = store.create_run(
            session, repository_id=repo.id, sha=SHA_A, role="base", cache_key="k1"
        )
        store.finish_run(session, run_id=failed.id, status="failed", error="boom")
    with db.session() as session:
        assert store.find_reusable_run(session, cache_key="k1") is None
        older, newer = (
            store.create_run(session, repository_id=repo.id, sha=SHA_A, role=r, cache_key="k1")
            for r in ("base", "head")
        )
        other = store.create_run(
            session, repository_id=repo.id, sha=SHA_B, role="head", cache_key="k2"
        )
        for run in (older, newer, other):
            store.finish_run(
                session,
                run_id=run.id,
                status="succeeded",
                metrics={"accuracy": 0.9, "nested.loss": 0.1},
                timings={"train_s": 1.5},
                outputs_dir=f"/outputs/{run.id}",
                log_path="/log",
            )
    with db.session() as session:
        found = store.find_reusable_run(session, cache_key="k1")
        assert found is not None and found.id == newer.id  # the latest success
        assert found.metrics == {"accuracy": 0.9, "nested.loss": 0.1}
        assert found.timings == {"train_s": 1.5}
        assert found.finished_at is not None and found.finished_at.tzinfo == dt.UTC
        assert store.find_reusable_run(session, cache_key="nothing") is None
        listed = store.list_runs(session, repository_id=repo.id)
        assert [r.id for r in listed] == [other.id, newer.id, older.id, failed.id]
        assert [r.id for r in store.list_runs(session, limit=1)] == [other.id]
        assert store.list_runs(session, repository_id=repo.id + 1) == []


def test_a_run_is_created_running_and_finishing_keeps_what_is_not_given(db: Database) -> None:
    _, run_id = _repo_and_run(db)
    with db.session() as session:
        run = store.get_run(session, run_id=run_id)
        assert run is not None and run.status == "running" and run.started_at is not None
        assert run.created_at.tzinfo == dt.UTC and run.finished_at is None
        store.finish_run(session, run_id=run_id, status="running", log_path="/log")
        store.finish_run(session, run_id=run_id, status="failed", error="exit 3")
    with db.session() as session:
        run = store.get_run(session, run_id=run_id)
        assert run is not None and (run.status, run.error, run.log_path) == (
            "failed",
            "exit 3",
            "/log",
        )
        assert store.get_run(session, run_id=run_id + 100) is None
        with pytest.raises(StoreError, match="no runs row"):
            store.finish_run(session, run_id=run_id + 100, status="failed")
        queued = store.create_run(
            session,
            repository_id=run.repository_id,
            sha=SHA_B,
            role="base",
            cache_key="q",
            status="queued",
            reused_from_id=run_id,
        )
        assert queued.started_at is None and queued.reused_from_id == run_id


def test_json_round_trips_and_datetimes_are_utc(db: Database) -> None:
    report = {
        "verdict": "pass",
        "metrics": [{"name": "accuracy", "delta": 0.012, "interval": [-0.001, 0.03]}],
        "note": "naïve ✓",
        "nothing": None,
        "flag": True,
    }
    aware = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db.session() as session:
        repo = store.get_or_create_repository(session, url="u", name="n")
        run = store.create_run(
            session, repository_id=repo.id, sha=SHA_A, role="head", cache_key="k", started_at=aware
        )
        evaluation = store.create_evaluation(
            session, repository_id=repo.id, base_sha=SHA_B, head_sha=SHA_A, head_run_id=run.id
        )
        store.finish_evaluation(
            session, evaluation_id=evaluation.id, status="succeeded", passed=True, report=report
        )
    with db.session() as session:
        stored = store.list_evaluations(session, repository_id=repo.id)[0]
        assert stored.report == report and stored.passed is True
        assert stored.finished_at is not None and stored.finished_at.tzinfo == dt.UTC
        started = store.get_run(session, run_id=run.id)
        assert started is not None and started.started_at == aware
        assert started.started_at.utcoffset() == dt.timedelta(0)
    with pytest.raises(StatementError, match="naive datetime"), db.session() as session:
        store.create_run(
            session,
            repository_id=repo.id,
            sha=SHA_A,
            role="head",
            cache_key="k",
            started_at=dt.datetime(2026, 1, 1),
        )


def test_evaluations(db: Database) -> None:
    with db.session() as session:
        repo = store.get_or_create_repository(session, url="u", name="n")
        evaluation = store.create_evaluation(
            session, repository_id=repo.id, base_sha=SHA_B, head_sha=SHA_A, job_id=7
        )
        assert evaluation.status == "running" and evaluation.passed is None
        store.finish_evaluation(
            session,
            evaluation_id=evaluation.id,
            status="succeeded",
            passed=False,
            report={"error": None},
            seconds=1.0,
        )
    with db.session() as session:
        assert store.evaluations_for_job(session, job_id=7)[0]["passed"] is False
        assert [e.id for e in store.list_evaluations(session)] == [evaluation.id]
        assert store.list_evaluations(session, repository_id=repo.id + 1) == []


def test_a_failed_session_leaves_nothing_and_foreign_keys_hold(db: Database) -> None:
    def fail_after_creating() -> None:
        with db.session() as session:
            store.get_or_create_repository(session, url="/gone", name="gone")  # a savepoint
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_after_creating()
    with db.session() as session:
        assert session.query(store.Repository).count() == 0
    with pytest.raises(IntegrityError), db.session() as session:
        store.create_run(session, repository_id=999, sha=SHA_A, role="head", cache_key="k")


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
        store.lock_key(session, key="comment:o/r#1")
        store.mark_delivery_processed(session, delivery_id="d1", outcome="queued", detail="x")
        stored = store.get_delivery(session, delivery_id="d1")
        assert stored is not None and stored.payload == payload and stored.processed_at
        assert stored.job_id == 3


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), store.Base.metadata)
    assert diff == []


def test_the_cheap_head_lookup_agrees_with_alembic() -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(dbmodule.__file__).parent / "migrations"))
    assert dbmodule.head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_opening_again_runs_no_migration(
    db: Database, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(connection: object) -> None:
        raise AssertionError("migrated again")

    monkeypatch.setattr(dbmodule, "_upgrade", fail)
    open_database(Settings(data_dir=tmp_path, database_url=database_url)).close()
    with db.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == (
            dbmodule.head_revision()
        )


def test_a_schema_from_a_newer_modelci_is_refused(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    with db.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(StoreError, match="newer modelci"):
        open_database(Settings(data_dir=tmp_path, database_url=database_url))


def test_opening_concurrently_from_threads_is_safe(database_url: str, tmp_path: Path) -> None:
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


def test_opening_a_new_postgresql_database_from_processes_is_safe(
    postgres_url: str, tmp_path: Path
) -> None:
    _reset_postgres(postgres_url)
    script = (
        "import sys\nfrom modelci.store.db import open_database\n"
        "from modelci.settings import Settings\n"
        "open_database(Settings(data_dir=sys.argv[1], database_url=sys.argv[2])).close()\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), postgres_url],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=60)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql://user:hunter2@127.0.0.1:1/none"
    with pytest.raises(StoreError) as info:
        open_database(Settings(data_dir=tmp_path, database_url=url))
    assert "hunter2" not in str(info.value)
    assert "postgresql+psycopg://user:***@127.0.0.1:1/none" in str(info.value)
    assert "MODELCI_DATABASE_URL" in str(info.value)


def test_urls_are_normalised_and_masked() -> None:
    assert normalise_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
    masked = masked_url("postgresql://u:secret@h/d?password=other&sslmode=require")
    assert "secret" not in masked and "other" not in masked and "sslmode=require" in masked


def test_api_tokens_are_stored_by_hash_listed_touched_and_revoked(db: Database) -> None:
    with db.session() as session:
        store.create_api_token(session, name="ci", token_sha256="1" * 64)
        store.create_api_token(session, name="alice", token_sha256="2" * 64)
    with db.session() as session, pytest.raises(ConfigError, match="exists already"):
        store.create_api_token(session, name="ci", token_sha256="3" * 64)
    with db.session() as session:
        assert [t.name for t in store.list_api_tokens(session)] == ["alice", "ci"]
        assert store.find_api_token(session, token_sha256="9" * 64) is None
        found = store.find_api_token(
            session, token_sha256="1" * 64, touch_after=dt.timedelta(seconds=60)
        )
        assert found is not None and found.name == "ci" and found.last_used_at is not None
        first_use = found.last_used_at
    with db.session() as session:
        again = store.find_api_token(
            session, token_sha256="1" * 64, touch_after=dt.timedelta(seconds=60)
        )
        assert again is not None and again.last_used_at == first_use  # not written again
        assert store.revoke_api_token(session, name="ci")
        assert not store.revoke_api_token(session, name="ci")
    with db.session() as session:
        assert store.find_api_token(session, token_sha256="1" * 64) is None


def test_job_failures_keep_the_latest_reason_and_a_failed_delivery_stays_unprocessed(
    db: Database,
) -> None:
    big = 2**40  # Procrastinate's ids are bigint
    with db.session() as session:
        store.record_job_failure(session, job_id=big, task_name="t", error="first", retried=True)
    with db.session() as session:
        store.record_job_failure(session, job_id=big, task_name="t", error="last", retried=False)
        store.record_delivery(session, delivery_id="d", event="push", action=None, payload={})
        store.mark_delivery_failed(session, delivery_id="d", detail="no 'repository'")
    with db.session() as session:
        failures = store.job_failures(session, job_ids=[big, 7])
        assert list(failures) == [big]
        assert (failures[big].error, failures[big].retried) == ("last", False)
        assert store.job_failures(session, job_ids=[]) == {}
        delivery = store.get_delivery(session, delivery_id="d")
        assert delivery is not None and delivery.outcome == "failed"
        assert delivery.processed_at is None  # a rerun of its job processes it again
