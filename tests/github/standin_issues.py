"""The stand-in GitHub's issues: create, read and edit (a model's drift alert).

Follows GitHub's REST reference ("Issues"): ``title`` is required (a string or
a number) on create; the request schemas refuse keys they do not define;
``state`` is ``open`` or ``closed`` and ``state_reason`` one of ``completed``,
``not_planned``, ``reopened`` or null; labels are names (strings); an
installation token needs ``issues: write`` to write and ``issues: read`` to
read.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.github.standin_endpoints import Reject, invalid
from tests.github.standin_state import StandInState, Token, iso

CREATE_KEYS = frozenset({"title", "body", "assignee", "milestone", "labels", "assignees", "type"})
UPDATE_KEYS = CREATE_KEYS | {"state", "state_reason"}
STATES = ("open", "closed")
STATE_REASONS = ("completed", "not_planned", "reopened", None)
DOC_CREATE = "/issues/issues#create-an-issue"
DOC_UPDATE = "/issues/issues#update-an-issue"


class IssueEndpoints:
    state: StandInState

    def _issue_json(self, full_name: str, issue: dict[str, Any]) -> dict[str, Any]:
        number = issue["number"]
        return {
            "id": issue["id"],
            "number": number,
            "url": f"{self.state.host_url}/repos/{full_name}/issues/{number}",
            "html_url": f"https://github.com/{full_name}/issues/{number}",
            "title": issue["title"],
            "body": issue["body"],
            "state": issue["state"],
            "state_reason": issue["state_reason"],
            "labels": [{"name": name} for name in issue["labels"]],
            "user": self.state.user(issue["author"]),
            "created_at": issue["created_at"],
            "updated_at": issue["updated_at"],
            "closed_at": issue["closed_at"],
        }

    def _checked(self, data: Any, keys: frozenset[str], doc: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise invalid("Body must be an object.", doc)
        for key in data:
            if key not in keys:
                raise invalid(f'"{key}" is not a permitted key.', doc)
        if "title" in data and not isinstance(data["title"], (str, int)):
            raise invalid(
                f"For 'properties/title', {json.dumps(data['title'])} is not a string or integer.",
                doc,
            )
        if "body" in data and not isinstance(data["body"], (str, type(None))):
            raise invalid(
                f"For 'properties/body', {json.dumps(data['body'])} is not a string or null.",
                doc,
            )
        labels = data.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise invalid("For 'properties/labels', labels must be a list of names.", doc)
        return data

    def _may(self, token: Token, access: str, doc: str) -> None:
        if not token.may("issues", access):
            raise Reject(403, "Resource not accessible by integration", doc)

    def _found(self, owner: str, repo: str, n: int, doc: str) -> dict[str, Any]:
        found = self.state.repos.get(f"{owner}/{repo}")
        if found is None or n not in found.issues:
            raise Reject(404, "Not Found", doc)
        return found.issues[n]

    def create_issue(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        full_name = f"{owner}/{repo}"
        if full_name not in self.state.repos:
            raise Reject(404, "Not Found", DOC_CREATE)
        self._may(token, "write", DOC_CREATE)
        data = self._checked(data, CREATE_KEYS, DOC_CREATE)
        if "title" not in data:
            raise invalid('"title" wasn\'t supplied.', DOC_CREATE)
        found = self.state.repos[full_name]
        now = iso(self.state.clock())
        issue = {
            "id": self.state.next_id(),
            "number": found.next_number(),
            "title": str(data["title"]),
            "body": data.get("body"),
            "state": "open",
            "state_reason": None,
            "labels": list(data.get("labels", [])),
            "author": token.login,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
        }
        found.issues[issue["number"]] = issue
        return JSONResponse(self._issue_json(full_name, issue), status_code=201)

    def get_issue(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, n: int
    ) -> dict[str, Any]:
        self._may(token, "read", "/issues/issues#get-an-issue")
        issue = self._found(owner, repo, n, "/issues/issues#get-an-issue")
        return self._issue_json(f"{owner}/{repo}", issue)

    def update_issue(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, n: int
    ) -> dict[str, Any]:
        self._may(token, "write", DOC_UPDATE)
        issue = self._found(owner, repo, n, DOC_UPDATE)
        data = self._checked(data, UPDATE_KEYS, DOC_UPDATE)
        if "state" in data and data["state"] not in STATES:
            raise invalid(
                f"For 'properties/state', {json.dumps(data['state'])} is not one of open, closed.",
                DOC_UPDATE,
            )
        if "state_reason" in data and data["state_reason"] not in STATE_REASONS:
            raise invalid(
                f"For 'properties/state_reason', {json.dumps(data['state_reason'])} is not one "
                "of completed, not_planned, reopened, null.",
                DOC_UPDATE,
            )
        now = iso(self.state.clock())
        for key in ("title", "body", "labels"):
            if key in data:
                issue[key] = str(data[key]) if key == "title" else data[key]
        if "state" in data:
            issue["state"] = data["state"]
            issue["closed_at"] = now if data["state"] == "closed" else None
            issue["state_reason"] = data.get("state_reason")
        issue["updated_at"] = now
        return self._issue_json(f"{owner}/{repo}", issue)
