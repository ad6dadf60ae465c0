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
from rich.markup import escape

from modelci.errors import EXIT_ERROR, EXIT_OK, EXIT_REGRESSION, ModelCIError
from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, summary_json
from modelci.runner.config import Overrides
from modelci.settings import Settings, get_settings

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
# Console width when stdout is not a terminal: tables keep whole names and numbers.
_WIDE = 400


def _fail(message: str, code: int = EXIT_ERROR) -> None:
    # soft_wrap: a message names paths and commands to copy; the terminal wraps
    # lines itself, and a log or CI must get them whole, not cut at 80 columns.
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False
    )
    sys.exit(code)


def _console() -> Console:
    """stdout: a terminal's width, else wide enough that no name or number is cut."""
    console = Console()
    return console if console.is_terminal else Console(width=_WIDE, soft_wrap=True)


def _settings() -> Settings:
    """The settings, with the global --data-dir on top (a bad MODELCI_* value raises
    ConfigError, which _guarded prints in one line)."""
    context = click.get_current_context(silent=True)
    data_dir = context.find_root().params.get("data_dir") if context else None
    return get_settings(**({"data_dir": data_dir} if data_dir else {}))


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
        if result.comparison.head_only:
            console.print(report.HEAD_ONLY_NOTE, highlight=False)
        reused = " (base result reused)" if base.reused_from else ""
        if base.cache_miss:
            reused = f" (base: {escape(base.cache_miss)})"
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


class Duration(click.ParamType[float]):
    """Seconds, or 90s / 10m / 1h: what modelci.yaml's limits.timeout takes."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> float:
        from pydantic import ValidationError

        from modelci.runner.config import LimitsConfig

        try:
            return float(LimitsConfig.model_validate({"timeout": value}).timeout)
        except ValidationError:
            self.fail(
                f"{value!r} is not a duration: use seconds (600) or 90s, 10m, 1h "
                "(more than 0, at most 24h)",
                param,
                ctx,
            )


class VersionNumber(click.ParamType[int]):
    """A model version: 2 or v2, as `models show` prints it."""

    name = "version"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> int:
        text = str(value).strip()
        number = text[1:] if text[:1] in ("v", "V") else text
        if not number.isdigit() or int(number) < 1:
            self.fail(f"{value!r} is not a version: give its number, e.g. 2 or v2", param, ctx)
        return int(number)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where modelci keeps mirrors, environments, logs and the embedded database "
    "(default: MODELCI_DATA_DIR, else ~/.local/share/modelci, /var/lib/modelci as root).",
)
@click.version_option(package_name="modelci")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """modelci: CI, delivery and training for the models in your git repositories.

    \b
    Examples:
      modelci demo                                   # the whole loop on a sample model
      modelci evaluate . --base main --head my-branch
      modelci deliver . --ref main
      modelci models list
      modelci --data-dir /srv/modelci doctor --offline
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_OK)


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
@click.option(
    "--timeout",
    type=Duration(),
    help="Wall-clock limit per run: seconds or 90s, 10m, 1h (default: limits.timeout in "
    "modelci.yaml, else 30m).",
)
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
    """Train and evaluate HEAD and BASE of REPO (a path or git URL) and compare them.

    \b
    Examples:
      modelci evaluate . --base main --head my-branch
      modelci evaluate . --base main --head my-branch --merge-base --format markdown
      modelci evaluate https://example.com/org/model.git --base v1.2 --head 3f2a9c1 --format json
      modelci evaluate . --base main --head my-branch --timeout 10m
      modelci evaluate . --base HEAD~1 --head HEAD --command 'python demo.py' --metrics-file out.txt

    \b
    Exit codes:
      0  the gates pass
      1  a gated metric regressed
      2  an error (the message says what went wrong and what to do)
    """
    settings = _settings()
    overrides = Overrides(
        command=command,
        metrics_file=metrics_file,
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
    serve the champion and make one prediction.

    Running it again in the same data dir reuses what is already registered.

    \b
    Examples:
      modelci demo
      modelci demo --format json
      modelci --data-dir /tmp/modelci-demo demo --dir /tmp/sample-model
    """
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
        commands = sample.next_steps(settings, name)
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
            "deliveries": [d.to_json() for d in deliveries],
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
    """Run the webhook receiver, the API and workers in one process.

    \b
    Examples:
      modelci serve
      modelci serve --host 127.0.0.1 --port 8000 --workers 4
      MODELCI_POLL_REPOSITORIES=octo/model modelci serve --poll
    """
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
    """Run workers only, against the PostgreSQL in MODELCI_DATABASE_URL.

    \b
    Examples:
      modelci worker
      modelci worker --queue gpu --concurrency 1
    """
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
    """Check the settings, the App's key and this machine; say what is missing.

    \b
    Examples:
      modelci doctor
      modelci doctor --offline

    \b
    Exit codes:
      0  nothing failed (notes and warnings may be shown)
      2  a check failed; its line says what to fix
    """
    from modelci.doctor import run_checks

    console = _console()
    checks = run_checks(_settings(), online=not offline)
    for check in checks:
        mark = "[yellow]![/]" if check.warning else "[green]✓[/]" if check.ok else "[red]✗[/]"
        if check.note:
            mark = "[blue]-[/]"
        console.print(
            f"{mark} [bold]{check.name}[/]: {escape(check.message)}",
            highlight=False,
            soft_wrap=True,
        )
    sys.exit(EXIT_OK if all(c.ok for c in checks) else EXIT_ERROR)


@cli.command("mlflow-ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, help="Port to listen on.")
@_guarded
def mlflow_ui(host: str, port: int) -> None:
    """MLflow's UI on the runs and models modelci registered, until Ctrl+C.

    Starts the embedded database (or uses MODELCI_DATABASE_URL) and runs MLflow's
    UI on the same tracking store and artifacts as modelci; Ctrl+C or SIGTERM
    stops both.

    \b
    Examples:
      modelci mlflow-ui
      modelci --data-dir /srv/modelci mlflow-ui --port 5001
    """
    from modelci.mlflowui import run_mlflow_ui

    say = Console(stderr=True, soft_wrap=True, highlight=False).print
    sys.exit(run_mlflow_ui(_settings(), host=host, port=port, say=say))


def _actor(actor: str | None) -> str:
    import getpass

    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


_json_or_table = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for people, or JSON for scripts.",
)


@cli.command()
@click.argument("repo")
@click.option("--ref", default="HEAD", show_default=True, help="Commit, branch or tag to deliver.")
@click.option("--actor", help="Who is delivering (default: $USER).")
@_json_or_table
@_unsafe
@_quiet
@_guarded
def deliver(repo: str, ref: str, actor: str | None, fmt: str, unsafe: bool, quiet: bool) -> None:
    """Train REPO at --ref, register it in MLflow, and promote it if it passes the gates.

    A commit already registered with the same environment and modelci.yaml is
    not trained again: its version is reused, and the output says so.

    \b
    Examples:
      modelci deliver . --ref main
      modelci deliver https://example.com/org/model.git --ref 3f2a9c1 --actor ci --format json

    \b
    Exit codes:
      0  the delivered version is the champion
      1  registered (or reused) but not the champion: refused by the gates
      2  an error (the message says what went wrong and what to do)
    """
    from modelci.deliver.delivery import deliverer_for
    from modelci.progress import progress_reporter

    settings = _settings()
    with (
        progress_reporter(quiet=quiet) as reporter,
        deliverer_for(settings, unsafe=unsafe, reporter=reporter) as deliverer,
    ):
        result = deliverer.deliver(repo, ref, actor=_actor(actor))
    if result.error is not None:
        _fail(result.error)
    if fmt == "json":
        click.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
        sys.exit(result.exit_code)
    console = _console()
    color = "green" if result.is_champion else "yellow"
    console.print(f"[bold {color}]{escape(result.title)}[/]", highlight=False)
    if result.decision is not None:
        for line in result.decision.reasons:
            console.print(f"  [red]✗[/] {escape(line)}", highlight=False)
        for line in result.decision.checks:
            console.print(f"  [green]✓[/] {escape(line)}", highlight=False)
    console.print(f"[dim]commit {result.sha}  MLflow run {result.run_id}[/]", highlight=False)
    sys.exit(result.exit_code)


@cli.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """Registered models: versions, the champion, promotion and rollback.

    \b
    Examples:
      modelci models list
      modelci models show churn-classifier --format json
      modelci models promote churn-classifier v3 --reason "validated by hand"
      modelci models rollback churn-classifier --reason "bad predictions in production"
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_OK)


def _models_deliverer() -> Any:
    from modelci.deliver.delivery import deliverer_for

    return deliverer_for(_settings())


def _metrics_text(metrics: dict[str, float], limit: int) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:limit])


@models.command("list")
@_json_or_table
@_guarded
def models_list(fmt: str) -> None:
    """Every registered model with its champion.

    \b
    Examples:
      modelci models list
      modelci models list --format json
    """
    from rich.table import Table

    settings = _settings()
    with _models_deliverer() as deliverer:
        registry = deliverer.registry
        rows = []
        for name in registry.model_names():
            versions = registry.list_versions(name)
            champion = next((v for v in versions if "champion" in v.aliases), None)
            rows.append((name, versions, champion))
    from modelci.demo import modelci_command

    ui = modelci_command(settings, "mlflow-ui")
    if fmt == "json":
        payload = {
            "models": [
                {
                    "name": name,
                    "champion": champion.version if champion else None,
                    "versions": len(versions),
                    "sha": champion.sha if champion else None,
                    "metrics": champion.metrics if champion else {},
                }
                for name, versions, champion in rows
            ],
            "mlflow_ui": ui,
        }
        click.echo(json.dumps(payload, indent=2, allow_nan=False))
        return
    table = Table()
    table.add_column("model", no_wrap=True)  # a name is never cut, however narrow
    for column in ("champion", "versions", "commit"):
        table.add_column(column)
    table.add_column("metrics", overflow="fold")
    for name, versions, champion in rows:
        table.add_row(
            name,
            f"v{champion.version}" if champion else "-",
            str(len(versions)),
            (champion.sha or "")[:7] if champion else "",
            _metrics_text(champion.metrics if champion else {}, 4),
        )
    console = _console()
    console.print(table)
    console.print(f"[dim]MLflow UI:[/] {escape(ui)}", highlight=False, soft_wrap=True)


@models.command("show")
@click.argument("name")
@_json_or_table
@_guarded
def models_show(name: str, fmt: str) -> None:
    """Versions, champion, metrics, commits and the event history of NAME.

    \b
    Examples:
      modelci models show churn-classifier
      modelci models show churn-classifier --format json
    """
    from rich.table import Table

    with _models_deliverer() as deliverer:
        deliverer.check_model(name)
        versions = deliverer.registry.list_versions(name)
        events = deliverer.events(name)
    if fmt == "json":
        payload = {
            "name": name,
            "champion": next((v.version for v in versions if "champion" in v.aliases), None),
            "versions": [
                {
                    "version": v.version,
                    "champion": "champion" in v.aliases,
                    "sha": v.sha,
                    "trained_at": v.trained_at.isoformat() if v.trained_at else None,
                    "metrics": v.metrics,
                    "run_id": v.run_id,
                }
                for v in reversed(versions)
            ],
            "history": [{**e, "at": e["at"].isoformat() if e["at"] else None} for e in events],
        }
        click.echo(json.dumps(payload, indent=2, allow_nan=False, default=str))
        return
    table = Table("version", "", "commit", "trained", title=name)
    table.add_column("metrics", overflow="fold")
    for v in reversed(versions):
        table.add_row(
            str(v.version),
            "champion" if "champion" in v.aliases else "",
            (v.sha or "")[:7],
            v.trained_at.strftime("%Y-%m-%d %H:%M") if v.trained_at else "",
            _metrics_text(v.metrics, 6),
        )
    history = Table("when", title="history")
    history.add_column("what", overflow="fold")
    for e in events:
        history.add_row(e["at"].strftime("%Y-%m-%d %H:%M") if e["at"] else "", e["description"])
    console = _console()
    console.print(table)
    console.print(history)


@models.command("promote")
@click.argument("name")
@click.argument("version", type=VersionNumber())
@click.option("--reason", required=True, help="Why, for the history.")
@click.option("--actor", help="Who (default: $USER).")
@_guarded
def models_promote(name: str, version: int, reason: str, actor: str | None) -> None:
    """Make VERSION (2 or v2) of NAME the champion by hand, whatever the gates say.

    \b
    Examples:
      modelci models promote churn-classifier v3 --reason "validated on last week's data"
      modelci models promote churn-classifier 3 --reason "..." --actor alice
    """
    with _models_deliverer() as deliverer:
        deliverer.check_model(name)
        chosen = deliverer.promote(name, version, actor=_actor(actor), reason=reason)
    _console().print(f"[green]{escape(name)} v{chosen.version} is the champion[/]", highlight=False)


@models.command("rollback")
@click.argument("name")
@click.option("--reason", required=True, help="Why, for the history.")
@click.option("--actor", help="Who (default: $USER).")
@_guarded
def models_rollback(name: str, reason: str, actor: str | None) -> None:
    """Undo NAME's last champion change: the champion it replaced is champion again.

    A second rollback undoes the change before that one, down to the first
    champion.

    \b
    Examples:
      modelci models rollback churn-classifier --reason "bad predictions in production"
    """
    with _models_deliverer() as deliverer:
        deliverer.check_model(name)
        chosen = deliverer.rollback(name, actor=_actor(actor), reason=reason)
    _console().print(
        f"[green]{escape(name)} rolled back: v{chosen.version} is the champion[/]", highlight=False
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
    """The predictions served for model NAME, newest first (from the prediction log).

    \b
    Examples:
      modelci predictions threshold                  # the last 20
      modelci predictions threshold --since 2h --limit 500
      modelci predictions threshold --since 2026-11-01T00:00 --format json
    """
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


# -- modelci tokens: bearer tokens of the HTTP API ------------------------------------


@cli.group()
def tokens() -> None:
    """Bearer tokens of the jobs API (and of predict with MODELCI_PREDICT_AUTH=token).

    \b
    Examples:
      modelci tokens create ci-bot          # prints the token once
      modelci tokens list
      modelci tokens revoke ci-bot
    """


def _tokens_database() -> Any:
    from modelci.store.db import open_database

    return open_database(_settings())


@tokens.command("create")
@click.argument("name")
@_guarded
def tokens_create(name: str) -> None:
    """Create a token called NAME and print it (once: only its hash is kept).

    \b
    Examples:
      modelci tokens create ci-bot
      curl -H "Authorization: Bearer $(modelci tokens create dashboard)" localhost:8000/api/jobs
    """
    from modelci.service.tokens import create_token

    database = _tokens_database()
    try:
        token = create_token(database, name)
    finally:
        database.close()
    click.echo(token)
    Console(stderr=True).print(
        f"token {name!r} created; it is not shown again. Send it as `Authorization: Bearer TOKEN`.",
        highlight=False,
    )


@tokens.command("list")
@_guarded
def tokens_list() -> None:
    """The tokens' names, when each was created and last used (never the tokens).

    \b
    Examples:
      modelci tokens list
    """
    from rich.table import Table

    from modelci.service.tokens import list_tokens

    database = _tokens_database()
    try:
        found = list_tokens(database)
    finally:
        database.close()
    table = Table("name", "created", "last used")
    for info in found:
        last = info.last_used_at.strftime("%Y-%m-%d %H:%M") if info.last_used_at else "never"
        table.add_row(info.name, info.created_at.strftime("%Y-%m-%d %H:%M"), last)
    Console().print(table if found else "no tokens: create one with `modelci tokens create NAME`")


@tokens.command("revoke")
@click.argument("name")
@_guarded
def tokens_revoke(name: str) -> None:
    """Revoke the token called NAME (requests with it fail within 5 seconds).

    \b
    Examples:
      modelci tokens revoke ci-bot
    """
    from modelci.service.tokens import revoke_token

    database = _tokens_database()
    try:
        revoke_token(database, name)
    finally:
        database.close()
    Console().print(f"token {name!r} revoked", highlight=False)
