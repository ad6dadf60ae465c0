"""A commit's DVC data copied by modelci from a warm cache: real DVC builds the cache
(``dvc add``), modelci copies from it, and declines whatever it cannot vouch for."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from modelci.data.cachecopy import copyable, plan_cache_copy
from modelci.data.dvcrepo import DvcLayout, find_dvc
from tests.data.dvcrepos import damaged_cache_objects, dvc

FILES = {
    "images/a.bin": b"\x00\x01" * 1000,
    "images/sub/b.txt": b"b\n",
    "images/sub/deeper/c.txt": b"c\n" * 3,
    "labels.csv": b"x,label\n1,0\n2,1\n",
}


@pytest.fixture(scope="module")
def added(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A DVC project whose data/images and data/labels.csv are in its cache (dvc add)."""
    root = tmp_path_factory.mktemp("dvc-add")
    source, cache = root / "source", root / "cache"
    source.mkdir()
    dvc(source, "init", "--no-scm", "--quiet")
    dvc(source, "config", "cache.dir", str(cache))
    for name, data in FILES.items():
        (source / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (source / "data" / name).write_bytes(data)
    dvc(source, "add", "--quiet", "data/images", "data/labels.csv")
    return source, cache


@pytest.fixture
def tracked(added: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """That project, and a copy of its cache for this test to damage."""
    source, cache = added
    shutil.copytree(cache, tmp_path / "cache")
    return source, tmp_path / "cache"


def checkout(tmp_path: Path, source: Path) -> Path:
    """The commit as modelci checks it out: .dvc files (moved to the top, so that data/
    holds nothing of git's) and no data."""
    workdir = tmp_path / "work"
    (workdir / ".dvc").mkdir(parents=True)
    shutil.copy(source / ".dvc" / "config", workdir / ".dvc" / "config")
    for dvc_file in (source / "data").glob("*.dvc"):
        document = yaml.safe_load(dvc_file.read_text())
        for out in document["outs"]:
            out["path"] = f"data/{out['path']}"
        (workdir / dvc_file.name).write_text(yaml.safe_dump(document))
    return workdir


def layout(workdir: Path) -> DvcLayout:
    found = find_dvc(workdir)
    assert found is not None
    return found


def objects(cache: Path) -> list[Path]:
    return [p for p in (cache / "files" / "md5").rglob("*") if p.is_file()]


def test_everything_in_the_cache_is_copied_unlinked(
    tracked: tuple[Path, Path], tmp_path: Path
) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)

    copy = plan_cache_copy(workdir, layout(workdir), cache)
    assert copy is not None
    assert copy.bytes == sum(len(data) for data in FILES.values())
    copy.copy(workdir, cache)

    for name, data in FILES.items():
        path = workdir / "data" / name
        assert path.read_bytes() == data
        info = path.stat()
        assert info.st_nlink == 1 and info.st_mode & 0o200  # writable, as DVC leaves it
    cached_inodes = {p.stat().st_ino for p in objects(cache)}
    assert not cached_inodes & {p.stat().st_ino for p in workdir.rglob("*") if p.is_file()}
    # A training that rewrites its data changes its copy only.
    (workdir / "data" / "labels.csv").write_text("x,label\n1,1\n")
    (workdir / "data" / "images" / "a.bin").write_bytes(b"")
    assert not damaged_cache_objects(cache)


def test_a_missing_object_leaves_the_fetch_to_dvc(
    tracked: tuple[Path, Path], tmp_path: Path
) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    victim = next(p for p in objects(cache) if p.stat().st_size == len(FILES["images/sub/b.txt"]))
    victim.unlink()

    assert plan_cache_copy(workdir, layout(workdir), cache) is None
    assert copyable(workdir, layout(workdir))  # DVC fetches the object, then modelci copies
    assert not (workdir / "data").exists()


def test_a_symlink_on_the_way_is_not_followed(tracked: tuple[Path, Path], tmp_path: Path) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workdir / "data").symlink_to(elsewhere)  # committed by the repository

    assert not copyable(workdir, layout(workdir))
    assert plan_cache_copy(workdir, layout(workdir), cache) is None
    assert list(elsewhere.iterdir()) == []


def test_data_already_in_the_work_dir_is_left_to_dvc(
    tracked: tuple[Path, Path], tmp_path: Path
) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    (workdir / "data").mkdir()
    (workdir / "data" / "labels.csv").write_text("committed to git as well\n")

    assert plan_cache_copy(workdir, layout(workdir), cache) is None


@pytest.mark.parametrize("relpath", ["../../../escaped.txt", "/tmp/escaped.txt", "sub/../../x"])
def test_a_manifest_naming_a_path_outside_its_folder_is_refused(
    tracked: tuple[Path, Path], tmp_path: Path, relpath: str
) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    manifest = next(p for p in objects(cache) if p.name.endswith(".dir"))
    entries = json.loads(manifest.read_text())
    entries[0]["relpath"] = relpath
    manifest.chmod(0o644)
    manifest.write_text(json.dumps(entries))  # a remote that serves a forged manifest

    assert plan_cache_copy(workdir, layout(workdir), cache) is None
    assert not (tmp_path / "escaped.txt").exists() and not (workdir / "data").exists()


def test_a_cache_object_that_is_a_symlink_is_not_read(
    tracked: tuple[Path, Path], tmp_path: Path
) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    secret = tmp_path / "server-secret"
    secret.write_text("the server's private key\n")
    victim = next(p for p in objects(cache) if p.stat().st_size == len(FILES["labels.csv"]))
    victim.unlink()
    victim.symlink_to(secret)  # left by a fetch sandbox that went wrong

    assert plan_cache_copy(workdir, layout(workdir), cache) is None
    assert not (workdir / "data").exists()


def test_a_cache_folder_that_is_a_symlink_is_not_followed(
    tracked: tuple[Path, Path], tmp_path: Path
) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    moved = tmp_path / "moved-md5"
    os.rename(cache / "files" / "md5", moved)
    (cache / "files" / "md5").symlink_to(moved)

    assert plan_cache_copy(workdir, layout(workdir), cache) is None


def test_a_pipeline_is_left_to_dvc(tracked: tuple[Path, Path], tmp_path: Path) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    (workdir / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")

    assert not copyable(workdir, layout(workdir))
    assert plan_cache_copy(workdir, layout(workdir), cache) is None


def test_dvc_2_hashes_are_left_to_dvc(tracked: tuple[Path, Path], tmp_path: Path) -> None:
    source, cache = tracked
    workdir = checkout(tmp_path, source)
    legacy = workdir / "labels.csv.dvc"
    document = yaml.safe_load(legacy.read_text())
    del document["outs"][0]["hash"]  # DVC 2's md5 (of text with Windows line ends normalised)
    legacy.write_text(yaml.safe_dump(document))

    assert plan_cache_copy(workdir, layout(workdir), cache) is None
