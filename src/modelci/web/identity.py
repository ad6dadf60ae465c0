"""Who is looking at the dashboard, and which repositories they may read or change.

Pure data: a :class:`Viewer` is built by ``web.auth`` from a session (a GitHub
login with the access GitHub reports for each repository, or an API token) and
asked by every page and action. Access follows GitHub's roles: ``admin`` and
``write`` (write, maintain) may act; ``read`` (read, triage) may only look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Access", "Viewer", "access_from_permissions"]

Access = Literal["read", "write", "admin"]
_WRITE: frozenset[str] = frozenset({"write", "admin"})


@dataclass(frozen=True)
class Viewer:
    """A signed-in person (``kind="github"``) or API token (``kind="token"``).

    ``repos`` maps ``owner/name`` to the access GitHub reports; a token session
    has none and ``all_access`` instead: whoever holds a token can already do
    everything through the JSON API.
    """

    login: str
    kind: Literal["github", "token"]
    repos: Mapping[str, Access] = field(default_factory=dict)
    all_access: bool = False
    # GitHub's owner and repository names are case-insensitive: looked up lowered.
    _lowered: dict[str, Access] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lowered = {name.lower(): access for name, access in self.repos.items()}
        object.__setattr__(self, "_lowered", lowered)

    def can_read(self, repo: str) -> bool:
        return self.all_access or repo.lower() in self._lowered

    def can_write(self, repo: str) -> bool:
        return self.all_access or self._lowered.get(repo.lower()) in _WRITE

    def visible(self, repos: Iterable[str]) -> list[str]:
        """``repos`` this viewer may read, in their order."""
        return [repo for repo in repos if self.can_read(repo)]


def access_from_permissions(permissions: Mapping[str, object]) -> Access | None:
    """A repository's access from GitHub's ``permissions`` object (``admin``,
    ``maintain``, ``push``, ``triage``, ``pull``: booleans), or None without any."""
    if permissions.get("admin") is True:
        return "admin"
    if permissions.get("maintain") is True or permissions.get("push") is True:
        return "write"
    if permissions.get("triage") is True or permissions.get("pull") is True:
        return "read"
    return None
