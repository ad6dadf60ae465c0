"""The verdicts' promise on real seed-noisy trainings (tests/evaluate/noisyrepos): a random
forest, logistic regression by SGD with shuffling, a small neural net in numpy.

Each training runs once per seed of a pool; simulated pull requests draw distinct
seeds for base and head, AUTO_REPEATS runs a side, and compare them as an evaluation
does. A seed-only change must rarely fail the gate, a one-point accuracy drop must
be caught. bench/noise_rates.py measures the same over a few hundred pairs; this
is a fixed sample of them, pooled over the three trainings.
"""

from __future__ import annotations

import numpy as np
import pytest

from modelci.evaluate.compare import compare
from modelci.evaluate.noise import AUTO_REPEATS, SeedRun
from tests.evaluate.noisysim import PairRates, simulate_pairs, trained_runs

TRAININGS = ("forest", "sgd", "numpynet")
POOL, PAIRS = 16, 40


@pytest.fixture(scope="module")
def pools() -> dict[str, list[SeedRun]]:
    return {training: trained_runs(training, range(POOL)) for training in TRAININGS}


def test_the_trainings_are_seed_noisy(pools: dict[str, list[SeedRun]]) -> None:
    """Otherwise the rates below would prove nothing: single runs a side fail often."""
    for training, runs in pools.items():
        accuracy = [run.metrics["accuracy"] for run in runs]
        assert np.std(accuracy) > 0.002, training
        failed = 0
        for i in range(0, POOL - 1, 2):
            head, base = runs[i], runs[i + 1]
            failed += not compare(
                head.metrics,
                base.metrics,
                [],
                head_predictions=head.predictions,
                base_predictions=base.predictions,
            ).passed
        assert failed >= 1, training


def test_seed_only_changes_rarely_fail_and_a_one_point_drop_is_caught(
    pools: dict[str, list[SeedRun]],
) -> None:
    rng = np.random.default_rng(7)
    rates = PairRates()
    for runs in pools.values():
        simulate_pairs(runs, AUTO_REPEATS, PAIRS, rng, n_resamples=200, into=rates)
    total = rates.pairs
    assert rates.noop_failed / total <= 0.05, (rates.noop_failed, total)
    assert all(count / total <= 0.05 for count in rates.regressed.values()), rates.regressed
    assert rates.caught / total >= 0.95, (rates.caught, total)
