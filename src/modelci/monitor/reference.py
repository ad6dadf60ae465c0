"""The reference a registered version is watched against, profiled once at registration.

The rows: ``monitoring.reference`` (a CSV or Parquet file of the commit, or
DVC-tracked), else the ``scoring`` dataset modelci scored the version on. Only
the model's input columns are profiled (not the target, not extra columns), and
with the scoring dataset also the version's own predictions on those rows, as
the column ``prediction``: served outputs are then tested like inputs
(prediction drift). The file is parsed as data by pyarrow, within caps, never by
repository code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelci.errors import DatasetError, ModelCIError
from modelci.monitor.config import MonitoringConfig
from modelci.monitor.windows import PREDICTION_COLUMN

if TYPE_CHECKING:
    from modelci.scoring.plan import CommitFile, ScoringPlan

__all__ = ["Reference", "profile_reference", "save_reference"]

MAX_REFERENCE_BYTES = 2 << 30
MAX_REFERENCE_ROWS = 5_000_000


@dataclass(frozen=True)
class Reference:
    profile: bytes
    rows: int
    source: str  # the file, in words: "data/train.csv at 1a2b3c4"
    columns: tuple[str, ...]


def profile_reference(
    path: Path,
    *,
    label: str,
    input_columns: Sequence[str],
    config: MonitoringConfig,
    predictions: Sequence[Any] | None = None,
) -> Reference:
    """The profile of the model's input columns in ``path`` (and of ``predictions``, one
    per leading row, when given)."""
    from modelci.monitor.profile import profile_table
    from modelci.monitor.tables import TableCaps, as_table, read_table

    table = read_table(path, caps=TableCaps(MAX_REFERENCE_BYTES, MAX_REFERENCE_ROWS), name=label)
    present = [name for name in input_columns if name in table.column_names]
    if not present:
        raise DatasetError(
            f"{label} has none of the model's input columns ({', '.join(input_columns)})",
            hint="point monitoring.reference at the data the model was trained on",
        )
    table = table.select(present)
    if predictions is not None and 0 < len(predictions) <= table.num_rows:
        # The scored rows are the file's first ones (scoring.max_rows may stop early).
        table = table.slice(0, len(predictions))
        columns = {name: table.column(name) for name in table.column_names}
        table = as_table({**columns, PREDICTION_COLUMN: _listed(predictions)})
    profile = profile_table(table, overrides=config)
    return Reference(profile.to_bytes(), table.num_rows, label, tuple(table.column_names))


def _listed(values: Sequence[Any]) -> list[Any]:
    """numpy scalars as Python ones (pyarrow takes those in a list)."""
    tolist = getattr(values, "tolist", None)
    return list(tolist() if callable(tolist) else values)


def save_reference(
    *,
    database: Any,
    name: str,
    version: int,
    config: MonitoringConfig,
    model_dir: Path,
    scoring: ScoringPlan | None,
    scored: Any,
    open_file: Callable[[str], AbstractContextManager[CommitFile]],
) -> str:
    """Profile a newly registered version's reference and store it with the version's
    monitoring settings; what was done, in words. Never raises for the data's faults:
    a version whose reference cannot be read is served all the same, unwatched."""
    from modelci.deliver.modelspec import ServingSpec
    from modelci.store import monitoring as store

    if not config.enabled:
        return "monitoring is off (monitoring.enabled: false)"
    try:
        inputs = [column.name for column in ServingSpec.read(model_dir).columns]
        with ExitStack() as stack:
            predictions = None
            if config.reference is not None:
                found = stack.enter_context(open_file(config.reference))
                path, label = found.path, found.label
            elif scoring is not None:
                path, label = scoring.dataset, scoring.label
                predictions = getattr(scored, "y_pred", None)
            else:
                return (
                    "not watched for drift: no reference data (set monitoring.reference "
                    "or a scoring: section)"
                )
            reference = profile_reference(
                path, label=label, input_columns=inputs, config=config, predictions=predictions
            )
    except ModelCIError as exc:
        return f"not watched for drift: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
    with database.session() as session:
        store.save_profile(
            session,
            model_name=name,
            version=version,
            source=reference.source,
            rows=reference.rows,
            profile=reference.profile,
            settings=config.settings(),
        )
    return f"drift reference: {reference.rows} rows of {reference.source}"
