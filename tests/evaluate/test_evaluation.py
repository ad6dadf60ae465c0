"""End to end: real git repositories, real uv, the real sandbox, a real store."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uv

from modelci.errors import NeedsGpuWorker
from modelci.evaluate.evaluation import EvaluationRequest, EvaluationResult, Evaluator
from modelci.runner.config import Overrides
from modelci.runner.environments import EnvironmentManager
from modelci.runner.sandbox import make_sandbox
from modelci.settings import Settings
from modelci.store.db import Database, open_database
from tests.conftest import GitRepo, commit_files

pytestmark = pytest.mark.sandbox

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

# A model whose quality is set by params.json, with predictions for intervals.
TRAIN = """\
import json, random
p = json.load(open("params.json"))
rng = random.Random(0)
y = [rng.randint(0, 1) for _ in range(400)]
pred = [t if rng.random() < p["skill"] else 1 - t for t in y]
acc = sum(a == b for a, b in zip(y, pred)) / len(y)
json.dump({"accuracy": acc, "nested": {"loss": 1 - acc}}, open("metrics.json", "w"))
json.dump({"y_true": y, "y_pred": pred}, open("predictions.json", "w"))
"""
CONFIG = "train: python train.py\nmetrics: metrics.json\npredictions: predictions.json\n"


@pytest.fixture
def settings() -> Iterator[Settings]:
    # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700 and the sandbox's
    # uid must be able to reach its work dir.
    data = Path(tempfile.mkdtemp(prefix="modelci-test-", dir="/var/tmp"))
    try:
        yield Settings(
            data_dir=data, database_url=f"sqlite:///{data}/store.db", max_parallel_runs=2
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def open_evaluator(settings: Settings, envs_dir: Path | None = None) -> Iterator[Evaluator]:
    """An evaluator on ``settings``' store; ``envs_dir`` shared between tests (the
    session's, for modelci's DVC environment), else the data dir's own."""
    db: Database = open_database(settings)
    try:
        yield Evaluator(
            settings=settings,
            database=lambda: db,
            sandbox=make_sandbox(),
            environments=EnvironmentManager(
                envs_dir=envs_dir or settings.envs_dir,
                python=settings.python,
                uv_bin=uv.find_uv_bin(),
            ),
        )
    finally:
        db.close()


@pytest.fixture
def evaluator(settings: Settings) -> Iterator[Evaluator]:
    with open_evaluator(settings) as made:
        yield made


def model_repo(make_repo: GitRepo, skill: float = 0.7) -> Path:
    return make_repo(
        {"modelci.yaml": CONFIG, "train.py": TRAIN, "params.json": json.dumps({"skill": skill})}
    )


def evaluate(
    evaluator: Evaluator, repo: Path, base: str = "HEAD~1", head: str = "HEAD", **overrides: object
) -> EvaluationResult:
    return evaluator.evaluate(
        EvaluationRequest(repo=str(repo), base=base, head=head, overrides=Overrides(**overrides))
    )  # type: ignore[arg-type]


def test_improvement_is_reported_with_an_interval(evaluator: Evaluator, make_repo: GitRepo) -> None:
    repo = model_repo(make_repo, skill=0.6)
    commit_files(repo, {"params.json": json.dumps({"skill": 0.95})})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert result.passed
    assert result.comparison is not None
    by_name = {m.name: m for m in result.comparison.metrics}
    assert by_name["accuracy"].verdict == "improved"
    assert by_name["nested.loss"].verdict == "improved"
    interval = by_name["accuracy"].interval
    assert interval is not None
    assert interval.low > 0


def test_regression_fails_and_base_result_is_reused(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = model_repo(make_repo, skill=0.95)
    commit_files(repo, {"params.json": json.dumps({"skill": 0.6})})
    first = evaluate(evaluator, repo)
    assert first.error is None, first.error
    assert not first.passed
    assert first.base.reused_from is None
    second = evaluate(evaluator, repo)
    assert second.base.reused_from == first.base.run_id
    assert second.base.metrics == first.base.metrics
    assert second.base.predictions is not None  # intervals still work with a reused base
    assert not second.passed


def test_no_config_uses_the_seed_layout(evaluator: Evaluator, make_repo: GitRepo) -> None:
    script = "import json\nopen('result.txt','w').write(str({'loss': 0.5, 'accuracy': %s}))\n"
    repo = make_repo({"demo.py": script % "0.8", "requirements.txt": ""})
    commit_files(repo, {"demo.py": script % "0.9"})
    result = evaluate(evaluator, repo, command="python demo.py", metrics_file="result.txt")
    assert result.error is None, result.error
    assert result.comparison is not None
    assert {m.name: m.verdict for m in result.comparison.metrics}["accuracy"] == "improved"


def hostile(
    evaluator: Evaluator,
    make_repo: GitRepo,
    code: str,
    *,
    config: str = "train: python train.py\nmetrics: metrics.json\n",
    **overrides: object,
) -> EvaluationResult:
    """A good base and a head whose training does something hostile."""
    repo = make_repo(
        {
            "modelci.yaml": config,
            "train.py": "import json\njson.dump({'accuracy': 0.5}, open('metrics.json','w'))\n",
        }
    )
    commit_files(repo, {"train.py": code})
    result = evaluate(evaluator, repo, **overrides)
    assert result.base.ok, result.base.error
    assert not result.head.ok
    assert result.comparison is None
    return result


def test_network_is_unreachable_loopback_included(evaluator: Evaluator, make_repo: GitRepo) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
    try:
        result = hostile(evaluator, make_repo, code)
    finally:
        server.close()
    assert "exited with" in (result.head.error or "")
    assert result.head.log_path is not None
    log = result.head.log_path.read_text()
    assert "Network is unreachable" in log or "Connection refused" in log


def test_secrets_of_the_server_are_not_visible(
    evaluator: Evaluator, make_repo: GitRepo, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = settings.data_dir / "github-app.pem"
    secret.write_text("PRIVATE KEY")
    secret.chmod(0o600)
    monkeypatch.setenv("MODELCI_GITHUB_TOKEN", "ghs_topsecret")
    code = f"""\
import os, json
print("token:", os.environ.get("MODELCI_GITHUB_TOKEN"))
print(open({str(secret)!r}).read())
"""
    result = hostile(evaluator, make_repo, code)
    log = result.head.log_path.read_text()  # type: ignore[union-attr]
    assert "token: None" in log
    assert "ghs_topsecret" not in log
    assert "PRIVATE KEY" not in log
    assert "No such file" in log or "Permission denied" in log


WRITE_OUTSIDE = """\
import os
for path in {paths!r}:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as exc:
        print("REFUSED", path, exc.strerror)
    print("VISIBLE" if os.path.isdir(os.path.dirname(path)) else "ABSENT", os.path.dirname(path))
raise SystemExit(1)
"""


def test_writing_outside_the_work_dir_fails(
    evaluator: Evaluator, make_repo: GitRepo, settings: Settings
) -> None:
    # Directories the sandbox's uid could write to on the host (world-writable):
    # only the mount namespace keeps the run out of them, not file permissions.
    shared = settings.data_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    targets = [shared / "owned.txt", Path("/var/tmp", f"modelci-owned-{os.getpid()}")]
    code = WRITE_OUTSIDE.format(paths=[str(target) for target in targets])
    result = hostile(evaluator, make_repo, code)
    assert result.head.log_path is not None
    log = result.head.log_path.read_text()
    assert "WROTE" not in log, log
    for target in targets:
        assert not target.exists()
        # Not there (shared), or the empty read-only stand-in bwrap made on the way
        # to the bound work dir (/var/tmp): never the host's directory.
        refused = {
            f"REFUSED {target} {why}"
            for why in ("No such file or directory", "Read-only file system")
        }
        assert refused & set(log.splitlines()), log
    assert f"ABSENT {shared}" in log, log


def test_fork_loop_is_contained(evaluator: Evaluator, make_repo: GitRepo) -> None:
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    result = hostile(
        evaluator,
        make_repo,
        code,
        config="train: python train.py\nmetrics: metrics.json\n"
        "limits: {timeout: 4, processes: 32}\n",
    )
    assert "timeout" in (result.head.error or "")


def test_sleeping_past_the_timeout_is_killed(evaluator: Evaluator, make_repo: GitRepo) -> None:
    result = hostile(evaluator, make_repo, "import time\ntime.sleep(60)\n", timeout_s=2)
    assert "timeout" in (result.head.error or "")


def test_memory_limit(evaluator: Evaluator, make_repo: GitRepo) -> None:
    code = "blocks = []\nwhile True:\n    blocks.append(bytearray(50_000_000))\n"
    result = hostile(
        evaluator,
        make_repo,
        code,
        config="train: python train.py\nmetrics: metrics.json\n"
        "limits: {memory_mb: 200, timeout: 30}\n",
    )
    assert "memory" in (result.head.error or "")


def test_metrics_symlink_to_a_file_outside_is_refused(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    code = "import os\nos.symlink('/etc/passwd', 'metrics.json')\n"
    result = hostile(evaluator, make_repo, code)
    assert "metrics.json" in (result.head.error or "")
    assert "root:" not in (result.head.error or "")


def test_printing_gigabytes_is_capped(evaluator: Evaluator, make_repo: GitRepo) -> None:
    code = "import sys\nline = 'x' * 1_000_000 + '\\n'\nwhile True:\n    sys.stdout.write(line)\n"
    result = hostile(evaluator, make_repo, code, timeout_s=4)
    assert result.head.log_path is not None
    assert result.head.log_path.stat().st_size < 25 * 1024 * 1024


def test_broken_config_in_head_is_a_clear_failure(evaluator: Evaluator, make_repo: GitRepo) -> None:
    repo = model_repo(make_repo)
    commit_files(repo, {"modelci.yaml": "train: python train.py\nmetrics: [unclosed\n"})
    result = evaluate(evaluator, repo)
    assert result.base.ok
    assert "modelci.yaml" in (result.head.error or "")
    assert "line" in (result.head.error or "")


def test_cancel_stops_a_running_evaluation(
    evaluator: Evaluator, make_repo: GitRepo, settings: Settings
) -> None:
    repo = model_repo(make_repo)
    sleep = 60
    train = f"import time\nprint('SLEEPING', flush=True)\ntime.sleep({sleep})\n"
    commit_files(repo, {"train.py": train})
    cancel = threading.Event()

    def cancel_once_the_head_runs() -> None:
        # A positive event, not a timer that might fire before the head runs.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not cancel.is_set():
            for log in settings.logs_dir.glob("*-head-*.log"):
                if "SLEEPING" in log.read_text(errors="replace"):
                    cancel.set()
            time.sleep(0.05)

    watcher = threading.Thread(target=cancel_once_the_head_runs)
    watcher.start()
    try:
        result = evaluator.evaluate(
            EvaluationRequest(repo=str(repo), base="HEAD~1", head="HEAD"), cancel=cancel
        )
    finally:
        cancel.set()
        watcher.join()
    assert result.head.error is not None
    assert "run was cancelled" in result.head.error, result.head.error
    assert result.head.timings["train_s"] < sleep / 4  # killed, well before its sleep ended


# -- GPU jobs: limits.gpu ------------------------------------------------------------------

SEES_DEVICE = """\
import json, os
seen = os.path.exists({device!r}) and open({device!r}).read() == "gpu"
json.dump({{"accuracy": 0.5, "device_seen": float(seen)}}, open("metrics.json", "w"))
"""


def gpu_repo(make_repo: GitRepo, device: Path) -> Path:
    """Base trains on CPU; head sets limits.gpu. Both report whether they see ``device``."""
    repo = make_repo(
        {
            "modelci.yaml": "train: python train.py\nmetrics: metrics.json\n",
            "train.py": SEES_DEVICE.format(device=str(device)),
        }
    )
    commit_files(
        repo,
        {"modelci.yaml": "train: python train.py\nmetrics: metrics.json\nlimits:\n  gpu: true\n"},
    )
    return repo


def with_devices(evaluator: Evaluator, *patterns: str) -> Evaluator:
    return Evaluator(
        settings=evaluator.settings.model_copy(update={"gpu_devices": list(patterns)}),
        database=evaluator.database,
        sandbox=evaluator.sandbox,
        environments=evaluator.environments,
    )


def test_a_gpu_commit_off_the_gpu_queue_is_refused_before_anything_runs(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = gpu_repo(make_repo, Path("/dev/nvidia0"))
    request = EvaluationRequest(repo=str(repo), base="HEAD~1", head="HEAD", gpu_allowed=False)
    with pytest.raises(NeedsGpuWorker, match=r"limits\.gpu"):
        evaluator.evaluate(request)
    assert not evaluator.settings.logs_dir.exists() or not any(
        evaluator.settings.logs_dir.iterdir()
    )


def test_a_gpu_run_gets_the_gpu_devices_and_a_cpu_run_does_not(
    evaluator: Evaluator, make_repo: GitRepo, settings: Settings
) -> None:
    device = settings.data_dir / "fake-nvidia0"  # a device node stands in as a plain file
    device.write_text("gpu")
    device.chmod(0o666)
    repo = gpu_repo(make_repo, device)
    result = evaluate(with_devices(evaluator, str(settings.data_dir / "fake-nvidia*")), repo)
    assert result.error is None, result.error
    assert result.head.metrics["device_seen"] == 1.0
    assert result.base.metrics["device_seen"] == 0.0


def test_a_gpu_run_on_a_machine_without_a_gpu_fails_clearly(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = gpu_repo(make_repo, Path("/dev/nvidia0"))
    result = evaluate(with_devices(evaluator, "/nonexistent/nvidia*"), repo)
    assert result.base.ok
    assert "asks for a GPU" in (result.head.error or "")
    assert "MODELCI_GPU_DEVICES (/nonexistent/nvidia*)" in (result.head.error or "")


def test_a_failed_training_shows_the_end_of_its_log(
    evaluator: Evaluator, make_repo: GitRepo, settings: Settings
) -> None:
    repo = model_repo(make_repo)
    failing = "print('loading data')\nraise ValueError('learning rate must be positive')\n"
    commit_files(repo, {"train.py": failing})
    result = evaluate(evaluator, repo)
    head = result.head
    assert result.base.ok and not head.ok and head.log_tail is not None
    # The traceback, with the work dir's path gone: the file as the repository names it.
    assert 'File "train.py", line 2, in <module>' in head.log_tail
    lines = head.log_tail.split("\n")
    assert lines[0] == "loading data"
    assert "ValueError: learning rate must be positive" in lines
    assert lines[-1].startswith("[modelci: the run exited with code 1")
    assert str(settings.data_dir) not in head.log_tail
    assert "ValueError: learning rate must be positive" in (head.error or "")
    assert f"The whole log: {head.log_path}" in (head.error or "")
    assert head.public_error is not None and str(settings.data_dir) not in head.public_error


def test_the_change_that_adds_modelci_yaml_is_evaluated_alone(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = make_repo({"train.py": TRAIN, "params.json": json.dumps({"skill": 0.7})})
    commit_files(repo, {"modelci.yaml": CONFIG + "gates:\n  nested.loss: {gate: false}\n"})
    result = evaluate(evaluator, repo)
    assert result.error is None, result.error
    assert result.base.skipped == "the base commit has no modelci.yaml"
    assert result.base.run_id is None and result.head.run_id is not None
    assert result.comparison is not None and result.comparison.head_only
    assert result.passed
    rows = {m.name: (m.verdict, m.gated, m.base) for m in result.comparison.metrics}
    assert rows == {"accuracy": ("new", True, None), "nested.loss": ("new", False, None)}


def test_a_metric_value_that_is_not_a_number_is_an_error_naming_it(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    repo = model_repo(make_repo)
    writes = (
        'import json\njson.dump({"accuracy": "high", "loss": None}, open("metrics.json", "w"))\n'
    )
    commit_files(
        repo,
        {"train.py": writes, "modelci.yaml": "train: python train.py\nmetrics: metrics.json\n"},
    )
    result = evaluate(evaluator, repo)
    assert result.comparison is None
    assert result.head.error is not None
    assert 'metrics.json: metric values must be numbers, but accuracy is "high"; loss is null' in (
        result.head.error
    )


def test_an_unreadable_stored_base_result_is_trained_again(
    evaluator: Evaluator, make_repo: GitRepo, settings: Settings
) -> None:
    repo = model_repo(make_repo, skill=0.6)
    commit_files(repo, {"params.json": json.dumps({"skill": 0.95})})
    first = evaluate(evaluator, repo)
    assert first.error is None, first.error
    stored = settings.data_dir / "outputs" / str(first.base.run_id) / "predictions.json"
    stored.write_text("")  # what a full disk left behind before writes were atomic
    second = evaluate(evaluator, repo)
    assert second.error is None, second.error
    assert second.base.reused_from is None
    assert second.base.cache_miss == (
        f"the stored result of run {first.base.run_id} is unreadable (predictions.json is "
        "empty); trained the commit again"
    )
    assert second.passed and second.base.metrics == first.base.metrics
    third = evaluate(evaluator, repo)  # the new result is whole, and reused
    assert third.base.reused_from == second.base.run_id and third.base.cache_miss is None


# -- a server's job: stored while it runs (the dashboard's live log) -----------------------


def test_a_jobs_evaluation_is_stored_while_it_runs_with_its_log_and_the_full_report(
    evaluator: Evaluator, make_repo: GitRepo, settings: Settings
) -> None:
    from modelci.store import records as store

    repo = model_repo(make_repo, skill=0.6)
    train = "import time\nprint('TRAINING', flush=True)\ntime.sleep(1)\n" + TRAIN
    commit_files(repo, {"params.json": json.dumps({"skill": 0.95}), "train.py": train})
    seen: dict[str, object] = {}

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "logs" not in seen:
            with evaluator.database().session() as session:
                found = store.list_evaluations(session)
                if found and found[0].status == "running":
                    logs = (found[0].report or {}).get("logs") or {}
                    log = Path(logs.get("head", "/nonexistent"))  # noted before it exists
                    if log.is_file() and "TRAINING" in log.read_text():
                        seen["logs"], seen["id"] = logs, found[0].id
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = evaluator.evaluate(
            EvaluationRequest(repo=str(repo), base="HEAD~1", head="HEAD", job_id=4242)
        )
    finally:
        seen.setdefault("logs", None)
        watcher.join()
    assert seen["logs"] is not None, "the running evaluation never showed its head log"
    assert result.evaluation_id == seen["id"]
    with evaluator.database().session() as session:
        (stored,) = store.evaluations_for_job(session, job_id=4242)
    assert stored["status"] == "succeeded" and stored["head_run_id"] == result.head.run_id
    report = stored["report"]
    accuracy = next(m for m in report["metrics"] if m["name"] == "accuracy")
    assert accuracy["ci"]["low"] > 0  # the interval the page draws
    assert report["sides"]["head"]["timings"]["train_s"] > 0
    assert report["logs"]["head"] == seen["logs"]["head"]  # type: ignore[index]


def test_a_jobs_evaluation_that_stops_early_is_not_left_running(
    evaluator: Evaluator, make_repo: GitRepo
) -> None:
    from modelci.errors import ModelCIError
    from modelci.store import records as store

    repo = model_repo(make_repo)
    with pytest.raises(ModelCIError):
        evaluator.evaluate(
            EvaluationRequest(repo=str(repo), base="no-such-ref", head="HEAD", job_id=4343)
        )
    with evaluator.database().session() as session:
        assert store.evaluations_for_job(session, job_id=4343) == []  # stopped before its row
    # A stop after the row exists ends it (the GPU move, a crash, a cancel).
    with evaluator.database().session() as session:
        repository = store.get_or_create_repository(session, url=str(repo), name="r")
        store.create_evaluation(
            session, repository_id=repository.id, base_sha="a", head_sha="b", job_id=4343
        )
        assert (
            store.end_running_evaluations(session, job_id=4343, status="failed", error="moved") == 1
        )
        (ended,) = store.evaluations_for_job(session, job_id=4343)
    assert ended["status"] == "failed" and ended["report"]["error"] == "moved"
