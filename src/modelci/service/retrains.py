"""Retrains on the server: the job, the schedule dispatcher, and the report on GitHub.

- :class:`RetrainJob` is what a worker needs to retrain a repository's branch. The
  API (on demand) and :func:`dispatch_due` (on schedule) queue it; deliveries of
  the same repository share its Procrastinate lock (``service.jobs``), so a
  retrain started while a delivery runs waits for it, and the other way round.
- :meth:`RetrainingService.retrain` runs ``Retrainer.retrain`` and reports on the
  retrained commit: a new commit comment (one per retrain) and a check run named
  ``modelci/retrain``, both with ``retrain_markdown``. The metric history is a
  PNG at an unguessable URL under ``MODELCI_PUBLIC_URL``, or a sparkline without one.
  In proposal mode (``retrain.mode: pull-request``) the retrain gets a
  ``GitHubProposer`` (``service.proposals``) and reports the pull request it
  opened or updated, check run neutral, linking it.
- Schedules: read from the default branch's ``modelci.yaml`` after each delivered
  push to it and at server start (:meth:`RetrainingService.refresh_from_commit`,
  :meth:`RetrainingService.refresh_known`); :func:`dispatch_due` claims each due
  slot once (``store.schedules.claim_slot``) and queues one retrain per claim.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from modelci.errors import ConfigError, ModelCIError, NeedsGpuWorker
from modelci.github import CheckOutput, GitHubClient
from modelci.retrain.plot import history_series, render_png, sparkline
from modelci.retrain.report import retrain_markdown
from modelci.retrain.result import RetrainResult
from modelci.retrain.schedule import CronSchedule, due_slot
from modelci.runner.checkout import open_mirror
from modelci.runner.config import CONFIG_FILE, parse_config
from modelci.service.evaluations import clone_credentials
from modelci.service.proposals import GitHubProposer
from modelci.service.pullrequests import DeliveryJob, EvaluationJob, RetrainJob
from modelci.store import retrains as retrain_store
from modelci.store import schedules
from modelci.store.db import Database

__all__ = [
    "RETRAIN_CHECK",
    "RetrainJob",
    "RetrainingService",
    "dispatch_due",
    "known_retrain",
    "new_plot_token",
    "plot_png",
]

log = logging.getLogger(__name__)

RETRAIN_CHECK = "modelci/retrain"
HISTORY = 20  # retrains in the plot and the sparkline
_CONCLUSIONS = {
    "promoted": "success",
    "kept": "neutral",
    "skipped": "neutral",
    "proposed": "neutral",
}


class RetrainQueue(Protocol):
    def enqueue_retrain(self, job: RetrainJob) -> int | None: ...

    def enqueue_evaluation(self, job: EvaluationJob) -> int: ...


class RetrainerLike(Protocol):
    """``modelci.retrain.retrainer.Retrainer``'s one method the job calls."""

    def retrain(
        self,
        repo: str,
        ref: str,
        *,
        trigger: Any,
        actor: str,
        git_env: Mapping[str, str] | None = None,
        reporter: Any = None,
        cancel: threading.Event | None = None,
        gpu_allowed: bool = True,
        proposer: Any = None,
    ) -> RetrainResult: ...


def known_retrain(
    database: Database, repository: str, *, trigger: str, actor: str, ref: str | None = None
) -> RetrainJob | None:
    """A retrain of ``repository`` (its default branch unless ``ref``), from what modelci
    keeps of it (``store.schedules``: where to clone it, its installation); None for a
    repository it has not seen a push to the default branch of."""
    with database.session() as session:
        row = schedules.get_schedule(session, repository=repository)
        if row is None:
            return None
        return RetrainJob(
            repo=row.repository,
            ref=ref or row.default_branch,
            clone_url=row.clone_url,
            installation_id=row.installation_id,
            trigger=trigger,
            actor=actor[:300],
        )


def new_plot_token() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits: the URL is the only secret


def _history(database: Database, record: Any) -> list[Any]:
    """The retrains up to ``record`` of its model (or repository), newest first."""
    with database.session() as session:
        if record.model_name:
            found = retrain_store.list_retrains(session, model_name=record.model_name, limit=200)
        else:
            found = retrain_store.list_retrains(session, repository=record.repository, limit=200)
        return [r for r in found if r.id <= record.id and r.metrics][:HISTORY]


def plot_png(database: Database, token: str) -> bytes | None:
    """The history plot of the retrain whose plot token is ``token``; None if none is."""
    with database.session() as session:
        record = retrain_store.retrain_by_plot_token(session, token=token)
    if record is None:
        return None
    title = f"{record.model_name or record.repository}: retrains"
    return render_png(history_series(_history(database, record)), title=title)


class RetrainingService:
    def __init__(
        self,
        *,
        database: Database,
        github: GitHubClient,
        retrainer: RetrainerLike,
        queue: RetrainQueue,
        settings: Any,
    ) -> None:
        self.database = database
        self.github = github
        self.retrainer = retrainer
        self.queue = queue
        self.settings = settings

    # -- the job ---------------------------------------------------------------------

    def retrain(self, job: RetrainJob, cancel: threading.Event) -> None:
        gh = self.github.for_installation(job.installation_id)
        git_env = clone_credentials(
            gh, job.clone_url, allow_loopback_http=self.settings.allow_loopback_http
        )
        log.info("retraining %s at %s (%s by %s)", job.repo, job.ref, job.trigger, job.actor)
        try:
            result = self.retrainer.retrain(
                job.clone_url,
                job.ref,
                trigger=job.trigger,
                actor=job.actor,
                git_env=git_env,
                cancel=cancel,
                gpu_allowed=job.gpu,
                proposer=GitHubProposer(gh),
            )
        except NeedsGpuWorker:
            if not cancel.is_set():
                self.queue.enqueue_retrain(replace(job, gpu=True))
            return
        if cancel.is_set():
            return  # retried or stopped: the next attempt reports
        self.report(job, result)
        if result.proposal is not None:
            self._evaluate_proposal(job, result)

    def _evaluate_proposal(self, job: RetrainJob, result: RetrainResult) -> None:
        """Evaluate the proposed pull request as a labelled one would be. No label is
        needed: modelci wrote its only change (the refreshed pointers) itself, so no
        outside code runs that a maintainer has not already merged."""
        proposal = result.proposal
        assert proposal is not None
        evaluation = EvaluationJob(
            repo=job.repo,
            number=proposal.number,
            head_sha=proposal.commit_sha,
            base_ref=result.ref,
            clone_url=job.clone_url,
            installation_id=job.installation_id,
            delivery_id=f"retrain-{result.retrain_id}",
        )
        job_id = self.queue.enqueue_evaluation(evaluation)
        log.info("evaluation of proposal #%d queued (job %s)", proposal.number, job_id)

    def _plot(self, result: RetrainResult) -> tuple[str | None, str | None]:
        """The plot's URL (public URL set) or a sparkline of the key metric."""
        if result.retrain_id is None:
            return None, None
        with self.database.session() as session:
            record = retrain_store.get_retrain(session, retrain_id=result.retrain_id)
            if record is None:
                return None, None
            if record.plot_token is None:
                record.plot_token = new_plot_token()
            token = record.plot_token
        public_url = self.settings.public_url
        if public_url:
            return f"{public_url.rstrip('/')}/plots/retrains/{token}.png", None
        series = history_series(_history(self.database, record))
        if not series:
            return None, None
        name, points = next(iter(series.items()))
        line = sparkline(p.new if p.new is not None else p.champion for p in points)
        return None, f"{name}: {line}"

    def report(self, job: RetrainJob, result: RetrainResult) -> None:
        if result.sha is None:
            log.warning(
                "retrain of %s at %s reached no commit: %s", job.repo, job.ref, result.error
            )
            return
        plot_url, spark = self._plot(result)
        body = retrain_markdown(result, history_plot_url=plot_url, sparkline=spark)
        gh = self.github.for_installation(job.installation_id)
        gh.create_commit_comment(job.repo, sha=result.sha, body=body)
        gh.publish_check(
            job.repo,
            head_sha=result.sha,
            name=RETRAIN_CHECK,
            status="completed",
            conclusion=_CONCLUSIONS.get(result.decision, "failure"),
            output=CheckOutput(result.title(), body),
            details_url=result.proposal.url if result.proposal else None,
        )

    # -- schedules -------------------------------------------------------------------

    def refresh_from_config(
        self,
        *,
        repo: str,
        clone_url: str,
        default_branch: str,
        installation_id: int | None,
        config_text: bytes | None,
    ) -> None:
        """Take the repository's schedule from its default branch's ``modelci.yaml``."""
        cron, zone, error = None, "UTC", None
        if config_text is not None:
            try:
                section = parse_config(config_text).retrain
                cron, zone = section.schedule, section.timezone
            except ConfigError as exc:
                error = str(exc)  # the previous schedule stays
        with self.database.session() as session:
            schedules.upsert_repository(
                session,
                repository=repo,
                clone_url=clone_url,
                default_branch=default_branch,
                installation_id=installation_id,
                cron=cron,
                timezone=zone,
                config_error=error,
            )

    def refresh_from_commit(
        self,
        *,
        repo: str,
        clone_url: str,
        branch: str,
        sha: str,
        installation_id: int | None,
        git_env: Mapping[str, str] | None,
    ) -> None:
        """After a delivered push to the default branch: its modelci.yaml's schedule."""
        mirror = open_mirror(clone_url, self.settings.mirrors_dir, git_env=git_env)
        self.refresh_from_config(
            repo=repo,
            clone_url=clone_url,
            default_branch=branch,
            installation_id=installation_id,
            config_text=mirror.read_file(sha, CONFIG_FILE),
        )

    def refresh_after_delivery(self, job: DeliveryJob, git_env: Mapping[str, str]) -> None:
        self.refresh_from_commit(
            repo=job.repo,
            clone_url=job.clone_url,
            branch=job.ref,
            sha=job.sha,
            installation_id=job.installation_id,
            git_env=git_env,
        )

    def refresh_known(self) -> int:
        """At start: re-read every known repository's schedule from its default branch
        (a push missed while the server was down changes nothing otherwise)."""
        with self.database.session() as session:
            known = [
                (r.repository, r.clone_url, r.default_branch, r.installation_id)
                for r in schedules.list_schedules(session)
                if r.source == "config"
            ]
        refreshed = 0
        for repo, clone_url, branch, installation_id in known:
            try:
                gh = self.github.for_installation(installation_id)
                git_env = clone_credentials(
                    gh, clone_url, allow_loopback_http=self.settings.allow_loopback_http
                )
                mirror = open_mirror(clone_url, self.settings.mirrors_dir, git_env=git_env)
                mirror.fetch()
                sha = mirror.resolve(branch)
                self.refresh_from_config(
                    repo=repo,
                    clone_url=clone_url,
                    default_branch=branch,
                    installation_id=installation_id,
                    config_text=mirror.read_file(sha, CONFIG_FILE),
                )
                refreshed += 1
            except ModelCIError as exc:
                log.warning("could not re-read the retrain schedule of %s: %s", repo, exc)
        return refreshed


def dispatch_due(database: Database, queue: RetrainQueue, *, now: dt.datetime) -> list[RetrainJob]:
    """Queue one retrain per due slot that this call claims (once across all callers).

    The claim and the queueing share a transaction: a retrain that could not be
    queued leaves the slot unclaimed, for the next dispatch to try again.
    """
    with database.session() as session:
        rows = [
            (
                r.repository,
                r.clone_url,
                r.default_branch,
                r.installation_id,
                r.cron,
                r.timezone,
                r.last_slot,
            )
            for r in schedules.list_schedules(session, scheduled_only=True)
        ]
    queued = []
    for repo, clone_url, branch, installation_id, cron, zone, last_slot in rows:
        assert cron is not None
        try:
            slot = due_slot(CronSchedule(cron, zone), after=last_slot, now=now)
        except ValueError as exc:  # a schedule stored before a validation change
            log.warning("the retrain schedule of %s is not usable: %s", repo, exc)
            continue
        if slot is None:
            continue
        job = RetrainJob(
            repo=repo,
            ref=branch,
            clone_url=clone_url,
            installation_id=installation_id,
            trigger="schedule",
            actor=f"schedule ({cron}, {zone})",
            slot=slot.isoformat(),
        )
        with database.session() as session:
            if not schedules.claim_slot(session, repository=repo, cron=cron, slot=slot):
                continue  # another dispatcher fired it
            queue.enqueue_retrain(job)
        log.info("scheduled retrain of %s for %s queued", repo, slot.isoformat())
        queued.append(job)
    return queued
