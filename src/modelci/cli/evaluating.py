"""``modelci evaluate`` (head against base) and ``modelci demo`` (the whole loop)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from modelci.cli.base import (
    Duration,
    cli,
    current_settings,
    escape,
    fail,
    format_option,
    guarded,
    make_console,
    quiet_option,
    unsafe_option,
)
from modelci.errors import EXIT_OK, EXIT_REGRESSION
from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, summary_json
from modelci.runner.config import Overrides
from modelci.settings import Settings


def _print_result(result: EvaluationResult, fmt: str) -> int:
    from modelci.evaluate import report
    from modelci.evaluate.report_data import review_markdown, review_rich

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
            if review := review_markdown(result.data):
                click.echo(f"\n{review}")
            if result.scored_on:
                click.echo(f"\n{report.scored_note(result.scored_on)}")
            if notes := result.repeats_markdown():
                click.echo(f"\n{notes}")
        else:
            click.echo(f"### modelci evaluation failed\n\n```\n{result.error}\n```")
    elif result.comparison is not None:
        console = make_console()
        if not console.is_terminal:
            console = make_console(width=120)  # logs and CI: no need to squeeze the table
        console.print(
            report.render_rich(
                result.comparison,
                head_label=f"head {head.sha[:7]} ({head.ref})",
                base_label=f"base {base.sha[:7]} ({base.ref})",
            )
        )
        if result.comparison.head_only:
            console.print(report.HEAD_ONLY_NOTE, highlight=False)
        if levels := report.gate_level_note(result.comparison):
            console.print(levels, highlight=False)
        for part in review_rich(result.data):
            console.print(part, highlight=False)
        if result.scored_on:
            console.print(
                escape(report.scored_note(result.scored_on).replace("*", "")), highlight=False
            )
        if notes := result.repeats_markdown():
            console.print(escape(notes.replace("**", "")), highlight=False)
        reused = " (base result reused)" if base.reused_from else ""
        if base.cache_miss:
            reused = f" (base: {escape(base.cache_miss)})"
        console.print(f"[dim]evaluated in {result.seconds:.1f}s{reused}[/]", highlight=False)
    if result.error:
        fail(result.error)
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
@format_option
@unsafe_option
@quiet_option
@guarded
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
    settings = current_settings()
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
@format_option
@unsafe_option
@quiet_option
@guarded
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

    from modelci import demo as sample
    from modelci.deliver.delivery import DeliveryResult, deliverer_for
    from modelci.evaluate import report
    from modelci.evaluate.evaluation import Reporter
    from modelci.progress import progress_reporter

    started = time.monotonic()
    settings = current_settings()
    repo = sample.create_demo_repository(
        directory or settings.data_dir / "demo" / "sklearn-classifier"
    )
    # The story goes to stdout with the table; with --format json/markdown stdout
    # carries only that document, and the story goes to stderr.
    # Soft wrap: the commands printed at the end must stay copyable.
    say = functools.partial(
        make_console(stderr=fmt != "table", highlight=False).print, soft_wrap=True
    )
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
                fail(done.error)
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
            fail(result.error)
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
