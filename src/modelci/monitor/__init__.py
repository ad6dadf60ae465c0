"""Monitoring: drift of served data against the training reference, Evidently's verdicts.

The API the server side uses (and ``modelci drift``)::

    from modelci.monitor import DriftSettings, Profile, drift, profile_table, render_html

    profile = profile_table(reference_table, columns=None, overrides=settings)  # once
    blob = profile.to_bytes()            # kept with the model version (bounded size)
    profile = Profile.from_bytes(blob)
    report = drift(profile, window_table, overrides=settings, label="2024-05-01")
    report.columns                       # ColumnDrift: name, kind, test, score, threshold,
                                         # drifted, error_bound, distribution (plots)
    report.share_drifted, report.dataset_drifted, report.drifted_columns
    report.as_json()                     # DriftReport.from_json(...) reads it back
    render_html(report, history=[("window label", share_drifted), ...])

Tables are pyarrow Tables or pandas DataFrames; ``read_table`` reads a CSV or
Parquet file within size caps. ``DriftSettings`` is the pydantic model that
modelci.yaml's ``monitoring:`` section embeds (drift share, per-column test,
threshold, kind, skip).

Modules: tables (pyarrow: files, kinds, numpy columns), sketch (a numeric
column in bounded size, the Wasserstein distance on it), profile (the
reference profile and its bytes), stattests (scipy: the five tests as
Evidently computes them), verdicts (test choice and verdicts), settings
(overrides), report (the HTML page).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelci.monitor.profile import ColumnProfile, Profile, profile_table
    from modelci.monitor.report import render_html
    from modelci.monitor.settings import ColumnOverride, DriftSettings
    from modelci.monitor.tables import TableCaps, read_table
    from modelci.monitor.verdicts import (
        ColumnDrift,
        Distribution,
        DriftReport,
        SkippedColumn,
        drift,
    )

# Loaded on first use: modelci.yaml's monitoring: section (monitor.config) is read by
# every command, and numpy/scipy/pyarrow must not slow each of them down.
_WHERE = {
    "ColumnDrift": "verdicts",
    "Distribution": "verdicts",
    "DriftReport": "verdicts",
    "SkippedColumn": "verdicts",
    "drift": "verdicts",
    "ColumnProfile": "profile",
    "Profile": "profile",
    "profile_table": "profile",
    "render_html": "report",
    "ColumnOverride": "settings",
    "DriftSettings": "settings",
    "TableCaps": "tables",
    "read_table": "tables",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'modelci.monitor' has no attribute {name!r}")
    return getattr(importlib.import_module(f"modelci.monitor.{module}"), name)


__all__ = [
    "ColumnDrift",
    "ColumnOverride",
    "ColumnProfile",
    "Distribution",
    "DriftReport",
    "DriftSettings",
    "Profile",
    "SkippedColumn",
    "TableCaps",
    "drift",
    "profile_table",
    "read_table",
    "render_html",
]
