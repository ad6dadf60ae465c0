"""Errors of the GitHub integration.

All of them derive from :class:`GitHubError`, itself a
:class:`~modelci.errors.ModelCIError`, so the CLI and the web layer turn them
into exit codes and HTTP statuses like any other error::

    GitHubError              502  GitHub answered with an error, or could not be reached
    ├── RateLimitExceeded    503  still rate limited after the allowed waits
    ├── InvalidSignature     401  a webhook delivery is not signed with our secret
    └── BadDelivery          400  a webhook delivery is signed but unusable

``http_status`` is what *our* server answers; ``status`` is what GitHub
answered (``None`` when GitHub was never asked, e.g. for webhook errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelci.errors import ModelCIError

__all__ = ["BadDelivery", "GitHubError", "InvalidSignature", "RateLimitExceeded"]


class GitHubError(ModelCIError):
    """A GitHub API call failed; carries GitHub's own explanation when it gave one."""

    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        github_message: str | None = None,
        documentation_url: str | None = None,
        errors: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.github_message = github_message
        self.documentation_url = documentation_url
        self.errors = tuple(errors)


class RateLimitExceeded(GitHubError):
    """GitHub kept rate limiting us, or asked for a longer wait than we accept.

    ``retry_at`` (epoch seconds) says when a retry may succeed, so a job queue
    can reschedule the work instead of holding a worker asleep.
    """

    http_status = 503

    def __init__(self, message: str, *, retry_at: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_at = retry_at


class InvalidSignature(GitHubError):
    """A webhook delivery's ``X-Hub-Signature-256`` is missing, malformed or wrong."""

    http_status = 401


class BadDelivery(GitHubError):
    """A webhook delivery lacks a header, is not JSON, or its payload lacks a field."""

    http_status = 400
