"""Server-side settings, read from ``MODELCI_*`` environment variables.

Built by :func:`get_settings` when a command starts, never at import time, so
tests and commands can build their own.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelci.errors import ConfigError


def default_data_dir() -> Path:
    # As root, repository code runs under other (unprivileged) uids that must be
    # able to reach the environments and work dirs, so the data dir cannot live
    # under /root (mode 0700): use the conventional service location.
    if os.geteuid() == 0:
        return Path("/var/lib/modelci")
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "modelci"


class Settings(BaseSettings):
    """Everything an operator can set. Field names map to ``MODELCI_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="MODELCI_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of an external database; unset starts the embedded "
        "PostgreSQL server in the data dir.",
    )
    # Defaults for repositories without modelci.yaml (the seed tutorial's layout).
    default_command: str | None = None
    default_metrics_file: str | None = None
    python: str = Field(
        default="/usr/bin/python3",
        description="Interpreter that repository environments are built from; it must live "
        "where the sandbox can see it (under /usr by default).",
    )
    sandbox_uid_base: int = 60100
    gpu_devices: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/dev/nvidia*"],
        description="Device nodes (glob patterns: comma-separated, or a JSON list) bound into "
        "the sandbox of a run whose modelci.yaml sets limits.gpu",
    )
    max_parallel_runs: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    env_resolution_ttl_s: int = Field(
        default=24 * 3600,
        description="How long a requirements file's resolution is reused before uv resolves "
        "it again (unpinned requirements pick up new releases after this).",
    )

    # DVC data (modelci.data): what each repository's fetches may use.
    dvc_remotes_file: Path | None = Field(
        default=None,
        description="TOML file of allowed DVC remote URLs, credentials and caps per "
        "repository (README, Data in DVC); unset: <data dir>/dvc-remotes.toml",
    )

    # GitHub (the App, or a plain token for a quick start).
    github_api_url: str = Field(
        default="https://api.github.com",
        description="REST API base URL; https://HOST/api/v3 for GitHub Enterprise Server",
    )
    github_app_id: int | None = Field(
        default=None, description="the App ID shown on the GitHub App's settings page"
    )
    github_private_key_path: Path | None = None
    github_private_key: SecretStr | None = None
    github_webhook_secret: SecretStr | None = None
    github_webhook_secret_path: Path | None = None
    github_token: SecretStr | None = None
    # Signing in to the dashboard with GitHub (the App's OAuth web flow, README "Dashboard").
    github_client_id: str | None = Field(
        default=None,
        description="the GitHub App's client ID (its settings page; not the App ID): turns on "
        "'Sign in with GitHub' on the dashboard",
    )
    github_client_secret: SecretStr | None = None
    github_client_secret_path: Path | None = Field(
        default=None, description="a file holding a client secret generated on the App's page"
    )
    session_secret_path: Path | None = Field(
        default=None,
        description="the key dashboard sessions are signed with; unset: <data dir>/session.key, "
        "made (0600) at first start",
    )
    github_trigger_label: str = Field(
        default="evaluate",
        description="The pull-request label that starts an evaluation (exact, case-sensitive "
        "match of the label's name)",
    )
    github_check_name: str = "modelci"
    github_max_concurrency: int = 4
    github_max_rate_limit_wait_s: float = 900
    public_url: str | None = Field(
        default=None, description="Where this server is reachable, for links to logs"
    )
    poll_repositories: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="owner/name of repositories to watch with --poll: comma-separated, or a "
        "JSON list",
    )
    poll_interval_s: float = 60
    import_check_interval: float = Field(
        default=3600,
        gt=0,
        description="Seconds between checks whether a champion's DVC imports changed at their "
        "source (a change queues a retrain, trigger data)",
    )
    drift_webhook_url: str | None = Field(
        default=None,
        description="Where each drifting window is also POSTed as JSON (besides the GitHub "
        "issue of the model's repository)",
    )
    job_timeout_s: float = 3 * 3600
    repo_concurrency: int = Field(
        default=1, description="Evaluations of one repository that may run at once"
    )
    workers: int = Field(default=2, description="Worker threads `modelci serve` starts")
    predict_auth: Literal["none", "token"] = Field(
        default="none",
        description="Whether the serving routes (predict, model info, form) need a bearer token "
        "like the jobs API: none or token",
    )
    predict_access_log: bool = Field(
        default=False,
        description="Log one access line per serving request (off: at a thousand predictions a "
        "second the log would be nothing else)",
    )
    # Delivery: where trained versions are recorded and registered.
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="An existing MLflow tracking server (http://host:5000); unset keeps MLflow's "
        "store beside modelci's database (<name>_mlflow, or a sibling SQLite file)",
    )

    # Serving (modelci.serving): each champion in its own sandboxed model worker.
    allow_loopback_http: bool = Field(
        default=False,
        description="Let jobs fetch repositories over plain http from this machine "
        "(127.0.0.1, ::1, localhost), for a local GitHub stand-in; never for a real server",
    )
    serving_uid_base: int = Field(
        default=60400,
        description="First uid of the model workers' sandboxes (one uid per running worker; "
        "keep the range clear of sandbox_uid_base's)",
    )
    serving_poll_s: float = Field(default=5.0, description="How often the registry is polled")
    serving_memory_mb: int = 2048
    serving_start_timeout_s: float = 120
    serving_request_timeout_s: float = 30
    serving_max_rows: int = Field(default=10_000, description="Rows per predict request")
    serving_log_queue: int = Field(
        default=10_000,
        description="Predict requests waiting to be logged; beyond it logs are dropped, counted",
    )
    serving_log_queue_mb: float = Field(
        default=64,
        gt=0,
        description="Memory the predictions waiting to be logged may hold (their JSON); beyond "
        "it logs are dropped, counted",
    )
    # Scoring (modelci.scoring): metrics modelci computes itself with the trained model.
    scoring_batch_rows: int = Field(
        default=10_000,
        ge=1,
        description="Rows per batch a scoring dataset is streamed to the model worker in",
    )
    scoring_max_rows: int = Field(
        default=5_000_000,
        ge=1,
        description="Largest scoring dataset, in rows (modelci keeps each row's label and "
        "prediction for the intervals)",
    )
    prediction_retention_days: float = Field(
        default=30,
        ge=0,
        description="Logged predictions older than this are deleted (checked hourly); 0 keeps "
        "them forever",
    )

    @field_validator("poll_repositories", "gpu_devices", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    def read_private_key(self) -> str | None:
        if self.github_private_key is not None:
            return self.github_private_key.get_secret_value()
        if self.github_private_key_path is not None:
            return _read_secret_file(
                self.github_private_key_path, "MODELCI_GITHUB_PRIVATE_KEY_PATH"
            )
        return None

    def read_webhook_secret(self) -> bytes | None:
        if self.github_webhook_secret is not None:
            return self.github_webhook_secret.get_secret_value().encode()
        if self.github_webhook_secret_path is not None:
            path = self.github_webhook_secret_path
            return _read_secret_file(path, "MODELCI_GITHUB_WEBHOOK_SECRET_PATH").strip().encode()
        return None

    def read_client_secret(self) -> str | None:
        if self.github_client_secret is not None:
            return self.github_client_secret.get_secret_value()
        if self.github_client_secret_path is not None:
            path = self.github_client_secret_path
            return _read_secret_file(path, "MODELCI_GITHUB_CLIENT_SECRET_PATH").strip()
        return None

    @property
    def session_key_path(self) -> Path:
        return self.session_secret_path or self.data_dir / "session.key"

    def gpu_device_paths(self) -> tuple[Path, ...]:
        """The device nodes MODELCI_GPU_DEVICES names that exist on this machine."""
        found = set[Path]()
        for pattern in self.gpu_devices:
            found.update(Path(hit) for hit in glob.glob(pattern))
        return tuple(sorted(path for path in found if path.exists()))

    @property
    def mirrors_dir(self) -> Path:
        return self.data_dir / "mirrors"

    @property
    def dvc_remotes_path(self) -> Path:
        return self.dvc_remotes_file or self.data_dir / "dvc-remotes.toml"

    @property
    def dvc_cache_dir(self) -> Path:
        """One DVC cache per repository, shared by its commits; never seen by training."""
        return self.data_dir / "dvc-cache"

    @property
    def envs_dir(self) -> Path:
        return self.data_dir / "envs"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def slots_dir(self) -> Path:
        """Locks of the sandbox slots, machine-wide for this uid range.

        A slot is a uid and a cgroup, which every modelci process on the
        machine shares whatever its data dir: per data dir, two instances (or a
        demo beside a server) would run two jobs as one uid and kill each
        other's processes.
        """
        return machine_lock_dir(f"modelci-slots-{self.sandbox_uid_base}")

    @property
    def serving_slots_dir(self) -> Path:
        """Locks of the model workers' slots, machine-wide for the serving uid range
        (``slots_dir``'s reasons: a demo beside ``modelci serve`` serves too)."""
        return machine_lock_dir(f"modelci-slots-{self.serving_uid_base}")

    def prepare_data_dir(self) -> Path:
        """Create the data dir, traversable (not listable) by others: sandboxed runs
        and the embedded PostgreSQL run as other users and must reach their files."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o711)
        return self.data_dir

    @property
    def datasets_dir(self) -> Path:
        """Server-held scoring datasets (0700): never bound into a sandbox."""
        return self.data_dir / "datasets"

    @property
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"


def machine_lock_dir(name: str) -> Path:
    """A directory of lock files that every modelci process on the machine shares."""
    run_lock = Path("/run/lock")
    base = run_lock if os.access(run_lock, os.W_OK) else Path(tempfile.gettempdir())
    return base / name


def _read_secret_file(path: Path, variable: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path} ({exc.strerror})", hint=f"check {variable} and the file's mode"
        ) from None


# What a value must be, by pydantic's error type: said in the operator's words.
_EXPECTED = {
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "bool_parsing": "true or false",
    "json_invalid": "a JSON list or a comma-separated list",
    "list_type": "a JSON list or a comma-separated list",
    "path_type": "a file path",
}
_SECRET_WORDS = ("secret", "token", "key", "password", "url")


def _explain(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        variable = f"MODELCI_{field.upper()}"
        expected = _EXPECTED.get(err["type"], err["msg"].removeprefix("Value error, ").lower())
        described = (
            Settings.model_fields[field].description if field in Settings.model_fields else None
        )
        what = f" ({described})" if described else ""
        # A secret's value is never echoed; other values help spot a typo.
        shown = "" if any(w in field for w in _SECRET_WORDS) else f" is {err['input']!r}, but it"
        problems.append(f"{variable}{shown} must be {expected}{what}; fix or unset it")
    return "; ".join(problems)


def get_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides on top.

    A bad ``MODELCI_*`` value is a ConfigError naming the variable and what it
    must be, in one line: pydantic's own text names neither the variable nor a fix.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
