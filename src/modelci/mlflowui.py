"""``modelci mlflow-ui``: MLflow's UI on the store modelci delivers into, while it runs.

A plain ``mlflow ui`` on modelci's store fails whenever no modelci process
runs, because the embedded PostgreSQL is started and stopped by modelci. This
starts the database (or uses ``MODELCI_DATABASE_URL``), runs MLflow's UI on
the same tracking store and artifact root a delivery uses, and on Ctrl+C or
SIGTERM stops the UI, then the database.

Part of the edge, with ``cli.py``: it runs a server process for the user.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from types import FrameType

from modelci.errors import ConfigError, StoreError
from modelci.settings import Settings

__all__ = ["run_mlflow_ui"]

_STOP_TIMEOUT_S = 10.0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop(process: subprocess.Popen[bytes]) -> None:
    """The UI and every worker it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(_STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def run_mlflow_ui(settings: Settings, *, host: str, port: int, say: Callable[[str], None]) -> int:
    """Serve MLflow's UI until it exits or is interrupted; its exit status (0 when stopped)."""
    remote = settings.mlflow_tracking_uri
    if remote and remote.startswith(("http://", "https://")):
        raise ConfigError(
            f"MODELCI_MLFLOW_TRACKING_URI is the MLflow server {remote}, which serves its own UI",
            hint=f"open {remote} in a browser",
        )
    from modelci.deliver.tracking import Registry
    from modelci.store.db import open_database

    say("starting the database" if settings.database_url is None else "opening the database")
    database = open_database(settings)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        registry = Registry.from_settings(settings, database.url)
        try:
            # Its own session: Ctrl+C reaches modelci, which stops the whole UI in order.
            process = subprocess.Popen(
                registry.ui_argv(host=host, port=port),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise StoreError(
                f"cannot start MLflow's UI: {exc.strerror}",
                hint="reinstall modelci (pip install modelci), which installs mlflow",
            ) from None
        say(f"MLflow UI on http://{host}:{port} (Ctrl+C stops it and the database)")
        try:
            return process.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            _stop(process)
    finally:
        signal.signal(signal.SIGTERM, previous)
        database.close()
