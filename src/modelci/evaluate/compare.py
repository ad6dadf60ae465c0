"""Head against base: a verdict per metric and whether the gates pass.

Verdicts:

- ``improved`` / ``regressed``: moved in the good / bad direction, beyond the
  tolerance for a regression;
- ``within_tolerance``: worse, but by no more than the metric's tolerance;
- ``within_noise``: moved, but the paired-bootstrap interval of the change
  contains zero, so the data cannot tell the two commits apart. Noise never
  fails a gate;
- ``unchanged``; ``new`` (only head has it); ``missing`` (only base has it:
  a regression when the metric is gated); ``informational`` (no direction);
- ``not_a_number``: head (or base) reported NaN or an infinity. Head's fails a
  gated metric: a diverged training must not pass as "no change".

A pull request that adds ``modelci.yaml`` has no base result to compare with:
``head_only`` lists head's metrics with the direction and gate that apply once
it is merged, and fails nothing.

The gate as a whole holds at 95%: a change within noise fails it at most one
time in 20, however many metrics are gated. A metric fails only in its bad
direction (one tail of its interval), so with k gated metrics each interval is
at 1 - 10%/k (Bonferroni; 97.5% for four), never below 95% (see
``gate_confidence``). Metrics that gate nothing keep 95% intervals.

An interval is only computed when the per-example predictions reproduce the
reported metric; otherwise the predictions describe something else (another
threshold, another split) and an interval from them would mislead. With
``scoring:`` a run has two sets of rows: the metrics modelci computed take
their intervals from the rows it scored (``ScoredRows``), the repository's own
metrics from the predictions it wrote.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelci.errors import OutputError
from modelci.evaluate.bootstrap import (
    Interval,
    PairedData,
    Resamples,
    metric_kind,
    metric_value,
    paired_bootstrap_delta,
)
from modelci.evaluate.metrics import Direction, default_direction

__all__ = [
    "Comparison",
    "MetricComparison",
    "MetricRule",
    "Predictions",
    "ScoredRows",
    "Verdict",
    "applied_rule",
    "compare",
    "gate_confidence",
    "gated_count",
    "head_only",
    "mark_scored",
    "predictions_from_json",
]

Verdict = Literal[
    "improved",
    "regressed",
    "within_tolerance",
    "within_noise",
    "unchanged",
    "new",
    "missing",
    "informational",
    "not_a_number",
]
_MAX_ROWS = 5_000_000
GATE_CONFIDENCE = 0.95  # of the gate as a whole: no-op changes fail it at most 1 in 20
_REPRODUCE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MetricRule:
    name: str
    direction: Direction | None
    tolerance: float = 0.0
    gate: bool = True


@dataclass(frozen=True)
class MetricComparison:
    name: str
    head: float | None
    base: float | None
    delta: float | None
    rel_delta: float | None
    direction: Direction | None
    tolerance: float
    gated: bool
    verdict: Verdict
    interval: Interval | None = None
    # Computed by modelci from the trained model's predictions (scoring: in
    # modelci.yaml), not reported by the repository's own code.
    scored: bool = False

    @property
    def fails(self) -> bool:
        """Whether this row fails the gate (a NaN base is not head's fault)."""
        if not self.gated:
            return False
        if self.verdict == "not_a_number":
            return self.head is not None and not math.isfinite(self.head)
        return self.verdict in ("regressed", "missing")


@dataclass(frozen=True)
class Comparison:
    metrics: tuple[MetricComparison, ...]
    # True when the base had no modelci.yaml: head's metrics alone, nothing gated yet.
    head_only: bool = False

    @property
    def regressions(self) -> tuple[MetricComparison, ...]:
        """The rows that fail the gates: regressed, missing or not a number."""
        if self.head_only:
            return ()  # the gates apply from the merge on
        return tuple(m for m in self.metrics if m.fails)

    @property
    def passed(self) -> bool:
        return not self.regressions


@dataclass(frozen=True)
class Predictions:
    y_true: npt.NDArray[Any]
    y_pred: npt.NDArray[Any]
    scores: npt.NDArray[np.float64] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"y_true": self.y_true.tolist(), "y_pred": self.y_pred.tolist()}
        if self.scores is not None:
            out["scores"] = self.scores.tolist()
        return out


@dataclass(frozen=True)
class ScoredRows:
    """The rows modelci scored both sides' models on, and the metrics computed from them."""

    names: frozenset[str]
    head: Predictions
    base: Predictions


def _array(value: Any, name: str, source: str) -> npt.NDArray[Any]:
    if not isinstance(value, list):
        raise OutputError(
            f"{source}: '{name}' must be a list", hint='write {"y_true": [...], "y_pred": [...]}'
        )
    if len(value) > _MAX_ROWS:
        raise OutputError(
            f"{source}: '{name}' has more than {_MAX_ROWS} rows",
            hint="write predictions for a sample of the evaluation set",
        )
    try:
        array = np.asarray(value)
    except ValueError:
        raise OutputError(
            f"{source}: '{name}' has rows of different shapes",
            hint="use one number or label per row",
        ) from None
    if array.dtype == object:
        raise OutputError(
            f"{source}: '{name}' mixes types or holds nested values",
            hint="use numbers or strings, one per row",
        )
    return array


def predictions_from_json(data: Any, *, source: str) -> Predictions:
    """Per-example predictions from ``{"y_true": [...], "y_pred": [...], "scores": [...]}``."""
    if not isinstance(data, dict) or "y_true" not in data or "y_pred" not in data:
        raise OutputError(
            f"{source} must be an object with 'y_true' and 'y_pred' lists",
            hint='write {"y_true": [...], "y_pred": [...], "scores": [...]}',
        )
    y_true = _array(data["y_true"], "y_true", source)
    y_pred = _array(data["y_pred"], "y_pred", source)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise OutputError(
            f"{source}: y_true and y_pred must be flat lists of the same length "
            f"(got {y_true.shape} and {y_pred.shape})",
            hint="write one value per evaluation row in each",
        )
    scores = None
    if data.get("scores") is not None:
        raw = _array(data["scores"], "scores", source)
        if (
            raw.shape[0] != y_true.shape[0]
            or raw.ndim > 2
            or not np.issubdtype(raw.dtype, np.number)
        ):
            raise OutputError(
                f"{source}: 'scores' must hold one number (or one row of class "
                "probabilities) per evaluation row",
                hint="write the positive class's probability per row",
            )
        scores = raw.astype(np.float64)
    return Predictions(y_true, y_pred, scores)


def _paired(head: Predictions, base: Predictions) -> PairedData:
    if head.y_true.shape != base.y_true.shape or not np.array_equal(head.y_true, base.y_true):
        raise OutputError(
            "head and base predictions are not on the same evaluation rows (their y_true differ)",
            hint="evaluate both commits on the same rows in the same order (a fixed, seeded split)",
        )
    return PairedData(head.y_true, head.y_pred, base.y_pred, head.scores, base.scores)


_Rows = tuple[PairedData, Resamples] | None


def _rows(head: Predictions | None, base: Predictions | None, seed: int) -> _Rows:
    if head is None or base is None:
        return None
    data = _paired(head, base)
    # One draw for every metric on these rows: drawing the weights costs as much as a metric.
    return data, Resamples(len(data.y_true), seed=seed)


def gate_confidence(gated: int) -> float:
    """The level of each gated metric's interval when ``gated`` metrics gate a change.

    A no-op change fails the gate when any gated metric's interval lies wholly
    on its bad side: one tail, at most (1 - level) / 2 each. Summed over the
    gated metrics that is at most 5% when each level is 1 - 10%/k, whatever the
    metrics' correlation (and they correlate: accuracy and f1 move together, so
    the sum overstates the real rate). With one or two gated metrics the sum is
    already under 5% at 95%, and a level below that would show narrower
    intervals than a reader expects.
    """
    if gated <= 2:
        return GATE_CONFIDENCE
    return 1.0 - 2.0 * (1.0 - GATE_CONFIDENCE) / gated


def applied_rule(by_name: Mapping[str, MetricRule], name: str, *, default_gate: bool) -> MetricRule:
    """The rule that applies to ``name``: its own where the configuration names it, else
    the defaults (direction from the name, tolerance 0); only a metric with a
    direction can gate."""
    rule = by_name.get(name)
    direction = rule.direction if rule and rule.direction else default_direction(name)
    gate = direction is not None and (rule.gate if rule else default_gate)
    return MetricRule(name, direction, rule.tolerance if rule else 0.0, gate)


def gated_count(
    head: Mapping[str, float],
    base: Mapping[str, float],
    rules: Sequence[MetricRule],
    *,
    default_gate: bool,
) -> int:
    """How many metrics both sides report that could regress: the family the gate tests."""
    by_name = {rule.name: rule for rule in rules}
    both = set(head) & set(base)
    return sum(applied_rule(by_name, name, default_gate=default_gate).gate for name in both)


def _interval(
    name: str, head: float, base: float, rows: _Rows, confidence: float
) -> Interval | None:
    kind = metric_kind(name)
    if rows is None or kind is None:
        return None
    data, resamples = rows
    try:
        reproduced = (metric_value(kind, data, head=True), metric_value(kind, data, head=False))
        if any(
            abs(r - v) > _REPRODUCE_TOLERANCE * max(1.0, abs(v))
            for r, v in zip(reproduced, (head, base), strict=True)
        ):
            return None
        return paired_bootstrap_delta(kind, data, resamples=resamples, confidence=confidence)
    except OutputError:
        return None


def _verdict(
    delta: float, direction: Direction, tolerance: float, interval: Interval | None
) -> Verdict:
    if abs(delta) <= 1e-12:
        return "unchanged"
    better = delta > 0 if direction == "higher" else delta < 0
    if interval is not None and interval.contains_zero():
        return "within_noise"
    if better:
        return "improved"
    return "within_tolerance" if abs(delta) <= tolerance else "regressed"


def compare(
    head: Mapping[str, float],
    base: Mapping[str, float],
    rules: Sequence[MetricRule],
    *,
    head_predictions: Predictions | None = None,
    base_predictions: Predictions | None = None,
    default_gate: bool = True,
    seed: int = 0,
    scored: ScoredRows | None = None,
) -> Comparison:
    """Compare head's metrics with base's under the rules (named metrics) and defaults.

    ``head_predictions``/``base_predictions``: the repository's own rows; ``scored``:
    those modelci scored, for the metrics it computed (``scored.names``)."""
    by_name = {rule.name: rule for rule in rules}
    own = _rows(head_predictions, base_predictions, seed)
    modelcis = _rows(scored.head, scored.base, seed) if scored is not None else None
    scored_names = scored.names if scored is not None else frozenset()
    level = gate_confidence(gated_count(head, base, rules, default_gate=default_gate))
    out: list[MetricComparison] = []
    for name in sorted(set(head) | set(base) | set(by_name)):
        rule = applied_rule(by_name, name, default_gate=default_gate)
        direction, tolerance, gated = rule.direction, rule.tolerance, rule.gate
        h, b = head.get(name), base.get(name)
        if h is None and b is None:
            continue  # a gate for a metric neither commit reports
        if h is None or b is None:
            verdict: Verdict = "new" if b is None else "missing"
            out.append(
                MetricComparison(
                    name,
                    h,
                    b,
                    None,
                    None,
                    direction,
                    tolerance,
                    gated and verdict == "missing",
                    verdict,
                )
            )
            continue
        if not (math.isfinite(h) and math.isfinite(b)):
            out.append(
                MetricComparison(
                    name, h, b, None, None, direction, tolerance, gated, "not_a_number"
                )
            )
            continue
        delta = h - b
        rel = delta / abs(b) if b != 0 else None
        confidence = level if gated else GATE_CONFIDENCE
        rows = modelcis if name in scored_names else own
        interval = _interval(name, h, b, rows, confidence) if direction else None
        verdict = _verdict(delta, direction, tolerance, interval) if direction else "informational"
        out.append(
            MetricComparison(name, h, b, delta, rel, direction, tolerance, gated, verdict, interval)
        )
    return Comparison(tuple(out))


def mark_scored(comparison: Comparison, names: frozenset[str]) -> Comparison:
    """The comparison with the metrics modelci computed itself marked as such."""
    rows = tuple(replace(m, scored=m.name in names) for m in comparison.metrics)
    return replace(comparison, metrics=rows)


def head_only(
    head: Mapping[str, float], rules: Sequence[MetricRule], *, default_gate: bool = True
) -> Comparison:
    """Head's metrics when its base has no configuration to compare with.

    Each row carries the direction and gate that will apply to later pull
    requests once this one is merged; ``gated`` says so, and nothing fails.
    """
    by_name = {rule.name: rule for rule in rules}
    out: list[MetricComparison] = []
    for name in sorted(head):
        rule = applied_rule(by_name, name, default_gate=default_gate)
        h = head[name]
        verdict: Verdict = "new" if math.isfinite(h) else "not_a_number"
        row = MetricComparison(
            name, h, None, None, None, rule.direction, rule.tolerance, rule.gate, verdict
        )
        out.append(row)
    return Comparison(tuple(out), head_only=True)
