"""Delivered models: ``deliver``, ``models list|show|promote|rollback``, ``predictions``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from modelci.cli.base import (
    VersionNumber,
    actor_name,
    cli,
    current_settings,
    escape,
    fail,
    guarded,
    json_or_table_option,
    make_console,
    quiet_option,
    unsafe_option,
    wide_console,
)
from modelci.errors import EXIT_OK


@cli.command()
@click.argument("repo")
@click.option("--ref", default="HEAD", show_default=True, help="Commit, branch or tag to deliver.")
@click.option("--actor", help="Who is delivering (default: $USER).")
@json_or_table_option
@unsafe_option
@quiet_option
@guarded
def deliver(repo: str, ref: str, actor: str | None, fmt: str, unsafe: bool, quiet: bool) -> None:
    """Train REPO at --ref, register it in MLflow, and promote it if it passes the gates.

    A commit already registered with the same environment and modelci.yaml is
    not trained again: its version is reused, and the output says so.

    \b
    Examples:
      modelci deliver . --ref main
      modelci deliver https://example.com/org/model.git --ref 3f2a9c1 --actor ci --format json

    \b
    Exit codes:
      0  the delivered version is the champion
      1  registered (or reused) but not the champion: refused by the gates
      2  an error (the message says what went wrong and what to do)
    """
    from modelci.deliver.delivery import deliverer_for
    from modelci.progress import progress_reporter

    settings = current_settings()
    with (
        progress_reporter(quiet=quiet) as reporter,
        deliverer_for(settings, unsafe=unsafe, reporter=reporter) as deliverer,
    ):
        result = deliverer.deliver(repo, ref, actor=actor_name(actor))
    if result.error is not None:
        fail(result.error)
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
        sys.exit(result.exit_code)
    console = wide_console()
    color = "green" if result.is_champion else "yellow"
    console.print(f"[bold {color}]{escape(result.title)}[/]", highlight=False)
    if result.decision is not None:
        for line in result.decision.reasons:
            console.print(f"  [red]✗[/] {escape(line)}", highlight=False)
        for line in result.decision.checks:
            console.print(f"  [green]✓[/] {escape(line)}", highlight=False)
    console.print(f"[dim]commit {result.sha}  MLflow run {result.run_id}[/]", highlight=False)
    sys.exit(result.exit_code)


@cli.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """Registered models: versions, the champion, promotion and rollback.

    \b
    Examples:
      modelci models list
      modelci models show churn-classifier --format json
      modelci models promote churn-classifier v3 --reason "validated by hand"
      modelci models rollback churn-classifier --reason "bad predictions in production"
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_OK)


def _models_deliverer() -> Any:
    from modelci.deliver.delivery import deliverer_for

    return deliverer_for(current_settings())


def _data_text(version: dict[str, str] | None) -> str:
    """A version's data in a cell: each DVC output's md5, shortened."""
    if version is None:
        return "?"  # delivered before data versions were recorded
    if not version:
        return "-"  # no DVC data
    return ", ".join(f"{path}@{md5[:8]}" for path, md5 in version.items())


def _metrics_text(metrics: dict[str, float], limit: int) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:limit])


@models.command("list")
@json_or_table_option
@guarded
def models_list(fmt: str) -> None:
    """Every registered model with its champion.

    \b
    Examples:
      modelci models list
      modelci models list --format json
    """
    from rich.table import Table

    settings = current_settings()
    with _models_deliverer() as deliverer:
        registry = deliverer.registry
        rows = []
        for name in registry.model_names():
            versions = registry.list_versions(name)
            champion = next((v for v in versions if "champion" in v.aliases), None)
            rows.append((name, versions, champion))
    from modelci.demo import modelci_command

    ui = modelci_command(settings, "mlflow-ui")
    if fmt == "json":
        payload = {
            "models": [
                {
                    "name": name,
                    "champion": champion.version if champion else None,
                    "versions": len(versions),
                    "sha": champion.sha if champion else None,
                    "metrics": champion.metrics if champion else {},
                }
                for name, versions, champion in rows
            ],
            "mlflow_ui": ui,
        }
        click.echo(json.dumps(payload, indent=2, allow_nan=False))
        return
    table = Table()
    table.add_column("model", no_wrap=True)  # a name is never cut, however narrow
    for column in ("champion", "versions", "commit"):
        table.add_column(column)
    table.add_column("metrics", overflow="fold")
    for name, versions, champion in rows:
        table.add_row(
            name,
            f"v{champion.version}" if champion else "-",
            str(len(versions)),
            (champion.sha or "")[:7] if champion else "",
            _metrics_text(champion.metrics if champion else {}, 4),
        )
    console = wide_console()
    console.print(table)
    console.print(f"[dim]MLflow UI:[/] {escape(ui)}", highlight=False, soft_wrap=True)


@models.command("show")
@click.argument("name")
@json_or_table_option
@guarded
def models_show(name: str, fmt: str) -> None:
    """Versions, champion, metrics, commits and the event history of NAME.

    \b
    Examples:
      modelci models show churn-classifier
      modelci models show churn-classifier --format json
    """
    from rich.table import Table

    with _models_deliverer() as deliverer:
        deliverer.check_model(name)
        versions = deliverer.registry.list_versions(name)
        events = deliverer.events(name)
    if fmt == "json":
        payload = {
            "name": name,
            "champion": next((v.version for v in versions if "champion" in v.aliases), None),
            "versions": [
                {
                    "version": v.version,
                    "champion": "champion" in v.aliases,
                    "sha": v.sha,
                    "trained_at": v.trained_at.isoformat() if v.trained_at else None,
                    "metrics": v.metrics,
                    "run_id": v.run_id,
                    "trigger": v.trigger,
                    "data_version": v.data_version,
                }
                for v in reversed(versions)
            ],
            "history": [{**e, "at": e["at"].isoformat() if e["at"] else None} for e in events],
        }
        click.echo(json.dumps(payload, indent=2, allow_nan=False, default=str))
        return
    table = Table("version", "", "commit", "trained", "trigger", "data", title=name)
    table.add_column("metrics", overflow="fold")
    for v in reversed(versions):
        table.add_row(
            str(v.version),
            "champion" if "champion" in v.aliases else "",
            (v.sha or "")[:7],
            v.trained_at.strftime("%Y-%m-%d %H:%M") if v.trained_at else "",
            v.trigger,
            _data_text(v.data_version),
            _metrics_text(v.metrics, 6),
        )
    history = Table("when", title="history")
    history.add_column("what", overflow="fold")
    for e in events:
        history.add_row(e["at"].strftime("%Y-%m-%d %H:%M") if e["at"] else "", e["description"])
    console = wide_console()
    console.print(table)
    console.print(history)


@models.command("promote")
@click.argument("name")
@click.argument("version", type=VersionNumber())
@click.option("--reason", required=True, help="Why, for the history.")
@click.option("--actor", help="Who (default: $USER).")
@guarded
def models_promote(name: str, version: int, reason: str, actor: str | None) -> None:
    """Make VERSION (2 or v2) of NAME the champion by hand, whatever the gates say.

    \b
    Examples:
      modelci models promote churn-classifier v3 --reason "validated on last week's data"
      modelci models promote churn-classifier 3 --reason "..." --actor alice
    """
    with _models_deliverer() as deliverer:
        deliverer.check_model(name)
        chosen = deliverer.promote(name, version, actor=actor_name(actor), reason=reason)
    wide_console().print(
        f"[green]{escape(name)} v{chosen.version} is the champion[/]", highlight=False
    )


@models.command("rollback")
@click.argument("name")
@click.option("--reason", required=True, help="Why, for the history.")
@click.option("--actor", help="Who (default: $USER).")
@guarded
def models_rollback(name: str, reason: str, actor: str | None) -> None:
    """Undo NAME's last champion change: the champion it replaced is champion again.

    A second rollback undoes the change before that one, down to the first
    champion.

    \b
    Examples:
      modelci models rollback churn-classifier --reason "bad predictions in production"
    """
    with _models_deliverer() as deliverer:
        deliverer.check_model(name)
        chosen = deliverer.rollback(name, actor=actor_name(actor), reason=reason)
    wide_console().print(
        f"[green]{escape(name)} rolled back: v{chosen.version} is the champion[/]", highlight=False
    )


@cli.command()
@click.argument("name")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=20, show_default=True, help="At most."
)
@click.option("--since", help="Only newer ones: a duration ago (30m, 12h, 7d) or an ISO time.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table, or one JSON document (a list, newest first).",
)
@guarded
def predictions(name: str, limit: int, since: str | None, fmt: str) -> None:
    """The predictions served for model NAME, newest first (from the prediction log).

    \b
    Examples:
      modelci predictions threshold                  # the last 20
      modelci predictions threshold --since 2h --limit 500
      modelci predictions threshold --since 2026-11-01T00:00 --format json
    """
    from rich.table import Table

    from modelci.serving.predictions import parse_since, prediction_json
    from modelci.store import records as store
    from modelci.store.db import open_database

    after = parse_since(since) if since else None
    database = open_database(current_settings())
    try:
        with database.session() as session:
            found = [
                prediction_json(row)
                for row in store.list_predictions(
                    session, model_name=name, limit=limit, since=after
                )
            ]
    finally:
        database.close()
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    table = Table("time", "version", "rows", "latency", "inputs", "outputs", title=name)
    for row in found:
        inputs = row["inputs"] if isinstance(row["inputs"], dict) else {}
        rows = len(row["outputs"]) if isinstance(row["outputs"], list) else 0
        table.add_row(
            row["created_at"][:19],
            str(row["version"]),
            str(rows),
            f"{row['latency_ms']:.1f} ms" if row["latency_ms"] is not None else "",
            escape(", ".join(f"{k}={v[:3]}" for k, v in list(inputs.items())[:4])[:80]),
            escape(json.dumps(row["outputs"][:5] if rows else row["outputs"])[:60]),
        )
    console = make_console()
    console.print(table)
    if not found:
        console.print(f"[dim]no logged predictions for {escape(name)}[/]", highlight=False)
