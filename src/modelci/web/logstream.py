"""A run's log, read as it grows, and server-sent events carrying it.

Pure file reading and text formatting (the route in ``views/evaluations`` does
the waiting). Offsets are byte offsets into the file, so a reconnecting browser
(``Last-Event-ID``) resumes exactly where it stopped; a chunk ends at the last
complete line, so a multi-byte character or a line is never split between two
events.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHUNK_BYTES", "TAIL_BYTES", "read_from", "sse_event", "tail"]

CHUNK_BYTES = 256 * 1024  # the most one event carries
TAIL_BYTES = 512 * 1024  # what a page shows of a log it renders itself


def read_from(path: Path, offset: int, *, final: bool = False) -> tuple[str, int]:
    """The complete lines after ``offset`` (up to CHUNK_BYTES) and the offset after them.

    ``final`` (the run ended): a last line without its newline is returned too.
    A missing file reads as nothing yet.
    """
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(CHUNK_BYTES)
    except FileNotFoundError:
        return "", offset
    if not final or len(data) == CHUNK_BYTES:
        cut = data.rfind(b"\n")
        if cut < 0:
            # A single line longer than a chunk goes out whole-chunk rather than never.
            if len(data) < CHUNK_BYTES:
                return "", offset
        else:
            data = data[: cut + 1]
    return data.decode(errors="replace"), offset + len(data)


def tail(path: Path, size: int = TAIL_BYTES) -> tuple[str, int, bool]:
    """The end of the log (from a line start), the file's size, and whether it was cut."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            start = max(0, end - size)
            handle.seek(start)
            data = handle.read(end - start)
    except FileNotFoundError:
        return "", 0, False
    if start > 0:
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline >= 0 else data
    return data.decode(errors="replace"), end, start > 0


def sse_event(event: str, data: str, *, event_id: int | None = None) -> str:
    """One server-sent event; each line of ``data`` its own ``data:`` field."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"
