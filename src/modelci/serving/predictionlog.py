"""Every prediction, written to the store in batches by a background thread.

Requests only append to a bounded queue; when it is full (the database is slow
or down) the prediction is dropped and counted, never waited for: logging must
not slow down or fail a prediction. One stored row per request: ``inputs`` is
the request's columns (``{column: [value per row]}``) and ``outputs`` the list of
predictions, one per row, so a 100-row request costs one insert, not 100.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["LoggedBatch", "PredictionLog"]

log = logging.getLogger(__name__)
SessionFactory = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class LoggedBatch:
    model_name: str
    version: int
    columns: dict[str, list[Any]]
    predictions: list[Any]
    latency_ms: float
    created_at: dt.datetime


class PredictionLog:
    """Call ``add`` from requests; ``start`` and ``close`` around serving."""

    def __init__(
        self,
        sessions: SessionFactory | None,
        *,
        max_queued: int = 10_000,
        batch_size: int = 1000,
        flush_s: float = 0.5,
    ) -> None:
        self._sessions = sessions
        self._queue: queue.Queue[LoggedBatch | None] = queue.Queue(maxsize=max_queued)
        self.batch_size, self.flush_s = batch_size, flush_s
        self.dropped: Counter[str] = Counter()  # requests, per model name
        self.written: Counter[str] = Counter()
        self.failed_writes = 0
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()

    def start(self) -> None:
        if self._sessions is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="modelci-predlog", daemon=True)
            self._thread.start()

    def add(self, batch: LoggedBatch) -> None:
        if self._sessions is None:
            return
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped[batch.model_name] += 1

    def flush(self, timeout_s: float = 10) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        if self._thread is None:
            return
        self._idle.clear()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)  # a marker: written up to here
        self._idle.wait(timeout_s)

    def close(self) -> None:
        self.flush()
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1)
            self._stopping = True
            thread.join(5)

    _stopping = False

    def _run(self) -> None:
        while not self._stopping:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            pending: list[LoggedBatch] = []
            marker = item is None
            # Collect for up to flush_s: one transaction per interval rather than
            # per request (each commit syncs the database's log to disk).
            deadline = time.monotonic() + self.flush_s
            while item is not None:
                pending.append(item)
                if len(pending) >= self.batch_size:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                marker = item is None
            if pending:
                self._write(pending)
            if marker:
                self._idle.set()

    def _write(self, batches: list[LoggedBatch]) -> None:
        from modelci.store import records as store

        rows = [_row(batch) for batch in batches]
        assert self._sessions is not None
        try:
            with self._sessions() as session:
                store.log_predictions(session, rows=rows)
        except Exception:
            self.failed_writes += 1
            for batch in batches:
                self.dropped[batch.model_name] += 1
            log.exception("writing %d predictions to the store failed; they are dropped", len(rows))
            return
        for batch in batches:
            self.written[batch.model_name] += 1


def _row(batch: LoggedBatch) -> dict[str, Any]:
    return {
        "model_name": batch.model_name,
        "version": batch.version,
        "inputs": batch.columns,
        "outputs": batch.predictions,
        "latency_ms": batch.latency_ms,
        "created_at": batch.created_at,
    }
