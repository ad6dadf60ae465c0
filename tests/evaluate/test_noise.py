"""Two-level intervals (seeds, then rows), nondeterminism and unstable metrics."""

from __future__ import annotations

import numpy as np
import pytest

from modelci.evaluate.compare import MetricRule, compare
from modelci.evaluate.noise import (
    AUTO_REPEATS,
    NoiseInterval,
    SeedRun,
    compare_repeated,
    differs_beyond_rounding,
    unstable_metrics,
)
from tests.evaluate.noisysim import population, runs


def test_rounding_is_not_nondeterminism_but_a_real_difference_is() -> None:
    a = {"accuracy": 0.9, "loss": 0.3}
    assert not differs_beyond_rounding(a, {"accuracy": 0.9 * (1 + 1e-12), "loss": 0.3})
    assert differs_beyond_rounding(a, {"accuracy": 0.9005, "loss": 0.3})
    assert differs_beyond_rounding(a, {"accuracy": 0.9})


def test_without_predictions_the_seeds_alone_give_the_interval() -> None:
    base = [SeedRun(s, {"accuracy": v}) for s, v in enumerate([0.90, 0.91, 0.89])]
    head = [SeedRun(s, {"accuracy": v}) for s, v in enumerate([0.895, 0.905, 0.885])]
    comparison = compare_repeated(head, base, [])
    (row,) = comparison.metrics
    assert isinstance(row.interval, NoiseInterval)
    assert row.interval.sample is None and row.interval.training > 0.005
    assert (row.interval.head_runs, row.interval.base_runs) == (3, 3)
    assert row.delta == pytest.approx(-0.005)
    assert row.verdict == "within_noise" and comparison.passed
    # The same change from single runs has no interval at all: it would fail.
    assert not compare({"accuracy": 0.895}, {"accuracy": 0.90}, []).passed


def test_a_change_beyond_the_seed_spread_regresses() -> None:
    base = [SeedRun(s, {"accuracy": v}) for s, v in enumerate([0.900, 0.901, 0.899])]
    head = [SeedRun(s, {"accuracy": v}) for s, v in enumerate([0.880, 0.881, 0.879])]
    (row,) = compare_repeated(head, base, []).metrics
    assert row.verdict == "regressed"
    assert row.interval is not None and row.interval.high < 0


def test_one_run_per_side_is_the_paired_bootstrap() -> None:
    y, margin = population(np.random.default_rng(3), rows=300)
    (base,), (head,) = runs(y, margin, [0], salt=1), runs(y, margin, [0], salt=2)
    plain = compare(
        head.metrics,
        base.metrics,
        [],
        head_predictions=head.predictions,
        base_predictions=base.predictions,
    )
    assert compare_repeated([head], [base], []) == plain


def test_both_parts_are_reported_with_predictions() -> None:
    rng = np.random.default_rng(4)
    y, margin = population(rng, rows=500)
    base = runs(y, margin, [0, 1, 2], salt=10, auc=False)
    # A different model, not only another seed: better on some rows, worse on others,
    # which only resampling the rows can measure.
    head = runs(y, margin + rng.normal(0.0, 1.0, size=500), [0, 1, 2], salt=11, auc=False)
    by_name = {m.name: m for m in compare_repeated(head, base, [], n_resamples=300).metrics}
    interval = by_name["accuracy"].interval
    assert isinstance(interval, NoiseInterval)
    assert interval.sample is not None and interval.sample > 0 and interval.training > 0
    # Both sources together are wider than either alone.
    half = (interval.high - interval.low) / 2
    assert half > max(interval.sample, interval.training)


def test_metrics_that_move_between_seeds_beyond_their_tolerance_are_named() -> None:
    seeds = [
        SeedRun(s, {"accuracy": 0.9 + 0.01 * s, "loss": 0.3, "f1": 0.8 + 1e-4 * s})
        for s in range(3)
    ]
    rules = [MetricRule("f1", "higher", tolerance=0.001)]
    (unstable,) = unstable_metrics("base", seeds, rules)
    assert (unstable.name, unstable.role, unstable.runs) == ("accuracy", "base", 3)
    assert unstable.spread == pytest.approx(0.02)
    assert unstable_metrics("base", seeds[:1], rules) == []


def test_no_op_changes_rarely_fail_and_a_one_point_drop_is_caught() -> None:
    """Seed-noisy training, 2,000 rows, AUTO_REPEATS runs per side, no gates (tolerance 0),
    all four metrics (AUC too), simulated; test_noisy_trainings does the same with real
    trainings, and bench/noise_rates.py over a few hundred pairs (the README's rates)."""
    y, margin = population(np.random.default_rng(1))
    seeds = list(range(AUTO_REPEATS))
    pairs, failed, regressed, caught, single_failed = 40, 0, {}, 0, 0
    for i in range(pairs):
        base = runs(y, margin, seeds, salt=2 * i + 1000)
        head = runs(y, margin, seeds, salt=2 * i + 1001)
        comparison = compare_repeated(head, base, [], n_resamples=300, seed=i)
        failed += not comparison.passed
        for row in comparison.regressions:
            regressed[row.name] = regressed.get(row.name, 0) + 1
        single = compare(
            head[0].metrics,
            base[0].metrics,
            [],
            head_predictions=head[0].predictions,
            base_predictions=base[0].predictions,
        )
        single_failed += not single.passed
        dropped = runs(y, margin, seeds, salt=2 * i + 1001, flipped=20)
        worse = compare_repeated(dropped, base, [], n_resamples=300, seed=i)
        caught += not worse.passed
    assert single_failed / pairs > 0.1  # the noise is real: single runs fail often
    assert failed / pairs <= 0.05
    assert all(count / pairs <= 0.05 for count in regressed.values()), regressed
    assert caught / pairs >= 0.95


def test_the_report_shows_both_parts_and_the_runs() -> None:
    from modelci.evaluate.report import render_json, render_markdown

    base = [SeedRun(s, {"accuracy": v}) for s, v in enumerate([0.90, 0.91, 0.89])]
    head = [SeedRun(s, {"accuracy": v}) for s, v in enumerate([0.895, 0.905, 0.885])]
    comparison = compare_repeated(head, base, [])
    (row,) = render_json(comparison)["metrics"]
    assert row["ci"]["runs"] == {"head": 3, "base": 3}
    assert row["ci"]["training_randomness"] > 0 and row["ci"]["evaluation_sample"] is None
    text = render_markdown(comparison, head_sha="a" * 40, base_sha="b" * 40)
    assert "from training randomness; 3/3 runs" in text


def test_repeated_runs_take_each_metrics_interval_from_the_rows_it_came_from() -> None:
    # Three seeds a side; each reports f1 on its own rows, modelci scores accuracy on
    # others. Both metrics get their row part from their own rows.
    rng = np.random.default_rng(5)
    y_own, own_margin = population(rng, rows=400)
    y_held, held_margin = population(rng, rows=300)

    def side(seeds: list[int], salt: int) -> list[SeedRun]:
        own = runs(y_own, own_margin, seeds, salt=salt, auc=False)
        held = runs(y_held, held_margin, seeds, salt=salt + 50, auc=False)
        out = []
        for o, h in zip(own, held, strict=True):
            assert o.predictions is not None and h.predictions is not None
            metrics = {"f1": o.metrics["f1"], "accuracy": h.metrics["accuracy"]}
            out.append(
                SeedRun(o.seed, metrics, o.predictions, h.predictions, frozenset({"accuracy"}))
            )
        return out

    by_name = {
        m.name: m
        for m in compare_repeated(
            side([0, 1, 2], 20), side([0, 1, 2], 30), [], n_resamples=200
        ).metrics
    }
    for name in ("f1", "accuracy"):
        interval = by_name[name].interval
        assert isinstance(interval, NoiseInterval) and interval.sample is not None, name
