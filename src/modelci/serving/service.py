"""One served model: its champion's worker, hot swaps and restarts.

A request takes the current :class:`Loaded` (one reference read, under no lock
held for the prediction) and holds it until its answer is in; a swap replaces
that reference atomically after the new version has loaded and answered its
input example, then stops the old worker once its last request has finished.
So requests in flight finish on the old version and none fails during the
switch. A version that does not start or fails its smoke test is not served,
is recorded as ``swap_failed`` and is not retried until the champion moves
again (or ``refresh(force=True)``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from modelci.deliver.modelspec import ModelRegistry, ModelVersion, ServingSpec
from modelci.errors import ModelUnavailable, WorkerFailed
from modelci.serving.predictionlog import LoggedBatch, PredictionLog
from modelci.serving.validation import Batch, Validator
from modelci.serving.worker import ModelWorker

__all__ = ["Loaded", "ModelService", "Prediction", "StartWorker", "SwapFailure"]

log = logging.getLogger(__name__)
StartWorker = Callable[[str, int, Any, ServingSpec], ModelWorker]
RecordEvent = Callable[..., None]
Decode = Callable[[Validator, ServingSpec], Batch]
PARSE_IN_THREAD_BYTES = 256 << 10


@dataclass
class Loaded:
    """A version with a running worker; counts the requests using it."""

    version: ModelVersion
    spec: ServingSpec
    validator: Validator
    worker: ModelWorker
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    # The smoke test's answer: what the model returns (the OIP metadata's output type).
    example_output: list[Any] | None = None
    inflight: int = 0
    retired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self) -> bool:
        with self.lock:
            if self.retired:
                return False
            self.inflight += 1
            return True

    def release(self) -> None:
        with self.lock:
            self.inflight -= 1
            stop = self.retired and self.inflight == 0
        if stop:
            self.worker.stop()

    def retire(self) -> None:
        with self.lock:
            self.retired = True
            stop = self.inflight == 0
        if stop:
            self.worker.stop()


@dataclass(frozen=True)
class SwapFailure:
    version: int
    reason: str
    at: dt.datetime


@dataclass(frozen=True)
class Prediction:
    predictions: list[Any]
    version: int
    latency_ms: float
    # Names the request in the prediction log: feedback (the true labels) refers to it.
    request_id: str


class ModelService:
    """Serves one registered model's champion."""

    def __init__(
        self,
        name: str,
        registry: ModelRegistry,
        start_worker: StartWorker,
        *,
        predictions: PredictionLog | None = None,
        record_event: RecordEvent | None = None,
        max_rows: int = 10_000,
    ) -> None:
        self.name = name
        self.registry = registry
        self._start_worker = start_worker
        self._log = predictions
        self._record_event = record_event
        self.max_rows = max_rows
        self.current: Loaded | None = None
        self.last_failure: SwapFailure | None = None
        self.champion_version: int | None = None
        self._swap_lock = threading.Lock()  # one swap or restart at a time
        self._restarting = False
        # Workers are started only from this thread, which lives as long as the
        # service: bwrap's --die-with-parent fires when the *thread* that started
        # it exits, so a worker started from a passing thread would die with it.
        self._starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"modelci-{name}")

    # --- requests -----------------------------------------------------------

    def predict(self, body: bytes) -> Prediction:
        """Validate and predict a raw request body (BadRequest, PredictionFailed,
        ModelUnavailable)."""
        loaded = self._acquire()
        try:
            batch = loaded.validator.parse(body)
            return self._predict(loaded, batch)
        finally:
            loaded.release()

    async def predict_async(self, body: bytes, decode: Decode | None = None) -> Prediction:
        """``predict`` for the event loop. A small body is validated in the loop (a
        thread hop would cost more); a big one in a thread, so that parsing megabytes
        does not hold up every other request meanwhile. ``decode`` reads another
        protocol's body (the Open Inference Protocol's) with the served version's
        validator and spec."""
        loaded = self._acquire()
        try:
            if decode is None:
                parse = functools.partial(loaded.validator.parse, body)
            else:
                parse = functools.partial(decode, loaded.validator, loaded.spec)
            if len(body) > PARSE_IN_THREAD_BYTES:
                batch = await asyncio.to_thread(parse)
            else:
                batch = parse()
            started = time.perf_counter()
            try:
                outputs = await loaded.worker.predict_async(batch.columns, batch.rows)
            except WorkerFailed as exc:
                raise self._broken(loaded, exc) from None
            return self._done(loaded, batch, outputs, started)
        finally:
            loaded.release()

    def predict_batch(self, payload: Any) -> Prediction:
        loaded = self._acquire()
        try:
            return self._predict(loaded, loaded.validator.validate(payload))
        finally:
            loaded.release()

    def _acquire(self) -> Loaded:
        for _ in range(100):
            loaded = self.current
            if loaded is None:
                raise ModelUnavailable(self._why_unavailable())
            if loaded.acquire():
                return loaded
            # Retired between the read and the acquire: the new one is in place.
        raise ModelUnavailable(f"model {self.name!r} is switching versions; retry")

    def _predict(self, loaded: Loaded, batch: Batch) -> Prediction:
        started = time.perf_counter()
        try:
            outputs = loaded.worker.predict(batch.columns, batch.rows)
        except WorkerFailed as exc:
            raise self._broken(loaded, exc) from None
        return self._done(loaded, batch, outputs, started)

    def _broken(self, loaded: Loaded, exc: WorkerFailed) -> ModelUnavailable:
        self._restart_later(loaded)
        return ModelUnavailable(
            f"the worker of {self.name!r} v{loaded.version.version} failed ({exc.message}); "
            "it is being restarted, retry in a few seconds"
        )

    def _done(self, loaded: Loaded, batch: Batch, outputs: list[Any], started: float) -> Prediction:
        latency = (time.perf_counter() - started) * 1000
        request_id = uuid.uuid4().hex
        if self._log is not None:
            self._log.add(
                LoggedBatch(
                    self.name,
                    loaded.version.version,
                    batch.columns,
                    outputs,
                    latency,
                    dt.datetime.now(dt.UTC),
                    request_id,
                )
            )
        return Prediction(outputs, loaded.version.version, latency, request_id)

    def _why_unavailable(self) -> str:
        if self.champion_version is None:
            return f"model {self.name!r} has no champion version yet"
        failure = self.last_failure
        if failure is not None and failure.version == self.champion_version:
            return f"model {self.name!r} v{failure.version} could not be served: {failure.reason}"
        return f"model {self.name!r} v{self.champion_version} is still loading; retry shortly"

    # --- swaps --------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> bool:
        """Load the registry's champion if it is not the one served; True if served now.
        Blocks until the swap is done (or refused); callable from any thread."""
        return self._starter.submit(self._refresh, force).result()

    def _refresh(self, force: bool) -> bool:
        champion = self.registry.champion(self.name)
        if champion is None:
            self.champion_version = None
            return False
        self.champion_version = champion.version
        current = self.current
        if current is not None and current.version.version == champion.version:
            return False
        failure = self.last_failure
        if not force and failure is not None and failure.version == champion.version:
            return False
        with self._swap_lock:
            current = self.current
            if current is not None and current.version.version == champion.version:
                return False
            return self._swap_to(champion)

    def _swap_to(self, version: ModelVersion) -> bool:
        try:
            spec = ServingSpec.read(version.model_dir)
            validator = Validator(spec.columns, max_rows=self.max_rows)
            worker = self._start_worker(self.name, version.version, version.model_dir, spec)
        except Exception as exc:
            self._failed(version, f"it did not start: {exc}")
            return False
        loaded = Loaded(version, spec, validator, worker)
        try:
            self._smoke_test(loaded)
        except Exception as exc:
            worker.stop()
            self._failed(version, f"it failed its smoke test on the input example: {exc}")
            return False
        old, self.current = self.current, loaded
        if old is not None:
            old.retire()
        log.info(
            "serving %s v%s (was %s)",
            self.name,
            version.version,
            None if old is None else old.version.version,
        )
        return True

    def _smoke_test(self, loaded: Loaded) -> None:
        if not loaded.spec.input_example:
            raise ValueError("the model has no input example to check it with")
        batch = loaded.validator.validate({"records": loaded.spec.input_example})
        loaded.example_output = loaded.worker.predict(batch.columns, batch.rows)

    def _failed(self, version: ModelVersion, reason: str) -> None:
        self.last_failure = SwapFailure(version.version, reason, dt.datetime.now(dt.UTC))
        log.error("not serving %s v%s: %s", self.name, version.version, reason)
        if self._record_event is not None:
            try:
                self._record_event(
                    model_name=self.name,
                    version=version.version,
                    action="swap_failed",
                    actor="modelci serve",
                    reason=reason[:4000],
                    sha=version.sha,
                )
            except Exception:
                log.exception("recording the failed swap of %s v%s", self.name, version.version)

    def _restart_later(self, broken: Loaded) -> None:
        with broken.lock:
            if self._restarting:
                return
            self._restarting = True
        try:
            self._starter.submit(self._restart, broken)
        except RuntimeError:  # closing: nothing is restarted any more
            self._restarting = False

    def _restart(self, broken: Loaded) -> None:
        try:
            with self._swap_lock:
                if self.current is not broken:
                    return
                log.warning("restarting the worker of %s v%s", self.name, broken.version.version)
                if not self._swap_to(broken.version):
                    # Nothing better to serve: keep the entry so that status shows it.
                    self.current = None
                    broken.retire()
        finally:
            self._restarting = False

    def watch(self) -> bool:
        """Restart the worker now if it has died; True if a restart was started.

        Called periodically by the manager, so a worker killed between requests
        (the OOM killer, an operator) is replaced before a request finds it gone.
        """
        loaded = self.current
        if loaded is None or loaded.retired or not loaded.worker.exited():
            return False
        log.warning(
            "the worker of %s v%s exited (code %s) with no request in flight",
            self.name,
            loaded.version.version,
            loaded.worker.process.poll(),
        )
        self._restart_later(loaded)
        return True

    def ready(self) -> bool:
        """A version passed its smoke test and its worker runs."""
        loaded = self.current
        return loaded is not None and not loaded.worker.exited()

    def why_not_ready(self) -> str:
        loaded = self.current
        if loaded is not None and loaded.worker.exited():
            return f"the worker of v{loaded.version.version} exited; it is being restarted"
        return self._why_unavailable()

    def close(self) -> None:
        self._starter.shutdown(wait=True)
        with self._swap_lock:
            old, self.current = self.current, None
        if old is not None:
            old.retire()

    # --- status -------------------------------------------------------------

    def status(self, dropped: int = 0) -> dict[str, Any]:
        loaded = self.current
        version = loaded.version if loaded else None
        failure = self.last_failure
        return {
            "name": self.name,
            "state": "serving" if loaded else "unavailable",
            "version": version.version if version else None,
            "champion_version": self.champion_version,
            "sha": version.sha if version else None,
            "repository": version.repository if version else None,
            "run_id": version.run_id if version else None,
            "metrics": dict(version.metrics) if version else {},
            "trained_at": version.trained_at.isoformat()
            if version and version.trained_at
            else None,
            "loaded_at": loaded.loaded_at.isoformat() if loaded else None,
            "columns": [
                {
                    "name": c.name,
                    "type": c.type,
                    "required": c.required,
                    "categories": list(c.categories) if c.categories is not None else None,
                }
                for c in loaded.spec.columns
            ]
            if loaded
            else [],
            "last_swap_failure": None
            if failure is None
            else {
                "version": failure.version,
                "reason": failure.reason,
                "at": failure.at.isoformat(),
            },
            "dropped_prediction_logs": dropped,
        }
