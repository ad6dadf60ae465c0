"""Monitoring on the server: the periodic drift check, its GitHub alerts and drift retrains.

- :func:`check_drift` runs the :class:`~modelci.monitor.watch.Watcher` over every
  registered model; ``service.jobs`` runs it as a periodic task (once per
  interval across all workers; the watch's claims make each window reported
  once even if two checks overlap).
- :class:`GitHubAlerts` is the watch's alert: one issue per model in the
  repository it was delivered from, opened when its data drifts, its body kept
  current while the drift lasts, a comment and a close once ``close_after``
  windows in a row are clean. With ``MODELCI_DRIFT_WEBHOOK_URL`` each drifting
  window is also POSTed there as JSON. A repository the App is not installed
  on (a local path) gets no issue: the report is still stored and served.
- :class:`QueueRetrains` turns a drift verdict into a retrain of the model's
  repository (trigger ``drift``), through the same job the schedule queues.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

from modelci.github import GitHubClient, GitHubError
from modelci.monitor.watch import Checked, Watcher
from modelci.service.pullrequests import RetrainJob
from modelci.service.retrains import known_retrain
from modelci.store.db import Database

__all__ = ["GitHubAlerts", "QueueRetrains", "check_drift", "drift_issue_body"]

log = logging.getLogger(__name__)
ALERT_LABEL = "modelci-drift"


class RetrainQueue(Protocol):
    def enqueue_retrain(self, job: RetrainJob) -> int | None: ...


def _report_url(public_url: str | None, name: str) -> str | None:
    return f"{public_url.rstrip('/')}/models/{name}/drift" if public_url else None


def drift_issue_body(checked: Checked, report_url: str | None) -> str:
    """The alert's body: the verdict, the drifted columns, the live metric, the report."""
    lines = [
        f"modelci sees **data drift** in the traffic served by `{checked.model_name}` "
        f"v{checked.version}.",
        "",
        f"- window: {checked.rows} rows"
        + (
            f", {checked.window_start:%Y-%m-%d %H:%M} → {checked.window_end:%Y-%m-%d %H:%M} UTC"
            if checked.window_start and checked.window_end
            else ""
        ),
        f"- drifted columns ({checked.share_drifted:.0%}): "
        + (", ".join(f"`{c}`" for c in checked.drifted_columns) or "none"),
    ]
    for metric in checked.live:
        then = (
            f" (at registration {metric.registered:.4g})" if metric.registered is not None else ""
        )
        lines.append(
            f"- live {metric.name} on {metric.rows} labelled rows: {metric.value:.4g}{then}"
        )
    lines += [
        "",
        f"[The drift report]({report_url})"
        if report_url
        else "The report: `modelci drift` on the server, or GET /api/models/NAME/drift "
        "(set MODELCI_PUBLIC_URL to link it here).",
        "",
        "This issue is updated while the drift lasts and closed once the served data "
        "matches the reference again (monitoring.close_after clean windows).",
    ]
    return "\n".join(lines)


class GitHubAlerts:
    def __init__(
        self,
        *,
        github: GitHubClient | None,
        public_url: str | None,
        webhook_url: str | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.github = github
        self.public_url = public_url
        self.webhook_url = webhook_url
        self.http = http

    def _installation(self, repo: str | None) -> int | None:
        if self.github is None or not repo or "/" not in repo or repo.startswith("/"):
            return None
        try:
            return self.github.get_repository_installation(repo)
        except GitHubError as exc:
            log.warning("no drift issue for %s: %s", repo, exc)
            return None

    def drifting(self, checked: Checked, issue_number: int | None) -> int | None:
        self._post_webhook(checked)
        repo = checked.repository
        installation = self._installation(repo)
        if installation is None or repo is None or self.github is None:
            return None
        gh = self.github.for_installation(installation)
        body = drift_issue_body(checked, _report_url(self.public_url, checked.model_name))
        if issue_number is not None:
            gh.update_issue(repo, number=issue_number, body=body)
            return issue_number
        opened = gh.create_issue(
            repo,
            title=f"Data drift in {checked.model_name}",
            body=body,
            labels=[ALERT_LABEL],
        )
        return opened.number

    def cleared(self, checked: Checked, issue_number: int | None) -> None:
        repo = checked.repository
        installation = self._installation(repo)
        if issue_number is None or installation is None or repo is None or self.github is None:
            return
        gh = self.github.for_installation(installation)
        gh.comment_on_issue(
            repo,
            number=issue_number,
            body=f"The served data of `{checked.model_name}` v{checked.version} matches its "
            f"reference again ({checked.rows} rows, "
            f"{checked.share_drifted:.0%} of columns drifting): closing.",
        )
        gh.update_issue(repo, number=issue_number, state="closed")

    def _post_webhook(self, checked: Checked) -> None:
        if not self.webhook_url:
            return
        payload: dict[str, Any] = {
            "event": "drift",
            "model": checked.model_name,
            "version": checked.version,
            "repository": checked.repository,
            "rows": checked.rows,
            "share_drifted": checked.share_drifted,
            "drifted_columns": checked.drifted_columns,
            "report_id": checked.report_id,
            "report_url": _report_url(self.public_url, checked.model_name),
            "live": [metric.as_json() for metric in checked.live],
        }
        try:
            client = self.http or httpx.Client(timeout=10)
            client.post(self.webhook_url, json=payload).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("the drift webhook %s failed: %s", self.webhook_url, exc)


class QueueRetrains:
    """A drift retrain of the model's repository, queued like a scheduled one."""

    def __init__(self, *, database: Database, queue: RetrainQueue) -> None:
        self.database = database
        self.queue = queue

    def retrain(self, checked: Checked, *, reason: str) -> None:
        job = (
            known_retrain(
                self.database,
                checked.repository,
                trigger="drift",
                actor=f"modelci drift monitor: {reason}",
            )
            if checked.repository
            else None
        )
        if job is None:
            log.warning(
                "drift in %s calls for a retrain, but modelci has not seen a push to %s's "
                "default branch: retrain it with `modelci retrain`",
                checked.model_name,
                checked.repository,
            )
            return
        self.queue.enqueue_retrain(job)


def check_drift(
    *,
    database: Database,
    registry: Any,
    github: GitHubClient | None,
    queue: RetrainQueue | None,
    public_url: str | None,
    webhook_url: str | None,
) -> list[Checked]:
    alerts = (
        GitHubAlerts(github=github, public_url=public_url, webhook_url=webhook_url)
        if github is not None or webhook_url
        else None
    )
    retrains = QueueRetrains(database=database, queue=queue) if queue is not None else None
    watcher = Watcher(
        sessions=database.session, registry=registry, alerts=alerts, retrains=retrains
    )
    return watcher.check_all()
