"""The host's side of one sandboxed model worker: columnar frames over its pipes.

A worker answers one request at a time, so calls are serialised by a lock.
Frames (``serving/frames.py``) carry numeric columns and predictions as raw
buffers and the rest as JSON. What the worker sends is untrusted: frames are
size-capped, headers parsed as JSON only, buffers checked against their shape,
and a worker that stalls past the timeout or breaks the protocol is killed (it
is restarted by its service).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from modelci.errors import PredictionFailed, WorkerFailed
from modelci.runner.sandbox import SandboxProcess
from modelci.serving.frames import decode_reply, encode_request, split

__all__ = ["ModelWorker"]

_HEADER = struct.Struct(">I")
_MAX_REPLY = 64 << 20
# A pipe holds 64 KiB by default: a 100-row request would not fit, and writing it
# would wait, in the event loop, for the worker to read. 1 MiB is Linux's default
# cap for an unprivileged process (/proc/sys/fs/pipe-max-size).
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
Reply = tuple[dict[str, Any], memoryview]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ModelWorker:
    """A started worker process; ``wait_ready`` before ``predict``."""

    def __init__(
        self,
        process: SandboxProcess,
        columns: Sequence[tuple[str, str]],
        *,
        request_timeout_s: float = 30,
    ) -> None:
        """``columns``: the model's (name, type) in its order, as the worker has them."""
        self.process = process
        self.columns = tuple(columns)
        self.request_timeout_s = request_timeout_s
        self._lock = threading.Lock()
        self._out = process.stdin.fileno()
        self._in = process.stdout.fileno()
        for fd in (self._out, self._in):
            with contextlib.suppress(OSError):  # not Linux, or over the cap: 64 KiB
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_BYTES)
        self.dead = False
        self.uses_frame = False
        self._async_lock: asyncio.Lock | None = None
        self.on_stop: Callable[[], None] | None = None  # cleanup after the process ended
        self._stop_lock = threading.Lock()
        self._stopped = False

    def log_tail(self, limit: int = 2000) -> str:
        try:
            with self.process.spec.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - limit))
                return log.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float) -> None:
        with self._lock:
            reply, _ = self._receive(time.monotonic() + timeout_s, "loading the model")
        if not reply.get("ok"):
            self.stop()
            raise WorkerFailed(f"the model worker could not load the model: {reply.get('error')}")
        self.uses_frame = bool(reply.get("frame"))

    def predict(
        self, columns: dict[str, list[Any]], rows: int, *, method: str | None = None
    ) -> list[Any]:
        """Predictions for one validated batch; PredictionFailed if the model raised.

        ``method`` calls another method of the model than its spec's (scoring asks
        for predict_proba)."""
        body = encode_request(columns, self.columns, rows, method)
        with self._lock:
            self._send(body)
            reply = self._receive(time.monotonic() + self.request_timeout_s, "predicting")
        return self._predictions(reply, rows)

    async def predict_async(self, columns: dict[str, list[Any]], rows: int) -> list[Any]:
        """``predict`` for the event loop: waits for the reply without a thread, so the
        loop serves other requests meanwhile (one request at a time per worker)."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            if not self._lock.acquire(blocking=False):  # a thread is using it (rare)
                return await asyncio.to_thread(self.predict, columns, rows)
            try:
                self._send(encode_request(columns, self.columns, rows, None))
                try:
                    reply = await asyncio.wait_for(
                        self._receive_async(), timeout=self.request_timeout_s
                    )
                except TimeoutError:
                    self._die()
                    raise WorkerFailed("the model worker timed out while predicting") from None
            finally:
                self._lock.release()
        return self._predictions(reply, rows)

    def _send(self, frame: bytes) -> None:
        """Write a whole frame (``encode_request``'s: its length included)."""
        if self.dead:
            raise WorkerFailed("the model worker has stopped")
        try:
            # Requests are small next to the pipe's buffer (1 MiB) and the worker
            # reads them at once, so a blocking write does not hold the loop up.
            view = memoryview(frame)
            while view:
                view = view[os.write(self._out, view) :]
        except OSError as exc:
            self._die()
            raise WorkerFailed(f"the model worker is gone ({exc.strerror})") from None

    def _predictions(self, reply: Reply, rows: int) -> list[Any]:
        header, raw = reply
        if not header.get("ok"):
            raise PredictionFailed(f"the model raised on this input: {header.get('error')}")
        try:
            predictions = decode_reply(header, raw)
        except WorkerFailed:
            self._die()
            raise
        if not isinstance(predictions, list) or len(predictions) != rows:
            raise PredictionFailed(
                f"the model returned {type(predictions).__name__} "
                f"of length {len(predictions) if isinstance(predictions, list) else '?'} "
                f"for {rows} rows"
            )
        return predictions

    def _receive(self, deadline: float, doing: str) -> Reply:
        header = self._read(_HEADER.size, deadline, doing)
        return self._parse(self._read(self._size(header, doing), deadline, doing), doing)

    async def _receive_async(self) -> Reply:
        header = await self._read_async(_HEADER.size)
        return self._parse(await self._read_async(self._size(header, "predicting")), "predicting")

    def _size(self, header: bytes, doing: str) -> int:
        (size,) = _HEADER.unpack(header)
        if size > _MAX_REPLY:
            self._die()
            raise WorkerFailed(f"the model worker sent a {size}-byte reply while {doing}")
        return int(size)

    def _parse(self, body: bytes, doing: str) -> Reply:
        try:
            return split(body)
        except WorkerFailed as exc:
            self._die()
            raise WorkerFailed(f"{exc.message} while {doing}") from None

    def _read(self, size: int, deadline: float, doing: str) -> bytes:
        chunks, missing = [], size
        while missing:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._in], [], [], remaining)[0]:
                self._die()
                raise WorkerFailed(f"the model worker timed out while {doing}")
            chunk = os.read(self._in, missing)
            if not chunk:
                self._die()
                code = self.process.poll()
                raise WorkerFailed(
                    f"the model worker exited (code {code}) while {doing}: {self.log_tail(600)}"
                )
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    async def _read_async(self, size: int) -> bytes:
        loop = asyncio.get_running_loop()
        chunks, missing = [], size
        while missing:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._in, _wake, readable)
            try:
                await readable
            finally:
                loop.remove_reader(self._in)
            chunk = os.read(self._in, missing)
            if not chunk:
                self._die()
                raise WorkerFailed(
                    f"the model worker exited (code {self.process.poll()}) while predicting: "
                    f"{self.log_tail(600)}"
                )
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def exited(self) -> bool:
        """Whether the worker process has ended (killed, crashed, or stopped)."""
        return self.dead or self.process.poll() is not None

    def _die(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill the worker and release what it held; safe to call more than once."""
        self.dead = True
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        self.process.stop()
        if self.on_stop is not None:
            self.on_stop()
