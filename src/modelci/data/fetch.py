"""Fetch exactly the DVC data a checked-out commit points to, in a sandbox with network.

Before anything runs, modelci reads the commit's remotes (``data.dvcrepo``),
checks each URL against the server's allow-list and finds its credentials
(``data.remotes``): a refusal happens before any request. The repository's
``.dvc/config`` is then replaced by one modelci writes (no other option of the
repository's reaches DVC: not an endpoint, not a cache path), and ``dvc pull``
runs under bubblewrap with network, from modelci's DVC environment
(``data.tool``), with only the work dir and the repository's DVC cache
writable. The remotes, the cache path and the credentials are in DVC's global
config, a file that exists only in that sandbox's private /tmp (bwrap copies it
from a pipe); the training that follows never sees it.

One cache per repository (``<data dir>/dvc-cache/<repo>``), shared by its
commits, so data is fetched once; checked out into the work dir by copy or
reflink, never a link, so training cannot change the cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelci.data.dvcrepo import DvcLayout, find_dvc
from modelci.data.remotes import REMOTES_SETTING, RepositoryData, check_url, load_remotes
from modelci.data.tool import dvc_environment
from modelci.errors import DataFetchError
from modelci.runner.environments import Environment, EnvironmentManager
from modelci.runner.locks import locked
from modelci.runner.process import SYSTEM_PATH
from modelci.runner.sandbox import Limits, Sandbox, SandboxSpec

__all__ = ["DataFetcher", "FetchResult", "cache_usage", "workdir_config"]

MB = 1024 * 1024
_MISSING = re.compile(r"name: (?P<path>[^,\n]+), (?:md5|hash)")
_FAILED_TARGETS = re.compile(r"Checkout failed for following targets:\n(?P<paths>(?:.+\n?)+)")


@dataclass(frozen=True)
class FetchResult:
    remotes: tuple[str, ...]
    bytes_fetched: int  # growth of the repository's cache: 0 when everything was there
    seconds: float
    log_path: Path


def _quote(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or '"' in value:
        raise DataFetchError(
            f"{what} holds a newline or a double quote, which DVC's config cannot carry",
            hint="check the value in the server's DVC remotes file",
        )
    return f'"{value}"'


def workdir_config(workdir: Path) -> str:
    """The work dir's ``.dvc/config``: no git (a checkout has none), no telemetry,
    the cache inside the work dir unless the fetch's global config says otherwise."""
    site = workdir / ".dvc" / "tmp" / "site-cache"
    return (
        "[core]\n    no_scm = true\n    analytics = false\n    check_update = false\n"
        f"    site_cache_dir = {_quote(str(site), 'the work dir')}\n"
        '[cache]\n    type = "reflink,copy"\n'
    )


def prepare_workdir(workdir: Path) -> None:
    """Replace the repository's DVC config with modelci's (the checkout is a private copy)."""
    dvc_dir = workdir / ".dvc"
    if dvc_dir.is_symlink() or (dvc_dir.exists() and not dvc_dir.is_dir()):
        raise DataFetchError(".dvc is not a directory", hint="commit DVC's own .dvc/ directory")
    dvc_dir.mkdir(exist_ok=True)
    for name in ("config", "config.local"):
        path = dvc_dir / name
        if path.is_symlink() or path.exists():
            path.unlink()
    (dvc_dir / "config").write_text(workdir_config(workdir))


def cache_usage(cache: Path) -> int:
    """Bytes of the objects in a DVC cache."""
    total = 0
    for root, _dirs, files in os.walk(cache):
        for name in files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += info.st_size
    return total


def _remote_section(name: str, url: str, data: RepositoryData) -> tuple[str, dict[str, str]]:
    """The remote's lines in the fetch's DVC config, and environment variables it needs."""
    where = f"remote {name!r} of {data.key}"
    lines = [f"['remote \"{name}\"']", f"    url = {_quote(url, where + ' url')}"]
    env: dict[str, str] = {}
    creds = data.remotes.get(name)
    if creds is None:
        if not url.startswith("/"):
            raise DataFetchError(
                f"the DVC remote {name!r} ({url}) of {data.key} has no credentials on this server",
                hint=f'add a [repositories."{data.key}".remotes.{name}] table to {data.source} '
                f"({REMOTES_SETTING}): access_key_id_env and secret_access_key_env for S3, "
                "service_account_json_path for Google Drive (an empty table for a public "
                "remote)",
            )
        return "\n".join(lines), env
    options = {
        "endpoint_url": "endpointurl",
        "region": "region",
        "access_key_id": "access_key_id",
        "secret_access_key": "secret_access_key",
        "session_token": "session_token",
    }
    for key, option in options.items():
        if (value := creds.get(key)) is not None:
            lines.append(f"    {option} = {_quote(value, f'{key} of the {where}')}")
    if (path := creds.get("service_account_json_path")) is not None:
        try:
            env["GDRIVE_CREDENTIALS_DATA"] = Path(path).read_text()
        except OSError as exc:
            raise DataFetchError(
                f"cannot read the service account file of the {where}: {exc.strerror}",
                hint=f"check service_account_json_path in {data.source}",
            ) from None
        lines.append("    gdrive_use_service_account = true")
    return "\n".join(lines), env


def _failure(log_path: Path, remotes: tuple[str, ...]) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        text = ""
    missing = [m.group("path").strip() for m in _MISSING.finditer(text)]
    if not missing and (failed := _FAILED_TARGETS.search(text)):
        missing = [line.strip() for line in failed.group("paths").splitlines() if line.strip()]
        missing = [line for line in missing if not line.startswith(("Is your", "ERROR", "<"))]
    names = ", ".join(repr(r) for r in remotes)
    if missing:
        return f"could not fetch {', '.join(dict.fromkeys(missing))} from the DVC remote {names}"
    return f"the DVC fetch from the remote {names} failed"


class DataFetcher:
    """Fetches commits' DVC data into their work dirs; one instance serves many runs."""

    def __init__(
        self,
        *,
        sandbox: Sandbox,
        environments: EnvironmentManager,
        cache_root: Path,
        remotes_file: Path,
    ) -> None:
        self.sandbox = sandbox
        self.environments = environments
        self.cache_root = cache_root
        self.remotes_file = remotes_file

    def dvc_environment(self) -> Environment:
        return dvc_environment(self.environments)

    def cache_dir(self, repository: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", repository).strip("-.")[-60:] or "repo"
        digest = hashlib.sha256(repository.encode()).hexdigest()[:12]
        return self.cache_root / f"{slug}-{digest}"

    def plan(self, workdir: Path, repository: str, aliases: tuple[str, ...]) -> _Plan | None:
        """Check a commit's remotes against the server's settings; nothing is fetched.
        None when the commit tracks nothing with DVC."""
        layout = find_dvc(workdir)
        if layout is None:
            return None
        data = load_remotes(self.remotes_file, repository, aliases)
        names = layout.remotes_used()
        if not names:
            raise DataFetchError(
                "the commit tracks data with DVC but its .dvc/config names no default remote",
                hint="set one with `dvc remote add -d NAME URL` and commit .dvc/config",
            )
        sections, env, local = [f"[core]\n    remote = {_quote(names[0], 'remote')}"], {}, []
        if layout.default_remote:
            sections = [f"[core]\n    remote = {_quote(layout.default_remote, 'remote')}"]
        for name in names:
            url = layout.remote_urls.get(name)
            if url is None:
                raise DataFetchError(
                    f"the DVC remote {name!r} is used but .dvc/config does not define it",
                    hint=f"add it with `dvc remote add {name} URL` and commit .dvc/config",
                )
            checked = check_url(url, data, remote=name, config_dir=workdir / ".dvc")
            section, more = _remote_section(name, checked, data)
            sections.append(section)
            env.update(more)
            if checked.startswith("/"):
                local.append(Path(checked))
        cap = data.max_fetch_mb * MB
        if layout.declared_bytes > cap:
            raise DataFetchError(
                f"the commit's DVC data declares {layout.declared_bytes / MB:.0f} MB, more than "
                f"the {data.max_fetch_mb} MB this server fetches for {data.key}",
                hint=f"raise max_fetch_mb for it in {data.source} ({REMOTES_SETTING})",
            )
        for path in local:
            if not path.is_dir():
                raise DataFetchError(
                    f"the local DVC remote {path} does not exist on this server",
                    hint="create it (dvc push to it) or fix the remote's url",
                )
        return _Plan(layout, data, tuple(names), "\n".join(sections), env, tuple(local))

    def fetch(
        self,
        workdir: Path,
        *,
        repository: str,
        aliases: tuple[str, ...] = (),
        cache_key: str | None = None,
        slot: int,
        log_path: Path,
        cancel: threading.Event | None = None,
    ) -> FetchResult | None:
        """Pull the commit's DVC data into workdir; None when it tracks none. ``repository``
        (and ``aliases``) name its entry in the remotes file; ``cache_key`` (its mirror's
        URL) picks its DVC cache.
        Always leaves modelci's .dvc/config in a DVC work dir, for ``dvc repro``."""
        plan = self.plan(workdir, repository, aliases)  # reads the repository's .dvc/config
        if (workdir / ".dvc").exists() or (workdir / "dvc.yaml").exists():
            prepare_workdir(workdir)
        if plan is None:
            return None
        started = time.monotonic()
        tool = self.dvc_environment()
        cache = self.cache_dir(cache_key or repository)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.cache_root.chmod(0o711)  # the sandbox's uid must reach its repository's cache
        cache.mkdir(exist_ok=True, mode=0o700)
        config = (
            f"{plan.sections}\n[cache]\n    dir = {_quote(str(cache), 'the cache path')}\n"
            '    type = "reflink,copy"\n'
        )
        dvc = f"{shlex.quote(str(tool.python))} -m dvc"
        commands = ["set -e"]
        if plan.layout.dvc_files:
            commands.append(f"{dvc} pull {shlex.join(plan.layout.dvc_files)}")
        if plan.layout.has_lock:
            # Stage outputs may never have been pushed: the pipeline rebuilds those.
            commands.append(f"{dvc} pull --allow-missing")
        limits = Limits(
            timeout_s=plan.data.fetch_timeout_s,
            max_disk_mb=plan.data.max_fetch_mb,
            max_file_mb=plan.data.max_fetch_mb,
            timeout_origin=f"fetch_timeout in {plan.data.source}",
        )
        spec = SandboxSpec(
            command="\n".join(commands),
            workdir=workdir,
            log_path=log_path,
            ro_binds=(tool.path, *plan.local_remotes),
            rw_binds=(cache,),
            network=True,
            home_files={".config/dvc/config": config},
            env={
                "DVC_NO_ANALYTICS": "1",
                "PATH": f"{tool.path}/bin:{SYSTEM_PATH}",
                **plan.env,
            },
            limits=limits,
            slot=slot,
        )
        with locked(self.cache_root / f"{cache.name}.lock"):
            before = cache_usage(cache)
            outcome = self.sandbox.run(spec, cancel=cancel)
            fetched = max(0, cache_usage(cache) - before)
        if not outcome.ok:
            from modelci.evaluate.logtail import log_tail

            reason = _failure(log_path, plan.remotes)
            if outcome.failure_reason() and not outcome.exit_code:
                reason += f": the fetch {outcome.failure_reason()}"
            raise DataFetchError(
                reason,
                hint="check that the data was pushed (dvc push) and the remote's credentials "
                f"in {plan.data.source}; the end of the fetch's log says more",
                log_tail=log_tail(log_path, paths={f"{workdir}/": "", str(cache): "<dvc cache>"}),
                log_path=str(log_path),
            )
        return FetchResult(plan.remotes, fetched, time.monotonic() - started, log_path)


@dataclass(frozen=True)
class _Plan:
    layout: DvcLayout
    data: RepositoryData
    remotes: tuple[str, ...]
    sections: str  # the fetch's DVC config without the cache (it has secrets)
    env: Mapping[str, str]
    local_remotes: tuple[Path, ...]
