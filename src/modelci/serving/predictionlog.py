"""Every prediction, written to the store in batches by a background thread.

Requests only append to a queue bounded in bytes (``max_bytes``, and in
entries): when it is full (the database is slow, paused or down) the
prediction is dropped and counted, never waited for: logging must not slow
down or fail a prediction. Each entry is kept as its JSON encoding, not as
the request's Python objects, so the bound is the memory it really holds (a
float in a Python list costs about 32 bytes, in JSON about 18) and a backlog
is a few large blocks the allocator gives back once written. One stored row per
request: ``inputs`` is the request's columns (``{column: [value per row]}``)
and ``outputs`` the list of predictions, one per row, so a 100-row request
costs one insert, not 100.

A batch whose write fails is retried with a growing pause (the database may
come back) and dropped, counted, after ``max_attempts``. Drops are logged as a
warning at most once per ``warn_every_s`` and the counters only grow while the
process runs (``status()``, ``GET /models/{name}``, and a line at shutdown).
Rows older than ``retention_days`` are deleted every ``cleanup_every_s``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["LoggedBatch", "PredictionLog"]

log = logging.getLogger(__name__)
SessionFactory = Callable[[], AbstractContextManager[Any]]
# What an entry costs beyond its JSON: the object, its fields and the deque slot.
_ENTRY_OVERHEAD = 400
_DELETE_CHUNK = 10_000
_BATCH_BYTES = 4 << 20
# A backlog this large, once written, is handed back to the system (malloc_trim):
# glibc keeps freed memory in its arenas otherwise, and the server stays at its peak.
_TRIM_AFTER_BYTES = 8 << 20


@dataclass(frozen=True)
class LoggedBatch:
    model_name: str
    version: int
    columns: dict[str, list[Any]]
    predictions: list[Any]
    latency_ms: float
    created_at: dt.datetime
    request_id: str | None = None


@dataclass(frozen=True)
class _Entry:
    model_name: str
    version: int
    latency_ms: float
    created_at: dt.datetime
    inputs: bytes  # JSON
    outputs: bytes  # JSON
    request_id: str | None

    @property
    def size(self) -> int:
        return len(self.inputs) + len(self.outputs) + _ENTRY_OVERHEAD


class PredictionLog:
    """Call ``add`` from requests; ``start`` and ``close`` around serving."""

    def __init__(
        self,
        sessions: SessionFactory | None,
        *,
        max_bytes: int = 64 << 20,
        max_queued: int = 10_000,
        batch_size: int = 1000,
        flush_s: float = 0.5,
        max_attempts: int = 8,
        retention_days: float = 0,
        cleanup_every_s: float = 3600,
        warn_every_s: float = 60,
    ) -> None:
        self._sessions = sessions
        self.max_bytes, self.max_queued = max_bytes, max_queued
        self.batch_size, self.flush_s = batch_size, flush_s
        self.max_attempts = max_attempts
        self.retention_days, self.cleanup_every_s = retention_days, cleanup_every_s
        self.warn_every_s = warn_every_s
        self.dropped: Counter[str] = Counter()  # requests, per model name
        self.written: Counter[str] = Counter()
        self.failed_writes = 0
        self.deleted = 0  # rows removed by the retention
        self.peak_bytes = 0
        self._backlog_peak = 0  # since the queue was last empty
        self._entries: deque[_Entry] = deque()
        # Bytes held: queued, plus the batch being written (it is still in memory).
        self._held_bytes = 0
        self._held = 0
        self._added = 0  # sequence numbers, for flush: entries accepted ...
        self._done = 0  # ... and entries written or dropped since
        self._cond = threading.Condition()
        self._stopping = False
        self._flushing = 0
        self._thread: threading.Thread | None = None
        self._unwarned: Counter[str] = Counter()
        self._warned_at: float | None = None

    def start(self) -> None:
        if self._sessions is not None and self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="modelci-predlog", daemon=True)
            self._thread.start()

    def add(self, batch: LoggedBatch) -> None:
        if self._sessions is None:
            return
        try:
            inputs = orjson.dumps(batch.columns)
            outputs = orjson.dumps(batch.predictions)
        except TypeError:
            self._drop(batch.model_name, 1, "it cannot be encoded as JSON")
            return
        entry = _Entry(
            batch.model_name,
            batch.version,
            batch.latency_ms,
            batch.created_at,
            inputs,
            outputs,
            batch.request_id,
        )
        with self._cond:
            if (
                self._held_bytes + entry.size > self.max_bytes
                or self._held >= self.max_queued
                or self._stopping
            ):
                full = True
            else:
                full = False
                self._entries.append(entry)
                self._held_bytes += entry.size
                self._held += 1
                self._added += 1
                self.peak_bytes = max(self.peak_bytes, self._held_bytes)
                self._backlog_peak = max(self._backlog_peak, self._held_bytes)
                self._cond.notify_all()
        if full:
            self._drop(batch.model_name, 1, "the queue is full: the database is slow or down")

    def flush(self, timeout_s: float = 10) -> bool:
        """Wait until everything accepted so far is written or dropped (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._added
            self._flushing += 1  # the writer stops collecting and writes at once
            self._cond.notify_all()
            try:
                while self._done < target and self._thread is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout_s: float = 30) -> None:
        """Write what is queued (up to ``timeout_s``), then stop; the rest is dropped."""
        flushed = self.flush(timeout_s)
        with self._cond:
            self._stopping = True
            left = list(self._entries)
            self._entries.clear()
            self._cond.notify_all()
        for entry in left:
            self._drop(entry.model_name, 1, "the server stopped before it was written")
        with self._cond:
            self._done += len(left)
            self._held -= len(left)
            self._held_bytes -= sum(entry.size for entry in left)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)
        if self._sessions is not None:
            log.info(
                "prediction log: %d written, %d dropped%s",
                sum(self.written.values()),
                sum(self.dropped.values()),
                "" if flushed else f" (the store did not keep up within {timeout_s:g} s)",
            )

    def status(self) -> dict[str, Any]:
        with self._cond:
            return {
                "queued": self._held,
                "queued_bytes": self._held_bytes,
                "max_bytes": self.max_bytes,
                "peak_bytes": self.peak_bytes,
                "written": sum(self.written.values()),
                "dropped": sum(self.dropped.values()),
                "failed_writes": self.failed_writes,
                "deleted_by_retention": self.deleted,
            }

    # --- the writer thread --------------------------------------------------

    def _drop(self, model_name: str, count: int, why: str) -> None:
        now = time.monotonic()
        with self._cond:
            self.dropped[model_name] += count
            self._unwarned[model_name] += count
            if self._warned_at is not None and now - self._warned_at < self.warn_every_s:
                return
            self._warned_at = now
            unwarned, self._unwarned = self._unwarned, Counter()
        # Rate-limited: under a stuck database every request drops one entry.
        log.warning(
            "dropped %s from the prediction log (%s); %d dropped since start; "
            "raise MODELCI_SERVING_LOG_QUEUE_MB if the store only lags at peaks",
            ", ".join(f"{n} of {name!r}" for name, n in sorted(unwarned.items())),
            why,
            sum(self.dropped.values()),
        )

    def _take(self) -> list[_Entry] | None:
        """The next batch: waits for a first entry, then up to flush_s for more."""
        with self._cond:
            while not self._entries:
                if self._stopping:
                    return None
                if not self._cond.wait(self._cleanup_wait()):
                    return []  # time for the retention cleanup
            # Collect for up to flush_s: one transaction per interval rather than
            # per request (each commit syncs the database's log to disk).
            deadline = time.monotonic() + self.flush_s
            while len(self._entries) < self.batch_size and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._flushing:
                    break
                self._cond.wait(remaining)
            # Also capped in bytes: a batch is decoded into Python objects (about ten
            # times its JSON) to be written, and 10,000-row requests add up fast.
            batch: list[_Entry] = []
            size = 0
            while self._entries and len(batch) < self.batch_size:
                if batch and size + self._entries[0].size > _BATCH_BYTES:
                    break
                entry = self._entries.popleft()
                batch.append(entry)
                size += entry.size
            return batch

    _next_cleanup = 0.0

    def _cleanup_wait(self) -> float | None:
        if self.retention_days <= 0:
            return None
        return max(0.01, self._next_cleanup - time.monotonic())

    def _run(self) -> None:
        self._next_cleanup = time.monotonic() + min(60.0, self.cleanup_every_s)
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                written = self._write(batch)
                with self._cond:
                    self._held -= len(batch)
                    self._held_bytes -= sum(entry.size for entry in batch)
                    self._done += len(batch)
                    for entry in batch:
                        if written:
                            self.written[entry.model_name] += 1
                    self._cond.notify_all()
                    backlog = self._backlog_peak if self._held == 0 else 0
                    if self._held == 0:
                        self._backlog_peak = 0
                if backlog >= _TRIM_AFTER_BYTES:
                    _trim_memory()
            if self.retention_days > 0 and time.monotonic() >= self._next_cleanup:
                self._next_cleanup = time.monotonic() + self.cleanup_every_s
                self._cleanup()

    def _write(self, batch: list[_Entry]) -> bool:
        from modelci.store import records as store

        rows = [_row(entry) for entry in batch]
        assert self._sessions is not None
        pause = 0.2
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self._sessions() as session:
                    store.log_predictions(session, rows=rows)
                return True
            except Exception as exc:
                self.failed_writes += 1
                if attempt == self.max_attempts or self._stopping:
                    break
                log.warning(
                    "writing %d predictions to the store failed (%s); retrying in %.1f s",
                    len(rows),
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                    pause,
                )
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, pause)
                pause = min(pause * 2, 5.0)
        dropped = Counter(entry.model_name for entry in batch)
        for name, count in dropped.items():
            self._drop(name, count, f"the store refused the write {self.max_attempts} times")
        return False

    def _cleanup(self) -> None:
        from modelci.store import records as store

        assert self._sessions is not None
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=self.retention_days)
        deleted = 0
        try:
            # In chunks: one huge DELETE would hold its locks and its WAL at once.
            while not self._stopping:
                with self._sessions() as session:
                    count = store.delete_predictions_before(
                        session, before=cutoff, limit=_DELETE_CHUNK
                    )
                deleted += count
                if count < _DELETE_CHUNK:
                    break
        except Exception:
            log.exception("deleting predictions older than %g days failed", self.retention_days)
        if deleted:
            self.deleted += deleted
            log.info(
                "deleted %d predictions older than %g days (MODELCI_PREDICTION_RETENTION_DAYS)",
                deleted,
                self.retention_days,
            )


def _trim_memory() -> None:
    # Not glibc: nothing to hand back this way.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _row(entry: _Entry) -> dict[str, Any]:
    # Already JSON: the store's serializer (orjson) writes a Fragment as it is, so
    # the entry is neither decoded nor encoded again (a fifth of the writer's time,
    # bench/serving.py at 100 rows, held the GIL the event loop needs).
    return {
        "model_name": entry.model_name,
        "version": entry.version,
        "inputs": orjson.Fragment(entry.inputs),
        "outputs": orjson.Fragment(entry.outputs),
        "latency_ms": entry.latency_ms,
        "created_at": entry.created_at,
        "request_id": entry.request_id,
    }
