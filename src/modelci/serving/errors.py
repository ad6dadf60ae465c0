"""Errors of the serving layer, in modelci's hierarchy (each carries its HTTP status)."""

from __future__ import annotations

from typing import Any

from modelci.errors import ModelCIError

__all__ = ["BadRequest", "ModelNotFound", "ModelUnavailable", "PredictionFailed", "WorkerFailed"]


class BadRequest(ModelCIError):
    """The request body is not JSON, or its inputs do not match the model's columns."""

    http_status = 422

    def __init__(
        self, message: str, *, errors: list[dict[str, Any]] | None = None, status: int = 422
    ) -> None:
        super().__init__(message)
        self.errors = errors or [{"loc": ["body"], "msg": message, "type": "value_error"}]
        self.http_status = status


class ModelNotFound(ModelCIError):
    """No served model has that name."""

    http_status = 404


class ModelUnavailable(ModelCIError):
    """The model is known but has no loaded version that can answer right now."""

    http_status = 503


class PredictionFailed(ModelCIError):
    """The model's own code raised on a valid input."""

    http_status = 422


class WorkerFailed(ModelCIError):
    """A model worker did not start, answered garbage, timed out or died."""

    http_status = 503
