"""Cgroups and sandbox slots: what caps a job's memory and processes, and which
uid and cgroups a job may use.

A slot (``acquire_slot`` for a run, ``take_slot`` for a model worker's
lifetime) is a file lock in a machine-wide directory: holding slot N means
owning uid ``uid_base + N`` and the cgroups named after it, in this process and
every other modelci process on the machine that uses the same lock directory.
Cgroups are cgroup v1 ``memory`` and ``pids`` groups under
``/sys/fs/cgroup/<controller>/modelci/``; where they are not mounted or not
writable, the callers fall back to rlimits.

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
from pathlib import Path
from typing import TYPE_CHECKING

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


@dataclass
class JobCgroups:
    """A job's cgroups and the lock on their name, held until ``release``."""

    memory: Path | None = None
    groups: list[Path] = field(default_factory=list)
    lease: Lease | None = None

    def release(self) -> None:
        """Remove the groups (killing what is left in them), then let the name go."""
        for group in self.groups:
            remove_cgroup(group)
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


def make_cgroup(controller: str, name: str, settings: dict[str, int]) -> Path | None:
    """The group, fresh; call it only holding ``claim_cgroup_name(name)``."""
    hierarchy = CGROUP_ROOT / controller
    if not os.path.ismount(hierarchy):  # never mkdir into a cgroup2 root by mistake
        return None
    group = hierarchy / "modelci" / name
    try:
        # One left by a job that died with its process: nobody else holds the
        # name's lock, so nothing in it is anyone's; start with fresh counters.
        remove_cgroup(group)
        group.mkdir(parents=True, exist_ok=True)
        for key, value in settings.items():
            # memsw (swap must not stretch the limit) only exists with swap accounting.
            if "memsw" not in key or (group / key).exists():
                (group / key).write_text(str(value))
    except OSError:
        remove_cgroup(group)
        return None
    return group


def remove_cgroup(group: Path) -> None:
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


def oom_kills(memory: Path | None) -> int:
    if memory is None:
        return 0
    with contextlib.suppress(OSError, ValueError):
        for line in (memory / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return 0


def task_alive(pid: int) -> bool:
    """Whether pid is a task that has not finished exiting (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may hold any byte.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X", "")


def job_cgroups(uid: int, spec: SandboxSpec) -> JobCgroups:
    """The job's cgroups (none where unavailable), their name locked until released;
    SandboxUnavailable if another job holds that name."""
    lim, name = spec.limits, f"uid-{uid}-slot-{spec.slot}"
    if not any(os.path.ismount(CGROUP_ROOT / controller) for controller in CONTROLLERS):
        return JobCgroups()
    lease = claim_cgroup_name(name)
    if lease is None:
        return JobCgroups()
    try:
        cap = lim.memory_mb * MB
        memory = make_cgroup(
            "memory", name, {"memory.limit_in_bytes": cap, "memory.memsw.limit_in_bytes": cap}
        )
        pids = make_cgroup("pids", name, {"pids.max": lim.max_processes})
    except BaseException:
        lease.release()
        raise
    return JobCgroups(memory, [g for g in (memory, pids) if g is not None], lease)
