"""The prediction log: batched writes to a real store, drops counted when it falls behind."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
