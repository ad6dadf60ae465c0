"""A small synchronous client for the parts of GitHub's REST API modelci uses.

Methods take keyword-only arguments and return the small values of
:mod:`modelci.github.models`. A client is bound to no installation: pass
``installation_id=`` per call, or use :meth:`~RestClient.for_installation`.
Retries, rate limits, concurrency and errors are handled underneath, in
:class:`~modelci.github.rest.RestClient`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, NamedTuple

from modelci.github.auth import AppAuth
from modelci.github.errors import GitHubError
from modelci.github.events import PullRequest, Repository, pull_request_from_api
from modelci.github.gitdata import GitDataMixin
from modelci.github.issues import IssuesMixin
from modelci.github.models import (
    CHECK_TEXT_LIMIT,
    COMMENT_LIMIT,
    STATUS_DESCRIPTION_LIMIT,
    Branch,
    CheckOutput,
    CheckRun,
    CollaboratorPermission,
    CommentRef,
    CommitStatus,
    NotModified,
    PublishedCheck,
    PullRequestPage,
    render_comment,
    status_state,
    truncate,
)
from modelci.github.oauth import OAuthMixin
from modelci.github.rest import RestClient, quote, repo_path

__all__ = ["GitHubClient", "IssueEvent", "RateLimit"]

log = logging.getLogger(__name__)


class IssueEvent(NamedTuple):
    """One entry of an issue's event log: who did what (``labeled``, ...), when."""

    id: int
    event: str
    actor: str
    label: str | None
    created_at: str


class RateLimit(NamedTuple):
    """The primary ``core`` quota: requests left until ``reset`` (epoch seconds)."""

    limit: int
    remaining: int
    reset: float


class GitHubClient(OAuthMixin, GitDataMixin, IssuesMixin, RestClient):
    """The endpoints modelci calls; see :class:`RestClient` for the constructor.

    The Git Data API and pull request writes (proposal mode) are in
    :class:`~modelci.github.gitdata.GitDataMixin`; issues (drift alerts) in
    :class:`~modelci.github.issues.IssuesMixin`; signing people in (the OAuth web
    flow, their repositories) in :class:`~modelci.github.oauth.OAuthMixin`.
    """

    def get_collaborator_permission(
        self, repo: str, *, username: str, installation_id: int | None = None
    ) -> CollaboratorPermission:
        """``GET /repos/{o}/{r}/collaborators/{user}/permission``."""
        data = self._request(
            "GET",
            f"{repo_path(repo)}/collaborators/{quote(username)}/permission",
            installation_id=installation_id,
        ).json()
        return CollaboratorPermission(
            permission=str(data.get("permission", "none")),
            role_name=str(data.get("role_name", "")),
        )

    def has_write_access(
        self, repo: str, *, username: str, installation_id: int | None = None
    ) -> bool:
        """Whether ``username`` may trigger evaluations: write, maintain or admin.

        Triage can add labels but is not enough. An unknown user (404) has no access.
        """
        try:
            permission = self.get_collaborator_permission(
                repo, username=username, installation_id=installation_id
            )
        except GitHubError as exc:
            if exc.status == 404:
                return False
            raise
        return permission.can_write

    def find_comment(
        self,
        repo: str,
        *,
        issue_number: int,
        marker: str,
        author: str | None = None,
        installation_id: int | None = None,
    ) -> int | None:
        """The id of the oldest comment containing ``marker`` (by ``author`` if given)."""
        for comment in self._paginate(
            f"{repo_path(repo)}/issues/{quote(issue_number)}/comments",
            params={"per_page": 100},
            installation_id=installation_id,
        ):
            body = comment.get("body") or ""
            login = (comment.get("user") or {}).get("login")
            if marker in body and (author is None or login == author):
                return int(comment["id"])
        return None

    def upsert_comment(
        self,
        repo: str,
        *,
        issue_number: int,
        marker: str,
        body: str,
        comment_id: int | None = None,
        installation_id: int | None = None,
    ) -> CommentRef:
        """Write modelci's one comment on the issue or PR: update it if it exists, else create it.

        ``marker`` (from :func:`comment_marker`) is put first in the body; the
        body is truncated to GitHub's limit. ``comment_id``, when known from a
        previous call, saves listing the comments. Only comments by modelci's
        own login count, so nobody can plant a marker to have theirs overwritten.
        Calls for one comment are serialized within this process; callers in
        different processes must not write the same PR's comment at once.
        """
        full = render_comment(marker, body)
        lock_key = (repo, issue_number, marker)
        with self._guard:
            lock = self._comment_locks.setdefault(lock_key, threading.Lock())
        with lock:
            if comment_id is None:
                comment_id = self.find_comment(
                    repo,
                    issue_number=issue_number,
                    marker=marker,
                    author=self.identity(installation_id=installation_id),
                    installation_id=installation_id,
                )
            if comment_id is not None:
                try:
                    data = self._request(
                        "PATCH",
                        f"{repo_path(repo)}/issues/comments/{quote(comment_id)}",
                        json={"body": full},
                        installation_id=installation_id,
                    ).json()
                    return CommentRef(int(data["id"]), str(data.get("html_url", "")), False)
                except GitHubError as exc:
                    if exc.status != 404:  # someone deleted it: write a new one
                        raise
            data = self._request(
                "POST",
                f"{repo_path(repo)}/issues/{quote(issue_number)}/comments",
                json={"body": full},
                installation_id=installation_id,
            ).json()
            return CommentRef(int(data["id"]), str(data.get("html_url", "")), True)

    def create_commit_comment(
        self, repo: str, *, sha: str, body: str, installation_id: int | None = None
    ) -> CommentRef:
        """``POST /repos/{o}/{r}/commits/{sha}/comments``: a new comment on the commit.

        One per call, never updated: a retrain reports on the commit it retrained,
        and each retrain of it gets its own comment, as CML's commit comments do.
        """
        data = self._request(
            "POST",
            f"{repo_path(repo)}/commits/{quote(sha)}/comments",
            json={"body": truncate(body, COMMENT_LIMIT, what="comment")},
            installation_id=installation_id,
        ).json()
        return CommentRef(int(data["id"]), str(data.get("html_url", "")), True)

    @staticmethod
    def _output(output: CheckOutput) -> dict[str, str]:
        data = {
            "title": output.title,
            "summary": truncate(output.summary, CHECK_TEXT_LIMIT, what="summary"),
        }
        if output.text is not None:
            data["text"] = truncate(output.text, CHECK_TEXT_LIMIT, what="text")
        return data

    @staticmethod
    def _check_run(data: Any) -> CheckRun:
        return CheckRun(
            id=int(data["id"]),
            html_url=str(data.get("html_url", "")),
            status=str(data.get("status", "")),
            conclusion=data.get("conclusion"),
        )

    def create_check_run(
        self,
        repo: str,
        *,
        head_sha: str,
        name: str,
        status: str = "queued",
        conclusion: str | None = None,
        output: CheckOutput | None = None,
        details_url: str | None = None,
        external_id: str | None = None,
        installation_id: int | None = None,
    ) -> CheckRun:
        """``POST /repos/{o}/{r}/check-runs`` (GitHub Apps only)."""
        payload: dict[str, Any] = {"name": name, "head_sha": head_sha, "status": status}
        optional = {
            "conclusion": conclusion,
            "details_url": details_url,
            "external_id": external_id,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        if output is not None:
            payload["output"] = self._output(output)
        return self._check_run(
            self._request(
                "POST",
                f"{repo_path(repo)}/check-runs",
                json=payload,
                installation_id=installation_id,
            ).json()
        )

    def find_check_run(
        self, repo: str, *, head_sha: str, name: str, installation_id: int | None = None
    ) -> CheckRun | None:
        """The newest check run of this app named ``name`` on ``head_sha``, if any.

        ``GET /repos/{o}/{r}/commits/{ref}/check-runs?check_name=...&filter=latest``:
        a retried job finds the run its killed attempt opened and completes it,
        instead of leaving it "in progress" beside a new one.
        """
        data = self._request(
            "GET",
            f"{repo_path(repo)}/commits/{quote(head_sha)}/check-runs",
            params={"check_name": name, "filter": "latest", "per_page": 100},
            installation_id=installation_id,
        ).json()
        runs = [r for r in data.get("check_runs", []) if r.get("name") == name]
        if not runs:
            return None
        return self._check_run(max(runs, key=lambda r: int(r["id"])))

    def update_check_run(
        self,
        repo: str,
        *,
        check_run_id: int,
        status: str | None = None,
        conclusion: str | None = None,
        output: CheckOutput | None = None,
        details_url: str | None = None,
        installation_id: int | None = None,
    ) -> CheckRun:
        """``PATCH /repos/{o}/{r}/check-runs/{id}``; a conclusion completes the run."""
        payload: dict[str, Any] = {
            k: v
            for k, v in {
                "status": status,
                "conclusion": conclusion,
                "details_url": details_url,
            }.items()
            if v is not None
        }
        if output is not None:
            payload["output"] = self._output(output)
        return self._check_run(
            self._request(
                "PATCH",
                f"{repo_path(repo)}/check-runs/{quote(check_run_id)}",
                json=payload,
                installation_id=installation_id,
            ).json()
        )

    def create_commit_status(
        self,
        repo: str,
        *,
        sha: str,
        state: str,
        context: str,
        description: str | None = None,
        target_url: str | None = None,
        installation_id: int | None = None,
    ) -> CommitStatus:
        """``POST /repos/{o}/{r}/statuses/{sha}``; the description is cut to 140 characters."""
        payload: dict[str, Any] = {"state": state, "context": context}
        if description is not None:
            if len(description) > STATUS_DESCRIPTION_LIMIT:
                description = description[: STATUS_DESCRIPTION_LIMIT - 1] + "…"
            payload["description"] = description
        if target_url is not None:
            payload["target_url"] = target_url
        data = self._request(
            "POST",
            f"{repo_path(repo)}/statuses/{quote(sha)}",
            json=payload,
            installation_id=installation_id,
        ).json()
        return CommitStatus(int(data["id"]), str(data["state"]), str(data["context"]))

    def publish_check(
        self,
        repo: str,
        *,
        head_sha: str,
        name: str,
        status: str,
        output: CheckOutput,
        conclusion: str | None = None,
        details_url: str | None = None,
        check_run_id: int | None = None,
        installation_id: int | None = None,
    ) -> PublishedCheck:
        """Report on a commit as a check run when GitHub allows it, else as a commit status.

        A plain token is tried for check runs once (an Actions token may create
        them); after a 403 this client uses commit statuses for that repository.
        """
        if self.auth.is_app or repo not in self._checks_refused:
            try:
                if check_run_id is None:
                    run = self.create_check_run(
                        repo,
                        head_sha=head_sha,
                        name=name,
                        status=status,
                        conclusion=conclusion,
                        output=output,
                        details_url=details_url,
                        installation_id=installation_id,
                    )
                else:
                    run = self.update_check_run(
                        repo,
                        check_run_id=check_run_id,
                        status=status,
                        conclusion=conclusion,
                        output=output,
                        details_url=details_url,
                        installation_id=installation_id,
                    )
                return PublishedCheck("check_run", run.id, run.html_url)
            except GitHubError as exc:
                if self.auth.is_app or exc.status != 403:
                    raise
                log.info("check runs refused for a plain token on %s; using commit statuses", repo)
                self._checks_refused.add(repo)
        made = self.create_commit_status(
            repo,
            sha=head_sha,
            state=status_state(status, conclusion),
            context=name,
            description=output.title,
            target_url=details_url,
            installation_id=installation_id,
        )
        return PublishedCheck("commit_status", made.id, None)

    def get_pull_request(
        self, repo: str, *, number: int, installation_id: int | None = None
    ) -> PullRequest:
        """``GET /repos/{o}/{r}/pulls/{n}``."""
        data = self._request(
            "GET", f"{repo_path(repo)}/pulls/{quote(number)}", installation_id=installation_id
        ).json()
        return pull_request_from_api(data)

    def list_open_pull_requests(
        self, repo: str, *, etag: str | None = None, installation_id: int | None = None
    ) -> PullRequestPage | NotModified:
        """All open PRs, most recently updated first, or :class:`NotModified`.

        For polling: pass the previous answer's ``etag``. Sorting by update
        time puts every changed PR on the first page, whose ETag is the one
        compared; a PR closed while beyond the first 100 can go unnoticed.
        """
        path = f"{repo_path(repo)}/pulls"
        params: dict[str, str | int] = {
            "state": "open",
            "sort": "updated",
            "direction": "desc",
            "per_page": 100,
        }
        first = self._request(
            "GET",
            path,
            params=params,
            headers={"If-None-Match": etag} if etag else None,
            installation_id=installation_id,
        )
        if first.status_code == 304:
            return NotModified(etag or "")
        items = list(first.json())
        next_url = first.links.get("next", {}).get("url")
        if next_url:
            items.extend(self._paginate(next_url, params=None, installation_id=installation_id))
        return PullRequestPage(
            items=tuple(pull_request_from_api(item) for item in items),
            etag=first.headers.get("etag"),
        )

    def get_branch(self, repo: str, *, branch: str, installation_id: int | None = None) -> Branch:
        """``GET /repos/{o}/{r}/branches/{branch}``."""
        data = self._request(
            "GET", f"{repo_path(repo)}/branches/{quote(branch)}", installation_id=installation_id
        ).json()
        return Branch(
            name=str(data["name"]),
            sha=str(data["commit"]["sha"]),
            protected=bool(data.get("protected")),
        )

    # -- polling --------------------------------------------------------------------

    def get_repository(self, repo: str, *, installation_id: int | None = None) -> Repository:
        """``GET /repos/{o}/{r}``: its full name, clone URL and default branch."""
        data = self._request("GET", repo_path(repo), installation_id=installation_id).json()
        return Repository.from_payload(data, where="repository answer")

    def get_repository_installation(self, repo: str) -> int | None:
        """``GET /repos/{o}/{r}/installation`` as the App: the id of its installation there.

        ``None`` with a plain token, which needs no installation.
        """
        if not isinstance(self.auth, AppAuth):
            return None
        data = self._request(
            "GET", f"{repo_path(repo)}/installation", app_jwt=self.auth.jwt()
        ).json()
        return int(data["id"])

    def latest_issue_event(
        self,
        repo: str,
        *,
        number: int,
        event: str,
        label: str | None = None,
        installation_id: int | None = None,
    ) -> IssueEvent | None:
        """``GET /repos/{o}/{r}/issues/{n}/events``: the newest ``event`` (for ``label``).

        The pull request list does not say who applied a label; this does
        (``actor``), so the labeler's permission can be checked as for a webhook.
        """
        found: IssueEvent | None = None
        for item in self._paginate(
            f"{repo_path(repo)}/issues/{quote(number)}/events",
            params={"per_page": 100},
            installation_id=installation_id,
        ):
            if not isinstance(item, dict) or item.get("event") != event:
                continue
            name = (item.get("label") or {}).get("name")
            # Label names are case-insensitive on GitHub.
            if label is not None and (
                not isinstance(name, str) or name.casefold() != label.casefold()
            ):
                continue
            current = IssueEvent(
                id=int(item["id"]),
                event=event,
                actor=str((item.get("actor") or {}).get("login") or ""),
                label=name if isinstance(name, str) else None,
                created_at=str(item.get("created_at") or ""),
            )
            # The list is oldest first, but compare ids rather than trust the order.
            if found is None or current.id > found.id:
                found = current
        return found

    def get_branch_head(
        self,
        repo: str,
        *,
        branch: str,
        etag: str | None = None,
        installation_id: int | None = None,
    ) -> tuple[str, str | None] | NotModified:
        """``GET /repos/{o}/{r}/git/ref/heads/{branch}``: (sha, etag), or :class:`NotModified`.

        Conditional like :meth:`list_open_pull_requests`: an unchanged branch
        costs no rate limit.
        """
        response = self._request(
            "GET",
            f"{repo_path(repo)}/git/ref/heads/{'/'.join(quote(p) for p in branch.split('/'))}",
            headers={"If-None-Match": etag} if etag else None,
            installation_id=installation_id,
        )
        if response.status_code == 304:
            return NotModified(etag or "")
        data = response.json()
        return str(data["object"]["sha"]), response.headers.get("etag")

    def get_rate_limit(self, *, installation_id: int | None = None) -> RateLimit:
        """``GET /rate_limit``: the core quota left; GitHub does not count this call."""
        data = self._request("GET", "/rate_limit", installation_id=installation_id).json()
        core = data["resources"]["core"]
        return RateLimit(int(core["limit"]), int(core["remaining"]), float(core["reset"]))
