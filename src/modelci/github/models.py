"""Small values the client returns and takes, and the pure rules for GitHub's limits.

GitHub caps an issue comment at 65,536 characters, a check run's output
summary and text at 65,535 each, and a commit status description at 140.
Longer content is truncated here with a visible note rather than rejected:
a truncated report is more use than none. The comment marker (a hidden HTML
comment that lets modelci find its own comment again) always survives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from modelci.github.events import PullRequest

__all__ = [
    "CHECK_TEXT_LIMIT",
    "COMMENT_LIMIT",
    "STATUS_DESCRIPTION_LIMIT",
    "Branch",
    "CheckOutput",
    "CheckRun",
    "CollaboratorPermission",
    "CommentRef",
    "CommitStatus",
    "GitCommit",
    "GitRef",
    "IssueRef",
    "NotModified",
    "PublishedCheck",
    "PullRequestPage",
    "comment_marker",
    "render_comment",
    "status_state",
    "truncate",
]

COMMENT_LIMIT = 65_536
CHECK_TEXT_LIMIT = 65_535
STATUS_DESCRIPTION_LIMIT = 140

CheckStatus = Literal["queued", "in_progress", "completed"]
CheckConclusion = Literal[
    "action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out"
]
StatusState = Literal["error", "failure", "pending", "success"]

_MARKER = re.compile(r"^<!-- modelci:[A-Za-z0-9_.:/-]+ -->$")
_WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})


@dataclass(frozen=True)
class CollaboratorPermission:
    """``permission`` is GitHub's legacy base role (admin/write/read/none: maintain
    reads as write, triage as read); ``role_name`` the actual role, custom ones too."""

    permission: str
    role_name: str

    @property
    def can_write(self) -> bool:
        return self.permission in _WRITE_PERMISSIONS or self.role_name in _WRITE_PERMISSIONS


@dataclass(frozen=True)
class CommentRef:
    """The comment modelci wrote; ``created`` is False when an existing one was updated."""

    id: int
    html_url: str
    created: bool


@dataclass(frozen=True)
class CheckOutput:
    """A check run's output; ``summary`` and ``text`` are Markdown."""

    title: str
    summary: str
    text: str | None = None


@dataclass(frozen=True)
class CheckRun:
    id: int
    html_url: str
    status: str
    conclusion: str | None


@dataclass(frozen=True)
class CommitStatus:
    id: int
    state: str
    context: str


@dataclass(frozen=True)
class PublishedCheck:
    """Where a result went: a check run (App) or a commit status (plain token)."""

    kind: Literal["check_run", "commit_status"]
    id: int
    html_url: str | None = None

    @property
    def check_run_id(self) -> int | None:
        """The check run to update next time; None for a status (each one is new)."""
        return self.id if self.kind == "check_run" else None


@dataclass(frozen=True)
class Branch:
    name: str
    sha: str
    protected: bool


@dataclass(frozen=True)
class IssueRef:
    """An issue modelci opened (a model's drift alert)."""

    number: int
    html_url: str
    state: str  # open, closed


@dataclass(frozen=True)
class GitRef:
    """A reference (``refs/heads/main``) and the commit it points to."""

    ref: str
    sha: str


@dataclass(frozen=True)
class GitCommit:
    """A commit object of the Git database: its tree and parents."""

    sha: str
    tree_sha: str
    parents: tuple[str, ...]
    message: str = ""


@dataclass(frozen=True)
class PullRequestPage:
    """All open pull requests, and the ETag to send next time (``If-None-Match``)."""

    items: tuple[PullRequest, ...]
    etag: str | None


@dataclass(frozen=True)
class NotModified:
    """Nothing changed since ``etag``; GitHub does not count this against the rate limit."""

    etag: str


def comment_marker(key: str) -> str:
    """The hidden marker for modelci's comment ``key`` (e.g. ``"evaluation"``)."""
    marker = f"<!-- modelci:{key} -->"
    if not _MARKER.match(marker):
        raise ValueError(f"comment marker key {key!r} may only hold letters, digits and _.:/-")
    return marker


def truncate(text: str, limit: int, *, what: str = "text") -> str:
    """``text`` cut to ``limit`` characters, ending with a note saying so."""
    if len(text) <= limit:
        return text
    template = "\n\n… ({what} truncated: {omitted:,} characters omitted)"

    def note(kept: int) -> str:
        return template.format(what=what, omitted=len(text) - kept)

    # The note counts against the limit and its length depends on how much is
    # cut: start from its longest form, then grow ``kept`` while it still fits.
    if limit < len(note(0)):
        return text[:limit]
    kept = limit - len(note(0))
    while kept < len(text) and kept + 1 + len(note(kept + 1)) <= limit:
        kept = limit - len(note(kept + 1))
    return text[:kept] + note(kept)


def render_comment(marker: str, body: str, *, limit: int = COMMENT_LIMIT) -> str:
    """The full comment body: the marker first (so truncation never drops it), then ``body``."""
    if not _MARKER.match(marker):
        raise ValueError(f"{marker!r} is not a modelci comment marker; use comment_marker()")
    if marker in body:
        body = body.replace(marker, "").lstrip("\n")
    return truncate(marker + "\n" + body, limit, what="comment")


def status_state(status: str, conclusion: str | None) -> StatusState:
    """The commit status state that stands for a check run's status and conclusion.

    ``error`` means modelci could not judge (cancelled, timed out); ``failure``
    means it judged the change bad.
    """
    if status != "completed" and conclusion is None:
        return "pending"
    if conclusion in ("success", "neutral", "skipped"):
        return "success"
    if conclusion in ("cancelled", "timed_out"):
        return "error"
    return "failure"
