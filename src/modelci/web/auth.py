"""Sign-in dependencies (a stand-in until the sign-in work lands).

STAND-IN: the sign-in helper owns this module and replaces it at merge; it keeps
the contract's signatures so the pages work unchanged. Here a browser has no
session: only a bearer token (``modelci tokens create``) signs a request in, and
the CSRF token is one HMAC per process. Tests override these dependencies.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from modelci.errors import ModelCIError
from modelci.web.identity import Viewer

__all__ = [
    "audit",
    "csrf_token",
    "current_viewer",
    "mount_auth",
    "require_csrf",
    "require_repo",
    "require_viewer",
]

log = logging.getLogger(__name__)
_SECRET = secrets.token_bytes(32)


async def current_viewer(request: Request) -> Viewer | None:
    verifier = getattr(request.app.state, "tokens", None)
    header = request.headers.get("authorization")
    if verifier is None or not header:
        return None
    try:
        name = await run_in_threadpool(verifier.verify, header)
    except ModelCIError:
        return None
    return Viewer(login=f"token:{name}", kind="token", repos={}, all_access=True)


async def require_viewer(request: Request) -> Viewer:
    viewer = await current_viewer(request)
    if viewer is None:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        raise HTTPException(303, "sign in first", headers={"location": f"/login?next={target}"})
    return viewer


def csrf_token(request: Request) -> str:
    return hmac.new(_SECRET, b"csrf", hashlib.sha256).hexdigest()


async def require_csrf(request: Request) -> None:
    form = await request.form()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(request)):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page")


def require_repo(viewer: Viewer, repo: str, *, write: bool = False) -> None:
    if not viewer.can_read(repo):
        raise HTTPException(404, "not found")
    if write and not viewer.can_write(repo):
        raise HTTPException(403, f"changing {repo} needs write access to it")


def audit(
    database: Any, *, viewer: Viewer, action: str, target: str, reason: str, details: dict[str, Any]
) -> None:
    log.info("audit: %s %s %s (%s) %s", viewer.login, action, target, reason, details)


def mount_auth(app: FastAPI, context: Any) -> None:
    """No sign-in pages in the stand-in."""
