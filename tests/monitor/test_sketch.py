"""The numeric sketch: exact where it keeps every value, bounded where it does not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from modelci.monitor.sketch import MAX_BUCKETS, NumericSketch, wasserstein


def exact_w1(reference: np.ndarray, current: np.ndarray) -> float:
    return float(stats.wasserstein_distance(reference, current))


@pytest.mark.parametrize("distinct", [1, 2, 7, 300, MAX_BUCKETS])
def test_few_distinct_values_are_kept_exactly(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    reference = rng.integers(0, distinct, 20_000).astype(float) * 0.5
    sketch = NumericSketch.of(reference)
    assert sketch.exact
    assert sketch.rows == len(reference)
    np.testing.assert_array_equal(np.sort(sketch.values()), np.sort(reference))
    current = np.sort(rng.integers(0, distinct + 2, 3000).astype(float) * 0.5 + 0.25)
    score, bound = wasserstein(sketch, current)
    assert bound == 0.0
    assert score == pytest.approx(exact_w1(reference, current), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("shift", [0.0, 0.02, 0.2, 2.0])
@pytest.mark.parametrize("draw", ["normal", "lognormal", "pareto", "bimodal"])
def test_a_sketch_is_within_its_bound(draw: str, shift: float) -> None:
    rng = np.random.default_rng(11)
    make = {
        "normal": lambda n: rng.normal(0, 1, n),
        "lognormal": lambda n: rng.lognormal(0, 1, n),
        "pareto": lambda n: rng.pareto(1.5, n),
        "bimodal": lambda n: np.where(
            rng.random(n) < 0.3, rng.normal(-3, 0.5, n), rng.normal(2, 1.5, n)
        ),
    }[draw]
    reference = make(200_000)
    sketch = NumericSketch.of(reference)
    assert not sketch.exact and len(sketch.low) == MAX_BUCKETS
    current = np.sort(make(20_000) + shift)
    score, bound = wasserstein(sketch, current)
    exact = exact_w1(reference, current)
    assert abs(score - exact) <= bound + 1e-9
    assert abs(score - exact) <= 1e-3 * max(float(np.std(reference)), 1.0)


def test_a_shifted_window_is_exact_even_from_a_sketch() -> None:
    """Where the quantile functions do not cross, bucket sums give the exact integral."""
    rng = np.random.default_rng(3)
    reference = rng.normal(0, 1, 300_000)
    current = np.sort(rng.normal(0.5, 1, 30_000))
    score, _ = wasserstein(NumericSketch.of(reference), current)
    assert score == pytest.approx(exact_w1(reference, current), rel=1e-9)


def test_histogram_and_cdf_count_every_value() -> None:
    rng = np.random.default_rng(4)
    reference = rng.normal(0, 1, 100_000)
    sketch = NumericSketch.of(reference)
    edges = np.linspace(-2, 2, 9)
    hist = sketch.histogram(edges)
    assert hist.sum() == pytest.approx(len(reference))
    inside = np.histogram(np.clip(reference, -2, 2), edges)[0]
    np.testing.assert_allclose(hist, inside, atol=len(reference) / 1000)
