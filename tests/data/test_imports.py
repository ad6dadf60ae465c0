"""DVC imports: real DVC (`dvc import-url` of a local directory), real sandbox."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelci.data.fetch import DataFetcher
from modelci.data.imports import find_imports, write_overlay
from modelci.errors import DataFetchError
from modelci.runner.cgroups import acquire_slot
from modelci.settings import Settings
from tests.conftest import git
from tests.data.dvcrepos import CountingSandbox, csv_rows, data_fetcher, import_url_repo
from tests.data.test_fetch import place

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
__all__ = ["place"]  # the fixture: a 0755 directory the sandbox's uid reaches

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)


@pytest.fixture
def settings(place: Path, shared_envs: Path) -> Settings:
    made = Settings(
        data_dir=place / "data",
        database_url=f"sqlite:///{place}/store.db",
        max_parallel_runs=2,
        envs_dir=shared_envs,
    )
    made.prepare_data_dir()
    return made


def import_repo(place: Path, *, remote: bool = True) -> tuple[Path, Path]:
    """A repository whose data/raw.csv is `dvc import-url`ed from a local source directory
    (pushed to a local remote when ``remote``), and that source directory."""
    source = place / "source"
    source.mkdir()
    (source / "raw.csv").write_text(csv_rows(ones=3, zeros=7))
    remote_dir = place / "remote" if remote else None
    repo = import_url_repo(place / "repo", source / "raw.csv", "data/raw.csv", remote=remote_dir)
    return repo, source


def clone(repo: Path, workdir: Path) -> Path:
    git(repo.parent, "clone", "--quiet", str(repo), str(workdir))
    return workdir


def check(fetcher: DataFetcher, settings: Settings, repo: Path, workdir: Path):  # type: ignore[no-untyped-def]
    with acquire_slot(settings.slots_dir, settings.max_parallel_runs) as slot:
        return fetcher.check_imports(
            workdir,
            repository=repo.name,
            cache_key=str(repo),
            slot=slot,
            log_path=settings.logs_dir / f"{workdir.name}.imports.log",
        )


def fetch(fetcher: DataFetcher, settings: Settings, repo: Path, workdir: Path) -> None:
    with acquire_slot(settings.slots_dir, settings.max_parallel_runs) as slot:
        fetcher.fetch(
            workdir,
            repository=repo.name,
            cache_key=str(repo),
            slot=slot,
            log_path=settings.logs_dir / f"{workdir.name}.fetch.log",
        )


def allow(settings: Settings, repo: Path, *prefixes: Path) -> None:
    urls = ", ".join(f'"{p}"' for p in prefixes)
    settings.dvc_remotes_path.write_text(f'[repositories."{repo.name}"]\nallowed_urls = [{urls}]\n')


def test_find_imports_reads_the_source_and_output(place: Path) -> None:
    repo, source = import_repo(place, remote=False)
    (pointer,) = find_imports(repo)
    assert pointer.path == "data/raw.csv.dvc"
    assert pointer.source == str(source / "raw.csv")
    assert pointer.out == "data/raw.csv"
    assert pointer.md5() is not None


def test_an_allowed_import_is_fetched_from_the_remote(place: Path, settings: Settings) -> None:
    repo, source = import_repo(place)
    allow(settings, repo, place / "remote", source)
    fetcher, _ = data_fetcher(settings)
    workdir = clone(repo, place / "work")

    fetch(fetcher, settings, repo, workdir)

    assert (workdir / "data" / "raw.csv").read_text() == csv_rows(ones=3, zeros=7)


def test_a_disallowed_source_is_refused_before_any_request(place: Path, settings: Settings) -> None:
    repo, source = import_repo(place)
    allow(settings, repo, place / "remote")  # the remote, not the import's source
    fetcher, sandbox = data_fetcher(settings)
    workdir = clone(repo, place / "work")

    with pytest.raises(DataFetchError) as refused:
        check(fetcher, settings, repo, workdir)
    with pytest.raises(DataFetchError) as refused_fetch:
        fetch(fetcher, settings, repo, workdir)

    for error in (refused.value, refused_fetch.value):
        assert "data/raw.csv.dvc" in error.message and str(source) in error.message
        assert "allowed_urls" in (error.hint or "")
    assert isinstance(sandbox, CountingSandbox) and sandbox.commands == []


def test_a_changed_source_is_seen_and_an_unchanged_one_is_not(
    place: Path, settings: Settings
) -> None:
    repo, source = import_repo(place, remote=False)
    allow(settings, repo, source)
    fetcher, _ = data_fetcher(settings)
    workdir = clone(repo, place / "work")
    committed = (workdir / "data" / "raw.csv.dvc").read_bytes()

    unchanged = check(fetcher, settings, repo, workdir)
    assert not unchanged and unchanged.changed == {}

    (source / "raw.csv").write_text(csv_rows(ones=8, zeros=2))
    refresh = check(fetcher, settings, repo, workdir)

    assert refresh and list(refresh.changed) == ["data/raw.csv.dvc"]
    assert refresh.sources == {"data/raw.csv.dvc": str(source / "raw.csv")}
    assert refresh.hashes is not None
    old, new = refresh.hashes["data/raw.csv.dvc"]
    assert old != new and new is not None and new.encode() in refresh.changed["data/raw.csv.dvc"]
    # The checkout is untouched: DVC ran on a scratch copy beside it.
    assert (workdir / "data" / "raw.csv.dvc").read_bytes() == committed
    assert not [p for p in workdir.parent.iterdir() if p.name.startswith("imports-")]

    # The refreshed pointer over a fresh checkout: its data comes from the repository's
    # cache (the refresh downloaded it), though the commit names no remote.
    second = clone(repo, place / "second")
    write_overlay(second, refresh.changed)
    fetch(fetcher, settings, repo, second)
    assert (second / "data" / "raw.csv").read_text() == csv_rows(ones=8, zeros=2)
    assert not (second / "data" / "raw.csv").is_symlink()


def test_an_overlay_is_never_written_through_a_symlink(place: Path) -> None:
    work = place / "work"
    (work / "elsewhere").mkdir(parents=True)
    (work / "data").symlink_to(work / "elsewhere")
    with pytest.raises(DataFetchError):
        write_overlay(work, {"data/raw.csv.dvc": b"x"})
    with pytest.raises(DataFetchError):
        write_overlay(work, {"../raw.csv.dvc": b"x"})
    assert list((work / "elsewhere").iterdir()) == []
