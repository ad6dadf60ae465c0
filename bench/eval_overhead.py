"""How much time does evaluating a pull request cost beyond the training itself?

Evaluates the example repository (head vs base) side by side in one run:

- the tutorial's way (seeds/000): fresh clone, fresh venv, ``pip install -r
  requirements.txt``, train; head then base, in sequence; empty pip cache;
- modelci cold: empty data dir and empty uv cache (downloads included);
- modelci warm (environment cached, base run again: a new base commit);
- modelci warm (environment cached, base result reused): a re-evaluation.

and prints each total, the training time alone, the overhead (total minus one
training run) and the ratio tutorial/modelci.

    python bench/eval_overhead.py [--repeat 3] [--unsafe-no-sandbox]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from modelci.demo import create_demo_repository

console = Console()


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


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


def training_alone(repo: Path, python: Path, work: Path) -> float:
    """One plain `python train.py` in a ready environment: the floor."""
    dst = work / "train-alone"
    shutil.rmtree(dst, ignore_errors=True)
    run(["git", "clone", "--quiet", str(repo), str(dst)])
    started = time.perf_counter()
    run([str(python), "train.py"], cwd=dst)
    return time.perf_counter() - started


def modelci(repo: Path, base: str, head: str, env: dict[str, str], unsafe: bool) -> float:
    cmd = [
        sys.executable,
        "-m",
        "modelci",
        "evaluate",
        str(repo),
        "--base",
        base,
        "--head",
        head,
        "--format",
        "json",
        "--quiet",
    ]
    if unsafe:
        cmd.append("--unsafe-no-sandbox")
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"modelci failed ({done.returncode}):\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm runs to take the median of")
    parser.add_argument("--unsafe-no-sandbox", action="store_true")
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="modelci-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        demo = create_demo_repository(work / "repo")
        shas = [
            run(["git", "rev-parse", ref], cwd=demo.path).stdout.strip()
            for ref in (demo.head, demo.base)
        ]
        env = {
            **os.environ,
            "MODELCI_DATA_DIR": str(work / "data"),
            "UV_CACHE_DIR": str(work / "uv-cache"),
        }

        console.print("[bold]modelci cold[/] (empty data dir, empty uv cache)")
        cold = modelci(demo.path, demo.base, demo.head, env, args.unsafe_no_sandbox)

        console.print("[bold]modelci warm[/], base reused (re-evaluation)")
        warm_reuse = statistics.median(
            modelci(demo.path, demo.base, demo.head, env, args.unsafe_no_sandbox)
            for _ in range(args.repeat)
        )

        console.print("[bold]modelci warm[/], base trained (new base commit, same requirements)")
        warm_runs = []
        for i in range(args.repeat):
            (demo.path / "NOTES.md").write_text(f"note {i}\n")
            run(["git", "add", "NOTES.md"], cwd=demo.path)
            run(
                [
                    "git",
                    "-c",
                    "user.name=b",
                    "-c",
                    "user.email=b@example.invalid",
                    "commit",
                    "--quiet",
                    "-m",
                    f"note {i}",
                ],
                cwd=demo.path,
            )
            warm_runs.append(modelci(demo.path, "main", demo.head, env, args.unsafe_no_sandbox))
        warm_train = statistics.median(warm_runs)

        envs = sorted((work / "data" / "envs").glob("*/bin/python"))
        train = statistics.median(
            training_alone(demo.path, envs[0], work) for _ in range(args.repeat)
        )

        tutorial = None
        if not args.skip_tutorial:
            console.print("[bold]tutorial's way[/] (clone, venv, pip install, head then base)")
            tutorial = tutorial_way(demo.path, shas, work)

    table = Table(title="Evaluating a pull request: head vs base (seconds)")
    for column in ("approach", "total", "overhead (total - 1 training)", "tutorial / this"):
        table.add_column(column, justify="right" if column != "approach" else "left")
    rows = [
        ("tutorial's way", tutorial),
        ("modelci cold", cold),
        ("modelci warm, base trained", warm_train),
        ("modelci warm, base reused", warm_reuse),
    ]
    for name, total in rows:
        if total is None:
            continue
        ratio = f"{tutorial / total:.1f}x" if tutorial else "-"
        table.add_row(name, f"{total:.2f}", f"{total - train:.2f}", ratio)
    table.add_row("training alone (python train.py)", f"{train:.2f}", "0", "")
    console.print(table)


if __name__ == "__main__":
    main()
