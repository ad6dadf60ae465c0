"""The metric over the last retrains: a PNG for the commit comment, or a sparkline.

The only module that imports matplotlib (Agg, through a Figure of its own: no
pyplot state shared between threads). GitHub comments cannot carry uploaded
images, so the server renders the PNG when it is asked for it, at an
unguessable URL (``/plots/retrains/{token}.png``); without a public URL the
comment shows the same series as a text sparkline.

A retrain stores the new model's metrics and the champion's, scored on the same
rows (``metrics = {"new": {...}, "champion": {...}}``): each metric's plot has
one line for each, oldest retrain first. The first metric of the newest retrain
is the key metric; the others follow, up to :data:`MAX_METRICS`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MAX_METRICS", "Point", "history_series", "render_png", "sparkline"]

MAX_METRICS = 4
_BARS = "▁▂▃▄▅▆▇█"


class RetrainLike(Protocol):
    """What the plot reads of a stored retrain (store.retrains.RetrainRecord)."""

    @property
    def id(self) -> int: ...
    @property
    def metrics(self) -> Any: ...
    @property
    def version(self) -> int | None: ...
    @property
    def decision(self) -> str | None: ...


@dataclass(frozen=True)
class Point:
    label: str  # "#12 v4": the retrain and the version it registered
    new: float | None
    champion: float | None


def _number(values: Any, name: str) -> float | None:
    value = values.get(name) if isinstance(values, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def history_series(records: Sequence[RetrainLike]) -> dict[str, list[Point]]:
    """Each metric's points, oldest first, from retrains given newest first."""
    if not records:
        return {}
    newest = records[0].metrics if isinstance(records[0].metrics, Mapping) else {}
    names = [name for name in (newest.get("new") or {}) if isinstance(name, str)]
    series: dict[str, list[Point]] = {}
    for name in names[:MAX_METRICS]:
        points = []
        for record in reversed(records):
            stored = record.metrics if isinstance(record.metrics, Mapping) else {}
            label = f"#{record.id}" + (f" v{record.version}" if record.version else "")
            points.append(
                Point(
                    label, _number(stored.get("new"), name), _number(stored.get("champion"), name)
                )
            )
        if any(p.new is not None or p.champion is not None for p in points):
            series[name] = points
    return series


def sparkline(values: Iterable[float | None]) -> str:
    """``▁▃▅█``-style bars scaled between the lowest and highest value; a gap is a space."""
    numbers = list(values)
    known = [v for v in numbers if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    out = []
    for value in numbers:
        if value is None:
            out.append(" ")
        else:
            step = 0 if span == 0 else round((value - low) / span * (len(_BARS) - 1))
            out.append(_BARS[step])
    return "".join(out)


def render_png(series: Mapping[str, Sequence[Point]], *, title: str) -> bytes:
    """One panel per metric: the retrained model and the champion on the same rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(series.items()) or [("no metrics yet", [])]
    figure = Figure(figsize=(7, 2.4 * len(panels)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (name, points) in zip(axes, panels, strict=True):
        xs = list(range(len(points)))
        for attr, label, style in (("new", "retrained", "o-"), ("champion", "champion", "s--")):
            ys = [getattr(p, attr) for p in points]
            ax.plot(xs, [math.nan if y is None else y for y in ys], style, label=label)
        ax.set_title(name, loc="left", fontsize=10)
        ax.set_xticks(xs, [p.label for p in points], rotation=30, fontsize=7)
        ax.grid(alpha=0.3)
        if points:
            ax.legend(fontsize=7, loc="best")
    figure.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
