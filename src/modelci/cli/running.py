"""Long-running parts and checks: ``serve``, ``worker``, ``doctor``, ``mlflow-ui``."""

from __future__ import annotations

import sys

import click

from modelci.cli.base import (
    cli,
    current_settings,
    escape,
    fail,
    guarded,
    make_console,
    unsafe_option,
    wide_console,
)
from modelci.errors import EXIT_ERROR, EXIT_OK


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--workers",
    type=int,
    help="Worker threads in this process (default MODELCI_WORKERS; 0: receiver and API only, "
    "with `modelci worker` elsewhere).",
)
@click.option(
    "--poll",
    is_flag=True,
    help="Also watch MODELCI_POLL_REPOSITORIES through the API (no public URL needed).",
)
@unsafe_option
@guarded
def serve(host: str, port: int, workers: int | None, poll: bool, unsafe: bool) -> None:
    """Run the webhook receiver, the API and workers in one process.

    \b
    Examples:
      modelci serve
      modelci serve --host 127.0.0.1 --port 8000 --workers 4
      MODELCI_POLL_REPOSITORIES=octo/model modelci serve --poll
    """
    from modelci.service.server import run_server

    settings = current_settings()
    if poll and not settings.poll_repositories:
        fail(
            "--poll needs repositories to watch: set MODELCI_POLL_REPOSITORIES to a JSON "
            "list, e.g. '[\"octo/model\"]'"
        )
    run_server(
        settings,
        host=host,
        port=port,
        unsafe=unsafe,
        workers=settings.workers if workers is None else workers,
        poll=poll,
    )


@cli.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    type=click.Choice(["events", "evaluations", "gpu"]),
    help="Queues to take jobs from (default: events and evaluations). `gpu` takes the "
    "jobs whose commit sets limits.gpu; a GPU machine runs `--queue gpu` alone.",
)
@click.option("--concurrency", type=int, help="Jobs at once (default MODELCI_WORKERS).")
@unsafe_option
@guarded
def worker(queues: tuple[str, ...], concurrency: int | None, unsafe: bool) -> None:
    """Run workers only, against the PostgreSQL in MODELCI_DATABASE_URL.

    \b
    Examples:
      modelci worker
      modelci worker --queue gpu --concurrency 1
    """
    from modelci.service.jobs import QUEUE_EVALUATIONS, QUEUE_EVENTS
    from modelci.service.server import run_workers

    settings = current_settings()
    run_workers(
        settings,
        queues=list(queues) or [QUEUE_EVENTS, QUEUE_EVALUATIONS],
        concurrency=concurrency or settings.workers,
        unsafe=unsafe,
    )


@cli.command()
@click.option("--offline", is_flag=True, help="Do not call the GitHub API.")
@guarded
def doctor(offline: bool) -> None:
    """Check the settings, the App's key and this machine; say what is missing.

    \b
    Examples:
      modelci doctor
      modelci doctor --offline

    \b
    Exit codes:
      0  nothing failed (notes and warnings may be shown)
      2  a check failed; its line says what to fix
    """
    from modelci.doctor import run_checks

    console = wide_console()
    checks = run_checks(current_settings(), online=not offline)
    for check in checks:
        mark = "[yellow]![/]" if check.warning else "[green]✓[/]" if check.ok else "[red]✗[/]"
        if check.note:
            mark = "[blue]-[/]"
        console.print(
            f"{mark} [bold]{check.name}[/]: {escape(check.message)}",
            highlight=False,
            soft_wrap=True,
        )
    sys.exit(EXIT_OK if all(c.ok for c in checks) else EXIT_ERROR)


@cli.command("mlflow-ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, help="Port to listen on.")
@guarded
def mlflow_ui(host: str, port: int) -> None:
    """MLflow's UI on the runs and models modelci registered, until Ctrl+C.

    Starts the embedded database (or uses MODELCI_DATABASE_URL) and runs MLflow's
    UI on the same tracking store and artifacts as modelci; Ctrl+C or SIGTERM
    stops both.

    \b
    Examples:
      modelci mlflow-ui
      modelci --data-dir /srv/modelci mlflow-ui --port 5001
    """
    from modelci.mlflowui import run_mlflow_ui

    say = make_console(stderr=True, soft_wrap=True, highlight=False).print
    sys.exit(run_mlflow_ui(current_settings(), host=host, port=port, say=say))
