"""A finished run's outputs, stored for reuse by later evaluations of the same base.

Each file is written atomically (``write_file_atomically``) before the run is
marked finished, so a run the store calls reusable has whole files. Files can
still go bad afterwards (a full disk in an older version, someone cleaning the
data dir by hand): reading one back checks it, and anything unreadable is an
``OutputError`` the evaluator turns into a cache miss, never a crash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from modelci.errors import OutputError
from modelci.runner.outputs import write_file_atomically

if TYPE_CHECKING:  # numpy loads only when predictions are used
    from modelci.evaluate.compare import Predictions

__all__ = ["StoredOutputs", "load_outputs", "save_outputs"]

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.json"
SCORED_FILE = "scored-predictions.json"  # the rows modelci scored the model on (scoring:)
_MAX_BYTES = 400_000_000  # predictions of 5,000,000 rows, as JSON
# Said of an unreadable stored result: the evaluator's answer to it is automatic.
_RETRAIN = "nothing to do: modelci trains the commit again and stores a new result"


class StoredOutputs(NamedTuple):
    metrics: dict[str, float]
    predictions: Predictions | None  # the repository's own
    scored: Predictions | None = None  # modelci's, on the rows it scored


def save_outputs(
    directory: Path,
    metrics: dict[str, float],
    predictions: Predictions | None,
    scored: Predictions | None = None,
) -> None:
    """Store a run's metrics (NaN kept as JSON's NaN) and predictions in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_file_atomically(directory / METRICS_FILE, json.dumps(metrics).encode())
    for name, rows in ((PREDICTIONS_FILE, predictions), (SCORED_FILE, scored)):
        if rows is not None:
            write_file_atomically(directory / name, json.dumps(rows.to_json()).encode())


def _read_json(path: Path) -> Any:
    hint = _RETRAIN
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise OutputError(f"{path.name} is larger than {_MAX_BYTES:,} bytes", hint=hint)
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise OutputError(f"{path.name} is gone", hint=hint) from None
    except OSError as exc:
        raise OutputError(f"{path.name} cannot be read: {exc.strerror}", hint=hint) from None
    except (UnicodeDecodeError, RecursionError):
        raise OutputError(f"{path.name} is not readable JSON", hint=hint) from None
    except json.JSONDecodeError as exc:
        what = "is empty" if not exc.doc.strip() else f"is not valid JSON ({exc.msg})"
        raise OutputError(f"{path.name} {what}", hint=hint) from None


def load_outputs(directory: Path) -> StoredOutputs:
    """The metrics and predictions ``save_outputs`` stored; OutputError if unusable."""
    raw = _read_json(directory / METRICS_FILE)
    if not isinstance(raw, dict) or not raw:
        raise OutputError(f"{METRICS_FILE} holds no metrics", hint=_RETRAIN)
    metrics: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OutputError(f"{METRICS_FILE}: {name} is not a number", hint=_RETRAIN)
        metrics[str(name)] = float(value)
    return StoredOutputs(
        metrics, _predictions(directory, PREDICTIONS_FILE), _predictions(directory, SCORED_FILE)
    )


def _predictions(directory: Path, name: str) -> Predictions | None:
    path = directory / name
    if not path.exists():
        return None
    from modelci.evaluate.compare import predictions_from_json

    try:
        return predictions_from_json(_read_json(path), source=name)
    except OutputError as exc:
        raise OutputError(exc.message, hint=_RETRAIN) from None
