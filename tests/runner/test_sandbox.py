"""The sandbox against hostile repository code: real bubblewrap, setpriv and cgroups.

Each hostile behaviour must end as a clear failed (or contained) result while
this process survives.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

import modelci
from modelci.errors import SandboxUnavailable
from modelci.runner import process as process_module
from modelci.runner.cgroups import CgroupV1
from modelci.runner.outputs import read_json_output
from modelci.runner.sandbox import (
    BubblewrapSandbox,
    Limits,
    Sandbox,
    SandboxResult,
    SandboxSpec,
    UnsafeLocalSandbox,
    acquire_slot,
    make_sandbox,
    take_slot,
)

UID_BASE = 60700  # not the server's default, so a running server's slots are not touched
PYTHON = "/usr/bin/python3"
F = TypeVar("F", bound=Callable[..., Any])


def sandboxed(test: F) -> F:
    """Mark a test that needs the real sandbox, and skip it (with why) where there is none."""
    reason = None
    if shutil.which("bwrap") is None:
        reason = "needs bubblewrap (apt-get install bubblewrap)"
    elif os.geteuid() != 0:
        reason = "needs root: the sandbox drops to per-slot uids with setpriv"
    marked = pytest.mark.skipif(reason is not None, reason=reason or "")(pytest.mark.sandbox(test))
    return cast(F, marked)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and the sandbox's uid
    # must traverse down to its work dir.
    path = Path(tempfile.mkdtemp(prefix="modelci-sandbox-test-", dir="/var/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir(base: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="work-", dir=base))


@pytest.fixture(scope="module")
def bwrap() -> Sandbox:
    return make_sandbox(uid_base=UID_BASE)


def run(
    box: Sandbox,
    workdir: Path,
    command: str,
    *,
    slot: int = 0,
    cancel: threading.Event | None = None,
    **limits: Any,
) -> tuple[SandboxResult, str]:
    log = workdir.with_suffix(".log")
    spec = SandboxSpec(
        command=command,
        workdir=workdir,
        log_path=log,
        slot=slot,
        limits=Limits(**{"timeout_s": 20, **limits}),
    )
    result = box.run(spec, cancel=cancel)
    return result, log.read_text(errors="replace")


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nUid:\t{uid}\t" in status and "State:\tZ" not in status:
                found.append(int(entry.name))
    return found


def python(code: str) -> str:
    return f"{PYTHON} -c {shlex.quote(code)}"


# -- the real sandbox ---------------------------------------------------------------------


@sandboxed
def test_python_writes_a_file_that_the_host_reads(bwrap: Sandbox, workdir: Path) -> None:
    code = (
        "import json, os; json.dump({'uid': os.getuid(), 'cwd': os.getcwd()}, open('m.json', 'w'))"
    )
    result, _ = run(bwrap, workdir, python(code))
    assert result.ok, result
    assert result.failure_reason() is None
    assert read_json_output(workdir, "m.json") == {"uid": UID_BASE, "cwd": str(workdir)}
    # Handed back to the caller, so the server can read and delete it.
    assert (workdir / "m.json").stat().st_uid == os.getuid()
    assert workdir.stat().st_uid == os.getuid()


@sandboxed
def test_runs_as_the_slot_uid_without_capabilities(bwrap: Sandbox, workdir: Path) -> None:
    result, log = run(bwrap, workdir, "id -u; id -g; id -G; grep ^Cap /proc/self/status", slot=2)
    assert result.ok, log
    lines = log.splitlines()
    assert lines[:3] == [str(UID_BASE + 2)] * 3
    caps = [line.split()[1] for line in lines[3:]]
    assert caps == ["0000000000000000"] * 5, log


@sandboxed
def test_environment_is_cleared(
    bwrap: Sandbox, workdir: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCI_TEST_SECRET", "hunter2")
    venv = Path(tempfile.mkdtemp(prefix="venv-", dir=base))
    venv.chmod(0o755)
    (venv / "bin").mkdir(mode=0o755)
    (venv / "bin" / "hello").write_text("#!/bin/sh\necho hello from the venv\n")
    (venv / "bin" / "hello").chmod(0o755)
    spec = SandboxSpec(
        command="hello; env; echo x > $VIRTUAL_ENV/owned || echo VENV-READ-ONLY",
        workdir=workdir,
        log_path=workdir.with_suffix(".log"),
        venv=venv,
        env={"PYTHONPATH": str(workdir)},
    )
    result = bwrap.run(spec)
    log = spec.log_path.read_text()
    assert result.ok, log
    assert "hunter2" not in log
    env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)
    expected = {"HOME", "PATH", "LANG", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    expected |= {"VIRTUAL_ENV", "MODELCI", "PYTHONPATH"}
    assert set(env) - {"PWD", "SHLVL", "_", "OLDPWD"} == expected
    assert env["HOME"] == "/tmp"
    assert env["PATH"].startswith(f"{venv}/bin:")
    assert "hello from the venv" in log
    assert "VENV-READ-ONLY" in log
    assert not (venv / "owned").exists()


@sandboxed
def test_network_is_cut_loopback_and_dns_included(bwrap: Sandbox, workdir: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=3)
    print("CONNECTED")
except OSError as e:
    print("connect failed:", e)
try:
    socket.getaddrinfo("example.com", 443)
    print("RESOLVED")
except OSError as e:
    print("dns failed:", e)
"""
        _result, log = run(bwrap, workdir, python(code))
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing arrived
    assert "connect failed" in log, log
    assert "dns failed" in log, log
    assert "CONNECTED" not in log
    assert "RESOLVED" not in log


@sandboxed
def test_secret_files_are_not_readable(bwrap: Sandbox, workdir: Path, base: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="shared-", dir=base))
    shared.chmod(0o755)
    (shared / "secret.pem").write_text("TOPSECRET-BOUND")
    (shared / "secret.pem").chmod(0o600)
    unbound = base / "unbound-secret.pem"
    unbound.write_text("TOPSECRET-UNBOUND")
    unbound.chmod(0o600)
    spec = SandboxSpec(
        command=f"cat {shared}/secret.pem; cat {unbound}; ls /root; ls /var/lib; echo done",
        workdir=workdir,
        log_path=workdir.with_suffix(".log"),
        ro_binds=(shared,),
    )
    result = bwrap.run(spec)
    log = spec.log_path.read_text()
    assert result.ok, log
    assert "TOPSECRET" not in log
    # Bound but root's 0600: a real uid, not a root mapped to "uid 60700".
    assert f"cat: {shared}/secret.pem: Permission denied" in log
    assert f"cat: {unbound}: No such file or directory" in log
    assert "ls: cannot access '/root': No such file or directory" in log


@sandboxed
def test_writes_outside_the_work_dir_fail(bwrap: Sandbox, workdir: Path, base: Path) -> None:
    other = Path(tempfile.mkdtemp(prefix="other-", dir=base))
    other.chmod(0o777)  # only the mount namespace stands in the way
    marker = f"modelci-test-{os.getpid()}"
    command = "; ".join(
        f"(echo x > {target}) 2>/dev/null || echo REFUSED {target}"
        for target in ("/usr/owned", "/etc/owned", f"{other}/owned", f"/var/tmp/{marker}")
    )
    result, log = run(bwrap, workdir, command + f"; echo ok > /tmp/{marker} && echo TMP-OK")
    assert result.ok, log
    assert log.count("REFUSED") == 4, log
    assert "TMP-OK" in log  # its private /tmp works
    assert not (other / "owned").exists()
    assert not Path("/tmp", marker).exists()
    assert not Path("/var/tmp", marker).exists()
    assert not Path("/usr/owned").exists()
    assert not Path("/etc/owned").exists()


@sandboxed
def test_links_and_setuid_files_left_behind_are_harmless(
    bwrap: Sandbox, workdir: Path, base: Path
) -> None:
    # The work dir is chowned to the sandbox uid and back: neither may follow a
    # link that the repository committed or the job created. The targets belong
    # to a third uid, so following a link in either direction would show.
    target = base / "foreign.txt"
    target.write_text("x")
    foreign_dir = Path(tempfile.mkdtemp(prefix="foreign-", dir=base))
    for path in (target, foreign_dir):
        os.chown(path, 12345, 12345)
    (workdir / "committed-link").symlink_to(target)
    (workdir / "committed-dir-link").symlink_to(foreign_dir)
    command = f"ln -s {target} made-link; cp /usr/bin/id suid; chmod 4755 suid; ls -l suid"
    result, log = run(bwrap, workdir, command)
    assert result.ok, log
    assert "-rwsr-xr-x" in log  # it was setuid (to the sandbox uid) inside
    assert target.stat().st_uid == 12345
    assert foreign_dir.stat().st_uid == 12345
    suid = (workdir / "suid").stat()
    assert suid.st_uid == 0
    assert not suid.st_mode & 0o6000  # chown cleared it: no root setuid binary appears


@sandboxed
def test_fork_loop_is_contained_and_killed(bwrap: Sandbox, workdir: Path) -> None:
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result, _ = run(bwrap, workdir, python(code), timeout_s=2, max_processes=32)
    assert result.timed_out
    assert not result.ok
    assert "2 s timeout" in (result.failure_reason() or "")
    assert processes_of(UID_BASE) == []  # the kill caught every fork


@sandboxed
def test_sleeping_past_the_timeout_is_killed(bwrap: Sandbox, workdir: Path) -> None:
    result, log = run(bwrap, workdir, "echo started; sleep 60; echo SLEPT", timeout_s=2)
    assert result.timed_out
    assert result.exit_code is None
    assert result.duration_s >= 2  # not before its time
    assert "SLEPT" not in log and processes_of(UID_BASE) == []  # nothing left to print it
    assert result.failure_reason() == "exceeded its 2 s timeout (limits.timeout in modelci.yaml)"
    assert "started" in log
    assert "exceeded its 2 s timeout" in log


@sandboxed
def test_memory_limit_kills_and_says_so(bwrap: Sandbox, workdir: Path) -> None:
    # Whichever caps memory here (a v1 or v2 memory cgroup, else RLIMIT_AS).
    result, _ = run(bwrap, workdir, python("b = bytearray(1_000_000_000)"), memory_mb=200)
    assert result.out_of_memory
    assert not result.ok
    assert "200 MB of memory" in (result.failure_reason() or "")


@sandboxed
def test_without_cgroups_address_space_caps_memory_and_says_so(workdir: Path) -> None:
    box = BubblewrapSandbox(uid_base=UID_BASE, cgroups=None)
    result, log = run(box, workdir, python("b = bytearray(1_000_000_000)"), memory_mb=200)
    assert result.out_of_memory and result.address_space_cap, log
    assert "MemoryError" in log
    assert "ran out of its 200 MB of memory" in (result.failure_reason() or "")
    # Within the cap, the same job runs.
    result, log = run(box, workdir, python("b = bytearray(50_000_000)"), memory_mb=200)
    assert result.ok, log


@sandboxed
def test_gigabytes_of_output_are_capped(bwrap: Sandbox, workdir: Path) -> None:
    result, _ = run(bwrap, workdir, "yes", timeout_s=2, max_log_mb=1)
    assert result.timed_out  # printing did not block it, and the timeout still holds
    assert result.log_truncated
    size = workdir.with_suffix(".log").stat().st_size
    assert 1 << 20 < size < (1 << 20) + 500
    assert "output beyond 1 MB was discarded" in workdir.with_suffix(".log").read_text()


@sandboxed
def test_double_forked_setsid_grandchild_dies(bwrap: Sandbox, workdir: Path) -> None:
    code = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open("started", "w").close()
        time.sleep(60)
    os._exit(0)
while not os.path.exists("started"):
    time.sleep(0.01)
"""
    result, log = run(bwrap, workdir, python(code))
    assert result.ok, log
    assert (workdir / "started").exists()
    assert processes_of(UID_BASE) == []


@sandboxed
def test_cancel_kills_the_running_job(bwrap: Sandbox, workdir: Path) -> None:
    cancel = threading.Event()
    # Cancelled once the job runs (it says so), not on a timer that may fire first.
    watcher = threading.Thread(
        target=when_exists, args=(workdir / "started",), kwargs={"then": cancel.set}
    )
    watcher.start()
    result, _ = run(bwrap, workdir, ": > started; sleep 60", cancel=cancel, timeout_s=20)
    watcher.join()
    assert result.cancelled  # killed for the cancel, not by its 20 s timeout
    assert result.exit_code is None
    assert result.failure_reason() == "was cancelled"
    assert result.duration_s < result.limits.timeout_s / 4  # soon after, not at the end
    assert processes_of(UID_BASE) == []


@sandboxed
def test_filling_the_disk_is_stopped(bwrap: Sandbox, workdir: Path) -> None:
    # At most ~200 MB/s: on a quiet machine an unthrottled writer reached the 1 GB
    # per-file limit (EFBIG) before the once-a-second watchdog looked.
    code = (
        "import time\nf = open('big', 'wb')\nwhile True:\n"
        "    f.write(bytes(1 << 20))\n    f.flush()\n    time.sleep(0.005)\n"
    )
    result, _ = run(bwrap, workdir, python(code), max_disk_mb=16)
    assert result.disk_exceeded  # the watchdog, not the 20 s timeout, stopped it
    assert not result.ok
    assert result.duration_s < result.limits.timeout_s / 4
    assert "more than 16 MB into its work dir" in (result.failure_reason() or "")


@sandboxed
def test_too_many_files_count_as_over_the_disk_limit(
    bwrap: Sandbox, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process_module, "MAX_WALK", 50)
    result, _ = run(bwrap, workdir, "for i in $(seq 200); do : > f$i; done; sleep 30")
    assert result.disk_exceeded  # the watchdog, not the 20 s timeout, stopped it
    assert result.duration_s < result.limits.timeout_s / 4


@sandboxed
def test_cpu_time_limit(bwrap: Sandbox, workdir: Path) -> None:
    result, _ = run(bwrap, workdir, python("while True: pass"), cpu_s=1)
    assert not result.ok
    assert not result.timed_out
    assert "1 s of CPU time" in (result.failure_reason() or "")


@sandboxed
def test_unreachable_work_dir_is_explained(bwrap: Sandbox, base: Path) -> None:
    hidden = Path(tempfile.mkdtemp(prefix="hidden-", dir=base))  # 0700, root's
    work = hidden / "work"
    work.mkdir()
    with pytest.raises(SandboxUnavailable, match=f"cannot reach {work}") as caught:
        run(bwrap, work, "true")
    assert f"chmod o+x {hidden}" in str(caught.value)
    assert work.stat().st_uid == os.getuid()  # handed back even so


@sandboxed
def test_slots_run_concurrently_as_different_uids(bwrap: Sandbox, base: Path) -> None:
    results: dict[int, tuple[SandboxResult, str]] = {}
    errors: list[BaseException] = []
    works = {slot: Path(tempfile.mkdtemp(prefix="work-", dir=base)) for slot in (0, 1)}
    # Each job says it started, then waits for the go that is given only once
    # both have started: they can only finish if they ran at the same time.
    command = "id -u; : > started; while [ ! -e go ]; do sleep 0.01; done"

    def one(slot: int) -> None:
        try:
            results[slot] = run(bwrap, works[slot], command, slot=slot)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    both_started = threading.Event()
    when_exists(*(work / "started" for work in works.values()), then=both_started.set)
    for work in works.values():
        (work / "go").touch()  # also releases a lone job when the other never started
    for thread in threads:
        thread.join()
    assert errors == []
    assert both_started.is_set(), "the two jobs never ran at the same time"
    assert sorted(results) == [0, 1]
    for slot, (result, log) in results.items():
        assert result.ok, log
        assert log.strip() == str(UID_BASE + slot)


@sandboxed
def test_start_overhead_is_small(bwrap: Sandbox, workdir: Path) -> None:
    # Against what every training command pays anyway, measured in turns so that
    # both see the same load: starting Python (about as long as a sandbox, here).
    sandboxed_runs, pythons = [], []
    for _ in range(10):
        started = time.monotonic()
        assert run(bwrap, workdir, "true")[0].ok
        sandboxed_runs.append(time.monotonic() - started)
        started = time.monotonic()
        subprocess.run([PYTHON, "-c", "pass"], check=True)
        pythons.append(time.monotonic() - started)
    per_run, python_start = statistics.median(sandboxed_runs), statistics.median(pythons)
    print(f"sandboxed `true`: {per_run * 1000:.1f} ms; `python -c pass`: {python_start * 1000:.1f}")
    assert per_run < 3 * python_start


# -- without bubblewrap -----------------------------------------------------------------


def test_missing_bwrap_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable) as caught:
        make_sandbox()
    message = str(caught.value)
    assert "apt-get install bubblewrap" in message
    assert "--unsafe-no-sandbox" in message


def test_a_background_probe_that_fails_stops_the_first_run(
    monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> None:
    # Where the sandbox's uid can run it (tmp_path is private to root).
    fake = Path(tempfile.mkdtemp(prefix="fake-bwrap-")) / "bwrap"
    fake.parent.chmod(0o755)
    fake.write_text(
        "#!/bin/sh\necho 'Creating new namespace failed: Operation not permitted' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    # On a machine, not in a container (this test may run in one).
    monkeypatch.setattr("modelci.runner.sandbox.container_engine", lambda: None)
    box = make_sandbox(uid_base=UID_BASE, wait=False)  # returns before the answer
    with pytest.raises(SandboxUnavailable, match="Creating new namespace failed") as caught:
        run(box, workdir, "echo never")
    assert "apt-get install bubblewrap" in str(caught.value)
    assert not (workdir.with_suffix(".log")).exists()  # nothing ran
    shutil.rmtree(fake.parent)


def test_in_a_container_a_refused_sandbox_names_the_right_and_not_unsafe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bwrap refuses even bare namespaces (as under Docker's seccomp profile): the
    fix is the container option, never --unsafe-no-sandbox."""
    fake = Path(tempfile.mkdtemp(prefix="fake-bwrap-")) / "bwrap"
    fake.parent.chmod(0o755)
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    monkeypatch.setattr("modelci.runner.sandbox.container_engine", lambda: "docker")
    with pytest.raises(SandboxUnavailable, match="Creating new namespace failed") as caught:
        make_sandbox(uid_base=UID_BASE + 7)  # another prefix: the probe's answer is cached
    assert caught.value.hint is not None
    assert "--security-opt seccomp=unconfined" in caught.value.hint
    assert "this docker container" in caught.value.hint
    assert "unsafe" not in str(caught.value)
    shutil.rmtree(fake.parent)


def test_unsafe_sandbox_clears_env_and_caps_log_and_time(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCI_TEST_SECRET", "hunter2")
    command = "env; yes | head -c 3000000; sleep 30"
    result, log = run(UnsafeLocalSandbox(), workdir, command, timeout_s=1, max_log_mb=1)
    assert result.timed_out
    assert result.log_truncated
    assert "hunter2" not in log
    assert "MODELCI=1" in log
    home = next(line.split("=", 1)[1] for line in log.splitlines() if line.startswith("HOME="))
    assert home != os.environ.get("HOME")
    assert not Path(home).exists()


# A job whose grandchild leaves its session, writes its pid to "pid" and sleeps: only
# killing the job's group (cgroup) reaches it.
ESCAPING_GRANDCHILD = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        open("pid", "w").write(str(os.getpid()))
        time.sleep(60)
    os._exit(0)
while not os.path.exists("pid"):
    time.sleep(0.01)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create cgroups")
def test_unsafe_sandbox_kills_escaped_grandchildren(workdir: Path) -> None:
    code = ESCAPING_GRANDCHILD
    result, _ = run(UnsafeLocalSandbox(), workdir, python(code))
    assert result.ok  # the escaped grandchild's open pipe did not hold it to its timeout
    pid = int((workdir / "pid").read_text())
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z")


def test_failure_reasons() -> None:
    lim = Limits(timeout_s=30, memory_mb=512, max_disk_mb=100, cpu_s=60)

    def reason(**kw: Any) -> str | None:
        fields = {"exit_code": None, "duration_s": 1.0, "timed_out": False}
        fields |= {"out_of_memory": False, "disk_exceeded": False, "log_truncated": False}
        return SandboxResult(**{**fields, **kw}, limits=lim).failure_reason()

    assert reason(exit_code=0) is None
    assert reason(exit_code=0, log_truncated=True) is None
    assert reason(exit_code=3) == "exited with code 3; see the log"
    assert reason(timed_out=True) == "exceeded its 30 s timeout (limits.timeout in modelci.yaml)"
    assert reason(exit_code=137, out_of_memory=True) == (
        "was killed after using more than 512 MB of memory (limits.memory_mb in modelci.yaml)"
    )
    assert "more than 100 MB into its work dir" in (reason(disk_exceeded=True) or "")
    assert reason(cancelled=True) == "was cancelled"
    assert reason(exit_code=152) == "exited with code 152 after using its 60 s of CPU time"
    assert reason(exit_code=139) == "exited with code 139 (killed by SIGSEGV); see the log"
    assert reason(exit_code=-9) == "was killed by signal SIGKILL; see the log"


def test_acquire_slot_hands_out_free_slots_and_blocks(tmp_path: Path) -> None:
    events: list[object] = []
    waiting = threading.Event()

    def on_wait() -> None:
        events.append("waiting")
        waiting.set()

    with acquire_slot(tmp_path, 2) as first:
        with acquire_slot(tmp_path, 2) as second:
            assert {first, second} == {0, 1}
            assert take_slot(tmp_path, 2) is None  # both busy

            def third() -> None:
                with acquire_slot(tmp_path, 2, on_wait=on_wait) as slot:
                    events.append(("got", slot))

            waiter = threading.Thread(target=third)
            waiter.start()
            assert waiting.wait(10), "the third never waited for a slot"
            events.append("released")
        waiter.join(timeout=10)
    assert events == ["waiting", "released", ("got", second)]


def test_slots_are_held_across_processes(tmp_path: Path) -> None:
    holder = hold_in_child(f"lease = take_slot(Path({str(tmp_path)!r}), 2)")
    try:
        lease = take_slot(tmp_path, 2)
        assert lease is not None and lease.number == 1  # slot 0 is the other process's
        assert take_slot(tmp_path, 2) is None
        lease.release()
        again = take_slot(tmp_path, 2)
        assert again is not None and again.number == 1
        again.release()
    finally:
        release_child(holder)
    after = take_slot(tmp_path, 2)  # its exit let slot 0 go
    assert after is not None and after.number == 0
    after.release()


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.ismount("/sys/fs/cgroup/pids"),
    reason="needs root and the cgroup v1 pids controller",
)
def test_a_cgroup_another_process_holds_is_left_alone(workdir: Path) -> None:
    # Another process (think: a second modelci whose uid range overlaps) owns the
    # group of slot 5 and has a task in it: running in slot 5 must neither reset
    # the group nor kill the task, and must say why it cannot run.
    name = f"uid-{os.getuid()}-slot-5"
    group = Path("/sys/fs/cgroup/pids/modelci", name)
    holder = hold_in_child(
        f"claim_cgroup_name({name!r}); groups, _ = CgroupV1().make({name!r}, memory=1 << 30, "
        "processes=8); [(g / 'cgroup.procs').write_text(str(os.getpid())) for g in groups]"
    )
    try:
        with pytest.raises(SandboxUnavailable, match=f"cgroup {name} is in use by another"):
            run(UnsafeLocalSandbox(), workdir, "true", slot=5)
        assert holder.poll() is None  # alive, and still in its group
        assert (group / "cgroup.procs").read_text().split() == [str(holder.pid)]
    finally:
        release_child(holder)
    for leftover in (group, Path("/sys/fs/cgroup/memory/modelci", name)):
        CgroupV1().remove(leftover)  # empty now that its owner is gone


def hold_in_child(statement: str) -> subprocess.Popen[str]:
    """A separate process that runs statement (with cgroups' names), then holds on
    until its stdin closes; returned once the statement has run."""
    code = f"import os, sys; from modelci.runner.cgroups import *; {statement}; print('held')"
    child = subprocess.Popen(
        [sys.executable, "-c", code + "; sys.stdout.flush(); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(modelci.__file__).parents[1])},
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "held\n"
    return child


def release_child(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait(30)


def when_exists(*paths: Path, then: Callable[[], None], within: float = 60) -> None:
    """Call then() as soon as every path exists; give up after `within` seconds."""
    deadline = time.monotonic() + within
    while not all(path.exists() for path in paths):
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    then()
