"""modelci's drift verdicts against Evidently's DataDriftPreset: time, memory, verdicts.

Generates a reference of ``--rows`` rows x 20 columns (12 numeric, 8 categorical)
and a current window of ``--current`` rows with 6 columns shifted, as Parquet
files, then runs each side in its own subprocess (so each peak RSS is its own):

    evidently   pandas.read_parquet both files, Report([DataDriftPreset()]).run
    modelci     read_table both files, profile_table(reference), drift(profile, current)

End to end is from the files to the verdicts. Then modelci's cost of one new
window once the profile exists (drift only, profile read back from its bytes),
the profile's size, and whether every column's verdict is the same.

    python bench/drift.py                          # 1,000,000 x 20 against 100,000
    python bench/drift.py --rows 200000 --current 20000
    python bench/drift.py --evidently-python /path/to/venv/bin/python

Evidently 0.7.23 needs pandas < 3: --evidently-python names an interpreter that
has it (default: this one).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
}


def generate(directory: Path, rows: int, current: int, seed: int = 0) -> tuple[Path, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    def table(n: int, shift: float, rng: np.random.Generator) -> pa.Table:
        s = shift
        columns = {
            "num_normal": rng.normal(s, 1, n),
            "num_lognormal": rng.lognormal(10 + s * 0.5, 0.6, n),
            "num_uniform": rng.uniform(0, 100, n),
            "num_exponential": rng.exponential(2.0, n),
            "num_bimodal": np.where(
                rng.random(n) < 0.3, rng.normal(-3, 0.5, n), rng.normal(2 + s, 1.5, n)
            ),
            "num_pareto": rng.pareto(2.5, n),
            "num_age": rng.integers(18, 90, n) + int(s * 6),
            "num_count": rng.poisson(30, n),
            "num_rounded": np.round(rng.normal(50, 10, n), 1),
            "num_small": rng.gamma(2.0, 2.0 + s, n),
            "num_beta": rng.beta(2, 5, n),
            "num_t": rng.standard_t(5, n),
            "cat_plan": pa.array(
                rng.choice(
                    ["free", "basic", "pro", "team", "enterprise"],
                    n,
                    p=[0.4, 0.25, 0.2, 0.1, 0.05] if not s else [0.2, 0.2, 0.2, 0.2, 0.2],
                )
            ),
            "cat_country": pa.array(rng.choice([f"c{i:02d}" for i in range(40)], n)),
            "cat_device": pa.array(rng.choice(["ios", "android", "web"], n)),
            "cat_channel": pa.array(
                rng.choice(
                    ["ads", "organic", "referral", "mail"],
                    n,
                    p=[0.4, 0.3, 0.2, 0.1] if not s else [0.1, 0.2, 0.3, 0.4],
                )
            ),
            "cat_flag": pa.array(rng.random(n) < 0.3),
            "cat_stars": rng.integers(1, 6, n),
            "cat_segment": pa.array(rng.choice(["a", "b", "c", "d", "e", "f", "g", "h"], n)),
            "cat_tier": rng.integers(0, 3, n),
        }
        return pa.table(columns)

    rng = np.random.default_rng(seed)
    ref_path, cur_path = directory / "reference.parquet", directory / "current.parquet"
    pq.write_table(table(rows, 0.0, rng), ref_path)
    pq.write_table(table(current, 1.0, rng), cur_path)
    return ref_path, cur_path


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_evidently(reference: Path, current: Path) -> dict[str, object]:
    import warnings

    start = time.perf_counter()
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    imported = time.perf_counter()
    ref = pd.read_parquet(reference)
    cur = pd.read_parquet(current)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([DataDriftPreset()], include_tests=True).run(cur, ref)
        data = snapshot.dict()
    seconds = time.perf_counter() - imported
    verdicts: dict[str, bool] = {}
    dataset = None
    for test in data["tests"]:
        params = test["metric_config"]["params"]
        status = getattr(test["status"], "value", test["status"])
        if params["type"].endswith("ValueDrift"):
            verdicts[params["column"]] = status == "FAIL"
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset = status == "FAIL"
    columns = {}
    for metric in data["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            name = config["column"]
            columns[name] = {
                "test": TESTS[config["method"]],
                "score": float(metric["value"]),
                "drifted": verdicts[name],
            }
    return {
        "seconds": seconds,
        "import_seconds": imported - start,
        "peak_mib": peak_mib(),
        "columns": columns,
        "dataset_drifted": dataset,
    }


def run_modelci(reference: Path, current: Path, windows: int) -> dict[str, object]:
    start = time.perf_counter()
    from modelci.monitor import Profile, drift, profile_table, read_table

    imported = time.perf_counter()
    ref = read_table(reference)
    profiled_at = time.perf_counter()
    profile = profile_table(ref)
    profiled = time.perf_counter()
    cur = read_table(current)
    report = drift(profile, cur)
    seconds = time.perf_counter() - imported
    blob = profile.to_bytes()
    del ref
    times = []
    for _ in range(windows):
        began = time.perf_counter()
        again = Profile.from_bytes(blob)
        drift(again, read_table(current))
        times.append(time.perf_counter() - began)
    return {
        "seconds": seconds,
        "import_seconds": imported - start,
        "read_reference_seconds": profiled_at - imported,
        "profile_seconds": profiled - profiled_at,
        "window_seconds": sorted(times)[len(times) // 2],
        "profile_bytes": len(blob),
        "peak_mib": peak_mib(),
        "columns": {
            col.name: {
                "test": col.test,
                "score": col.score,
                "drifted": col.drifted,
                "bound": col.error_bound,
            }
            for col in report.columns
        },
        "dataset_drifted": report.dataset_drifted,
    }


def child(side: str, python: str, reference: Path, current: Path, windows: int) -> dict:  # type: ignore[type-arg]
    done = subprocess.run(
        [
            python,
            __file__,
            "--child",
            side,
            "--reference",
            str(reference),
            "--current-file",
            str(current),
            "--windows",
            str(windows),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--current", type=int, default=100_000)
    parser.add_argument("--windows", type=int, default=5, help="new windows timed (median)")
    parser.add_argument("--evidently-python", default=sys.executable)
    parser.add_argument("--child", choices=["evidently", "modelci"])
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--current-file", type=Path)
    args = parser.parse_args()
    if args.child == "evidently":
        print(json.dumps(run_evidently(args.reference, args.current_file)))
        return
    if args.child == "modelci":
        print(json.dumps(run_modelci(args.reference, args.current_file, args.windows)))
        return
    with tempfile.TemporaryDirectory(prefix="modelci-drift-bench-") as tmp:
        began = time.perf_counter()
        reference, current = generate(Path(tmp), args.rows, args.current)
        print(
            f"data: reference {args.rows:,} x 20, current {args.current:,} "
            f"(generated in {time.perf_counter() - began:.1f}s)"
        )
        ours = child("modelci", sys.executable, reference, current, args.windows)
        theirs = child("evidently", args.evidently_python, reference, current, args.windows)
    same = [
        name
        for name in theirs["columns"]
        if theirs["columns"][name]["drifted"] == ours["columns"][name]["drifted"]
        and theirs["columns"][name]["test"] == ours["columns"][name]["test"]
    ]
    worst = max(
        abs(theirs["columns"][n]["score"] - ours["columns"][n]["score"]) for n in theirs["columns"]
    )
    print(
        f"evidently  end to end {theirs['seconds']:7.2f}s   peak RSS {theirs['peak_mib']:7.0f} MiB"
        f"   (imports {theirs['import_seconds']:.1f}s, not counted)"
    )
    print(
        f"modelci    end to end {ours['seconds']:7.2f}s   peak RSS {ours['peak_mib']:7.0f} MiB"
        f"   (read reference {ours['read_reference_seconds']:.2f}s, profile "
        f"{ours['profile_seconds']:.2f}s)"
    )
    print(
        f"speed-up   {theirs['seconds'] / ours['seconds']:.1f}x end to end;  memory "
        f"{theirs['peak_mib'] / ours['peak_mib']:.1f}x less"
    )
    print(
        f"new window (profile from bytes, read + test {args.current:,} rows): "
        f"{ours['window_seconds'] * 1000:.0f} ms = "
        f"{theirs['seconds'] / ours['window_seconds']:.0f}x less than Evidently's run;  "
        f"profile {ours['profile_bytes'] / 1024:.0f} KiB"
    )
    print(
        f"verdicts   {len(same)} of {len(theirs['columns'])} columns identical (test and verdict); "
        f"dataset: evidently {theirs['dataset_drifted']}, modelci {ours['dataset_drifted']}; "
        f"largest score difference {worst:.2e}"
    )
    for name in theirs["columns"]:
        t, o = theirs["columns"][name], ours["columns"][name]
        mark = "" if name in same else "   <-- differs"
        print(
            f"  {name:16s} {o['test']:13s} evidently {t['score']:.6g} {t['drifted']!s:5s}  "
            f"modelci {o['score']:.6g} {o['drifted']!s:5s} (±{o['bound']:.1e}){mark}"
        )
    if len(same) != len(theirs["columns"]) or theirs["dataset_drifted"] != ours["dataset_drifted"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
