"""Templates: one Jinja2 environment (autoescape on) for every page.

Filters turn the store's ISO times, shas and seconds into what a page shows;
``page`` answers an HTMLResponse with the common context (who is signed in, the
CSRF token for forms). Only route modules use it.
"""

from __future__ import annotations

import datetime as dt
from importlib.resources import files
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from modelci.web.auth import csrf_token
from modelci.web.identity import Viewer

__all__ = ["STATIC_PREFIX", "UI", "environment", "page"]

UI = "/ui"
STATIC_PREFIX = "/ui/static"


def _when(value: str | None) -> str:
    if not value:
        return "-"
    moment = dt.datetime.fromisoformat(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: str | None) -> str:
    if not value:
        return "-"
    seconds = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(value)).total_seconds()
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{max(0, int(seconds))} s ago"


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.4g}"


def _signed(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:+.4g}"


def _short(sha: str | None) -> str:
    return (sha or "")[:7]


def _build() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(files("modelci.web") / "templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,  # a misspelt name fails the test, not the reader
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when, ago=_ago, seconds=_seconds, number=_number, signed=_signed, short=_short
    )
    env.globals.update(ui=UI, static=STATIC_PREFIX)
    return env


environment = _build()


def page(
    request: Request,
    template: str,
    *,
    viewer: Viewer | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    body = environment.get_template(template).render(
        viewer=viewer,
        csrf=csrf_token(request) if viewer is not None else "",
        path=request.url.path,
        **context,
    )
    return HTMLResponse(body, status_code=status_code)
