"""Typed webhook events: the fields of GitHub's payloads that modelci uses.

:func:`classify` turns a :class:`~modelci.github.sansio.Delivery` into one of
the event classes below, or :class:`Ignored` for events modelci has no use
for. A payload that lacks a field modelci needs raises
:class:`~modelci.github.errors.BadDelivery` naming the field.

Forks: ``head_clone_url`` is the fork's URL and is ``None`` when the fork has
been deleted. Fetching ``refs/pull/<number>/head`` from the base repository
works in every case and needs no access to the fork.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from modelci.github.errors import BadDelivery
from modelci.github.sansio import Delivery

__all__ = [
    "Event",
    "GitHubEvent",
    "Ignored",
    "InstallationEvent",
    "PingEvent",
    "PullRequest",
    "PullRequestEvent",
    "PushEvent",
    "Repository",
    "classify",
    "pull_request_from_api",
]

T = TypeVar("T")


def _get(data: Any, path: str, kind: type[T], *, where: str) -> T:
    """``data[a][b]...`` for ``path`` "a.b...", checked to be a ``kind``."""
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise BadDelivery(
                f"the {where} lacks '{path}'",
                hint="GitHub's payload format may have changed; compare it with the samples "
                "in tests/samples",
            )
        value = value[key]
    # bool is an int subclass: an int field holding true/false is a broken payload.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadDelivery(
            f"the {where}'s '{path}' is a {type(value).__name__}, expected {kind.__name__}",
            hint="GitHub's payload format may have changed",
        )
    return value


def _opt(data: Any, path: str, kind: type[T], *, where: str) -> T | None:
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return _get(data, path, kind, where=where)


@dataclass(frozen=True)
class Repository:
    """The repository a payload is about."""

    full_name: str
    clone_url: str
    default_branch: str
    private: bool

    @classmethod
    def from_payload(cls, repo: Any, *, where: str) -> Repository:
        return cls(
            full_name=_get(repo, "full_name", str, where=where),
            clone_url=_get(repo, "clone_url", str, where=where),
            default_branch=_get(repo, "default_branch", str, where=where),
            private=bool(_opt(repo, "private", bool, where=where)),
        )


@dataclass(frozen=True)
class PullRequest:
    """A pull request, as found in webhook payloads and REST responses alike."""

    number: int
    state: str
    title: str
    author: str
    head_sha: str
    head_ref: str
    head_repo: str | None
    head_clone_url: str | None
    base_sha: str
    base_ref: str
    base_repo: str
    labels: tuple[str, ...]
    draft: bool
    merged: bool
    html_url: str
    updated_at: str | None
    # The commit a merge made on the base branch (set once merged).
    merge_commit_sha: str | None = None

    @property
    def is_fork(self) -> bool:
        """True when the head lives in another repository (or in a deleted fork)."""
        return self.head_repo != self.base_repo

    @property
    def fetch_ref(self) -> str:
        """The ref of the head in the *base* repository; works for forks too."""
        return f"refs/pull/{self.number}/head"


def pull_request_from_api(pr: Any, *, where: str = "pull request") -> PullRequest:
    """A :class:`PullRequest` from a ``pull_request`` object (webhook or REST)."""
    labels = pr.get("labels") if isinstance(pr, dict) else None
    return PullRequest(
        number=_get(pr, "number", int, where=where),
        state=_get(pr, "state", str, where=where),
        title=_opt(pr, "title", str, where=where) or "",
        author=_opt(pr, "user.login", str, where=where) or "",
        head_sha=_get(pr, "head.sha", str, where=where),
        head_ref=_get(pr, "head.ref", str, where=where),
        head_repo=_opt(pr, "head.repo.full_name", str, where=where),
        head_clone_url=_opt(pr, "head.repo.clone_url", str, where=where),
        base_sha=_get(pr, "base.sha", str, where=where),
        base_ref=_get(pr, "base.ref", str, where=where),
        base_repo=_get(pr, "base.repo.full_name", str, where=where),
        labels=tuple(
            label["name"]
            for label in (labels if isinstance(labels, list) else [])
            if isinstance(label, dict) and isinstance(label.get("name"), str)
        ),
        draft=bool(_opt(pr, "draft", bool, where=where)),
        merged=bool(_opt(pr, "merged", bool, where=where)),
        html_url=_opt(pr, "html_url", str, where=where) or "",
        updated_at=_opt(pr, "updated_at", str, where=where),
        merge_commit_sha=_opt(pr, "merge_commit_sha", str, where=where),
    )


@dataclass(frozen=True)
class GitHubEvent:
    """Fields every event has. ``name`` is the ``X-GitHub-Event`` value."""

    name: ClassVar[str] = ""
    delivery_id: str
    action: str | None
    sender: str
    installation_id: int | None
    payload: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class PullRequestEvent(GitHubEvent):
    """``pull_request``: opened, synchronize, labeled, unlabeled, closed, ...

    ``label`` is the label added or removed (labeled/unlabeled only);
    ``sender`` is who did it, whose permission decides whether to act.
    """

    name: ClassVar[str] = "pull_request"
    repo: Repository
    pull_request: PullRequest
    label: str | None

    @property
    def number(self) -> int:
        return self.pull_request.number


@dataclass(frozen=True)
class PushEvent(GitHubEvent):
    """``push`` to a branch or tag; ``deleted`` pushes have an all-zero ``after``."""

    name: ClassVar[str] = "push"
    repo: Repository
    ref: str
    before: str
    after: str
    deleted: bool

    @property
    def branch(self) -> str | None:
        """The branch name, or ``None`` for a tag."""
        prefix = "refs/heads/"
        return self.ref[len(prefix) :] if self.ref.startswith(prefix) else None

    @property
    def to_default_branch(self) -> bool:
        return self.branch == self.repo.default_branch


@dataclass(frozen=True)
class PingEvent(GitHubEvent):
    """``ping``: sent once when a webhook is created; ``app_id`` is set for App hooks."""

    name: ClassVar[str] = "ping"
    zen: str
    hook_id: int | None
    app_id: int | None
    repo_full_name: str | None


@dataclass(frozen=True)
class InstallationEvent(GitHubEvent):
    """``installation``: the App was installed, removed, suspended, ..."""

    name: ClassVar[str] = "installation"
    account: str
    repositories: tuple[str, ...]


Event = PullRequestEvent | PushEvent | PingEvent | InstallationEvent


@dataclass(frozen=True)
class Ignored:
    """A delivery modelci does not act on, and why (for the log and the HTTP answer)."""

    event: str
    action: str | None
    reason: str


def _common(delivery: Delivery, where: str) -> dict[str, Any]:
    payload = delivery.payload
    return {
        "delivery_id": delivery.delivery_id,
        "action": delivery.action,
        "sender": _opt(payload, "sender.login", str, where=where) or "",
        "installation_id": _opt(payload, "installation.id", int, where=where),
        "payload": payload,
    }


def _pull_request(delivery: Delivery) -> PullRequestEvent:
    where = "pull_request payload"
    payload = delivery.payload
    _get(payload, "action", str, where=where)
    return PullRequestEvent(
        **_common(delivery, where),
        repo=Repository.from_payload(_get(payload, "repository", dict, where=where), where=where),
        pull_request=pull_request_from_api(
            _get(payload, "pull_request", dict, where=where), where=where + "'s pull_request"
        ),
        label=_opt(payload, "label.name", str, where=where),
    )


def _push(delivery: Delivery) -> PushEvent:
    where = "push payload"
    payload = delivery.payload
    return PushEvent(
        **_common(delivery, where),
        repo=Repository.from_payload(_get(payload, "repository", dict, where=where), where=where),
        ref=_get(payload, "ref", str, where=where),
        before=_get(payload, "before", str, where=where),
        after=_get(payload, "after", str, where=where),
        deleted=bool(_opt(payload, "deleted", bool, where=where)),
    )


def _ping(delivery: Delivery) -> PingEvent:
    where = "ping payload"
    payload = delivery.payload
    return PingEvent(
        **_common(delivery, where),
        zen=_opt(payload, "zen", str, where=where) or "",
        hook_id=_opt(payload, "hook_id", int, where=where),
        app_id=_opt(payload, "hook.app_id", int, where=where),
        repo_full_name=_opt(payload, "repository.full_name", str, where=where),
    )


def _installation(delivery: Delivery) -> InstallationEvent:
    where = "installation payload"
    payload = delivery.payload
    _get(payload, "installation.id", int, where=where)
    repos = payload.get("repositories")
    return InstallationEvent(
        **_common(delivery, where),
        account=_opt(payload, "installation.account.login", str, where=where) or "",
        repositories=tuple(
            r["full_name"]
            for r in (repos if isinstance(repos, list) else [])
            if isinstance(r, dict) and isinstance(r.get("full_name"), str)
        ),
    )


_PARSERS: dict[str, Callable[[Delivery], Event]] = {
    "pull_request": _pull_request,
    "push": _push,
    "ping": _ping,
    "installation": _installation,
}


def classify(delivery: Delivery) -> Event | Ignored:
    """The typed event for a delivery, or :class:`Ignored` for events modelci does not use.

    Every action of a known event is returned; which actions matter is the
    router's business, so the decision is made in one place.
    """
    parser = _PARSERS.get(delivery.event)
    if parser is None:
        return Ignored(
            delivery.event, delivery.action, f"modelci does not handle {delivery.event!r} events"
        )
    return parser(delivery)
