"""The stand-in GitHub's Git Data API and pull request writes, over a real git repository.

Blobs, trees, commits and refs are written into the repository the test served
with :meth:`StandInState.serve_git` by git's own plumbing (``hash-object``,
``read-tree`` + ``update-index`` + ``write-tree`` on a scratch index,
``commit-tree``, ``update-ref``), so what a client builds is a real commit that
a test reads back with git. Validation follows GitHub's REST reference: strict
request keys, required fields, modes and types, a tree entry with exactly one
of ``sha`` or ``content``, fully qualified new refs, fast-forward unless
``force``, and an installation token needs ``contents: write`` (Git Data) or
``pull_requests: write`` (pull requests) among its permissions.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.github.standin_endpoints import Reject, invalid, validation_failed
from tests.github.standin_state import Repo, StandInState, Token, iso

TREE_MODES = ("100644", "100755", "040000", "160000", "120000")
TREE_TYPES = ("blob", "tree", "commit")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _env(**extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": "/nonexistent",
        **extra,
    }


class GitDataEndpoints:
    """Mixed into the stand-in beside :class:`~tests.github.standin_endpoints.Endpoints`."""

    state: StandInState

    # -- helpers --------------------------------------------------------------------

    def _repo(self, owner: str, repo: str) -> Repo:
        return self.state.repos[f"{owner}/{repo}"]

    def _git_dir(self, found: Repo) -> Path:
        if found.git_dir is None:
            raise Reject(409, "Git Repository is empty.", "/git")
        nested = found.git_dir / ".git"
        return nested if nested.is_dir() else found.git_dir

    def _git(
        self, found: Repo, *args: str, data: bytes | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "--git-dir", str(self._git_dir(found)), *args],
            input=data,
            capture_output=True,
            env=env or _env(),
            timeout=60,
        )

    def _object_type(self, found: Repo, sha: str) -> str | None:
        if not _SHA.match(sha):
            return None
        done = self._git(found, "cat-file", "-t", sha)
        return done.stdout.decode().strip() if done.returncode == 0 else None

    def _need(self, token: Token, permission: str, access: str, doc: str) -> None:
        if not token.may(permission, access):
            raise Reject(403, "Resource not accessible by integration", doc)

    def _object(self, data: Any, doc: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise invalid("Body must be an object.", doc)
        return data

    def _permitted_keys(self, data: dict[str, Any], keys: frozenset[str], doc: str) -> None:
        for key in data:
            if key not in keys:
                raise invalid(f'"{key}" is not a permitted key.', doc)

    def _string(self, data: dict[str, Any], name: str, doc: str) -> str:
        if name not in data:
            raise invalid(f'"{name}" wasn\'t supplied.', doc)
        if not isinstance(data[name], str):
            raise invalid(
                f"For 'properties/{name}', {json.dumps(data[name])} is not a string.", doc
            )
        return str(data[name])

    def _url(self, full_name: str, what: str) -> str:
        return f"{self.state.host_url}/repos/{full_name}/git/{what}"

    # -- blobs -------------------------------------------------------------------------

    def create_blob(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        doc = "/git/blobs#create-a-blob"
        self._need(token, "contents", "write", doc)
        body = self._object(data, doc)
        self._permitted_keys(body, frozenset({"content", "encoding"}), doc)
        content = self._string(body, "content", doc)
        encoding = body.get("encoding", "utf-8")
        if encoding not in ("utf-8", "base64"):
            raise validation_failed(
                "Blob", "encoding", f"encoding must be utf-8 or base64, not {encoding!r}", doc
            )
        if encoding == "base64":
            try:
                raw = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise invalid("content is not valid Base64.", doc) from None
        else:
            raw = content.encode()
        found = self._repo(owner, repo)
        sha = self._git(found, "hash-object", "-w", "--stdin", data=raw).stdout.decode().strip()
        url = self._url(f"{owner}/{repo}", f"blobs/{sha}")
        return JSONResponse({"url": url, "sha": sha}, status_code=201, headers={"location": url})

    # -- trees -------------------------------------------------------------------------

    def _tree_entry(self, found: Repo, entry: Any, doc: str) -> tuple[str, str, str | None]:
        """(path, mode, blob sha or None to delete) of one entry, checked as GitHub does."""
        item = self._object(entry, doc)
        self._permitted_keys(item, frozenset({"path", "mode", "type", "sha", "content"}), doc)
        path = self._string(item, "path", doc)
        parts = path.split("/")
        if path.startswith("/") or any(p in ("", ".", "..", ".git") for p in parts):
            raise validation_failed(
                "Tree", "path", f"tree.path {path!r} contains a malformed path component", doc
            )
        mode, kind = item.get("mode"), item.get("type")
        if mode not in TREE_MODES:
            raise invalid(
                f"For 'items/mode', {json.dumps(mode)} is not one of {json.dumps(TREE_MODES)}.",
                doc,
            )
        if kind not in TREE_TYPES:
            raise invalid(
                f"For 'items/type', {json.dumps(kind)} is not one of {json.dumps(TREE_TYPES)}.",
                doc,
            )
        if kind != "blob" or mode in ("040000", "160000"):
            raise invalid("this stand-in takes blob entries only (type blob, a file mode)", doc)
        has_sha, has_content = "sha" in item, "content" in item
        if has_sha == has_content:
            raise validation_failed(
                "Tree", "tree", "Must supply either tree.sha or tree.content, not both", doc
            )
        if has_content:
            text = self._string(item, "content", doc)
            done = self._git(found, "hash-object", "-w", "--stdin", data=text.encode())
            return path, str(mode), done.stdout.decode().strip()
        sha = item["sha"]
        if sha is None:
            return path, str(mode), None  # GitHub: a null sha deletes the path
        if not isinstance(sha, str) or self._object_type(found, sha) != "blob":
            raise validation_failed("Tree", "sha", f"tree.sha {sha} is not a valid blob", doc)
        return path, str(mode), sha

    def create_tree(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        doc = "/git/trees#create-a-tree"
        self._need(token, "contents", "write", doc)
        body = self._object(data, doc)
        self._permitted_keys(body, frozenset({"tree", "base_tree"}), doc)
        if "tree" not in body:
            raise invalid('"tree" wasn\'t supplied.', doc)
        if not isinstance(body["tree"], list):
            raise invalid(
                f"For 'properties/tree', {json.dumps(body['tree'])} is not an array.", doc
            )
        found = self._repo(owner, repo)
        entries = [self._tree_entry(found, entry, doc) for entry in body["tree"]]
        base = body.get("base_tree")
        if base is not None and (
            not isinstance(base, str) or self._object_type(found, base) != "tree"
        ):
            raise validation_failed(
                "Tree", "base_tree", f"base_tree {base} is not a valid tree", doc
            )
        with tempfile.TemporaryDirectory() as scratch:
            env = _env(GIT_INDEX_FILE=str(Path(scratch) / "index"))
            self._git(found, "read-tree", *([base] if base else ["--empty"]), env=env)
            for path, mode, sha in entries:
                if sha is None:
                    listed = self._git(found, "ls-files", "--error-unmatch", "--", path, env=env)
                    if listed.returncode != 0:
                        raise validation_failed(
                            "Tree", "path", f"cannot delete {path}: it is not in the tree", doc
                        )
                    self._git(found, "update-index", "--force-remove", "--", path, env=env)
                else:
                    self._git(
                        found,
                        "update-index",
                        "--add",
                        "--cacheinfo",
                        f"{mode},{sha},{path}",
                        env=env,
                    )
            sha = self._git(found, "write-tree", env=env).stdout.decode().strip()
        full_name = f"{owner}/{repo}"
        listed = self._git(found, "ls-tree", "-l", sha).stdout.decode().splitlines()
        tree = []
        for line in listed:
            meta, path = line.split("\t", 1)
            mode, kind, obj, size = meta.split()
            item: dict[str, Any] = {"path": path, "mode": mode, "type": kind, "sha": obj}
            if kind == "blob":
                item["size"] = int(size)
            item["url"] = self._url(full_name, f"{kind}s/{obj}")
            tree.append(item)
        answer = {
            "sha": sha,
            "url": self._url(full_name, f"trees/{sha}"),
            "tree": tree,
            "truncated": False,
        }
        return JSONResponse(answer, status_code=201)

    # -- commits -----------------------------------------------------------------------

    def _commit_json(self, found: Repo, full_name: str, sha: str) -> dict[str, Any]:
        raw = self._git(found, "cat-file", "commit", sha).stdout.decode()
        headers, _, message = raw.partition("\n\n")
        tree, parents, people = "", [], {}
        for line in headers.splitlines():
            key, _, value = line.partition(" ")
            if key == "tree":
                tree = value
            elif key == "parent":
                parents.append(value)
            elif key in ("author", "committer"):
                match = re.match(r"^(.*) <(.*)> (\d+) [+-]\d{4}$", value)
                assert match is not None
                people[key] = {"name": match[1], "email": match[2], "date": iso(float(match[3]))}
        return {
            "sha": sha,
            "node_id": f"C_{sha[:12]}",
            "url": self._url(full_name, f"commits/{sha}"),
            "html_url": f"https://github.com/{full_name}/commit/{sha}",
            "author": people["author"],
            "committer": people["committer"],
            "message": message.removesuffix("\n"),
            "tree": {"sha": tree, "url": self._url(full_name, f"trees/{tree}")},
            "parents": [
                {
                    "sha": p,
                    "url": self._url(full_name, f"commits/{p}"),
                    "html_url": f"https://github.com/{full_name}/commit/{p}",
                }
                for p in parents
            ],
            "verification": {
                "verified": False,
                "reason": "unsigned",
                "signature": None,
                "payload": None,
                "verified_at": None,
            },
        }

    def get_git_commit(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, sha: str
    ) -> dict[str, Any]:
        doc = "/git/commits#get-a-commit-object"
        self._need(token, "contents", "read", doc)
        found = self._repo(owner, repo)
        if self._object_type(found, sha) != "commit":
            raise Reject(404, "Not Found", doc)
        return self._commit_json(found, f"{owner}/{repo}", sha)

    def create_git_commit(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        doc = "/git/commits#create-a-commit"
        self._need(token, "contents", "write", doc)
        body = self._object(data, doc)
        keys = frozenset({"message", "tree", "parents", "author", "committer", "signature"})
        self._permitted_keys(body, keys, doc)
        message = self._string(body, "message", doc)
        tree = self._string(body, "tree", doc)
        parents = body.get("parents", [])
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise invalid(f"For 'properties/parents', {json.dumps(parents)} is not an array.", doc)
        found = self._repo(owner, repo)
        if self._object_type(found, tree) != "tree":
            raise validation_failed("Commit", "tree", "Tree SHA does not exist", doc)
        for parent in parents:
            if self._object_type(found, parent) != "commit":
                raise validation_failed(
                    "Commit", "parents", "Parent SHA does not exist or is not a commit object", doc
                )
        # Like GitHub: without an author, the token's account authors and commits.
        login = token.login
        when = f"{int(self.state.clock())} +0000"
        env = _env(
            GIT_AUTHOR_NAME=login,
            GIT_AUTHOR_EMAIL=f"{login}@users.noreply.github.com",
            GIT_AUTHOR_DATE=when,
            GIT_COMMITTER_NAME=login,
            GIT_COMMITTER_EMAIL=f"{login}@users.noreply.github.com",
            GIT_COMMITTER_DATE=when,
        )
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        done = self._git(found, *args, data=message.encode(), env=env)
        sha = done.stdout.decode().strip()
        full_name = f"{owner}/{repo}"
        answer = self._commit_json(found, full_name, sha)
        return JSONResponse(answer, status_code=201, headers={"location": answer["url"]})

    # -- references --------------------------------------------------------------------

    def _ref_json(self, full_name: str, ref: str, sha: str) -> dict[str, Any]:
        return {
            "ref": ref,
            "node_id": f"REF_{ref}",
            "url": self._url(full_name, ref),
            "object": {"type": "commit", "sha": sha, "url": self._url(full_name, f"commits/{sha}")},
        }

    def _move(self, found: Repo, ref: str, sha: str) -> None:
        self._git(found, "update-ref", ref, sha)
        branch = ref.removeprefix("refs/heads/")
        if ref.startswith("refs/heads/"):
            found.branches[branch] = sha
            # New commits on a pull request's head branch, as a push would bring.
            for number, pull in found.pulls.items():
                mine = (pull["head_ref"], pull["head_repo"]) == (branch, found.full_name)
                if mine and pull["state"] == "open":
                    self.state.push_pull(found.full_name, number, sha)

    def create_git_ref(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        doc = "/git/refs#create-a-reference"
        self._need(token, "contents", "write", doc)
        body = self._object(data, doc)
        self._permitted_keys(body, frozenset({"ref", "sha", "key"}), doc)
        ref, sha = self._string(body, "ref", doc), self._string(body, "sha", doc)
        found = self._repo(owner, repo)
        valid = self._git(found, "check-ref-format", ref).returncode == 0
        if not ref.startswith("refs/") or ref.count("/") < 2 or not valid:
            raise validation_failed(
                "Reference",
                "ref",
                "Reference name must start with 'refs/' and have at least two slashes.",
                doc,
            )
        if self._object_type(found, sha) != "commit":
            raise validation_failed("Reference", "sha", "Object does not exist", doc)
        exists = self._git(found, "rev-parse", "--verify", "--quiet", ref).returncode == 0
        if exists or (ref.startswith("refs/heads/") and ref[11:] in found.branches):
            raise validation_failed("Reference", "ref", "Reference already exists", doc)
        self._move(found, ref, sha)
        answer = self._ref_json(f"{owner}/{repo}", ref, sha)
        return JSONResponse(answer, status_code=201, headers={"location": answer["url"]})

    def update_git_ref(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, ref: str
    ) -> dict[str, Any]:
        doc = "/git/refs#update-a-reference"
        self._need(token, "contents", "write", doc)
        body = self._object(data, doc)
        self._permitted_keys(body, frozenset({"sha", "force"}), doc)
        sha = self._string(body, "sha", doc)
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise invalid(f"For 'properties/force', {json.dumps(force)} is not a boolean.", doc)
        found = self._repo(owner, repo)
        full_ref = f"refs/{ref}"
        current = self._git(found, "rev-parse", "--verify", "--quiet", full_ref)
        if current.returncode != 0:
            raise validation_failed("Reference", "ref", "Reference does not exist", doc)
        if self._object_type(found, sha) != "commit":
            raise validation_failed("Reference", "sha", "Object does not exist", doc)
        old = current.stdout.decode().strip()
        ancestor = self._git(found, "merge-base", "--is-ancestor", old, sha).returncode == 0
        if not force and not ancestor:
            raise validation_failed("Reference", "sha", "Update is not a fast forward", doc)
        self._move(found, full_ref, sha)
        return self._ref_json(f"{owner}/{repo}", full_ref, sha)

    # -- pull requests -----------------------------------------------------------------

    def create_pull(
        self, request: Request, data: Any, token: Token, owner: str, repo: str
    ) -> Response:
        doc = "/pulls/pulls#create-a-pull-request"
        self._need(token, "pull_requests", "write", doc)
        body = self._object(data, doc)
        keys = {"title", "head", "head_repo", "base", "body", "maintainer_can_modify", "draft"}
        self._permitted_keys(body, frozenset(keys | {"issue"}), doc)
        title = self._string(body, "title", doc)
        head, base = self._string(body, "head", doc), self._string(body, "base", doc)
        text = body.get("body")
        if text is not None and not isinstance(text, str):
            raise invalid(f"For 'properties/body', {json.dumps(text)} is not a string.", doc)
        full_name = f"{owner}/{repo}"
        head_owner, _, head_branch = head.rpartition(":")
        if head_owner not in ("", owner):
            raise validation_failed("PullRequest", "head", "invalid", doc, "invalid")
        head_sha = self.state.branch_sha(full_name, head_branch)
        base_sha = self.state.branch_sha(full_name, base)
        if head_sha is None:
            raise validation_failed("PullRequest", "head", "invalid", doc, "invalid")
        if base_sha is None:
            raise validation_failed("PullRequest", "base", "invalid", doc, "invalid")
        found = self._repo(owner, repo)
        for pull in found.pulls.values():
            if pull["state"] == "open" and (pull["head_ref"], pull["base_ref"]) == (
                head_branch,
                base,
            ):
                raise validation_failed(
                    "PullRequest",
                    "",
                    f"A pull request already exists for {owner}:{head_branch}.",
                    doc,
                )
        if head_sha == base_sha:
            raise validation_failed(
                "PullRequest", "", f"No commits between {base} and {head_branch}", doc
            )
        number = max([0, *found.pulls]) + 1
        pull = self.state.add_pull(
            full_name,
            number,
            head_sha=head_sha,
            base_sha=base_sha,
            head_ref=head_branch,
            author=token.login,
        )
        pull.update(title=title, body=text, base_ref=base, draft=bool(body.get("draft")))
        answer = self.state.pull_json(full_name, pull)
        return JSONResponse(answer, status_code=201, headers={"location": answer["url"]})

    def update_pull(
        self, request: Request, data: Any, token: Token, owner: str, repo: str, n: int
    ) -> dict[str, Any]:
        doc = "/pulls/pulls#update-a-pull-request"
        self._need(token, "pull_requests", "write", doc)
        body = self._object(data, doc)
        keys = frozenset({"title", "body", "state", "base", "maintainer_can_modify"})
        self._permitted_keys(body, keys, doc)
        pull = self._repo(owner, repo).pulls.get(n)
        if pull is None:
            raise Reject(404, "Not Found", doc)
        for name in ("title", "body"):
            if name in body:
                pull[name] = self._string(body, name, doc)
        self.state.push_pull(f"{owner}/{repo}", n, pull["head_sha"])  # touches updated_at
        return self.state.pull_json(f"{owner}/{repo}", pull)
