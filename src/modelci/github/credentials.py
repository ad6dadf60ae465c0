"""Hand an installation token to ``git fetch`` without exposing it.

A token in a URL (``https://x-access-token:TOKEN@github.com/...``) or in a
``-c`` option lands on the command line, where every user of the machine can
read it (``ps``, ``/proc/*/cmdline``), and in git's error messages. Instead
:func:`git_credentials` returns *environment variables* that make git send::

    Authorization: Basic base64("x-access-token:TOKEN")

through ``GIT_CONFIG_COUNT`` / ``GIT_CONFIG_KEY_n`` / ``GIT_CONFIG_VALUE_n``
(git >= 2.31), which act like ``git -c`` but are visible only to the same user
(``/proc/<pid>/environ`` is private). The header is scoped to the clone URL's
origin (``http.https://github.com/.extraHeader``), so a redirect or a
submodule on another host never receives it. Credential helpers are switched
off so the token is never stored, and git never prompts.

Usage::

    env = {**base_env, **git_credentials(client.installation_token(iid), clone_url)}
    subprocess.run(["git", "fetch", clone_url, ref], env=env, ...)

Never pass this environment to repository code (the sandbox clears its
environment), and never log it.
"""

from __future__ import annotations

import base64
import ipaddress
import urllib.parse
from collections.abc import Mapping

__all__ = ["git_credentials", "is_loopback"]


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(clone_url: str) -> str:
    parts = urllib.parse.urlsplit(clone_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{clone_url!r} is not an http(s) clone URL; tokens only work over HTTPS")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        # Plain http would show the token to every hop; only this machine is trusted.
        raise ValueError(f"{clone_url!r} is plain http to another machine; tokens go over HTTPS")
    if parts.username or parts.password:
        raise ValueError("the clone URL already carries credentials; pass it without them")
    return f"{parts.scheme}://{parts.netloc}/"


def git_credentials(
    token: str, clone_url: str, *, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment variables that authenticate git's HTTPS requests to ``clone_url``'s host.

    ``env`` is the environment the variables will be added to: configuration
    entries it already passes through ``GIT_CONFIG_COUNT`` are kept (the new
    ones are numbered after them). Returns only the variables to set.
    """
    if not token:
        raise ValueError("empty token")
    start = int((env or {}).get("GIT_CONFIG_COUNT", "0") or "0")
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode("ascii")
    entries = [
        (f"http.{_origin(clone_url)}.extraHeader", f"Authorization: Basic {basic}"),
        # An empty helper value resets the list: no helper stores or supplies credentials.
        ("credential.helper", ""),
    ]
    result = {"GIT_CONFIG_COUNT": str(start + len(entries)), "GIT_TERMINAL_PROMPT": "0"}
    for offset, (key, value) in enumerate(entries):
        result[f"GIT_CONFIG_KEY_{start + offset}"] = key
        result[f"GIT_CONFIG_VALUE_{start + offset}"] = value
    return result
