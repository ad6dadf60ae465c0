"""The ``modelci`` command line: the edge where errors become exit codes.

Exit codes: 0 the gates pass, 1 a gated metric regressed, 2 an error (with a
message that says what went wrong and what to do).
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from modelci.errors import EXIT_ERROR, EXIT_OK, EXIT_REGRESSION, ModelCIError
from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, summary_json
from modelci.runner.config import Overrides
from modelci.settings import Settings, get_settings

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def _settings() -> Settings:
    try:
        return get_settings()
    except Exception as exc:  # pydantic's ValidationError: bad MODELCI_* values
        _fail(f"invalid MODELCI_* environment settings: {exc}")
        raise


def _guarded(func: F) -> F:
    """Turn modelci's errors into messages and exit codes; never show a traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModelCIError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception:
            with tempfile.NamedTemporaryFile(
                "w", prefix="modelci-crash-", suffix=".txt", delete=False
            ) as handle:
                traceback.print_exc(file=handle)
            _fail(f"internal error in modelci; please report it with the details in {handle.name}")
        return None

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def _print_result(result: EvaluationResult, fmt: str) -> int:
    from modelci.evaluate import report

    head, base = result.head, result.base
    if fmt == "json":
        payload: dict[str, Any] = summary_json(result)
        if result.comparison is not None:
            payload = {**report.render_json(result.comparison), **payload}
        else:
            payload["passed"] = False
        click.echo(json.dumps(payload, indent=2, allow_nan=False))
    elif fmt == "markdown":
        if result.comparison is not None:
            click.echo(
                report.render_markdown(result.comparison, head_sha=head.sha, base_sha=base.sha)
            )
        else:
            click.echo(f"### modelci evaluation failed\n\n```\n{result.error}\n```")
    elif result.comparison is not None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=120)  # logs and CI: no need to squeeze the table
        console.print(
            report.render_rich(
                result.comparison,
                head_label=f"head {head.sha[:7]} ({head.ref})",
                base_label=f"base {base.sha[:7]} ({base.ref})",
            )
        )
        reused = " (base result reused)" if base.reused_from else ""
        console.print(f"[dim]evaluated in {result.seconds:.1f}s{reused}[/]", highlight=False)
    if result.error:
        _fail(result.error)
    assert result.comparison is not None
    return EXIT_OK if result.comparison.passed else EXIT_REGRESSION


def _evaluate(
    settings: Settings, request: EvaluationRequest, *, fmt: str, unsafe: bool, quiet: bool
) -> int:
    from modelci.progress import progress_reporter
    from modelci.service.runtime import evaluator_for

    with (
        progress_reporter(quiet=quiet) as reporter,
        evaluator_for(settings, unsafe=unsafe, reporter=reporter) as evaluator,
    ):
        result = evaluator.evaluate(request)
    return _print_result(result, fmt)


@click.group()
@click.version_option(package_name="modelci")
def cli() -> None:
    """modelci: CI, delivery and training for the models in your git repositories."""


_format = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "json"]),
    default="table",
    show_default=True,
    help="How to print the comparison.",
)
_unsafe = click.option(
    "--unsafe-no-sandbox",
    "unsafe",
    is_flag=True,
    help="Run repository code without bubblewrap isolation (trusted code only).",
)
_quiet = click.option("--quiet", "-q", is_flag=True, help="Do not show progress.")


@cli.command()
@click.argument("repo")
@click.option("--base", required=True, help="The base ref (branch, tag or sha).")
@click.option("--head", required=True, help="The head ref to evaluate against the base.")
@click.option(
    "--merge-base/--no-merge-base",
    default=False,
    show_default=True,
    help="Compare against the merge base of base and head, as a pull request does.",
)
@click.option("--command", help="Training command, for repositories without modelci.yaml.")
@click.option("--metrics-file", help="JSON metrics file the command writes (e.g. result.txt).")
@click.option("--predictions-file", help="Per-example predictions file (JSON), optional.")
@click.option("--timeout", type=float, help="Wall-clock limit per run, in seconds.")
@_format
@_unsafe
@_quiet
@_guarded
def evaluate(
    repo: str,
    base: str,
    head: str,
    merge_base: bool,
    command: str | None,
    metrics_file: str | None,
    predictions_file: str | None,
    timeout: float | None,
    fmt: str,
    unsafe: bool,
    quiet: bool,
) -> None:
    """Train and evaluate HEAD and BASE of REPO (a path or git URL) and compare them."""
    settings = _settings()
    overrides = Overrides(
        command=command or settings.default_command,
        metrics_file=metrics_file or settings.default_metrics_file,
        predictions_file=predictions_file,
        timeout_s=timeout,
    )
    request = EvaluationRequest(
        repo=repo, base=base, head=head, overrides=overrides, merge_base=merge_base
    )
    sys.exit(_evaluate(settings, request, fmt=fmt, unsafe=unsafe, quiet=quiet))


@cli.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    help="Where to create the sample repository (default: in the data dir).",
)
@_format
@_unsafe
@_quiet
@_guarded
def demo(directory: Path | None, fmt: str, unsafe: bool, quiet: bool) -> None:
    """The whole loop on a sample repository: evaluate a pull request head vs base,
    deliver main, merge the pull request if it passes and deliver the merge, then
    serve the champion and make one prediction."""
    import functools
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    from rich.markup import escape

    from modelci import demo as sample
    from modelci.deliver.delivery import DeliveryResult, deliverer_for
    from modelci.evaluate import report
    from modelci.evaluate.evaluation import Reporter
    from modelci.progress import progress_reporter

    started = time.monotonic()
    settings = _settings()
    repo = sample.create_demo_repository(
        directory or settings.data_dir / "demo" / "sklearn-classifier"
    )
    # The story goes to stdout with the table; with --format json/markdown stdout
    # carries only that document, and the story goes to stderr.
    # Soft wrap: the commands printed at the end must stay copyable.
    say = functools.partial(Console(stderr=fmt != "table", highlight=False).print, soft_wrap=True)
    # MLflow logs its store's set-up at INFO; the progress display says what happens.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    say(
        f"[bold]1. Pull request[/] in the sample repository {escape(str(repo.path))}: branch "
        f"[cyan]{repo.head}[/] changes params.json; evaluating it against [cyan]{repo.base}[/] "
        f"(and delivering {repo.base} meanwhile)"
    )
    request = EvaluationRequest(
        repo=str(repo.path), base=repo.base, head=repo.head, merge_base=True
    )
    with (
        deliverer_for(settings, unsafe=unsafe) as deliverer,
        ThreadPoolExecutor(1, thread_name_prefix="modelci-deliver") as pool,
    ):
        evaluator = deliverer.evaluator

        def deliver(sha: str, reporter: Reporter | None, label: str) -> DeliveryResult:
            steps = sample.DeliverySteps(reporter, label) if reporter else None
            return deliverer.deliver(str(repo.path), sha, actor="modelci demo", reporter=steps)

        def show(done: DeliveryResult) -> None:
            if done.error is not None:
                _fail(done.error)
            color = "green" if done.promoted else "yellow"
            before = done.champion_before
            against = f" [dim](the champion was v{before.version})[/]" if before else ""
            say(f"   [bold {color}]{done.title}[/]{against}")
            if done.decision is not None:
                for line in done.decision.reasons:
                    say(f"     [red]✗[/] {escape(line)}")
                for line in done.decision.checks:
                    say(f"     [green]✓[/] {escape(line)}")

        with progress_reporter(quiet=quiet) as reporter:
            # main's commit is delivered while the pull request trains: the base's
            # result is reused from the second run on, which leaves a core free.
            first = pool.submit(deliver, repo.base_sha, reporter, repo.base)
            result = (evaluator.with_reporter(reporter) if reporter else evaluator).evaluate(
                request
            )
            deliveries = [first.result()]
        if fmt != "json":
            _print_result(result, fmt)
        elif result.error:
            _fail(result.error)
        assert result.comparison is not None
        passed = result.comparison.passed
        verdict = "passes its gates" if passed else "regressed a gated metric"
        say(f"[bold]Verdict:[/] the pull request {verdict}.")
        say(
            f"[bold]2. Delivery of {repo.base}[/] ({repo.base_sha[:7]}), trained meanwhile: "
            "registered in MLflow, promoted if better"
        )
        show(deliveries[0])
        merge_sha = None
        if passed:
            merge_sha = sample.merge_pull_request(repo)
            say(
                f"[bold]3. Merged[/] {repo.head} into {repo.base} (git merge --no-ff); "
                f"delivery of the merge commit {merge_sha[:7]}"
            )
            with progress_reporter(quiet=quiet) as reporter:
                deliveries.append(deliver(merge_sha, reporter, "merge"))
            show(deliveries[1])
        else:
            say(
                f"[bold]3. Not merged:[/] the pull request regressed, so {repo.base} "
                "keeps its version and the champion stays."
            )
        name = deliveries[0].model_name
        registry = deliverer.registry
        champion = registry.champion(name)
        served = None
        if champion is None:
            say(f"[bold]4. Nothing to serve:[/] no version of {name} passed its floors.")
        else:
            say(f"[bold]4. Serving[/] {name} v{champion.version}, the champion")
            with progress_reporter(quiet=quiet) as reporter:
                served = sample.serve_and_predict(
                    settings,
                    registry,
                    name,
                    sessions=evaluator.database().session,
                    unsafe=unsafe,
                    reporter=reporter,
                )
            shown = list(served.inputs.items())
            row = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in shown[:4]
            )
            more = f", … ({len(shown)} columns)" if len(shown) > 4 else ""
            say(f"   POST {served.url}")
            say(f"   input  {escape(row)}{more}")
            say(
                f"   [bold green]prediction {served.predictions[0]!r}[/] "
                f"from {served.model} v{served.version} (commit {(served.sha or '')[:7]})"
            )
        commands = sample.next_steps(settings, name, registry.ui_command())
    seconds = time.monotonic() - started
    say(f"[bold]Go further:[/] [dim](demo took {seconds:.0f}s)[/]")
    for command, note in commands:
        say(f"   [dim]# {escape(note)}[/]")
        say(f"   {command}", markup=False)
    if fmt == "json":
        payload = {
            **report.render_json(result.comparison),
            **summary_json(result),
            "merged": merge_sha,
            "deliveries": [sample.delivery_json(d) for d in deliveries],
            "champion": None
            if champion is None
            else {"model": name, "version": champion.version, "sha": champion.sha},
            "prediction": None
            if served is None
            else {
                "url": served.url,
                "model": served.model,
                "version": served.version,
                "sha": served.sha,
                "inputs": served.inputs,
                "predictions": served.predictions,
            },
            "next_steps": [{"command": c, "note": n} for c, n in commands],
            "demo_seconds": round(seconds, 3),
        }
        click.echo(json.dumps(payload, indent=2, allow_nan=False))
    # The demo worked whatever the verdict: only an error is a failure here.
    sys.exit(EXIT_OK)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--workers",
    type=int,
    help="Worker threads in this process (default MODELCI_WORKERS; 0: receiver and API only, "
    "with `modelci worker` elsewhere).",
)
@click.option(
    "--poll",
    is_flag=True,
    help="Also watch MODELCI_POLL_REPOSITORIES through the API (no public URL needed).",
)
@_unsafe
@_guarded
def serve(host: str, port: int, workers: int | None, poll: bool, unsafe: bool) -> None:
    """Run the webhook receiver, the API and workers in one process."""
    from modelci.service.server import run_server

    settings = _settings()
    if poll and not settings.poll_repositories:
        _fail(
            "--poll needs repositories to watch: set MODELCI_POLL_REPOSITORIES to a JSON "
            "list, e.g. '[\"octo/model\"]'"
        )
    run_server(
        settings,
        host=host,
        port=port,
        unsafe=unsafe,
        workers=settings.workers if workers is None else workers,
        poll=poll,
    )


@cli.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    type=click.Choice(["events", "evaluations", "gpu"]),
    help="Queues to take jobs from (default: events and evaluations). `gpu` takes the "
    "jobs whose commit sets limits.gpu; a GPU machine runs `--queue gpu` alone.",
)
@click.option("--concurrency", type=int, help="Jobs at once (default MODELCI_WORKERS).")
@_unsafe
@_guarded
def worker(queues: tuple[str, ...], concurrency: int | None, unsafe: bool) -> None:
    """Run workers only, against the PostgreSQL in MODELCI_DATABASE_URL."""
    from modelci.service.jobs import QUEUE_EVALUATIONS, QUEUE_EVENTS
    from modelci.service.server import run_workers

    settings = _settings()
    run_workers(
        settings,
        queues=list(queues) or [QUEUE_EVENTS, QUEUE_EVALUATIONS],
        concurrency=concurrency or settings.workers,
        unsafe=unsafe,
    )


@cli.command()
@click.option("--offline", is_flag=True, help="Do not call the GitHub API.")
@_guarded
def doctor(offline: bool) -> None:
    """Check the settings, the App's key and this machine; say what is missing."""
    from modelci.doctor import run_checks

    console = Console()
    checks = run_checks(_settings(), online=not offline)
    for check in checks:
        mark = "[yellow]![/]" if check.warning else "[green]✓[/]" if check.ok else "[red]✗[/]"
        console.print(f"{mark} [bold]{check.name}[/]: {check.message}", highlight=False)
    sys.exit(EXIT_OK if all(c.ok for c in checks) else EXIT_ERROR)


def _actor(actor: str | None) -> str:
    import getpass

    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@cli.command()
@click.argument("repo")
@click.option("--ref", default="HEAD", show_default=True, help="Commit, branch or tag to deliver.")
@click.option("--actor", help="Who is delivering (default: $USER).")
@_unsafe
@_quiet
@_guarded
def deliver(repo: str, ref: str, actor: str | None, unsafe: bool, quiet: bool) -> None:
    """Train REPO at --ref, register it in MLflow, and promote it if it passes the gates.

    Exit codes: 0 promoted, 1 registered but refused by the gates, 2 error.
    """
    from modelci.deliver.delivery import deliverer_for
    from modelci.progress import progress_reporter

    settings = _settings()
    with (
        progress_reporter(quiet=quiet) as reporter,
        deliverer_for(settings, unsafe=unsafe, reporter=reporter) as deliverer,
    ):
        result = deliverer.deliver(repo, ref, actor=_actor(actor))
    console = Console()
    if result.error is not None:
        _fail(result.error)
    color = "green" if result.promoted else "yellow"
    console.print(f"[bold {color}]{result.title}[/]", highlight=False)
    if result.decision is not None:
        for line in result.decision.reasons:
            console.print(f"  [red]✗[/] {line}", highlight=False)
        for line in result.decision.checks:
            console.print(f"  [green]✓[/] {line}", highlight=False)
    console.print(f"[dim]commit {result.sha}  MLflow run {result.run_id}[/]", highlight=False)
    sys.exit(result.exit_code)


@cli.group()
def models() -> None:
    """Registered models: versions, the champion, promotion and rollback."""


def _models_deliverer() -> Any:
    from modelci.deliver.delivery import deliverer_for

    return deliverer_for(_settings())


@models.command("list")
@_guarded
def models_list() -> None:
    """Every registered model with its champion."""
    from rich.table import Table

    with _models_deliverer() as deliverer:
        registry = deliverer.registry
        table = Table("model", "champion", "versions", "commit", "metrics")
        for name in registry.model_names():
            versions = registry.list_versions(name)
            champion = next((v for v in versions if "champion" in v.aliases), None)
            metrics = champion.metrics if champion else {}
            table.add_row(
                name,
                f"v{champion.version}" if champion else "-",
                str(len(versions)),
                (champion.sha or "")[:7] if champion else "",
                ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:4]),
            )
        console = Console()
        console.print(table)
        console.print(f"[dim]MLflow UI: {registry.ui_command()}[/]", highlight=False)


@models.command("show")
@click.argument("name")
@_guarded
def models_show(name: str) -> None:
    """Versions, champion, metrics, commits and the event history of NAME."""
    from rich.table import Table

    with _models_deliverer() as deliverer:
        versions = deliverer.registry.list_versions(name)
        if not versions:
            _fail(f"no registered model named {name}; see: modelci models list")
        table = Table("version", "", "commit", "trained", "metrics", title=name)
        for v in reversed(versions):
            table.add_row(
                str(v.version),
                "champion" if "champion" in v.aliases else "",
                (v.sha or "")[:7],
                v.trained_at.strftime("%Y-%m-%d %H:%M") if v.trained_at else "",
                ", ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items())[:6]),
            )
        history = Table("when", "version", "action", "by", "reason", title="history")
        for e in deliverer.events(name):
            history.add_row(
                e["at"].strftime("%Y-%m-%d %H:%M") if e["at"] else "",
                str(e["version"] or ""),
                e["action"],
                e["actor"],
                e["reason"],
            )
        console = Console()
        console.print(table)
        console.print(history)


@models.command("promote")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--reason", required=True, help="Why, for the history.")
@click.option("--actor", help="Who (default: $USER).")
@_guarded
def models_promote(name: str, version: int, reason: str, actor: str | None) -> None:
    """Make VERSION of NAME the champion by hand."""
    with _models_deliverer() as deliverer:
        chosen = deliverer.promote(name, version, actor=_actor(actor), reason=reason)
    Console().print(f"[green]{name} v{chosen.version} is the champion[/]", highlight=False)


@models.command("rollback")
@click.argument("name")
@click.option("--reason", required=True, help="Why, for the history.")
@click.option("--actor", help="Who (default: $USER).")
@_guarded
def models_rollback(name: str, reason: str, actor: str | None) -> None:
    """Move NAME's champion back to the previous champion."""
    with _models_deliverer() as deliverer:
        chosen = deliverer.rollback(name, actor=_actor(actor), reason=reason)
    Console().print(
        f"[green]{name} rolled back: v{chosen.version} is the champion[/]", highlight=False
    )


@cli.command()
@click.argument("name")
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=20, show_default=True, help="At most."
)
@click.option("--since", help="Only newer ones: a duration ago (30m, 12h, 7d) or an ISO time.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table, or one JSON document (a list, newest first).",
)
@_guarded
def predictions(name: str, limit: int, since: str | None, fmt: str) -> None:
    """The predictions served for model NAME, newest first (from the prediction log)."""
    from rich.markup import escape
    from rich.table import Table

    from modelci.serving.predictions import parse_since, prediction_json
    from modelci.store import records as store
    from modelci.store.db import open_database

    after = parse_since(since) if since else None
    database = open_database(_settings())
    try:
        with database.session() as session:
            found = [
                prediction_json(row)
                for row in store.list_predictions(
                    session, model_name=name, limit=limit, since=after
                )
            ]
    finally:
        database.close()
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
        return
    table = Table("time", "version", "rows", "latency", "inputs", "outputs", title=name)
    for row in found:
        inputs = row["inputs"] if isinstance(row["inputs"], dict) else {}
        rows = len(row["outputs"]) if isinstance(row["outputs"], list) else 0
        table.add_row(
            row["created_at"][:19],
            str(row["version"]),
            str(rows),
            f"{row['latency_ms']:.1f} ms" if row["latency_ms"] is not None else "",
            escape(", ".join(f"{k}={v[:3]}" for k, v in list(inputs.items())[:4])[:80]),
            escape(json.dumps(row["outputs"][:5] if rows else row["outputs"])[:60]),
        )
    console = Console()
    console.print(table)
    if not found:
        console.print(f"[dim]no logged predictions for {escape(name)}[/]", highlight=False)


def main() -> None:
    cli(prog_name="modelci")
