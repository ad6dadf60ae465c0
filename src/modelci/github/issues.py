"""GitHub issues: the drift alert modelci opens, updates and closes per model.

``POST /repos/{o}/{r}/issues`` opens one (``title`` required, ``body``,
``labels``), ``PATCH /repos/{o}/{r}/issues/{n}`` edits its body or closes it
(``state: closed`` with ``state_reason: completed``), and comments go through
the issue comments API the pull request comments use. Shapes follow GitHub's
REST reference ("Issues"). The App needs ``issues: write``. Mixed into
:class:`~modelci.github.client.GitHubClient`.
"""

from __future__ import annotations

from typing import Any, Literal

from modelci.github.models import COMMENT_LIMIT, IssueRef, truncate
from modelci.github.rest import RestClient, quote, repo_path

__all__ = ["IssuesMixin"]

TITLE_LIMIT = 256  # GitHub refuses longer issue titles


def _issue(data: Any) -> IssueRef:
    return IssueRef(
        number=int(data["number"]),
        html_url=str(data.get("html_url") or ""),
        state=str(data.get("state") or "open"),
    )


class IssuesMixin(RestClient):
    def create_issue(
        self,
        repo: str,
        *,
        title: str,
        body: str,
        labels: list[str] | None = None,
        installation_id: int | None = None,
    ) -> IssueRef:
        payload: dict[str, Any] = {
            "title": title[:TITLE_LIMIT],
            "body": truncate(body, COMMENT_LIMIT, what="issue"),
        }
        if labels:
            payload["labels"] = labels
        data = self._request(
            "POST", f"{repo_path(repo)}/issues", json=payload, installation_id=installation_id
        ).json()
        return _issue(data)

    def update_issue(
        self,
        repo: str,
        *,
        number: int,
        body: str | None = None,
        state: Literal["open", "closed"] | None = None,
        installation_id: int | None = None,
    ) -> IssueRef:
        """Edit the body and/or open or close the issue (closed as completed)."""
        payload: dict[str, Any] = {}
        if body is not None:
            payload["body"] = truncate(body, COMMENT_LIMIT, what="issue")
        if state is not None:
            payload["state"] = state
            payload["state_reason"] = "completed" if state == "closed" else "reopened"
        data = self._request(
            "PATCH",
            f"{repo_path(repo)}/issues/{quote(number)}",
            json=payload,
            installation_id=installation_id,
        ).json()
        return _issue(data)

    def comment_on_issue(
        self, repo: str, *, number: int, body: str, installation_id: int | None = None
    ) -> None:
        self._request(
            "POST",
            f"{repo_path(repo)}/issues/{quote(number)}/comments",
            json={"body": truncate(body, COMMENT_LIMIT, what="comment")},
            installation_id=installation_id,
        )
