"""The dashboard on the API's app: ``mount_web(app, context)``.

Every page lives under ``/ui/`` (``/`` redirects there): serving owns
``/models/{name}`` and its form and drift pages, so the dashboard's model pages
cannot share those paths. Assets (CSS, the live-log script, the vendored uPlot)
are served from the package under ``/ui/static``: nothing is fetched from
elsewhere at run time.

``WebContext`` holds what the pages read and change. ``modelci serve`` builds
the serving manager and the deliverer after the app, so both are set on the
context later (``context.serving = manager``); a page without them says the
feature is off instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from modelci.web.render import STATIC_PREFIX, UI, page

if TYPE_CHECKING:
    from modelci.deliver.delivery import Deliverer
    from modelci.service.jobs import ProcrastinateQueue
    from modelci.serving.manager import ServingManager
    from modelci.settings import Settings
    from modelci.store.db import Database

__all__ = ["WebContext", "mount_web"]


@dataclass
class WebContext:
    database: Database
    queue: ProcrastinateQueue | None = None
    settings: Settings | None = None  # the settings page's checks
    deliverer: Deliverer | None = None  # promote and roll back
    serving: ServingManager | None = None  # serving status and the prediction form
    public_url: str | None = None
    github_url: str = "https://github.com"  # links to pull requests and commits
    # The settings page's checks, kept briefly: some open files and run tools.
    doctor_cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, context: Any) -> WebContext:
        """A WebContext as is, or one built from the API's (``service.api.ApiContext``)."""
        if isinstance(context, WebContext):
            return context
        return cls(
            database=context.database,
            queue=getattr(context, "queue", None),
            public_url=getattr(context, "public_url", None),
        )


def mount_web(app: FastAPI, context: Any) -> WebContext:
    """Add the dashboard to ``app``; answers the context, to set its later parts on."""
    from modelci.web.views import drift, evaluations, jobs, models, overview, settings

    web = WebContext.of(context)
    mounted: WebContext | None = getattr(app.state, "web", None)
    if mounted is not None:
        # Mounted already (create_app does): the routes stay, the context gains what
        # this one knows more.
        for name in ("queue", "settings", "deliverer", "serving", "public_url"):
            if getattr(web, name) is not None:
                setattr(mounted, name, getattr(web, name))
        mounted.database, mounted.github_url = web.database, web.github_url
        return mounted
    app.state.web = web
    app.mount(
        STATIC_PREFIX, StaticFiles(directory=str(files("modelci.web") / "static")), name="ui-static"
    )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{UI}/", status_code=307)

    # drift before models: the model page's {name:path} would take NAME/drift.
    for module in (overview, jobs, evaluations, drift, models, settings):
        app.include_router(module.router(web))
    _html_errors(app)
    return web


def _html_errors(app: FastAPI) -> None:
    """A dashboard error is a page saying what went wrong; the API keeps its JSON."""
    from fastapi.exception_handlers import http_exception_handler

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if not request.url.path.startswith(f"{UI}/") or exc.status_code in (301, 302, 303, 307):
            return await http_exception_handler(request, exc)
        return page(
            request,
            "error.html",
            viewer=None,
            status_code=exc.status_code,
            status=exc.status_code,
            message=str(exc.detail),
        )
