"""Which repositories a signed-in person may read or change, asked of GitHub, cached.

The person's own token answers (``GET /user/installations`` and each
installation's repositories: what both the App and they reach, with their
role), so modelci never decides access itself. Each answer is kept
``ttl_s`` (60 s) per login: a page costs no GitHub call, and a role taken
away stops working within a minute. One lookup per login runs at a time;
others wait for its answer. When GitHub cannot be reached, an answer up to
``stale_s`` old is used rather than signing everyone out; a token GitHub
refuses (401: revoked, expired) is never papered over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelci.github.errors import GitHubError
from modelci.web.identity import Access, access_from_permissions

__all__ = ["PermissionCache", "RepositoryLister"]

log = logging.getLogger(__name__)


class RepositoryLister(Protocol):
    """What the cache asks: :class:`~modelci.github.client.GitHubClient` is one."""

    def user_repositories(self, *, user_token: str) -> dict[str, dict[str, Any]]: ...


@dataclass(frozen=True)
class _Entry:
    repos: Mapping[str, Access]
    fetched_at: float


class PermissionCache:
    def __init__(
        self,
        lister: RepositoryLister,
        *,
        ttl_s: float = 60.0,
        stale_s: float = 300.0,
        max_logins: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lister = lister
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.max_logins = max_logins
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def repos_for(self, login: str, *, user_token: str) -> Mapping[str, Access]:
        """``owner/name`` → access for ``login``, at most ``ttl_s`` old."""
        entry = self._fresh(login)
        if entry is not None:
            return entry.repos
        with self._guard:
            lock = self._locks.setdefault(login, threading.Lock())
        with lock:
            entry = self._fresh(login)  # another request may have asked meanwhile
            if entry is not None:
                return entry.repos
            try:
                answer = self.lister.user_repositories(user_token=user_token)
            except GitHubError as exc:
                stale = self._entries.get(login)
                if exc.status == 401 or stale is None:
                    raise
                if self.clock() - stale.fetched_at > self.stale_s:
                    raise
                log.warning("GitHub did not answer for %s's repositories: %s", login, exc)
                return stale.repos
            repos: dict[str, Access] = {}
            for name, permissions in answer.items():
                access = access_from_permissions(permissions)
                if access is not None:
                    repos[name] = access
            with self._guard:
                if len(self._entries) >= self.max_logins:
                    self._entries.clear()  # bounded; everyone is asked again once
                self._entries[login] = _Entry(repos, self.clock())
            return repos

    def forget(self, login: str) -> None:
        """Ask GitHub again on the next request (after sign-in or sign-out)."""
        with self._guard:
            self._entries.pop(login, None)

    def _fresh(self, login: str) -> _Entry | None:
        entry = self._entries.get(login)
        if entry is not None and self.clock() - entry.fetched_at < self.ttl_s:
            return entry
        return None
