"""Webhook intake under load, on loopback: every delivery stored, answered, processed once?

Starts a real ``modelci serve --workers N`` (a subprocess, on a fresh
PostgreSQL database: an embedded server in a temporary directory unless
``--database-url`` names a server, on which a throwaway database is created
and dropped), then sends ``--count`` deliveries with ``--concurrency``
requests in flight at most (asyncio + httpx). Each delivery is a real payload
from ``tests/samples`` re-signed with the webhook secret and given its own
``X-GitHub-Delivery``. The payloads are ones modelci acts on without calling
GitHub (``ping``, a tag deletion, a non-trigger label, an ``opened`` pull
request), so no GitHub stand-in is needed and the figures are intake alone.

It measures deliveries/s accepted (202, stored and queued before the answer),
p50/p99 answer time, then waits until the workers have processed every
delivery (``deliveries.processed_at`` set) and compares processed with sent.

Baselines, side by side in the same run (run-to-run noise here is about
+-30%, so compare ratios, not absolute figures):

- GitHub's 10 s answer deadline, against modelci's p99;
- the seed tutorial's approach: a Flask handler that verifies the signature
  and appends the payload to a file (nothing queued, nothing processed),
  served by the same uvicorn (WSGI interface), same load.

    python bench/webhook_intake.py [--count 2000] [--concurrency 16] [--workers 2]
                                   [--database-url postgresql://user@host/db]

Exit status: 0 when every delivery was accepted and processed exactly once,
1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from modelci.store.pgembed import EmbeddedPostgres

# Wide enough for the table when the output goes to a file or a pipe.
console = Console(width=max(Console().width, 110))
ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "samples"
# Real deliveries that modelci stores, queues and processes without a GitHub call.
SAMPLE_FILES = (
    "ping.json",
    "push.tag-deleted.json",
    "pull_request.labeled.json",  # label "bug", not the trigger label
    "pull_request.opened.json",
)
GITHUB_DEADLINE_S = 10.0


@dataclass
class Load:
    sent: int
    accepted: int
    errors: dict[str, int]
    elapsed_s: float
    latencies_s: list[float]

    @property
    def rate(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the payloads ---------------------------------------------------------------------


def load_bodies() -> list[tuple[str, bytes]]:
    """(event, compact JSON body) for each sample, as GitHub sends it."""
    bodies = []
    for name in SAMPLE_FILES:
        payload = json.loads((SAMPLES / name).read_text())
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        bodies.append((name.split(".", 1)[0], body))
    return bodies


def signed(event: str, body: bytes, secret: bytes) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": f"sha256={digest}",
    }


# -- the load generator ---------------------------------------------------------------


async def send_all(url: str, secret: bytes, count: int, concurrency: int) -> Load:
    """``count`` signed deliveries, at most ``concurrency`` in flight."""
    bodies = load_bodies()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    accepted = 0
    next_index = 0

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def sender() -> None:
            nonlocal accepted, next_index
            while next_index < count:
                index = next_index
                next_index += 1
                event, body = bodies[index % len(bodies)]
                headers = signed(event, body, secret)
                started = time.perf_counter()
                try:
                    response = await client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                    errors[key] = errors.get(key, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code in (200, 202):
                    accepted += 1
                else:
                    key = f"HTTP {response.status_code}"
                    errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Load(count, accepted, errors, elapsed, latencies)


# -- servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited with {process.returncode}; its log:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server did not answer {url} within {timeout_s:.0f} s; see {log}")


@contextmanager
def running(
    cmd: list[str], env: dict[str, str], health_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_healthy(health_url, process, log, timeout_s=120)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def psycopg_url(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (``postgresql+psycopg://`` -> ``postgresql://``)."""
    scheme, rest = url.split("://", 1)
    return scheme.split("+", 1)[0] + "://" + rest


@contextmanager
def fresh_database(server_url: str | None, work: Path) -> Iterator[str]:
    """The URL of an empty database: on ``server_url``'s server, or an embedded one."""
    if server_url is None:
        embedded = EmbeddedPostgres(work / "postgres")
        try:
            yield embedded.start()
        finally:
            embedded.stop()
        return
    name = f"modelci_bench_{secrets.token_hex(4)}"
    admin = psycopg_url(server_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urllib.parse.urlsplit(server_url)
    try:
        yield urllib.parse.urlunsplit(parts._replace(path="/" + name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def processed_count(database_url: str) -> tuple[int, int]:
    """(stored, processed) deliveries."""
    with psycopg.connect(psycopg_url(database_url)) as conn:
        row = conn.execute("SELECT count(*), count(processed_at) FROM deliveries").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_processed(database_url: str, expected: int, timeout_s: float) -> tuple[int, int, float]:
    """Poll until ``expected`` deliveries are processed; (stored, processed, seconds waited)."""
    started = time.perf_counter()
    stored = processed = 0
    last_progress = started
    while time.perf_counter() - last_progress < timeout_s:
        now_stored, now_processed = processed_count(database_url)
        if now_processed != processed:
            last_progress = time.perf_counter()
        stored, processed = now_stored, now_processed
        if processed >= expected:
            break
        time.sleep(0.25)
    return stored, processed, time.perf_counter() - started


# -- the bare handler (the seed tutorial's approach) ----------------------------------


def bare_app(secret: bytes, out_file: Path) -> Any:
    from flask import Flask, abort, request

    app = Flask("bare")

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    @app.post("/webhooks/github")
    def webhook() -> tuple[str, int]:
        body = request.get_data()
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Hub-Signature-256", "")):
            abort(401)
        with open(out_file, "ab") as handle:
            handle.write(body + b"\n")
        return "", 202

    return app


def serve_bare(port: int, secret_file: Path, out_file: Path) -> None:
    import uvicorn

    app = bare_app(secret_file.read_bytes().strip(), out_file)
    uvicorn.run(app, host="127.0.0.1", port=port, interface="wsgi", log_level="warning")


# -- the run --------------------------------------------------------------------------


def bench_modelci(args: argparse.Namespace, work: Path, secret: bytes) -> tuple[Load, int, float]:
    secret_file = work / "webhook-secret"
    secret_file.write_bytes(secret)
    secret_file.chmod(0o600)
    with fresh_database(args.database_url, work) as database_url:
        port = free_port()
        env = {
            **os.environ,
            "MODELCI_DATA_DIR": str(work / "data"),
            "MODELCI_DATABASE_URL": database_url,
            "MODELCI_GITHUB_WEBHOOK_SECRET_PATH": str(secret_file),
            # No delivery sent here calls GitHub; a token only satisfies start-up.
            "MODELCI_GITHUB_TOKEN": "bench-token-never-used",
            "MODELCI_GITHUB_API_URL": "http://127.0.0.1:9",
        }
        env.pop("MODELCI_GITHUB_APP_ID", None)
        env.pop("MODELCI_GITHUB_PRIVATE_KEY_PATH", None)
        cmd = [
            sys.executable, "-m", "modelci", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
        ]  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        with running(cmd, env, f"{base}/healthz", work / "modelci-serve.log"):
            load = asyncio.run(
                send_all(f"{base}/webhooks/github", secret, args.count, args.concurrency)
            )
            stored, processed, waited = wait_processed(
                database_url, load.accepted, timeout_s=args.process_timeout
            )
        if stored != load.accepted:
            console.print(f"[red]stored {stored} deliveries, {load.accepted} were accepted[/]")
    return load, processed, waited


def bench_bare(args: argparse.Namespace, work: Path, secret: bytes) -> tuple[Load, int]:
    secret_file = work / "bare-secret"
    secret_file.write_bytes(secret)
    out_file = work / "bare-deliveries.jsonl"
    port = free_port()
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--serve-bare", str(port),
        str(secret_file), str(out_file),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with running(cmd, dict(os.environ), f"{base}/healthz", work / "bare.log"):
        load = asyncio.run(
            send_all(f"{base}/webhooks/github", secret, args.count, args.concurrency)
        )
    written = sum(1 for _ in out_file.open("rb")) if out_file.exists() else 0
    return load, written


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(
    args: argparse.Namespace, ours: Load, processed: int, waited: float, bare: Load, written: int
) -> bool:
    table = Table(title=f"Webhook intake: {args.count} deliveries, concurrency {args.concurrency}")
    for column in ("server", "accepted", "deliveries/s", "p50 ms", "p99 ms", "max ms", "kept"):
        table.add_column(column, justify="left" if column == "server" else "right")
    table.add_row(
        f"modelci serve --workers {args.workers}",
        f"{ours.accepted}/{ours.sent}",
        f"{ours.rate:.0f}",
        ms(ours.percentile(0.5)),
        ms(ours.percentile(0.99)),
        ms(max(ours.latencies_s, default=float("nan"))),
        f"{processed} processed",
    )
    table.add_row(
        "bare Flask handler (tutorial)",
        f"{bare.accepted}/{bare.sent}",
        f"{bare.rate:.0f}",
        ms(bare.percentile(0.5)),
        ms(bare.percentile(0.99)),
        ms(max(bare.latencies_s, default=float("nan"))),
        f"{written} lines in a file",
    )
    console.print(table)
    p99 = ours.percentile(0.99)
    console.print(
        f"modelci: {ours.rate:.0f} deliveries/s, p50 {ms(ours.percentile(0.5))} ms, "
        f"p99 {ms(p99)} ms; bare handler: {bare.rate:.0f}/s; "
        f"ratio {ours.rate / bare.rate if bare.rate else float('nan'):.2f}",
        highlight=False,
    )
    console.print(
        f"p99 vs GitHub's {GITHUB_DEADLINE_S:.0f} s deadline: {p99 / GITHUB_DEADLINE_S:.4f} "
        f"({GITHUB_DEADLINE_S / p99 if p99 else float('inf'):.0f}x headroom)",
        highlight=False,
    )
    if processed == ours.sent:
        after = f"all processed {waited:.1f} s after the last answer"
    else:
        after = f"gave up {waited:.1f} s after the last answer"
    console.print(
        f"processed {processed} of {ours.sent} sent ({ours.accepted} accepted); {after} "
        f"(end to end {processed / (ours.elapsed_s + waited):.0f} deliveries/s)",
        highlight=False,
    )
    ok = ours.accepted == ours.sent and processed == ours.sent and not ours.errors
    if ours.errors:
        console.print(f"[red]modelci errors: {ours.errors}[/]")
    if bare.errors:
        console.print(f"[yellow]bare handler errors: {bare.errors}[/]")
    if not ok:
        console.print(f"[bold red]FAIL:[/] processed {processed} != sent {ours.sent}")
    return ok


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000, help="deliveries to send")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    parser.add_argument("--workers", type=int, default=2, help="modelci serve --workers")
    parser.add_argument(
        "--database-url", help="a PostgreSQL server to create a throwaway database on"
    )
    parser.add_argument(
        "--process-timeout",
        type=float,
        default=120,
        help="give up when no delivery was processed for this many seconds",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    # /var/tmp, not /tmp: as root the embedded server runs as another user that
    # must reach its directory.
    work = Path(tempfile.mkdtemp(prefix="modelci-bench-intake-", dir="/var/tmp"))
    work.chmod(0o755)
    secret = secrets.token_hex(32).encode()
    try:
        console.print(f"modelci serve: sending {args.count} deliveries...", highlight=False)
        ours, processed, waited = bench_modelci(args, work, secret)
        console.print("bare handler: sending the same load...", highlight=False)
        bare, written = bench_bare(args, work, secret)
        return 0 if report(args, ours, processed, waited, bare, written) else 1
    finally:
        if args.keep:
            console.print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
