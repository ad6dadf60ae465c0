"""The new-data trigger: a periodic check whether a champion's DVC imports changed.

- :func:`dispatch_checks` (the periodic task ``dispatch_import_checks``, every
  minute) claims each known repository's check once per
  ``MODELCI_IMPORT_CHECK_INTERVAL`` (``store.importchecks.claim_check``) and
  queues a ``check_imports`` job: the check itself runs on a worker, never in
  the web process.
- :meth:`ImportChecker.check` fetches the repository, reads its default branch's
  import pointers from git (none: done), and when the model has a champion runs
  ``dvc update`` on them in the fetch sandbox (``retrain.refresh``). When the
  data version this gives differs from the champion's and from the last data
  retrain's, it claims that version (``claim_version``: once across workers) and
  queues one retrain with trigger ``data``, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from modelci.data.imports import ImportRefresh
from modelci.data.versions import data_version
from modelci.retrain.refresh import imports_at
from modelci.retrain.retrainer import repository_key
from modelci.runner.checkout import Mirror, open_mirror
from modelci.service.pullrequests import RetrainJob
from modelci.store import importchecks, schedules
from modelci.store import retrains as retrain_store
from modelci.store.db import Database

__all__ = ["ImportCheckJob", "ImportChecker", "dispatch_checks", "server_checker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportCheckJob:
    """Everything a worker needs to check one repository's imports."""

    repo: str  # owner/name
    ref: str  # the default branch
    clone_url: str
    installation_id: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CheckQueue(Protocol):
    def enqueue_import_check(self, job: ImportCheckJob) -> int | None: ...
    def enqueue_retrain(self, job: RetrainJob) -> int | None: ...


# The small interfaces the checker runs on (the server gives it the evaluator's and
# the registry's; tests may give their own):
# (mirror, sha, repo, cancel) -> what changed at the sources
Refresh = Callable[[Mirror, str, str, threading.Event | None], ImportRefresh]
# (mirror, sha, repo) -> the data version of the champion of the model the commit
# delivers, or None when the model has no champion (nothing to retrain against)
ChampionData = Callable[[Mirror, str, str], Mapping[str, str] | None]


def dispatch_checks(
    database: Database, queue: CheckQueue, *, now: dt.datetime, interval_s: float
) -> list[ImportCheckJob]:
    """Queue a check of each known repository whose last one is ``interval_s`` old."""
    with database.session() as session:
        rows = [
            (r.repository, r.default_branch, r.clone_url, r.installation_id)
            for r in schedules.list_schedules(session)
        ]
    queued = []
    for repo, branch, clone_url, installation_id in rows:
        job = ImportCheckJob(repo, branch, clone_url, installation_id)
        with database.session() as session:
            interval = dt.timedelta(seconds=interval_s)
            if not importchecks.claim_check(session, repository=repo, now=now, interval=interval):
                continue
            queue.enqueue_import_check(job)
        queued.append(job)
    return queued


def version_key(version: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(version.items())), separators=(",", ":"))


class ImportChecker:
    def __init__(
        self,
        *,
        database: Database,
        queue: CheckQueue,
        mirrors_dir: Any,
        refresh: Refresh,
        champion_data: ChampionData,
        git_env: Callable[[ImportCheckJob], Mapping[str, str] | None] = lambda job: None,
    ) -> None:
        self.database = database
        self.queue = queue
        self.mirrors_dir = mirrors_dir
        self.refresh = refresh
        self.champion_data = champion_data
        self.git_env = git_env

    def run(self, job: ImportCheckJob, cancel: threading.Event) -> None:
        """The job: check, queue a retrain when the data moved."""
        self.check(job, cancel)

    def check(
        self, job: ImportCheckJob, cancel: threading.Event | None = None
    ) -> RetrainJob | None:
        """The retrain this check queued, if any."""
        mirror = open_mirror(job.clone_url, self.mirrors_dir, git_env=self.git_env(job))
        mirror.fetch()
        sha = mirror.resolve(job.ref)
        if not imports_at(mirror, sha):
            return None
        champion = self.champion_data(mirror, sha, job.clone_url)
        if champion is None:
            return None  # nothing delivered yet: a delivery, not a retrain, comes first
        refresh = self.refresh(mirror, sha, job.clone_url, cancel)
        version = data_version(mirror, sha, refresh.changed)
        if version == dict(champion) or version == self._last_data_retrain(job):
            return None
        retrain = RetrainJob(
            repo=job.repo,
            ref=job.ref,
            clone_url=job.clone_url,
            installation_id=job.installation_id,
            trigger="data",
            actor="modelci new-data check",
        )
        with self.database.session() as session:
            now = dt.datetime.now(dt.UTC)
            key = version_key(version)
            if not importchecks.claim_version(session, repository=job.repo, version=key, now=now):
                return None  # another check queued this data already
            self.queue.enqueue_retrain(retrain)
        changed = ", ".join(f"{p} ({refresh.sources[p]})" for p in refresh.changed)
        log.info("new data for %s: %s; retrain queued", job.repo, changed or "pointers moved")
        return retrain

    def _last_data_retrain(self, job: ImportCheckJob) -> dict[str, str] | None:
        with self.database.session() as session:
            for record in retrain_store.list_retrains(
                session, repository=repository_key(job.clone_url), limit=50
            ):
                if record.trigger == "data" and record.decision != "running":
                    return dict(record.data_version or {})
        return None


def server_checker(
    database: Database, queue: CheckQueue, github: Any, deliverer: Any, settings: Any
) -> ImportChecker:
    """The checker ``modelci serve`` and ``worker`` run: the evaluator's fetch sandbox,
    the registry's champions, the GitHub App's clone credentials."""
    from modelci.deliver.delivery import model_name_for
    from modelci.deliver.deliverykey import delivery_config
    from modelci.retrain.refresh import refresh_imports
    from modelci.service.evaluations import clone_credentials

    def refresh(
        mirror: Mirror, sha: str, repo: str, cancel: threading.Event | None
    ) -> ImportRefresh:
        return refresh_imports(deliverer.evaluator, mirror, sha, repo=repo, cancel=cancel)

    def champion_data(mirror: Mirror, sha: str, repo: str) -> Mapping[str, str] | None:
        name = model_name_for(repo, delivery_config(mirror, sha))
        champion = deliverer.registry.champion(name)
        return None if champion is None else dict(champion.data_version or {})

    def git_env(job: ImportCheckJob) -> Mapping[str, str] | None:
        gh = github.for_installation(job.installation_id)
        return clone_credentials(
            gh, job.clone_url, allow_loopback_http=settings.allow_loopback_http
        )

    return ImportChecker(
        database=database,
        queue=queue,
        mirrors_dir=settings.mirrors_dir,
        refresh=refresh,
        champion_data=champion_data,
        git_env=git_env,
    )
