from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import uv

from modelci.errors import EnvironmentBuildError
from modelci.runner.config import InstallConfig
from modelci.runner.environments import EnvironmentManager, Requirements, gather_requirements


def reader(files: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda path: files[path].encode() if path in files else None


def manager(tmp_path: Path) -> EnvironmentManager:
    return EnvironmentManager(
        envs_dir=tmp_path / "envs", python="/usr/bin/python3", uv_bin=uv.find_uv_bin()
    )


def test_requirements_are_inlined_and_detected() -> None:
    files = {
        "requirements.txt": "# deps\nnumpy>=1.26  # pinned later\n-r extra/more.txt\n",
        "extra/more.txt": "six==1.16.0\n",
    }
    found = gather_requirements(InstallConfig(), reader(files), uv_bin="uv")
    assert found.text.splitlines() == ["numpy>=1.26", "six==1.16.0"]
    assert gather_requirements(InstallConfig(), reader({}), uv_bin="uv").text == ""


@pytest.mark.parametrize(
    "line",
    [
        "-e .",
        ".",
        "./pkg",
        "/abs/pkg",
        "git+https://github.com/o/r.git",
        "pkg @ git+https://github.com/o/r",
        "pkg @ file:///etc",
        "pkg @ https://x/pkg.tar.gz",
        "-r ../../etc/passwd",
    ],
)
def test_requirements_that_need_a_build_or_escape_are_refused(line: str) -> None:
    with pytest.raises(EnvironmentBuildError, match=r"built from source|sandbox"):
        gather_requirements(InstallConfig(), reader({"requirements.txt": line}), uv_bin="uv")


def test_named_requirements_file_must_exist() -> None:
    with pytest.raises(EnvironmentBuildError, match="no such file"):
        gather_requirements(InstallConfig(requirements="reqs/prod.txt"), reader({}), uv_bin="uv")


def test_the_interpreter_is_asked_its_version_again_only_when_it_changes(
    tmp_path: Path,
) -> None:
    """Its identity is part of every environment key; asking costs a process start."""
    python, asked = tmp_path / "python3", tmp_path / "asked"

    def install(version: str) -> None:
        python.write_text(f"#!/bin/sh\necho run >> {asked}\necho {version}\n")
        python.chmod(0o755)

    install("3.11.7")
    envs = EnvironmentManager(envs_dir=tmp_path / "envs", python=str(python), uv_bin="uv")
    nothing = Requirements("", "no requirements file")
    first = envs.key_for(nothing)
    again = EnvironmentManager(envs_dir=tmp_path / "envs", python=str(python), uv_bin="uv")
    assert again.key_for(nothing) == first
    assert asked.read_text().count("run") == 1
    install("3.12.10")  # upgraded in place
    assert envs.key_for(nothing) != first
    assert asked.read_text().count("run") == 2


@pytest.mark.slow
def test_environment_is_built_once_and_shared(tmp_path: Path) -> None:
    envs = manager(tmp_path)
    a = gather_requirements(
        InstallConfig(), reader({"requirements.txt": "six==1.16.0"}), uv_bin=envs.uv_bin
    )
    # Different text, same resolution: the same environment.
    b = gather_requirements(
        InstallConfig(), reader({"requirements.txt": "six==1.16.0\n\n# x"}), uv_bin=envs.uv_bin
    )
    first = envs.ensure(a)
    assert not first.reused
    second = envs.ensure(b)
    assert second.reused
    assert second.key == first.key
    out = subprocess.run(
        [str(first.python), "-c", "import six, sys; print(six.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "1.16.0"
    # Bytecode was compiled at build time (the sandbox mounts the env read-only).
    assert list(first.path.glob("lib/python3*/site-packages/__pycache__/six*.pyc"))


@pytest.mark.slow
def test_empty_requirements_give_a_bare_environment(tmp_path: Path) -> None:
    envs = manager(tmp_path)
    env = envs.ensure(gather_requirements(InstallConfig(), reader({}), uv_bin=envs.uv_bin))
    assert env.python.exists()


@pytest.mark.slow
def test_sdist_only_package_is_refused_with_the_reason(tmp_path: Path) -> None:
    envs = manager(tmp_path)
    # 'pyyaml==3.13' was only ever published as a source distribution for Python 3.11.
    reqs = gather_requirements(
        InstallConfig(), reader({"requirements.txt": "PyYAML==3.13"}), uv_bin=envs.uv_bin
    )
    with pytest.raises(EnvironmentBuildError) as info:
        envs.ensure(reqs)
    assert "wheel" in str(info.value)


@pytest.mark.slow
def test_unknown_package_is_a_clear_error(tmp_path: Path) -> None:
    envs = manager(tmp_path)
    reqs = gather_requirements(
        InstallConfig(),
        reader({"requirements.txt": "no-such-package-modelci-xyz==1.0"}),
        uv_bin=envs.uv_bin,
    )
    with pytest.raises(EnvironmentBuildError, match="uv failed"):
        envs.ensure(reqs)
