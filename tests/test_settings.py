"""Settings read from MODELCI_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelci.settings import get_settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("octo/model", ["octo/model"]),
        ("octo/a, octo/b,", ["octo/a", "octo/b"]),
        ('["octo/a", "octo/b"]', ["octo/a", "octo/b"]),
        ("", []),
    ],
)
def test_poll_repositories_take_a_comma_list_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("MODELCI_POLL_REPOSITORIES", value)
    assert get_settings().poll_repositories == expected


def test_gpu_devices_are_globs_that_keep_only_what_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl"):
        (tmp_path / name).touch()
    monkeypatch.setenv("MODELCI_GPU_DEVICES", f"{tmp_path}/nvidia[0-9], {tmp_path}/missing")
    settings = get_settings()
    assert settings.gpu_devices == [f"{tmp_path}/nvidia[0-9]", f"{tmp_path}/missing"]
    assert settings.gpu_device_paths() == (tmp_path / "nvidia0", tmp_path / "nvidia1")


def test_gpu_devices_default_to_nvidias() -> None:
    assert get_settings().gpu_devices == ["/dev/nvidia*"]
