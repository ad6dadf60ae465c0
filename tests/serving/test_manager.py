"""The manager's readiness and its watch over workers, with real sandboxed workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from modelci.serving.launcher import Launcher
from modelci.serving.manager import ServingManager
from tests.serving.conftest import NUMERIC, FakeRegistry, numeric_model, sandboxed

pytestmark = [sandboxed, pytest.mark.sandbox, pytest.mark.slow]


def wait_until(condition: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class SlowRegistry(FakeRegistry):
    """MLflow's first start on a new store takes seconds: reads block until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def model_names(self) -> list[str]:
        self.release.wait(60)
        return super().model_names()


def test_not_ready_until_the_registry_is_read_and_every_champion_answers(
    launcher: Launcher, base_dir: Path
) -> None:
    registry = SlowRegistry()
    numeric_model(base_dir / "ready-v1")
    registry.add("churn", 1, base_dir / "ready-v1")
    registry.promote("churn", 1)
    # A poll interval far beyond the test: the first look must not wait for it.
    manager = ServingManager(registry, launcher, poll_s=3600)
    manager.start()
    try:
        # Nothing is served yet because nothing was looked at, not because
        # there is nothing to serve: not ready.
        readiness = manager.readiness()
        assert readiness["ready"] is False, readiness
        registry.release.set()
        wait_until(lambda: manager.readiness()["ready"])
        service = manager.get("churn")
        assert service.current is not None and service.current.version.version == 1
        assert manager.readiness() == {"ready": True, "models": ["churn"]}
    finally:
        manager.close()


def test_a_killed_worker_is_restarted_before_any_request(
    launcher: Launcher, base_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FakeRegistry()
    numeric_model(base_dir / "watch-v1")
    registry.add("churn", 1, base_dir / "watch-v1")
    registry.promote("churn", 1)
    manager = ServingManager(registry, launcher, poll_s=3600, watch_s=0.2)
    manager.start(wait=True)
    try:
        service = manager.get("churn")
        killed = service.current
        assert killed is not None and manager.readiness()["ready"]
        os.killpg(killed.worker.process.pid, signal.SIGKILL)
        # No request arrives: the watch notices the exit and starts a new worker.
        wait_until(lambda: service.current is not killed and manager.readiness()["ready"])
        restarted = service.current
        assert restarted is not None and not restarted.worker.exited()
        assert restarted.version.version == 1
        assert any("with no request in flight" in r.getMessage() for r in caplog.records)
        row = {name: 0.5 for name in NUMERIC}
        assert len(service.predict_batch({"records": [row]}).predictions) == 1
    finally:
        manager.close()
