"""All served models: one :class:`ModelService` per registered model, kept current
by polling the registry, plus the shared prediction log.

Build it with :func:`serving_manager` (settings, registry, database) or by hand
(tests, the benchmark), then ``start()``; ``refresh()`` after a promotion makes
the switch without waiting for the next poll.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelci.deliver.modelspec import ModelRegistry
from modelci.errors import ModelNotFound
from modelci.serving.launcher import Launcher, launcher_for
from modelci.serving.predictionlog import PredictionLog, SessionFactory
from modelci.serving.service import ModelService
from modelci.settings import Settings

__all__ = ["ServingManager", "serving_manager"]

log = logging.getLogger(__name__)


class ServingManager:
    def __init__(
        self,
        registry: ModelRegistry,
        launcher: Launcher,
        *,
        sessions: SessionFactory | None = None,
        poll_s: float = 5.0,
        watch_s: float = 1.0,
        max_rows: int = 10_000,
        log_queue: int = 10_000,
        log_queue_bytes: int = 64 << 20,
        retention_days: float = 0,
    ) -> None:
        self.registry = registry
        self.launcher = launcher
        self.sessions = sessions
        self.poll_s, self.watch_s = poll_s, watch_s
        self.max_rows = max_rows
        self.predictions = PredictionLog(
            sessions,
            max_queued=log_queue,
            max_bytes=log_queue_bytes,
            retention_days=retention_days,
        )
        self.services: dict[str, ModelService] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set once the registry has been read and every champion tried: until
        # then an empty ``services`` means "not looked yet", not "nothing to serve".
        self._synced = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="modelci-swap")

    def start(self, *, wait: bool = False) -> None:
        """Start polling the registry (at once) and watching workers; with wait, load
        every champion before returning."""
        self.predictions.start()
        if wait:
            self.refresh()
        for target, name in ((self._poll, "poll"), (self._watch, "watch")):
            thread = threading.Thread(target=target, name=f"modelci-serving-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop polling, stop every worker, then write the queued predictions."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)
        for service in list(self.services.values()):
            service.close()
        self.predictions.close()

    def refresh(self, name: str | None = None) -> None:
        """Look at the registry now and swap what changed (blocks until done)."""
        names = [name] if name is not None else self._names()
        if names is None:
            return
        try:
            futures = [self._pool.submit(self._service(n).refresh) for n in names]
        except RuntimeError:  # closing
            return
        failed = False
        for future in futures:
            try:
                future.result()
            except Exception:
                failed = True
                log.exception("refreshing a served model failed")
        if name is None and not failed:
            self._synced.set()

    def _names(self) -> list[str] | None:
        try:
            return sorted(self.registry.model_names())
        except Exception:
            log.exception("reading the model registry failed")
            return None

    def _service(self, name: str) -> ModelService:
        with self._lock:
            service = self.services.get(name)
            if service is None:
                service = ModelService(
                    name,
                    self.registry,
                    self.launcher.start,
                    predictions=self.predictions,
                    record_event=self._record_event if self.sessions else None,
                    max_rows=self.max_rows,
                )
                self.services[name] = service
            return service

    def _poll(self) -> None:
        # The first look is at once: readiness waits for it.
        while True:
            self.refresh()
            if self._stop.wait(self.poll_s):
                return

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_s):
            for service in list(self.services.values()):
                try:
                    service.watch()
                except Exception:
                    log.exception("watching the worker of %s failed", service.name)

    def _record_event(self, **event: Any) -> None:
        from modelci.store import records as store

        assert self.sessions is not None
        with self.sessions() as session:
            store.record_model_event(session, **event)

    def get(self, name: str) -> ModelService:
        service = self.services.get(name)
        if service is None:
            raise ModelNotFound(
                f"no served model is named {name!r}; served: {', '.join(self.services) or 'none'}"
            )
        return service

    def only(self) -> ModelService:
        """The single served model, for ``POST /predict``."""
        if len(self.services) == 1:
            return next(iter(self.services.values()))
        raise ModelNotFound(
            "POST /predict needs exactly one served model; "
            + (
                f"use /models/NAME/predict with NAME one of: {', '.join(sorted(self.services))}"
                if self.services
                else "none is served yet"
            )
        )

    def status(self, name: str) -> dict[str, Any]:
        return {
            **self.get(name).status(dropped=self.predictions.dropped[name]),
            "logged_predictions": self.predictions.written[name],
        }

    def not_ready(self) -> list[str]:
        """Champions not answering yet: not loaded, failed their smoke test, or their
        worker died; every model while the registry has not been read yet."""
        if not self._synced.is_set():
            return ["(the model registry has not been read yet)"]
        return [name for name, service in sorted(self.services.items()) if not service.ready()]

    def readiness(self) -> dict[str, Any]:
        """``/readyz``'s answer: ready only once every champion answers its smoke test."""
        missing = self.not_ready()
        if missing:
            reasons = {
                name: self.services[name].why_not_ready()
                for name in missing
                if name in self.services
            }
            return {"ready": False, "not_loaded": missing, "reasons": reasons}
        return {
            "ready": True,
            "models": sorted(n for n, s in self.services.items() if s.current is not None),
        }


def serving_manager(
    settings: Settings,
    registry: ModelRegistry,
    *,
    sessions: SessionFactory | None,
    unsafe: bool = False,
) -> ServingManager:
    """The manager ``modelci serve`` runs, from the settings."""
    import uv

    from modelci.runner.environments import EnvironmentManager
    from modelci.runner.sandbox import make_sandbox

    sandbox = make_sandbox(unsafe=unsafe, uid_base=settings.serving_uid_base)
    environments = EnvironmentManager(
        envs_dir=settings.envs_dir,
        python=settings.python,
        uv_bin=uv.find_uv_bin(),
        resolution_ttl_s=settings.env_resolution_ttl_s,
    )
    launcher = launcher_for(
        settings,
        "serving",
        sandbox=sandbox,
        environments=environments,
        request_timeout_s=settings.serving_request_timeout_s,
    )
    return ServingManager(
        registry,
        launcher,
        sessions=sessions,
        poll_s=settings.serving_poll_s,
        max_rows=settings.serving_max_rows,
        log_queue=settings.serving_log_queue,
        log_queue_bytes=int(settings.serving_log_queue_mb * (1 << 20)),
        retention_days=settings.prediction_retention_days,
    )
