"""Starting a model version's worker: its environment, a private copy, the sandbox.

The model directory is copied into a fresh work dir under ``runs/serving``
(the sandbox's uid owns it while the worker runs; nobody else can read it), the
worker script beside it, and the environment is built from the spec's
requirements by the same :class:`EnvironmentManager` as training's (uv, wheels
only, cached). Each running worker holds its own slot: its own uid and cgroups.
Slots are locks in a machine-wide directory (``Settings.serving_slots_dir``),
held for the worker's lifetime: another modelci process serving on the same
machine (a demo beside ``modelci serve``) takes other slots, where a slot per
process would run both workers as one uid and reset each other's cgroups.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelci.deliver.modelspec import ServingSpec
from modelci.errors import WorkerFailed
from modelci.runner.environments import EnvironmentManager, Requirements
from modelci.runner.sandbox import Limits, Sandbox, SandboxSpec, take_slot
from modelci.serving.worker import ModelWorker

if TYPE_CHECKING:
    from modelci.settings import Settings

__all__ = ["Launcher", "launcher_for"]

_WORKER_SCRIPT = Path(__file__).with_name("modelworker.py")
# A worker runs until stopped: no wall-clock or CPU-time limit.
SERVING_LIMITS = Limits(timeout_s=0, cpu_s=10**9, memory_mb=2048, max_disk_mb=1024)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Launcher:
    """Starts ready workers for model directories."""

    sandbox: Sandbox
    environments: EnvironmentManager
    serving_dir: Path  # under the data dir's runs/, reachable by the sandbox's uids
    logs_dir: Path
    slots_dir: Path  # machine-wide slot locks of the sandbox's uid range
    limits: Limits = SERVING_LIMITS
    start_timeout_s: float = 120
    request_timeout_s: float = 30
    max_workers: int = 64  # slots: workers at once on this machine, all processes together

    def start(self, name: str, version: int, model_dir: Path, spec: ServingSpec) -> ModelWorker:
        """A worker that has loaded the model; WorkerFailed if it could not."""
        requirements = list(spec.requirements)
        if not any(re.match(r"numpy\b", line.strip(), re.IGNORECASE) for line in requirements):
            requirements.append("numpy")  # the worker itself needs it
        env = self.environments.ensure(
            Requirements("\n".join(requirements), f"the requirements of {name} v{version}")
        )
        self.serving_dir.mkdir(parents=True, exist_ok=True)
        self.serving_dir.chmod(0o711)
        work = Path(
            tempfile.mkdtemp(prefix=f"{_SAFE.sub('_', name)}-v{version}-", dir=self.serving_dir)
        )
        lease = take_slot(self.slots_dir, self.max_workers)
        if lease is None:
            shutil.rmtree(work, ignore_errors=True)
            raise WorkerFailed(
                f"every serving sandbox slot on this machine is in use ({self.max_workers} "
                f"model workers, counting other modelci processes'; locks in {self.slots_dir})",
                hint="serve fewer models, or stop another modelci process that serves on "
                "this machine",
            )
        try:
            worker = self._start(name, version, model_dir, spec, env.path, work, lease.number)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            lease.release()
            raise

        def release() -> None:
            # After the worker's process tree is dead: the next holder of the slot
            # gets its uid and cgroups with nothing of this worker left in them.
            shutil.rmtree(work, ignore_errors=True)
            lease.release()

        worker.on_stop = release
        return worker

    def _start(
        self,
        name: str,
        version: int,
        model_dir: Path,
        spec: ServingSpec,
        venv: Path,
        work: Path,
        slot: int,
    ) -> ModelWorker:
        work.chmod(0o700)
        model = work / "model"
        # Links are copied as links: a model dir cannot smuggle in a host file.
        shutil.copytree(model_dir, model, symlinks=True)
        shutil.copy(_WORKER_SCRIPT, work / "modelworker.py")
        artifact = (model / spec.artifact).resolve()
        if not artifact.is_relative_to(model.resolve()) or not artifact.is_file():
            raise WorkerFailed(
                f"{name} v{version}: the artifact {spec.artifact!r} is not a "
                "file inside the model directory"
            )
        config = {
            "loader": spec.loader,
            "artifact": str(artifact),
            "method": spec.method,
            "code_paths": [str((model / path).resolve()) for path in spec.code_paths],
            "columns": [{"name": c.name, "type": c.type} for c in spec.columns],
        }
        (work / "worker.json").write_text(json.dumps(config))
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{work.name}.log"
        process = self.sandbox.start(
            SandboxSpec(
                command=f"exec {venv}/bin/python -I modelworker.py worker.json",
                workdir=work,
                log_path=log_path,
                venv=venv,
                limits=self.limits,
                slot=slot,
            )
        )
        worker = ModelWorker(
            process,
            [(c.name, c.type) for c in spec.columns],
            request_timeout_s=self.request_timeout_s,
        )
        try:
            worker.wait_ready(self.start_timeout_s)
        except WorkerFailed as exc:
            worker.stop()
            raise WorkerFailed(f"{name} v{version}: {exc.message}; log: {log_path}") from None
        return worker


def launcher_for(
    settings: Settings,
    purpose: str,
    *,
    sandbox: Sandbox,
    environments: EnvironmentManager,
    request_timeout_s: float,
) -> Launcher:
    """A launcher from the settings: serving's memory limit, start timeout and machine-wide
    slots, its workers' copies and logs under ``runs/<purpose>`` and ``logs/<purpose>``."""
    for path in (settings.data_dir, settings.runs_dir):
        # The workers' uids must traverse them to reach their private copies.
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o711)
    return Launcher(
        sandbox=sandbox,
        environments=environments,
        serving_dir=settings.runs_dir / purpose,
        logs_dir=settings.logs_dir / purpose,
        slots_dir=settings.serving_slots_dir,
        limits=Limits(
            timeout_s=0, cpu_s=10**9, memory_mb=settings.serving_memory_mb, max_disk_mb=1024
        ),
        start_timeout_s=settings.serving_start_timeout_s,
        request_timeout_s=request_timeout_s,
    )
