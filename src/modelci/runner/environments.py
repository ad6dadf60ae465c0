"""Python environments for commits, built with uv and shared between commits.

An environment is keyed by the hash of (Python version, resolved
requirements), so every commit whose requirements resolve the same way shares
one environment. Resolving takes uv a moment, so a requirements text's
resolution is remembered for ``resolution_ttl_s`` (unpinned requirements pick
up new releases after that).

Nothing from the repository or its dependencies runs here, outside the
sandbox: only wheels are installed (installing a wheel runs no package code),
requirements that would need a build (a local path, ``-e``, a VCS URL, a
package that only has a source distribution) are refused with a message, and
uv runs in an empty directory with ``--no-config`` so the repository cannot
configure it. Bytecode is compiled once at build time because the sandbox
mounts the environment read-only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from modelci.errors import EnvironmentBuildError
from modelci.runner.config import InstallConfig
from modelci.runner.locks import locked

__all__ = ["Environment", "EnvironmentManager", "Requirements", "gather_requirements"]

ReadFile = Callable[[str], bytes | None]
_COMPLETE = ".modelci-complete"
_NEEDS_BUILD = re.compile(
    r"^\s*(-e\b|--editable\b|\.|/|~|file:)|(git|hg|svn|bzr)\+|@\s*file:", re.IGNORECASE
)
_URL_REQ = re.compile(r"@\s*(https?://\S+)")


@dataclass(frozen=True)
class Requirements:
    """The requirements of one commit, as text uv can resolve."""

    text: str
    source: str  # what the text came from, for messages


@dataclass(frozen=True)
class Environment:
    key: str
    path: Path
    reused: bool
    seconds: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def _refuse_build(line: str, source: str) -> None:
    raise EnvironmentBuildError(
        f"{source}: '{line.strip()}' would have to be built from source, which runs its code "
        "outside the sandbox",
        hint="depend on released packages that ship wheels; modelci puts the repository's own "
        "root and src/ on PYTHONPATH, so '-e .' is not needed",
    )


def _inline(path: str, read: ReadFile, depth: int = 0) -> list[str]:
    if depth > 5:
        raise EnvironmentBuildError(f"{path}: -r includes nest too deeply", hint="flatten them")
    raw = read(path)
    if raw is None:
        raise EnvironmentBuildError(
            f"{path} is named as the requirements file but the commit has no such file",
            hint="fix install.requirements in modelci.yaml or add the file",
        )
    lines: list[str] = []
    for line in raw.decode("utf-8", "replace").splitlines():
        stripped = line.split(" #", 1)[0].strip()
        if not stripped or stripped.startswith("#"):
            continue
        include = re.match(r"^(-r|--requirement|-c|--constraint)\s*=?\s*(\S+)$", stripped)
        if include:
            target = PurePosixPath(path).parent / include.group(2)
            if target.is_absolute() or ".." in target.parts:
                _refuse_build(stripped, path)
            if include.group(1) in ("-c", "--constraint"):
                raise EnvironmentBuildError(
                    f"{path}: constraint files are not supported yet",
                    hint="pin the versions in the requirements file instead",
                )
            lines.extend(_inline(str(target), read, depth + 1))
            continue
        url = _URL_REQ.search(stripped)
        if _NEEDS_BUILD.search(stripped) or (url and not url.group(1).endswith(".whl")):
            _refuse_build(stripped, path)
        lines.append(stripped)
    return lines


def gather_requirements(install: InstallConfig, read: ReadFile, *, uv_bin: str) -> Requirements:
    """Collect a commit's requirements without checking it out."""
    if install.requirements:
        return Requirements("\n".join(_inline(install.requirements, read)), install.requirements)
    if install.uv_lock or (read("uv.lock") is not None and read("requirements.txt") is None):
        return Requirements(_export_lock(read, uv_bin=uv_bin), "uv.lock")
    if read("requirements.txt") is not None:
        return Requirements("\n".join(_inline("requirements.txt", read)), "requirements.txt")
    return Requirements("", "no requirements file")


def _export_lock(read: ReadFile, *, uv_bin: str) -> str:
    lock, project = read("uv.lock"), read("pyproject.toml")
    if lock is None or project is None:
        raise EnvironmentBuildError(
            "install.uv_lock is set but the commit lacks uv.lock or pyproject.toml",
            hint="commit both files (run `uv lock`), or use install.requirements",
        )
    with tempfile.TemporaryDirectory(prefix="modelci-lock-") as tmp:
        Path(tmp, "uv.lock").write_bytes(lock)
        Path(tmp, "pyproject.toml").write_bytes(project)
        out = _uv(
            uv_bin,
            "export",
            "--frozen",
            "--no-hashes",
            "--no-emit-project",
            "--no-header",
            "--no-annotate",
            "--format",
            "requirements-txt",
            cwd=Path(tmp),
            what="reading uv.lock",
        )
    lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("#")]
    for line in lines:
        if _NEEDS_BUILD.search(line):
            _refuse_build(line, "uv.lock")
    return "\n".join(lines)


def _uv(uv_bin: str, *args: str, cwd: Path, what: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
    }
    for name in (
        "UV_CACHE_DIR",
        "UV_INDEX_URL",
        "UV_DEFAULT_INDEX",
        "UV_EXTRA_INDEX_URL",
        "SSL_CERT_FILE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
    ):
        if name in os.environ:
            env[name] = os.environ[name]
    done = subprocess.run(
        [uv_bin, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        detail = "\n".join(done.stderr.strip().splitlines()[-15:])
        hint = "check the package names and versions in the requirements"
        if "wheel" in detail.lower() or "source distribution" in detail.lower():
            hint = (
                "modelci installs wheels only, so that no package code runs outside the "
                "sandbox; pin a version of that package that publishes a wheel for this "
                "platform and Python"
            )
        raise EnvironmentBuildError(f"uv failed while {what}:\n{detail}", hint=hint)
    return done.stdout


def _python_identity(python: str, memo_dir: Path) -> str:
    """The interpreter's path and version, part of every environment key.

    Asking the interpreter costs a process start (about 50 ms, on every CLI
    run's critical path), so the answer is kept in ``memo_dir``, keyed by the
    binary's identity on disk: reinstalling or upgrading it changes that.
    """
    real = os.path.realpath(python)
    try:
        info = os.stat(real)
    except OSError:
        info = None
    memo = None
    if info is not None:
        stamp = f"{real}\0{info.st_ino}\0{info.st_size}\0{info.st_mtime_ns}\0{info.st_ctime_ns}"
        memo = memo_dir / f"{_digest(stamp)}.txt"
        with suppress(OSError):
            return memo.read_text()
    try:
        done = subprocess.run(
            [real, "-c", "import sys; print(sys.version)"],
            capture_output=True,
            text=True,
            check=True,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError):
        raise EnvironmentBuildError(
            f"the interpreter {python} for repository environments does not run",
            hint="install python3 (apt-get install python3) or set MODELCI_PYTHON",
        ) from None
    identity = f"{real}\n{done.stdout.strip()}"
    if memo is not None:
        with suppress(OSError):  # only a shortcut: asked again next time
            _write_atomically(memo, identity)
    return identity


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


class EnvironmentManager:
    """Builds and caches environments under ``envs_dir``."""

    def __init__(
        self, *, envs_dir: Path, python: str, uv_bin: str, resolution_ttl_s: float = 24 * 3600
    ) -> None:
        self.envs_dir = envs_dir
        self.python = python
        self.uv_bin = uv_bin
        self.resolution_ttl_s = resolution_ttl_s

    def _identity(self) -> str:
        return _python_identity(self.python, self.envs_dir / "interpreters")

    def _resolve(self, requirements: Requirements) -> str:
        identity = self._identity()
        memo = self.envs_dir / "resolutions" / f"{_digest(identity, requirements.text)}.txt"
        try:
            if time.time() - memo.stat().st_mtime < self.resolution_ttl_s:
                return memo.read_text()
        except FileNotFoundError:
            pass
        if not requirements.text.strip():
            resolved = ""
        else:
            with tempfile.TemporaryDirectory(prefix="modelci-resolve-") as tmp:
                Path(tmp, "requirements.in").write_text(requirements.text + "\n")
                resolved = _uv(
                    self.uv_bin,
                    "pip",
                    "compile",
                    "requirements.in",
                    "--only-binary",
                    ":all:",
                    "--python",
                    self.python,
                    "--no-header",
                    "--no-annotate",
                    "--quiet",
                    cwd=Path(tmp),
                    what=f"resolving {requirements.source}",
                )
        _write_atomically(memo, resolved)
        return resolved

    def key_for(self, requirements: Requirements) -> str:
        """The environment key, resolving the requirements if needed (no build)."""
        return _digest(self._identity(), self._resolve(requirements))

    def ensure(self, requirements: Requirements) -> Environment:
        """The environment for these requirements, built once under a lock."""
        started = time.monotonic()
        resolved = self._resolve(requirements)
        key = _digest(self._identity(), resolved)
        path = self.envs_dir / key
        if (path / _COMPLETE).exists():
            return Environment(key, path, reused=True, seconds=time.monotonic() - started)
        self.envs_dir.mkdir(parents=True, exist_ok=True)
        self.envs_dir.chmod(0o755)  # the sandbox's uids must reach the environments
        with locked(self.envs_dir / "locks" / f"{key}.lock"):
            if (path / _COMPLETE).exists():
                return Environment(key, path, reused=True, seconds=time.monotonic() - started)
            self._build(path, resolved, requirements.source)
        return Environment(key, path, reused=False, seconds=time.monotonic() - started)

    def _build(self, path: Path, resolved: str, source: str) -> None:
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        with tempfile.TemporaryDirectory(prefix="modelci-build-") as work:
            try:
                _uv(
                    self.uv_bin,
                    "venv",
                    "--quiet",
                    "--relocatable",
                    "--python",
                    self.python,
                    str(tmp),
                    cwd=Path(work),
                    what="creating the virtual environment",
                )
                if resolved.strip():
                    Path(work, "requirements.txt").write_text(resolved)
                    _uv(
                        self.uv_bin,
                        "pip",
                        "install",
                        "--quiet",
                        "--python",
                        str(tmp / "bin" / "python"),
                        "--only-binary",
                        ":all:",
                        "--no-deps",
                        "--compile-bytecode",
                        "-r",
                        "requirements.txt",
                        cwd=Path(work),
                        what=f"installing {source}",
                    )
                (tmp / _COMPLETE).write_text(resolved)
                tmp.rename(path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
