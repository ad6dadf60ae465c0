"""How long does getting a commit's DVC data take: the tutorial's way against modelci's?

Builds a real DVC repository (git + DVC from this interpreter; ``--remote local``:
a local-directory remote, the tutorial's best case; ``--remote s3``: the S3 API, as
the tutorials' remotes are, served by moto on loopback, so no network delay counts
against the tutorial): a directory of ``--files`` files totalling ``--small-mb`` MB tracked by
one .dvc file, plus one ``--big-mb`` MB file (random bytes, so nothing
compresses), pushed to the remote. Then, in one run, side by side:

- the tutorial's way (seeds 002 and 004: what their CI does every run): a fresh
  ``git clone`` and ``dvc pull`` into an empty directory;
- modelci cold: a checkout of the commit from modelci's mirror and
  ``DataFetcher.fetch`` on an empty per-repository DVC cache (the repository's
  first commit ever: everything comes from the remote, in the sandbox);
- modelci cached: another checkout of the same commit and ``DataFetcher.fetch``
  with the cache warm (0 bytes fetched; the data copied or reflinked from the
  cache into the work dir);
- and, as the floor of any way that copies the data into a fresh directory,
  ``cp -r --reflink=auto`` of it: on a file system without reflinks (ext4) the
  cached way cannot be faster than that.

Each is run ``--repeat`` times, the three taking turns (medians; cold on a
fresh cache each time), after a ``sync`` so that no run pays for the writes of
the one before. The remote's
files are in the page cache for all three. modelci's DVC environment
is built once before timing (once per server, not per repository) and kept in
``/var/tmp/modelci-bench-envs``. Needs root and bubblewrap (the fetch's sandbox).

    python bench/data_fetch.py [--small-mb 200] [--files 1000] [--big-mb 500]
                               [--repeat 3] [--quick] [--dir /var/tmp] [--remote local|s3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uv
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from modelci.data.fetch import DataFetcher
from modelci.data.fetchcap import cache_usage
from modelci.runner.cgroups import acquire_slot
from modelci.runner.checkout import Mirror, open_mirror
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import make_sandbox
from modelci.settings import Settings

console = Console() if Console().is_terminal else Console(width=120)
ENVS_DIR = Path("/var/tmp/modelci-bench-envs")  # kept between runs: the env takes ~15 s
MB = 1024 * 1024
REPOSITORY = "bench/dvc-data"
TARGET = 20.0  # cached must be this many times faster than the tutorial's way
BUCKET_URL = "s3://bench-bucket/data"
KEY_ID, SECRET = "AKIAMODELCIBENCH0001", "moto-bench-secret"


@dataclass(frozen=True)
class Remote:
    """Where the data is pushed, and the options a developer or the tutorial's CI
    (from its secrets) sets locally to reach it (``dvc remote modify --local``)."""

    url: str
    local_options: tuple[tuple[str, str], ...] = ()
    server_entry: str = ""  # modelci's side: the remote's section of dvc-remotes.toml


@contextmanager
def remote_for(kind: str, place: Path) -> Iterator[Remote]:
    if kind == "local":
        yield Remote(str(place / "remote"))
        return
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").disabled = True  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="bench-bucket")
    os.environ["BENCH_KEY_ID"], os.environ["BENCH_SECRET"] = KEY_ID, SECRET
    try:
        yield Remote(
            BUCKET_URL,
            (("endpointurl", endpoint), ("access_key_id", KEY_ID), ("secret_access_key", SECRET)),
            f'[repositories."{REPOSITORY}".remotes.storage]\n'
            'access_key_id_env = "BENCH_KEY_ID"\nsecret_access_key_env = "BENCH_SECRET"\n'
            f'endpoint_url = "{endpoint}"\n',
        )
    finally:
        server.stop()


def configure_remote(repo: Path, remote: Remote) -> None:
    for option, value in remote.local_options:
        dvc(repo, "remote", "modify", "--local", "storage", option, value)


def run(cmd: list[str], cwd: Path | None = None) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def dvc(path: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd=path)


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for start in range(0, size, 8 * MB):
            out.write(os.urandom(min(8 * MB, size - start)))


def build_repository(
    place: Path, files: int, small_mb: float, big_mb: float, remote: Remote
) -> Path:
    """The repository and its pushed remote; returns the repository."""
    repo = place / "repo"
    repo.mkdir()
    run(["git", "init", "--quiet"], cwd=repo)
    run(["git", "config", "user.email", "bench@example.com"], cwd=repo)
    run(["git", "config", "user.name", "bench"], cwd=repo)
    dvc(repo, "init", "--quiet")
    dvc(repo, "remote", "add", "-d", "storage", remote.url)
    configure_remote(repo, remote)
    small = repo / "data" / "small"
    small.mkdir(parents=True)
    each = int(small_mb * MB) // max(files, 1)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("writing the data", total=files + 1)
        for index in range(files):
            write_random(small / f"part-{index:05d}.bin", each)
            progress.advance(task)
        write_random(repo / "data" / "big.bin", int(big_mb * MB))
        progress.advance(task)
    with console.status("dvc add, dvc push, git commit"):
        dvc(repo, "add", "--quiet", "data/small", "data/big.bin")
        dvc(repo, "push", "--quiet")
        run(["git", "add", "--all"], cwd=repo)
        run(["git", "commit", "--quiet", "-m", "data"], cwd=repo)
    return repo


@dataclass(frozen=True)
class Timing:
    seconds: float
    bytes_fetched: int
    fetch_seconds: float  # modelci: the fetch alone, without the checkout


def tutorial_way(repo: Path, work: Path, remote: Remote) -> Timing:
    """A fresh clone and `dvc pull`, as the tutorials' CI does every run (its secrets
    set as the remote's local options)."""
    dst = work / "clone"
    started = time.perf_counter()
    run(["git", "clone", "--quiet", str(repo), str(dst)])
    configure_remote(dst, remote)
    pulled = time.perf_counter()
    dvc(dst, "pull", "--quiet")
    seconds = time.perf_counter() - started
    fetched = cache_usage(dst / ".dvc" / "cache")
    shutil.rmtree(dst)
    return Timing(seconds, fetched, seconds - (pulled - started))


def plain_copy(repo: Path, work: Path) -> Timing:
    """`cp -r` of the data alone: what any copy into a work dir costs on this disk."""
    started = time.perf_counter()
    run(["cp", "-r", "--reflink=auto", str(repo / "data"), str(work / "copy")])
    seconds = time.perf_counter() - started
    shutil.rmtree(work / "copy")
    return Timing(seconds, 0, seconds)


def modelci_way(fetcher: DataFetcher, mirror: Mirror, sha: str, settings: Settings) -> Timing:
    """A checkout from modelci's mirror and DataFetcher.fetch, as an evaluation does."""
    # A machine-wide slot, as an evaluation takes: tests may be using the others.
    with acquire_slot(settings.slots_dir, settings.max_parallel_runs) as slot:
        started = time.perf_counter()
        with mirror.checkout(sha, settings.runs_dir) as workdir:
            checked_out = time.perf_counter()
            result = fetcher.fetch(
                workdir,
                repository=REPOSITORY,
                cache_key=mirror.url,
                slot=slot,
                log_path=settings.logs_dir / "bench.fetch.log",
            )
            seconds = time.perf_counter() - started
            assert result is not None
            if not (workdir / "data" / "big.bin").is_file():
                raise SystemExit("the fetch left no data/big.bin in the work dir")
    return Timing(seconds, result.bytes_fetched, seconds - (checked_out - started))


def measure(ways: dict[str, Callable[[], Timing]], repeat: int) -> dict[str, list[Timing]]:
    """Each way ``repeat`` times, taking turns, so that a change in the machine's load
    falls on all of them rather than on whichever ran then."""
    timings: dict[str, list[Timing]] = {name: [] for name in ways}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=repeat * len(ways))
        for _ in range(repeat):
            for name, once in ways.items():
                progress.update(task, description=name)
                # The previous run's writes are flushed first (untimed): each run starts
                # with the disk idle rather than paying for the one before.
                os.sync()
                timings[name].append(once())
                progress.advance(task)
    return timings


def median(timings: list[Timing], field: str = "seconds") -> float:
    return statistics.median(float(getattr(t, field)) for t in timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-mb", type=float, default=200, help="the tracked directory's size")
    parser.add_argument("--files", type=int, default=1000, help="files in that directory")
    parser.add_argument("--big-mb", type=float, default=500, help="the one big file's size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 4 MB, 20 files, 4 MB")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("/var/tmp"),
        help="where the repository, its remote and modelci's data dir go (its file system "
        "decides whether copies can be reflinks)",
    )
    parser.add_argument(
        "--remote",
        choices=("local", "s3"),
        default="local",
        help="local: a directory on this disk (the tutorial's best case); s3: the S3 API "
        "(moto on loopback), as the tutorials' CI pulls from",
    )
    args = parser.parse_args()
    if args.quick:
        args.small_mb, args.files, args.big_mb, args.repeat = 4, 20, 4, 1
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        raise SystemExit("needs root and bubblewrap (the fetch's sandbox): see scripts/setup")
    # Not under a 0700 temporary dir: the sandbox's uid reaches the remote and data dir.
    place = Path(tempfile.mkdtemp(prefix="modelci-bench-dvc-", dir=args.dir))
    place.chmod(0o755)
    try:
        report(place, args)
    finally:
        shutil.rmtree(place, ignore_errors=True)


def report(place: Path, args: argparse.Namespace) -> None:
    with remote_for(args.remote, place) as remote:
        compare_ways(place, args, remote)


def compare_ways(place: Path, args: argparse.Namespace, remote: Remote) -> None:
    repo = build_repository(place, args.files, args.small_mb, args.big_mb, remote)
    total = args.small_mb + args.big_mb
    settings = Settings(data_dir=place / "data", database_url=f"sqlite:///{place}/store.db")
    settings.prepare_data_dir()
    settings.dvc_remotes_path.write_text(
        f'[repositories."{REPOSITORY}"]\nallowed_urls = ["{remote.url}"]\n'
        f"max_fetch_mb = {int(total * 2) + 64}\n" + remote.server_entry
    )
    environments = EnvironmentManager(
        envs_dir=ENVS_DIR, python=settings.python, uv_bin=uv.find_uv_bin()
    )
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    ENVS_DIR.chmod(0o755)
    sandbox = make_sandbox()
    mirror = open_mirror(str(repo), settings.mirrors_dir)
    sha = mirror.resolve("HEAD")

    def fetcher(cache_root: Path) -> DataFetcher:
        return DataFetcher(
            sandbox=sandbox,
            environments=environments,
            cache_root=cache_root,
            remotes_file=settings.dvc_remotes_path,
        )

    with console.status("building modelci's DVC environment (once per server)"):
        started = time.perf_counter()
        fetcher(settings.dvc_cache_dir).dvc_environment()
        env_s = time.perf_counter() - started
    work = place / "tutorial"
    work.mkdir()
    warm = fetcher(settings.dvc_cache_dir)
    with console.status("filling the cache of the cached way: the repository's first commit"):
        modelci_way(warm, mirror, sha, settings)

    def cold() -> Timing:
        root = place / f"cold-cache-{time.monotonic_ns()}"
        try:
            return modelci_way(fetcher(root), mirror, sha, settings)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    runs = measure(
        {
            "tutorial: git clone + dvc pull": lambda: tutorial_way(repo, work, remote),
            "modelci cold (empty cache)": cold,
            "modelci cached (second checkout)": lambda: modelci_way(warm, mirror, sha, settings),
            "floor: cp -r of the same data": lambda: plain_copy(repo, work),
        },
        args.repeat,
    )
    tutorial, cold_runs, cached, floor = runs.values()
    base = median(tutorial)
    table = Table(
        title=f"A commit's DVC data: {args.files} files / {args.small_mb:g} MB + one "
        f"{args.big_mb:g} MB file, {args.remote} remote (medians of {args.repeat}; best: the "
        "fastest run)"
    )
    columns = ("way", "seconds", "best", "of which data", "MB fetched", "tutorial / this")
    for column in columns:
        table.add_column(column, justify="left" if column == "way" else "right")
    for name, timings in runs.items():
        seconds = median(timings)
        table.add_row(
            name,
            f"{seconds:.2f}",
            f"{min(t.seconds for t in timings):.2f}",
            f"{median(timings, 'fetch_seconds'):.2f}",
            f"{median(timings, 'bytes_fetched') / MB:.1f}",
            f"{base / seconds:.1f}x",
        )
    console.print(table)
    ratio = base / median(cached)
    console.print(
        f"modelci's DVC environment built in {env_s:.1f} s (once per server, not timed above). "
        f"Cached vs the tutorial's way: {ratio:.1f}x (target {TARGET:g}x: "
        f"{'met' if ratio >= TARGET else 'NOT met'}); cold: {base / median(cold_runs):.1f}x. "
        f"Cached takes {median(cached) / median(floor):.1f}x the time of a plain copy."
    )
    if median(cached, "bytes_fetched") != 0:
        raise SystemExit("the cached fetch brought bytes: the cache was not used")


if __name__ == "__main__":
    main()
