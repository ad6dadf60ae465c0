"""Fetch exactly the DVC data a checked-out commit points to, in a sandbox with network.

Before anything runs, modelci reads the commit's remotes (``data.dvcrepo``),
checks each URL against the server's allow-list and finds its credentials
(``data.remotes``): a refusal happens before any request. The repository's
``.dvc/config`` is then replaced by one modelci writes (no other option of the
repository's reaches DVC: not an endpoint, not a cache path).

One cache per repository (``<data dir>/dvc-cache/<repo>``), shared by its
commits, so data is fetched once. When the cache already holds everything the
commit's ``.dvc`` files point to, modelci copies it into the work dir itself
(``data.cachecopy``: no sandbox, no DVC, 0 bytes fetched). Otherwise DVC runs
under bubblewrap with network, from modelci's DVC environment (``data.tool``),
with only the work dir and the cache writable: ``dvc fetch`` fills the cache
and modelci copies from it, or, for what modelci leaves to DVC (pipelines'
``dvc.lock``, DVC 2 hashes, odd paths), ``dvc pull``. The remotes, the cache
path and the credentials are in DVC's global config, a file that exists only in
that sandbox's private /tmp (bwrap copies it from a pipe); the training that
follows never sees it. The cache's growth is watched against ``max_fetch_mb``
while DVC runs (``data.fetchcap``). Data reaches the work dir by copy or
reflink, never a link, so training cannot change the cache.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelci.data.cachecopy import copyable, plan_cache_copy
from modelci.data.dvcrepo import DvcLayout, find_dvc
from modelci.data.fetchcap import CacheWatch, cache_usage, over_cap, remove_partial
from modelci.data.imports import ImportRefresh, check_source, find_imports, refreshed
from modelci.data.remotes import (
    RepositoryData,
    check_url,
    dvc_value,
    load_remotes,
    remote_section,
)
from modelci.data.tool import dvc_environment, missing_plugin, plugin_hint
from modelci.errors import DataFetchError
from modelci.runner.environments import Environment, EnvironmentManager
from modelci.runner.locks import locked
from modelci.runner.process import SYSTEM_PATH
from modelci.runner.sandbox import Limits, Sandbox, SandboxSpec

__all__ = ["DataFetcher", "FetchResult", "workdir_config"]

MB = 1024 * 1024
DVC_OWN_FILES_MB = 1024  # room for DVC's own databases beside the data (see _dvc)
_MISSING = re.compile(r"name: (?P<path>[^,\n]+), (?:md5|hash)")
_FAILED_TARGETS = re.compile(r"Checkout failed for following targets:\n(?P<paths>(?:.+\n?)+)")


@dataclass(frozen=True)
class FetchResult:
    remotes: tuple[str, ...]
    bytes_fetched: int  # growth of the repository's cache: 0 when everything was there
    seconds: float
    log_path: Path


def workdir_config(workdir: Path) -> str:
    """The work dir's ``.dvc/config``: no git (a checkout has none), no telemetry,
    the cache inside the work dir unless the fetch's global config says otherwise."""
    site = workdir / ".dvc" / "tmp" / "site-cache"
    return (
        "[core]\n    no_scm = true\n    analytics = false\n    check_update = false\n"
        f"    site_cache_dir = {dvc_value(str(site), 'the work dir')}\n"
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
        # Imports first: their sources are checked (and refused) before anything else.
        pointers = find_imports(workdir) if layout.imports else []
        sources = [
            check_source(pointer, data, workdir=workdir, remote_urls=layout.remote_urls)
            for pointer in pointers
        ]
        names = layout.remotes_used()
        if not names and len(layout.imports) < len(layout.dvc_files) + layout.has_lock:
            raise DataFetchError(
                "the commit tracks data with DVC but its .dvc/config names no default remote",
                hint="set one with `dvc remote add -d NAME URL` and commit .dvc/config",
            )
        names = sorted({*names, *(s.remote for s in sources if s.remote)})
        sections = [f"[core]\n    remote = {dvc_value(names[0], 'remote')}"] if names else []
        env: dict[str, str] = {}
        urls: dict[str, str] = {}
        local = []
        if layout.default_remote:
            sections = [f"[core]\n    remote = {dvc_value(layout.default_remote, 'remote')}"]
        for name in names:
            url = layout.remote_urls.get(name)
            if url is None:
                raise DataFetchError(
                    f"the DVC remote {name!r} is used but .dvc/config does not define it",
                    hint=f"add it with `dvc remote add {name} URL` and commit .dvc/config",
                )
            checked = check_url(url, data, remote=name, config_dir=workdir / ".dvc")
            section, more = remote_section(name, checked, data)
            sections.append(section)
            if any(env.get(key, value) != value for key, value in more.items()):
                raise DataFetchError(
                    f"the commit's DVC remotes {', '.join(map(repr, names))} need different "
                    "Google Drive service accounts, and DVC takes one per fetch",
                    hint=f"give them one service account in {data.source} (share each "
                    "folder with it)",
                )
            env.update(more)
            urls[name] = checked
            if checked.startswith("/"):
                local.append(Path(checked))
        if layout.declared_bytes > data.max_fetch_mb * MB:
            raise over_cap(data, layout.declared_bytes, stopped=False)
        for path in local:
            if not path.is_dir():
                raise DataFetchError(
                    f"the local DVC remote {path} does not exist on this server",
                    hint="create it (dvc push to it) or fix the remote's url",
                )
        sources_local = tuple(s.local for s in sources if s.local is not None)
        return _Plan(
            layout,
            data,
            tuple(names),
            urls,
            "\n".join(sections),
            env,
            (*local, *sources_local),
            imports=tuple(s.url for s in sources),
        )

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
        cache = self._cache(cache_key or repository)
        run = _Run(plan, workdir, cache, slot, log_path, cancel)
        with locked(self.cache_root / f"{cache.name}.lock"):
            copy = plan_cache_copy(workdir, plan.layout, cache)
            if copy is None and copyable(workdir, plan.layout):
                # Only objects are missing: DVC downloads them, modelci copies (its
                # checkout of 1,000 files is seconds slower than a plain copy).
                self._dvc(run, [["fetch", *plan.layout.dvc_files]])
                copy = plan_cache_copy(workdir, plan.layout, cache)
            if copy is None and not plan.remotes:
                raise DataFetchError(
                    f"the data of {', '.join(plan.layout.imports)} is not in the repository's "
                    "DVC cache and the commit names no DVC remote to fetch it from",
                    hint="dvc push the imported data to a remote (dvc remote add -d NAME URL), "
                    "or retrain: a retrain refreshes imports into the cache",
                )
            if copy is None:
                self._dvc(run, _pull_commands(plan.layout))
            else:
                if copy.bytes > plan.data.max_fetch_mb * MB:
                    raise over_cap(plan.data, copy.bytes, stopped=False)
                reflinked = copy.copy(workdir, cache)
                how = "reflinked" if reflinked else "copied"
                with log_path.open("a") as log:
                    log.write(
                        f"[modelci: {len(copy.files)} files ({copy.bytes / MB:.1f} MB) {how} "
                        "from the repository's DVC cache into the work dir]\n"
                    )
        return FetchResult(plan.remotes, run.fetched, time.monotonic() - started, log_path)

    def check_imports(
        self,
        workdir: Path,
        *,
        repository: str,
        aliases: tuple[str, ...] = (),
        cache_key: str | None = None,
        slot: int,
        log_path: Path,
        cancel: threading.Event | None = None,
    ) -> ImportRefresh:
        """Which of a checked-out commit's imports changed at their source, as
        ``dvc update`` sees it. workdir is only read: DVC runs on copies of the
        pointers in a scratch directory beside it, in the fetch's sandbox (network,
        the server's credentials, the allow-list checked first). The new data lands in
        the repository's DVC cache, so training on the refreshed pointers copies it
        from there. ``--no-download`` is not used: DVC 3 then drops the output's md5,
        and a pointer without it names no data (no data version, nothing to propose)."""
        pointers = find_imports(workdir)
        if not pointers:
            return ImportRefresh({}, {}, {})
        plan = self.plan(workdir, repository, aliases)
        if plan is None:
            raise DataFetchError(
                f"{pointers[0].path} imports data with DVC, but the commit has no .dvc "
                "directory: DVC cannot update it",
                hint="commit the .dvc directory (dvc init, then git add .dvc) with the imports",
            )
        cache = self._cache(cache_key or repository)
        scratch = Path(tempfile.mkdtemp(prefix="imports-", dir=workdir.parent))
        try:
            for pointer in pointers:
                (scratch / pointer.path).parent.mkdir(parents=True, exist_ok=True)
                (scratch / pointer.path).write_bytes(pointer.text)
            prepare_workdir(scratch)
            run = _Run(plan, scratch, cache, slot, log_path, cancel, action="update")
            with locked(self.cache_root / f"{cache.name}.lock"):
                self._dvc(run, [["update", *(p.path for p in pointers)]])
            return refreshed(pointers, lambda path: (scratch / path).read_bytes())
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _cache(self, key: str) -> Path:
        cache = self.cache_dir(key)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        self.cache_root.chmod(0o711)  # the sandbox's uid must reach its repository's cache
        cache.mkdir(exist_ok=True, mode=0o700)
        return cache

    def _dvc(self, run: _Run, commands: list[list[str]]) -> None:
        """Run DVC commands in the fetch's sandbox, stopped if the cache grows past the cap."""
        plan, cache = run.plan, run.cache
        _check_plugins(plan)
        tool = self.dvc_environment()
        dvc = [str(tool.python), "-m", "dvc"]
        cap = plan.data.max_fetch_mb
        spec = SandboxSpec(
            command="\n".join(["set -e", *(shlex.join([*dvc, *args]) for args in commands)]),
            workdir=run.workdir,
            log_path=run.log_path,
            ro_binds=(tool.path, *plan.local_remotes),
            rw_binds=(cache,),
            network=True,
            home_files={".config/dvc/config": plan.dvc_config(cache)},
            env={"DVC_NO_ANALYTICS": "1", "PATH": f"{tool.path}/bin:{SYSTEM_PATH}", **plan.env},
            limits=Limits(
                timeout_s=plan.data.fetch_timeout_s,
                # The cap itself is held by the cache watch; DVC's own databases (sqlite,
                # in the work dir's .dvc/tmp) need room beside the data even under a small one.
                max_disk_mb=cap + DVC_OWN_FILES_MB,
                max_file_mb=cap + DVC_OWN_FILES_MB,
                timeout_origin=f"fetch_timeout in {plan.data.source}",
            ),
            slot=run.slot,
        )
        if run.before is None:
            run.before = cache_usage(cache)
        with CacheWatch(cache, run.before, cap * MB, run.cancel) as watch:
            outcome = self.sandbox.run(spec, cancel=watch.stop)
        if not outcome.ok:
            remove_partial(cache)
        if watch.exceeded:
            with run.log_path.open("a") as log:
                log.write(f"[modelci: stopped: the DVC cache grew past max_fetch_mb ({cap} MB)]\n")
        run.fetched = max(0, cache_usage(cache) - run.before)
        # The work dir's watchdog (max_disk_mb) is the same cap, seen from the other side.
        if watch.exceeded or outcome.disk_exceeded or run.fetched > cap * MB:
            raise over_cap(plan.data, run.fetched, stopped=not outcome.ok)
        if not outcome.ok:
            from modelci.evaluate.logtail import log_tail

            if run.action == "update":
                reason = f"dvc update of the imports from {', '.join(plan.imports)} failed"
            else:
                reason = _failure(run.log_path, plan.remotes)
            if outcome.failure_reason() and not outcome.exit_code:
                reason += f": the fetch {outcome.failure_reason()}"
            raise DataFetchError(
                reason,
                hint="check that the data was pushed (dvc push), the sources of imports, and the "
                "remote's credentials "
                f"in {plan.data.source}; the end of the fetch's log says more",
                log_tail=log_tail(
                    run.log_path, paths={f"{run.workdir}/": "", str(cache): "<dvc cache>"}
                ),
                log_path=str(run.log_path),
            )


def _check_plugins(plan: _Plan) -> None:
    """Refuse, before any request, a remote whose DVC plugin is not installed."""
    named = [(f"the DVC remote {name!r}", url) for name, url in plan.urls.items()]
    for what, url in [*named, *(("an import's source", url) for url in plan.imports)]:
        if (plugin := missing_plugin(url)) is not None:
            raise DataFetchError(
                f"{what} ({url}) needs DVC's {plugin} plugin, which is not "
                "installed beside modelci",
                hint=plugin_hint(plugin),
            )


def _pull_commands(layout: DvcLayout) -> list[list[str]]:
    commands = []
    if layout.dvc_files:
        commands.append(["pull", *layout.dvc_files])
    if layout.has_lock:
        # Stage outputs may never have been pushed: the pipeline rebuilds those.
        commands.append(["pull", "--allow-missing"])
    return commands


@dataclass(frozen=True)
class _Plan:
    layout: DvcLayout
    data: RepositoryData
    remotes: tuple[str, ...]
    urls: Mapping[str, str]  # each remote's, as checked (a local path made absolute)
    sections: str  # the fetch's DVC config without the cache (it has secrets)
    env: Mapping[str, str]  # for DVC in the sandbox: a Google Drive service account's key
    local_remotes: tuple[Path, ...]  # and local import sources: bound read-only
    imports: tuple[str, ...] = ()  # the imports' sources, as checked

    def dvc_config(self, cache: Path) -> str:
        """DVC's global config for the fetch (secrets included): the remotes, the cache."""
        where = dvc_value(str(cache), "the cache path")
        return f'{self.sections}\n[cache]\n    dir = {where}\n    type = "reflink,copy"\n'


@dataclass
class _Run:
    """One fetch's state across the DVC commands it runs."""

    plan: _Plan
    workdir: Path
    cache: Path
    slot: int
    log_path: Path
    cancel: threading.Event | None
    action: str = "fetch"  # or "update": refreshing imports
    before: int | None = None  # the cache's bytes before the first DVC command
    fetched: int = 0
