"""The sandbox's cgroups: the v2 driver against a real cgroup2 mount, its limit
files against a stand-in tree, detection, and the RLIMIT_AS path without cgroups.

This machine kind mounts cgroup v1 for memory and pids, so its cgroup2 hierarchy
offers neither: the real-mount tests prove group creation under a delegated
parent, joining, ``cgroup.kill`` and removal (and controller delegation, with
hugetlb standing in for memory and pids); ``memory.max`` and ``pids.max`` are
checked as written values in a directory tree standing in for cgroupfs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from modelci.runner.cgroups import MB, CgroupV2, JobCgroups, detect, job_cgroups, task_alive
from modelci.runner.process import JOIN_CGROUPS, job_argv
from modelci.runner.sandbox import BubblewrapSandbox, Limits, SandboxSpec, UnsafeLocalSandbox
from tests.runner.test_sandbox import ESCAPING_GRANDCHILD

PYTHON = "/usr/bin/python3"
SLOT = 47  # a slot no other test file uses: the name lock is machine-wide


def eventually(condition: Callable[[], bool], within: float = 10.0) -> bool:
    """Whether condition() holds within `within` seconds (polled)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def populated(group: Path) -> bool:
    return "populated 1" in (group / "cgroup.events").read_text().splitlines()


def remove_tree(top: Path) -> None:
    """Remove a cgroup2 subtree, deepest groups first, killing what is in them."""
    groups = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for group in [*groups, top]:
        CgroupV2(group.parent).remove(group)


@pytest.fixture(scope="module")
def cgroup2() -> Iterator[Path]:
    """A cgroup2 mount of our own under a temp dir, unmounted after; skips where
    mounting is not permitted. (It shows the machine's one v2 hierarchy, so tests
    work in uniquely named subtrees and remove them.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount cgroup2")
    mount = Path(tempfile.mkdtemp(prefix="modelci-cgroup2-"))
    done = subprocess.run(
        ["mount", "-t", "cgroup2", "none", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount cgroup2 here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture
def delegated(cgroup2: Path) -> Iterator[Path]:
    """A fresh group standing for the subtree delegated to modelci."""
    parent = cgroup2 / f"modelci-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    parent.mkdir()
    yield parent
    remove_tree(parent)


@pytest.fixture
def hugetlb_delegated(cgroup2: Path) -> Iterator[Path]:
    """A delegated group offered hugetlb: the one domain controller this machine's
    v2 hierarchy has, to prove delegation in place of memory and pids. The root's
    setting is restored after, once the group is gone."""
    if "hugetlb" not in (cgroup2 / "cgroup.controllers").read_text().split():
        pytest.skip("the cgroup2 hierarchy here offers no domain controller to delegate")
    control = cgroup2 / "cgroup.subtree_control"
    enabled_before = "hugetlb" in control.read_text().split()
    control.write_text("+hugetlb")
    parent = cgroup2 / f"modelci-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        parent.mkdir()
        yield parent
    finally:
        remove_tree(parent)
        if not enabled_before:
            control.write_text("-hugetlb")


def join_and_run(group: Path, code: str) -> subprocess.Popen[bytes]:
    """Start python code in group, joined the way a job's chain joins it."""
    argv = ["/bin/sh", "-c", JOIN_CGROUPS, "job", str(group / "cgroup.procs"), "--"]
    return subprocess.Popen([*argv, PYTHON, "-c", code], start_new_session=True)


FORK_TREE = """
import os, sys, time
def note():
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\\n")
for _ in range(3):
    if os.fork() == 0:
        os.setsid()  # out of the job's process group: killpg would miss it
        if os.fork() == 0:
            note(); time.sleep(60); os._exit(0)
        note(); time.sleep(60); os._exit(0)
note()
for _ in range(200):  # still forking when the kill comes
    if os.fork() == 0:
        time.sleep(60); os._exit(0)
    time.sleep(0.01)
time.sleep(60)
"""


def test_v2_job_group_is_joined_killed_whole_and_removed(delegated: Path, tmp_path: Path) -> None:
    driver = CgroupV2(delegated, hierarchy_root=False)
    groups, memory = driver.make("uid-1-slot-0", memory=256 * MB, processes=64)
    group = delegated / "modelci" / "uid-1-slot-0"
    assert groups == [group]
    # This machine's v2 offers no memory controller, so RLIMIT_AS must cap memory.
    has_memory = "memory" in (delegated / "cgroup.controllers").read_text().split()
    assert (memory == group) if has_memory else memory is None
    assert not (delegated / "modelci" / "cgroup.procs").read_text().split()  # no tasks

    pids_file = tmp_path / "pids"
    code = FORK_TREE.replace("sys.argv[1]", repr(str(pids_file)))
    leader = join_and_run(group, code)
    try:
        assert eventually(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 7)
        noted = {int(pid) for pid in pids_file.read_text().split()}
        assert noted <= {int(pid) for pid in (group / "cgroup.procs").read_text().split()}
        assert leader.pid in noted  # sh joined, then exec'd the job
        assert populated(group)

        driver.kill(group)
        assert leader.wait(10) == -signal.SIGKILL
        assert eventually(lambda: not any(task_alive(pid) for pid in noted))
        assert eventually(lambda: not populated(group))  # the forks made meanwhile too
    finally:
        leader.kill()
        leader.wait()
    driver.remove(group)
    assert not group.exists()


def test_v2_make_resets_a_group_left_by_a_dead_job(delegated: Path) -> None:
    driver = CgroupV2(delegated, hierarchy_root=False)
    (group,), _ = driver.make("uid-1-slot-1", memory=MB, processes=8)
    orphan = join_and_run(group, "import time; time.sleep(60)")
    try:
        assert eventually(lambda: populated(group))
        (again,), _ = driver.make("uid-1-slot-1", memory=MB, processes=8)
        assert again == group
        assert orphan.wait(10) == -signal.SIGKILL
        assert not populated(group)
    finally:
        orphan.kill()
        orphan.wait()


def test_v2_delegates_controllers_through_a_modelci_parent_without_tasks(
    hugetlb_delegated: Path,
) -> None:
    delegated = hugetlb_delegated
    driver = CgroupV2(delegated, hierarchy_root=False, controllers=("hugetlb",))
    assert driver.delegate() == {"hugetlb"}
    (group,), _ = driver.make("uid-1-slot-2", memory=MB, processes=8)
    assert "hugetlb" in (delegated / "modelci" / "cgroup.subtree_control").read_text().split()
    assert "hugetlb" in (group / "cgroup.controllers").read_text().split()


def test_v2_parent_holding_tasks_gets_groups_without_controllers(
    hugetlb_delegated: Path,
) -> None:
    delegated = hugetlb_delegated
    # cgroup v2's "no internal processes": a non-root parent with tasks of its own
    # cannot pass controllers down. The job still gets a group (for cgroup.kill);
    # its limits fall back to rlimits, and make() says so by capping no memory.
    squatter = subprocess.Popen(["sleep", "60"])
    try:
        (delegated / "cgroup.procs").write_text(str(squatter.pid))
        driver = CgroupV2(delegated, hierarchy_root=False, controllers=("hugetlb",))
        assert driver.delegate() == set()
        groups, memory = driver.make("uid-1-slot-3", memory=MB, processes=8)
        assert groups == [delegated / "modelci" / "uid-1-slot-3"]
        assert memory is None
        assert "hugetlb" not in (groups[0] / "cgroup.controllers").read_text().split()
        assert "holds tasks" in driver.describe()
    finally:
        squatter.kill()
        squatter.wait()


def test_unsafe_sandbox_kills_escaped_grandchildren_through_v2(
    delegated: Path, tmp_path: Path
) -> None:
    # A grandchild that left the job's session keeps its output pipe open: only
    # the group (cgroup.kill) reaches it.
    workdir = tmp_path / "work"
    workdir.mkdir()
    code = ESCAPING_GRANDCHILD
    box = UnsafeLocalSandbox(cgroups=CgroupV2(delegated, hierarchy_root=False))
    spec = SandboxSpec(
        command=f"{PYTHON} -c {shlex.quote(code)}",
        workdir=workdir,
        log_path=tmp_path / "log",
        limits=Limits(timeout_s=20),
        slot=SLOT,
    )
    result = box.run(spec)
    assert result.ok, (tmp_path / "log").read_text()
    assert not task_alive(int((workdir / "pid").read_text()))
    assert not (delegated / "modelci" / f"uid-{os.getuid()}-slot-{SLOT}").exists()


# -- limit files, against a tree standing in for cgroupfs --------------------------------


def stand_in(root: Path, offered: str, own: str = "") -> Path:
    """A v2 hierarchy's files as the kernel would show them, modelci/ included."""
    for group, controllers in ((root, offered), (root / "modelci", offered)):
        group.mkdir(parents=True, exist_ok=True)
        (group / "cgroup.controllers").write_text(controllers + "\n")
        (group / "cgroup.subtree_control").write_text(controllers + "\n")
        (group / "cgroup.procs").write_text(own)
    return root


def spec_for(tmp_path: Path, *, memory_mb: int, max_processes: int) -> SandboxSpec:
    limits = Limits(memory_mb=memory_mb, max_processes=max_processes)
    log = tmp_path / "log"
    return SandboxSpec(command="true", workdir=tmp_path, log_path=log, limits=limits, slot=SLOT)


def let_go(cgroups: JobCgroups) -> None:
    # Only the name's lock: removing a stand-in "group" (a plain directory with
    # files) is not what release() is for.
    assert cgroups.lease is not None
    cgroups.lease.release()


def test_v2_limit_files_when_memory_and_pids_reach_the_group(tmp_path: Path) -> None:
    root = stand_in(tmp_path / "cg", "cpu memory pids")
    spec = spec_for(tmp_path, memory_mb=300, max_processes=64)
    cgroups = job_cgroups(4242, spec, CgroupV2(root))
    try:
        group = root / "modelci" / f"uid-4242-slot-{SLOT}"
        assert cgroups.groups == [group]
        assert cgroups.memory == group
        assert (group / "memory.max").read_text() == str(300 * MB)
        assert (group / "pids.max").read_text() == "64"
        # The OOM verdict's source: memory.events' oom_kill, not oom (an event count).
        (group / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\n")
        assert cgroups.oom_kills() == 2
        # With a memory group, no address-space cap: it counts mappings, not memory.
        argv, _ = job_argv(UnsafeLocalSandbox(cgroups=None), spec, 4242, "/tmp", [], group, [group])
        assert not any(arg.startswith("--as=") for arg in argv)
        assert argv[argv.index(JOIN_CGROUPS) + 2] == str(group / "cgroup.procs")
    finally:
        let_go(cgroups)


def test_v2_without_the_memory_controller_caps_by_address_space(tmp_path: Path) -> None:
    root = stand_in(tmp_path / "cg", "pids")
    spec = spec_for(tmp_path, memory_mb=300, max_processes=64)
    cgroups = job_cgroups(4242, spec, CgroupV2(root))
    try:
        group = root / "modelci" / f"uid-4242-slot-{SLOT}"
        assert cgroups.memory is None
        assert not (group / "memory.max").exists()
        assert (group / "pids.max").read_text() == "64"
        argv, _ = job_argv(UnsafeLocalSandbox(cgroups=None), spec, 4242, "/tmp", [], None, [group])
        assert f"--as={300 * MB}" in argv
    finally:
        let_go(cgroups)
    assert "without the memory controller" in CgroupV2(root).describe()
    assert "RLIMIT_AS" in CgroupV2(root).describe()


def test_detect_picks_v2_at_the_root_then_the_own_delegated_cgroup(tmp_path: Path) -> None:
    own = tmp_path / "proc-self-cgroup"
    own.write_text("0::/system.slice/modelci.service\n")
    root = stand_in(tmp_path / "cg", "memory pids")
    found = detect(root, own)
    assert isinstance(found, CgroupV2)
    assert (found.parent, found.hierarchy_root) == (root, True)
    # A root whose cgroup.procs modelci cannot write (not root): its own cgroup,
    # when delegated to it.
    (root / "cgroup.procs").unlink()
    service = stand_in(root / "system.slice" / "modelci.service", "memory pids")
    found = detect(root, own)
    assert isinstance(found, CgroupV2)
    assert (found.parent, found.hierarchy_root) == (service, False)
    assert detect(tmp_path / "not-cgroupfs", own) is None


# -- no cgroups at all: RLIMIT_AS ----------------------------------------------------------


def test_without_cgroups_memory_over_the_limit_fails_with_a_clear_reason(tmp_path: Path) -> None:
    box = UnsafeLocalSandbox(cgroups=None)
    spec = SandboxSpec(
        command=f"{PYTHON} -c 'b = bytearray(1_000_000_000)'",
        workdir=tmp_path,
        log_path=tmp_path / "log",
        limits=Limits(timeout_s=20, memory_mb=200),
        slot=SLOT,
    )
    result = box.run(spec)
    assert result.out_of_memory and result.address_space_cap and not result.ok
    reason = result.failure_reason() or ""
    assert "ran out of its 200 MB of memory" in reason
    assert "limits.memory_mb" in reason
    assert "[modelci: the run ran out of its 200 MB" in (tmp_path / "log").read_text()
    # Any other failure stays what it is.
    other = replace(spec, command=f"{PYTHON} -c 'raise SystemExit(3)'")
    assert box.run(other).failure_reason() == "exited with code 3; see the log"


@pytest.mark.sandbox
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_bubblewrap_job_runs_in_its_v2_group_and_is_killed_with_it(delegated: Path) -> None:
    # Not pytest's tmp_path: the sandbox's uid must traverse down to its work dir.
    base = Path(tempfile.mkdtemp(prefix="modelci-cgroups-test-", dir="/var/tmp"))
    try:
        base.chmod(0o711)
        workdir = base / "work"
        workdir.mkdir()
        code = """
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(60)
open("started", "w").close()
time.sleep(60)
"""
        box = BubblewrapSandbox(uid_base=60700, cgroups=CgroupV2(delegated, hierarchy_root=False))
        group = delegated / "modelci" / f"uid-{60700 + SLOT}-slot-{SLOT}"
        seen, cancel = set[int](), threading.Event()

        def watch() -> None:
            if eventually(lambda: (workdir / "started").exists(), within=20):
                seen.update(int(pid) for pid in (group / "cgroup.procs").read_text().split())
            cancel.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        spec = SandboxSpec(
            command=f"{PYTHON} -c {shlex.quote(code)}",
            workdir=workdir,
            log_path=base / "log",
            limits=Limits(timeout_s=30),
            slot=SLOT,
        )
        result = box.run(spec, cancel=cancel)
        watcher.join()
        assert result.cancelled, (base / "log").read_text()
        # bwrap, its pid 1, sh and both pythons: the whole chain joined the group.
        assert len(seen) >= 4
        assert not any(task_alive(pid) for pid in seen)
        assert not group.exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
