"""A commit's data version read from git: .dvc files and dvc.lock, no checkout, no DVC."""

from __future__ import annotations

from pathlib import Path

from modelci.data.versions import data_version, data_version_tag
from modelci.deliver.modelspec import parse_data_version
from modelci.runner.checkout import open_mirror
from tests.conftest import GitRepo, commit_files

DVC_FILE = "outs:\n- md5: {md5}\n  size: 10\n  path: train.csv\n"
LOCK = """\
schema: '2.0'
stages:
  prepare:
    cmd: python prepare.py
    outs:
    - path: data/features
      md5: {md5}.dir
      size: 30
      nfiles: 2
"""


def test_every_output_of_the_commit_with_its_md5(make_repo: GitRepo, tmp_path: Path) -> None:
    repo = make_repo({"README.md": "no data yet"})
    mirror = open_mirror(str(repo), tmp_path / "mirrors")
    assert data_version(mirror, mirror.resolve("HEAD")) == {}
    commit_files(
        repo,
        {
            "data/train.csv.dvc": DVC_FILE.format(md5="a" * 32),
            "dvc.lock": LOCK.format(md5="b" * 32),
            "broken.dvc": "outs: [",
        },
    )
    found = data_version(mirror, mirror.resolve("HEAD"))  # resolving fetches the commit
    assert found == {"data/features": "b" * 32 + ".dir", "data/train.csv": "a" * 32}
    assert parse_data_version(data_version_tag(found)) == found
    assert parse_data_version(None) is None
    assert parse_data_version("cut short…") is None
