"""Params changes as `dvc params diff` shows them, from two commits' files."""

from __future__ import annotations

import json

import pytest

from modelci.data.params import (
    MAX_PARAMS,
    ParamChange,
    diff_params,
    flatten_params,
    params_files,
)
from modelci.errors import CheckoutError


def reader(files: dict[str, str | bytes]) -> object:
    def read(path: str) -> bytes | None:
        value = files.get(path)
        return value.encode() if isinstance(value, str) else value

    return read


def diff(base: dict[str, str | bytes], head: dict[str, str | bytes]) -> tuple[list[tuple], list]:
    result = diff_params(reader(base), reader(head))  # type: ignore[arg-type]
    return [(c.path, c.key, c.old, c.new, c.status) for c in result.changes], list(result.notes)


def test_nested_keys_are_joined_with_dots_and_lists_stay_values() -> None:
    flat = flatten_params({"train": {"lr": 0.1, "layers": [64, 32], "opt": {"name": "adam"}}})
    assert flat == {"train.lr": 0.1, "train.layers": [64, 32], "train.opt.name": "adam"}
    assert flatten_params({"empty": {}, "seed": 1}) == {"seed": 1}  # DVC drops empty groups


def test_params_yaml_is_compared_whole_without_dvc() -> None:
    base = {"params.yaml": "train:\n  lr: 0.01\n  epochs: 10\nseed: 1\n"}
    head = {"params.yaml": "train:\n  lr: 0.02\n  batch: 32\nseed: 1\n"}

    changes, notes = diff(base, head)

    assert changes == [
        ("params.yaml", "train.lr", 0.01, 0.02, "modified"),
        ("params.yaml", "train.batch", None, 32, "added"),
        ("params.yaml", "train.epochs", 10, None, "removed"),
    ]
    assert notes == []


def test_a_repository_without_params_shows_nothing() -> None:
    assert diff({"train.py": "x"}, {"train.py": "y"}) == ([], [])


DVC_YAML = """\
params: [top.json]
stages:
  train:
    cmd: python train.py
    params:
      - train.lr
      - config.json: [model]
      - extra.toml:
"""


def test_files_and_keys_that_dvc_yaml_declares() -> None:
    import yaml

    files = params_files(yaml.safe_load(DVC_YAML), has_default=False)
    assert files == {
        "extra.toml": None,
        "top.json": None,
        "params.yaml": ("train.lr",),
        "config.json": ("model",),
    }
    # With params.yaml present DVC compares it whole, declared keys or not.
    assert params_files(yaml.safe_load(DVC_YAML), has_default=True)["params.yaml"] is None


def test_declared_params_files_are_compared_in_their_format() -> None:
    common = {"dvc.yaml": DVC_YAML}
    base = {
        **common,
        "config.json": json.dumps({"model": {"depth": 3}, "undeclared": 1}),
        "extra.toml": 'opt = "adam"\n[sched]\nwarmup = 100\n',
        "top.json": json.dumps({"a": 1}),
    }
    head = {
        **common,
        "config.json": json.dumps({"model": {"depth": 5}, "undeclared": 2}),
        "extra.toml": 'opt = "sgd"\n[sched]\nwarmup = 100\n',
        "top.json": json.dumps({"a": 1}),
    }

    changes, notes = diff(base, head)

    assert sorted(changes) == [
        ("config.json", "model.depth", 3, 5, "modified"),
        ("extra.toml", "opt", "adam", "sgd", "modified"),
    ]
    assert notes == []


def test_stage_wdir_and_foreach_stages_and_paths_outside_the_repository() -> None:
    import yaml

    document = yaml.safe_load(
        """
stages:
  a:
    wdir: sub
    params: [lr, {../../etc/passwd: [x]}, {/abs.yaml: [y]}, {"${file}": [z]}]
  b:
    foreach: [1, 2]
    do:
      params: [{other.yaml: [k]}]
"""
    )
    assert params_files(document, has_default=False) == {
        "sub/params.yaml": ("lr",),
        "other.yaml": ("k",),
    }


def test_a_file_dvc_yaml_adds_at_head_shows_its_params_as_added() -> None:
    head_yaml = "stages:\n  t:\n    cmd: x\n    params: [{conf.yaml: }]\n"
    changes, notes = diff({}, {"dvc.yaml": head_yaml, "conf.yaml": "depth: 4\n"})
    assert changes == [("conf.yaml", "depth", None, 4, "added")]
    assert notes == []


def test_a_declared_file_missing_at_one_side_is_said() -> None:
    dvc_yaml = "stages:\n  t:\n    cmd: x\n    params: [{conf.yaml: }]\n"
    changes, notes = diff({"dvc.yaml": dvc_yaml, "conf.yaml": "depth: 4\n"}, {"dvc.yaml": dvc_yaml})
    assert changes == [("conf.yaml", "depth", 4, None, "removed")]
    assert notes == ["conf.yaml, which dvc.yaml names, is missing at head"]


def test_bad_yaml_is_a_note_and_other_files_are_still_compared() -> None:
    dvc_yaml = "stages:\n  t:\n    cmd: x\n    params: [{conf.json: }]\n"
    base = {"dvc.yaml": dvc_yaml, "params.yaml": "lr: 1\n", "conf.json": '{"a": 1}'}
    head = {"dvc.yaml": dvc_yaml, "params.yaml": "lr: [1\nseed: 2\n", "conf.json": '{"a": 2}'}

    changes, notes = diff(base, head)

    assert changes == [("conf.json", "a", 1, 2, "modified")]
    assert len(notes) == 1
    assert notes[0].startswith("params.yaml at head is not valid YAML (line 2)")
    assert notes[0].endswith("its params are not compared")


def test_a_dvc_yaml_that_is_not_yaml_still_compares_params_yaml() -> None:
    changes, notes = diff(
        {"dvc.yaml": "stages: [", "params.yaml": "lr: 1\n"},
        {"dvc.yaml": "stages: [", "params.yaml": "lr: 2\n"},
    )
    assert changes == [("params.yaml", "lr", 1, 2, "modified")]
    assert any("dvc.yaml at base is not valid YAML" in n for n in notes)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        # Aliases that fan out to millions of params: refused by count, quickly.
        (
            "a: &a {x1: 1, x2: 1, x3: 1, x4: 1, x5: 1, x6: 1, x7: 1, x8: 1, x9: 1, x10: 1}\n"
            "b: &b {y1: *a, y2: *a, y3: *a, y4: *a, y5: *a, y6: *a, y7: *a, y8: *a, y9: *a}\n"
            "c: &c {z1: *b, z2: *b, z3: *b, z4: *b, z5: *b, z6: *b, z7: *b, z8: *b, z9: *b}\n"
            "d: &d {w1: *c, w2: *c, w3: *c, w4: *c, w5: *c, w6: *c, w7: *c, w8: *c, w9: *c}\n"
            "e: {v1: *d, v2: *d, v3: *d, v4: *d, v5: *d, v6: *d, v7: *d, v8: *d, v9: *d}\n",
            f"more than {MAX_PARAMS:,} params",
        ),
        (b"lr: \xff\xfe\n", "is not UTF-8 text"),
        ("- just\n- a list\n", "holds list, not a mapping of params"),
        ("x" * 1_000_001, "is over 1,000,000 bytes"),
        ("[" * 250_000, "is not valid YAML: nests deeper than 100 levels"),
        ("- " * 250_000 + "x", "is not valid YAML: nests deeper than 100 levels"),
        ('{"lr": ' + "9" * 5000 + "}", "cannot be parsed"),
    ],
    ids=["aliases", "not-utf8", "list", "huge", "deep-flow", "deep-block", "huge-int"],
)
def test_hostile_params_files_become_notes(content: str | bytes, said: str) -> None:
    changes, notes = diff({"params.yaml": "lr: 1\n"}, {"params.yaml": content})
    assert changes == []
    assert len(notes) == 1
    assert said in notes[0]


def test_recursive_and_odd_values_are_plain_json() -> None:
    head = "lr: .nan\nwhen: 2024-01-02\nloop: &l [1, *l]\nbig: 1" + "0" * 40 + "\n"
    changes, notes = diff({"params.yaml": "lr: 1\n"}, {"params.yaml": head})
    assert notes == []
    values = {c[1]: c[3] for c in changes}
    assert values["lr"] == "nan"
    assert values["when"] == "2024-01-02"
    assert values["big"] == "1e+40"
    json.dumps([c[3] for c in changes], allow_nan=False)  # strict JSON, however deep the loop


def test_a_file_too_large_for_git_is_a_note() -> None:
    def read(path: str) -> bytes | None:
        if path == "params.yaml":
            raise CheckoutError("params.yaml at abc1234 is over the 1048576 bytes allowed")
        return None

    result = diff_params(read, read)
    assert result.changes == ()
    assert result.notes == (
        "params.yaml at base could not be read: params.yaml at abc1234 is over the "
        "1048576 bytes allowed",
        "params.yaml at head could not be read: params.yaml at abc1234 is over the "
        "1048576 bytes allowed",
    )


def test_python_params_files_are_said_not_to_be_read() -> None:
    dvc_yaml = "stages:\n  t:\n    cmd: x\n    params: [{params.py: [LR]}]\n"
    _, notes = diff({"dvc.yaml": dvc_yaml, "params.py": "LR = 1\n"}, {"dvc.yaml": dvc_yaml})
    assert any("Python params file" in n for n in notes)


def test_change_json_has_path_key_old_new() -> None:
    change = ParamChange("params.yaml", "train.lr", 0.01, 0.02, "modified")
    assert change.as_json() == {
        "path": "params.yaml",
        "key": "train.lr",
        "old": 0.01,
        "new": 0.02,
        "status": "modified",
    }
