"""Scoring by modelci: ``datasets add|list|remove`` and ``models score``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from modelci.cli.base import (
    VersionNumber,
    cli,
    current_settings,
    guarded,
    json_or_table_option,
    unsafe_option,
    wide_console,
)
from modelci.cli.models import models
from modelci.errors import EXIT_OK


@cli.group(invoke_without_command=True)
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """Datasets the server holds for scoring: a pull request can neither see nor change them.

    A repository names one in modelci.yaml (scoring: dataset: NAME). They live in
    the data dir, never in a training sandbox.

    \b
    Examples:
      modelci datasets add churn-holdout holdout.parquet
      modelci datasets list
      modelci datasets remove churn-holdout
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_OK)


@datasets.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True))
@json_or_table_option
@guarded
def datasets_add(name: str, file: Path, fmt: str) -> None:
    """Keep FILE (CSV with a header row, or Parquet) as dataset NAME, with its checksum.

    \b
    Examples:
      modelci datasets add churn-holdout data/holdout.csv
      modelci datasets add churn-holdout holdout.parquet --format json
    """
    from rich.markup import escape  # rich loads only for these commands' output

    from modelci.scoring.datasets import DatasetStore

    info = DatasetStore(current_settings().datasets_dir).add(name, file)
    if fmt == "json":
        click.echo(json.dumps(info.as_json(), indent=2))
        return
    wide_console().print(
        f"[green]added {escape(info.name)}[/]: {info.rows:,} rows, {len(info.columns)} "
        f"columns, {info.format}, sha256 {info.sha256[:12]}",
        highlight=False,
    )


@datasets.command("list")
@json_or_table_option
@guarded
def datasets_list(fmt: str) -> None:
    """The datasets the server holds: rows, columns, checksum, when added.

    \b
    Examples:
      modelci datasets list
      modelci datasets list --format json
    """
    from rich.table import Table  # rich loads only for these commands' output

    from modelci.scoring.datasets import DatasetStore

    held = DatasetStore(current_settings().datasets_dir).list()
    if fmt == "json":
        click.echo(json.dumps([d.as_json() for d in held], indent=2))
        return
    table = Table("name", "format", "rows", "sha256", "added")
    table.add_column("columns", overflow="fold")
    for d in held:
        table.add_row(
            d.name,
            d.format,
            f"{d.rows:,}",
            d.sha256[:12],
            d.added_at[:16],
            ", ".join(f"{k} ({v})" for k, v in d.columns.items()),
        )
    console = wide_console()
    console.print(table)
    if not held:
        console.print("[dim]no datasets: add one with modelci datasets add NAME FILE[/]")


@datasets.command("remove")
@click.argument("name")
@guarded
def datasets_remove(name: str) -> None:
    """Delete dataset NAME; repositories that score on it fail until it is added again.

    \b
    Examples:
      modelci datasets remove churn-holdout
    """
    from rich.markup import escape  # rich loads only for these commands' output

    from modelci.scoring.datasets import DatasetStore

    info = DatasetStore(current_settings().datasets_dir).remove(name)
    wide_console().print(f"removed {escape(info.name)} ({info.rows:,} rows)", highlight=False)


@models.command("score")
@click.argument("name")
@click.option("--version", "version", type=VersionNumber(), help="Default: the champion.")
@click.option(
    "--dataset",
    required=True,
    help="A dataset the server holds (modelci datasets list), or a CSV/Parquet file.",
)
@click.option("--target", required=True, help="The dataset's label column.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="A metric to compute (repeatable); default: the version's own that modelci knows.",
)
@json_or_table_option
@unsafe_option
@guarded
def models_score(
    name: str,
    version: int | None,
    dataset: str,
    target: str,
    metrics: tuple[str, ...],
    fmt: str,
    unsafe: bool,
) -> None:
    """Score a registered version of NAME on a dataset: modelci runs its predict in the
    sandboxed model worker (feature columns only) and computes the metrics itself.

    \b
    Examples:
      modelci models score churn-classifier --dataset churn-holdout --target churned
      modelci models score churn-classifier --version 3 --dataset fresh.csv \\
          --target churned --metric accuracy --metric f1 --format json
    """
    import uv
    from rich.markup import escape
    from rich.table import Table  # rich loads only for these commands' output

    from modelci.deliver.delivery import deliverer_for
    from modelci.errors import ModelNotFound
    from modelci.runner.environments import EnvironmentManager
    from modelci.scoring.scorer import score_version, scoring_launcher

    settings = current_settings()
    with deliverer_for(settings, unsafe=unsafe) as deliverer:
        deliverer.check_model(name)
        registry = deliverer.registry
        chosen = registry.get_version(name, version) if version else registry.champion(name)
        if chosen is None:
            raise ModelNotFound(
                f"{name} has no champion to score",
                hint=f"name a version: modelci models score {name} --version N ...",
            )
        environments = EnvironmentManager(
            envs_dir=settings.envs_dir,
            python=settings.python,
            uv_bin=uv.find_uv_bin(),
            resolution_ttl_s=settings.env_resolution_ttl_s,
        )
        launcher = scoring_launcher(settings, environments, unsafe=unsafe)
        scored = score_version(
            launcher, chosen, dataset=dataset, target=target, metrics=metrics, settings=settings
        )
    rows = len(scored.predictions.y_true)
    if fmt == "json":
        payload = {
            "model": name,
            "version": chosen.version,
            "sha": chosen.sha,
            "dataset": scored.dataset,
            "rows": rows,
            "scored_by": "modelci",
            "metrics": {k: v if math.isfinite(v) else None for k, v in scored.metrics.items()},
        }
        click.echo(json.dumps(payload, indent=2, allow_nan=False))
        return
    table = Table("metric", "value", "recorded at training", title=f"{name} v{chosen.version}")
    for metric, value in scored.metrics.items():
        recorded = chosen.metrics.get(metric)
        table.add_row(metric, f"{value:.4g}", "" if recorded is None else f"{recorded:.4g}")
    console = wide_console()
    console.print(table)
    console.print(
        f"[dim]scored by modelci on {escape(scored.dataset)} ({rows:,} rows)[/]", highlight=False
    )
