"""Evaluate a change: train and evaluate head and base, then compare them.

Each side (head, base) goes through: read its config from git, gather its
requirements, find its environment key, and, for the base, reuse a stored
result with the same cache key (sha, environment, config, sandbox). Otherwise
build or reuse the environment, check the commit out, run its commands in the
sandbox and read its outputs. The two sides run concurrently when the machine
has the cores.

The gates come from the *base* commit's configuration when it has one: a pull
request must not be able to loosen the gates it is judged by. A change that
adds ``modelci.yaml`` has no base to compare with: its head is evaluated alone
(``Comparison.head_only``) and its gates apply from the merge on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelci.errors import (
    ConfigError,
    ModelCIError,
    NeedsGpuWorker,
    OutputError,
    RunFailed,
    SandboxUnavailable,
)
from modelci.evaluate.cache import load_outputs, save_outputs
from modelci.evaluate.logtail import log_tail
from modelci.evaluate.metricfiles import read_metrics
from modelci.evaluate.results import (
    EvaluationRequest,
    EvaluationResult,
    Reporter,
    SideResult,
    Silent,
    TrainedCommit,
    summary_json,
)
from modelci.runner.checkout import Mirror, open_mirror, repository_name
from modelci.runner.config import (
    CONFIG_FILE,
    Overrides,
    RepoConfig,
    ScoringConfig,
    effective_config,
)
from modelci.runner.environments import (
    Environment,
    EnvironmentManager,
    Requirements,
    gather_requirements,
)
from modelci.runner.outputs import read_json_output
from modelci.runner.process import SYSTEM_PATH
from modelci.runner.sandbox import Limits, Sandbox, SandboxSpec, acquire_slot, seed_environment
from modelci.settings import Settings

if TYPE_CHECKING:  # heavy imports (numpy, sqlalchemy) load in the background, when needed
    from sqlalchemy.orm import Session

    from modelci.data.fetch import DataFetcher
    from modelci.data.review import DataReview
    from modelci.evaluate.compare import MetricRule
    from modelci.scoring.plan import ScoringPlan
    from modelci.serving.launcher import Launcher
    from modelci.store.db import Database

# The request and result types live in evaluate.results; kept importable from here.
__all__ = [
    "EvaluationRequest",
    "EvaluationResult",
    "Evaluator",
    "Reporter",
    "SideResult",
    "TrainedCommit",
    "summary_json",
]

log = logging.getLogger(__name__)

# Bump when the meaning of a stored result changes, so old results are not reused.
# 2: runs are seeded (MODELCI_SEED), the seed is in the key; 3: a scored run keeps its
# own predictions and the scored rows apart (predictions.json held the scored rows).
RESULT_VERSION = "3"
_MAX_METRICS_BYTES = 10_000_000
_MAX_PREDICTIONS_BYTES = 200_000_000


def _rules(config: RepoConfig) -> list[MetricRule]:
    from modelci.evaluate.compare import MetricRule

    return [
        MetricRule(name=name, direction=rule.direction, tolerance=rule.tolerance, gate=rule.gate)
        for name, rule in config.gates.items()
    ]


_TIMEOUT_FROM_CLI = "set by --timeout; raise it with a larger one, e.g. --timeout 1h"
_TIMEOUT_FROM_YAML = "limits.timeout in modelci.yaml; raise it there, e.g. timeout: 1h"


def _cache_key(
    sha: str,
    env_key: str,
    config: RepoConfig,
    sandbox: Sandbox,
    seed: int,
    scoring: ScoringPlan | None = None,
) -> str:
    parts = [RESULT_VERSION, sha, env_key, config.digest(), type(sandbox).__name__, str(seed)]
    if scoring is not None:  # the scored rows' checksum: a replaced dataset is scored again
        parts.append(scoring.digest())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _lacks_config(mirror: Mirror, sha: str, overrides: Overrides) -> bool:
    """Whether the commit has no modelci.yaml (nor dvc.yaml) and the overrides do not stand
    in for one."""
    if all(overrides.stand_in()):
        return False
    return mirror.read_file(sha, CONFIG_FILE) is None and mirror.read_file(sha, "dvc.yaml") is None


class Evaluator:
    """Runs evaluations; one instance serves many (the server keeps one)."""

    def __init__(
        self,
        *,
        settings: Settings,
        database: Callable[[], Database],
        sandbox: Sandbox,
        environments: EnvironmentManager,
        reporter: Reporter | None = None,
        training_started: Callable[[], None] | None = None,
    ) -> None:
        """``training_started`` is called as each run starts training: from then on
        this process mostly waits, so background work can have the CPU."""
        self.settings = settings
        self._database = database
        self.sandbox = sandbox
        self.environments = environments
        self.reporter: Reporter = reporter or Silent()
        self._launcher: Launcher | None = None
        self._launcher_lock = threading.Lock()
        self._training_started = training_started or (lambda: None)

    def database(self) -> Database:
        """The store (opened in the background; this waits for it)."""
        return self._database()

    def with_reporter(self, reporter: Reporter) -> Evaluator:
        """The same evaluator, reporting progress somewhere else."""
        return Evaluator(
            settings=self.settings,
            database=self._database,
            sandbox=self.sandbox,
            environments=self.environments,
            reporter=reporter,
            training_started=self._training_started,
        )

    def evaluate(
        self, request: EvaluationRequest, *, cancel: threading.Event | None = None
    ) -> EvaluationResult:
        try:
            with ExitStack() as stack:  # the scoring dataset's private copy, until the end
                return self._evaluate(request, cancel, stack)
        except BaseException as exc:
            if request.job_id is not None:  # a row left "running" would stream forever
                self._abandon_record(request.job_id, exc, cancel)
            raise

    def _abandon_record(
        self, job_id: int, exc: BaseException, cancel: threading.Event | None
    ) -> None:
        from modelci.store import records as store

        status = "cancelled" if cancel is not None and cancel.is_set() else "failed"
        message = exc.message if isinstance(exc, ModelCIError) else type(exc).__name__
        try:
            with self._database().session() as session:
                store.end_running_evaluations(session, job_id=job_id, status=status, error=message)
        except ModelCIError as error:
            log.warning("job %s: its evaluation stays marked running: %s", job_id, error)

    def _evaluate(
        self, request: EvaluationRequest, cancel: threading.Event | None, stack: ExitStack
    ) -> EvaluationResult:
        started = time.monotonic()
        prepare_dirs(self.settings)
        request = replace(request, overrides=self._with_defaults(request.overrides))
        self.reporter.update("head", "fetching")
        self.reporter.update("base", "fetching")
        mirror = open_mirror(request.repo, self.settings.mirrors_dir, git_env=request.git_env)
        head_sha, base_sha = mirror.resolve_many(request.head, request.base)
        if request.merge_base:
            base_sha = mirror.merge_base(base_sha, head_sha)
        if not request.gpu_allowed:
            for sha in (head_sha, base_sha):
                _refuse_gpu(_config_or_none(mirror, sha, request.overrides), sha)
        head = SideResult("head", request.head, head_sha, ref_repo=request.repo)
        base = SideResult("base", request.base, base_sha, ref_repo=request.repo)
        if request.job_id is not None:
            # A server's job: stored while it runs, so the dashboard shows it and its logs.
            head.evaluation_id = base.evaluation_id = self._start_record(
                mirror, request, head, base
            )
        sides = [base, head]
        if _lacks_config(mirror, base_sha, request.overrides) and not _lacks_config(
            mirror, head_sha, request.overrides
        ):
            # The change adds modelci.yaml: nothing to compare with, and no base
            # gates to judge it by. Head's own run still shows whether it works.
            base.skipped = f"the base commit has no {CONFIG_FILE}"
            self.reporter.update("base", f"skipped: no {CONFIG_FILE} (this change adds it)")
            sides = [head]
        plan = self._scoring_plan(stack, mirror, base if base in sides else None, head, request)
        head.scoring = base.scoring = plan
        if all(side.ok for side in sides):  # else the scoring data failed: nothing to train for
            self._train_sides(sides, base, head, mirror, request, cancel)
        for side in sides:
            for other in side.repeats:
                if side.ok and not other.ok:
                    side.error = f"with MODELCI_SEED={other.seed}: {other.error}"
                    side.public_error = f"with MODELCI_SEED={other.seed}: {other.public_error}"
                    side.log_tail, side.log_path = other.log_tail, other.log_path
        comparison, unstable = None, []
        if head.ok and base.skipped and head.config is not None:
            from modelci.evaluate.compare import head_only

            comparison = head_only(
                head.metrics, _rules(head.config), default_gate=head.config.default_gate
            )
        elif head.ok and base.ok:
            from modelci.evaluate.compare import compare
            from modelci.evaluate.noise import compare_repeated, unstable_metrics

            gates_from = base.config or head.config
            assert gates_from is not None
            rules, gate = _rules(gates_from), gates_from.default_gate
            try:
                if head.repeats or base.repeats:
                    comparison = compare_repeated(
                        head.seed_runs(), base.seed_runs(), rules, default_gate=gate
                    )
                else:
                    comparison = compare(
                        head.metrics,
                        base.metrics,
                        rules,
                        head_predictions=head.predictions,
                        base_predictions=base.predictions,
                        default_gate=gate,
                        scored=head.scored_rows(base),
                    )
                unstable = [
                    u
                    for side in (head, base)
                    for u in unstable_metrics(side.role, side.seed_runs(), rules, default_gate=gate)
                ]
            except ModelCIError as exc:
                head.error = head.public_error = f"comparing predictions: {exc}"
        if comparison is not None and plan is not None:
            from modelci.evaluate.compare import mark_scored

            comparison = mark_scored(comparison, plan.metric_names)
        result = EvaluationResult(
            request.repo, head, base, comparison, seconds=time.monotonic() - started
        )
        result.scored_on = plan.label if plan is not None else None
        result.data = self._review_data(mirror, base_sha, head_sha)
        if comparison is not None and not base.skipped:
            result.unstable = unstable
        from modelci.store import records as store

        with self._database().session() as session:
            if head.evaluation_id is None:
                evaluation = store.create_evaluation(
                    session,
                    repository_id=self._repository_id(session, mirror, request.repo),
                    base_sha=base_sha,
                    head_sha=head_sha,
                    job_id=request.job_id,
                )
                result.evaluation_id = evaluation.id
            else:
                result.evaluation_id = head.evaluation_id
            store.set_evaluation_runs(
                session,
                evaluation_id=result.evaluation_id,
                base_run_id=base.run_id,
                head_run_id=head.run_id,
            )
            store.finish_evaluation(
                session,
                evaluation_id=result.evaluation_id,
                status="succeeded" if comparison is not None else "failed",
                passed=None if comparison is None else comparison.passed,
                report=_stored_report(result),
                seconds=result.seconds,
            )
        return result

    def _start_record(
        self, mirror: Mirror, request: EvaluationRequest, head: SideResult, base: SideResult
    ) -> int:
        from modelci.store import records as store

        with self._database().session() as session:
            return store.create_evaluation(
                session,
                repository_id=self._repository_id(session, mirror, request.repo),
                base_sha=base.sha,
                head_sha=head.sha,
                job_id=request.job_id,
                report={"logs": {}},
            ).id

    def _note_log(self, side: SideResult) -> None:
        """Record a running side's log path on its evaluation (the live log reads it)."""
        if side.evaluation_id is None or side.seed != 0 or side.log_path is None:
            return
        from modelci.store import records as store

        try:
            with self._database().session() as session:
                store.note_evaluation_log(
                    session,
                    evaluation_id=side.evaluation_id,
                    role=side.role,
                    path=str(side.log_path),
                )
        except ModelCIError as exc:  # the run matters more than its live log
            log.warning("evaluation %s: live log not recorded: %s", side.evaluation_id, exc)

    def _train_sides(
        self,
        sides: list[SideResult],
        base: SideResult,
        head: SideResult,
        mirror: Mirror,
        request: EvaluationRequest,
        cancel: threading.Event | None,
    ) -> None:
        repeats = self._planned_repeats(mirror, base if base in sides else head, request)
        runs = [*sides, *(s.again(k) for s in sides for k in range(1, repeats or 1))]
        if repeats is not None and repeats > 1:
            for side in sides:
                side.repeats_reason = f"repeats: {repeats} in {CONFIG_FILE}"
        if repeats is None and base in sides:
            runs.append(base.again(1))  # auto: does a second seed give the same base?
        # Repeats wait for a slot (acquire_slot) like any run: MODELCI_MAX_PARALLEL_RUNS.
        workers = max(1, min(self.settings.max_parallel_runs, len(runs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelci-run") as pool:
            self._run_all(pool, runs, mirror, request.overrides, cancel)
            if repeats is None and base in sides:
                self._auto_repeats(pool, base, head, mirror, request.overrides, cancel)

    def _scoring_plan(
        self,
        stack: ExitStack,
        mirror: Mirror,
        base: SideResult | None,
        head: SideResult,
        request: EvaluationRequest,
    ) -> ScoringPlan | None:
        """The base's scoring section (head's when the base has none), its dataset
        resolved at that commit: the change cannot pick the rows it is judged on.
        Data that cannot be read fails both sides (they would be scored on it)."""
        for side in (base, head):
            if side is None:
                continue
            config = _config_or_none(mirror, side.sha, request.overrides)
            if config is not None and config.scoring is not None:
                self.reporter.update(side.role, "reading the scoring data")
                try:
                    return stack.enter_context(
                        self.scoring_plan(config.scoring, mirror, side.sha, repo=request.repo)
                    )
                except ModelCIError as exc:
                    for failed in (base, head):
                        if failed is not None:
                            failed.fail(exc, data_dir=self.settings.data_dir)
                            self.reporter.update(failed.role, f"failed: {exc.message}")
                    return None
        return None

    def scoring_plan(
        self, config: ScoringConfig, mirror: Mirror, sha: str, *, repo: str
    ) -> AbstractContextManager[ScoringPlan]:
        """``config`` resolved at commit ``sha`` of ``repo`` (scoring.plan.commit_plan)."""
        from modelci.scoring.plan import commit_plan

        return commit_plan(
            config,
            mirror=mirror,
            sha=sha,
            repo=repo,
            settings=self.settings,
            fetcher=self.data_fetcher(),
        )

    def scoring_launcher(self) -> Launcher:
        """The launcher of scoring's model workers (made once, on first use)."""
        with self._launcher_lock:
            if self._launcher is None:
                from modelci.runner.sandbox import UnsafeLocalSandbox
                from modelci.scoring.scorer import scoring_launcher

                self._launcher = scoring_launcher(
                    self.settings,
                    self.environments,
                    unsafe=isinstance(self.sandbox, UnsafeLocalSandbox),
                )
            return self._launcher

    def _planned_repeats(
        self, mirror: Mirror, gates_side: SideResult, request: EvaluationRequest
    ) -> int | None:
        """Runs per commit from the (base's) modelci.yaml; None for auto (decided later)."""
        config = _config_or_none(mirror, gates_side.sha, request.overrides)
        if config is None:
            return 1
        return None if config.repeats == "auto" else config.repeats

    def _run_all(
        self,
        pool: ThreadPoolExecutor,
        runs: list[SideResult],
        mirror: Mirror,
        overrides: Overrides,
        cancel: threading.Event | None,
    ) -> None:
        futures = [pool.submit(self._side, run, mirror, overrides, cancel) for run in runs]
        for future in futures:
            future.result()

    def _auto_repeats(
        self,
        pool: ThreadPoolExecutor,
        base: SideResult,
        head: SideResult,
        mirror: Mirror,
        overrides: Overrides,
        cancel: threading.Event | None,
    ) -> None:
        """repeats: auto. Two seeds of the base were trained (both cached with the base
        result, so this costs nothing the next time); if they differ, train both sides
        AUTO_REPEATS times."""
        from modelci.evaluate.noise import AUTO_REPEATS, differs_beyond_rounding

        probe = base.repeats[0]
        if not (base.ok and probe.ok and head.ok):
            return
        if not differs_beyond_rounding(base.metrics, probe.metrics):
            base.repeats.clear()  # deterministic: the second run only confirmed it
            return
        reason = (
            "training is nondeterministic (two seeds of the base gave different metrics): "
            f"{AUTO_REPEATS} runs per side (repeats: auto)"
        )
        base.repeats_reason = head.repeats_reason = reason
        self.reporter.update("head", f"nondeterministic training: {AUTO_REPEATS} runs per side")
        more = [base.again(k) for k in range(2, AUTO_REPEATS)]
        more += [head.again(k) for k in range(1, AUTO_REPEATS)]
        self._run_all(pool, more, mirror, overrides, cancel)

    def _with_defaults(self, overrides: Overrides) -> Overrides:
        """``overrides`` with the server's MODELCI_DEFAULT_* for commits without a config."""
        return replace(
            overrides,
            default_command=overrides.default_command or self.settings.default_command,
            default_metrics_file=overrides.default_metrics_file
            or self.settings.default_metrics_file,
        )

    @staticmethod
    def _repository_id(session: Session, mirror: Mirror, repo: str) -> int:
        from modelci.store import records as store

        return store.get_or_create_repository(
            session, url=mirror.url, name=repository_name(repo)
        ).id

    def _side(
        self,
        side: SideResult,
        mirror: Mirror,
        overrides: Overrides,
        cancel: threading.Event | None,
    ) -> None:
        started = dt.datetime.now(dt.UTC)
        try:
            self._run_side(side, mirror, overrides, cancel)
        except ModelCIError as exc:
            side.fail(exc, data_dir=self.settings.data_dir)
            self.reporter.update(side.role, f"failed: {exc.message}")
        if side.reused_from is not None or not side.cache_key:
            return
        from modelci.store import records as store

        # Runs are recorded when they end, so the database (which starts in the
        # background) is never waited for before training starts.
        with self._database().session() as session:
            run = store.create_run(
                session,
                repository_id=self._repository_id(session, mirror, side.ref_repo),
                sha=side.sha,
                role=side.role,
                cache_key=side.cache_key,
                env_key=side.env_key,
                started_at=started,
            )
            side.run_id = run.id
            kept = side.ok and self._keep_outputs(run.id, side)
            store.finish_run(
                session,
                run_id=run.id,
                status="succeeded" if side.ok else "failed",
                metrics=side.metrics if side.ok else None,
                error=side.error,
                timings=side.timings,
                log_path=str(side.log_path) if side.log_path else None,
                outputs_dir=str(self._outputs_dir(run.id)) if kept else None,
            )

    def _keep_outputs(self, run_id: int, side: SideResult) -> bool:
        """Store the outputs for reuse, whole, before the run is marked finished; a run
        whose outputs could not be stored is still a result, just not a reusable one."""
        try:
            save_outputs(
                self._outputs_dir(run_id), side.metrics, side.predictions, side.scored_predictions
            )
        except OSError as exc:
            log.warning("run %s: outputs not kept for reuse: %s", run_id, exc)
            return False
        return True

    def _outputs_dir(self, run_id: int) -> Path:
        return self.settings.data_dir / "outputs" / str(run_id)

    def _run_side(
        self,
        side: SideResult,
        mirror: Mirror,
        overrides: Overrides,
        cancel: threading.Event | None,
    ) -> None:
        t0 = time.monotonic()
        requirements = self._prepare(side, mirror, overrides)
        if side.role == "base":
            from modelci.store import records as store

            with self._database().session() as session:
                previous = store.find_reusable_run(session, cache_key=side.cache_key or "")
            if previous is not None and previous.outputs_dir:
                try:
                    stored = load_outputs(Path(previous.outputs_dir))
                except OutputError as exc:
                    # A stored result is a shortcut, never a reason to fail: train again.
                    side.cache_miss = (
                        f"the stored result of run {previous.id} is unreadable ({exc.message}); "
                        "trained the commit again"
                    )
                    self.reporter.update(
                        side.role, f"stored result of run {previous.id} unreadable: training again"
                    )
                else:
                    side.metrics, side.predictions = stored.metrics, stored.predictions
                    if side.scoring is not None and stored.scored is not None:
                        # The cache key holds the plan's digest: the same scored metrics.
                        side.scored_predictions = stored.scored
                        side.scored = tuple(sorted(side.scoring.metric_names))
                    side.run_id = side.reused_from = previous.id
                    side.log_path = Path(previous.log_path) if previous.log_path else None
                    side.timings = {"reused": 1.0}
                    self.reporter.update(side.role, f"reused the result of run {previous.id}")
                    return
        with self._train(side, mirror, requirements, cancel, t0):
            pass

    def _prepare(self, side: SideResult, mirror: Mirror, overrides: Overrides) -> Requirements:
        """Config, requirements and keys of a commit, read from git without a checkout."""
        sha = side.sha
        self.reporter.update(side.role, "reading configuration")

        def read(path: str) -> bytes | None:
            return mirror.read_file(sha, path)

        side.config = config = _repo_config(read, overrides)
        side.timeout_from_cli = overrides.timeout_s is not None
        requirements = gather_requirements(config.install, read, uv_bin=self.environments.uv_bin)
        self.reporter.update(side.role, "resolving requirements")
        side.env_key = env_key = self.environments.key_for(requirements)
        side.cache_key = _cache_key(
            sha, env_key, config, self.sandbox, side.seed, scoring=side.scoring
        )
        return requirements

    @contextmanager
    def train_commit(
        self,
        side: SideResult,
        mirror: Mirror,
        *,
        overrides: Overrides | None = None,
        cancel: threading.Event | None = None,
        extra_env: Callable[[Path], Mapping[str, str]] | None = None,
        gpu_allowed: bool = True,
    ) -> Iterator[TrainedCommit]:
        """Train one commit (side.sha) in the sandbox and read its metrics.

        Yields while its work dir still exists, so the caller can collect the
        artifacts the run wrote (read them only with modelci.runner.outputs: the
        repository's code controlled that directory). ``extra_env`` gives
        variables for the run from the work dir's path. Raises on failure.
        """
        prepare_dirs(self.settings)
        t0 = time.monotonic()
        overrides = self._with_defaults(overrides or Overrides())
        with ExitStack() as stack:
            if side.scoring is None:
                config = _config_or_none(mirror, side.sha, overrides)
                if config is not None and config.scoring is not None:
                    side.scoring = stack.enter_context(
                        self.scoring_plan(config.scoring, mirror, side.sha, repo=side.ref_repo)
                    )
            requirements = self._prepare(side, mirror, overrides)
            if not gpu_allowed:
                _refuse_gpu(side.config, side.sha)
            with self._train(side, mirror, requirements, cancel, t0, extra_env) as trained:
                yield trained

    @contextmanager
    def _train(
        self,
        side: SideResult,
        mirror: Mirror,
        requirements: Requirements,
        cancel: threading.Event | None,
        t0: float,
        extra_env: Callable[[Path], Mapping[str, str]] | None = None,
    ) -> Iterator[TrainedCommit]:
        role, sha = side.role, side.sha
        config = side.config
        assert config is not None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        side.log_path = (
            self.settings.logs_dir / f"{stamp}-{role}-{sha[:12]}-{uuid.uuid4().hex[:6]}.log"
        )
        self._note_log(side)
        self.reporter.update(role, "building environment")
        env = self.environments.ensure(requirements)
        side.timings["env_s"] = env.seconds
        self.reporter.update(role, "waiting for a sandbox slot")
        with (
            acquire_slot(self.settings.slots_dir, self.settings.max_parallel_runs) as slot,
            mirror.checkout(sha, self.settings.runs_dir) as workdir,
        ):
            side.timings["prepare_s"] = time.monotonic() - t0
            if side.overlay:  # a retrain's refreshed imports, before the data is fetched
                from modelci.data.imports import write_overlay

                write_overlay(workdir, side.overlay)
            dvc_env = self._fetch_data(side, mirror, workdir, slot, cancel)
            self.reporter.update(role, "training and evaluating")
            limits = Limits(
                timeout_s=config.limits.timeout,
                memory_mb=config.limits.memory_mb,
                max_processes=config.limits.processes,
                max_disk_mb=config.limits.disk_mb,
                timeout_origin=_TIMEOUT_FROM_CLI if side.timeout_from_cli else _TIMEOUT_FROM_YAML,
            )
            devices = self._gpu_devices(config)
            command = "set -e\n" + "\n".join(config.commands())
            variables = {"PYTHONPATH": f"{workdir}/src:{workdir}", **seed_environment(side.seed)}
            if dvc_env is not None:  # `dvc repro` works; the repository's python comes first
                variables["PATH"] = f"{env.path}/bin:{dvc_env.path}/bin:{SYSTEM_PATH}"
                variables["DVC_NO_ANALYTICS"] = "1"
            if extra_env is not None:
                variables.update(extra_env(workdir))
            self._training_started()
            outcome = self.sandbox.run(
                SandboxSpec(
                    command=command,
                    workdir=workdir,
                    log_path=side.log_path,
                    venv=env.path,
                    limits=limits,
                    slot=slot,
                    env=variables,
                    devices=devices,
                    ro_binds=(dvc_env.path,) if dvc_env is not None else (),
                ),
                cancel=cancel,
            )
            side.timings["train_s"] = outcome.duration_s
            if not outcome.ok:
                reason = (outcome.failure_reason() or "failed").removesuffix("; see the log")
                tail = log_tail(
                    side.log_path,
                    paths={
                        f"{workdir}/": "",
                        str(workdir): ".",
                        str(env.path): "<environment>",
                        str(self.settings.data_dir): "<data dir>",
                    },
                )
                raise RunFailed(
                    f"the {role} commit's run {reason}",
                    hint="the end of its log says why; fix that in the commit and push again",
                    log_tail=tail,
                    log_path=str(side.log_path),
                )
            self.reporter.update(role, "reading outputs")
            files = config.metrics_files()
            read = read_metrics(workdir, files, max_bytes=_MAX_METRICS_BYTES)
            side.metrics = read.metrics
            if not side.metrics:
                raise OutputError(
                    f"{' and '.join(files)} hold{'s' if len(files) == 1 else ''} no numeric metric",
                    hint='write a JSON object such as {"accuracy": 0.93}',
                )
            if read.notes:  # said where the run's own lines are, and as it happens
                with side.log_path.open("a") as run_log:
                    run_log.writelines(f"[modelci: {note}]\n" for note in read.notes)
                self.reporter.update(role, read.notes[0])
            if config.predictions:
                from modelci.evaluate.compare import predictions_from_json

                data = read_json_output(
                    workdir, config.predictions, max_bytes=_MAX_PREDICTIONS_BYTES
                )
                side.predictions = predictions_from_json(data, source=config.predictions)
            trained = TrainedCommit(side=side, workdir=workdir, config=config, environment=env)
            if side.scoring is not None and config.model.source is not None:
                self._score(trained, side.scoring)
            elif side.scoring is not None and role == "head":
                # The base scores its model: a change must not escape that by dropping it.
                raise ConfigError(
                    f"the {role} commit's {CONFIG_FILE} has no model: section, and modelci "
                    f"scores this repository's model on {side.scoring.label} (scoring:)",
                    hint="keep the model: section (artifact, mlflow or interface) so modelci "
                    "can score the trained model",
                )
            yield trained
        side.timings["total_s"] = time.monotonic() - t0
        self.reporter.update(role, "done")

    def _score(self, trained: TrainedCommit, plan: ScoringPlan) -> None:
        """modelci's own metrics of the trained model; they take precedence over the run's.

        The scored rows are kept beside the run's own predictions: the scored
        metrics' intervals come from them, the run's other metrics keep theirs."""
        from modelci.scoring.plan import score_trained

        side = trained.side
        self.reporter.update(side.role, f"scoring on {plan.label}")
        t0 = time.monotonic()
        scored = score_trained(trained, plan, self.scoring_launcher(), self.settings)
        side.metrics = {**side.metrics, **scored.metrics}
        side.scored_predictions = scored.predictions
        side.scored = tuple(scored.metrics)
        side.timings["score_s"] = time.monotonic() - t0

    def data_fetcher(self) -> DataFetcher:
        from modelci.data.fetch import DataFetcher

        return DataFetcher(
            sandbox=self.sandbox,
            environments=self.environments,
            cache_root=self.settings.dvc_cache_dir,
            remotes_file=self.settings.dvc_remotes_path,
        )

    def _review_data(self, mirror: Mirror, base_sha: str, head_sha: str) -> DataReview:
        """Params and data changes, read after the runs so the fetched data is cached."""
        from modelci.data.review import review_data

        cache = self.data_fetcher().cache_dir(mirror.url)
        return review_data(mirror, base_sha, head_sha, cache=cache)

    def _fetch_data(
        self,
        side: SideResult,
        mirror: Mirror,
        workdir: Path,
        slot: int,
        cancel: threading.Event | None,
    ) -> Environment | None:
        """Fetch the commit's DVC data into workdir (modelci.data); the DVC environment
        when the commit uses DVC (training may run `dvc repro`), else None."""
        if not ((workdir / ".dvc").exists() or (workdir / "dvc.yaml").exists()):
            return None
        fetcher = self.data_fetcher()
        self.reporter.update(side.role, "fetching DVC data")
        assert side.log_path is not None
        fetched = fetcher.fetch(
            workdir,
            repository=repository_name(side.ref_repo),
            aliases=(side.ref_repo, mirror.url),
            cache_key=mirror.url,
            slot=slot,
            log_path=side.log_path.with_suffix(".fetch.log"),
            cancel=cancel,
        )
        if fetched is not None:
            side.timings["data_s"] = fetched.seconds
            side.timings["data_bytes"] = float(fetched.bytes_fetched)
        return fetcher.dvc_environment()

    def _gpu_devices(self, config: RepoConfig) -> tuple[Path, ...]:
        if not config.limits.gpu:
            return ()
        devices, patterns = self.settings.gpu_device_paths(), self.settings.gpu_devices
        if not devices:
            raise SandboxUnavailable(
                "the commit asks for a GPU (limits.gpu: true in modelci.yaml) and this machine "
                f"has no device matching MODELCI_GPU_DEVICES ({', '.join(patterns)})",
                hint="run GPU jobs on a machine with a GPU and its driver loaded "
                "(`modelci worker --queue gpu` there), or set MODELCI_GPU_DEVICES to its device "
                "nodes; remove limits.gpu if the training can run on CPU",
            )
        return devices


def _repo_config(read: Callable[[str], bytes | None], overrides: Overrides) -> RepoConfig:
    """modelci.yaml; without one, a DVC pipeline (dvc.yaml) unless --command stands in."""
    text = read(CONFIG_FILE)
    if text is None and overrides.command is None:
        from modelci.data.pipeline import pipeline_config

        pipeline = pipeline_config(read)
        if pipeline is not None:
            return pipeline
    return effective_config(text, overrides)


def _config_or_none(mirror: Mirror, sha: str, overrides: Overrides) -> RepoConfig | None:
    try:
        return _repo_config(lambda path: mirror.read_file(sha, path), overrides)
    except ModelCIError:
        return None  # reported by the run itself, which reads it again


def _refuse_gpu(config: RepoConfig | None, sha: str) -> None:
    if config is not None and config.limits.gpu:
        raise NeedsGpuWorker(
            f"commit {sha[:12]} asks for a GPU (limits.gpu: true) and this job was not taken "
            "from the gpu queue",
            hint="start `modelci worker --queue gpu` on a machine with a GPU",
        )


def prepare_dirs(settings: Settings) -> None:
    # The sandbox runs as other uids: they must traverse (not list) the data dir
    # down to their work dir and environment.
    settings.prepare_data_dir()
    for path, mode in (
        (settings.runs_dir, 0o711),
        (settings.envs_dir, 0o755),
    ):
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
    for path in (settings.logs_dir, settings.mirrors_dir, settings.data_dir / "outputs"):
        path.mkdir(parents=True, exist_ok=True, mode=0o700)


def _stored_report(result: EvaluationResult) -> dict[str, Any]:
    """What the store keeps of an evaluation: the comparison as the JSON report has it
    (each metric's interval included), the sides' timings and logs, and the outcome."""
    from modelci.evaluate.report import render_json

    context = summary_json(result)
    full = context if result.comparison is None else render_json(result.comparison, **context)
    logs = {side.role: str(side.log_path) for side in (result.head, result.base) if side.log_path}
    return {
        **full,
        "logs": logs,
        "head_only": result.base.skipped is not None,
        "cache_miss": result.base.cache_miss,
    }
