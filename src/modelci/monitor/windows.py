"""Windows of served traffic: the champion's logged requests, cut into windows to test.

A window is either a number of rows (``window: 1000``: the next 1,000 rows
served) or a span of time (``window: 1h`` / ``1d``: the rows served in each
hour or day, closed once that span has passed). The log is read in pages of
requests after the last window's end (``store.monitoring.predictions_after``),
so a check never loads the whole log, only what the next window needs. Rows of
other versions (before a swap) are passed over: a window tests one version's
traffic against that version's reference.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelci.errors import ConfigError

__all__ = [
    "PREDICTION_COLUMN",
    "Window",
    "WindowSize",
    "next_window",
    "parse_span",
    "parse_window",
]

PREDICTION_COLUMN = "prediction"  # the model's output, tested like an input column
_SPAN = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
PAGE = 500  # requests read per query
MIN_ROWS = 30  # fewer rows than this in a cut-short window: passed over, not tested


@dataclass(frozen=True)
class WindowSize:
    rows: int | None = None  # a window of this many rows, or
    span: dt.timedelta | None = None  # the rows of each span of time

    def label(self) -> str:
        if self.rows is not None:
            return f"{self.rows} rows"
        assert self.span is not None
        return f"{self.span.total_seconds() / 3600:g} h"


def parse_window(value: int | str) -> WindowSize:
    """``1000`` (rows) or ``30m``/``1h``/``1d``/``1w`` (a span of time)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < MIN_ROWS:
            raise ConfigError(
                f"monitoring.window is {value} rows: too few for any test to mean anything",
                hint=f"use at least {MIN_ROWS} rows (1000 is a good start) or a span such as 1h",
            )
        return WindowSize(rows=value)
    span = parse_span(str(value))
    if not span:  # not a span, or a span of nothing
        raise ConfigError(
            f"monitoring.window {value!r} is neither a row count nor a span of time",
            hint="write a number of rows (window: 1000) or a span (window: 1h, 1d, 1w)",
        )
    return WindowSize(span=span)


def parse_span(text: str) -> dt.timedelta | None:
    """``30m``, ``12h``, ``7d``, ``2w`` as a duration; None when it is none of those."""
    match = _SPAN.match(text)
    if not match:
        return None
    return dt.timedelta(seconds=int(match.group(1)) * _SECONDS[match.group(2)])


class Logged(Protocol):
    """What a stored prediction (``store.monitoring``'s rows) gives a window."""

    id: int
    version: int
    inputs: Any
    outputs: Any
    created_at: dt.datetime


@dataclass
class Window:
    first_id: int  # the ids of the requests in it (the watermark moves to last_id)
    last_id: int
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    rows: int = 0
    columns: dict[str, list[Any]] = field(default_factory=dict)
    request_ids: list[int] = field(default_factory=list)

    def add(self, request: Logged, names: Sequence[str]) -> None:
        inputs = request.inputs if isinstance(request.inputs, dict) else {}
        outputs = request.outputs if isinstance(request.outputs, list) else [request.outputs]
        count = len(outputs)
        for name in names:
            values = inputs.get(name)
            if not isinstance(values, list) or len(values) != count:
                values = [None] * count  # an optional column the request left out
            self.columns.setdefault(name, []).extend(values)
        self.columns.setdefault(PREDICTION_COLUMN, []).extend(outputs)
        self.rows += count
        self.request_ids.append(request.id)
        self.start = self.start or request.created_at
        self.end = request.created_at


Reader = Callable[[int, int], Sequence[Logged]]  # (after id, at most n) -> oldest first


def _pages(read: Reader, after_id: int) -> Iterator[Logged]:
    while True:
        page = read(after_id, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after_id = page[-1].id


def next_window(
    read: Reader,
    *,
    after_id: int,
    version: int,
    columns: Sequence[str],
    size: WindowSize,
    now: dt.datetime,
) -> tuple[Window | None, int]:
    """The next complete window of ``version``'s traffic after ``after_id``, and the id
    the watermark may move to (past other versions' requests even when no window is
    complete yet); (None, after_id) when nothing new is there."""
    window: Window | None = None
    passed = after_id  # requests of other versions before the window starts
    for request in _pages(read, after_id):
        if request.version != version:
            if window is None:
                passed = request.id
                continue
            # Another version took over mid-window: test what was served, if enough.
            return (window if window.rows >= MIN_ROWS else None), window.last_id
        if size.span is not None and window is not None:
            assert window.start is not None
            if request.created_at >= _span_end(window.start, size.span):
                return window, window.last_id
        if window is None:
            window = Window(first_id=request.id, last_id=request.id)
        window.add(request, columns)
        window.last_id = request.id
        if size.rows is not None and window.rows >= size.rows:
            return window, window.last_id
    if window is not None and size.span is not None:
        assert window.start is not None
        if now >= _span_end(window.start, size.span):
            return window, window.last_id  # the span is over, nothing more will come
    return None, passed


def _span_end(start: dt.datetime, span: dt.timedelta) -> dt.datetime:
    """The end of the span holding ``start``: spans are aligned to the epoch (UTC), so
    hours start on the hour and days at midnight."""
    seconds = span.total_seconds()
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    index = (start - epoch).total_seconds() // seconds
    return epoch + dt.timedelta(seconds=(index + 1) * seconds)
