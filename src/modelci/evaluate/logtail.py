"""The end of a run's log, fit to show a person why the training failed.

The log is the repository's own output, any bytes at all. The tail is decoded
leniently, stripped of terminal escapes and control characters (a progress bar's
carriage returns keep only what the terminal would show), cut to a number of
lines and characters, and the run's paths on this machine (its work dir, its
environment, the data dir) are replaced by what they mean, so a traceback reads
``File "train.py"`` wherever it is shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

__all__ = ["TAIL_LINES", "log_tail"]

TAIL_LINES = 40
_READ_BYTES = 64 * 1024  # 40 lines of a traceback are far less; a line of 1 MB is cut
_LINE_CHARS = 300
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _visible(line: str) -> str:
    # What a terminal leaves of "epoch 1\repoch 2\r": the last non-empty rewrite.
    parts = [part for part in line.split("\r") if part]
    return parts[-1] if parts else ""


def log_tail(
    path: Path | None, *, lines: int = TAIL_LINES, paths: Mapping[str, str] | None = None
) -> str:
    """The last ``lines`` lines of the log at ``path``, cleaned (see the module); "" if none.

    ``paths`` maps paths on this machine to what to show instead; longer ones are
    replaced first, so a work dir inside the data dir becomes the work dir's name.
    """
    if path is None:
        return ""
    try:
        with path.open("rb") as log:
            size = log.seek(0, 2)
            log.seek(max(0, size - _READ_BYTES))
            data = log.read(_READ_BYTES)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    if size > _READ_BYTES:
        text = text.partition("\n")[2]  # the first line was cut in the middle
    text = _ANSI.sub("", text)
    for old in sorted(paths or {}, key=len, reverse=True):
        if old:
            text = text.replace(old, (paths or {})[old])
    kept = [_CONTROL.sub("", _visible(line)).rstrip() for line in text.split("\n")]
    while kept and not kept[-1]:
        kept.pop()
    return "\n".join(
        line if len(line) <= _LINE_CHARS else line[: _LINE_CHARS - 1] + "…"
        for line in kept[-lines:]
    )
