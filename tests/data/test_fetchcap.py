"""The byte cap on a fetch (max_fetch_mb), held while DVC runs: real DVC, a real local
remote, the real sandbox."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from modelci.errors import DataFetchError
from modelci.settings import Settings
from tests.conftest import git
from tests.data.dvcrepos import data_fetcher, dvc, fetch_clone
from tests.data.test_fetch import allow, place, settings

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
__all__ = ["place", "settings"]  # fixtures shared with test_fetch

if shutil.which("bwrap") is None or os.geteuid() != 0:
    pytest.skip("needs bubblewrap and root (scripts/setup installs it)", allow_module_level=True)

FILES = 3000  # of 4 KB: 12 MB, each file far below the cap, and many of them to copy


def under_declared_repo(place: Path) -> Path:
    """A pushed directory of FILES files whose .dvc file declares no size, as a pull
    request could write it: only the fetch itself finds out how big it is."""
    repo, remote = place / "big", place / "remote"
    repo.mkdir()
    git(repo, "init", "--quiet")
    dvc(repo, "init", "--quiet")
    dvc(repo, "remote", "add", "-d", "storage", str(remote))
    (repo / "data" / "many").mkdir(parents=True)
    for index in range(FILES):
        (repo / "data" / "many" / f"{index}.bin").write_bytes(os.urandom(4096))
    dvc(repo, "add", "--quiet", "data/many")
    dvc(repo, "push", "--quiet")
    pointer = repo / "data" / "many.dvc"
    document = yaml.safe_load(pointer.read_text())
    del document["outs"][0]["size"]
    pointer.write_text(yaml.safe_dump(document))
    git(repo, "add", "--all")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "--quiet", "-m", "data")
    return repo


def test_a_fetch_past_the_cap_is_stopped_while_it_runs(settings: Settings, place: Path) -> None:
    repo = under_declared_repo(place)
    allow(settings, repo, f'allowed_urls = ["{place / "remote"}"]\nmax_fetch_mb = 1\n')
    fetcher, _ = data_fetcher(settings)

    with pytest.raises(DataFetchError) as raised:
        fetch_clone(fetcher, settings, repo, place / "work")

    error = raised.value
    assert "the DVC fetch was stopped" in error.message and "1 MB" in error.message
    assert "max_fetch_mb" in (error.hint or "")
    assert str(settings.dvc_remotes_path) in (error.hint or "")
    assert "MODELCI_DVC_REMOTES_FILE" in (error.hint or "")
    # Stopped before it finished (how early depends on the machine's load): objects
    # never came, and nothing reached the work dir.
    cache = fetcher.cache_dir(str(repo))
    fetched = [p for p in (cache / "files" / "md5").rglob("*") if p.is_file()]
    assert len(fetched) < FILES
    assert all(not p.name.endswith(".tmp") for p in fetched)  # no half-written download kept
    assert not (place / "work" / "data" / "many").exists()
