"""GitHub's Git Data API and the pull request calls that proposal mode makes.

A commit is written without a clone: blobs (base64, so any bytes survive),
a tree on top of the base commit's tree (only the changed paths are sent;
GitHub keeps every other entry of ``base_tree``), a commit with the base as
its parent, then a branch ref pointing at it, and a pull request from that
branch. Shapes follow GitHub's REST reference ("Git database": blobs, trees,
commits, references; "Pulls"). Mixed into
:class:`~modelci.github.client.GitHubClient`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from modelci.github.errors import GitHubError
from modelci.github.events import PullRequest, pull_request_from_api
from modelci.github.models import COMMENT_LIMIT, GitCommit, GitRef, truncate
from modelci.github.rest import RestClient, quote, repo_path

__all__ = ["GitDataMixin"]

# A regular (non-executable) file: proposal mode only writes DVC pointer files.
FILE_MODE = "100644"


def _ref_path(ref: str) -> str:
    """``heads/a/b`` as URL segments, each quoted (a branch name may hold '/')."""
    return "/".join(quote(part) for part in ref.split("/"))


def _body(text: str) -> str:
    # A pull request's body has the issue comment's limit.
    return truncate(text, COMMENT_LIMIT, what="description")


def _git_ref(data: Any) -> GitRef:
    return GitRef(ref=str(data["ref"]), sha=str(data["object"]["sha"]))


def _git_commit(data: Any) -> GitCommit:
    return GitCommit(
        sha=str(data["sha"]),
        tree_sha=str(data["tree"]["sha"]),
        parents=tuple(str(p["sha"]) for p in data.get("parents") or []),
        message=str(data.get("message") or ""),
    )


class GitDataMixin(RestClient):
    """Blobs, trees, commits and refs; finding, opening and editing pull requests."""

    def get_ref(self, repo: str, *, ref: str, installation_id: int | None = None) -> GitRef | None:
        """``GET /repos/{o}/{r}/git/ref/{ref}`` (``ref`` as ``heads/<branch>``); None if absent.

        GitHub answers an exact match only here (``matching-refs`` lists
        prefixes), and 404 for a ref that does not exist.
        """
        if ref.startswith("refs/"):
            raise ValueError(f"pass the ref without 'refs/' (e.g. 'heads/main'), not {ref!r}")
        try:
            data = self._request(
                "GET",
                f"{repo_path(repo)}/git/ref/{_ref_path(ref)}",
                installation_id=installation_id,
            ).json()
        except GitHubError as exc:
            if exc.status == 404:
                return None
            raise
        return _git_ref(data)

    def get_commit(self, repo: str, *, sha: str, installation_id: int | None = None) -> GitCommit:
        """``GET /repos/{o}/{r}/git/commits/{sha}``: its tree and parents."""
        data = self._request(
            "GET", f"{repo_path(repo)}/git/commits/{quote(sha)}", installation_id=installation_id
        ).json()
        return _git_commit(data)

    def create_blob(self, repo: str, *, content: bytes, installation_id: int | None = None) -> str:
        """``POST /repos/{o}/{r}/git/blobs`` with base64 content; the blob's sha."""
        data = self._request(
            "POST",
            f"{repo_path(repo)}/git/blobs",
            json={"content": base64.b64encode(content).decode("ascii"), "encoding": "base64"},
            installation_id=installation_id,
        ).json()
        return str(data["sha"])

    def create_tree(
        self,
        repo: str,
        *,
        base_tree: str,
        blobs: Mapping[str, str],
        installation_id: int | None = None,
    ) -> str:
        """``POST /repos/{o}/{r}/git/trees``: ``base_tree`` with each path set to its blob.

        ``blobs`` maps a repository path (``data/raw.csv.dvc``) to a blob sha from
        :meth:`create_blob`; nested paths are GitHub's to split into subtrees.
        """
        if not blobs:
            raise ValueError("a tree on top of base_tree needs at least one changed path")
        tree = [
            {"path": path, "mode": FILE_MODE, "type": "blob", "sha": sha}
            for path, sha in sorted(blobs.items())
        ]
        data = self._request(
            "POST",
            f"{repo_path(repo)}/git/trees",
            json={"base_tree": base_tree, "tree": tree},
            installation_id=installation_id,
        ).json()
        return str(data["sha"])

    def create_commit(
        self,
        repo: str,
        *,
        message: str,
        tree: str,
        parents: Sequence[str],
        installation_id: int | None = None,
    ) -> GitCommit:
        """``POST /repos/{o}/{r}/git/commits``; GitHub fills in author and committer
        (the App's bot account for an installation token)."""
        data = self._request(
            "POST",
            f"{repo_path(repo)}/git/commits",
            json={"message": message, "tree": tree, "parents": list(parents)},
            installation_id=installation_id,
        ).json()
        return _git_commit(data)

    def create_ref(
        self, repo: str, *, ref: str, sha: str, installation_id: int | None = None
    ) -> GitRef:
        """``POST /repos/{o}/{r}/git/refs``; ``ref`` fully qualified (``refs/heads/x``)."""
        if not ref.startswith("refs/"):
            raise ValueError(f"a new ref is fully qualified (refs/heads/...), not {ref!r}")
        data = self._request(
            "POST",
            f"{repo_path(repo)}/git/refs",
            json={"ref": ref, "sha": sha},
            installation_id=installation_id,
        ).json()
        return _git_ref(data)

    def update_ref(
        self,
        repo: str,
        *,
        ref: str,
        sha: str,
        force: bool = False,
        installation_id: int | None = None,
    ) -> GitRef:
        """``PATCH /repos/{o}/{r}/git/refs/{ref}`` (``heads/x``); ``force`` allows a
        move that is not a fast-forward."""
        if ref.startswith("refs/"):
            raise ValueError(f"pass the ref without 'refs/' (e.g. 'heads/main'), not {ref!r}")
        data = self._request(
            "PATCH",
            f"{repo_path(repo)}/git/refs/{_ref_path(ref)}",
            json={"sha": sha, "force": force},
            installation_id=installation_id,
        ).json()
        return _git_ref(data)

    def find_pull_request(
        self, repo: str, *, head: str, base: str | None = None, installation_id: int | None = None
    ) -> PullRequest | None:
        """The open pull request from ``head`` (``owner:branch``), into ``base`` if given.

        ``GET /repos/{o}/{r}/pulls?state=open&head=...``: GitHub filters by head
        itself; the newest one wins when there are several.
        """
        if ":" not in head:
            raise ValueError(f"head is 'owner:branch', not {head!r}")
        params: dict[str, str | int] = {"state": "open", "head": head, "per_page": 100}
        if base is not None:
            params["base"] = base
        found = [
            pull_request_from_api(item)
            for item in self._paginate(
                f"{repo_path(repo)}/pulls", params=params, installation_id=installation_id
            )
        ]
        return max(found, key=lambda pr: pr.number) if found else None

    def create_pull_request(
        self,
        repo: str,
        *,
        title: str,
        head: str,
        base: str,
        body: str,
        installation_id: int | None = None,
    ) -> PullRequest:
        """``POST /repos/{o}/{r}/pulls`` from branch ``head`` into branch ``base``."""
        data = self._request(
            "POST",
            f"{repo_path(repo)}/pulls",
            json={"title": title, "head": head, "base": base, "body": _body(body)},
            installation_id=installation_id,
        ).json()
        return pull_request_from_api(data)

    def update_pull_request(
        self,
        repo: str,
        *,
        number: int,
        title: str | None = None,
        body: str | None = None,
        installation_id: int | None = None,
    ) -> PullRequest:
        """``PATCH /repos/{o}/{r}/pulls/{n}``: a new title and/or body."""
        payload = {
            k: v
            for k, v in {"title": title, "body": None if body is None else _body(body)}.items()
            if v is not None
        }
        data = self._request(
            "PATCH",
            f"{repo_path(repo)}/pulls/{quote(number)}",
            json=payload,
            installation_id=installation_id,
        ).json()
        return pull_request_from_api(data)
