"""Viewer access: GitHub's roles to read/write, names case-insensitive, tokens see all."""

from __future__ import annotations

import pytest

from modelci.web.identity import Viewer, access_from_permissions


def test_a_github_viewer_reads_and_writes_by_role() -> None:
    viewer = Viewer(
        "octocat", "github", {"Octo/Model": "read", "octo/other": "write", "octo/root": "admin"}
    )
    assert viewer.can_read("octo/model") and not viewer.can_write("octo/model")
    assert viewer.can_write("OCTO/OTHER") and viewer.can_write("octo/root")
    assert not viewer.can_read("octo/secret") and not viewer.can_write("octo/secret")
    assert viewer.visible(["octo/secret", "octo/root", "Octo/Model"]) == ["octo/root", "Octo/Model"]


def test_a_token_viewer_has_every_repository() -> None:
    viewer = Viewer("token:ci", "token", all_access=True)
    assert viewer.can_write("any/repo") and viewer.visible(["a/b", "c/d"]) == ["a/b", "c/d"]


@pytest.mark.parametrize(
    ("permissions", "access"),
    [
        ({"admin": True, "push": True, "pull": True}, "admin"),
        ({"admin": False, "maintain": True, "pull": True}, "write"),
        ({"push": True, "pull": True}, "write"),
        ({"triage": True, "pull": True}, "read"),
        ({"pull": True}, "read"),
        ({"pull": False}, None),
        ({"admin": "true"}, None),  # only JSON true counts
    ],
)
def test_github_permissions_become_access(permissions: dict[str, object], access: str) -> None:
    assert access_from_permissions(permissions) == access
