"""Cgroups and sandbox slots: what caps a job's memory and processes, and which
uid and cgroups a job may use.

A slot (``acquire_slot``) is a file lock in a machine-wide directory: holding
slot N means owning uid ``uid_base + N`` and the cgroups named after it, in this
process and every other modelci process on the machine that uses the same lock
directory. Cgroups are cgroup v1 ``memory`` and ``pids`` groups under
``/sys/fs/cgroup/<controller>/modelci/``; where they are not mounted or not
writable, the callers fall back to rlimits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelci.runner.sandbox import SandboxSpec

MB = 1 << 20

CGROUP_ROOT = Path("/sys/fs/cgroup")


def make_cgroup(controller: str, name: str, settings: dict[str, int]) -> Path | None:
    hierarchy = CGROUP_ROOT / controller
    if not os.path.ismount(hierarchy):  # never mkdir into a cgroup2 root by mistake
        return None
    group = hierarchy / "modelci" / name
    try:
        remove_cgroup(group)  # one left by a crashed run: start with fresh counters
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


def job_cgroups(uid: int, spec: SandboxSpec) -> tuple[Path | None, list[Path]]:
    """The job's memory cgroup (None where unavailable) and every cgroup it joins."""
    lim, name = spec.limits, f"uid-{uid}-slot-{spec.slot}"
    cap = lim.memory_mb * MB
    memory = make_cgroup(
        "memory", name, {"memory.limit_in_bytes": cap, "memory.memsw.limit_in_bytes": cap}
    )
    pids = make_cgroup("pids", name, {"pids.max": lim.max_processes})
    return memory, [group for group in (memory, pids) if group is not None]


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
