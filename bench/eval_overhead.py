"""How much time does evaluating a pull request cost beyond the training itself?

Evaluates the example repository (head vs base) in one run, each way as a
ratio to one bare training run (``python train.py`` in a ready environment).
The overhead rows use the example with ``repeats: 1`` (one run per side), so
that they measure modelci, not how many times the model is trained:

- the tutorial's way (seeds/000): fresh clone, fresh venv, ``pip install -r
  requirements.txt``, train; head then base, in sequence; empty pip cache;
- modelci cold: empty data dir and empty uv cache (downloads included);
- modelci warm, base trained (environment cached, a new base commit);
- modelci warm, base reused (environment and base result cached: a re-evaluation);
- the same inside a running server: one process whose imports and database
  are already up (``service.runtime.evaluator_for``, what a server's job runs);
- the compare step alone, on the example's predictions and on 2,000 rows x 4
  metrics x 2,000 resamples.

Each warm evaluation is paired with a bare training run next to it (medians of
the differences); "beyond its own run" subtracts instead the sandboxed training
that the evaluation timed itself, which keeps the training's own run-to-run
noise (a few tenths of a second on a shared machine) out of the overhead.

And where a warm CLI evaluation's time goes (process, checkout, sandboxed
training, comparison and store); and what repeats cost: the example as shipped
(seeded from MODELCI_SEED, so its training is seed-noisy, and ``repeats:
auto``) against the same with ``repeats: 1``, evaluated side by side: a first
evaluation of a base (seeds 0 and 1 of the base differ, so 6 runs per side),
and a later one (the base's runs reused, the head's 6 trained).

    python bench/eval_overhead.py [--repeat 3] [--unsafe-no-sandbox] [--skip-tutorial]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

import modelci
from modelci.demo import create_demo_repository

console = Console() if Console().is_terminal else Console(width=140)


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tutorial_way(repo: Path, shas: list[str], work: Path) -> float:
    """The seed tutorial's evaluate_pull_request(), once per commit, in sequence."""
    env = {**os.environ, "PIP_CACHE_DIR": str(work / "pip-cache")}
    started = time.perf_counter()
    for sha in shas:
        dst = work / f"clone-{sha[:7]}"
        run(["git", "clone", "--quiet", str(repo), str(dst)])
        run(["git", "checkout", "--quiet", sha], cwd=dst)
        run([sys.executable, "-m", "venv", str(dst / ".venv")])
        run(
            [
                str(dst / ".venv/bin/pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                "requirements.txt",
            ],
            cwd=dst,
            env=env,
        )
        run([str(dst / ".venv/bin/python"), "train.py"], cwd=dst)
        json.loads((dst / "metrics.json").read_text())
        shutil.rmtree(dst)
    return time.perf_counter() - started


def training_alone(repo: Path, sha: str, python: Path, work: Path) -> float:
    """One plain `python train.py` of the head commit in a ready environment: the floor."""
    dst = work / "train-alone"
    shutil.rmtree(dst, ignore_errors=True)
    run(["git", "clone", "--quiet", str(repo), str(dst)])
    run(["git", "checkout", "--quiet", sha], cwd=dst)
    started = time.perf_counter()
    run([str(python), "train.py"], cwd=dst)
    return time.perf_counter() - started


@dataclass(frozen=True)
class Timed:
    """One modelci evaluation: its wall time, the sandboxed training it timed itself,
    and a bare training run next to it."""

    seconds: float
    own: float
    bare: float
    report: dict[str, Any] | None


def own_training(report: dict[str, Any]) -> float:
    """The longest sandboxed training of the evaluation (its sides run in parallel)."""
    return float(max(side["timings"].get("train_s", 0.0) for side in report["sides"].values()))


def modelci_cli(
    repo: Path, base: str, head: str, env: dict[str, str], unsafe: bool
) -> tuple[float, dict[str, Any]]:
    """Wall time of one `modelci evaluate` process, and its JSON report."""
    cmd = [sys.executable, "-m", "modelci", "evaluate", str(repo), "--base", base]
    cmd += ["--head", head, "--format", "json", "--quiet"]
    if unsafe:
        cmd.append("--unsafe-no-sandbox")
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"modelci failed ({done.returncode}):\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return elapsed, report


def new_base_commit(repo: Path, i: int) -> None:
    (repo / "NOTES.md").write_text(f"note {i}\n")
    run(["git", "add", "NOTES.md"], cwd=repo)
    identity = ["-c", "user.name=b", "-c", "user.email=b@example.invalid"]
    run(["git", *identity, "commit", "--quiet", "-m", f"note {i}"], cwd=repo)


def single_run_repository(path: Path) -> Any:
    """The example with ``repeats: 1`` on both sides: one run per side."""
    demo = create_demo_repository(path)
    with (path / "modelci.yaml").open("a") as config:
        config.write("repeats: 1\n")
    identity = ["-c", "user.name=b", "-c", "user.email=b@example.invalid"]
    run(["git", *identity, "commit", "--quiet", "--all", "-m", "repeats: 1"], cwd=path)
    run(["git", "checkout", "--quiet", demo.head], cwd=path)
    run(["git", *identity, "merge", "--quiet", "--no-edit", demo.base], cwd=path)
    run(["git", "checkout", "--quiet", demo.base], cwd=path)
    return demo


def runs_per_side(report: dict[str, Any]) -> str:
    sides = report["sides"]
    return f"{sides['head']['runs']}/{sides['base']['runs']}"


def in_server(
    repo: Path,
    base: str,
    head: str,
    data_dir: Path,
    unsafe: bool,
    repeat: int,
    bare: Callable[[], float],
) -> tuple[list[Timed], Any]:
    """Re-evaluations (base reused) in one process with imports and database up."""
    from modelci.evaluate.evaluation import EvaluationRequest
    from modelci.service.runtime import evaluator_for
    from modelci.settings import get_settings

    settings = get_settings(data_dir=data_dir)
    request = EvaluationRequest(repo=str(repo), base=base, head=head)
    timed = []
    with evaluator_for(settings, unsafe=unsafe) as evaluator:
        result = evaluator.evaluate(request)  # the database and caches come up
        for _ in range(repeat):
            started = time.perf_counter()
            result = evaluator.evaluate(request)
            seconds = time.perf_counter() - started
            timed.append(Timed(seconds, result.head.timings["train_s"], bare(), None))
    return timed, result


def compare_alone(result: Any, repeat: int) -> tuple[float, float, int]:
    """compare() on the example's predictions, and on 2,000 rows x 4 metrics."""
    from modelci.evaluate.bootstrap import PairedData, metric_value
    from modelci.evaluate.compare import Predictions, compare

    head, base = result.head, result.base
    demo = median_time(
        lambda: compare(
            head.metrics,
            base.metrics,
            [],
            head_predictions=head.predictions,
            base_predictions=base.predictions,
        ),
        repeat,
    )
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)

    def side() -> Predictions:
        p = np.clip(0.5 + (y - 0.5) * 0.5 + rng.normal(0, 0.25, len(y)), 0.01, 0.99)
        return Predictions(y, (p > 0.5).astype(int), p)

    sides = side(), side()
    kinds = {"accuracy": "accuracy", "f1": "f1", "roc_auc": "auc", "log_loss": "log_loss"}
    metrics = [
        {
            name: metric_value(kind, PairedData(y, s.y_pred, s.y_pred, s.scores), head=True)
            for name, kind in kinds.items()
        }
        for s in sides
    ]
    large = median_time(
        lambda: compare(
            metrics[0], metrics[1], [], head_predictions=sides[0], base_predictions=sides[1]
        ),
        max(repeat, 10),
    )
    rows = 0 if head.predictions is None else len(head.predictions.y_true)
    return demo, large, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm runs to take the median of")
    parser.add_argument("--unsafe-no-sandbox", action="store_true")
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()
    unsafe = args.unsafe_no_sandbox
    # modelci as installed: pip writes its bytecode at install time, but an editable
    # install under PYTHONDONTWRITEBYTECODE (set on this machine kind) never does, and
    # every `modelci` process then compiled the package from source (~0.05 s).
    compileall.compile_dir(Path(modelci.__file__).parent, quiet=1)

    with tempfile.TemporaryDirectory(prefix="modelci-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        demo = single_run_repository(work / "repo")
        noisy = create_demo_repository(work / "noisy")  # seed-noisy, repeats: auto
        shas = [
            run(["git", "rev-parse", ref], cwd=demo.path).stdout.strip()
            for ref in (demo.head, demo.base)
        ]
        data_dir = work / "data"
        env = {**os.environ, "MODELCI_DATA_DIR": str(data_dir)}
        env["UV_CACHE_DIR"] = str(work / "uv-cache")

        console.print("[bold]modelci cold[/] (empty data dir, empty uv cache)")
        cold, _ = modelci_cli(demo.path, demo.base, demo.head, env, unsafe)
        modelci_cli(noisy.path, noisy.base, noisy.head, env, unsafe)  # the noisy base's runs

        # Each modelci evaluation is paired with a bare training run next to it: on a
        # shared machine the load drifts, and the overhead is a difference of the two.
        python = sorted((data_dir / "envs").glob("*/bin/python"))[0]

        def bare() -> float:
            return training_alone(demo.path, shas[0], python, work)

        console.print(
            "[bold]modelci warm[/], base reused (re-evaluation), with and without repeats, "
            "and training alone"
        )
        reuse: list[Timed] = []
        noisy_reuse = []
        for _ in range(args.repeat):
            seconds, report = modelci_cli(demo.path, demo.base, demo.head, env, unsafe)
            reuse.append(Timed(seconds, own_training(report), bare(), report))
            noisy_reuse.append(modelci_cli(noisy.path, noisy.base, noisy.head, env, unsafe))

        console.print(
            "[bold]modelci warm[/], base trained (new base commit, same requirements), "
            "with and without repeats"
        )
        warm: list[Timed] = []
        noisy_first = []
        for i in range(args.repeat):
            new_base_commit(demo.path, i)
            seconds, report = modelci_cli(demo.path, "main", demo.head, env, unsafe)
            warm.append(Timed(seconds, own_training(report), bare(), report))
            new_base_commit(noisy.path, i)
            noisy_first.append(modelci_cli(noisy.path, "main", noisy.head, env, unsafe))

        console.print("[bold]in a running server[/] (imports and database up), base reused")
        os.environ["UV_CACHE_DIR"] = env["UV_CACHE_DIR"]
        server, result = in_server(
            demo.path, demo.base, demo.head, data_dir, unsafe, args.repeat, bare
        )

        console.print("[bold]compare step alone[/]")
        compare_demo, compare_large, demo_rows = compare_alone(result, args.repeat)

        tutorial = None
        if not args.skip_tutorial:
            console.print("[bold]tutorial's way[/] (clone, venv, pip install, head then base)")
            tutorial = tutorial_way(demo.path, shas, work)

    train = statistics.median(t.bare for t in (*reuse, *warm, *server))
    table = Table(
        title="Evaluating a pull request: head vs base (seconds; medians; each modelci "
        "evaluation paired with a bare training run next to it)"
    )
    columns = ("approach", "total", "beyond one training", "x training", "beyond its own run")
    for column in columns:
        table.add_column(column, justify="right" if column != "approach" else "left")
    for name, total in (("tutorial's way", tutorial), ("modelci cold", cold)):
        if total is not None:
            table.add_row(name, f"{total:.3f}", f"{total - train:.2f}", f"{total / train:.3f}", "-")
    for name, timed in (
        ("modelci warm, base trained", warm),
        ("modelci warm, base reused", reuse),
        ("in a running server, base reused", server),
    ):
        total = statistics.median(t.seconds for t in timed)
        beyond = statistics.median(t.seconds - t.bare for t in timed)
        ratio = statistics.median(t.seconds / t.bare for t in timed)
        own = statistics.median(t.seconds - t.own for t in timed)
        table.add_row(name, f"{total:.3f}", f"{beyond:.2f}", f"{ratio:.3f}", f"{own:.2f}")
    for name, total in (
        (f"compare step alone ({demo_rows} rows)", compare_demo),
        ("compare step alone (2,000 rows x 4 metrics)", compare_large),
    ):
        table.add_row(name, f"{total:.3f}", "-", f"{total / train:.3f}", "-")
    table.add_row("training alone (python train.py)", f"{train:.2f}", "0", "1", "-")
    console.print(table)
    console.print(
        "[dim]beyond its own run: the evaluation's wall time less the sandboxed training it "
        "timed itself (the longer side's when both train): the overhead without the "
        "training's own run-to-run noise, and without the sandbox's start (about 0.03 s)[/]"
    )

    reuse.sort(key=lambda t: t.seconds)
    warm_reuse, reuse_report = reuse[len(reuse) // 2].seconds, reuse[len(reuse) // 2].report
    warm_train = statistics.median(t.seconds for t in warm)
    assert reuse_report is not None
    head = reuse_report["sides"]["head"]["timings"]
    evaluation = float(reuse_report["seconds"])
    parts = Table(title="Where a warm CLI evaluation (base reused) spends its time (seconds)")
    parts.add_column("part")
    parts.add_column("seconds", justify="right")
    process = warm_reuse - evaluation
    parts.add_row("process: start, imports, database start and stop, exit", f"{process:.2f}")
    parts.add_row("head: checkout and environment", f"{head['prepare_s'] + head['env_s']:.2f}")
    parts.add_row("head: sandboxed training run", f"{head['train_s']:.2f}")
    parts.add_row("after training: compare, store", f"{evaluation - head['total_s']:.2f}")
    parts.add_row("bare training, for reference", f"{train:.2f}")
    console.print(parts)

    costs = Table(
        title="What repeats cost: seed-noisy training, repeats: auto against repeats: 1 "
        "(seconds; extra as a ratio to one bare training)"
    )
    for column in ("evaluation", "runs head/base", "with repeats", "one run", "extra", "extra x"):
        costs.add_column(column, justify="left" if column == "evaluation" else "right")
    for name, repeated, single in (
        ("first of a base (base trained)", noisy_first, warm_train),
        ("later (base's runs reused)", noisy_reuse, warm_reuse),
    ):
        repeated.sort(key=lambda run: run[0])
        seconds, report = repeated[len(repeated) // 2]
        costs.add_row(
            name,
            runs_per_side(report),
            f"{seconds:.2f}",
            f"{single:.2f}",
            f"{seconds - single:.2f}",
            f"{(seconds - single) / train:.2f}",
        )
    console.print(costs)


if __name__ == "__main__":
    main()
