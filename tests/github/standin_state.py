"""In-memory state of the stand-in GitHub: repositories, tokens, comments, checks.

Tests arrange it (``add_repo``, ``add_pull``, ``set_role``, ``fail_next``...)
and inspect it (``requests``, ``comments``, ``check_runs``...). The ASGI app
in :mod:`tests.github.standin` serves it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DOCS = "https://docs.github.com/rest"
# An installation's repository permissions unless a test sets others: what the
# README asks an App for before proposal mode (contents read-only).
APP_PERMISSIONS = {
    "checks": "write",
    "issues": "write",
    "pull_requests": "write",
    "contents": "read",
    "metadata": "read",
}
# The legacy ``permission`` of each role, as GitHub reports it.
ROLE_PERMISSION = {
    "admin": "admin",
    "maintain": "write",
    "write": "write",
    "triage": "read",
    "read": "read",
    "none": "none",
}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Recorded:
    """One request as the stand-in received it (header names lower-case)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class Token:
    value: str
    # "installation", "classic" (ghp_), "fine-grained" (github_pat_) or "user" (ghu_:
    # a person signed in to the App, see standin_oauth)
    kind: str
    login: str
    installation_id: int | None = None
    expires_at: float | None = None
    # An installation token's permissions, fixed when it was issued (None: a personal token).
    permissions: dict[str, str] | None = None

    def may(self, permission: str, access: str) -> bool:
        """Whether the token holds ``permission`` at ``access`` ("read" or "write")."""
        if self.permissions is None:
            return True
        held = self.permissions.get(permission)
        return held == "write" or (access == "read" and held == "read")


@dataclass
class Fault:
    """An injected answer for the next matching request(s)."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    path_contains: str
    times: int


@dataclass
class Repo:
    full_name: str
    installation_id: int
    default_branch: str = "main"
    roles: dict[str, str] = field(default_factory=dict)
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    clone_url: str | None = None  # where clients clone from (see serve_git)
    git_dir: Path | None = None  # the repository served over smart HTTP at clone_url
    # Per issue number, oldest first, as GET /repos/{o}/{r}/issues/{n}/events lists them.
    issue_events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    # Issues that are not pull requests (they share one sequence of numbers).
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)

    def next_number(self) -> int:
        return max([0, *self.pulls, *self.issues]) + 1


class StandInState:
    """Everything the stand-in knows; one per test."""

    def __init__(self, *, app_id: int, public_key_pem: bytes, host_url: str) -> None:
        self.app_id = app_id
        self.app_slug = "modelci-test"
        self.public_key_pem = public_key_pem
        self.host_url = host_url
        self.clock: Callable[[], float] = time.time
        self.token_lifetime_s = 3600.0
        self.installations: set[int] = set()
        # Per installation; tokens issued later carry them (see APP_PERMISSIONS).
        self.permissions: dict[int, dict[str, str]] = {}
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, Token] = {}
        self.requests: list[Recorded] = []
        self.jwt_claims: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.comments: list[dict[str, Any]] = []  # each has "_repo" and "_issue"
        self.commit_comments: list[dict[str, Any]] = []  # each has "_repo"
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.issued_tokens: list[str] = []
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.gather_in_flight = 0  # requests wait until this many were once in flight (10 s)
        self._ids = itertools.count(1001)
        # GitHub's primary limit, per installation (or per user for a personal token).
        self.rate_limit = 5000
        self.rate_used: dict[object, int] = {}

    # -- arranging -------------------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids)

    def add_repo(
        self, full_name: str, *, installation_id: int = 1, default_branch: str = "main"
    ) -> Repo:
        self.installations.add(installation_id)
        repo = Repo(full_name, installation_id, default_branch, branches={default_branch: "b" * 40})
        self.repos[full_name] = repo
        return repo

    def serve_git(self, full_name: str, path: Path) -> str:
        """Serve the git repository at ``path`` as ``full_name`` over smart HTTP, as
        github.com does (a token is required); returns its clone URL."""
        repo = self.repos[full_name]
        repo.git_dir = path
        repo.clone_url = f"{self.host_url}/{full_name}.git"
        return repo.clone_url

    def branch_sha(self, full_name: str, branch: str) -> str | None:
        """A branch's head: what the test arranged (``branches``), else the served
        repository's own branch (see :meth:`serve_git`)."""
        repo = self.repos[full_name]
        if branch in repo.branches:
            return repo.branches[branch]
        if repo.git_dir is None:
            return None
        done = subprocess.run(
            [
                "git",
                "-C",
                str(repo.git_dir),
                "rev-parse",
                "--verify",
                "--quiet",
                f"refs/heads/{branch}^{{commit}}",
            ],
            capture_output=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"},
        )
        return done.stdout.decode().strip() or None

    def set_role(self, full_name: str, login: str, role: str) -> None:
        self.repos[full_name].roles[login] = role

    def add_pat(self, value: str, *, login: str = "octocat") -> None:
        kind = "fine-grained" if value.startswith("github_pat_") else "classic"
        self.tokens[value] = Token(value, kind, login)

    def add_pull(
        self,
        full_name: str,
        number: int,
        *,
        head_sha: str = "a" * 40,
        base_sha: str = "b" * 40,
        head_ref: str = "feature",
        labels: tuple[str, ...] = (),
        fork: str | None = None,
        updated_at: float | None = None,
        labeled_by: str = "maintainer",
        author: str = "contributor",
    ) -> dict[str, Any]:
        repo = self.repos[full_name]
        head_repo = fork or full_name
        pull = {
            "number": number,
            "state": "open",
            "title": f"PR {number}",
            "body": None,
            "head_sha": head_sha,
            "head_ref": head_ref,
            "head_repo": head_repo,
            "base_sha": base_sha,
            "base_ref": repo.default_branch,
            "labels": [],
            "updated_at": updated_at if updated_at is not None else self.clock(),
            "author": author,
            "merged": False,
        }
        repo.pulls[number] = pull
        for label in labels:
            self.label_pull(full_name, number, label, by=labeled_by, updated_at=updated_at)
        return pull

    def _issue_event(
        self, full_name: str, number: int, event: str, actor: str, label: str | None
    ) -> None:
        eid = self.next_id()
        item: dict[str, Any] = {
            "id": eid,
            "node_id": f"LE_{eid}",
            "url": f"{self.host_url}/repos/{full_name}/issues/events/{eid}",
            "actor": self.user(actor),
            "event": event,
            "commit_id": None,
            "commit_url": None,
            "created_at": iso(self.clock()),
            "performed_via_github_app": None,
        }
        if label is not None:
            item["label"] = {"name": label, "color": "ededed"}
        self.repos[full_name].issue_events.setdefault(number, []).append(item)

    def _touch(self, pull: dict[str, Any], updated_at: float | None = None) -> None:
        # Strictly later, so a change within one clock second still changes updated_at.
        pull["updated_at"] = max(
            updated_at if updated_at is not None else self.clock(), pull["updated_at"] + 1
        )

    def label_pull(
        self,
        full_name: str,
        number: int,
        label: str,
        *,
        by: str = "maintainer",
        updated_at: float | None = None,
    ) -> None:
        """Apply ``label`` as ``by``, recording the ``labeled`` issue event as GitHub does."""
        pull = self.repos[full_name].pulls[number]
        if label not in pull["labels"]:
            pull["labels"].append(label)
            self._issue_event(full_name, number, "labeled", by, label)
            self._touch(pull, updated_at)

    def unlabel_pull(
        self, full_name: str, number: int, label: str, *, by: str = "maintainer"
    ) -> None:
        pull = self.repos[full_name].pulls[number]
        if label in pull["labels"]:
            pull["labels"].remove(label)
            self._issue_event(full_name, number, "unlabeled", by, label)
            self._touch(pull)

    def push_pull(self, full_name: str, number: int, head_sha: str) -> None:
        """New commits on the pull request's head branch."""
        pull = self.repos[full_name].pulls[number]
        pull["head_sha"] = head_sha
        self._touch(pull)

    def close_pull(
        self, full_name: str, number: int, *, merged: bool = False, by: str = "maintainer"
    ) -> None:
        """Close (or merge, which also moves the base branch to ``head_sha``)."""
        repo = self.repos[full_name]
        pull = repo.pulls[number]
        pull["state"], pull["merged"] = "closed", merged
        self._issue_event(full_name, number, "merged" if merged else "closed", by, None)
        self._touch(pull)
        if merged:
            repo.branches[pull["base_ref"]] = pull["head_sha"]

    def charge(self, who: object, status: int) -> dict[str, str]:
        """Count a request against the caller's primary limit; the headers GitHub sends.

        As on GitHub, a 304 answer to a conditional request is not counted.
        """
        if isinstance(who, Token):
            key: object = (
                ("installation", who.installation_id)
                if who.kind == "installation"
                else ("user", who.login)
            )
        else:
            return {}
        if status != 304:
            self.rate_used[key] = self.rate_used.get(key, 0) + 1
        used = self.rate_used.get(key, 0)
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(max(0, self.rate_limit - used)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-reset": str(int(self.clock()) + 3600),
            "x-ratelimit-resource": "core",
        }

    def rate_used_by(self, installation_id: int) -> int:
        return self.rate_used.get(("installation", installation_id), 0)

    def add_comment(self, full_name: str, issue: int, body: str, *, login: str) -> dict[str, Any]:
        comment = self.make_comment(full_name, issue, body, {"login": login, "type": "User"})
        self.comments.append(comment)
        return comment

    def fail_next(
        self,
        status: int = 403,
        *,
        retry_after: int | None = None,
        reset_in: float | None = None,
        secondary: bool = False,
        times: int = 1,
        path_contains: str = "",
    ) -> None:
        """Answer the next ``times`` matching requests with a rate-limit error.

        ``retry_after`` sets that header; ``reset_in`` exhausts the primary
        quota (``x-ratelimit-remaining: 0``, reset that many seconds from the
        stand-in's clock); ``secondary`` gives the secondary-limit message
        without either header.
        """
        headers: dict[str, str] = {}
        message = "API rate limit exceeded for installation ID 1."
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if reset_in is not None:
            headers.update(
                {
                    "x-ratelimit-limit": "5000",
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(int(self.clock() + reset_in)),
                }
            )
        if secondary or retry_after is not None:
            message = (
                "You have exceeded a secondary rate limit. Please wait a few minutes before "
                "you try again."
            )
        body = {
            "message": message,
            "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api",
        }
        self.faults.append(Fault(status, headers, body, path_contains, times))

    # -- serving helpers -------------------------------------------------------------

    def take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path_contains in path and fault.times > 0:
                fault.times -= 1
                return fault
        return None

    def installation_permissions(self, installation_id: int) -> dict[str, str]:
        return dict(self.permissions.get(installation_id, APP_PERMISSIONS))

    def issue_token(self, installation_id: int, permissions: dict[str, str] | None = None) -> Token:
        value = "ghs_" + secrets.token_hex(18)
        token = Token(
            value,
            "installation",
            f"{self.app_slug}[bot]",
            installation_id,
            self.clock() + self.token_lifetime_s,
            permissions
            if permissions is not None
            else self.installation_permissions(installation_id),
        )
        self.tokens[value] = token
        self.issued_tokens.append(value)
        return token

    def user(self, login: str) -> dict[str, Any]:
        bot = login.endswith("[bot]")
        return {
            "login": login,
            "id": abs(hash(login)) % 10**8,
            "node_id": "MDQ6VXNlcjE=",
            "type": "Bot" if bot else "User",
            "site_admin": False,
            "html_url": f"https://github.com/{login}",
        }

    def make_comment(
        self, full_name: str, issue: int, body: str, user: dict[str, Any]
    ) -> dict[str, Any]:
        cid = self.next_id()
        now = iso(self.clock())
        return {
            "_repo": full_name,
            "_issue": issue,
            "id": cid,
            "node_id": f"IC_{cid}",
            "url": f"{self.host_url}/repos/{full_name}/issues/comments/{cid}",
            "html_url": f"https://github.com/{full_name}/pull/{issue}#issuecomment-{cid}",
            "issue_url": f"{self.host_url}/repos/{full_name}/issues/{issue}",
            "body": body,
            "user": user if "id" in user else self.user(user["login"]),
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
        }

    def repo_json(self, name: str, *, base: str | None = None) -> dict[str, Any]:
        """A repository object; ``base`` is the repository a fork was made from."""
        base = base or name
        return {
            "id": abs(hash(name)) % 10**8,
            "name": name.split("/")[1],
            "full_name": name,
            "private": False,
            "fork": name != base,
            "clone_url": (name == base and self.repos[base].clone_url)
            or f"https://github.com/{name}.git",
            "default_branch": self.repos[base].default_branch,
        }

    def pull_json(self, full_name: str, pull: dict[str, Any]) -> dict[str, Any]:
        def repo_json(name: str) -> dict[str, Any]:
            return self.repo_json(name, base=full_name)

        number = pull["number"]
        return {
            "url": f"{self.host_url}/repos/{full_name}/pulls/{number}",
            "id": number * 7919,
            "node_id": f"PR_{number}",
            "html_url": f"https://github.com/{full_name}/pull/{number}",
            "number": number,
            "state": pull["state"],
            "locked": False,
            "title": pull["title"],
            "user": self.user(pull.get("author", "contributor")),
            "body": pull.get("body"),
            "labels": [
                {"id": i, "name": name, "color": "ededed"} for i, name in enumerate(pull["labels"])
            ],
            "created_at": iso(pull["updated_at"]),
            "updated_at": iso(pull["updated_at"]),
            "draft": False,
            "merged": pull.get("merged", False),
            # A fast-forward merge in this stand-in: the merge commit is the head.
            "merge_commit_sha": pull["head_sha"] if pull.get("merged") else None,
            "head": {
                "label": f"{pull['head_repo'].split('/')[0]}:{pull['head_ref']}",
                "ref": pull["head_ref"],
                "sha": pull["head_sha"],
                "repo": repo_json(pull["head_repo"]),
            },
            "base": {
                "label": f"{full_name.split('/')[0]}:{pull['base_ref']}",
                "ref": pull["base_ref"],
                "sha": pull["base_sha"],
                "repo": repo_json(full_name),
            },
        }
