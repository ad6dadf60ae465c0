"""The sample model repository behind ``modelci demo``, and the demo's later steps.

Builds a real git repository from ``examples/sklearn-classifier``: a base
commit on ``main`` and a pull-request branch that changes a hyper-parameter.
After the CLI has evaluated the pull request and delivered ``main``, the
branch is merged (a real ``git merge --no-ff``) and the champion is served by
the real serving app on an ephemeral loopback port, asked for one prediction
over HTTP, and shut down.

Part of the edge, with ``cli.py``: it starts uvicorn for the serving app.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelci.deliver.modelspec import ModelRegistry, ModelVersion
from modelci.errors import ModelCIError
from modelci.evaluate.evaluation import Reporter
from modelci.settings import Settings, default_data_dir

if TYPE_CHECKING:
    from modelci.serving.predictionlog import SessionFactory

__all__ = [
    "DeliverySteps",
    "DemoRepository",
    "OneModel",
    "ServedPrediction",
    "create_demo_repository",
    "example_dir",
    "merge_pull_request",
    "modelci_command",
    "next_steps",
    "serve_and_predict",
]

EXAMPLE = "sklearn-classifier"
BRANCH = "tune-forest"
ROLE = "serve"
# The pull request's change: a larger, deeper forest.
TUNED_PARAMS = {"n_estimators": 200, "max_depth": 8}  # the seed comes from MODELCI_SEED
# Fixed dates make the commits the same on every run: a second demo reuses the
# base's stored result instead of training it again.
_DATES = ("2026-01-05T10:00:00+00:00", "2026-01-06T10:00:00+00:00", "2026-01-07T10:00:00+00:00")
_START_TIMEOUT_S = 30


@dataclass(frozen=True)
class DemoRepository:
    path: Path
    base: str  # the default branch
    head: str  # the pull request's branch
    base_sha: str
    head_sha: str


@dataclass(frozen=True)
class ServedPrediction:
    """One answer of the served champion, as the HTTP API gave it."""

    url: str
    model: str
    version: int
    sha: str | None
    inputs: dict[str, Any]
    predictions: list[Any]


def example_dir(name: str = EXAMPLE) -> Path:
    """The shipped example, from an installed wheel or a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples" / name, here.parents[1] / "examples" / name):
        if (candidate / "modelci.yaml").exists():
            return candidate
    raise ModelCIError(
        f"the example repository {name} is not installed",
        hint="reinstall modelci (pip install modelci) from a complete source",
    )


def _git(path: Path, *args: str, date: str = _DATES[0]) -> str:
    try:
        done = subprocess.run(
            [
                "git",
                "-c",
                "user.name=modelci demo",
                "-c",
                "user.email=demo@modelci.invalid",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "core.hooksPath=/dev/null",
                *args,
            ],
            cwd=path,
            check=True,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(path),
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "GIT_AUTHOR_DATE": date,
                "GIT_COMMITTER_DATE": date,
                "LC_ALL": "C",
            },
        )
    except FileNotFoundError:
        raise ModelCIError("git is not installed", hint="apt-get install git") from None
    except subprocess.CalledProcessError as exc:
        raise ModelCIError(
            f"git {args[0]} failed in the sample repository {path}: {exc.stderr.strip()}",
            hint="remove that directory, or give another one with --dir",
        ) from None
    return done.stdout.strip()


def create_demo_repository(path: Path) -> DemoRepository:
    """A fresh git repository at ``path`` with ``main`` and a PR branch."""
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(
        example_dir(),
        path,
        ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", "metrics.json", "predictions.json", "model.joblib"
        ),
    )
    _git(path, "init", "--quiet")
    _git(path, "add", "--all")
    _git(path, "commit", "--quiet", "-m", "Random forest baseline")
    base_sha = _git(path, "rev-parse", "HEAD")
    _git(path, "checkout", "--quiet", "-b", BRANCH)
    (path / "params.json").write_text(json.dumps(TUNED_PARAMS, indent=2) + "\n")
    _git(
        path,
        "commit",
        "--quiet",
        "--all",
        "-m",
        "Tune the forest: more and deeper trees",
        date=_DATES[1],
    )
    head_sha = _git(path, "rev-parse", "HEAD")
    _git(path, "checkout", "--quiet", "main")
    return DemoRepository(path=path, base="main", head=BRANCH, base_sha=base_sha, head_sha=head_sha)


def merge_pull_request(repo: DemoRepository) -> str:
    """Merge the PR branch into ``main`` with a merge commit, as GitHub's button does;
    the merge commit's sha."""
    _git(repo.path, "checkout", "--quiet", repo.base)
    _git(
        repo.path,
        "merge",
        "--no-ff",
        "--quiet",
        "-m",
        f"Merge pull request #1 from {repo.head}",
        repo.head,
        date=_DATES[2],
    )
    return _git(repo.path, "rev-parse", "HEAD")


class DeliverySteps:
    """Shows a delivery's steps under ``label``: the training's own "done" is not the end
    of a delivery, its last step (promoted or not) is."""

    def __init__(self, reporter: Reporter, label: str) -> None:
        self._reporter = reporter
        self._label = label

    def update(self, role: str, message: str) -> None:
        if message == "done":
            return
        if message in ("promoted", "registered, not promoted"):
            message = "done"
        self._reporter.update(self._label, message)


class OneModel:
    """A registry that shows serving one model only: the demo must not start the
    other champions of a data dir that a real service also uses."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self._registry = registry
        self._name = name

    def model_names(self) -> list[str]:
        return [self._name]

    def champion(self, name: str) -> ModelVersion | None:
        return self._registry.champion(name) if name == self._name else None


def serve_and_predict(
    settings: Settings,
    registry: ModelRegistry,
    name: str,
    *,
    sessions: SessionFactory | None,
    unsafe: bool = False,
    reporter: Reporter | None = None,
) -> ServedPrediction:
    """Serve ``name``'s champion in a sandboxed worker behind the real HTTP app on a
    loopback port, POST its first input example to /models/NAME/predict, stop it all."""
    from modelci.errors import WorkerFailed
    from modelci.serving.http import create_serving_app
    from modelci.serving.manager import serving_manager

    def say(message: str) -> None:
        if reporter is not None:
            reporter.update(ROLE, message)

    manager = serving_manager(settings, OneModel(registry, name), sessions=sessions, unsafe=unsafe)
    with _logged_messages("modelci") as messages:
        try:
            say("starting the champion in a model worker" + ("" if unsafe else " (sandboxed)"))
            manager.start(wait=True)
            service = manager.get(name)
            loaded = service.current
            if loaded is None:
                failure = service.status()["last_swap_failure"]
                reason = failure["reason"] if failure else "; ".join(messages) or "no champion"
                raise WorkerFailed(
                    f"{name} could not be served: {reason}",
                    hint=f"read the worker logs in {settings.logs_dir / 'serving'}",
                )
            if not loaded.spec.input_example:
                raise WorkerFailed(f"{name} v{loaded.version.version} has no input example")
            row = loaded.spec.input_example[0]
            with _serve_http(create_serving_app(manager, start=False)) as (host, port):
                path = f"/models/{name}/predict"
                say(f"predicting over HTTP on {host}:{port}")
                answer = _post_json(host, port, path, {"records": [row]})
        finally:
            say("stopping the worker and the server")
            manager.close()
    say("done")
    return ServedPrediction(
        url=f"http://{host}:{port}{path}",
        model=str(answer["model"]),
        version=int(answer["version"]),
        sha=loaded.version.sha,
        inputs=row,
        predictions=list(answer["predictions"]),
    )


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _logged_messages(name: str) -> Iterator[list[str]]:
    """Collect a logger's warnings instead of printing them: with no logging set up,
    Python would print them, tracebacks included, on the demo's terminal."""
    logger = logging.getLogger(name)
    handler, propagate = _Messages(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextmanager
def _serve_http(app: Any) -> Iterator[tuple[str, int]]:
    """uvicorn on 127.0.0.1 and a port the kernel picks, in a thread; stopped on exit."""
    import uvicorn

    from modelci.errors import WorkerFailed

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="critical", access_log=False, lifespan="on")
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="modelci-demo-http", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise WorkerFailed(
                    "the serving app did not start on 127.0.0.1",
                    hint="run modelci serve to see why",
                )
            time.sleep(0.02)
        yield str(host), int(port)
    finally:
        server.should_exit = True
        thread.join(_START_TIMEOUT_S)
        sock.close()


def _post_json(host: str, port: int, path: str, body: Any) -> dict[str, Any]:
    """POST over plain http.client: no proxy settings apply to loopback."""
    from modelci.errors import WorkerFailed

    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request(
            "POST", path, body=json.dumps(body), headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
    except OSError as exc:
        raise WorkerFailed(f"POST {path} on 127.0.0.1:{port} failed: {exc}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise WorkerFailed(f"POST {path} answered {response.status}: {text[:2000]}")
    answer = json.loads(text)
    if not isinstance(answer, dict):
        raise WorkerFailed(f"POST {path} answered {text[:200]!r}, not a JSON object")
    return answer


def modelci_command(settings: Settings, args: str) -> str:
    """``modelci ARGS`` for this data dir (--data-dir when it is not the default), whole
    and on one line, to be copied as it is."""
    if settings.data_dir == default_data_dir():
        return f"modelci {args}"
    return f"modelci --data-dir {shlex.quote(str(settings.data_dir))} {args}"


def next_steps(settings: Settings, name: str) -> list[tuple[str, str]]:
    """Commands to go further and what each needs."""
    return [
        (
            modelci_command(settings, f"models show {shlex.quote(name)}"),
            "versions, champion, history",
        ),
        (
            modelci_command(settings, "serve"),
            "the dashboard at /ui/, the champion at /models/NAME/predict (and /v2, the Open "
            "Inference Protocol), the jobs API (`modelci tokens create` makes a token to sign "
            "in with); GitHub settings add the pull-request loop",
        ),
        (
            modelci_command(settings, "mlflow-ui"),
            "MLflow's UI on the runs and the registry (Ctrl+C stops it)",
        ),
    ]
