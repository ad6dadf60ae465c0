"""Proposal mode on GitHub: refreshed DVC pointers committed and proposed as a pull request.

:class:`GitHubProposer` implements ``retrain.proposal.Proposer`` with the Git
Data API, without a clone: one blob per changed file, a tree on top of the
retrained commit's tree, a commit whose parent is that commit, and the
standing branch ``modelci/retrain-data`` (one per repository) pointed at it.
While a pull request from that branch is open, a new proposal force-updates
the branch and edits that pull request's description instead of opening a
second one; the same content on the same base makes no new commit.

It needs the App's *Contents: write* (blobs, trees, commits, refs) and *Pull
requests: write*; a 403 becomes an error naming the permission to grant.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from modelci.github import GitHubClient, GitHubError
from modelci.retrain.proposal import Proposal
from modelci.runner.checkout import repository_name

__all__ = ["PROPOSAL_BRANCH", "GitHubProposer"]

log = logging.getLogger(__name__)

PROPOSAL_BRANCH = "modelci/retrain-data"
_PERMISSIONS = "Contents: Read and write and Pull requests: Read and write"


def _refused(exc: GitHubError, repo: str, step: str) -> GitHubError:
    if exc.status not in (403, 404):
        return exc
    # GitHub answers 404 instead of 403 where the token may not even see the resource.
    return GitHubError(
        f"GitHub refused to {step} in {repo} ({exc.status} {exc.github_message or exc.message}): "
        "proposal mode writes a branch and opens a pull request",
        hint=f"give the GitHub App the repository permissions {_PERMISSIONS} (App settings → "
        "Permissions & events), then accept the new permissions on the installation; or set "
        "retrain.mode: promote in modelci.yaml",
        status=exc.status,
        github_message=exc.github_message,
        documentation_url=exc.documentation_url,
    )


class GitHubProposer:
    """Proposes through ``client`` (bound to the repository's installation)."""

    def __init__(self, client: GitHubClient, *, branch: str = PROPOSAL_BRANCH) -> None:
        self.client = client
        self.branch = branch

    def propose(
        self,
        repo: str,
        *,
        base_sha: str,
        base_branch: str,
        files: Mapping[str, bytes],
        title: str,
        body: str,
    ) -> Proposal:
        """``repo`` is ``owner/name`` or its clone URL (what the retrain was given)."""
        if not files:
            raise ValueError("a proposal needs at least one changed file")
        name = repository_name(repo) if "://" in repo or "@" in repo else repo
        gh, head = self.client, f"refs/heads/{self.branch}"
        step = "read the branch to propose into"
        try:
            if gh.get_ref(name, ref=f"heads/{base_branch}") is None:
                raise GitHubError(
                    f"proposal mode opens a pull request into a branch, and {base_branch!r} "
                    f"is not a branch of {name}",
                    hint="retrain a branch (the default branch, as the schedule does)",
                )
            base = gh.get_commit(name, sha=base_sha)
            step = "write the refreshed DVC pointers (blobs, tree)"
            blobs = {path: gh.create_blob(name, content=files[path]) for path in sorted(files)}
            tree = gh.create_tree(name, base_tree=base.tree_sha, blobs=blobs)
            current = gh.get_ref(name, ref=f"heads/{self.branch}")
            commit_sha = current.sha if current is not None else None
            if current is not None:
                existing = gh.get_commit(name, sha=current.sha)
                if (existing.tree_sha, existing.parents) != (tree, (base_sha,)):
                    commit_sha = None  # other content or another base: a new commit
            if commit_sha is None:
                step = "commit the refreshed DVC pointers"
                message = f"{title}\n\n{body}"
                commit_sha = gh.create_commit(
                    name, message=message, tree=tree, parents=[base_sha]
                ).sha
                step = f"move the branch {self.branch}"
                if current is None:
                    gh.create_ref(name, ref=head, sha=commit_sha)
                else:
                    # The branch is modelci's own: whatever it held is replaced.
                    gh.update_ref(name, ref=f"heads/{self.branch}", sha=commit_sha, force=True)
            step = "open the pull request"
            owner = name.split("/")[0]
            pull = gh.find_pull_request(name, head=f"{owner}:{self.branch}", base=base_branch)
            if pull is not None:
                gh.update_pull_request(name, number=pull.number, title=title, body=body)
                log.info("proposal for %s updated pull request #%d", name, pull.number)
                return Proposal(pull.number, pull.html_url, self.branch, commit_sha, True)
            opened = gh.create_pull_request(
                name, title=title, head=self.branch, base=base_branch, body=body
            )
        except GitHubError as exc:
            raise _refused(exc, name, step) from exc
        log.info("proposal for %s opened pull request #%d", name, opened.number)
        return Proposal(opened.number, opened.html_url, self.branch, commit_sha, False)
