"""The serving API on loopback: a real uvicorn, sandboxed workers, a SQLite store.

Hot swap under load, a refused version, invalid requests, the prediction log,
readiness, the form, and a crashed worker.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from modelci.deliver.modelspec import Column, ServingSpec
from modelci.serving.http import create_serving_app
from modelci.serving.launcher import Launcher
from modelci.serving.manager import ServingManager
from modelci.settings import Settings
from modelci.store import records as store
from modelci.store.db import Database, open_database
from tests.serving.conftest import (
    NUMERIC,
    FakeRegistry,
    categorical_model,
    numeric_model,
    sandboxed,
)

pytestmark = [sandboxed, pytest.mark.sandbox, pytest.mark.slow]
ROW = {name: 0.5 for name in NUMERIC}


@dataclass
class Served:
    url: str
    registry: FakeRegistry
    manager: ServingManager
    database: Database
    base: Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served(launcher: Launcher, base_dir: Path, tmp_path: Path) -> Iterator[Served]:
    base = base_dir / f"case-{os.urandom(4).hex()}"
    base.mkdir()
    registry = FakeRegistry()
    numeric_model(base / "v1")
    numeric_model(base / "v2", flip=True)
    registry.add("churn", 1, base / "v1")
    registry.add("churn", 2, base / "v2")
    registry.promote("churn", 1)
    database = open_database(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/s.db"))
    # A long poll: the tests call refresh() as a promotion would.
    manager = ServingManager(registry, launcher, sessions=database.session, poll_s=3600)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_serving_app(manager), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):  # lifespan loads the champion first
        if server.started:
            break
        time.sleep(0.1)
    assert server.started
    yield Served(f"http://127.0.0.1:{port}", registry, manager, database, base)
    server.should_exit = True
    thread.join(30)
    database.close()


def test_hot_swap_under_load_fails_no_request(served: Served) -> None:
    failures: list[str] = []
    swapped = threading.Event()
    # The swap starts once every client has had an answer: each sees both versions.
    answered = threading.Semaphore(0)
    deadline = time.monotonic() + 180  # bounds the loop on a slow machine, not a figure

    def client() -> list[int]:
        seen: list[int] = []
        after = 0
        with httpx.Client(base_url=served.url, timeout=30) as http:
            # Ends 50 requests after the swap (or at the deadline: the asserts then fail).
            while after < 50 and time.monotonic() < deadline:
                response = http.post("/models/churn/predict", json={"records": [ROW, ROW]})
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    break
                seen.append(response.json()["version"])
                if len(seen) == 1:
                    answered.release()
                after += swapped.is_set()
        return seen

    with ThreadPoolExecutor(4) as pool:
        loads = [pool.submit(client) for _ in range(4)]
        for _ in loads:
            assert answered.acquire(timeout=120), "a client got no answer before the swap"
        served.registry.promote("churn", 2)
        served.manager.refresh("churn")
        swapped.set()
        per_client = [load.result() for load in loads]
    assert failures == []
    for seen in per_client:
        assert seen[0] == 1 and seen[-1] == 2
        # Atomic: once a client saw the new version, it never saw the old again.
        assert seen == sorted(seen)
    total = sum(len(seen) for seen in per_client)
    shown = httpx.get(f"{served.url}/models/churn").json()
    assert (shown["version"], shown["state"], shown["sha"]) == (2, "serving", f"{2:040x}")
    # Every prediction is logged (a row per request), with inputs, outputs and version.
    served.manager.predictions.flush()
    with served.database.session() as session:
        logged = store.list_predictions(session, model_name="churn", limit=30_000)
    assert len(logged) == total
    assert {row.version for row in logged} == {1, 2}
    assert logged[0].inputs == {name: [0.5, 0.5] for name in NUMERIC}
    assert logged[0].outputs in ([0, 0], [1, 1])
    assert logged[0].latency_ms > 0


def test_a_failing_version_is_not_switched_to(served: Served) -> None:
    # v3 loads but its columns do not fit the model: its smoke test fails.
    spec = numeric_model(served.base / "v3")
    bad = ServingSpec(
        **{**spec.__dict__, "columns": (Column("x0", "double"),), "input_example": [{"x0": 1.0}]}
    )
    bad.write(served.base / "v3")
    served.registry.add("churn", 3, served.base / "v3")
    served.registry.promote("churn", 3)
    served.manager.refresh("churn")
    shown = httpx.get(f"{served.url}/models/churn").json()
    assert shown["version"] == 1
    assert shown["champion_version"] == 3
    assert shown["last_swap_failure"]["version"] == 3
    assert "smoke test" in shown["last_swap_failure"]["reason"]
    response = httpx.post(f"{served.url}/predict", json=ROW)
    assert (response.status_code, response.json()["version"]) == (200, 1)
    # v4 does not even start (a corrupt artifact).
    numeric_model(served.base / "v4")
    (served.base / "v4" / "model.joblib").write_bytes(b"garbage")
    served.registry.add("churn", 4, served.base / "v4")
    served.registry.promote("churn", 4)
    served.manager.refresh("churn")
    with served.database.session() as session:
        events = store.list_model_events(session, model_name="churn")
    assert [(e.version, e.action) for e in events] == [(4, "swap_failed"), (3, "swap_failed")]
    assert "did not start" in events[0].reason
    assert httpx.post(f"{served.url}/predict", json=ROW).json()["version"] == 1


def test_invalid_requests_name_the_field(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        response = http.post("/models/churn/predict", json={"records": [{**ROW, "x2": "high"}]})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "records", 0, "x2"]
        response = http.post("/models/churn/predict", json={"records": [{"x0": 1.0}]})
        assert response.status_code == 422
        assert {tuple(e["loc"]) for e in response.json()["detail"]} == {
            ("body", "records", 0, name) for name in NUMERIC[1:]
        }
        response = http.post("/models/churn/predict", content=b"{oops")
        assert response.status_code == 400
        assert "not valid JSON" in response.text
        assert http.post("/models/nope/predict", json=ROW).status_code == 404
        assert http.post("/models/churn/predict", json={"records": []}).status_code == 422
        # MLflow's format works as a drop-in.
        split = {"dataframe_split": {"columns": NUMERIC, "data": [[0.5] * 4]}}
        assert http.post("/models/churn/predict", json=split).json()["predictions"] in ([0], [1])


def test_status_readiness_form_and_docs(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        assert http.get("/readyz").json() == {"ready": True, "models": ["churn"]}
        models = http.get("/models").json()["models"]
        assert [(m["name"], m["version"], m["metrics"]) for m in models] == [
            ("churn", 1, {"accuracy": 0.9})
        ]
        assert models[0]["dropped_prediction_logs"] == 0
        page = http.get("/models/churn/form")
        assert page.status_code == 200
        assert 'name="x3"' in page.text and "/models/churn/predict" in page.text
        assert "<script src" not in page.text and "<link" not in page.text
        spec = http.get("/openapi.json").json()
        body = spec["paths"]["/models/churn/predict"]["post"]["requestBody"]
        assert "records" in body["content"]["application/json"]["examples"]
    # A second model: /predict must say which names exist; readiness waits for it.
    categorical_model(served.base / "c1")
    served.registry.add("colours", 1, served.base / "c1")
    served.manager.refresh()
    assert served.manager.not_ready() == ["colours"]
    assert httpx.get(f"{served.url}/readyz").status_code == 503
    served.registry.promote("colours", 1)
    served.manager.refresh()
    response = httpx.post(f"{served.url}/predict", json=ROW)
    assert response.status_code == 409
    assert "churn, colours" in response.text
    response = httpx.post(
        f"{served.url}/models/colours/predict", json={"colour": "pink", "size": 1}
    )
    assert response.status_code == 422
    assert "'blue', 'green', 'red'" in response.json()["detail"][0]["msg"]
    page = httpx.get(f"{served.url}/models/colours/form").text
    assert "<select" in page and "<option selected>red</option>" in page


def test_a_crashed_worker_gives_503_and_is_restarted(served: Served) -> None:
    loaded = served.manager.get("churn").current
    assert loaded is not None
    os.killpg(loaded.worker.process.pid, 9)
    statuses = []
    with httpx.Client(base_url=served.url, timeout=30) as http:
        for _ in range(600):
            response = http.post("/predict", json=ROW)
            statuses.append(response.status_code)
            if response.status_code == 200 and 503 in statuses:
                break
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert "restarted" in response.json()["detail"]
            time.sleep(0.05)
    assert 503 in statuses and statuses[-1] == 200
    current = served.manager.get("churn").current
    assert current is not None and current is not loaded
