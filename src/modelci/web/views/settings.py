"""``/ui/settings``: what ``modelci doctor`` checks, each with its fix.

Shown to token sessions and to repository admins: the checks name the server's
files and settings. The checks run (offline: GitHub is not called from a page)
at most every ``CACHE_S`` seconds; some start tools.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from modelci.web.app import WebContext
from modelci.web.render import UI, page
from modelci.web.views.common import SignedIn

__all__ = ["CACHE_S", "router"]

CACHE_S = 30.0


def _checks(web: WebContext) -> tuple[list[Any], float]:
    from modelci.doctor import run_checks

    assert web.settings is not None
    cached = web.doctor_cache.get("checks")
    now = time.monotonic()
    if cached is None or now - cached[1] > CACHE_S:
        cached = (run_checks(web.settings, online=False), now)
        web.doctor_cache["checks"] = cached
    return cached[0], time.time() - (now - cached[1])


def router(web: WebContext) -> APIRouter:
    routes = APIRouter(prefix=f"{UI}/settings", include_in_schema=False)

    @routes.get("", response_class=HTMLResponse)
    def settings(request: Request, viewer: SignedIn) -> HTMLResponse:
        if not (viewer.all_access or "admin" in viewer.repos.values()):
            raise HTTPException(403, "the server's settings are shown to its administrators")
        if web.settings is None:
            raise HTTPException(503, "this server was started without its settings")
        checks, _ = _checks(web)
        failing = sum(1 for c in checks if not c.ok)
        return page(request, "settings.html", viewer=viewer, checks=checks, failing=failing)

    return routes
