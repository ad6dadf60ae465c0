"""The stand-in GitHub's endpoints: GitHub's validation rules and response shapes.

Mixed into :class:`tests.github.standin.StandIn`, which authenticates each
request before calling these with the parsed JSON body, the caller (a
:class:`Token`, or the JWT claims for ``/app`` endpoints) and the path
parameters. Messages and shapes follow GitHub's REST documentation and the
errors GitHub is known to return.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tests.github.standin_state import DOCS, ROLE_PERMISSION, StandInState, Token, iso

COMMIT_COMMENT_KEYS = frozenset({"body", "path", "position", "line"})
CHECK_STATUSES = ("queued", "in_progress", "completed")
CHECK_CONCLUSIONS = (
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
)
STATUS_STATES = ("error", "failure", "pending", "success")


class Reject(Exception):
    def __init__(self, status: int, message: str, doc: str = "", **extra: Any) -> None:
        self.response = JSONResponse(
            {"message": message, "documentation_url": f"{DOCS}{doc}", **extra}, status_code=status
        )


def invalid(message: str, doc: str) -> Reject:
    # Schema validation failures read "Invalid request.\n\n<what>" on GitHub.
    return Reject(422, f"Invalid request.\n\n{message}", doc)


def validation_failed(
    resource: str, field: str, message: str, doc: str, code: str = "custom"
) -> Reject:
    error = {"resource": resource, "code": code, "field": field, "message": message}
    return Reject(422, "Validation Failed", doc, errors=[error])


# Request body keys from GitHub's REST description (check runs: create and update).
CHECK_RUN_KEYS = frozenset(
    {"name", "details_url", "external_id", "status", "started_at", "conclusion"}
    | {"completed_at", "output", "actions"}
)
CHECK_OUTPUT_KEYS = frozenset({"title", "summary", "text", "annotations", "images"})


class Endpoints:
    """What GitHub answers, over :attr:`state`."""

    state: StandInState

    def get_app(self, request: Request, data: Any, claims: Any) -> dict[str, Any]:
        st = self.state
        return {"id": st.app_id, "slug": st.app_slug, "name": "modelci test", "node_id": "A_1"}

    def create_token(self, request: Request, data: Any, claims: Any, iid: int) -> Response:
        st = self.state
        if iid not in st.installations:
            raise Reject(
                404, "Not Found", "/apps/apps#create-an-installation-access-token-for-an-app"
            )
        doc = "/apps/apps#create-an-installation-access-token-for-an-app"
        self._permitted(data, frozenset({"repositories", "repository_ids", "permissions"}), doc)
        granted = st.installation_permissions(iid)
        asked = data.get("permissions") if isinstance(data, dict) else None
        if asked is not None:
            # A token may be narrowed, never widened, past what the installation holds.
            probe = Token("", "installation", "", iid, None, granted)
            if not isinstance(asked, dict) or not all(
                access in ("read", "write") and probe.may(name, access)
                for name, access in asked.items()
            ):
                raise validation_failed(
                    "Installation",
                    "permissions",
                    "The permissions requested are not granted to this installation.",
                    doc,
                )
            granted = dict(asked)
        token = st.issue_token(iid, granted)
        assert token.expires_at is not None
        body = {
            "token": token.value,
            "expires_at": iso(token.expires_at),
            "permissions": granted,
            "repository_selection": "all",
        }
        return JSONResponse(body, status_code=201)

    def get_user(self, request: Request, data: Any, token: Token) -> dict[str, Any]:
        if token.kind == "installation":
            raise Reject(
                403,
                "Resource not accessible by integration",
                "/users/users#get-the-authenticated-user",
            )
        return self.state.user(token.login)

    def get_permission(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, user: str
    ) -> dict[str, Any]:
        role = self.state.repos[f"{owner}/{repo}"].roles.get(user)
        if role is None:
            raise Reject(
                404,
                "Not Found",
                "/collaborators/collaborators#get-repository-permissions-for-a-user",
            )
        return {
            "permission": ROLE_PERMISSION[role],
            "role_name": role,
            "user": self.state.user(user),
        }

    def _issue_exists(self, full_name: str, number: int) -> None:
        repo = self.state.repos[full_name]
        if number not in repo.pulls and number not in repo.issues:
            raise Reject(404, "Not Found", "/issues/comments")

    def list_comments(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, n: int
    ) -> Response:
        full_name = f"{owner}/{repo}"
        self._issue_exists(full_name, n)
        items = [c for c in self.state.comments if c["_repo"] == full_name and c["_issue"] == n]
        return self._page(request, sorted(items, key=lambda c: c["id"]))

    def _page(self, request: Request, items: list[dict[str, Any]], etag: bool = False) -> Response:
        per_page = min(100, int(request.query_params.get("per_page", "30")))
        page = int(request.query_params.get("page", "1"))
        chunk = [{k: v for k, v in item.items() if not k.startswith("_")} for item in items]
        chunk = chunk[(page - 1) * per_page : page * per_page]
        last = max(1, -(-len(items) // per_page))
        headers: dict[str, str] = {}
        base = f"{self.state.host_url}{request.url.path}"
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        links = []
        if page < last:
            links.append(f'<{base}?{_qs(query, page + 1)}>; rel="next"')
            links.append(f'<{base}?{_qs(query, last)}>; rel="last"')
        if links:
            headers["link"] = ", ".join(links)
        body = json.dumps(chunk).encode()
        if etag:
            tag = 'W/"' + hashlib.sha256(body).hexdigest() + '"'
            headers["etag"] = tag
            if request.headers.get("if-none-match") == tag:
                return Response(status_code=304, headers=headers)
        return Response(body, headers=headers, media_type="application/json")

    def _permitted(self, data: Any, keys: frozenset[str], doc: str) -> None:
        """GitHub's strict request schemas refuse a key they don't define."""
        for key in data if isinstance(data, dict) else ():
            if key not in keys:
                raise invalid(f'"{key}" is not a permitted key.', doc)

    def _body_field(self, data: Any, name: str, doc: str) -> str:
        if not isinstance(data, dict) or name not in data:
            raise invalid(f'"{name}" wasn\'t supplied.', doc)
        if not isinstance(data[name], str):
            raise invalid(
                f"For 'properties/{name}', {json.dumps(data[name])} is not a string.", doc
            )
        return str(data[name])

    def _comment_body(self, data: Any, doc: str) -> str:
        self._permitted(data, frozenset({"body"}), doc)
        body = self._body_field(data, "body", doc)
        if len(body) > 65536:
            raise validation_failed(
                "IssueComment",
                "data",
                "Body is too long (maximum is 65536 characters)",
                doc,
                "unprocessable",
            )
        return body

    def create_comment(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, n: int
    ) -> Response:
        doc = "/issues/comments#create-an-issue-comment"
        full_name = f"{owner}/{repo}"
        self._issue_exists(full_name, n)
        comment = self.state.make_comment(
            full_name, n, self._comment_body(data, doc), self.state.user(token.login)
        )
        self.state.comments.append(comment)
        public = {k: v for k, v in comment.items() if not k.startswith("_")}
        return JSONResponse(public, status_code=201, headers={"location": comment["url"]})

    def update_comment(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, cid: int
    ) -> dict[str, Any]:
        doc = "/issues/comments#update-an-issue-comment"
        found = [
            c for c in self.state.comments if c["id"] == cid and c["_repo"] == f"{owner}/{repo}"
        ]
        if not found:
            raise Reject(404, "Not Found", doc)
        found[0]["body"] = self._comment_body(data, doc)
        found[0]["updated_at"] = iso(self.state.clock())
        return {k: v for k, v in found[0].items() if not k.startswith("_")}

    def create_commit_comment(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, sha: str
    ) -> Response:
        """GitHub's "create a commit comment": ``body`` required; ``path``, ``position``
        and ``line`` (deprecated) optional; 422 for a commit the repository lacks."""
        doc = "/commits/comments#create-a-commit-comment"
        full_name = f"{owner}/{repo}"
        if full_name not in self.state.repos:
            raise Reject(404, "Not Found", doc)
        if not isinstance(data, dict):
            raise invalid("Body must be an object.", doc)
        self._permitted(data, COMMIT_COMMENT_KEYS, doc)
        body = self._comment_body({"body": data["body"]} if "body" in data else {}, doc)
        for name in ("position", "line"):
            if name in data and not isinstance(data[name], int):
                raise invalid(
                    f"For 'properties/{name}', {json.dumps(data[name])} is not an integer.", doc
                )
        if not self._has_commit(full_name, sha):
            raise validation_failed(
                "CommitComment", "commit_id", f"No commit found for SHA: {sha}", doc
            )
        cid = self.state.next_id()
        now = iso(self.state.clock())
        comment = {
            "_repo": full_name,
            "id": cid,
            "node_id": f"CC_{cid}",
            "url": f"{self.state.host_url}/repos/{full_name}/comments/{cid}",
            "html_url": f"https://github.com/{full_name}/commit/{sha}#commitcomment-{cid}",
            "body": body,
            "path": data.get("path"),
            "position": data.get("position"),
            "line": data.get("line"),
            "commit_id": sha,
            "user": self.state.user(token.login),
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
        }
        self.state.commit_comments.append(comment)
        public = {k: v for k, v in comment.items() if not k.startswith("_")}
        return JSONResponse(public, status_code=201, headers={"location": comment["url"]})

    def _has_commit(self, full_name: str, sha: str) -> bool:
        if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
            return False
        git_dir = self.state.repos[full_name].git_dir
        if git_dir is None:  # no repository served: any full sha exists
            return True
        found = subprocess.run(
            ["git", "-C", str(git_dir), "cat-file", "-e", f"{sha}^{{commit}}"], capture_output=True
        )
        return found.returncode == 0

    def _check_fields(self, data: Any, doc: str, *, creating: bool) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise invalid("Body must be an object.", doc)
        self._permitted(data, CHECK_RUN_KEYS | ({"head_sha"} if creating else set()), doc)
        self._permitted(data.get("output"), CHECK_OUTPUT_KEYS, doc)
        if creating:
            self._body_field(data, "name", doc)
            self._body_field(data, "head_sha", doc)
        for name, allowed in (("status", CHECK_STATUSES), ("conclusion", CHECK_CONCLUSIONS)):
            if name in data and data[name] not in allowed:
                raise invalid(
                    f"For 'properties/{name}', {json.dumps(data[name])} is not one of "
                    f"{json.dumps(list(allowed))}.",
                    doc,
                )
        if data.get("status") == "completed" and "conclusion" not in data:
            raise invalid('"conclusion" wasn\'t supplied.', doc)
        output = data.get("output")
        if output is not None:
            for name in ("title", "summary") if creating else ("summary",):
                self._body_field(output, name, doc)
            for name in ("summary", "text"):
                value = output.get(name)
                if isinstance(value, str) and len(value) > 65535:
                    raise invalid(
                        f"Only 65535 characters are allowed; {len(value)} were supplied.", doc
                    )
        return data

    def create_check_run(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        doc = "/checks/runs#create-a-check-run"
        if token.kind == "classic":
            raise Reject(403, "You must authenticate via a GitHub App.", doc)
        if token.kind == "fine-grained":
            raise Reject(403, "Resource not accessible by personal access token", doc)
        data = self._check_fields(data, doc, creating=True)
        rid = self.state.next_id()
        full_name = f"{owner}/{repo}"
        run: dict[str, Any] = {
            "id": rid,
            "node_id": f"CR_{rid}",
            "head_sha": data["head_sha"],
            "external_id": data.get("external_id", ""),
            "url": f"{self.state.host_url}/repos/{full_name}/check-runs/{rid}",
            "html_url": f"https://github.com/{full_name}/runs/{rid}",
            "details_url": data.get("details_url", "https://github.com/apps/modelci-test"),
            "status": "queued",
            "conclusion": None,
            "started_at": iso(self.state.clock()),
            "completed_at": None,
            "output": {"title": None, "summary": None, "text": None, "annotations_count": 0},
            "name": data["name"],
            "check_suite": {"id": 1},
            "app": {"id": self.state.app_id, "slug": self.state.app_slug},
            "pull_requests": [],
            "_repo": full_name,
        }
        self._apply_check(run, data)
        self.state.check_runs[rid] = run
        return JSONResponse(
            {k: v for k, v in run.items() if not k.startswith("_")}, status_code=201
        )

    def _apply_check(self, run: dict[str, Any], data: dict[str, Any]) -> None:
        for name in ("status", "details_url", "external_id", "name"):
            if name in data:
                run[name] = data[name]
        if data.get("conclusion"):
            run.update(
                conclusion=data["conclusion"],
                status="completed",
                completed_at=iso(self.state.clock()),
            )
        if "output" in data:
            run["output"] = {**run["output"], **data["output"]}

    def update_check_run(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, rid: int
    ) -> dict[str, Any]:
        doc = "/checks/runs#update-a-check-run"
        if token.kind != "installation":
            raise Reject(403, "You must authenticate via a GitHub App.", doc)
        run = self.state.check_runs.get(rid)
        if run is None or run["_repo"] != f"{owner}/{repo}":
            raise Reject(404, "Not Found", doc)
        self._apply_check(run, self._check_fields(data, doc, creating=False))
        return {k: v for k, v in run.items() if not k.startswith("_")}

    def list_check_runs(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, sha: str
    ) -> dict[str, Any]:
        """``GET /repos/{o}/{r}/commits/{ref}/check-runs``: newest first, as on GitHub."""
        name = request.query_params.get("check_name")
        runs = [
            {k: v for k, v in run.items() if not k.startswith("_")}
            for run in sorted(self.state.check_runs.values(), key=lambda r: -int(r["id"]))
            if run["_repo"] == f"{owner}/{repo}"
            and run["head_sha"] == sha
            and (name is None or run["name"] == name)
        ]
        return {"total_count": len(runs), "check_runs": runs}

    def create_status(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, sha: str
    ) -> Response:
        doc = "/commits/statuses#create-a-commit-status"
        self._permitted(data, frozenset({"state", "target_url", "description", "context"}), doc)
        state = self._body_field(data, "state", doc)
        if state not in STATUS_STATES:
            raise invalid(
                f"For 'properties/state', {json.dumps(state)} is not one of "
                f"{json.dumps(list(STATUS_STATES))}.",
                doc,
            )
        description = data.get("description")
        if isinstance(description, str) and len(description) > 140:
            raise validation_failed(
                "Status", "description", "description is too long (maximum is 140 characters)", doc
            )
        sid = self.state.next_id()
        now = iso(self.state.clock())
        status = {
            "url": f"{self.state.host_url}/repos/{owner}/{repo}/statuses/{sha}",
            "avatar_url": None, "id": sid, "node_id": f"SC_{sid}", "state": state,
            "description": description, "target_url": data.get("target_url"),
            "context": data.get("context", "default"), "created_at": now, "updated_at": now,
            "creator": self.state.user(token.login),
        }  # fmt: skip
        self.state.statuses.append({**status, "_sha": sha})
        return JSONResponse(status, status_code=201)

    def list_pulls(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        full_name = f"{owner}/{repo}"
        query = request.query_params
        state = query.get("state", "open")
        # GitHub's filters: head as "owner:branch", base as a branch name.
        head_owner, _, head_ref = query.get("head", "").rpartition(":")
        pulls = [
            p
            for p in self.state.repos[full_name].pulls.values()
            if state in ("all", p["state"])
            and (
                "head" not in query
                or (p["head_ref"], p["head_repo"].split("/")[0]) == (head_ref, head_owner or owner)
            )
            and query.get("base", p["base_ref"]) == p["base_ref"]
        ]
        pulls.sort(key=lambda p: p["updated_at"], reverse=True)
        return self._page(request, [self.state.pull_json(full_name, p) for p in pulls], etag=True)

    def get_pull(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, n: int
    ) -> dict[str, Any]:
        pull = self.state.repos[f"{owner}/{repo}"].pulls.get(n)
        if pull is None:
            raise Reject(404, "Not Found", "/pulls/pulls#get-a-pull-request")
        return self.state.pull_json(f"{owner}/{repo}", pull)

    def get_branch(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, branch: str
    ) -> dict[str, Any]:
        sha = self.state.repos[f"{owner}/{repo}"].branches.get(branch)
        if sha is None:
            raise Reject(404, "Branch not found", "/branches/branches#get-a-branch")
        return {"name": branch, "commit": {"sha": sha}, "protected": False, "_links": {}}

    # -- polling ----------------------------------------------------------------------

    def get_repo(self, request: Request, data: Any, token: Token, owner: str, repo: str) -> Any:
        return self.state.repo_json(f"{owner}/{repo}")

    def get_repo_installation(
        self, request: Request, data: Any, claims: Any, owner: str, repo: str
    ) -> dict[str, Any]:
        found = self.state.repos.get(f"{owner}/{repo}")
        if found is None:
            raise Reject(
                404,
                "Not Found",
                "/apps/apps#get-a-repository-installation-for-the-authenticated-app",
            )
        iid = found.installation_id
        return {
            "id": iid,
            "account": self.state.user(owner),
            "app_id": self.state.app_id,
            "app_slug": self.state.app_slug,
            "target_type": "Organization",
            "repository_selection": "selected",
            "permissions": self.state.installation_permissions(iid),
            "events": ["pull_request", "push"],
        }

    def list_issue_events(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, n: int
    ) -> Response:
        full_name = f"{owner}/{repo}"
        self._issue_exists(full_name, n)
        return self._page(request, self.state.repos[full_name].issue_events.get(n, []))

    def get_git_ref(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, ref: str
    ) -> Response:
        full_name = f"{owner}/{repo}"
        branch = ref.removeprefix("heads/")
        sha = self.state.branch_sha(full_name, branch) if ref.startswith("heads/") else None
        if sha is None:
            raise Reject(404, "Not Found", "/git/refs#get-a-reference")
        body = json.dumps(
            {
                "ref": f"refs/{ref}",
                "node_id": f"REF_{branch}",
                "url": f"{self.state.host_url}/repos/{full_name}/git/refs/{ref}",
                "object": {
                    "type": "commit",
                    "sha": sha,
                    "url": f"{self.state.host_url}/repos/{full_name}/git/commits/{sha}",
                },
            }
        ).encode()
        tag = 'W/"' + hashlib.sha256(body).hexdigest() + '"'
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"etag": tag})
        return Response(body, headers={"etag": tag}, media_type="application/json")

    def get_rate_limit(self, request: Request, data: Any, token: Token) -> dict[str, Any]:
        # Reading the limit is free on GitHub: report without charging (see StandIn._wrap).
        st = self.state
        key: object = (
            ("installation", token.installation_id)
            if token.kind == "installation"
            else ("user", token.login)
        )
        used = st.rate_used.get(key, 0)
        core = {
            "limit": st.rate_limit,
            "used": used,
            "remaining": max(0, st.rate_limit - used),
            "reset": int(st.clock()) + 3600,
        }
        return {"resources": {"core": core}, "rate": core}

    def git_http(
        self, request: Request, body: bytes, who: Any, owner: str, repo: str, service: str = ""
    ) -> Response:
        """git's smart HTTP protocol (fetch only), through ``git http-backend`` as a CGI.

        Like github.com for a private repository: without a valid token for the
        repository (HTTP Basic, user ``x-access-token``) the answer is 401 with a
        Basic challenge, which a git that may not prompt turns into a failure.
        """
        st = self.state
        found = st.repos.get(f"{owner}/{repo}")
        if found is None or found.git_dir is None:
            return PlainTextResponse("Repository not found.", status_code=404)
        if not self._git_token_ok(request.headers.get("authorization", ""), found.installation_id):
            return PlainTextResponse(
                "Invalid username or token.",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="GitHub"'},
            )
        wanted = request.query_params.get("service", service)
        if wanted != "git-upload-pack" or service not in ("", "git-upload-pack"):
            return PlainTextResponse("Write access to repository not granted.", status_code=403)
        git_dir = found.git_dir / ".git" if (found.git_dir / ".git").is_dir() else found.git_dir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(git_dir.parent),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{git_dir.name}/{service or 'info/refs'}",
            "REQUEST_METHOD": request.method,
            "QUERY_STRING": request.url.query,
            "CONTENT_TYPE": request.headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": request.headers.get("content-encoding", ""),
            "HTTP_GIT_PROTOCOL": request.headers.get("git-protocol", ""),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": "/nonexistent",
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60
        )
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name] = value.strip()
        if done.returncode != 0 and not done.stdout:
            return PlainTextResponse(done.stderr.decode(errors="replace"), status_code=500)
        return Response(payload, status_code=status, headers=headers)

    def _git_token_ok(self, authorization: str, installation_id: int) -> bool:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, secret = base64.b64decode(credential).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        token = self.state.tokens.get(secret)
        if user != "x-access-token" or token is None:
            return False
        if token.expires_at is not None and self.state.clock() >= token.expires_at:
            return False
        return token.kind != "installation" or token.installation_id == installation_id


def _qs(query: dict[str, str], page: int) -> str:
    return "&".join(f"{k}={v}" for k, v in {**query, "page": str(page)}.items())
