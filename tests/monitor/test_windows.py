"""Cutting the prediction log into windows, page by page, one version at a time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from modelci.errors import ConfigError
from modelci.monitor import windows
from modelci.monitor.windows import PREDICTION_COLUMN, next_window, parse_window

T0 = dt.datetime(2026, 12, 8, 10, 0, tzinfo=dt.UTC)


@dataclass
class Row:
    id: int
    version: int
    inputs: Any
    outputs: Any
    created_at: dt.datetime


class Log:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.reads: list[tuple[int, int]] = []

    def read(self, after_id: int, limit: int) -> Sequence[Row]:
        self.reads.append((after_id, limit))
        return [r for r in self.rows if r.id > after_id][:limit]


def _requests(
    n: int, *, version: int = 1, rows: int = 10, start: int = 1, minutes: int = 1
) -> list[Row]:
    return [
        Row(
            start + i,
            version,
            {"x": [float(i)] * rows, "c": ["a"] * rows},
            [i % 2] * rows,
            T0 + dt.timedelta(minutes=i * minutes),
        )
        for i in range(n)
    ]


def test_a_row_window_reads_pages_until_it_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(windows, "PAGE", 7)
    log = Log(_requests(40))
    window, mark = next_window(
        log.read, after_id=0, version=1, columns=["x", "c"], size=parse_window(100), now=T0
    )
    assert window is not None and window.rows == 100 and mark == 10
    assert window.columns["x"][:10] == [0.0] * 10 and len(window.columns[PREDICTION_COLUMN]) == 100
    assert log.reads == [(0, 7), (7, 7)]  # two pages, not the whole log
    nothing, same = next_window(
        log.read, after_id=40, version=1, columns=["x"], size=parse_window(100), now=T0
    )
    assert nothing is None and same == 40


def test_an_incomplete_row_window_waits() -> None:
    log = Log(_requests(5))
    window, mark = next_window(
        log.read, after_id=0, version=1, columns=["x"], size=parse_window(100), now=T0
    )
    assert window is None and mark == 0


def test_other_versions_are_passed_over_and_a_swap_ends_a_window() -> None:
    log = Log(
        _requests(3, version=1)
        + _requests(5, version=2, start=4)
        + _requests(2, version=3, start=9)
    )
    window, mark = next_window(
        log.read, after_id=0, version=2, columns=["x"], size=parse_window(1000), now=T0
    )
    assert window is not None and window.rows == 50 and (window.first_id, mark) == (4, 8)
    # Only version 1 so far: nothing to test, but the watermark moves past it.
    old = Log(_requests(3, version=1))
    window, mark = next_window(
        old.read, after_id=0, version=2, columns=["x"], size=parse_window(1000), now=T0
    )
    assert window is None and mark == 3


def test_a_time_window_closes_when_its_span_is_over() -> None:
    log = Log(_requests(90, minutes=1))  # 10:00 .. 11:29
    hour = parse_window("1h")
    window, mark = next_window(log.read, after_id=0, version=1, columns=["x"], size=hour, now=T0)
    assert window is not None and window.rows == 600 and mark == 60  # 10:00 .. 10:59
    assert window.start == T0 and window.end == T0 + dt.timedelta(minutes=59)
    # 11:00 .. 11:29: the hour is not over yet at 11:30, and is at 12:00.
    rest, mark = next_window(
        log.read,
        after_id=60,
        version=1,
        columns=["x"],
        size=hour,
        now=T0 + dt.timedelta(minutes=90),
    )
    assert rest is None and mark == 60
    rest, mark = next_window(
        log.read, after_id=60, version=1, columns=["x"], size=hour, now=T0 + dt.timedelta(hours=2)
    )
    assert rest is not None and rest.rows == 300 and mark == 90


def test_a_request_without_an_optional_column_gets_empty_values() -> None:
    row = Row(1, 1, {"x": [1.0, 2.0]}, [0, 1], T0)
    window, _ = next_window(
        lambda a, n: [row] if a < 1 else [],
        after_id=0,
        version=1,
        columns=["x", "c"],
        size=parse_window("1h"),
        now=T0 + dt.timedelta(hours=1),
    )
    assert window is not None and window.columns["c"] == [None, None]


@pytest.mark.parametrize(
    ("value", "words"),
    [(5, "too few"), ("1 fortnight", "neither"), ("0h", "neither"), (True, "neither")],
)
def test_a_bad_window_names_the_fix(value: Any, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as caught:
        parse_window(value)
    assert caught.value.hint
