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
from statistics import NormalDist

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
    GATE_CONFIDENCE,
    Comparison,
    MetricComparison,
    MetricRule,
    Predictions,
    ScoredRows,
    _verdict,
    applied_rule,
    compare,
    gate_confidence,
    gated_count,
)
from modelci.evaluate.resampling import bootstrap_weights

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
# Runs per side once training is found nondeterministic. The seed part of the
# interval has 2 * (N - 1) degrees of freedom; on the seed-noisy simulation in the
# tests (300 pairs) five runs caught a one-point accuracy drop on 2,000 rows only
# ~94% of the time (the t test's power at 8 df, the interval being calibrated:
# no-op failures 3.3%), six reach the 19-in-20 target at 1.2x the training time of five.
AUTO_REPEATS = 6
_ROUNDING = 1e-9  # relative: two runs closer than this are the same run
_REPRODUCE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SeedRun:
    """One training of a commit: its seed, metrics and (optional) predictions: its own,
    and the rows modelci scored its model on for the metrics named in ``scored_names``."""

    seed: int
    metrics: Mapping[str, float]
    predictions: Predictions | None = None
    scored: Predictions | None = None
    scored_names: frozenset[str] = frozenset()

    def predictions_for(self, name: str) -> Predictions | None:
        """The rows ``name`` was computed from."""
        return self.scored if name in self.scored_names else self.predictions


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

    @property
    def message(self) -> str:
        """What the author reads: which metric, by how much, and the two ways out."""
        return (
            f"{self.name} varies by {self.spread:.2g} between the {self.role}'s {self.runs} "
            f"seeds (lowest to highest), more than its tolerance {self.tolerance:g}: seed "
            "your training from MODELCI_SEED or widen the tolerance"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "spread": self.spread,
            "tolerance": self.tolerance,
            "runs": self.runs,
            "message": self.message,
        }


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


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (df may be fractional: Satterthwaite), by bisection on its CDF."""
    if p <= 0.0 or p >= 1.0:
        raise ValueError(f"probability must be in (0, 1), not {p}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    # The density integrated from 0 with Simpson's rule on a fine grid: exact to ~1e-9
    # for the quantiles used here, without scipy (not a runtime dependency).
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 2001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
        return 0.5 + float((f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()) * t / 6000)

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, high * 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def _reproduces(kind: str, run: SeedRun, name: str) -> bool:
    p = run.predictions_for(name)
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
    chosen = [run.predictions_for(name) for run in runs]
    first = chosen[0]
    assert first is not None
    y = first.y_true
    for p in chosen:
        assert p is not None
        if p.y_true.shape != y.shape or not np.array_equal(p.y_true, y):
            return None  # not the same rows: pairing would mislead
    n = len(y)
    if n < 10:
        return None
    # One draw of Poisson row weights shared by every model of both sides: paired.
    weights = bootstrap_weights(n, n_resamples, seed=rng)
    parts = []
    for run, p in zip(runs, chosen, strict=True):
        assert p is not None
        data = PairedData(p.y_true, p.y_pred, p.y_pred, p.scores, p.scores)
        parts.append(resampled_values(kind, data, weights) - run.metrics[name])
    matrix = np.vstack(parts)
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
    """The interval of mean(head) - mean(base) for ``name``: seeds and rows, in quadrature.

    The two variances add (they are independent sources), and the interval is
    Student's t on the sum with Satterthwaite's degrees of freedom, rather than
    percentiles of a nested bootstrap, which is too wide in two ways: the spread
    of a model between seeds on the fixed rows already holds its row-level noise
    (borderline rows flipping), which resampling rows counts a second time; and
    with five seeds the percentile widths of each level do not combine as the
    variances do. The row part here is the row-resampled variance of the
    difference of the two sides' means minus that double-counted row-level seed
    noise (estimated from each model's deviations from its side's mean on the
    same resamples). The seed part is the pooled unbiased variance between seeds
    (head and base are trainings of the same kind: one run on a side borrows the
    other's spread), which replaces the sqrt(n / (n - 1)) widening of a seed
    bootstrap and, with the t quantile, does not understate a few seeds' spread.
    """
    h = np.array([r.metrics[name] for r in head], dtype=np.float64)
    b = np.array([r.metrics[name] for r in base], dtype=np.float64)
    if not (np.isfinite(h).all() and np.isfinite(b).all()):
        return None
    rows = _row_perturbations(name, head, base, n_resamples, np.random.default_rng(seed))
    df_seeds = len(h) + len(b) - 2
    if rows is None and df_seeds == 0:
        return None  # one run each and no usable predictions: nothing to measure noise by
    per_run = 1.0 / len(h) + 1.0 / len(b)
    v_seeds = 0.0
    if df_seeds > 0:
        pooled = float(((h - h.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / df_seeds
        v_seeds = pooled * per_run
    sample: float | None = None
    v_rows = 0.0
    if rows is not None:
        rh, rb = rows
        v_rows = float(np.var(rh.mean(axis=0) - rb.mean(axis=0), ddof=1))
        if df_seeds > 0:
            spread = ((rh - rh.mean(axis=0)) ** 2).sum() + ((rb - rb.mean(axis=0)) ** 2).sum()
            row_level_seed_noise = float(spread) / (rh.shape[1] - 1) / df_seeds
            v_rows = max(v_rows - row_level_seed_noise * per_run, 0.0)
        sample = t_quantile(0.5 + confidence / 2, math.inf) * math.sqrt(v_rows)
    training = t_quantile(0.5 + confidence / 2, df_seeds) * math.sqrt(v_seeds) if df_seeds else 0.0
    total = v_seeds + v_rows
    df_total = df_seeds * (total / v_seeds) ** 2 if v_seeds > 0 else math.inf
    half = t_quantile(0.5 + confidence / 2, df_total) * math.sqrt(total)
    estimate = float(h.mean() - b.mean())
    return NoiseInterval(
        estimate - half,
        estimate + half,
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
        h, b = head[0], base[0]
        scored = None
        if h.scored is not None and b.scored is not None:
            scored = ScoredRows(h.scored_names & b.scored_names, h.scored, b.scored)
        return compare(
            h.metrics,
            b.metrics,
            rules,
            head_predictions=h.predictions,
            base_predictions=b.predictions,
            default_gate=default_gate,
            seed=seed,
            scored=scored,
        )
    head_means, base_means = _mean_metrics(head), _mean_metrics(base)
    plain = compare(head_means, base_means, rules, default_gate=default_gate)
    level = gate_confidence(gated_count(head_means, base_means, rules, default_gate=default_gate))
    rows: list[MetricComparison] = []
    for row in plain.metrics:
        if row.delta is None or row.direction is None or row.verdict == "unchanged":
            rows.append(row)
            continue
        interval = two_level_interval(
            row.name,
            head,
            base,
            n_resamples=n_resamples,
            confidence=level if row.gated else GATE_CONFIDENCE,
            seed=seed,
        )
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
        rule = applied_rule(by_name, name, default_gate=default_gate)
        values = [run.metrics[name] for run in runs]
        if not rule.gate or not all(math.isfinite(v) for v in values):
            continue
        tolerance = rule.tolerance
        spread = max(values) - min(values)
        if spread > tolerance and spread > _ROUNDING * max(1.0, max(abs(v) for v in values)):
            out.append(UnstableMetric(name, role, spread, tolerance, len(runs)))
    return out
