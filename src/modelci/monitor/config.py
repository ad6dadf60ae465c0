"""The ``monitoring:`` section of ``modelci.yaml``: what the drift watch of a model does.

::

    monitoring:
      reference: data/train.csv   # a file of the commit or DVC-tracked; default: the
                                  # scoring dataset's features
      window: 1000                # rows per window, or a span: 1h, 1d
      alerts: true                # a GitHub issue per model while its data drifts
      close_after: 3              # clean windows before the issue is closed
      retrain_on_drift: false     # a drifting window queues a retrain ...
      cooldown: 7d                # ... at most once per this span
      drift_share: 0.5            # the data drifts when at least this share of columns do
      columns:                    # per column: the test, threshold or kind, or skip: true
        age: {test: wasserstein, threshold: 0.2}

The section is stored with each registered version (its reference profile's
settings), so the watch of a version follows the ``modelci.yaml`` it was
trained from, and a later commit does not change how an older champion is
watched.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from modelci.errors import ConfigError
from modelci.monitor.settings import DriftSettings
from modelci.monitor.windows import WindowSize, parse_span, parse_window

__all__ = ["MonitoringConfig"]


class MonitoringConfig(DriftSettings):
    """The drift settings (``drift_share``, ``columns``) and how the watch runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Watch the served champion's data")
    reference: str | None = Field(
        default=None,
        description="The reference data (CSV or Parquet in the commit, or DVC-tracked); "
        "default: the scoring dataset's features",
    )
    window: int | str = Field(
        default=1000, description="Rows per window (1000), or a span of time (1h, 1d)"
    )
    alerts: bool = Field(default=True, description="Open a GitHub issue while the data drifts")
    close_after: int = Field(
        default=3, ge=1, le=1000, description="Clean windows before the issue is closed"
    )
    retrain_on_drift: bool = Field(default=False, description="Retrain when the data drifts")
    cooldown: str = Field(default="7d", description="At most one drift retrain per this span")

    @field_validator("window")
    @classmethod
    def _window(cls, value: int | str) -> int | str:
        try:
            parse_window(value)
        except ConfigError as exc:
            raise ValueError(f"{exc.message}; {exc.hint}") from None
        return value

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str) -> str:
        _span(value)
        return value

    @field_validator("reference")
    @classmethod
    def _reference(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.replace("\\", "/").split("/")
        if value.startswith("/") or ".." in parts or not value.strip():
            raise ValueError(
                f"monitoring.reference {value!r} must be a path inside the repository, "
                "e.g. data/train.csv"
            )
        return value

    def window_size(self) -> WindowSize:
        return parse_window(self.window)

    def cooldown_span(self) -> dt.timedelta:
        return _span(self.cooldown)

    def settings(self) -> dict[str, Any]:
        """What is stored with a registered version (``store.monitoring``)."""
        return self.model_dump(mode="json")


def _span(value: str) -> dt.timedelta:
    span = parse_span(value)
    if span is None:
        raise ValueError(f"{value!r} is not a span of time: write 30m, 12h, 7d or 2w")
    return span
