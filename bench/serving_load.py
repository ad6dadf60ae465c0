"""Load and measurement helpers of bench/serving.py: wrk, one request at a time,
CPU and memory over a server's process tree."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

import httpx

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%s
local file = io.open("%s", "rb")
wrk.body = file:read("*a")
file:close()
"""


def run_wrk(
    url: str, body: bytes, headers: dict[str, str], args: argparse.Namespace, work: Path
) -> dict[str, float]:
    # The body from a file: a binary one cannot sit in a lua string literal.
    (work / "body.bin").write_bytes(body)
    script = work / "body.lua"
    extra = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    script.write_text(LUA % (extra, work / "body.bin"))
    done = subprocess.run(
        ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
         "--latency", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if not found:
            return float("nan")
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    sockets = re.search(socket_errors, out)
    failed = int(non2xx.group(1)) if non2xx else 0
    failed += sum(int(n) for n in sockets.groups()) if sockets else 0
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": ms("50%"),
        "p99": ms("99%"),
        "requests": float(total.group(1)) if total else 0.0,
        "failed": float(failed),
    }


def sequential(url: str, body: bytes, headers: dict[str, str], count: int) -> dict[str, float]:
    times, failed = [], 0
    with httpx.Client(timeout=30, headers={"content-type": "application/json", **headers}) as http:
        for _ in range(20):
            http.post(url, content=body)
        for _ in range(count):
            started = time.perf_counter()
            response = http.post(url, content=body)
            times.append((time.perf_counter() - started) * 1000)
            failed += response.status_code != 200
    times.sort()
    return {"p50": statistics.median(times), "p99": times[int(len(times) * 0.99) - 1],
            "failed": float(failed)}  # fmt: skip


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds used so far by root and each of its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
    tree, changed = {root}, True
    while changed:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        changed = bool(found)
        tree |= found
    used = {}
    for pid in tree:
        try:
            fields = _stat(pid)
            used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return used


def tree_rss_mb(root: int) -> float:
    """Resident memory of root and its descendants, in MiB (shared pages counted per process)."""
    total = 0
    for pid in tree_cpu(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def one_big(url: str, body: bytes, headers: dict[str, str], count: int = 20) -> float:
    """p50 in ms of count requests with BIG_ROWS rows, one at a time, end to end."""
    times = []
    with httpx.Client(timeout=60, headers={"content-type": "application/json", **headers}) as http:
        for index in range(count + 2):
            started = time.perf_counter()
            response = http.post(url, content=body)
            if response.status_code != 200:
                raise SystemExit(f"{url}: {response.status_code} {response.text[:300]}")
            if index >= 2:
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
