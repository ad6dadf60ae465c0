"""Feedback: predict answers a request_id; the true labels posted for it are kept
(PostgreSQL) and checked against the logged prediction's rows."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from modelci.errors import BadRequest
from modelci.serving.feedback import parse_feedback
from modelci.serving.http import create_serving_app
from modelci.serving.launcher import Launcher
from modelci.serving.manager import ServingManager
from modelci.settings import Settings
from modelci.store import monitoring
from modelci.store.db import Database, open_database
from tests.serving.conftest import FakeRegistry, numeric_model
from tests.serving.test_http import _free_port


@pytest.fixture
def server(
    launcher: Launcher, base_dir: Path, tmp_path: Path, postgres_url: str
) -> Iterator[tuple[str, Database, str]]:
    name = f"fb-{os.urandom(4).hex()}"
    numeric_model(base_dir / name)
    registry = FakeRegistry()
    registry.add(name, 1, base_dir / name)
    registry.promote(name, 1)
    database = open_database(Settings(data_dir=tmp_path, database_url=postgres_url))
    manager = ServingManager(registry, launcher, sessions=database.session, poll_s=3600)
    port = _free_port()
    app = create_serving_app(manager)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(600):
        if uv.started:
            break
        time.sleep(0.1)
    assert uv.started
    yield f"http://127.0.0.1:{port}", database, name
    uv.should_exit = True
    thread.join(30)
    database.close()


def _logged(database: Database, name: str, request_id: str) -> Any:
    for _ in range(100):  # the log is written in batches off the request path
        with database.session() as session:
            row = monitoring.prediction_by_request(session, model_name=name, request_id=request_id)
            if row is not None:
                return row.outputs
        time.sleep(0.1)
    raise AssertionError(f"request {request_id} never reached the prediction log")


def test_feedback_joins_the_logged_request_and_is_checked_against_its_rows(
    server: tuple[str, Database, str],
) -> None:
    url, database, name = server
    row = {"x0": 1.0, "x1": 2.0, "x2": 0.5, "x3": -1.0}
    rows = {"records": [row, {**row, "x0": -3.0}]}
    with httpx.Client(base_url=url, timeout=30) as client:
        answer = client.post(f"/models/{name}/predict", json=rows)
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        assert len(request_id) == 32 and answer.headers["x-request-id"] == request_id
        # Sent at once, before the log's next write: it waits for the prediction, so the
        # label count is still checked (two rows were predicted, one label sent).
        sent = client.post(f"/models/{name}/feedback", json={"request_id": request_id, "label": 1})
        assert sent.status_code == 422, sent.text
        detail = sent.json()["detail"][0]
        assert detail["loc"] == ["body", "labels"] and "predicted 2 rows" in detail["msg"]
        assert len(_logged(database, name, request_id)) == 2

        ok = client.post(
            f"/models/{name}/feedback", json={"request_id": request_id, "labels": [1, 0]}
        )
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"request_id": request_id, "labels": 2, "matched": True}
        again = client.post(
            f"/models/{name}/feedback", json={"request_id": request_id, "labels": [0, 0]}
        )
        assert again.status_code == 200  # the latest feedback wins

        # Feedback for a request that never reaches the log is kept, not lost.
        early = "f" * 32
        pending = client.post(f"/models/{name}/feedback", json={"request_id": early, "label": "x"})
        assert pending.status_code == 202 and pending.json()["matched"] is False

        missing = client.post("/models/nope/feedback", json={"request_id": early, "label": 1})
        assert missing.status_code == 404

    with database.session() as session:
        pairs = monitoring.labelled_predictions(session, model_name=name, first_id=0, last_id=2**62)
        assert [(p.request_id, f.labels) for p, f in pairs] == [(request_id, [0, 0])]
        kept = session.scalars(
            # By model too: the database outlives a run, and another run sent this id.
            select(monitoring.FeedbackRecord).where(
                monitoring.FeedbackRecord.model_name == name,
                monitoring.FeedbackRecord.request_id == early,
            )
        ).one()
        assert kept.model_name == name and kept.labels == ["x"]


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        (b"{", ["body"], "not JSON"),
        (b"[1]", ["body"], "send an object"),
        (b'{"request_id": "abc", "label": 1}', ["body", "request_id"], "32 hex"),
        (b'{"request_id": "' + b"a" * 32 + b'"}', ["body", "labels"], "either label"),
        (
            b'{"request_id": "' + b"a" * 32 + b'", "label": 1, "labels": [1]}',
            ["body", "labels"],
            "either label",
        ),
        (b'{"request_id": "' + b"a" * 32 + b'", "labels": []}', ["body", "labels"], "non-empty"),
        (b'{"request_id": "' + b"a" * 32 + b'", "labels": [{}]}', ["body", "labels", 0], "number"),
        (b'{"request_id": "' + b"a" * 32 + b'", "lable": 1}', ["body", "lable"], "unknown field"),
    ],
)
def test_a_bad_feedback_body_names_the_field_and_the_fix(
    body: bytes, loc: list[Any], words: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_feedback(body)
    error = caught.value.errors[0]
    assert error["loc"] == loc and words in error["msg"]
