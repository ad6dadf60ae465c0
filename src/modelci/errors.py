"""Errors that modelci reports to a person.

Every error says what went wrong and how to fix it. Each carries the exit code
the CLI uses and the HTTP status the API uses, so the core raises these and
only the edges (``cli``, the web layer) turn them into codes::

    ModelCIError                     exit 2   something stopped the job
    ├── ConfigError                  exit 2   modelci.yaml or settings are wrong
    ├── CheckoutError                exit 2   git could not provide the commit
    ├── EnvironmentBuildError        exit 2   uv could not build the environment
    ├── SandboxUnavailable           exit 2   bubblewrap missing or unusable
    ├── StoreError                   exit 2   the database could not be reached/used
    ├── RunFailed                    exit 2   repository code failed (crash, timeout, OOM)
    │   └── DataFetchError           exit 2   a commit's DVC data could not be fetched
    ├── OutputError                  exit 2   a metrics/predictions file is unusable
    ├── NeedsGpuWorker               exit 2   the commit asks for a GPU this worker does not serve
    ├── DatasetError                 exit 2   a scoring dataset is missing, unreadable or does not
    │                                          fit the model's signature
    ├── Unauthorized                 401      an API request without a valid bearer token
    │   serving (HTTP statuses):
    ├── BadRequest                   422      a predict body does not match the signature
    ├── ModelNotFound                404      no served model has that name
    ├── ModelUnavailable             503      no loaded version can answer right now
    ├── PredictionFailed             422      the model's own code raised on the input
    └── WorkerFailed                 503      a model worker did not start, or died

A gated metric that regressed is not an error: ``evaluate`` returns it as a
verdict and the CLI exits 1 (``EXIT_REGRESSION``).
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_ERROR = 2


class ModelCIError(Exception):
    """Base of all errors modelci reports; ``str()`` gives cause and fix."""

    exit_code: int = EXIT_ERROR
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\nHow to fix: {self.hint}"
        return self.message

    @property
    def public(self) -> str:
        """The text for places off this machine (a pull request): all of it, unless a
        subclass holds details that only make sense here."""
        return str(self)


class ConfigError(ModelCIError):
    """The repository's ``modelci.yaml``, a CLI option or a setting is invalid."""

    http_status = 422


class CheckoutError(ModelCIError):
    """The repository or one of its commits could not be fetched."""

    http_status = 422


class EnvironmentBuildError(ModelCIError):
    """The commit's Python environment could not be built."""

    http_status = 422


class SandboxUnavailable(ModelCIError):
    """The sandbox cannot run on this machine."""

    http_status = 503


class StoreError(ModelCIError):
    """The database could not be started, reached or migrated."""

    http_status = 503


class RunFailed(ModelCIError):
    """Repository code ran in the sandbox and failed.

    ``log_tail`` is the end of the run's log (the cause, in the code's own words)
    and ``log_path`` the whole log on this machine: ``str()`` shows both, for the
    person at the terminal. ``public`` leaves both out: a pull request shows the
    tail by itself, fenced, and links to the log through the server's API.
    """

    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        log_tail: str = "",
        log_path: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.log_tail = log_tail
        self.log_path = log_path

    def __str__(self) -> str:
        parts = [self.message]
        if self.log_tail:
            lines = self.log_tail.count("\n") + 1
            tail = "\n".join(f"  | {line}" for line in self.log_tail.split("\n"))
            parts.append(f"The last {lines} lines of its log:\n{tail}")
        elif self.log_path:
            parts.append("Its log is empty: the commands printed nothing.")
        if self.hint:
            parts.append(f"How to fix: {self.hint}")
        if self.log_path:
            parts.append(f"The whole log: {self.log_path}")
        return "\n".join(parts)

    @property
    def public(self) -> str:
        return super().__str__()


class DataFetchError(RunFailed):
    """A commit's DVC data could not be fetched: a remote the server does not allow or
    holds no credentials for (refused before any request), or a fetch that failed
    (with the end of its log)."""


class OutputError(ModelCIError):
    """A file the repository's code wrote cannot be used as output."""

    http_status = 422


class DatasetError(ModelCIError):
    """A scoring dataset is missing or unreadable, or its columns do not fit the model."""

    http_status = 422


class NeedsGpuWorker(ModelCIError):
    """The commit's ``limits.gpu`` asks for a GPU and this job was not taken from the
    ``gpu`` queue: the server moves the job there instead of reporting a failure."""


class Unauthorized(ModelCIError):
    """An API request carries no bearer token, or one that is unknown or revoked."""

    http_status = 401


class BadRequest(ModelCIError):
    """A predict request's body is not JSON, or its inputs do not match the model's columns.

    ``errors`` lists each problem FastAPI-style (``loc``, ``msg``, ``type``), so a
    client sees every field that was wrong at once.
    """

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
