"""What a worker does with a delivery job: deliver one commit of the default branch.

A merge into the default branch or a push to it queues a
:class:`~modelci.service.pullrequests.DeliveryJob`. The worker trains the commit,
registers it in MLflow and promotes it if it passes its gates
(:mod:`modelci.deliver.delivery`), and reports the decision on the commit as a check
run (a commit status with a plain token): success when promoted, neutral when
registered but refused by the gates (with the reasons), failure when the
training failed. A commit already registered is not delivered again: a merge
sends both ``closed`` and ``push``, and a retried job must not register twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from modelci.deliver.delivery import deliver_commit
from modelci.errors import NeedsGpuWorker
from modelci.evaluate.evaluation import Evaluator
from modelci.github import CheckOutput, GitHubClient
from modelci.service.evaluations import clone_credentials, publish_gpu_wait, start_check
from modelci.service.pullrequests import DeliveryJob, JobQueue
from modelci.store import records as store
from modelci.store.db import Database

__all__ = ["DeliveryService"]

log = logging.getLogger(__name__)


class DeliveryService:
    def __init__(
        self,
        *,
        database: Database,
        github: GitHubClient,
        evaluator: Evaluator,
        check_name: str,
        queue: JobQueue,
        on_champion_change: Callable[[str], None] | None = None,
        after_delivery: Callable[[DeliveryJob, Mapping[str, str]], None] | None = None,
    ) -> None:
        self.database = database
        self.queue = queue
        self.github = github
        self.evaluator = evaluator
        self.check_name = f"{check_name}/deliver"
        # Called with the model's name after a promotion, so the serving API of
        # this process switches at once instead of at its next registry poll.
        self.on_champion_change = on_champion_change
        # Called with the job and git's credentials once its delivery is reported
        # (the retrain schedule is re-read from the delivered modelci.yaml).
        self.after_delivery = after_delivery

    def deliver(self, job: DeliveryJob, cancel: threading.Event) -> None:
        with self.database.session() as session:
            done = store.model_event_for_sha(session, sha=job.sha, action="registered")
        if done is not None:
            log.info(
                "%s at %s is already %s version %s; not delivering it again",
                job.repo,
                job.sha[:7],
                done.model_name,
                done.version,
            )
            return
        gh = self.github.for_installation(job.installation_id)
        git_env = clone_credentials(
            gh, job.clone_url, allow_loopback_http=self.evaluator.settings.allow_loopback_http
        )
        check = start_check(
            gh,
            job.repo,
            head_sha=job.sha,
            name=self.check_name,
            output=CheckOutput("Delivering", f"Training {job.sha[:7]} of {job.ref}."),
        )
        try:
            result = deliver_commit(
                self.evaluator,
                job.clone_url,
                job.sha,
                actor=job.actor,
                git_env=git_env,
                cancel=cancel,
                gpu_allowed=job.gpu,
            )
        except NeedsGpuWorker:
            if not cancel.is_set() and self.queue.move_to_gpu(job) is not None:
                publish_gpu_wait(gh, job.repo, job.sha, self.check_name, check)
            return
        if cancel.is_set():
            return  # retried or stopped: the next attempt reports
        if result.error is not None:
            conclusion = "failure"
        else:
            conclusion = "success" if result.promoted else "neutral"
        gh.publish_check(
            job.repo,
            head_sha=job.sha,
            name=self.check_name,
            status="completed",
            conclusion=conclusion,
            output=CheckOutput(result.title, result.summary_markdown()),
            check_run_id=check.check_run_id,
        )
        if result.promoted and self.on_champion_change is not None:
            self.on_champion_change(result.model_name)
        if self.after_delivery is not None:
            try:
                self.after_delivery(job, git_env)
            except Exception:  # the delivery itself is done and reported
                log.exception("after delivering %s at %s", job.repo, job.sha[:7])
