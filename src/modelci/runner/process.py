"""A sandboxed job's process chain: its argv, start, supervision and killing.

``job_argv`` layers ``setpriv --pdeathsig → sh (joins the cgroups) → prlimit →
the runner's isolation → sh -c COMMAND``; ``spawn`` starts it (the only place that
starts repository code with subprocess); ``Job`` watches it (timeout, cancel,
disk budget, capped log) and kills the whole tree; ``SandboxProcess`` is a
long-running one (a model worker) with its pipes.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import threading
import time
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from modelci.errors import SandboxUnavailable
from modelci.runner.cgroups import MB, JobCgroups, task_alive

if TYPE_CHECKING:
    from modelci.runner.sandbox import SandboxSpec


class ArgvBuilder(Protocol):
    """What a runner contributes to the chain: its isolation argv and the helpers."""

    prlimit: str
    setpriv: str

    def isolation_argv(
        self, spec: SandboxSpec, uid: int, env: dict[str, str], fds: list[int]
    ) -> tuple[list[str], dict[str, str]]: ...


SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


INSTALL_HINT = (
    "install bubblewrap (apt-get install bubblewrap) or pass --unsafe-no-sandbox to run "
    "repository code without isolation"
)


MAX_WALK = 100_000  # entries the disk watchdog walks before calling the job over budget


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# Run as root: joins the cgroups listed before "--", then becomes the job.
JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'


def disk_usage(root: Path, stop: threading.Event | None = None) -> int | None:
    """Bytes allocated under root, or None past MAX_WALK entries."""
    # Path-based on purpose: walking by fds needs one fd per level of a tree the
    # job controls. A job racing a dir into a symlink can at worst make us count
    # files elsewhere (metadata only, bounded); the watchdog is best effort.
    total, entries, pending = 0, 0, [str(root)]
    while pending and not (stop is not None and stop.is_set()):
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as listing:
            for entry in listing:
                entries += 1
                if entries > MAX_WALK:
                    return None
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
    return total


# How runtimes report a failed allocation (Python, numpy, C++, torch, glibc).
_ALLOCATION_FAILED = re.compile(
    rb"MemoryError|bad_alloc|[Cc]annot allocate memory|can't allocate memory|[Oo]ut of memory"
)


def allocation_failed(log_path: Path) -> bool:
    """Whether the log's last lines (where a fatal error is printed) report one."""
    try:
        with log_path.open("rb") as log:
            log.seek(max(0, log_path.stat().st_size - 4096))
            return _ALLOCATION_FAILED.search(log.read()) is not None
    except OSError:
        return False


def chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    # Directory fds and lchown: links the job left cannot redirect us.
    for _, dirs, files, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)


def check_reachable(path: Path, uid: int, need: int) -> None:
    """Raise unless uid can traverse every directory to path and use it with `need` bits."""
    real = Path(os.path.realpath(path))
    for part in [*reversed(real.parents), real]:
        info = part.stat()
        shift = 6 if info.st_uid == uid else 3 if info.st_gid == uid else 0
        want = need if part == real else 0o1
        if (info.st_mode >> shift) & want != want:
            raise SandboxUnavailable(
                f"the sandbox user (uid {uid}) cannot reach {path}: {part} has mode "
                f"{stat.S_IMODE(info.st_mode):o}",
                hint=f"keep work dirs and environments under directories that others may "
                f"traverse (chmod o+x {part}), such as the data dir modelci sets up; not under "
                "/root or pytest's /tmp/pytest-of-root",
            )


def which(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SandboxUnavailable(f"{name} was not found on PATH", hint=hint)
    return found


class Job:
    """One started process tree, the threads watching it, and why it was killed."""

    def __init__(self, proc: subprocess.Popen[bytes], cgroups: JobCgroups) -> None:
        self.proc, self.cgroups = proc, cgroups
        self.finished = threading.Event()
        self.killed_for: str | None = None
        self.log_truncated = False
        self.killed = set[int]()
        self._lock = threading.Lock()

    def kill(self, reason: str | None = None) -> None:
        with self._lock:
            if reason and self.killed_for is None and not self.finished.is_set():
                self.killed_for = reason
            # Members are read before the leader dies: killing bwrap tears down its
            # pid namespace, whose tasks then leave cgroup.procs before they are dead.
            members = self.cgroups.members()
            # A group outlives its reaped leader while members remain, so its id
            # cannot be reused under us; bwrap's pid namespace takes the rest.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.cgroups.kill()  # v2's cgroup.kill also takes what forks meanwhile
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.killed.update(members)

    def await_killed(self, timeout: float = 2.0) -> None:
        """Wait until every task kill() signalled is dead: SIGKILL is delivered at
        once but a task takes a moment to exit, and a job counts as stopped (its
        slot free, its uid reusable) only once nothing of it runs."""
        deadline = time.monotonic() + timeout
        while (pending := [pid for pid in self.killed if task_alive(pid)]) and (
            time.monotonic() < deadline
        ):
            self.killed.intersection_update(pending)
            time.sleep(0.005)

    def guard(self, deadline: float, cancel: threading.Event | None) -> None:
        while (remaining := deadline - time.monotonic()) > 0:
            if cancel is not None and cancel.is_set():
                return self.kill("cancelled")
            # Without a cancel event nothing needs polling: sleep to the deadline.
            if self.finished.wait(min(remaining, 0.1) if cancel is not None else remaining):
                return None
        return self.kill("timeout")

    def watch_disk(self, workdir: Path, budget: int) -> None:
        while not self.finished.wait(1.0):
            used = disk_usage(workdir, self.finished)
            if not self.finished.is_set() and (used is None or used > budget):
                return self.kill("disk")
        return None

    def pump(self, source: IO[bytes], log: IO[bytes], cap: int, stop: threading.Event) -> None:
        """Copy output to the log up to cap bytes, then drain and discard it."""
        fd, written, poller = source.fileno(), 0, select.poll()
        poller.register(fd)
        while not stop.is_set():
            chunk = os.read(fd, 1 << 16) if poller.poll(200) else None
            if chunk == b"":
                return
            if not chunk:
                continue
            room = cap - written
            # A failing write (disk full) must not stop the draining, or the job
            # would block on a full pipe.
            with contextlib.suppress(OSError):
                log.write(chunk[: max(room, 0)])
                if len(chunk) > room and not self.log_truncated:
                    note = f"\n[modelci: output beyond {cap / MB:g} MB was discarded]\n"
                    log.write(note.encode())
                log.flush()
            written += max(0, min(room, len(chunk)))
            self.log_truncated = self.log_truncated or len(chunk) > room


def sandbox_environment(spec: SandboxSpec, home: str) -> dict[str, str]:
    env = {"HOME": home, "PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "MODELCI": "1"}
    env |= {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if spec.venv is not None:
        env |= {"VIRTUAL_ENV": str(spec.venv), "PATH": f"{spec.venv}/bin:{SYSTEM_PATH}"}
    for name, value in spec.env.items():
        if not _ENV_NAME.fullmatch(name) or "\0" in value:
            raise ValueError(f"invalid environment variable for the sandbox: {name!r}")
        env[name] = value
    return env


class SandboxProcess:
    """A long-running sandboxed process (a model worker) and its stdin/stdout pipes.

    Its stderr goes to ``spec.log_path`` (capped); ``stop`` kills the whole tree,
    removes its cgroups and lets their name go. Nothing bounds its wall-clock time
    but ``stop``.
    """

    def __init__(self, job: Job, home: str | None, log: IO[bytes], spec: SandboxSpec) -> None:
        self._job, self._home, self._log, self.spec = job, home, log, spec
        assert job.proc.stdin is not None
        assert job.proc.stdout is not None
        self.stdin: IO[bytes] = job.proc.stdin
        self.stdout: IO[bytes] = job.proc.stdout
        self._stop_pump = threading.Event()
        assert job.proc.stderr is not None
        self._pump = threading.Thread(
            target=job.pump,
            args=(job.proc.stderr, log, spec.limits.max_log_mb * MB, self._stop_pump),
            daemon=True,
        )
        self._pump.start()

    @property
    def pid(self) -> int:
        return self._job.proc.pid

    def poll(self) -> int | None:
        """The exit code once it has ended, else None."""
        return self._job.proc.poll()

    def stop(self) -> None:
        self._job.finished.set()
        self._job.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._job.proc.wait(5)
        self._job.await_killed()
        self._stop_pump.set()
        self._pump.join(2.0)
        for stream in (self.stdin, self.stdout, self._job.proc.stderr, self._log):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        self._job.cgroups.release()
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)


def job_argv(
    runner: ArgvBuilder,
    spec: SandboxSpec,
    uid: int,
    home: str,
    fds: list[int],
    memory: Path | None,
    groups: list[Path],
) -> tuple[list[str], dict[str, str]]:
    """``sh (joins the cgroups) → prlimit → the runner's isolation → command``."""
    lim = spec.limits
    argv, env = runner.isolation_argv(spec, uid, sandbox_environment(spec, home), fds)
    rlimits = f"--core=0 --cpu={lim.cpu_s}:{lim.cpu_s + 5} --nofile="
    rlimits += f"{lim.max_open_files} --fsize={lim.max_file_mb * MB} --nproc="
    # Without a memory cgroup, the address-space limit is the only memory cap.
    rlimits += f"{lim.max_processes}" + ("" if memory else f" --as={lim.memory_mb * MB}")
    argv = [runner.prlimit, *rlimits.split(), "--", *argv]
    if groups:
        procs = [str(group / "cgroup.procs") for group in groups]
        argv = ["/bin/sh", "-c", JOIN_CGROUPS, "job", *procs, "--", *argv]
    # Killed with the thread that started it from its first instruction on: bwrap's
    # --die-with-parent only starts once bwrap runs, and a worker SIGKILLed before
    # that would leave the chain running its job unwatched.
    return [runner.setpriv, "--pdeathsig", "KILL", "--", *argv], env


def spawn(
    runner: ArgvBuilder,
    spec: SandboxSpec,
    uid: int,
    home: str,
    memory: Path | None,
    groups: list[Path],
    *,
    serving: bool,
) -> subprocess.Popen[bytes]:
    """Start the job's process chain. A run's output goes to one pipe, stdin closed;
    a model worker (``serving``) talks over unbuffered stdin/stdout, stderr apart."""
    fds = list[int]()
    try:
        argv, env = job_argv(runner, spec, uid, home, fds, memory, groups)
        return subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if serving else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if serving else subprocess.STDOUT,
            env=env,
            cwd=spec.workdir,
            pass_fds=fds,
            start_new_session=True,
            bufsize=0 if serving else -1,
        )
    except OSError as exc:
        raise SandboxUnavailable(f"could not start the sandbox: {exc}", hint=INSTALL_HINT) from exc
    finally:
        for fd in fds:
            os.close(fd)


def data_fd(text: str) -> int:
    # Small enough for a pipe's buffer, so writing all of it up front cannot block.
    read, write = os.pipe()
    os.write(write, text.encode())
    os.close(write)
    return read


@cache
def probe_sandbox(prefix: tuple[str, ...]) -> str | None:
    try:
        done = subprocess.run(
            [*prefix, "--", "/usr/bin/true"],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=30,
            env={"PATH": SYSTEM_PATH},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")
