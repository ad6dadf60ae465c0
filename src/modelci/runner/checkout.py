"""Commits of a repository, from one persistent bare mirror per repository.

The mirror is updated with ``git fetch`` only when a requested ref is not
already known (a sha that is present never needs the network). Each run gets
its own copy of the exact commit's tree, written by ``git read-tree -u`` with
a private index, and removed afterwards whatever happens.

git runs with the system and global configuration switched off, so no filter,
hook or credential helper configured on the server runs against a
repository's content.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from modelci.errors import CheckoutError
from modelci.runner.locks import locked

__all__ = ["Mirror", "is_remote_url", "open_mirror", "repository_name"]

_SHA = re.compile(r"^[0-9a-f]{40}$")
_MAX_BLOB = 1024 * 1024


def is_remote_url(repo: str) -> bool:
    return "://" in repo or re.match(r"^[\w.-]+@[\w.-]+:", repo) is not None


def repository_name(repo: str) -> str:
    """A short human name: ``owner/name`` for URLs, the directory name for paths."""
    if is_remote_url(repo):
        tail = re.split(r"[:/]", repo.rstrip("/").removesuffix(".git"))
        return "/".join(tail[-2:])
    return Path(repo).resolve().name


def _git_env() -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
    }
    return env


def _git(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    try:
        done = subprocess.run(
            ["git", "-c", "core.hooksPath=/dev/null", "-c", "protocol.file.allow=always", *args],
            cwd=cwd,
            env=env or _git_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError:
        raise CheckoutError("git is not installed", hint="apt-get install git") from None
    except subprocess.TimeoutExpired:
        raise CheckoutError(
            f"git {args[0]} took longer than {timeout:.0f} s",
            hint="check the repository URL and the network, then retry",
        ) from None
    if done.returncode != 0:
        raise _GitFailed(done.stderr.strip() or done.stdout.strip())
    return done.stdout


class _GitFailed(Exception):
    pass


@dataclass(frozen=True)
class Mirror:
    """A bare mirror of one repository, kept under the data dir."""

    url: str
    path: Path
    # Extra environment for talking to the remote (credentials): never logged.
    remote_env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # The repository itself when it is a local path: its refs are read there.
    source: Path | None = field(default=None, compare=False)
    _files: dict[tuple[str, str], bytes | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _run(self, *args: str, timeout: float = 600) -> str:
        return _git("--git-dir", str(self.path), *args, timeout=timeout)

    def fetch(self) -> None:
        try:
            _git(
                "--git-dir",
                str(self.path),
                "fetch",
                "--prune",
                "--quiet",
                "origin",
                env={**_git_env(), **self.remote_env},
            )
        except _GitFailed as exc:
            raise CheckoutError(
                f"could not fetch {self.url}: {exc}",
                hint="check that the repository exists and is readable from this machine",
            ) from None

    def _rev_parse(self, ref: str) -> str | None:
        try:
            return self._run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
        except _GitFailed:
            return None

    def resolve(self, ref: str) -> str:
        """The full sha of ``ref`` (a sha, branch, tag or expression such as HEAD~1)."""
        return self.resolve_many(ref)[0]

    def resolve_many(self, *refs: str) -> list[str]:
        """Full shas of several refs, fetching at most once.

        Branch names move: a remote repository's refs are read after a fetch
        unless all of them are full shas already in the mirror; a local one's
        are read in the repository itself, and the mirror fetches only when it
        lacks one of those commits.
        """
        for ref in refs:
            if ref.startswith("-") or not ref.strip():
                raise CheckoutError(f"invalid ref {ref!r}", hint="give a branch, tag or commit sha")
        if all(_SHA.match(ref) for ref in refs) and self._has_commits(refs):
            return list(refs)
        # Read where they live (HEAD is the checkout's HEAD there): the fetch was the
        # slowest git process of a warm CLI evaluation (~0.05-0.1 s).
        at_source = self._resolve_at_source(refs)
        if at_source is not None and self._has_commits(at_source):
            return at_source
        self.fetch()
        if at_source is not None and self._has_commits(at_source):
            return at_source
        shas = []
        for ref in refs:
            sha = self._rev_parse(ref)
            if sha is None:
                raise CheckoutError(
                    f"{ref!r} is not a commit of {self.url}",
                    hint="check the spelling; branches are resolved as in the source "
                    "repository (e.g. main, a tag or a full sha)",
                )
            shas.append(sha)
        return shas

    def _has_commits(self, shas: Sequence[str]) -> bool:
        try:
            self._run("rev-parse", *(f"{sha}^{{commit}}" for sha in shas))
        except _GitFailed:
            return False
        return True

    def _resolve_at_source(self, refs: Sequence[str]) -> list[str] | None:
        """Full shas of ``refs`` in the local source repository; None for a remote
        repository or when one of them does not resolve there."""
        if self.source is None:
            return None
        try:
            # Refs never start with "-" (resolve_many refuses them): no option injection.
            out = _git("-C", str(self.source), "rev-parse", *(f"{ref}^{{commit}}" for ref in refs))
        except (_GitFailed, CheckoutError):
            return None
        shas = out.split()
        return shas if len(shas) == len(refs) and all(_SHA.match(s) for s in shas) else None

    def merge_base(self, a: str, b: str) -> str:
        try:
            return self._run("merge-base", a, b).strip()
        except _GitFailed:
            raise CheckoutError(
                f"{a[:7]} and {b[:7]} have no common ancestor",
                hint="pass --no-merge-base to compare the two commits as given",
            ) from None

    def read_file(self, sha: str, path: str) -> bytes | None:
        """A file's content at a commit, or None when the commit has no such file."""
        # A commit's files never change: an evaluation reads modelci.yaml several
        # times (repeats, gates, each side's runs), and each read is a git process.
        memo = (sha, path) if _SHA.match(sha) else None
        if memo is not None and memo in self._files:
            return self._files[memo]
        # One process, and never more than the limit in memory (a commit may hold
        # a huge file where a small one is expected).
        with subprocess.Popen(
            ["git", "--git-dir", str(self.path), "cat-file", "blob", f"{sha}:{path}"],
            env=_git_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ) as git:
            assert git.stdout is not None
            content = git.stdout.read(_MAX_BLOB + 1)
            if len(content) > _MAX_BLOB:
                git.kill()
                raise CheckoutError(
                    f"{path} at {sha[:7]} is over the {_MAX_BLOB} bytes allowed",
                    hint=f"keep {path} small",
                )
        found = content if git.returncode == 0 else None
        if memo is not None:
            self._files[memo] = found
        return found

    def changed_files(self, a: str, b: str, *pathspecs: str, limit: int = 10_000) -> list[str]:
        """Paths that differ between commits ``a`` and ``b`` (those matching ``pathspecs``
        when given), at most ``limit`` of them."""
        try:
            out = self._run("diff", "--name-only", "--no-renames", "-z", a, b, "--", *pathspecs)
        except _GitFailed as exc:
            raise CheckoutError(
                f"could not compare {a[:7]} with {b[:7]}: {exc}",
                hint="the commits may be corrupt; re-run to fetch again",
            ) from None
        return [path for path in out.split("\0") if path][:limit]

    def export_file(self, sha: str, path: str, dest: Path) -> bool:
        """Write a file's content at a commit to ``dest`` (streamed: it may be large);
        False when the commit has no such file."""
        try:
            self._run("cat-file", "-e", f"{sha}:{path}")
        except _GitFailed:
            return False
        with dest.open("wb") as out:
            done = subprocess.run(
                ["git", "--git-dir", str(self.path), "cat-file", "blob", f"{sha}:{path}"],
                env=_git_env(),
                stdout=out,
                stderr=subprocess.DEVNULL,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        return done.returncode == 0

    @contextmanager
    def checkout(self, sha: str, parent: Path) -> Iterator[Path]:
        """The commit's files in a fresh directory under ``parent``, removed on exit."""
        parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{sha[:12]}-", dir=parent))
        index = workdir.with_suffix(".index")
        env = {**_git_env(), "GIT_INDEX_FILE": str(index)}
        try:
            _git(
                "--git-dir",
                str(self.path),
                "--work-tree",
                str(workdir),
                "read-tree",
                "-u",
                "--reset",
                sha,
                env=env,
            )
        except _GitFailed as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise CheckoutError(
                f"could not check out {sha[:7]}: {exc}",
                hint="the commit may be corrupt; re-run to fetch again",
            ) from None
        finally:
            index.unlink(missing_ok=True)
        try:
            yield workdir
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _check_local_repository(repo: str, path: Path) -> None:
    """A local path must be a repository's root: say which of that it is not, since
    git's clone says "repository does not exist" for each."""
    if not path.exists():
        raise CheckoutError(f"{repo} does not exist", hint="give a local git repository or a URL")
    if not path.is_dir():
        raise CheckoutError(
            f"{repo} is a file, not a git repository", hint="give the repository's directory"
        )
    quoted = shlex.quote(repo)
    try:
        prefix = _git("-C", str(path), "rev-parse", "--show-prefix").strip()
    except _GitFailed:
        raise CheckoutError(
            f"{repo} is not a git repository",
            hint=f"give the directory that holds .git, or make it one: git -C {quoted} init && "
            f"git -C {quoted} add -A && git -C {quoted} commit -m 'first commit'",
        ) from None
    if prefix:
        root = _git("-C", str(path), "rev-parse", "--show-toplevel").strip()
        raise CheckoutError(
            f"{repo} is the subdirectory {prefix.rstrip('/')} of the git repository {root}, "
            "not a repository's root",
            hint=f"give the repository itself ({root}), or make {repo} a repository of its "
            "own (git init)",
        )


def open_mirror(
    repo: str, mirrors_dir: Path, *, git_env: Mapping[str, str] | None = None
) -> Mirror:
    """The mirror of ``repo`` (a local path or git URL), cloned on first use."""
    url = repo if is_remote_url(repo) else str(Path(repo).expanduser().resolve())
    if not is_remote_url(repo):
        _check_local_repository(repo, Path(url))
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    mirrors_dir.mkdir(parents=True, exist_ok=True)
    path = mirrors_dir / f"{repository_name(repo).replace('/', '_')}-{key}.git"
    remote_env = dict(git_env or {})
    source = None if is_remote_url(repo) else Path(url)
    mirror = Mirror(url=url, path=path, remote_env=remote_env, source=source)
    with locked(mirrors_dir / f"{path.name}.lock"):
        if not (path / "HEAD").exists():
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                _git(
                    "clone",
                    "--mirror",
                    "--quiet",
                    "--",
                    url,
                    str(tmp),
                    env={**_git_env(), **remote_env},
                )
            except _GitFailed as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise CheckoutError(
                    f"could not clone {repo}: {exc}",
                    hint="check the path or URL and that this machine can read it",
                ) from None
            tmp.rename(path)
    return mirror
