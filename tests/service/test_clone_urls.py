"""Which clone URLs a job fetches: https only, plain http to this machine only when allowed."""

from __future__ import annotations

import pytest

from modelci.errors import CheckoutError
from modelci.service.evaluations import clone_credentials


class TokenOnly:
    """The one call clone_credentials makes of a GitHubClient."""

    def __init__(self) -> None:
        self.asked = 0

    def installation_token(self) -> str:
        self.asked += 1
        return "ghs_token"


@pytest.mark.parametrize(
    "url",
    [
        "/srv/git/model",  # a path on the server
        "file:///etc",
        "git@github.com:octo/model.git",
        "ssh://git@github.com/octo/model.git",
        "http://github.com/octo/model.git",  # plain http elsewhere: never, setting or not
        "http://10.0.0.5/octo/model.git",
    ],
)
@pytest.mark.parametrize("allow", [False, True])
def test_anything_but_https_is_refused_before_a_token_is_made(url: str, allow: bool) -> None:
    gh = TokenOnly()
    with pytest.raises(CheckoutError, match="https only"):
        clone_credentials(gh, url, allow_loopback_http=allow)  # type: ignore[arg-type]
    assert gh.asked == 0


def test_loopback_http_needs_the_setting() -> None:
    url = "http://127.0.0.1:8123/octo/model.git"
    with pytest.raises(CheckoutError, match="MODELCI_ALLOW_LOOPBACK_HTTP"):
        clone_credentials(TokenOnly(), url)  # type: ignore[arg-type]
    env = clone_credentials(TokenOnly(), url, allow_loopback_http=True)  # type: ignore[arg-type]
    assert env["GIT_CONFIG_KEY_0"] == "http.http://127.0.0.1:8123/.extraHeader"


def test_https_gets_the_token_as_a_header() -> None:
    env = clone_credentials(TokenOnly(), "https://github.com/octo/model.git")  # type: ignore[arg-type]
    assert env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
