"""The stand-in refuses what GitHub refuses, so a client that passes here conforms.

Each case is a raw request (httpx, no modelci client) that GitHub would answer
with an error: JWTs that are expired, issued in the future, live over ten
minutes or come with the wrong scheme; an unknown API version; an Accept
header without JSON; a body key the endpoint doesn't define.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from tests.github.conftest import APP_ID, INSTALLATION, REPO, GitHub

HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def app_jwt(github: GitHub, *, iat_offset: int = -60, lifetime: int = 600) -> str:
    now = int(time.time())
    claims = {"iat": now + iat_offset, "exp": now + iat_offset + lifetime, "iss": str(APP_ID)}
    return jwt.encode(claims, github.key.private_pem, algorithm="RS256")


def get_app(github: GitHub, authorization: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{github.url}/app", headers={**HEADERS, "Authorization": authorization, **headers}
    )


def test_a_valid_jwt_is_accepted(github: GitHub) -> None:
    assert get_app(github, f"Bearer {app_jwt(github)}").status_code == 200


@pytest.mark.parametrize(
    ("iat_offset", "lifetime", "message"),
    [
        (-700, 600, "'exp'"),  # expired 100 s ago
        (120, 300, "'iat'"),  # issued two minutes in the future
        (-60, 900, "too far in the future"),  # a 15-minute lifetime
    ],
    ids=["expired", "issued-in-the-future", "lifetime-over-10-minutes"],
)
def test_jwts_github_refuses_are_refused(
    github: GitHub, iat_offset: int, lifetime: int, message: str
) -> None:
    answer = get_app(github, f"Bearer {app_jwt(github, iat_offset=iat_offset, lifetime=lifetime)}")
    assert answer.status_code == 401
    assert message in answer.json()["message"]


def test_a_jwt_needs_the_bearer_scheme(github: GitHub) -> None:
    assert get_app(github, f"token {app_jwt(github)}").status_code == 401


def test_a_jwt_signed_by_another_app_is_refused(github: GitHub) -> None:
    forged = jwt.encode(
        {"iat": int(time.time()) - 60, "exp": int(time.time()) + 500, "iss": str(APP_ID + 1)},
        github.key.private_pem,
        algorithm="RS256",
    )
    assert get_app(github, f"Bearer {forged}").status_code == 401


def test_an_unknown_api_version_is_a_400(github: GitHub) -> None:
    answer = get_app(github, f"Bearer {app_jwt(github)}", **{"X-GitHub-Api-Version": "2020-01-01"})
    assert answer.status_code == 400
    assert "not supported" in answer.json()["message"]


def test_an_accept_header_without_json_is_a_415(github: GitHub) -> None:
    answer = get_app(github, f"Bearer {app_jwt(github)}", Accept="application/xml")
    assert answer.status_code == 415


def token(github: GitHub) -> str:
    answer = httpx.post(
        f"{github.url}/app/installations/{INSTALLATION}/access_tokens",
        headers={**HEADERS, "Authorization": f"Bearer {app_jwt(github)}"},
    )
    assert answer.status_code == 201, answer.text
    value = answer.json()["token"]
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"/repos/{REPO}/issues/1/comments", {"body": "hi", "colour": "red"}),
        (f"/repos/{REPO}/check-runs", {"name": "x", "head_sha": "a" * 40, "verdict": "ok"}),
        (
            f"/repos/{REPO}/check-runs",
            {"name": "x", "head_sha": "a" * 40, "output": {"title": "t", "summary": "s", "x": 1}},
        ),
        (f"/repos/{REPO}/statuses/{'a' * 40}", {"state": "success", "colour": "red"}),
    ],
    ids=["comment", "check-run", "check-run-output", "status"],
)
def test_a_body_key_the_endpoint_does_not_define_is_a_422(
    github: GitHub, path: str, body: dict[str, Any]
) -> None:
    github.state.add_pull(REPO, 1)
    answer = httpx.post(
        github.url + path, json=body, headers={**HEADERS, "Authorization": f"token {token(github)}"}
    )
    assert answer.status_code == 422, answer.text
    assert "is not a permitted key" in answer.json()["message"]
