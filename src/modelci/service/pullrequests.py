"""What modelci does for each GitHub event: the pull-request workflow.

Pure decisions over typed events, with GitHub and the job queue behind small
interfaces so the workflow is tested without either:

- ``labeled`` with the trigger label, by a user with write access: cancel
  what is pending for the pull request, queue an evaluation of the payload's
  head sha, and say so in the pull request's one comment. By anyone else: say
  that a maintainer must apply the label, and run nothing.
- ``synchronize`` on a labeled pull request: the same, for the new head, but
  only when the pusher has write access; otherwise a maintainer must re-apply
  the label (new code from someone without write access never runs unasked).
- ``unlabeled`` (the trigger label) and ``closed``: cancel what is pending.
- ``closed`` with ``merged: true`` into the default branch, and pushes to the
  default branch, queue a delivery of that commit (train, register, promote if
  it passes its gates); both usually arrive for one merge and are queued once
  per commit. ``ping`` is answered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from modelci.github.events import Event, PingEvent, PullRequestEvent, PushEvent

__all__ = [
    "DeliveryJob",
    "EvaluationJob",
    "GitHubActions",
    "JobQueue",
    "Outcome",
    "RetrainJob",
    "handle_event",
]


@dataclass(frozen=True)
class EvaluationJob:
    """Everything a worker needs to evaluate one pull request's head."""

    repo: str  # owner/name
    number: int
    head_sha: str
    base_ref: str
    clone_url: str
    installation_id: int | None
    delivery_id: str
    gpu: bool = False  # on the gpu queue: its commit set limits.gpu

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def pr_key(self) -> str:
        return f"{self.repo}#{self.number}"


@dataclass(frozen=True)
class DeliveryJob:
    """Everything a worker needs to deliver one commit of the default branch."""

    repo: str  # owner/name
    sha: str
    ref: str  # the branch it landed on
    clone_url: str
    installation_id: int | None
    delivery_id: str
    actor: str  # who pushed or merged, recorded with the promotion
    gpu: bool = False  # on the gpu queue: its commit set limits.gpu

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RetrainJob:
    """Everything a worker needs to retrain one branch of a repository."""

    repo: str  # owner/name
    ref: str
    clone_url: str
    installation_id: int | None
    trigger: str  # "schedule", "manual", "data", "drift"
    actor: str
    slot: str | None = None  # the schedule's slot (ISO), for the logs
    gpu: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """What handling an event did, stored with the delivery."""

    action: str  # "queued", "cancelled", "refused", "recorded", "pong", "ignored"
    detail: str
    job_id: int | None = None


class JobQueue(Protocol):
    def enqueue_evaluation(self, job: EvaluationJob) -> int: ...

    def enqueue_delivery(self, job: DeliveryJob) -> int | None: ...

    def cancel_evaluations(self, *, repo: str, number: int) -> int: ...

    def move_to_gpu(self, job: EvaluationJob | DeliveryJob) -> int | None: ...


class GitHubActions(Protocol):
    """The GitHub calls the workflow makes (a thin layer over GitHubClient)."""

    def can_write(self, repo: str, username: str, installation_id: int | None) -> bool: ...

    def say(self, job_or_pr: EvaluationJob | PullRequestEvent, body: str) -> None: ...


def _same_label(name: str | None, trigger: str) -> bool:
    # GitHub's label names are case-insensitive (a repository can't have both
    # "Evaluate" and "evaluate"), so the trigger matches in any case.
    return name is not None and name.casefold() == trigger.casefold()


def _job(event: PullRequestEvent) -> EvaluationJob:
    pr = event.pull_request
    return EvaluationJob(
        repo=event.repo.full_name,
        number=pr.number,
        head_sha=pr.head_sha,
        base_ref=pr.base_ref,
        clone_url=event.repo.clone_url,
        installation_id=event.installation_id,
        delivery_id=event.delivery_id,
    )


def _queue(event: PullRequestEvent, queue: JobQueue, github: GitHubActions) -> Outcome:
    job = _job(event)
    cancelled = queue.cancel_evaluations(repo=job.repo, number=job.number)
    job_id = queue.enqueue_evaluation(job)
    superseded = (
        f" (superseding {cancelled} earlier run{'s' * (cancelled > 1)})" if cancelled else ""
    )
    github.say(job, f"⏳ queued: evaluation of `{job.head_sha[:7]}`{superseded}")
    return Outcome("queued", f"evaluation of {job.head_sha[:7]} queued{superseded}", job_id)


def _deliver(event: PushEvent | PullRequestEvent, sha: str, queue: JobQueue) -> Outcome:
    job = DeliveryJob(
        repo=event.repo.full_name,
        sha=sha,
        ref=event.repo.default_branch,
        clone_url=event.repo.clone_url,
        installation_id=event.installation_id,
        delivery_id=event.delivery_id,
        actor=event.sender,
    )
    job_id = queue.enqueue_delivery(job)
    if job_id is None:
        return Outcome("recorded", f"delivery of {sha[:7]} is already queued")
    return Outcome("queued", f"delivery of {sha[:7]} queued", job_id)


def handle_event(event: Event, *, label: str, queue: JobQueue, github: GitHubActions) -> Outcome:
    """Decide and do what ``event`` calls for."""
    if isinstance(event, PingEvent):
        return Outcome("pong", "ping received")
    if isinstance(event, PushEvent):
        if event.to_default_branch and not event.deleted:
            return _deliver(event, event.after, queue)
        return Outcome("ignored", f"push to {event.ref} is not to the default branch")
    if not isinstance(event, PullRequestEvent):
        return Outcome("ignored", f"{type(event).__name__} needs nothing from modelci")
    pr = event.pull_request
    repo = event.repo.full_name
    if event.action == "labeled":
        if not _same_label(event.label, label):
            return Outcome("ignored", f"label {event.label!r} is not {label!r}")
        if not github.can_write(repo, event.sender, event.installation_id):
            github.say(
                event,
                f"🔒 @{event.sender} applied `{label}`, but only users with write access to "
                f"{repo} can start an evaluation (it runs the pull request's code). A maintainer "
                f"must apply the `{label}` label.",
            )
            return Outcome("refused", f"{event.sender} lacks write access: nothing was run")
        return _queue(event, queue, github)
    if event.action == "synchronize":
        if not any(_same_label(name, label) for name in pr.labels):
            return Outcome("ignored", f"pull request #{pr.number} is not labeled {label!r}")
        if not github.can_write(repo, event.sender, event.installation_id):
            queue.cancel_evaluations(repo=repo, number=pr.number)
            github.say(
                event,
                f"🔒 new commits (`{pr.head_sha[:7]}`) were pushed by @{event.sender}, who lacks "
                f"write access: they are not evaluated until a maintainer re-applies `{label}`.",
            )
            return Outcome("refused", f"push by {event.sender} without write access")
        return _queue(event, queue, github)
    if (
        event.action == "unlabeled" and _same_label(event.label, label)
    ) or event.action == "closed":
        cancelled = queue.cancel_evaluations(repo=repo, number=pr.number)
        detail = f"{cancelled} pending evaluation(s) cancelled"
        merged_into_default = pr.merged and pr.base_ref == event.repo.default_branch
        if event.action == "closed" and merged_into_default and pr.merge_commit_sha:
            delivered = _deliver(event, pr.merge_commit_sha, queue)
            return Outcome(delivered.action, f"{detail}; {delivered.detail}", delivered.job_id)
        return Outcome("cancelled", detail)
    return Outcome("ignored", f"pull_request action {event.action!r} needs nothing")
