"""Which container right the sandbox lacks: evidence in, the option to add out.

The real thing runs in scripts/container-test (podman, with and without the
rights); here the decisions, from mount tables and labels as the engines write them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelci.runner.container import (
    APPARMOR,
    SECCOMP,
    SYSTEMPATHS,
    container_engine,
    diagnose,
    explain,
    masked_proc_paths,
)

# /proc/self/mountinfo inside `podman run` with its default masks (this machine, podman 4.3).
PODMAN_MOUNTINFO = """\
1000 990 0:60 / / rw,relatime - overlay overlay rw
1001 1000 0:63 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1010 1001 0:63 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
1011 1001 0:63 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
1012 1001 0:64 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw
1013 1000 0:65 / /dev rw,nosuid - tmpfs tmpfs rw
"""


def test_masked_proc_paths_are_the_mounts_below_proc_only() -> None:
    assert masked_proc_paths(PODMAN_MOUNTINFO) == ["/proc/bus", "/proc/sys", "/proc/kcore"]
    assert masked_proc_paths("1 0 0:1 / / rw - ext4 /dev/vda rw\n") == []


def test_masked_proc_alone_needs_systempaths_only() -> None:
    rights, other = diagnose(
        namespaces_ok=True, masked=["/proc/sys"], apparmor=None, max_user_namespaces=15000
    )
    assert [r.option for r in rights] == [SYSTEMPATHS]
    assert other is None
    assert "/proc/sys" in rights[0].why


def test_refused_namespaces_need_seccomp_unconfined() -> None:
    rights, _ = diagnose(
        namespaces_ok=False, masked=["/proc/kcore"], apparmor=None, max_user_namespaces=15000
    )
    assert [r.option for r in rights] == [SECCOMP, SYSTEMPATHS]


def test_an_enforced_apparmor_profile_is_named() -> None:
    rights, _ = diagnose(
        namespaces_ok=True,
        masked=[],
        apparmor="docker-default (enforce)",
        max_user_namespaces=None,
    )
    assert [r.option for r in rights] == [APPARMOR]
    assert "docker-default" in rights[0].why
    for label in ("unconfined", "podman (complain)"):
        assert (
            diagnose(namespaces_ok=True, masked=[], apparmor=label, max_user_namespaces=None)[0]
            == []
        )


def test_user_namespaces_off_on_the_host_is_no_container_option() -> None:
    rights, other = diagnose(
        namespaces_ok=False, masked=["/proc/sys"], apparmor=None, max_user_namespaces=0
    )
    assert rights == []
    assert other is not None and "user.max_user_namespaces" in other


def test_the_fix_names_each_option_for_run_and_compose_and_never_unsandboxed() -> None:
    rights, other = diagnose(
        namespaces_ok=False, masked=["/proc/sys"], apparmor=None, max_user_namespaces=None
    )
    text = explain("docker", rights, other, "bwrap: Creating new namespace failed")
    assert f"`{SECCOMP} {SYSTEMPATHS}`" in text
    assert "security_opt: [seccomp=unconfined, systempaths=unconfined]" in text
    assert "unsafe" not in text
    assert "never runs repository code without the sandbox" in text


def test_no_evidence_says_so_and_quotes_the_error() -> None:
    text = explain("podman", [], None, "bwrap: something new")
    assert "bwrap: something new" in text and "--privileged" in text


def test_container_engine_from_the_engines_marker_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("container", raising=False)
    assert container_engine(tmp_path) is None
    (tmp_path / ".dockerenv").touch()
    assert container_engine(tmp_path) == "docker"
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.containerenv").touch()
    assert container_engine(tmp_path) == "podman"
