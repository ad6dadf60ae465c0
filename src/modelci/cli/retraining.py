"""Continuous training: ``modelci retrain REPO`` and ``modelci retrain --history REPO``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from modelci.cli.base import (
    actor_name,
    cli,
    current_settings,
    escape,
    fail,
    guarded,
    json_or_table_option,
    quiet_option,
    unsafe_option,
    wide_console,
)

if TYPE_CHECKING:
    from modelci.retrain.result import RetrainResult
    from modelci.store.retrains import RetrainRecord

_COLORS = {
    "promoted": "green",
    "kept": "yellow",
    "skipped": "cyan",
    "failed": "red",
    "proposed": "blue",
}


@cli.command()
@click.argument("repo")
@click.option("--ref", default="main", show_default=True, help="Branch, tag or commit to retrain.")
@click.option("--history", is_flag=True, help="List REPO's retrains instead of running one.")
@click.option("--limit", default=20, show_default=True, help="How many retrains --history lists.")
@click.option("--actor", help="Who asks for the retrain (default: $USER).")
@click.option(
    "--promote",
    "force_promote",
    is_flag=True,
    help="Train and promote even when modelci.yaml says retrain.mode: pull-request "
    "(proposing a pull request needs the server's GitHub App).",
)
@json_or_table_option
@unsafe_option
@quiet_option
@guarded
def retrain(
    repo: str,
    ref: str,
    history: bool,
    limit: int,
    actor: str | None,
    force_promote: bool,
    fmt: str,
    unsafe: bool,
    quiet: bool,
) -> None:
    """Retrain REPO at --ref and promote it if it beats the champion on the same rows.

    The commit's DVC data is fetched fresh, it is trained in the sandbox and
    registered; then modelci scores the new version and the current champion on
    the same rows (the scoring: dataset of modelci.yaml), pairs them for the
    bootstrap, and the champion's own gates decide. Nothing changed since the
    champion was trained (same commit, data and environment): skipped, nothing
    trained. Without a scoring: section the new version is registered, not promoted.
    A repository whose modelci.yaml sets retrain.mode: pull-request is retrained
    on the server (which opens the pull request); here it fails with that advice
    unless --promote says to train and promote anyway.

    \b
    Examples:
      modelci retrain . --ref main
      modelci retrain https://github.com/org/churn.git --format json
      modelci retrain . --history
      modelci retrain . --promote    # a pull-request mode repository, trained here
      modelci retrain . --history --format json

    \b
    Exit codes:
      0  promoted, kept (registered, the champion stays) or skipped
      2  an error (the message says what went wrong and what to do)
    """
    if history:
        _show_history(repo, limit, fmt)
        return
    from modelci.deliver.delivery import deliverer_for
    from modelci.progress import progress_reporter
    from modelci.retrain.retrainer import Retrainer

    settings = current_settings()
    with (
        progress_reporter(quiet=quiet) as reporter,
        deliverer_for(settings, unsafe=unsafe, reporter=reporter) as deliverer,
    ):
        result = Retrainer(deliverer=deliverer).retrain(
            repo,
            ref,
            trigger="manual",
            actor=actor_name(actor),
            mode="promote" if force_promote else None,
        )
    if fmt == "json":
        click.echo(json.dumps(result.as_json(), indent=2, allow_nan=False))
        sys.exit(result.exit_code)
    _show_result(result)
    sys.exit(result.exit_code)


def _show_result(result: RetrainResult) -> None:
    from modelci.evaluate.report import render_rich

    if result.error is not None:
        fail(result.error)
    console = wide_console()
    if result.comparison is not None:
        champion = f"champion v{result.champion_version}"
        console.print(
            render_rich(result.comparison, head_label=f"new v{result.version}", base_label=champion)
        )
        console.print(f"[dim]both scored by modelci on {escape(result.scored_on or '')}[/]")
    color = _COLORS[result.decision]
    console.print(f"[bold {color}]{escape(result.title())}[/]", highlight=False)
    mark = "✓" if result.decision == "promoted" else "•"
    for line in result.reasons:
        console.print(f"  {mark} {escape(line)}", highlight=False)
    data = ", ".join(f"{path}={md5[:8]}" for path, md5 in result.data_version.items())
    console.print(
        f"[dim]commit {result.sha}  trigger {result.trigger}  data {data or 'none in DVC'}[/]",
        highlight=False,
    )


def _history_json(record: RetrainRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "trigger": record.trigger,
        "actor": record.actor,
        "ref": record.ref,
        "sha": record.sha,
        "decision": record.decision,
        "reasons": record.reasons or [],
        "model": record.model_name,
        "version": record.version,
        "champion_version": record.champion_version,
        "data_version": record.data_version or {},
        "metrics": record.metrics or {},
        "error": record.error,
    }


def _key_metric(metrics: dict[str, Any]) -> str:
    new, champion = metrics.get("new") or {}, metrics.get("champion") or {}
    if not new:
        return ""
    name = sorted(new)[0]
    text = f"{name} {new[name]:.4g}"
    if name in champion:
        text += f" vs {champion[name]:.4g}"
    return text


def _show_history(repo: str, limit: int, fmt: str) -> None:
    from rich.table import Table

    from modelci.retrain.retrainer import repository_key
    from modelci.store import retrains as store
    from modelci.store.db import open_database

    database = open_database(current_settings())
    try:
        with database.session() as session:
            records = store.list_retrains(session, repository=repository_key(repo), limit=limit)
            rows = [_history_json(record) for record in records]
    finally:
        database.close()
    if fmt == "json":
        click.echo(json.dumps({"repository": repo, "retrains": rows}, indent=2, allow_nan=False))
        return
    table = Table(title=f"retrains of {repo}")
    for column in ("when", "trigger", "commit", "decision", "version", "champion"):
        table.add_column(column, no_wrap=True)
    table.add_column("new vs champion", overflow="fold")
    for row in rows:
        decision = row["decision"]
        table.add_row(
            row["started_at"][:16].replace("T", " "),
            row["trigger"],
            (row["sha"] or "")[:7],
            f"[{_COLORS.get(decision, 'white')}]{decision}[/]",
            f"v{row['version']}" if row["version"] else "-",
            f"v{row['champion_version']}" if row["champion_version"] else "-",
            _key_metric(row["metrics"]),
        )
    console = wide_console()
    if not rows:
        console.print(f"no retrain of {escape(repo)} yet: run modelci retrain {escape(repo)}")
        return
    console.print(table)
