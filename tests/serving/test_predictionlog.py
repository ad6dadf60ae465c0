"""The prediction log: batched writes to a real store, drops counted when it falls behind."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelci.serving.predictionlog import LoggedBatch, PredictionLog
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import open_database


def batch(version: int = 1, rows: int = 2) -> LoggedBatch:
    return LoggedBatch(
        "churn",
        version,
        {"x": [float(i) for i in range(rows)], "colour": ["red"] * rows},
        [i % 2 for i in range(rows)],
        1.5,
        dt.datetime.now(dt.UTC),
    )


def test_batches_are_written_with_inputs_outputs_and_version(tmp_path: Path) -> None:
    database = open_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/s.db"))
    log = PredictionLog(database.session, flush_s=0.05)
    log.start()
    for version in (1, 1, 2):
        log.add(batch(version))
    log.close()
    with database.session() as session:
        rows = store.list_predictions(session, model_name="churn")
    assert [row.version for row in rows] == [2, 1, 1]
    assert rows[0].inputs == {"x": [0.0, 1.0], "colour": ["red", "red"]}
    assert rows[0].outputs == [0, 1]
    assert rows[0].latency_ms == 1.5
    assert log.written["churn"] == 3
    assert log.dropped["churn"] == 0
    database.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    database = open_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/s.db"))
    release = threading.Event()

    @contextmanager
    def slow_session() -> Iterator[Any]:
        release.wait(30)  # the store is stuck: the queue fills up
        with database.session() as session:
            yield session

    log = PredictionLog(slow_session, max_queued=3, batch_size=1, flush_s=0.01)
    log.start()
    for _ in range(20):
        log.add(batch())  # never blocks
    assert log.dropped["churn"] >= 16
    release.set()
    log.close()
    assert log.written["churn"] + log.dropped["churn"] == 20
    with database.session() as session:
        assert len(store.list_predictions(session, model_name="churn")) == log.written["churn"]
    database.close()


def test_without_a_store_nothing_is_queued() -> None:
    log = PredictionLog(None)
    log.start()
    log.add(batch())
    log.close()
    assert log.written["churn"] == 0 and log.dropped["churn"] == 0


def stuck_store(database: Any) -> tuple[threading.Event, threading.Event, Any]:
    """A session factory that blocks (a paused database) until released."""
    entered, release = threading.Event(), threading.Event()

    @contextmanager
    def session() -> Iterator[Any]:
        entered.set()
        release.wait(30)
        with database.session() as inner:
            yield inner

    return entered, release, session


def test_the_queue_is_bounded_in_bytes_not_entries(tmp_path: Path) -> None:
    database = open_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/s.db"))
    entered, release, session = stuck_store(database)
    # Entries are plentiful, bytes are not: 1 MB holds a few 2,000-row requests.
    log = PredictionLog(session, max_bytes=1 << 20, max_queued=10_000, batch_size=1)
    log.start()
    big = batch(rows=2_000)
    size = len(orjson.dumps([big.columns, big.predictions]))
    log.add(big)
    assert entered.wait(10)  # the writer holds the first one, stuck in the store
    for _ in range(199):
        log.add(big)
        assert log.status()["queued_bytes"] <= 1 << 20
    held = log.status()["queued"]
    assert 1 < held <= (1 << 20) // size
    assert log.dropped["churn"] == 200 - held
    assert log.status()["peak_bytes"] <= 1 << 20
    release.set()
    log.close()
    assert log.written["churn"] == held
    with database.session() as session_:
        assert len(store.list_predictions(session_, model_name="churn", limit=1000)) == held
    database.close()


def test_drops_are_warned_at_most_once_a_minute_and_never_reset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = open_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/s.db"))
    entered, release, session = stuck_store(database)
    log = PredictionLog(session, max_queued=1, batch_size=1)
    log.start()
    log.add(batch())
    assert entered.wait(10)
    with caplog.at_level(logging.WARNING, logger="modelci.serving.predictionlog"):
        for _ in range(50):
            log.add(batch())
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "1 of 'churn'" in warnings[0] and "queue is full" in warnings[0]
    assert log.dropped["churn"] == 50 and log.status()["dropped"] == 50
    release.set()
    log.close()
    assert log.status()["dropped"] == 50 and log.written["churn"] == 1
    database.close()


def test_a_failed_write_is_retried_not_dropped(tmp_path: Path) -> None:
    database = open_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/s.db"))
    failures = [RuntimeError("connection refused"), RuntimeError("connection refused")]

    @contextmanager
    def flaky() -> Iterator[Any]:
        if failures:
            raise failures.pop()
        with database.session() as session:
            yield session

    log = PredictionLog(flaky, flush_s=0.01)
    log.start()
    for _ in range(5):
        log.add(batch())
    log.close()
    assert log.failed_writes == 2
    assert log.written["churn"] == 5 and log.dropped["churn"] == 0
    database.close()


def test_retention_deletes_old_predictions(tmp_path: Path) -> None:
    database = open_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/s.db"))
    now = dt.datetime.now(dt.UTC)
    with database.session() as session:
        store.log_predictions(
            session,
            rows=[
                {
                    "model_name": name,
                    "version": 1,
                    "inputs": {"x": [1]},
                    "outputs": [0],
                    "latency_ms": 1.0,
                    "created_at": now - dt.timedelta(days=age),
                }
                for name, age in (("churn", 40), ("churn", 31), ("churn", 2), ("other", 45))
            ],
        )
    log = PredictionLog(database.session, retention_days=30, cleanup_every_s=0.05)
    log.start()
    deadline = time.monotonic() + 20
    while log.status()["deleted_by_retention"] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    assert log.status()["deleted_by_retention"] == 3
    with database.session() as session:
        left = store.list_predictions(session, model_name="churn")
        assert [round((now - r.created_at).total_seconds() / 86400) for r in left] == [2]
        assert store.list_predictions(session, model_name="other") == []
    database.close()
