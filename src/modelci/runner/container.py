"""Inside a container: which right bubblewrap lacks, when it cannot make a sandbox.

Container engines start processes with a seccomp profile that may refuse new
namespaces (Docker's does without CAP_SYS_ADMIN), with parts of /proc masked or
read-only (the kernel then refuses to mount a fresh /proc in a new pid
namespace: the sandbox cannot show its own processes only), and on AppArmor
hosts with a profile that denies mounts. Each has its own switch; this module
finds which one is missing from evidence (two probes, the mount table, the
AppArmor label), so the operator adds that one right and no more. It never
offers to run repository code without the sandbox.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Right", "container_engine", "diagnose", "explain", "masked_proc_paths"]

# Inside the container only these mounts under /proc are ours to judge: an engine
# masks a fixed list (/proc/kcore, /proc/keys, /proc/sys read-only...).
PROC = "/proc"


@dataclass(frozen=True)
class Right:
    """A container option the sandbox needs, and why."""

    option: str  # as `podman run` / `docker run` spell it
    why: str


SECCOMP = "--security-opt seccomp=unconfined"
SYSTEMPATHS = "--security-opt systempaths=unconfined"
APPARMOR = "--security-opt apparmor=unconfined"


def container_engine(root: Path = Path("/")) -> str | None:
    """'podman', 'docker' or 'a container' when this process runs in one, else None."""
    if (root / "run/.containerenv").exists():
        return "podman"
    if (root / ".dockerenv").exists():
        return "docker"
    if os.environ.get("container"):  # noqa: SIM112  (lower case: systemd's convention, podman and LXC set it)
        return "a container"
    return None


def masked_proc_paths(mountinfo: str) -> list[str]:
    """Mount points below /proc (masked or read-only paths), from /proc/self/mountinfo."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4 and fields[4].startswith(PROC + "/"):
            found.append(fields[4])
    return found


def diagnose(
    *,
    namespaces_ok: bool,
    masked: list[str],
    apparmor: str | None,
    max_user_namespaces: int | None,
) -> tuple[list[Right], str | None]:
    """The rights missing, and a problem no container option fixes (or None).

    ``namespaces_ok``: bubblewrap created its namespaces when asked for nothing
    else (no /proc). ``masked``: the mount points under /proc. ``apparmor``: this
    process's AppArmor label (None where AppArmor is off).
    """
    if max_user_namespaces == 0:
        return [], (
            "user namespaces are disabled on the host (user.max_user_namespaces = 0): no "
            "container option helps; on the host, `sysctl -w user.max_user_namespaces=15000` "
            "(and the same in /etc/sysctl.d/ to keep it)"
        )
    rights = []
    confined = (
        apparmor is not None and apparmor not in ("unconfined", "") and ("(enforce)" in apparmor)
    )
    if not namespaces_ok:
        rights.append(
            Right(SECCOMP, "the seccomp profile refuses to create namespaces (clone, unshare)")
        )
    if masked:
        shown = ", ".join(masked[:4]) + (", ..." if len(masked) > 4 else "")
        rights.append(
            Right(
                SYSTEMPATHS,
                f"parts of /proc are masked ({shown}), so the kernel refuses to mount the "
                "sandbox's own /proc",
            )
        )
    if confined:
        rights.append(Right(APPARMOR, f"the AppArmor profile {apparmor} denies mounts"))
    return rights, None


def explain(engine: str, rights: list[Right], other: str | None, error: str) -> str:
    """The fix, worded as SandboxUnavailable's hint (doctor prints it too)."""
    if other:
        return f"inside {engine}, {other}"
    if not rights:
        return (
            f"inside {engine}, bubblewrap failed ({error}) though no missing right was found: "
            f"try `{SECCOMP} {SYSTEMPATHS}` (or --privileged) to confirm, and report it"
        )
    options = " ".join(r.option for r in rights)
    compose = ", ".join(_value(r) for r in rights)
    reasons = "; ".join(f"{_value(r)}: {r.why}" for r in rights)
    return (
        f"this {engine} container lacks what bubblewrap needs ({reasons}). Start it with "
        f"`{options}` (compose: security_opt: [{compose}]); modelci never runs repository "
        "code without the sandbox"
    )


def _value(right: Right) -> str:
    return right.option.split(" ", 1)[1]


def read_evidence() -> tuple[list[str], str | None, int | None]:
    """This process's masked /proc paths, AppArmor label and user-namespace limit."""
    try:
        masked = masked_proc_paths(Path("/proc/self/mountinfo").read_text())
    except OSError:
        masked = []
    try:
        apparmor: str | None = Path("/proc/self/attr/current").read_text().strip("\0\n ")
    except OSError:  # EINVAL where no LSM answers: AppArmor is off
        apparmor = None
    try:
        limit: int | None = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = None
    return masked, apparmor, limit
