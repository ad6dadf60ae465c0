"""Run a repository's (untrusted) commands: bubblewrap, a real uid, rlimits, cgroups.

The only module that starts repository code. A run is layered as
``sh (joins the job's cgroups) → prlimit → setpriv (root only) → bwrap → sh -c COMMAND``.
Inside: no network (loopback included), a cleared environment, no capabilities,
read-only /usr and root, generated /etc/passwd, /etc/group and /etc/hosts,
private tmpfs /tmp and /dev/shm. The only host paths inside, each at its host
path: /usr (with the /bin, /lib... links), /etc/ld.so.cache, /etc/ssl/certs,
the venv and ``ro_binds`` read-only, and the work dir writable.

Callers must know:

- As root, code runs as uid ``uid_base + slot`` (bwrap's ``--uid`` does not
  drop root's privileges). That uid must reach the bind sources: keep work dirs
  and venvs under directories others may traverse (``o+x``, as the data dir is
  set up). The work dir is chowned to that uid for the run and back after it.
- Not as root, code runs as the caller: RLIMIT_NPROC then counts all of the
  caller's processes, and cgroups are usually not writable.
- Memory and process counts are capped by cgroup v1 ``memory``/``pids`` where
  mounted and writable; elsewhere (cgroup v2 only) by RLIMIT_AS and RLIMIT_NPROC.
- The disk cap is a watchdog on the work dir's growth, checked every second: a
  job can overshoot it by about a second's worth of writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import IO, Protocol

from modelci.errors import SandboxUnavailable

__all__ = [
    "BubblewrapSandbox",
    "Limits",
    "Sandbox",
    "SandboxProcess",
    "SandboxResult",
    "SandboxSpec",
    "UnsafeLocalSandbox",
    "acquire_slot",
    "make_sandbox",
]

MB = 1 << 20
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_INSTALL_HINT = (
    "install bubblewrap (apt-get install bubblewrap) or pass --unsafe-no-sandbox to run "
    "repository code without isolation"
)
_MAX_WALK = 100_000  # entries the disk watchdog walks before calling the job over budget
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Run as root: joins the cgroups listed before "--", then becomes the job.
_JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec "$@"'
_ISOLATION = [
    *("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"),
    *("--new-session", "--clearenv", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"),
]


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 1800  # wall clock
    memory_mb: int = 4096  # cgroup memory.limit_in_bytes, else RLIMIT_AS
    cpu_s: int = 3600  # RLIMIT_CPU: SIGXCPU, then SIGKILL 5 s later
    max_file_mb: int = 1024  # RLIMIT_FSIZE, per file
    max_open_files: int = 1024  # RLIMIT_NOFILE
    max_processes: int = 256  # cgroup pids.max and RLIMIT_NPROC (per uid)
    max_disk_mb: int = 4096  # growth of the work dir during the run (watchdog)
    max_log_mb: int = 20  # output kept in the log; the rest is drained and dropped
    tmp_mb: int = 512  # each of the tmpfs at /tmp and /dev/shm


@dataclass(frozen=True)
class SandboxSpec:
    command: str  # run with /bin/sh -c inside
    workdir: Path  # writable cwd, bound at the same path
    log_path: Path  # receives stdout and stderr, capped; never visible inside
    venv: Path | None = None  # read-only at the same path; bin/ first on PATH
    ro_binds: tuple[Path, ...] = ()  # more read-only directories at the same path
    devices: tuple[Path, ...] = ()  # device nodes usable inside (a GPU's), at the same path
    env: Mapping[str, str] = field(default_factory=dict)  # added to the fixed variables
    limits: Limits = Limits()
    slot: int = 0  # from acquire_slot: picks the uid (uid_base + slot) and the cgroups


@dataclass(frozen=True)
class SandboxResult:
    exit_code: int | None  # None when killed by us
    duration_s: float
    timed_out: bool
    out_of_memory: bool
    disk_exceeded: bool
    log_truncated: bool
    cancelled: bool = False
    limits: Limits = Limits()  # what the run was held to, for the messages

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.out_of_memory

    def failure_reason(self) -> str | None:
        """Why the run failed, worded to follow "the run ...", or None."""
        lim, code = self.limits, self.exit_code
        if self.timed_out:
            return f"exceeded its {lim.timeout_s:g} s timeout (limits.timeout in modelci.yaml)"
        if self.out_of_memory:
            return f"was killed after using more than {lim.memory_mb} MB of memory " + (
                "(limits.memory_mb in modelci.yaml)"
            )
        if self.disk_exceeded:
            return f"wrote more than {lim.max_disk_mb} MB into its work dir " + (
                "(limits.disk_mb in modelci.yaml)"
            )
        if self.cancelled:
            return "was cancelled"
        if code is None or code == 0:
            return None
        if code < 0:
            return f"was killed by signal {_signal_name(-code)}; see the log"
        if code == 128 + signal.SIGXCPU:
            return f"exited with code {code} after using its {lim.cpu_s} s of CPU time"
        if 128 < code < 128 + signal.NSIG:
            return f"exited with code {code} (killed by {_signal_name(code - 128)}); see the log"
        return f"exited with code {code}; see the log"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class Sandbox(Protocol):
    def run(self, spec: SandboxSpec, *, cancel: threading.Event | None = None) -> SandboxResult:
        """Run spec.command to completion (or until killed) and say how it ended."""

    def start(self, spec: SandboxSpec) -> SandboxProcess:
        """Start spec.command as a long-running process talking over stdin/stdout."""


def _make_cgroup(controller: str, name: str, settings: dict[str, int]) -> Path | None:
    hierarchy = _CGROUP_ROOT / controller
    if not os.path.ismount(hierarchy):  # never mkdir into a cgroup2 root by mistake
        return None
    group = hierarchy / "modelci" / name
    try:
        _remove_cgroup(group)  # one left by a crashed run: start with fresh counters
        group.mkdir(parents=True, exist_ok=True)
        for key, value in settings.items():
            # memsw (swap must not stretch the limit) only exists with swap accounting.
            if "memsw" not in key or (group / key).exists():
                (group / key).write_text(str(value))
    except OSError:
        _remove_cgroup(group)
        return None
    return group


def _remove_cgroup(group: Path) -> None:
    # Loops: a fork loop adds tasks between reading and killing, and killed
    # tasks leave the group a moment after they vanish from cgroup.procs.
    for _ in range(200):
        try:
            pids = [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                group.rmdir()
                return
        except (FileNotFoundError, PermissionError):
            return
        except OSError:
            pass
        time.sleep(0.005)


def _alive(pid: int) -> bool:
    """Whether pid is a task that has not finished exiting (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold any byte.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X", "")


def _oom_kills(memory: Path | None) -> int:
    if memory is None:
        return 0
    with contextlib.suppress(OSError, ValueError):
        for line in (memory / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return 0


def _disk_usage(root: Path, stop: threading.Event | None = None) -> int | None:
    """Bytes allocated under root, or None past _MAX_WALK entries."""
    # Path-based on purpose: walking by fds needs one fd per level of a tree the
    # job controls. A job racing a dir into a symlink can at worst make us count
    # files elsewhere (metadata only, bounded); the watchdog is best effort.
    total, entries, pending = 0, 0, [str(root)]
    while pending and not (stop is not None and stop.is_set()):
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as listing:
            for entry in listing:
                entries += 1
                if entries > _MAX_WALK:
                    return None
                with contextlib.suppress(OSError):
                    info = entry.stat(follow_symlinks=False)
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
    return total


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid, follow_symlinks=False)
    # Directory fds and lchown: links the job left cannot redirect us.
    for _, dirs, files, dirfd in os.fwalk(root, follow_symlinks=False):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)


def _check_reachable(path: Path, uid: int, need: int) -> None:
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


def _which(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SandboxUnavailable(f"{name} was not found on PATH", hint=hint)
    return found


class _Job:
    """One started process tree, the threads watching it, and why it was killed."""

    def __init__(self, proc: subprocess.Popen[bytes], groups: list[Path]) -> None:
        self.proc, self.groups = proc, groups
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
            members = set[int]()
            for group in self.groups:
                with contextlib.suppress(OSError, ValueError):
                    members.update(int(pid) for pid in (group / "cgroup.procs").read_text().split())
            # A group outlives its reaped leader while members remain, so its id
            # cannot be reused under us; bwrap's pid namespace takes the rest.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.killed.update(members)

    def await_killed(self, timeout: float = 2.0) -> None:
        """Wait until every task kill() signalled is dead: SIGKILL is delivered at
        once but a task takes a moment to exit, and a job counts as stopped (its
        slot free, its uid reusable) only once nothing of it runs."""
        deadline = time.monotonic() + timeout
        while (pending := [pid for pid in self.killed if _alive(pid)]) and (
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
            used = _disk_usage(workdir, self.finished)
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


def _environment(spec: SandboxSpec, home: str) -> dict[str, str]:
    env = {"HOME": home, "PATH": _SYSTEM_PATH, "LANG": "C.UTF-8", "MODELCI": "1"}
    env |= {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if spec.venv is not None:
        env |= {"VIRTUAL_ENV": str(spec.venv), "PATH": f"{spec.venv}/bin:{_SYSTEM_PATH}"}
    for name, value in spec.env.items():
        if not _ENV_NAME.fullmatch(name) or "\0" in value:
            raise ValueError(f"invalid environment variable for the sandbox: {name!r}")
        env[name] = value
    return env


class _Runner:
    """What both sandboxes share: limits, cgroups, watchdogs, log cap and killing."""

    private_home = False

    def __init__(self) -> None:
        self._prlimit = _which("prlimit", "install util-linux (apt-get install util-linux)")
        self._setpriv = _which("setpriv", "install util-linux (apt-get install util-linux)")

    def _uid(self, slot: int) -> int:
        return os.getuid()

    def _argv(
        self, spec: SandboxSpec, uid: int, env: dict[str, str], fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def run(self, spec: SandboxSpec, *, cancel: threading.Event | None = None) -> SandboxResult:
        sources = [*([spec.venv] if spec.venv else []), *spec.ro_binds]
        for path in [spec.workdir, *sources]:
            if not path.is_dir():
                raise ValueError(f"{path}, to be used by the sandbox, is not a directory")
        uid = self._uid(spec.slot)
        if uid == os.getuid():
            return self._run(spec, uid, cancel)
        _chown_tree(spec.workdir, uid, uid)
        try:
            for path, need in [(spec.workdir, 0o7), *((source, 0o5) for source in sources)]:
                _check_reachable(path, uid, need)
            return self._run(spec, uid, cancel)
        finally:
            _chown_tree(spec.workdir, os.getuid(), os.getgid())

    def _run(self, spec: SandboxSpec, uid: int, cancel: threading.Event | None) -> SandboxResult:
        lim = spec.limits
        home = tempfile.mkdtemp(prefix="modelci-home-") if self.private_home else "/tmp"
        memory, groups = _job_cgroups(uid, spec)
        oom_before = _oom_kills(memory)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with spec.log_path.open("wb") as log:
                budget = (_disk_usage(spec.workdir) or 0) + lim.max_disk_mb * MB
                proc = _spawn(self, spec, uid, home, memory, groups, serving=False)
                result = self._supervise(_Job(proc, groups), spec, log, budget, cancel)
                result = replace(result, out_of_memory=_oom_kills(memory) > oom_before)
                if not result.ok:
                    log.write(f"\n[modelci: the run {result.failure_reason()}]\n".encode())
                return result
        finally:
            for group in groups:
                _remove_cgroup(group)
            if self.private_home:
                shutil.rmtree(home, ignore_errors=True)

    def start(self, spec: SandboxSpec) -> SandboxProcess:
        """Start spec.command and leave it running, with its stdin and stdout as pipes
        (a model worker). The caller stops it; ``limits.timeout_s`` and the disk cap do
        not apply, the other limits do. Call it from a thread that outlives the process:
        ``--die-with-parent`` kills the process when the thread that started it exits."""
        return _start(self, spec)

    def _supervise(
        self,
        job: _Job,
        spec: SandboxSpec,
        log: IO[bytes],
        budget: int,
        cancel: threading.Event | None,
    ) -> SandboxResult:
        lim, started, stop_pump = spec.limits, time.monotonic(), threading.Event()
        assert job.proc.stdout is not None
        threads = [
            threading.Thread(target=job.guard, args=(started + lim.timeout_s, cancel)),
            threading.Thread(target=job.watch_disk, args=(spec.workdir, budget)),
        ]
        pump = threading.Thread(
            target=job.pump, args=(job.proc.stdout, log, lim.max_log_mb * MB, stop_pump)
        )
        for thread in (*threads, pump):
            thread.daemon = True
            thread.start()
        try:
            code = job.proc.wait()
        finally:
            duration = time.monotonic() - started
            job.finished.set()
            job.kill()  # leftovers: unsafe-mode daemons, stragglers of a killed tree
            for thread in threads:
                thread.join()
            job.await_killed()
            # EOF comes once every holder of the pipe is dead; only a holder that
            # escaped (unsafe mode without cgroups) makes us stop waiting for it.
            pump.join(2.0)
            stop_pump.set()
            pump.join()
            job.proc.stdout.close()
        reason = job.killed_for
        return SandboxResult(
            exit_code=None if reason else code,
            duration_s=duration,
            timed_out=reason == "timeout",
            out_of_memory=False,
            disk_exceeded=reason == "disk",
            log_truncated=job.log_truncated,
            cancelled=reason == "cancelled",
            limits=lim,
        )


class SandboxProcess:
    """A long-running sandboxed process (a model worker) and its stdin/stdout pipes.

    Its stderr goes to ``spec.log_path`` (capped); ``stop`` kills the whole tree
    and removes its cgroups. Nothing bounds its wall-clock time but ``stop``.
    """

    def __init__(self, job: _Job, home: str | None, log: IO[bytes], spec: SandboxSpec) -> None:
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
        for group in self._job.groups:
            _remove_cgroup(group)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)


def _job_cgroups(uid: int, spec: SandboxSpec) -> tuple[Path | None, list[Path]]:
    """The job's memory cgroup (None where unavailable) and every cgroup it joins."""
    lim, name = spec.limits, f"uid-{uid}-slot-{spec.slot}"
    cap = lim.memory_mb * MB
    memory = _make_cgroup(
        "memory", name, {"memory.limit_in_bytes": cap, "memory.memsw.limit_in_bytes": cap}
    )
    pids = _make_cgroup("pids", name, {"pids.max": lim.max_processes})
    return memory, [group for group in (memory, pids) if group is not None]


def _job_argv(
    runner: _Runner,
    spec: SandboxSpec,
    uid: int,
    home: str,
    fds: list[int],
    memory: Path | None,
    groups: list[Path],
) -> tuple[list[str], dict[str, str]]:
    """``sh (joins the cgroups) → prlimit → the runner's isolation → command``."""
    lim = spec.limits
    argv, env = runner._argv(spec, uid, _environment(spec, home), fds)
    rlimits = f"--core=0 --cpu={lim.cpu_s}:{lim.cpu_s + 5} --nofile="
    rlimits += f"{lim.max_open_files} --fsize={lim.max_file_mb * MB} --nproc="
    # Without a memory cgroup, the address-space limit is the only memory cap.
    rlimits += f"{lim.max_processes}" + ("" if memory else f" --as={lim.memory_mb * MB}")
    argv = [runner._prlimit, *rlimits.split(), "--", *argv]
    if groups:
        procs = [str(group / "cgroup.procs") for group in groups]
        argv = ["/bin/sh", "-c", _JOIN_CGROUPS, "job", *procs, "--", *argv]
    # Killed with the thread that started it from its first instruction on: bwrap's
    # --die-with-parent only starts once bwrap runs, and a worker SIGKILLed before
    # that would leave the chain running its job unwatched.
    return [runner._setpriv, "--pdeathsig", "KILL", "--", *argv], env


def _start(runner: _Runner, spec: SandboxSpec) -> SandboxProcess:
    sources = [*([spec.venv] if spec.venv else []), *spec.ro_binds]
    for path in [spec.workdir, *sources]:
        if not path.is_dir():
            raise ValueError(f"{path}, to be used by the sandbox, is not a directory")
    uid = runner._uid(spec.slot)
    if uid != os.getuid():
        # Left owned by the uid: the process keeps using its work dir until stopped.
        _chown_tree(spec.workdir, uid, uid)
        for path, need in [(spec.workdir, 0o7), *((source, 0o5) for source in sources)]:
            _check_reachable(path, uid, need)
    home = tempfile.mkdtemp(prefix="modelci-home-") if runner.private_home else None
    memory, groups = _job_cgroups(uid, spec)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    log = spec.log_path.open("wb")
    try:
        proc = _spawn(runner, spec, uid, home or "/tmp", memory, groups, serving=True)
    except BaseException:
        log.close()
        for group in groups:
            _remove_cgroup(group)
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
        raise
    return SandboxProcess(_Job(proc, groups), home, log, spec)


def _spawn(
    runner: _Runner,
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
        argv, env = _job_argv(runner, spec, uid, home, fds, memory, groups)
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
        raise SandboxUnavailable(f"could not start the sandbox: {exc}", hint=_INSTALL_HINT) from exc
    finally:
        for fd in fds:
            os.close(fd)


def _data_fd(text: str) -> int:
    # Small enough for a pipe's buffer, so writing all of it up front cannot block.
    read, write = os.pipe()
    os.write(write, text.encode())
    os.close(write)
    return read


@cache
def _root_layout() -> tuple[str, ...]:
    """/bin, /lib... as on the host (symlinks into a merged /usr, or read-only binds)."""
    args: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/", name)
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    for extra in ("/etc/ld.so.cache", "/etc/ssl/certs"):
        if Path(extra).exists():
            args += ["--ro-bind", extra, extra]
    return (*args, "--proc", "/proc", "--dev", "/dev")


class BubblewrapSandbox(_Runner):
    """The real sandbox; as root, each slot runs as its own unprivileged uid."""

    def __init__(self, *, uid_base: int = 60100) -> None:
        self._bwrap = _which("bwrap", _INSTALL_HINT)
        super().__init__()
        self.uid_base = uid_base

    def _uid(self, slot: int) -> int:
        return self.uid_base + slot if os.getuid() == 0 else os.getuid()

    def _prefix(self, uid: int) -> list[str]:
        drop = f"--reuid={uid} --regid={uid} --clear-groups --inh-caps=-all --bounding-set=-all"
        # Changing uids clears the parent-death signal: set it again after.
        drop += " --pdeathsig KILL --no-new-privs"
        setpriv = [self._setpriv, *drop.split()] if os.getuid() == 0 else []
        return [*setpriv, self._bwrap, *_ISOLATION, *_root_layout()]

    def probe(self) -> None:
        """Start an empty sandbox once; raise SandboxUnavailable if that fails."""
        error = _probe(tuple(self._prefix(self._uid(0))))
        if error is not None:
            raise SandboxUnavailable(
                f"bubblewrap cannot create a sandbox here: {error}", hint=_INSTALL_HINT
            )

    def _argv(
        self, spec: SandboxSpec, uid: int, env: dict[str, str], fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        fds += [
            _data_fd(
                f"modelci:x:{uid}:{uid}:modelci:/tmp:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
            _data_fd(f"modelci:x:{uid}:\nnogroup:x:65534:\n"),
            _data_fd("127.0.0.1 localhost\n::1 localhost\n"),
        ]
        size, work = str(spec.limits.tmp_mb * MB), str(spec.workdir)
        argv = [*self._prefix(uid), "--hostname", "modelci"]
        for fd, path in zip(fds, ("/etc/passwd", "/etc/group", "/etc/hosts"), strict=True):
            argv += ["--ro-bind-data", str(fd), path]
        # tmpfs first, so that work dirs under /tmp are bound on top of it.
        argv += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
        for source in [*([spec.venv] if spec.venv else []), *spec.ro_binds]:
            if not Path(os.path.realpath(source)).is_relative_to("/usr"):
                argv += ["--ro-bind", str(source), str(source)]
        argv += ["--bind", work, work]
        for device in spec.devices:
            argv += ["--dev-bind", str(device), str(device)]
        argv += ["--remount-ro", "/", "--chdir", work]
        for name, value in env.items():
            argv += ["--setenv", name, value]
        return [*argv, "--", "/bin/sh", "-c", spec.command], {"PATH": _SYSTEM_PATH}


@cache
def _probe(prefix: tuple[str, ...]) -> str | None:
    try:
        done = subprocess.run(
            [*prefix, "--", "/usr/bin/true"],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=30,
            env={"PATH": _SYSTEM_PATH},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


class UnsafeLocalSandbox(_Runner):
    """No isolation (--unsafe-no-sandbox): the caller's uid and file system, but a
    cleared environment, rlimits, cgroups where writable, timeout, disk and log caps."""

    private_home = True  # a temporary HOME per run rather than the host's /tmp

    def _argv(
        self, spec: SandboxSpec, uid: int, env: dict[str, str], fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        return ["/bin/sh", "-c", spec.command], env


def make_sandbox(*, unsafe: bool = False, uid_base: int = 60100) -> Sandbox:
    """The sandbox to run repository code with; SandboxUnavailable if bwrap cannot run."""
    if unsafe:
        return UnsafeLocalSandbox()
    sandbox = BubblewrapSandbox(uid_base=uid_base)
    sandbox.probe()
    return sandbox


@contextmanager
def acquire_slot(lock_dir: Path, slots: int) -> Iterator[int]:
    """A slot number in [0, slots), held across processes and threads until exit."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    lock_dir.mkdir(parents=True, exist_ok=True)
    delay = 0.05
    while True:
        for slot in range(slots):
            fd = os.open(lock_dir / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
            try:
                # flock, not lockf: flock locks belong to the open file, so two
                # threads of one process exclude each other too.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield slot
            finally:
                os.close(fd)  # releases the lock
            return
        time.sleep(delay)  # only when every slot is busy
        delay = min(delay * 2, 0.5)
