"""modelci's GitHub integration: webhooks in, comments and checks out.

- :mod:`~modelci.github.sansio`: verify and decode webhook deliveries (no I/O).
- :mod:`~modelci.github.events`: typed events, :func:`classify`.
- :mod:`~modelci.github.router`: dispatch events to handlers by (event, action).
- :mod:`~modelci.github.auth`: App JWTs and installation tokens, or a plain token.
- :mod:`~modelci.github.client`: the REST calls (permissions, comment, checks, PRs).
- :mod:`~modelci.github.gitdata`: the Git Data API (blobs, trees, commits, refs) and
  opening pull requests, for proposal mode.
- :mod:`~modelci.github.credentials`: pass a token to ``git fetch`` safely.

No web framework is imported here: the web layer hands raw headers and body
to :func:`parse_delivery`.
"""

from __future__ import annotations

from modelci.github.auth import AppAuth, Auth, InstallationToken, TokenAuth, make_auth
from modelci.github.client import GitHubClient
from modelci.github.credentials import git_credentials
from modelci.github.errors import BadDelivery, GitHubError, InvalidSignature, RateLimitExceeded
from modelci.github.events import (
    Event,
    GitHubEvent,
    Ignored,
    InstallationEvent,
    PingEvent,
    PullRequest,
    PullRequestEvent,
    PushEvent,
    Repository,
    classify,
)
from modelci.github.models import (
    Branch,
    CheckOutput,
    CheckRun,
    CollaboratorPermission,
    CommentRef,
    CommitStatus,
    GitCommit,
    GitRef,
    IssueRef,
    NotModified,
    PublishedCheck,
    PullRequestPage,
    comment_marker,
)
from modelci.github.rest import API_VERSION, DEFAULT_API_URL
from modelci.github.router import Router
from modelci.github.sansio import Delivery, parse_delivery, verify_signature

__all__ = [
    "API_VERSION",
    "DEFAULT_API_URL",
    "AppAuth",
    "Auth",
    "BadDelivery",
    "Branch",
    "CheckOutput",
    "CheckRun",
    "CollaboratorPermission",
    "CommentRef",
    "CommitStatus",
    "Delivery",
    "Event",
    "GitCommit",
    "GitHubClient",
    "GitHubError",
    "GitHubEvent",
    "GitRef",
    "Ignored",
    "InstallationEvent",
    "InstallationToken",
    "InvalidSignature",
    "IssueRef",
    "NotModified",
    "PingEvent",
    "PublishedCheck",
    "PullRequest",
    "PullRequestEvent",
    "PullRequestPage",
    "PushEvent",
    "RateLimitExceeded",
    "Repository",
    "Router",
    "TokenAuth",
    "classify",
    "comment_marker",
    "git_credentials",
    "make_auth",
    "parse_delivery",
    "verify_signature",
]
