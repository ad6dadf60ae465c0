"""Run a repository's (untrusted) commands: bubblewrap, a real uid, rlimits, cgroups.

The only module that starts repository code. A run is layered as
``sh (joins the job's cgroups) → prlimit → setpriv (root only) → bwrap → sh -c COMMAND``.
Inside: no network (loopback included), a cleared environment, no capabilities,
read-only /usr and root, generated /etc/passwd, /etc/group and /etc/hosts,
private tmpfs /tmp and /dev/shm. The only host paths inside, each at its host
path: /usr (with the /bin, /lib... links), /etc/ld.so.cache, /etc/ssl/certs,
the venv and ``ro_binds`` read-only, and the work dir writable. One exception,
asked for by ``SandboxSpec.network`` (a DVC fetch, ``modelci.data.fetch``: DVC
itself, not repository code): the host's network and /etc/resolv.conf, plus
``rw_binds`` writable and ``home_files`` (its secrets) in the private /tmp.

Callers must know:

- As root, code runs as uid ``uid_base + slot`` (bwrap's ``--uid`` does not
  drop root's privileges). That uid must reach the bind sources: keep work dirs
  and venvs under directories others may traverse (``o+x``, as the data dir is
  set up). The work dir is chowned to that uid for the run and back after it.
- Not as root, code runs as the caller: RLIMIT_NPROC then counts all of the
  caller's processes, and cgroups are usually not writable.
- Memory and process counts are capped by the job's cgroups (``cgroups.py``:
  v2's ``memory.max``/``pids.max`` in a delegated subtree, or v1's
  ``memory``/``pids`` where only v1 is mounted), and always by RLIMIT_NPROC.
  Out of memory is the group's OOM-kill count rising. Without a memory cgroup
  (none writable, or v2 without the memory controller) RLIMIT_AS caps memory,
  and a failed run whose log ends with an allocation failure counts as out of
  memory (``SandboxResult.address_space_cap``).
- The disk cap is a watchdog on the work dir's growth, checked every second: a
  job can overshoot it by about a second's worth of writes.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import IO, Literal, Protocol

from modelci.errors import SandboxUnavailable
from modelci.runner.cgroups import (
    MB,
    CgroupDriver,
    acquire_slot,
    cgroup_driver,
    job_cgroups,
    take_slot,
)
from modelci.runner.container import container_engine, diagnose, explain, read_evidence
from modelci.runner.process import (
    INSTALL_HINT,
    SYSTEM_PATH,
    Job,
    SandboxProcess,
    allocation_failed,
    check_reachable,
    chown_tree,
    data_fd,
    disk_usage,
    probe_sandbox,
    spawn,
    which,
)

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
    "seed_environment",
    "take_slot",
]


_ISOLATION = [
    *("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"),
    *("--new-session", "--clearenv", "--cap-drop", "ALL", "--ro-bind", "/usr", "/usr"),
]


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 1800  # wall clock
    memory_mb: int = 4096  # cgroup memory.max (v2) or memory.limit_in_bytes (v1), else RLIMIT_AS
    cpu_s: int = 3600  # RLIMIT_CPU: SIGXCPU, then SIGKILL 5 s later
    max_file_mb: int = 1024  # RLIMIT_FSIZE, per file
    max_open_files: int = 1024  # RLIMIT_NOFILE
    max_processes: int = 256  # cgroup pids.max and RLIMIT_NPROC (per uid)
    max_disk_mb: int = 4096  # growth of the work dir during the run (watchdog)
    max_log_mb: int = 20  # output kept in the log; the rest is drained and dropped
    tmp_mb: int = 512  # each of the tmpfs at /tmp and /dev/shm
    # Where timeout_s was set and how to raise it, for the timeout message.
    timeout_origin: str = "limits.timeout in modelci.yaml"


def seed_environment(seed: int) -> dict[str, str]:
    """The variables that seed a training run: ``MODELCI_SEED`` for the repository's
    own generators, and ``PYTHONHASHSEED`` so set and dict iteration order (which
    feeds many a shuffle) is the same for the same seed rather than random per process."""
    if seed < 0:
        raise ValueError(f"a run's seed must be 0 or more, got {seed}")
    return {"MODELCI_SEED": str(seed), "PYTHONHASHSEED": str(seed)}


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
    # A DVC fetch (modelci.data): network on, more writable directories (the
    # repository's DVC cache, chowned to the uid for the run like the work dir) and
    # files under HOME (secrets: never on disk, a pipe bwrap copies into its tmpfs).
    network: bool = False
    rw_binds: tuple[Path, ...] = ()
    home_files: Mapping[str, str] = field(default_factory=dict, repr=False)


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
    address_space_cap: bool = False  # memory was capped by RLIMIT_AS: no memory cgroup

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.out_of_memory

    def failure_reason(self) -> str | None:
        """Why the run failed, worded to follow "the run ...", or None."""
        lim, code = self.limits, self.exit_code
        if self.timed_out:
            return f"exceeded its {lim.timeout_s:g} s timeout ({lim.timeout_origin})"
        if self.out_of_memory and self.address_space_cap:
            return (
                f"ran out of its {lim.memory_mb} MB of memory (limits.memory_mb in "
                "modelci.yaml; with no memory cgroup on this machine that caps address space, "
                "which also counts memory reserved but never used)"
            )
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


class _Runner:
    """What both sandboxes share: limits, cgroups, watchdogs, log cap and killing."""

    private_home = False

    def __init__(self, *, cgroups: CgroupDriver | Literal["detect"] | None = "detect") -> None:
        # Injectable so tests can run jobs under another hierarchy, or none.
        self.cgroups = cgroup_driver() if isinstance(cgroups, str) else cgroups
        self.prlimit = which("prlimit", "install util-linux (apt-get install util-linux)")
        self.setpriv = which("setpriv", "install util-linux (apt-get install util-linux)")

    def _uid(self, slot: int) -> int:
        return os.getuid()

    def _ready(self) -> None:
        """Raise SandboxUnavailable if this runner cannot start anything (a probe)."""

    def isolation_argv(
        self, spec: SandboxSpec, uid: int, env: dict[str, str], fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def run(self, spec: SandboxSpec, *, cancel: threading.Event | None = None) -> SandboxResult:
        self._ready()
        sources = [*([spec.venv] if spec.venv else []), *spec.ro_binds]
        writable = [spec.workdir, *spec.rw_binds]
        for path in [*writable, *sources]:
            if not path.is_dir():
                raise ValueError(f"{path}, to be used by the sandbox, is not a directory")
        for name in spec.home_files:
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"home file {name!r} must be a relative path")
        uid = self._uid(spec.slot)
        if uid == os.getuid():
            return self._run(spec, uid, cancel)
        for path in writable:
            chown_tree(path, uid, uid)
        try:
            reach = [*((path, 0o7) for path in writable), *((source, 0o5) for source in sources)]
            for path, need in reach:
                check_reachable(path, uid, need)
            return self._run(spec, uid, cancel)
        finally:
            for path in writable:
                chown_tree(path, os.getuid(), os.getgid())

    def _run(self, spec: SandboxSpec, uid: int, cancel: threading.Event | None) -> SandboxResult:
        lim = spec.limits
        home = tempfile.mkdtemp(prefix="modelci-home-") if self.private_home else "/tmp"
        try:
            if self.private_home:
                _write_home_files(Path(home), spec.home_files)
            cgroups = job_cgroups(uid, spec, self.cgroups)
        except BaseException:
            if self.private_home:
                shutil.rmtree(home, ignore_errors=True)
            raise
        memory = cgroups.memory
        oom_before = cgroups.oom_kills()
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with spec.log_path.open("wb") as log:
                budget = (disk_usage(spec.workdir) or 0) + lim.max_disk_mb * MB
                proc = spawn(self, spec, uid, home, memory, cgroups.groups, serving=False)
                result = self._supervise(Job(proc, cgroups), spec, log, budget, cancel)
                if memory is not None:
                    oom = cgroups.oom_kills() > oom_before
                else:  # RLIMIT_AS: a failed allocation, which only the log tells
                    oom = result.exit_code not in (0, None) and allocation_failed(spec.log_path)
                result = replace(result, out_of_memory=oom, address_space_cap=memory is None)
                if not result.ok:
                    log.write(f"\n[modelci: the run {result.failure_reason()}]\n".encode())
                return result
        finally:
            cgroups.release()
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
        job: Job,
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


def _start(runner: _Runner, spec: SandboxSpec) -> SandboxProcess:
    runner._ready()
    sources = [*([spec.venv] if spec.venv else []), *spec.ro_binds]
    for path in [spec.workdir, *sources]:
        if not path.is_dir():
            raise ValueError(f"{path}, to be used by the sandbox, is not a directory")
    uid = runner._uid(spec.slot)
    if uid != os.getuid():
        # Left owned by the uid: the process keeps using its work dir until stopped.
        chown_tree(spec.workdir, uid, uid)
        for path, need in [(spec.workdir, 0o7), *((source, 0o5) for source in sources)]:
            check_reachable(path, uid, need)
    cgroups = job_cgroups(uid, spec, runner.cgroups)  # held until the process is stopped
    home = tempfile.mkdtemp(prefix="modelci-home-") if runner.private_home else None
    try:
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = spec.log_path.open("wb")
    except BaseException:
        cgroups.release()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
        raise
    try:
        proc = spawn(
            runner, spec, uid, home or "/tmp", cgroups.memory, cgroups.groups, serving=True
        )
    except BaseException:
        log.close()
        cgroups.release()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)
        raise
    return SandboxProcess(Job(proc, cgroups), home, log, spec)


def _write_home_files(home: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = home / name
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)


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

    def __init__(
        self,
        *,
        uid_base: int = 60100,
        cgroups: CgroupDriver | Literal["detect"] | None = "detect",
    ) -> None:
        self._bwrap = which("bwrap", INSTALL_HINT)
        super().__init__(cgroups=cgroups)
        self.uid_base = uid_base
        self._probe: threading.Thread | None = None

    def _uid(self, slot: int) -> int:
        return self.uid_base + slot if os.getuid() == 0 else os.getuid()

    def _prefix(self, uid: int) -> list[str]:
        drop = f"--reuid={uid} --regid={uid} --clear-groups --inh-caps=-all --bounding-set=-all"
        # Changing uids clears the parent-death signal: set it again after.
        drop += " --pdeathsig KILL --no-new-privs"
        setpriv = [self.setpriv, *drop.split()] if os.getuid() == 0 else []
        return [*setpriv, self._bwrap, *_ISOLATION, *_root_layout()]

    def probe(self, *, wait: bool = True) -> None:
        """Start an empty sandbox once; raise SandboxUnavailable if that fails.

        ``wait=False`` starts it in the background: a CLI evaluation does its git
        work meanwhile (the probe is a process start, ~25 ms on its critical path
        before), and the first run waits for the answer and raises instead.
        """
        prefix = tuple(self._prefix(self._uid(0)))
        if not wait:
            self._probe = threading.Thread(
                target=probe_sandbox, args=(prefix,), name="modelci-probe", daemon=True
            )
            self._probe.start()
            return
        if self._probe is not None:
            self._probe.join()
        error = probe_sandbox(prefix)  # cached: the background probe's answer
        if error is not None:
            engine = container_engine()
            if engine is not None:
                # Not "install bubblewrap or go unsandboxed": the container lacks a right.
                raise SandboxUnavailable(
                    f"bubblewrap cannot create a sandbox here: {error}",
                    hint=self.container_diagnosis(engine, error),
                )
            raise SandboxUnavailable(
                f"bubblewrap cannot create a sandbox here: {error}", hint=INSTALL_HINT
            )

    def container_diagnosis(self, engine: str, error: str) -> str:
        """Which container option bubblewrap lacks: namespaces alone (no /proc) probed
        apart from the full sandbox, then the mount table and AppArmor read."""
        drop = self._prefix(self._uid(0))[: -len(_ISOLATION) - len(_root_layout())]
        bare = (*drop, "--unshare-all", "--unshare-user", "--ro-bind", "/", "/")
        namespaces_ok = probe_sandbox(bare) is None
        masked, apparmor, limit = read_evidence()
        rights, other = diagnose(
            namespaces_ok=namespaces_ok,
            masked=masked,
            apparmor=apparmor,
            max_user_namespaces=limit,
        )
        return explain(engine, rights, other, error)

    def _ready(self) -> None:
        self.probe()

    def isolation_argv(
        self, spec: SandboxSpec, uid: int, env: dict[str, str], fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        fds += [
            data_fd(
                f"modelci:x:{uid}:{uid}:modelci:/tmp:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
            data_fd(f"modelci:x:{uid}:\nnogroup:x:65534:\n"),
            data_fd("127.0.0.1 localhost\n::1 localhost\n"),
        ]
        size, work = str(spec.limits.tmp_mb * MB), str(spec.workdir)
        argv = [*self._prefix(uid), "--hostname", "modelci"]
        if spec.network:
            argv += ["--share-net"]
            if Path("/etc/resolv.conf").exists():
                argv += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        for fd, path in zip(fds, ("/etc/passwd", "/etc/group", "/etc/hosts"), strict=True):
            argv += ["--ro-bind-data", str(fd), path]
        # tmpfs first, so that work dirs under /tmp are bound on top of it.
        argv += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
        for name, text in spec.home_files.items():
            fds.append(data_fd(text))
            argv += ["--ro-bind-data", str(fds[-1]), f"/tmp/{name}"]
        for source in [*([spec.venv] if spec.venv else []), *spec.ro_binds]:
            if not Path(os.path.realpath(source)).is_relative_to("/usr"):
                argv += ["--ro-bind", str(source), str(source)]
        for writable in [*spec.rw_binds, spec.workdir]:
            argv += ["--bind", str(writable), str(writable)]
        for device in spec.devices:
            argv += ["--dev-bind", str(device), str(device)]
        argv += ["--remount-ro", "/", "--chdir", work]
        for name, value in env.items():
            argv += ["--setenv", name, value]
        return [*argv, "--", "/bin/sh", "-c", spec.command], {"PATH": SYSTEM_PATH}


class UnsafeLocalSandbox(_Runner):
    """No isolation (--unsafe-no-sandbox): the caller's uid and file system, but a
    cleared environment, rlimits, cgroups where writable, timeout, disk and log caps."""

    private_home = True  # a temporary HOME per run rather than the host's /tmp

    def isolation_argv(
        self, spec: SandboxSpec, uid: int, env: dict[str, str], fds: list[int]
    ) -> tuple[list[str], dict[str, str]]:
        return ["/bin/sh", "-c", spec.command], env


def make_sandbox(*, unsafe: bool = False, uid_base: int = 60100, wait: bool = True) -> Sandbox:
    """The sandbox to run repository code with; SandboxUnavailable if bwrap cannot run
    (at once, or with ``wait=False`` from the first run, see ``probe``)."""
    if unsafe:
        return UnsafeLocalSandbox()
    sandbox = BubblewrapSandbox(uid_base=uid_base)
    sandbox.probe(wait=wait)
    return sandbox
