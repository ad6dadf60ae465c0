"""The end of a failed run's log, as a person is shown it."""

from __future__ import annotations

from pathlib import Path

from modelci.evaluate.logtail import TAIL_LINES, log_tail


def test_the_last_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)) + "\n\n")
    tail = log_tail(log).split("\n")
    assert len(tail) == TAIL_LINES
    assert tail[0] == f"line {1000 - TAIL_LINES}"
    assert tail[-1] == "line 999"  # trailing blank lines dropped


def test_paths_on_this_machine_become_what_they_mean(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        'File "/data/runs/abc/train.py", line 3\n'
        'File "/data/envs/k1/lib/python3.11/site-packages/x.py"\n'
        "cwd /data/runs/abc; data /data/mirrors\n"
    )
    tail = log_tail(
        log,
        paths={
            "/data/runs/abc/": "",
            "/data/runs/abc": ".",
            "/data/envs/k1": "<env>",
            "/data": "<data dir>",
        },
    )
    assert tail == (
        'File "train.py", line 3\n'
        'File "<env>/lib/python3.11/site-packages/x.py"\n'
        "cwd .; data <data dir>/mirrors"
    )


def test_escapes_control_characters_and_progress_bars_are_cleaned(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_bytes(
        b"\x1b[31mred error\x1b[0m\n"
        b"epoch 1/3\repoch 2/3\repoch 3/3\r\n"
        b"bell\x07 nul\x00 tab\tkept\n"
        b"\xff\xfe not utf-8\n"
    )
    assert log_tail(log).split("\n") == [
        "red error",
        "epoch 3/3",
        "bell nul tab\tkept",
        "\ufffd\ufffd not utf-8",
    ]


def test_long_lines_and_huge_logs_are_bounded(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    with log.open("w") as out:
        out.write("x" * 50_000_000 + "\n")
        out.write("y" * 10_000 + "\n" + "Error: the end\n")
    tail = log_tail(log)
    assert tail.endswith("Error: the end")
    assert all(len(line) <= 300 for line in tail.split("\n"))
    assert len(tail) < 2_000


def test_no_log_is_an_empty_tail(tmp_path: Path) -> None:
    assert log_tail(None) == ""
    assert log_tail(tmp_path / "missing.log") == ""
