"""How often does a pull request that changes nothing but the seed fail the gate, and how
often is a real one-point accuracy drop caught?

Real seed-noisy trainings (the repositories in tests/evaluate/noisyrepos: a random
forest, logistic regression by SGD with shuffling, a small numpy neural net; 2,000
evaluation rows, accuracy, f1, ROC AUC and log loss, default gates, tolerance 0) are
trained once per seed from a pool; each simulated pull request draws distinct seeds
for its base and its head from that pool. For each training and for one run a side
(no repeats, the baseline) and ``AUTO_REPEATS`` a side, it prints:

- no-op: the share of seed-only pull requests that fail the gate, and each
  metric's share of false "regressed";
- drop: the head is the same training with 20 of its 2,000 correct predictions
  made wrong (one accuracy point): the share that fails the gate, and the share
  where accuracy itself is "regressed";
- the training time per run, and what the repeats cost in trainings.

    python bench/noise_rates.py [--pairs 300] [--pool 120] [--runs 1,6]
                                [--trainings forest,sgd,numpynet]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from modelci.evaluate.noise import AUTO_REPEATS, SeedRun

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.evaluate.noisysim import METRICS, simulate_pairs, trained_runs

console = Console(width=150)


def rates(runs: list[SeedRun], per_side: int, pairs: int, resamples: int) -> dict[str, float]:
    r = simulate_pairs(
        runs, per_side, pairs, np.random.default_rng(per_side), n_resamples=resamples
    )
    return {
        "noop_fail": r.noop_failed / pairs,
        **{f"regressed_{k}": v / pairs for k, v in r.regressed.items()},
        "caught": r.caught / pairs,
        "caught_accuracy": r.caught_by_accuracy / pairs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--pool", type=int, default=120)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--trainings", default="forest,sgd,numpynet")
    parser.add_argument("--runs", default=f"1,{AUTO_REPEATS}", help="runs a side, comma-separated")
    args = parser.parse_args()
    table = Table(title=f"seed-only pull requests and one-point drops ({args.pairs} pairs each)")
    for column in (
        "training",
        "runs a side",
        "no-op fails gate",
        *(f"no-op: {name} regressed" for name, _ in METRICS),
        "drop fails gate",
        "drop: accuracy regressed",
        "s per training",
    ):
        table.add_column(column, justify="left" if column == "training" else "right")
    for training in args.trainings.split(","):
        with console.status(f"training {training} with {args.pool} seeds"):
            started = time.perf_counter()
            runs = trained_runs(training, range(args.pool))
            seconds = (time.perf_counter() - started) / args.pool
        for per_side in (int(n) for n in args.runs.split(",")):
            with console.status(f"{training}: {args.pairs} pairs at {per_side} run(s) a side"):
                r = rates(runs, per_side, args.pairs, args.resamples)
            table.add_row(
                training,
                str(per_side),
                f"{r['noop_fail']:.1%}",
                *(f"{r['regressed_' + name]:.1%}" for name, _ in METRICS),
                f"{r['caught']:.1%}",
                f"{r['caught_accuracy']:.1%}",
                f"{seconds:.2f}",
            )
    console.print(table)
    console.print(
        f"Repeats cost: {AUTO_REPEATS} trainings of the head instead of 1 on every evaluation "
        f"({AUTO_REPEATS - 1} more, concurrent up to MODELCI_MAX_PARALLEL_RUNS), "
        f"and {AUTO_REPEATS} of the base once per base commit (its result is cached)."
    )


if __name__ == "__main__":
    main()
