"""The most bytes a DVC fetch may bring (``max_fetch_mb``), held while it runs.

A commit's ``.dvc`` files declare sizes, checked before anything is fetched
(``data.fetch``); a repository can under-declare them, so the fetch itself is
watched too: DVC writes what it downloads into the repository's cache as it
comes (each file under a temporary name, then renamed), so the cache's growth
is what the fetch has brought so far. ``CacheWatch`` polls it and stops the
sandboxed fetch past the cap, and the error names the setting to raise.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from modelci.data.remotes import REMOTES_SETTING, RepositoryData
from modelci.errors import DataFetchError

__all__ = ["CAP_POLL_S", "CacheWatch", "cache_usage", "over_cap", "remove_partial"]

MB = 1024 * 1024
CAP_POLL_S = 0.2  # how often a running fetch's cache growth is checked against the cap
_PARTIAL = re.compile(r"\.[A-Za-z0-9_-]+\.tmp")  # dvc_objects' tmp_fname: a download under way


def cache_usage(cache: Path) -> int:
    """Bytes of the objects in a DVC cache."""
    total = 0
    for root, _dirs, files in os.walk(cache):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += info.st_size
    return total


def remove_partial(cache: Path) -> None:
    """Remove the downloads a stopped fetch left half-written in the cache. Only with
    the cache's lock held: a running DVC's are not partial yet."""
    for root, _dirs, files in os.walk(cache / "files"):
        for name in files:
            if _PARTIAL.fullmatch(name):
                try:
                    os.unlink(os.path.join(root, name))
                except FileNotFoundError:
                    continue


def over_cap(data: RepositoryData, size: int, *, stopped: bool) -> DataFetchError:
    """The error for a commit's data past the repository's max_fetch_mb: declared,
    found in the cache, or brought by a fetch (``stopped``: killed while running)."""
    if stopped:
        message = (
            f"the DVC fetch was stopped: it brought more than {data.max_fetch_mb} MB, the most "
            f"this server fetches for {data.key}"
        )
    else:
        message = (
            f"the commit's DVC data comes to {size / MB:.0f} MB, more than the "
            f"{data.max_fetch_mb} MB this server fetches for {data.key}"
        )
    return DataFetchError(
        message,
        hint=f'raise max_fetch_mb under [repositories."{data.key}"] (or [defaults]) in '
        f"{data.source} ({REMOTES_SETTING}) if the data is meant to be this large",
    )


class CacheWatch:
    """Stops a running fetch once the cache has grown past the cap. DVC writes what it
    downloads into the cache as it comes (under a temporary name, then renamed), so
    the cache's growth is what the fetch has brought so far; the sandbox's own
    watchdog sees only the work dir, which DVC fills last. ``stop`` is the sandbox's
    cancel event: set past the cap, or when the caller's own is."""

    def __init__(self, cache: Path, before: int, cap: int, cancel: threading.Event | None):
        self.cache, self.before, self.cap, self.cancel = cache, before, cap, cancel
        self.stop = threading.Event()
        self.exceeded = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="modelci-fetch-cap", daemon=True)

    def __enter__(self) -> CacheWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        due = time.monotonic() + CAP_POLL_S
        while not self._done.wait(0.05):
            if self.cancel is not None and self.cancel.is_set():
                self.stop.set()
                return
            if time.monotonic() < due:
                continue
            walk = time.monotonic()
            if cache_usage(self.cache) - self.before > self.cap:
                self.exceeded = True
                self.stop.set()
                return
            # Walking a large cache costs: spend at most a fifth of the time on it.
            now = time.monotonic()
            due = now + max(CAP_POLL_S, 4 * (now - walk))
