"""Deprecated location of the serving errors; they live in :mod:`modelci.errors`."""

from __future__ import annotations

from modelci.errors import (
    BadRequest,
    ModelNotFound,
    ModelUnavailable,
    PredictionFailed,
    WorkerFailed,
)

__all__ = ["BadRequest", "ModelNotFound", "ModelUnavailable", "PredictionFailed", "WorkerFailed"]
