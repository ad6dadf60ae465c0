"""Who is signed in (a stand-in until the sign-in work lands: the contract's ``Viewer``).

STAND-IN: the sign-in helper owns this module; it is here so that the pages can be
built and tested against the agreed interface, and is replaced at merge.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Access", "Viewer"]

Access = Literal["read", "write", "admin"]


@dataclass(frozen=True)
class Viewer:
    login: str  # a GitHub login, or "token:<name>" for an API-token session
    kind: Literal["github", "token"]
    repos: Mapping[str, Access] = field(default_factory=dict)  # owner/name -> access
    all_access: bool = False  # a token session: every repository, write

    def can_read(self, repo: str) -> bool:
        return self.all_access or repo in self.repos

    def can_write(self, repo: str) -> bool:
        return self.all_access or self.repos.get(repo) in ("write", "admin")

    def visible(self, repos: Iterable[str]) -> list[str]:
        return [repo for repo in repos if self.can_read(repo)]
