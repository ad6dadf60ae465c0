"""Reading the prediction log back: ``modelci predictions`` and ``GET
/api/models/{name}/predictions`` share these (no web framework, no CLI library)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from modelci.errors import ConfigError

__all__ = ["parse_since", "prediction_json"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """A point in time from ``30m``/``12h``/``7d`` (ago) or an ISO 8601 date or time
    (UTC unless it names its offset)."""
    relative = _RELATIVE.match(text)
    if relative:
        seconds = float(relative.group(1)) * _UNITS[relative.group(2)]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=seconds)
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"cannot read {text!r} as a time",
            hint="give a duration ago (30m, 12h, 7d, 2w) or an ISO date or time "
            "(2026-11-22, 2026-11-22T08:00:00+01:00)",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def prediction_json(row: Any) -> dict[str, Any]:
    """One stored prediction (a ``PredictionRecord``) as JSON."""
    return {
        "id": row.id,
        "model": row.model_name,
        "version": row.version,
        "created_at": row.created_at.isoformat(),
        "latency_ms": row.latency_ms,
        "inputs": row.inputs,
        "outputs": row.outputs,
    }
