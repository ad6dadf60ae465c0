"""Reading what untrusted code wrote: links, escapes, FIFOs, sizes, bad JSON."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelci.errors import OutputError
from modelci.runner import outputs
from modelci.runner.outputs import read_json_output, read_output_bytes


@pytest.fixture(params=["openat2", "walk"], autouse=True)
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test runs with openat2 and with the component-by-component fallback."""
    if request.param == "openat2" and not outputs._use_openat2:
        pytest.skip("openat2 is not available here")
    monkeypatch.setattr(outputs, "_use_openat2", request.param == "openat2")
    yield request.param
    assert outputs._use_openat2 == (request.param == "openat2")  # no silent fallback


@pytest.fixture
def work(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_text('{"stolen": "root:$6$hash"}')
    path.chmod(0o600)
    return path


def test_reads_a_regular_file(work: Path) -> None:
    (work / "out").mkdir()
    (work / "out" / "metrics.json").write_text('{"accuracy": 0.9}')
    assert read_json_output(work, "out/metrics.json") == {"accuracy": 0.9}
    assert read_json_output(work, "./out/./metrics.json") == {"accuracy": 0.9}


def test_symlink_to_a_file_outside_is_refused(work: Path, secret: Path) -> None:
    (work / "metrics.json").symlink_to(secret)
    with pytest.raises(OutputError, match="symbolic link") as caught:
        read_output_bytes(work, "metrics.json", max_bytes=1000)
    assert "stolen" not in str(caught.value)


def test_symlink_to_etc_shadow_is_refused(work: Path) -> None:
    (work / "metrics.json").symlink_to("/etc/shadow")
    with pytest.raises(OutputError, match="symbolic link"):
        read_json_output(work, "metrics.json")


def test_symlink_inside_the_work_dir_is_refused_too(work: Path) -> None:
    (work / "real.json").write_text("{}")
    (work / "metrics.json").symlink_to("real.json")
    with pytest.raises(OutputError, match="symbolic link"):
        read_json_output(work, "metrics.json")


def test_symlinked_parent_directory_is_refused(work: Path, secret: Path) -> None:
    (work / "results").symlink_to(secret.parent)
    with pytest.raises(OutputError, match="symbolic link"):
        read_json_output(work, "results/shadow")


def test_deeper_symlinked_parent_directory_is_refused(work: Path, secret: Path) -> None:
    (work / "a").mkdir()
    (work / "a" / "b").symlink_to(secret.parent)
    with pytest.raises(OutputError, match="symbolic link"):
        read_json_output(work, "a/b/shadow")


@pytest.mark.parametrize("path", ["../outside/shadow", "out/../../outside/shadow", ".."])
def test_dotdot_escape_is_refused(work: Path, secret: Path, path: str) -> None:
    with pytest.raises(OutputError, match="leaves the repository"):
        read_json_output(work, path)


def test_absolute_path_is_refused(work: Path, secret: Path) -> None:
    with pytest.raises(OutputError, match="absolute"):
        read_json_output(work, str(secret))


@pytest.mark.parametrize("path", ["", ".", "./", "a\0b"])
def test_empty_paths_are_refused(work: Path, path: str) -> None:
    with pytest.raises(OutputError):
        read_json_output(work, path)


@pytest.mark.timeout(10)
def test_fifo_does_not_hang(work: Path) -> None:
    os.mkfifo(work / "metrics.json")
    with pytest.raises(OutputError, match="not a regular file"):
        read_json_output(work, "metrics.json")


def test_directory_instead_of_a_file(work: Path) -> None:
    (work / "metrics.json").mkdir()
    with pytest.raises(OutputError, match="is a directory"):
        read_json_output(work, "metrics.json")


def test_parent_that_is_a_file(work: Path) -> None:
    (work / "out").write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        read_json_output(work, "out/metrics.json")


def test_missing_file_says_what_to_check(work: Path) -> None:
    with pytest.raises(OutputError, match=r"did not write metrics\.json") as caught:
        read_json_output(work, "metrics.json")
    assert "modelci.yaml" in str(caught.value)


def test_too_big(work: Path) -> None:
    (work / "metrics.json").write_text('{"a": 1}' + " " * 100)
    assert read_output_bytes(work, "metrics.json", max_bytes=108).startswith(b'{"a"')
    with pytest.raises(OutputError, match="larger than 107 bytes"):
        read_output_bytes(work, "metrics.json", max_bytes=107)


def test_malformed_json_names_line_and_column(work: Path) -> None:
    (work / "metrics.json").write_text('{\n  "accuracy": 0.9,\n  "loss": ,\n}\n')
    with pytest.raises(OutputError) as caught:
        read_json_output(work, "metrics.json")
    message = str(caught.value)
    assert "metrics.json is not valid JSON" in message
    assert "line 3, column 11" in message
    assert "json.dump" in message  # the fix


def test_deeply_nested_json(work: Path) -> None:
    (work / "metrics.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(OutputError, match="nests too deeply"):
        read_json_output(work, "metrics.json")


def test_deeply_nested_python_dict_is_not_evaluated(work: Path) -> None:
    (work / "result.txt").write_text("{'a': " + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(OutputError, match="not valid JSON"):
        read_json_output(work, "result.txt")


def test_not_utf8(work: Path) -> None:
    (work / "metrics.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(OutputError, match="not UTF-8"):
        read_json_output(work, "metrics.json")


def test_seed_tutorial_result_txt_with_single_quotes(work: Path) -> None:
    (work / "result.txt").write_text("{'loss': 1, 'accuracy': 1}")
    assert read_json_output(work, "result.txt") == {"loss": 1, "accuracy": 1}


def test_seed_tutorial_result_txt_printed_by_numpy_2(work: Path) -> None:
    (work / "result.txt").write_text("{'loss': np.float64(0.25), 'accuracy': np.float64(0.75)}\n")
    assert read_json_output(work, "result.txt") == {"loss": 0.25, "accuracy": 0.75}


@pytest.mark.parametrize(
    "text",
    [
        "{'a': __import__('os').system('true')}",  # calls are not literals
        "{'a': {1, 2}}",  # a set is not JSON-like
        "{1: 'a'}",  # nor are non-string keys
        "['a', 'b']",  # only the dict form of the seed layout is accepted
    ],
)
def test_other_python_literals_are_refused(work: Path, text: str) -> None:
    (work / "result.txt").write_text(text)
    with pytest.raises(OutputError, match="not valid JSON"):
        read_json_output(work, "result.txt")


def test_copy_output_tree_copies_regular_files(work: Path, tmp_path: Path) -> None:
    (work / "model" / "sub").mkdir(parents=True)
    (work / "model" / "MLmodel").write_text("flavors: {}")
    (work / "model" / "sub" / "weights.bin").write_bytes(b"\0" * 10)
    copied = outputs.copy_output_tree(work, "model", tmp_path / "out", max_bytes=1000)
    assert copied == len("flavors: {}") + 10
    assert (tmp_path / "out" / "sub" / "weights.bin").read_bytes() == b"\0" * 10


@pytest.mark.parametrize("kind", ["file link", "dir link", "fifo"])
def test_copy_output_tree_refuses_links_and_fifos(work: Path, tmp_path: Path, kind: str) -> None:
    (work / "model").mkdir()
    target = work / "model" / "x"
    if kind == "file link":
        target.symlink_to("/etc/shadow")
    elif kind == "dir link":
        target.symlink_to("/etc")
    else:
        os.mkfifo(target)
    with pytest.raises(OutputError, match=r"symbolic link|not a regular file"):
        outputs.copy_output_tree(work, "model", tmp_path / "out", max_bytes=10**9)
    assert not (tmp_path / "out" / "x").exists()


def test_copy_output_tree_skips_links_when_asked_and_filters(work: Path, tmp_path: Path) -> None:
    (work / "lib.py").write_text("x = 1")
    (work / "data.csv").write_text("a")
    (work / "evil.py").symlink_to("/etc/shadow")
    outputs.copy_output_tree(
        work, ".", tmp_path / "out", max_bytes=1000, suffixes=(".py",), skip_unusual=True
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lib.py"]


def test_copy_output_tree_caps_size_and_refuses_a_linked_root(work: Path, tmp_path: Path) -> None:
    (work / "big").mkdir()
    (work / "big" / "f").write_bytes(b"x" * 2000)
    with pytest.raises(OutputError, match="larger than"):
        outputs.copy_output_tree(work, "big", tmp_path / "out", max_bytes=1000)
    (work / "root").symlink_to("/etc")
    with pytest.raises(OutputError, match="symbolic links"):
        outputs.copy_output_tree(work, "root", tmp_path / "out2", max_bytes=1000)


def test_copy_output_file_streams_and_refuses_links(work: Path, tmp_path: Path) -> None:
    (work / "model.pkl").write_bytes(b"p" * 5000)
    assert outputs.copy_output_file(work, "model.pkl", tmp_path / "a", max_bytes=10_000) == 5000
    assert (tmp_path / "a").read_bytes() == b"p" * 5000
    with pytest.raises(OutputError, match="larger than"):
        outputs.copy_output_file(work, "model.pkl", tmp_path / "b", max_bytes=100)
    assert not (tmp_path / "b").exists()
    (work / "evil.pkl").symlink_to("/etc/shadow")
    with pytest.raises(OutputError, match="symbolic link"):
        outputs.copy_output_file(work, "evil.pkl", tmp_path / "c", max_bytes=10_000)


def test_write_file_atomically_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "predictions.json"
    outputs.write_file_atomically(target, b'{"y_true": [1]}')
    outputs.write_file_atomically(target, b'{"y_true": [0]}')
    assert target.read_bytes() == b'{"y_true": [0]}'
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.json"]


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "predictions.json"
    target.write_bytes(b"old and whole")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        outputs.write_file_atomically(target, b"new")
    assert target.read_bytes() == b"old and whole"
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.json"]
