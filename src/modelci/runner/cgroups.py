"""Cgroups and sandbox slots: what caps a job's memory and processes, and which
uid and cgroups a job may use.

A slot (``acquire_slot`` for a run, ``take_slot`` for a model worker's
lifetime) is a file lock in a machine-wide directory: holding slot N means
owning uid ``uid_base + N`` and the cgroups named after it, in this process and
every other modelci process on the machine that uses the same lock directory.

Which cgroups is decided once per process (``cgroup_driver``), behind one
interface (``CgroupDriver``):

- cgroup v1, where the v1 ``memory`` or ``pids`` hierarchy is mounted: a
  ``memory`` and a ``pids`` group under ``/sys/fs/cgroup/<controller>/modelci/``;
  out of memory is ``memory.oom_control``'s ``oom_kill`` count.
- cgroup v2, where ``/sys/fs/cgroup`` is cgroup2 (Debian 12, current Ubuntu):
  one group under ``<parent>/modelci/``, where parent is the hierarchy's root
  when writable (root on the host), else the process's own cgroup when it was
  delegated (writable). ``modelci/`` holds no tasks, so it may pass ``memory``
  and ``pids`` on to the jobs' groups (``cgroup.subtree_control``); a job's
  group gets ``memory.max`` (no swap) and ``pids.max`` for those that reach it,
  ``memory.events``' ``oom_kill`` count is the OOM verdict, and ``cgroup.kill``
  stops the whole tree at once.
- none (not root, a read-only cgroupfs): the callers fall back to rlimits.

A job whose groups cap no memory (no cgroups, or v2 without the memory
controller) is held to RLIMIT_AS instead (``JobCgroups.memory`` is None).

A job's cgroups are also locked by name (``job_cgroups``), machine-wide, for as
long as the job runs: resetting a group kills what is in it, so only the holder
of that lock may, and a group locked by another process is never touched (two
uid ranges that overlap, or a caller that skipped its slot lock, get an error
rather than killing someone else's job).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from modelci.errors import SandboxUnavailable
from modelci.settings import machine_lock_dir

if TYPE_CHECKING:
    from modelci.runner.sandbox import SandboxSpec

MB = 1 << 20

CGROUP_ROOT = Path("/sys/fs/cgroup")


CONTROLLERS = ("memory", "pids")


class Lease:
    """An exclusive flock on a lock file, held until ``release`` or the process exits."""

    def __init__(self, fd: int, number: int = 0) -> None:
        self.number = number  # the slot, for a slot's lease
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # releases the flock
                self._fd = None


def _try_lock(path: Path, number: int = 0) -> Lease | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        # flock, not lockf: flock locks belong to the open file, so two threads
        # of one process exclude each other too.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return Lease(fd, number)


def take_slot(lock_dir: Path, slots: int) -> Lease | None:
    """A free slot in [0, slots) (``Lease.number``), held until released; None if all
    are held, by this process or any other using lock_dir."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        lease = _try_lock(lock_dir / f"slot-{slot}.lock", slot)
        if lease is not None:
            return lease
    return None


@contextmanager
def acquire_slot(
    lock_dir: Path, slots: int, *, on_wait: Callable[[], None] | None = None
) -> Iterator[int]:
    """A slot number in [0, slots), held across processes and threads until exit;
    waits while every slot is held (calling on_wait once, when it starts waiting)."""
    delay = 0.05
    while (lease := take_slot(lock_dir, slots)) is None:
        if on_wait is not None:
            on_wait()
            on_wait = None
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    try:
        yield lease.number
    finally:
        lease.release()


class CgroupDriver(Protocol):
    """Where a job's groups live and how they are made, read, emptied and removed."""

    kind: str  # "v1" or "v2", for messages

    def make(self, name: str, *, memory: int, processes: int) -> tuple[list[Path], Path | None]:
        """The job's groups, fresh, and the one capping its memory (None: none does);
        no groups where they cannot be made. Call it only holding the name's lock."""
        ...

    def oom_kills(self, memory: Path) -> int: ...

    def kill(self, group: Path) -> None:
        """SIGKILL every task in group."""
        ...

    def remove(self, group: Path) -> None:
        """Kill what is left in group and remove it (not there: nothing to do)."""
        ...

    def describe(self) -> str: ...


def _procs(group: Path) -> list[int]:
    try:
        return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _signal_all(group: Path) -> list[int]:
    pids = _procs(group)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _counter(path: Path, key: str) -> int:
    """The value of ``key N`` in a flat-keyed cgroup file, 0 if unreadable."""
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            if line.startswith(f"{key} "):
                return int(line.split()[1])
    return 0


def _rmdir_loop(group: Path, empty: Callable[[Path], bool]) -> None:
    # Loops: a fork loop adds tasks between reading and killing, and killed
    # tasks leave the group a moment after they vanish from cgroup.procs.
    for _ in range(200):
        try:
            if empty(group):
                group.rmdir()
                return
        except (FileNotFoundError, PermissionError):
            return
        except OSError:
            pass
        time.sleep(0.005)


class CgroupV1:
    """A ``memory`` and a ``pids`` group, each in its own v1 hierarchy under root."""

    kind = "v1"

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root

    def make(self, name: str, *, memory: int, processes: int) -> tuple[list[Path], Path | None]:
        # memsw (swap must not stretch the limit) only exists with swap accounting.
        limits = {"memory.limit_in_bytes": memory, "memory.memsw.limit_in_bytes": memory}
        capped = self._make("memory", name, limits)
        pids = self._make("pids", name, {"pids.max": processes})
        return [group for group in (capped, pids) if group is not None], capped

    def _make(self, controller: str, name: str, settings: dict[str, int]) -> Path | None:
        hierarchy = self.root / controller
        if not os.path.ismount(hierarchy):  # never mkdir into a cgroup2 root by mistake
            return None
        group = hierarchy / "modelci" / name
        try:
            # One left by a job that died with its process: nobody else holds the
            # name's lock, so nothing in it is anyone's; start with fresh counters.
            self.remove(group)
            group.mkdir(parents=True, exist_ok=True)
            for key, value in settings.items():
                if "memsw" not in key or (group / key).exists():
                    (group / key).write_text(str(value))
        except OSError:
            self.remove(group)
            return None
        return group

    def oom_kills(self, memory: Path) -> int:
        return _counter(memory / "memory.oom_control", "oom_kill")

    def kill(self, group: Path) -> None:
        _signal_all(group)

    def remove(self, group: Path) -> None:
        _rmdir_loop(group, lambda g: not _signal_all(g))

    def describe(self) -> str:
        mounted = [c for c in CONTROLLERS if os.path.ismount(self.root / c)]
        return f"cgroup v1: {' and '.join(mounted)} groups under {self.root}/<controller>/modelci/"


class CgroupV2:
    """One group per job under ``parent/modelci/`` in a cgroup2 hierarchy."""

    kind = "v2"

    def __init__(
        self,
        parent: Path,
        *,
        hierarchy_root: bool = True,
        controllers: tuple[str, ...] = CONTROLLERS,
    ) -> None:
        self.parent, self.controllers = parent, controllers
        self.top = parent / "modelci"
        # Only a hierarchy's root may hold tasks and still enable controllers for
        # its children; any other parent must hold none (cgroup v2's rule).
        self.hierarchy_root = hierarchy_root

    def delegate(self) -> set[str]:
        """Enable memory and pids for the jobs' groups where the kernel lets us: in
        parent's and in modelci/'s ``cgroup.subtree_control``; the ones enabled."""
        self.top.mkdir(exist_ok=True)
        reached = set(self.controllers)
        for group in (self.parent, self.top):
            control = group / "cgroup.subtree_control"
            available = set((group / "cgroup.controllers").read_text().split())
            for controller in sorted((reached & available) - set(control.read_text().split())):
                # EBUSY: parent holds tasks (not delegated as a leaf); then that
                # limit falls back to its rlimit.
                with contextlib.suppress(OSError):
                    control.write_text(f"+{controller}")
            reached &= set(control.read_text().split())
        return reached

    def make(self, name: str, *, memory: int, processes: int) -> tuple[list[Path], Path | None]:
        group = self.top / name
        try:
            enabled = self.delegate()
            # One left by a job that died with its process: see CgroupV1._make.
            self.remove(group)
            group.mkdir()
            if "memory" in enabled:
                (group / "memory.max").write_text(str(memory))
                if (group / "memory.swap.max").exists():  # only with swap accounting
                    (group / "memory.swap.max").write_text("0")
            if "pids" in enabled:
                (group / "pids.max").write_text(str(processes))
        except OSError:
            self.remove(group)
            return [], None
        return [group], group if "memory" in enabled else None

    def oom_kills(self, memory: Path) -> int:
        return _counter(memory / "memory.events", "oom_kill")

    def kill(self, group: Path) -> None:
        try:
            # Atomic: a fork loop cannot outrun it, unlike reading and signalling.
            (group / "cgroup.kill").write_text("1")
        except FileNotFoundError:  # before Linux 5.14, or the group is gone
            _signal_all(group)
        except OSError:
            pass

    def remove(self, group: Path) -> None:
        def empty(g: Path) -> bool:
            self.kill(g)
            return _counter(g / "cgroup.events", "populated") == 0 and not _procs(g)

        _rmdir_loop(group, empty)

    def describe(self) -> str:
        where = f"cgroup v2: a group per job under {self.top}/"
        try:
            offered = set((self.parent / "cgroup.controllers").read_text().split())
            enabled = set((self.parent / "cgroup.subtree_control").read_text().split())
        except OSError as exc:
            return f"{where}, but {self.parent} cannot be read ({exc.strerror})"
        blocked = not self.hierarchy_root and bool(_procs(self.parent))
        usable = [c for c in self.controllers if c in enabled or (c in offered and not blocked)]
        missing = [c for c in self.controllers if c not in usable]
        if not missing:
            return f"{where} (memory.max, pids.max; out of memory from memory.events)"
        why = f"not offered to {self.parent}" if not blocked else f"{self.parent} holds tasks"
        instead = {
            "memory": "memory is capped by RLIMIT_AS (address space) only",
            "pids": "processes are capped by RLIMIT_NPROC only",
        }
        fallbacks = "; ".join(instead.get(c, f"no {c} limit") for c in missing)
        return (
            f"{where} without the {' and '.join(missing)} controller{'s' * (len(missing) > 1)} "
            f"({why}), so {fallbacks}. How to fix: delegate them to that group "
            "(systemd: Delegate=memory pids) and leave it no tasks of its own (run modelci "
            "in a child group)"
        )


def detect(root: Path = CGROUP_ROOT, self_cgroup: Path | None = None) -> CgroupDriver | None:
    """The driver for this machine: v1 where its memory or pids hierarchy is
    mounted and writable, else v2 where root is cgroup2 and writable (at root, else at this
    process's own cgroup), else None (rlimits only)."""
    # Writable too: a container's v1 hierarchies are mounted read-only, and a driver
    # there would make no group and claim it did (doctor's line).
    mounted = [root / c for c in CONTROLLERS if os.path.ismount(root / c)]
    if any(os.access(hierarchy, os.W_OK) for hierarchy in mounted):
        return CgroupV1(root)
    if not (root / "cgroup.controllers").is_file():
        return None
    own = "/"
    with contextlib.suppress(OSError):
        lines = (self_cgroup or Path("/proc/self/cgroup")).read_text().splitlines()
        own = next((line[3:] for line in lines if line.startswith("0::")), "/")
    for parent in dict.fromkeys([root, root / own.strip("/")]):
        if os.access(parent, os.W_OK) and os.access(parent / "cgroup.procs", os.W_OK):
            return CgroupV2(parent, hierarchy_root=parent == root)
    return None


@cache
def cgroup_driver() -> CgroupDriver | None:
    """This machine's driver, detected once per process."""
    return detect()


def describe_cgroups() -> str:
    """What caps the sandbox's memory and processes here, in one line (for doctor)."""
    driver = cgroup_driver()
    if driver is None:
        return (
            f"no writable cgroups at {CGROUP_ROOT}: memory is capped by RLIMIT_AS (address "
            "space) and processes by RLIMIT_NPROC; run as root for cgroups"
        )
    return driver.describe()


@dataclass
class JobCgroups:
    """A job's cgroups and the lock on their name, held until ``release``."""

    memory: Path | None = None  # the group capping memory; None: RLIMIT_AS does
    groups: list[Path] = field(default_factory=list)
    lease: Lease | None = None
    driver: CgroupDriver | None = None

    def oom_kills(self) -> int:
        if self.driver is None or self.memory is None:
            return 0
        return self.driver.oom_kills(self.memory)

    def members(self) -> set[int]:
        """The tasks in the groups now (to wait for once killed)."""
        return {pid for group in self.groups for pid in _procs(group)}

    def kill(self) -> None:
        """SIGKILL every task in the groups."""
        if self.driver is not None:
            for group in self.groups:
                self.driver.kill(group)

    def release(self) -> None:
        """Remove the groups (killing what is left in them), then let the name go."""
        if self.driver is not None:
            for group in self.groups:
                self.driver.remove(group)
        if self.lease is not None:
            self.lease.release()


def claim_cgroup_name(name: str) -> Lease | None:
    """The machine-wide lock on a cgroup name, None where locks cannot be created
    (then no cgroup is used); SandboxUnavailable if another job holds it."""
    locks = machine_lock_dir("modelci-cgroups")
    try:
        locks.mkdir(parents=True, exist_ok=True)
        lease = _try_lock(locks / f"{name}.lock")
    except OSError:
        return None
    if lease is None:
        raise SandboxUnavailable(
            f"the sandbox cgroup {name} is in use by another job, of this or another modelci "
            "process on this machine; it was left alone",
            hint="give each modelci instance on this machine uid ranges that do not overlap "
            "(MODELCI_SANDBOX_UID_BASE, MODELCI_SERVING_UID_BASE: each range is as wide as "
            "its slots), and take a slot (acquire_slot) before running in it",
        )
    return lease


def task_alive(pid: int) -> bool:
    """Whether pid is a task that has not finished exiting (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold any byte.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X", "")


def job_cgroups(uid: int, spec: SandboxSpec, driver: CgroupDriver | None) -> JobCgroups:
    """The job's cgroups (none without a driver, or where unavailable), their name
    locked until released; SandboxUnavailable if another job holds that name."""
    if driver is None:
        return JobCgroups()
    lim, name = spec.limits, f"uid-{uid}-slot-{spec.slot}"
    lease = claim_cgroup_name(name)
    if lease is None:
        return JobCgroups()
    try:
        groups, memory = driver.make(name, memory=lim.memory_mb * MB, processes=lim.max_processes)
    except BaseException:
        lease.release()
        raise
    return JobCgroups(memory, groups, lease, driver)
