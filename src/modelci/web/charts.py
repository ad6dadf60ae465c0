"""The dashboard's drawings: interval bars as inline SVG, and the series the charts plot.

Pure: numbers in, SVG text or JSON-ready dicts out (the pages embed them). An
interval bar reads without JavaScript; the history and drift charts are drawn in
the browser by the vendored uPlot from the series built here.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["drift_series", "history_series", "interval_bar"]

BAR_WIDTH = 180
BAR_HEIGHT = 20
_PAD = 6


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _tone(low: float, high: float, direction: str | None) -> str:
    """good / bad when the whole interval lies on one side of zero, else unsure."""
    if direction not in ("higher", "lower") or low <= 0 <= high:
        return "unsure"
    above = low > 0
    return "good" if above == (direction == "higher") else "bad"


def interval_bar(
    low: float | None, high: float | None, delta: float | None, *, direction: str | None
) -> str:
    """The change (head minus base) and its interval drawn around a zero line.

    Scaled to the widest of the three numbers, so a bar that crosses the middle
    line is a change the data cannot tell from none. Empty without an interval.
    """
    lo, hi, mid = _finite(low), _finite(high), _finite(delta)
    if lo is None or hi is None:
        return ""
    span = max(abs(lo), abs(hi), abs(mid or 0.0)) or 1.0
    inner = BAR_WIDTH - 2 * _PAD

    def x(value: float) -> float:
        return round(_PAD + (value / span + 1) / 2 * inner, 1)

    centre, y = BAR_HEIGHT / 2, BAR_HEIGHT / 2
    tone = _tone(lo, hi, direction)
    label = f"interval {lo:+.4g} to {hi:+.4g}" + (f", change {mid:+.4g}" if mid is not None else "")
    parts = [
        f'<svg class="ibar ibar-{tone}" width="{BAR_WIDTH}" height="{BAR_HEIGHT}" '
        f'viewBox="0 0 {BAR_WIDTH} {BAR_HEIGHT}" role="img" aria-label="{label}">',
        f"<title>{label}</title>",
        f'<line class="zero" x1="{x(0)}" x2="{x(0)}" y1="2" y2="{BAR_HEIGHT - 2}"/>',
        f'<line class="ci" x1="{x(lo)}" x2="{x(hi)}" y1="{y}" y2="{y}"/>',
        f'<line class="cap" x1="{x(lo)}" x2="{x(lo)}" y1="{centre - 5}" y2="{centre + 5}"/>',
        f'<line class="cap" x1="{x(hi)}" x2="{x(hi)}" y1="{centre - 5}" y2="{centre + 5}"/>',
    ]
    if mid is not None:
        parts.append(f'<circle class="delta" cx="{x(mid)}" cy="{y}" r="3.5"/>')
    parts.append("</svg>")
    return "".join(parts)


def history_series(versions: Sequence[Mapping[str, Any]], *, limit: int = 4) -> dict[str, Any]:
    """Each metric across versions, oldest first, for the model page's chart.

    ``versions`` (oldest first) carry ``version``, ``metrics`` and, for a retrain's
    version, ``interval`` per metric: new minus champion on the same rows, drawn
    as a whisker around the version's value (champion + low .. champion + high).
    The metrics of the newest version come first, up to ``limit``.
    """
    if not versions:
        return {"x": [], "metrics": {}}
    newest = versions[-1].get("metrics") or {}
    names = [n for n in newest if _finite(newest[n]) is not None][:limit]
    series: dict[str, Any] = {}
    for name in names:
        values: list[float | None] = []
        lows: list[float | None] = []
        highs: list[float | None] = []
        for row in versions:
            value = _finite((row.get("metrics") or {}).get(name))
            interval = (row.get("intervals") or {}).get(name) or {}
            champion = _finite((row.get("champion_scores") or {}).get(name))
            low, high = _finite(interval.get("low")), _finite(interval.get("high"))
            values.append(value)
            if champion is None or low is None or high is None:
                lows.append(None)
                highs.append(None)
            else:
                lows.append(champion + low)
                highs.append(champion + high)
        series[name] = {"values": values, "low": lows, "high": highs}
    return {"x": [int(row["version"]) for row in versions], "metrics": series}


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value).timestamp()


def drift_series(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The share of drifted columns per window, oldest first, from reports newest first."""
    rows = [r for r in reversed(reports) if _epoch(r.get("window_end")) is not None]
    return {
        "x": [_epoch(r.get("window_end")) for r in rows],
        "share": [_finite(r.get("share_drifted")) for r in rows],
        "drifted": [bool(r.get("drifted")) for r in rows],
    }
