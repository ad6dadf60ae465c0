"""Server-side settings, read from ``MODELCI_*`` environment variables.

Built by :func:`get_settings` when a command starts, never at import time, so
tests and commands can build their own.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    max_parallel_runs: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))
    env_resolution_ttl_s: int = Field(
        default=24 * 3600,
        description="How long a requirements file's resolution is reused before uv resolves "
        "it again (unpinned requirements pick up new releases after this).",
    )

    @property
    def mirrors_dir(self) -> Path:
        return self.data_dir / "mirrors"

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
    def postgres_dir(self) -> Path:
        return self.data_dir / "postgres"


def get_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
