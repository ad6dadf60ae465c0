"""Verdicts that hold when training is random: both sources of noise in one interval.

A commit trained with seeds 0..N-1 (``MODELCI_SEED``) gives N models. The
change a reviewer cares about is between what each commit's training gives on
average, not between two particular seeds, so the interval of a metric's
change accounts for two sources of noise:

- **training randomness**: the between-seed spread of each side;
- **the evaluation sample**: which rows happened to be in the evaluation set.

A two-level bootstrap gives it: each resample picks N seeds of each side with
replacement, then rows with replacement (the same rows for every model: paired),
and takes the difference of the two sides' mean metric. The spread of seeds is
widened by sqrt(n / (n - 1)) so that a few seeds do not understate it. The two
parts are also computed alone (seeds with all rows; rows with all seeds) so a
report can say how much each contributes. Without predictions, the seeds alone
give the interval.

A repository is *flaky* when a commit's metric moves between seeds by more
than its gate's tolerance: ``unstable_metrics`` names those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from modelci.errors import OutputError
from modelci.evaluate.bootstrap import (
    Interval,
    PairedData,
    metric_kind,
    metric_value,
    resampled_values,
)
from modelci.evaluate.compare import (
    Comparison,
    MetricComparison,
    MetricRule,
    Predictions,
    _verdict,
    compare,
)
from modelci.evaluate.metrics import default_direction

__all__ = [
    "AUTO_REPEATS",
    "NoiseInterval",
    "SeedRun",
    "UnstableMetric",
    "compare_repeated",
    "differs_beyond_rounding",
    "unstable_metrics",
]

FloatArray = npt.NDArray[np.float64]
# Runs per side once training is found nondeterministic: five seeds per side make
# the between-seed spread usable (eight degrees of freedom for a difference) at
# 2.5x the training time of a single pair; three would leave intervals so wide
# that a one-point accuracy drop on 2,000 rows would often pass as noise.
AUTO_REPEATS = 5
_ROUNDING = 1e-9  # relative: two runs closer than this are the same run
_REPRODUCE_TOLERANCE = 1e-6
_CHUNK_ELEMENTS = 20_000_000


@dataclass(frozen=True)
class SeedRun:
    """One training of a commit: its seed, metrics and (optional) predictions."""

    seed: int
    metrics: Mapping[str, float]
    predictions: Predictions | None = None


@dataclass(frozen=True)
class NoiseInterval(Interval):
    """An interval of the change from repeated trainings, with its two parts."""

    training: float = 0.0  # half-width from the between-seed spread of both sides
    sample: float | None = None  # half-width from the evaluation rows; None: no predictions
    head_runs: int = 1
    base_runs: int = 1


@dataclass(frozen=True)
class UnstableMetric:
    name: str
    role: str  # head or base
    spread: float  # max - min over the commit's seeds
    tolerance: float
    runs: int


def differs_beyond_rounding(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two runs' metrics differ by more than float rounding (nondeterminism)."""
    for name in set(a) | set(b):
        x, y = a.get(name), b.get(name)
        if x is None or y is None:
            return True
        if math.isnan(x) and math.isnan(y):
            continue
        if not math.isclose(x, y, rel_tol=_ROUNDING, abs_tol=1e-12):
            return True
    return False


def _half(values: FloatArray, confidence: float) -> float:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(high - low) / 2.0


def _widened(values: FloatArray) -> FloatArray:
    """Seed values around their mean, spread by sqrt(n / (n-1)) (the bootstrap's bias)."""
    n = len(values)
    if n < 2:
        return values
    mean = values.mean()
    return np.asarray(mean + (values - mean) * math.sqrt(n / (n - 1)), dtype=np.float64)


def _resampled(kind: str, prediction: Predictions, idx: npt.NDArray[np.int64]) -> FloatArray:
    """The metric of one model on every resample of rows (a row of ``idx`` each)."""
    # Every model of both sides sees the same resampled rows: counts from the indices.
    n_resamples = idx.shape[0]
    counts = np.zeros((n_resamples, len(prediction.y_true)), dtype=np.int64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], idx), 1)
    p = prediction
    data = PairedData(p.y_true, p.y_pred, p.y_pred, p.scores, p.scores)
    return resampled_values(kind, data, counts)


def _reproduces(kind: str, run: SeedRun, name: str) -> bool:
    p = run.predictions
    if p is None:
        return False
    data = PairedData(p.y_true, p.y_pred, p.y_pred, p.scores, p.scores)
    try:
        value = metric_value(kind, data, head=True)
    except OutputError:
        return False
    reported = run.metrics[name]
    return abs(value - reported) <= _REPRODUCE_TOLERANCE * max(1.0, abs(reported))


def _row_perturbations(
    name: str,
    head: Sequence[SeedRun],
    base: Sequence[SeedRun],
    n_resamples: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray] | None:
    """Per resample, each model's metric minus its full-sample value, on shared rows."""
    kind = metric_kind(name)
    runs = [*head, *base]
    if kind is None or not all(_reproduces(kind, r, name) for r in runs):
        return None
    first = runs[0].predictions
    assert first is not None
    y = first.y_true
    for run in runs:
        assert run.predictions is not None
        if run.predictions.y_true.shape != y.shape or not np.array_equal(run.predictions.y_true, y):
            return None  # not the same rows: pairing would mislead
    n = len(y)
    if n < 10:
        return None
    chunk = max(1, _CHUNK_ELEMENTS // n)
    parts: list[list[FloatArray]] = [[] for _ in runs]
    remaining = n_resamples
    while remaining > 0:
        size = min(chunk, remaining)
        idx = rng.integers(0, n, size=(size, n))
        for i, run in enumerate(runs):
            assert run.predictions is not None
            parts[i].append(_resampled(kind, run.predictions, idx) - run.metrics[name])
        remaining -= size
    matrix = np.vstack([np.concatenate(p) for p in parts])
    if not np.isfinite(matrix).all():
        return None
    return matrix[: len(head)], matrix[len(head) :]


def two_level_interval(
    name: str,
    head: Sequence[SeedRun],
    base: Sequence[SeedRun],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> NoiseInterval | None:
    """The interval of mean(head) - mean(base) for ``name`` over seeds, then rows."""
    h = np.array([r.metrics[name] for r in head], dtype=np.float64)
    b = np.array([r.metrics[name] for r in base], dtype=np.float64)
    if not (np.isfinite(h).all() and np.isfinite(b).all()):
        return None
    rng = np.random.default_rng(seed)
    rows = _row_perturbations(name, head, base, n_resamples, rng)
    if rows is None and len(h) < 2 and len(b) < 2:
        return None  # one run each and no usable predictions: nothing to measure noise by
    estimate = float(h.mean() - b.mean())
    hw, bw = _widened(h), _widened(b)
    pick_h = rng.integers(0, len(h), size=(n_resamples, len(h)))
    pick_b = rng.integers(0, len(b), size=(n_resamples, len(b)))
    seeds_only = hw[pick_h].mean(axis=1) - bw[pick_b].mean(axis=1)
    training = _half(seeds_only, confidence) if len(h) > 1 or len(b) > 1 else 0.0
    sample: float | None = None
    total = seeds_only
    if rows is not None:
        rh, rb = rows
        sample = _half(rh.mean(axis=0) - rb.mean(axis=0), confidence)
        cols = np.arange(n_resamples)[:, None]
        total = seeds_only + rh.T[cols, pick_h].mean(axis=1) - rb.T[cols, pick_b].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(total, [alpha, 1.0 - alpha])
    return NoiseInterval(
        float(low),
        float(high),
        estimate,
        confidence,
        training=training,
        sample=sample,
        head_runs=len(h),
        base_runs=len(b),
    )


def _mean_metrics(runs: Sequence[SeedRun]) -> dict[str, float]:
    """Each metric's mean over the runs that report it (NaN stays NaN: it must show)."""
    names = {name for run in runs for name in run.metrics}
    out: dict[str, float] = {}
    for name in names:
        values = [run.metrics[name] for run in runs if name in run.metrics]
        if len(values) == len(runs):
            out[name] = float(np.mean(values))
    return out


def compare_repeated(
    head: Sequence[SeedRun],
    base: Sequence[SeedRun],
    rules: Sequence[MetricRule],
    *,
    default_gate: bool = True,
    n_resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """``compare`` over repeated trainings: means over seeds, two-level intervals.

    With one run per side this is ``compare`` itself (the paired row bootstrap).
    """
    if len(head) == 1 and len(base) == 1:
        return compare(
            head[0].metrics,
            base[0].metrics,
            rules,
            head_predictions=head[0].predictions,
            base_predictions=base[0].predictions,
            default_gate=default_gate,
            seed=seed,
        )
    plain = compare(_mean_metrics(head), _mean_metrics(base), rules, default_gate=default_gate)
    rows: list[MetricComparison] = []
    for row in plain.metrics:
        if row.delta is None or row.direction is None or row.verdict == "unchanged":
            rows.append(row)
            continue
        interval = two_level_interval(row.name, head, base, n_resamples=n_resamples, seed=seed)
        verdict = _verdict(row.delta, row.direction, row.tolerance, interval)
        rows.append(replace(row, interval=interval, verdict=verdict))
    return Comparison(tuple(rows), head_only=plain.head_only)


def unstable_metrics(
    role: str, runs: Sequence[SeedRun], rules: Sequence[MetricRule], *, default_gate: bool = True
) -> list[UnstableMetric]:
    """The gated metrics whose spread over the commit's seeds exceeds their tolerance."""
    if len(runs) < 2:
        return []
    by_name = {rule.name: rule for rule in rules}
    out: list[UnstableMetric] = []
    for name, _ in sorted(_mean_metrics(runs).items()):
        rule = by_name.get(name)
        direction = rule.direction if rule and rule.direction else default_direction(name)
        gated = direction is not None and (rule.gate if rule else default_gate)
        values = [run.metrics[name] for run in runs]
        if not gated or not all(math.isfinite(v) for v in values):
            continue
        tolerance = rule.tolerance if rule else 0.0
        spread = max(values) - min(values)
        if spread > tolerance and spread > _ROUNDING * max(1.0, max(abs(v) for v in values)):
            out.append(UnstableMetric(name, role, spread, tolerance, len(runs)))
    return out
