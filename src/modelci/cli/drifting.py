"""``modelci drift REFERENCE CURRENT``: Evidently's drift verdicts on two data files.

Exit codes: 0 the dataset does not drift, 1 it drifts (a verdict, as evaluate's
1 is a regression), 2 an error (a file unreadable, a column missing, a bad
override), with a message saying what to fix.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from modelci.cli.base import cli, guarded, json_or_table_option, wide_console
from modelci.errors import EXIT_OK, EXIT_REGRESSION, ConfigError

if TYPE_CHECKING:
    from modelci.monitor import DriftReport, DriftSettings

EXIT_DRIFT = EXIT_REGRESSION


@cli.command("drift")
@click.argument("reference", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("current", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the HTML report (self-contained, plots inline) to this file.",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="NAME",
    help="Test only this column (repeat for more); default: every column of REFERENCE.",
)
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A YAML file with modelci.yaml's monitoring section (drift_share, columns: "
    "NAME: {test, threshold, kind, skip}).",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=20_000_000,
    show_default=True,
    help="Refuse a file with more rows.",
)
@json_or_table_option
@guarded
def drift_command(
    reference: Path,
    current: Path,
    report_path: Path | None,
    columns: tuple[str, ...],
    settings_path: Path | None,
    max_rows: int,
    fmt: str,
) -> None:
    """Test CURRENT against REFERENCE (CSV with a header row, or Parquet), column by column.

    Tests and thresholds are Evidently's defaults: up to 1,000 reference rows,
    Kolmogorov-Smirnov (numbers), chi-squared (categories), Z-test (two values)
    at p < 0.05; above, normed Wasserstein (numbers) and Jensen-Shannon
    (categories) from 0.1. The dataset drifts when half the columns do.
    Exit code 1 when it drifts.

    \b
    Examples:
      modelci drift train.parquet new.parquet
      modelci drift train.csv new.csv --report drift.html
      modelci drift train.csv new.csv --column age --column city --format json
    """
    from modelci.monitor import TableCaps, drift, profile_table, read_table, render_html

    settings = _settings(settings_path)
    caps = TableCaps(max_rows=max_rows)
    profile = profile_table(
        read_table(reference, caps=caps), columns=list(columns) or None, overrides=settings
    )
    report = drift(
        profile,
        read_table(current, caps=caps),
        overrides=settings,
        label=f"{reference.name} → {current.name}",
    )
    if report_path is not None:
        report_path.write_text(render_html(report), encoding="utf-8")
    if fmt == "json":
        click.echo(json.dumps(_brief_json(report.as_json()), indent=2))
    else:
        _print_table(report, report_path)
    sys.exit(EXIT_DRIFT if report.dataset_drifted else EXIT_OK)


def _brief_json(data: dict[str, object]) -> dict[str, object]:
    """The JSON without the plot data (the HTML report has the plots)."""
    columns = data["columns"]
    assert isinstance(columns, list)
    data["columns"] = [{k: v for k, v in col.items() if k != "distribution"} for col in columns]
    return data


def _settings(path: Path | None) -> DriftSettings:
    import yaml
    from pydantic import ValidationError

    from modelci.monitor import DriftSettings

    if path is None:
        return DriftSettings()
    from modelci import safeyaml

    try:
        raw = safeyaml.load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{path} is not YAML: {str(exc).splitlines()[0]}", hint="fix the file's syntax"
        ) from None
    if isinstance(raw, dict) and "monitoring" in raw:
        raw = raw["monitoring"]
    try:
        return DriftSettings.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"{path}: monitoring.{where}: {first['msg']}",
            hint="columns: NAME: {test: ks|chisquare|z|wasserstein|jensenshannon, "
            "threshold: NUMBER > 0, kind: numeric|categorical, skip: true}",
        ) from None


def _print_table(report: DriftReport, report_path: Path | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = wide_console()
    table = Table(title=escape(report.label), title_justify="left")
    for name, justify in (
        ("column", "left"),
        ("kind", "left"),
        ("test", "left"),
        ("score", "right"),
        ("threshold", "right"),
        ("verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for col in report.columns:
        bound = f" ±{col.error_bound:.1e}" if col.error_bound else ""
        table.add_row(
            escape(col.name),
            col.kind,
            col.test,
            f"{col.score:.4g}{bound}",
            f"{col.threshold:g}",
            "[bold red]drift[/]" if col.drifted else "[green]ok[/]",
        )
    console.print(table)
    for skipped in report.skipped:
        console.print(
            f"[dim]not tested: {escape(skipped.name)} ({escape(skipped.reason)})[/]",
            highlight=False,
        )
    drifted = len(report.drifted_columns)
    verdict = (
        "[bold red]the dataset drifts[/]"
        if report.dataset_drifted
        else "[green]no dataset drift[/]"
    )
    console.print(
        f"{verdict}: {drifted} of {len(report.columns)} columns drifted "
        f"({report.share_drifted:.0%}, drifts from {report.drift_share:.0%})",
        highlight=False,
    )
    if report_path is not None:
        console.print(f"report: {escape(str(report_path))}", highlight=False)
