"""How the ``modelci`` process ends: exit handlers run, output and exit code kept,
but no interpreter teardown (it cost ~0.3 s of a warm evaluation)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path

out = Path(sys.argv[1])
mode = sys.argv[2]


class TornDown:
    # Runs only when the interpreter tears its modules down (by then module
    # globals may be gone: what it needs is bound here).
    def __del__(self, _open=open, _path=str(out / "torn-down")):
        with _open(_path, "w") as f:
            f.write("yes")


marker = TornDown()
atexit.register(lambda: (out / "exit-handler").write_text("ran"))
if mode == "thread":
    def late_writer():
        time.sleep(0.3)
        (out / "thread").write_text("finished")
    threading.Thread(target=late_writer).start()

from modelci.cli import main
sys.argv = ["modelci", *sys.argv[3:]]
main()
"""


def run(out: Path, mode: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), mode, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "code", "stream", "text"),
    [
        (("--version",), 0, "stdout", "modelci, version"),
        (("--no-such-option",), 2, "stderr", "No such option"),
    ],
)
def test_the_process_ends_after_exit_handlers_without_teardown(
    tmp_path: Path, args: tuple[str, ...], code: int, stream: str, text: str
) -> None:
    out = tmp_path
    done = run(out, "plain", *args)
    assert done.returncode == code
    assert text in getattr(done, stream)  # flushed before the process ended
    assert (out / "exit-handler").read_text() == "ran"
    assert not (out / "torn-down").exists()


def test_a_running_thread_gets_the_normal_exit(tmp_path: Path) -> None:
    out = tmp_path
    done = run(out, "thread", "--version")
    assert done.returncode == 0
    assert (out / "thread").read_text() == "finished"  # waited for, as Python does
    assert (out / "exit-handler").read_text() == "ran"
