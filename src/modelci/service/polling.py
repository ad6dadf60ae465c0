"""Polling mode (``modelci serve --poll``): GitHub's REST API instead of webhooks.

For a server GitHub cannot reach. Every ``poll_interval_s`` the :class:`Poller`
asks, per repository in ``MODELCI_POLL_REPOSITORIES``, for the open pull
requests and the default branch's head, both as conditional requests (the
previous ETag in ``If-None-Match``): an unchanged answer is a 304, which GitHub
does not count against the rate limit, so an idle repository costs nothing.

What changed since the last look becomes the webhook event GitHub would have
sent (``pull_request`` labeled / unlabeled / synchronize / closed, ``push`` to
the default branch), with a payload shaped like GitHub's so
:func:`~modelci.github.events.classify` reads it, and goes the webhook's way:
stored as a delivery, then queued. Its delivery id is deterministic
(``poll:<repo>#<n>:<action>:<what>``), so seeing the same change twice (a
restart with lost state, a crash between storing and saving state) is
deduplicated by the store exactly like a GitHub redelivery.

Only the trigger label's changes are turned into labeled/unlabeled events,
and ``synchronize`` only for pull requests carrying it: the others would be
stored and ignored. Who applied the label comes from the issue's event log
(the PR list does not say), so the labeler's write permission is checked as
for a webhook. Who pushed is not reported by the API: ``synchronize`` names
the pull request's author, so a push to a labeled fork is run only when the
author has write access (otherwise a maintainer re-applies the label, as with
webhooks). The closer of a pull request is not looked up (nothing uses it).

Rate limits: on top of the client's own handling (waits on 403/429, raises
:class:`RateLimitExceeded` for long waits, which pauses polling until GitHub's
retry time), a round that spent quota reads ``GET /rate_limit`` (free) and,
when less than ``reserve_fraction`` of the hourly quota is left, polling
pauses until the quota resets, leaving the rest to the evaluations' comments
and checks. Rounds never start closer together than ``interval_s``.

State (ETags, each open pull request's head sha, labels and trigger-label
event, the default branch's sha) is kept in ``<data dir>/poll-state.json``,
written atomically after each repository's round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelci.errors import ConfigError, ModelCIError
from modelci.github import (
    GitHubClient,
    GitHubError,
    NotModified,
    PullRequest,
    RateLimitExceeded,
    Repository,
)
from modelci.github.rest import repo_path
from modelci.service.intake import DeliveryQueue, submit_delivery
from modelci.store.db import Database

__all__ = [
    "PollState",
    "Poller",
    "PullState",
    "RepoState",
    "delivery_id",
    "pull_request_json",
    "start_poller",
]

log = logging.getLogger(__name__)

STATE_FILE = "poll-state.json"
_STATE_VERSION = 1
_DELIVERY_ID_MAX = 100  # the store's key length


def delivery_id(text: str) -> str:
    """``text`` as a delivery id; a long one (long repository names) is hashed to fit."""
    if len(text) <= _DELIVERY_ID_MAX:
        return text
    return "poll:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass
class PullState:
    head_sha: str
    labels: list[str]
    updated_at: str | None
    label_event: int | None = None  # id of the trigger label's labeled event acted on


@dataclass
class RepoState:
    etag: str | None = None
    branch_etag: str | None = None
    branch_sha: str | None = None
    pulls: dict[str, PullState] = field(default_factory=dict)


@dataclass
class PollState:
    repos: dict[str, RepoState] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> PollState:
        """The saved state, or an empty one (a broken file is logged, not fatal)."""
        try:
            data = json.loads(path.read_text())
            if data.get("version") != _STATE_VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            return cls(
                repos={
                    name: RepoState(
                        etag=repo.get("etag"),
                        branch_etag=repo.get("branch_etag"),
                        branch_sha=repo.get("branch_sha"),
                        pulls={n: PullState(**p) for n, p in repo.get("pulls", {}).items()},
                    )
                    for name, repo in data["repos"].items()
                }
            )
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Starting over only re-derives events; their delivery ids dedupe them.
            log.warning("ignoring the unreadable polling state %s (%s)", path, exc)
            return cls()

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": _STATE_VERSION,
            "repos": {name: asdict(repo) for name, repo in self.repos.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# -- payloads shaped like GitHub's webhooks -----------------------------------------------


def _repository_json(repo: Repository) -> dict[str, Any]:
    return {
        "full_name": repo.full_name,
        "clone_url": repo.clone_url,
        "default_branch": repo.default_branch,
        "private": repo.private,
    }


def pull_request_json(pr: PullRequest, *, merged: bool | None = None) -> dict[str, Any]:
    """A webhook ``pull_request`` object holding what :func:`pull_request_from_api` reads."""
    head_repo = (
        {"full_name": pr.head_repo, "clone_url": pr.head_clone_url} if pr.head_repo else None
    )
    return {
        "number": pr.number,
        "state": pr.state,
        "title": pr.title,
        "user": {"login": pr.author},
        "head": {"sha": pr.head_sha, "ref": pr.head_ref, "repo": head_repo},
        "base": {"sha": pr.base_sha, "ref": pr.base_ref, "repo": {"full_name": pr.base_repo}},
        "labels": [{"name": name} for name in pr.labels],
        "draft": pr.draft,
        "merged": pr.merged if merged is None else merged,
        "html_url": pr.html_url,
        "updated_at": pr.updated_at,
        "merge_commit_sha": pr.merge_commit_sha,
    }


def _envelope(
    repo: Repository, installation_id: int | None, sender: str | None, **fields: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {**fields, "repository": _repository_json(repo)}
    if sender:
        payload["sender"] = {"login": sender}
    if installation_id is not None:
        payload["installation"] = {"id": installation_id}
    return payload


# -- the poller ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    repo: Repository
    installation_id: int | None


class Poller:
    """Turns what the REST API shows into stored, queued deliveries; see the module doc."""

    def __init__(
        self,
        *,
        github: GitHubClient,
        database: Database,
        queue: DeliveryQueue,
        repositories: list[str],
        label: str,
        state_path: Path,
        interval_s: float = 60.0,
        reserve_fraction: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not repositories:
            raise ConfigError(
                "polling needs repositories to watch",
                hint="set MODELCI_POLL_REPOSITORIES, e.g. '[\"octo/model\"]'",
            )
        for name in repositories:
            try:
                repo_path(name)
            except ValueError:
                raise ConfigError(
                    f"{name!r} in MODELCI_POLL_REPOSITORIES is not an owner/name repository",
                    hint='list repositories as JSON, e.g. \'["octo/model", "octo/other"]\'',
                ) from None
        self.github = github
        self.database = database
        self.queue = queue
        self.repositories = list(dict.fromkeys(repositories))
        self.label = label
        self.state_path = state_path
        self.interval_s = max(1.0, interval_s)
        self.reserve_fraction = reserve_fraction
        self._clock = clock
        self.state = PollState.load(state_path)
        self._targets: dict[str, _Target] = {}
        self._spent = False

    # -- one round ------------------------------------------------------------------------

    def poll_once(self) -> list[str]:
        """Look at every repository once; the ids of the deliveries newly stored.

        A repository that fails (not installed, GitHub down) is logged and
        skipped; rate limits propagate as :class:`RateLimitExceeded`.
        """
        created: list[str] = []
        for name in self.repositories:
            try:
                created += self._poll_repo(name)
            except RateLimitExceeded:
                raise
            except ModelCIError as exc:
                log.warning("polling %s failed: %s", name, exc)
        return created

    def pause_s(self) -> float:
        """Seconds until the next round: the interval, or until the quota resets when low."""
        if not self._spent:
            return self.interval_s
        self._spent = False
        wait = self.interval_s
        # Each installation (or the token's user) has its own quota.
        for installation in {t.installation_id for t in self._targets.values()}:
            try:
                quota = self.github.get_rate_limit(installation_id=installation)
            except ModelCIError as exc:
                log.info("could not read the rate limit: %s", exc)
                continue
            if quota.remaining < quota.limit * self.reserve_fraction:
                wait = max(wait, quota.reset - self._clock())
                log.warning(
                    "GitHub quota low (%d of %d left): polling paused for %.0f s",
                    quota.remaining,
                    quota.limit,
                    wait,
                )
        return wait

    def _target(self, name: str) -> _Target:
        target = self._targets.get(name)
        if target is None:
            installation = self.github.get_repository_installation(name)
            repo = self.github.get_repository(name, installation_id=installation)
            target = self._targets[name] = _Target(repo, installation)
        return target

    def _poll_repo(self, name: str) -> list[str]:
        target = self._target(name)
        state = self.state.repos.setdefault(name, RepoState())
        created: list[str] = []
        page = self.github.list_open_pull_requests(
            name, etag=state.etag, installation_id=target.installation_id
        )
        if not isinstance(page, NotModified):
            self._spent = True
            created += self._diff_pulls(target, state, page.items)
            state.etag = page.etag
            self.state.save(self.state_path)
        created += self._check_branch(target, state)
        self.state.save(self.state_path)
        return created

    def _submit(self, delivery_id: str, event: str, payload: dict[str, Any]) -> list[str]:
        if submit_delivery(
            self.database, self.queue, delivery_id=delivery_id, event=event, payload=payload
        ):
            log.info("polling: %s %s queued", event, delivery_id)
            return [delivery_id]
        return []

    def _pr_event(
        self,
        target: _Target,
        pr: PullRequest,
        action: str,
        *,
        key: str,
        sender: str | None,
        merged: bool | None = None,
    ) -> list[str]:
        full = target.repo.full_name
        fields: dict[str, Any] = {
            "action": action,
            "number": pr.number,
            "pull_request": pull_request_json(pr, merged=merged),
        }
        if action in ("labeled", "unlabeled"):
            fields["label"] = {"name": self.label}
        payload = _envelope(target.repo, target.installation_id, sender, **fields)
        return self._submit(
            delivery_id(f"poll:{full}#{pr.number}:{action}:{key}"), "pull_request", payload
        )

    def _diff_pulls(
        self, target: _Target, state: RepoState, pulls: tuple[PullRequest, ...]
    ) -> list[str]:
        full, iid = target.repo.full_name, target.installation_id
        created: list[str] = []
        seen: dict[str, PullState] = {}
        for pr in pulls:
            prev = state.pulls.get(str(pr.number))
            now = PullState(
                pr.head_sha, list(pr.labels), pr.updated_at, prev.label_event if prev else None
            )
            trigger = self.label.casefold()  # label names are case-insensitive on GitHub
            has = any(name.casefold() == trigger for name in pr.labels)
            had = prev is not None and any(name.casefold() == trigger for name in prev.labels)
            changed = prev is None or (prev.updated_at, prev.head_sha) != (
                pr.updated_at,
                pr.head_sha,
            )
            labeled = False
            if has and changed:
                # Also catches the label removed and applied again between two looks.
                found = self.github.latest_issue_event(
                    full, number=pr.number, event="labeled", label=self.label, installation_id=iid
                )
                if found is not None and found.id != now.label_event:
                    created += self._pr_event(
                        target, pr, "labeled", key=str(found.id), sender=found.actor
                    )
                    now.label_event, labeled = found.id, True
                elif found is None and not had:
                    log.warning("%s#%d carries %r but GitHub lists no labeled event for it",
                                full, pr.number, self.label)  # fmt: skip
            elif had and not has:
                found = self.github.latest_issue_event(
                    full, number=pr.number, event="unlabeled", label=self.label, installation_id=iid
                )
                undone = prev.label_event if prev is not None else None
                key = str(found.id) if found is not None else f"{undone}:{pr.head_sha}"
                created += self._pr_event(
                    target, pr, "unlabeled", key=key, sender=found.actor if found else None
                )
                now.label_event = None
            if prev is not None and has and not labeled and pr.head_sha != prev.head_sha:
                created += self._pr_event(
                    target, pr, "synchronize", key=pr.head_sha, sender=pr.author
                )
            seen[str(pr.number)] = now
        for number, prev in state.pulls.items():
            if number in seen:
                continue
            created += self._closed(target, int(number), prev, seen)
        state.pulls = seen
        return created

    def _closed(
        self, target: _Target, number: int, prev: PullState, seen: dict[str, PullState]
    ) -> list[str]:
        """A pull request gone from the open list: closed or merged (or a race: kept)."""
        try:
            pr = self.github.get_pull_request(
                target.repo.full_name, number=number, installation_id=target.installation_id
            )
        except GitHubError as exc:
            if exc.status == 404:
                return []  # deleted or moved away: nothing to cancel here
            seen[str(number)] = prev  # look again next round
            raise
        if pr.state == "open":
            seen[str(number)] = prev
            return []
        return self._pr_event(
            target, pr, "closed", key=pr.head_sha, sender=pr.author, merged=pr.merged
        )

    def _check_branch(self, target: _Target, state: RepoState) -> list[str]:
        branch = target.repo.default_branch
        answer = self.github.get_branch_head(
            target.repo.full_name,
            branch=branch,
            etag=state.branch_etag,
            installation_id=target.installation_id,
        )
        if isinstance(answer, NotModified):
            return []
        self._spent = True
        sha, state.branch_etag = answer
        before, state.branch_sha = state.branch_sha, sha
        if before is None or before == sha:
            return []  # first look: a baseline, not a push
        payload = _envelope(
            target.repo,
            target.installation_id,
            None,
            ref=f"refs/heads/{branch}",
            before=before,
            after=sha,
            deleted=False,
            created=False,
            forced=False,
        )
        return self._submit(
            delivery_id(f"poll:{target.repo.full_name}:push:{branch}:{before}..{sha}"),
            "push",
            payload,
        )

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; errors are logged and the loop goes on."""
        log.info("polling %s every %.0f s", ", ".join(self.repositories), self.interval_s)
        while not stop.is_set():
            started = time.monotonic()
            pause = self.interval_s
            try:
                self.poll_once()
                pause = self.pause_s()
            except RateLimitExceeded as exc:
                pause = max(self.interval_s, (exc.retry_at or 0) - self._clock())
                log.warning("polling paused %.0f s: %s", pause, exc.message)
            except ModelCIError as exc:
                log.warning("polling failed, trying again in %.0f s: %s", pause, exc)
            except Exception:  # the thread must outlive any bug in one round
                log.exception("polling round failed")
            stop.wait(max(0.0, pause - (time.monotonic() - started)))


def start_poller(
    *,
    github: GitHubClient,
    database: Database,
    queue: DeliveryQueue,
    repositories: list[str],
    label: str,
    data_dir: Path,
    interval_s: float,
    stop: threading.Event,
) -> threading.Thread:
    """Build a :class:`Poller` (checking the settings) and run it in a daemon thread."""
    poller = Poller(
        github=github,
        database=database,
        queue=queue,
        repositories=repositories,
        label=label,
        state_path=data_dir / STATE_FILE,
        interval_s=interval_s,
    )
    thread = threading.Thread(target=poller.run, args=(stop,), name="modelci-poller", daemon=True)
    thread.start()
    return thread
