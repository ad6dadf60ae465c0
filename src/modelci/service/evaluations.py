"""What a worker does with a job: process a stored delivery, evaluate a pull request.

``PullRequestService`` implements the job engine's ``Services``: it reads the
delivery from the store, classifies it, lets ``pullrequests.handle_event``
decide, and records the outcome; and it runs an evaluation, keeping the pull
request's one comment and its check run up to date. Writes to a pull
request's comment are serialized across processes with a database lock, so
the comment is never created twice.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass

from modelci.errors import CheckoutError, ModelCIError, NeedsGpuWorker
from modelci.evaluate.evaluation import EvaluationRequest, Evaluator
from modelci.github import (
    CheckOutput,
    GitHubClient,
    Ignored,
    PublishedCheck,
    PullRequestEvent,
    classify,
    comment_marker,
    git_credentials,
)
from modelci.github.credentials import is_loopback
from modelci.github.sansio import Delivery
from modelci.service.comments import check_text, final_comment, status_comment
from modelci.service.jobs import CANCEL_TIMEOUT
from modelci.service.pullrequests import EvaluationJob, JobQueue, Outcome, handle_event
from modelci.store import records as store
from modelci.store.db import Database

__all__ = [
    "GPU_WAIT",
    "PullRequestService",
    "clone_credentials",
    "publish_gpu_wait",
    "start_check",
]

log = logging.getLogger(__name__)
MARKER = comment_marker("evaluation")
_STATUS_EVERY_S = 3.0


@dataclass
class _Actions:
    """The workflow's GitHub calls, on the real client."""

    github: GitHubClient
    database: Database

    def can_write(self, repo: str, username: str, installation_id: int | None) -> bool:
        return self.github.has_write_access(
            repo, username=username, installation_id=installation_id
        )

    def say(self, job_or_pr: EvaluationJob | PullRequestEvent, body: str) -> None:
        if isinstance(job_or_pr, EvaluationJob):
            repo, number, installation = job_or_pr.repo, job_or_pr.number, job_or_pr.installation_id
            head = job_or_pr.head_sha
        else:
            repo, number = job_or_pr.repo.full_name, job_or_pr.pull_request.number
            installation, head = job_or_pr.installation_id, job_or_pr.pull_request.head_sha
        write_comment(
            self.github,
            self.database,
            repo=repo,
            number=number,
            installation_id=installation,
            body=status_comment(head_sha=head, status=body),
        )


def write_comment(
    github: GitHubClient,
    database: Database,
    *,
    repo: str,
    number: int,
    installation_id: int | None,
    body: str,
) -> None:
    with database.session() as session:
        store.lock_key(session, key=f"comment:{repo}#{number}")
        github.upsert_comment(
            repo, issue_number=number, marker=MARKER, body=body, installation_id=installation_id
        )


GPU_WAIT = (
    "⏳ waiting for a GPU worker: this commit's modelci.yaml sets `limits.gpu`, so it runs "
    "on a worker started with `modelci worker --queue gpu`"
)


def publish_gpu_wait(
    gh: GitHubClient, repo: str, sha: str, name: str, check: PublishedCheck
) -> None:
    """Leave the commit's check queued while its job waits on the gpu queue; the
    attempt there takes the same check run over (``start_check``)."""
    gh.publish_check(
        repo,
        head_sha=sha,
        name=name,
        status="queued",
        output=CheckOutput("Waiting for a GPU worker", GPU_WAIT),
        check_run_id=check.check_run_id,
    )


def clone_credentials(
    gh: GitHubClient, clone_url: str, *, allow_loopback_http: bool = False
) -> dict[str, str]:
    """git's environment for fetching ``clone_url`` with the installation's token.

    Only https URLs are fetched, as GitHub's are: a payload naming a local path,
    ``file://``, ``ssh`` or plain http could point a job at the server's own
    files or send the token in the clear. Plain http to this machine is allowed
    only with ``MODELCI_ALLOW_LOOPBACK_HTTP`` (a local stand-in of GitHub).
    """
    parts = urllib.parse.urlsplit(clone_url)
    loopback_http = parts.scheme == "http" and is_loopback(parts.hostname)
    if parts.scheme != "https" and not (loopback_http and allow_loopback_http):
        raise CheckoutError(
            f"refusing to fetch {clone_url!r}: modelci fetches repositories over https only",
            hint="GitHub's clone URLs are https; for a GitHub stand-in on this machine set "
            "MODELCI_ALLOW_LOOPBACK_HTTP=1"
            if loopback_http
            else "check the payload's repository.clone_url (GitHub sends an https URL)",
        )
    try:
        return git_credentials(gh.installation_token(), clone_url)
    except ValueError as exc:
        raise CheckoutError(f"refusing to fetch {clone_url!r}: {exc}") from None


def start_check(
    gh: GitHubClient, repo: str, *, head_sha: str, name: str, output: CheckOutput
) -> PublishedCheck:
    """Open an in-progress check on ``head_sha``.

    A retry after a killed attempt takes over the check run that attempt left
    in progress, so the commit never keeps a stale one.
    """
    unfinished = None
    if gh.auth.is_app:
        found = gh.find_check_run(repo, head_sha=head_sha, name=name)
        if found is not None and found.status != "completed":
            unfinished = found.id
    return gh.publish_check(
        repo,
        head_sha=head_sha,
        name=name,
        status="in_progress",
        output=output,
        check_run_id=unfinished,
    )


class _CommentReporter:
    """Shows the evaluation's current step in the comment, at most every few seconds."""

    def __init__(
        self, service: PullRequestService, job: EvaluationJob, cancel: threading.Event
    ) -> None:
        self.service, self.job, self.cancel = service, job, cancel
        self._last = 0.0
        self._lock = threading.Lock()

    def update(self, role: str, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < _STATUS_EVERY_S or self.cancel.is_set():
                return
            self._last = now
        try:
            self.service.comment(
                self.job, status_comment(head_sha=self.job.head_sha, status=f"🔄 {role}: {message}")
            )
        except ModelCIError as exc:  # progress is best effort; the result is not
            log.warning("could not update the status comment: %s", exc)


class PullRequestService:
    def __init__(
        self,
        *,
        database: Database,
        github: GitHubClient,
        evaluator: Evaluator,
        queue: JobQueue,
        label: str,
        check_name: str,
        public_url: str | None = None,
    ) -> None:
        self.database = database
        self.github = github
        self.evaluator = evaluator
        self.queue = queue
        self.label = label
        self.check_name = check_name
        self.public_url = public_url

    def comment(self, job: EvaluationJob, body: str) -> None:
        write_comment(
            self.github,
            self.database,
            repo=job.repo,
            number=job.number,
            installation_id=job.installation_id,
            body=body,
        )

    def process_delivery(self, delivery_id: str) -> None:
        with self.database.session() as session:
            stored = store.get_delivery(session, delivery_id=delivery_id)
            if stored is None or stored.processed_at is not None:
                return  # processed once: a retried job after a crash finds it done
            delivery = Delivery(
                delivery_id=delivery_id, event=stored.event, payload=dict(stored.payload)
            )
        event = classify(delivery)
        if isinstance(event, Ignored):
            outcome = Outcome("ignored", event.reason)
        else:
            outcome = handle_event(
                event,
                label=self.label,
                queue=self.queue,
                github=_Actions(self.github, self.database),
            )
        with self.database.session() as session:
            store.mark_delivery_processed(
                session,
                delivery_id=delivery_id,
                outcome=outcome.action,
                detail=outcome.detail,
                job_id=outcome.job_id,
            )

    def evaluate(self, job: EvaluationJob, cancel: threading.Event) -> None:
        gh = self.github.for_installation(job.installation_id)
        git_env = clone_credentials(
            gh, job.clone_url, allow_loopback_http=self.evaluator.settings.allow_loopback_http
        )
        check = start_check(
            gh,
            job.repo,
            head_sha=job.head_sha,
            name=self.check_name,
            output=CheckOutput("Evaluating", "Training head and base."),
        )
        self.comment(job, status_comment(head_sha=job.head_sha, status="🔄 evaluating"))
        evaluator = self.evaluator.with_reporter(_CommentReporter(self, job, cancel))
        try:
            result = evaluator.evaluate(
                EvaluationRequest(
                    repo=job.clone_url,
                    base=job.base_ref,
                    head=job.head_sha,
                    merge_base=True,
                    git_env=git_env,
                    # Stored while it runs (the dashboard's live log) under its job.
                    job_id=getattr(cancel, "job_id", None),
                    gpu_allowed=job.gpu,
                ),
                cancel=cancel,
            )
        except NeedsGpuWorker:
            if cancel.is_set() or self.queue.move_to_gpu(job) is None:
                return  # superseded: the newer job owns the comment
            self.comment(job, status_comment(head_sha=job.head_sha, status=GPU_WAIT))
            publish_gpu_wait(gh, job.repo, job.head_sha, self.check_name, check)
            return
        if cancel.is_set():
            if getattr(cancel, "reason", None) == CANCEL_TIMEOUT:
                self._report_timeout(job, gh, check.check_run_id)
            return  # superseded or cancelled: the newer job owns the comment now
        self.comment(job, final_comment(result, logs_url=self.public_url))
        text = check_text(result, logs_url=self.public_url)
        gh.publish_check(
            job.repo,
            head_sha=job.head_sha,
            name=self.check_name,
            status="completed",
            conclusion=text.conclusion,
            output=CheckOutput(text.title, text.summary),
            check_run_id=check.check_run_id,
        )

    def _report_timeout(
        self, job: EvaluationJob, gh: GitHubClient, check_run_id: int | None
    ) -> None:
        status = "⏱️ stopped: the evaluation ran longer than the job timeout (MODELCI_JOB_TIMEOUT_S)"
        self.comment(job, status_comment(head_sha=job.head_sha, status=status))
        gh.publish_check(
            job.repo,
            head_sha=job.head_sha,
            name=self.check_name,
            status="completed",
            conclusion="timed_out",
            output=CheckOutput("Timed out", status),
            check_run_id=check_run_id,
        )
