"""The serving routes (the only serving module that imports FastAPI).

``mount_serving(app, manager)`` adds them to an existing app (``modelci
serve``); ``create_serving_app(manager)`` makes a standalone app (bench, tests).
Bodies are read raw and parsed with orjson against the model's columns, not
through a pydantic model: that path runs for every prediction. A body is read
chunk by chunk and refused (413) as soon as it passes the cap, whatever its
Content-Length says; a big one is parsed in a thread. The prediction itself is
awaited on the model worker's pipe (no thread hop), so the event loop keeps
accepting requests meanwhile. ``/openapi.json`` describes each served model's
own predict body (``serving/openapi.py``), and ``/docs`` and ``/redoc`` load
their scripts from this server, not from a CDN.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from modelci.errors import BadRequest, ModelCIError
from modelci.service.api import predict_auth
from modelci.serving.feedback import (
    FEEDBACK_BODY,
    FEEDBACK_RESPONSES,
    parse_feedback,
    record_feedback,
)
from modelci.serving.form import render_form
from modelci.serving.httpbody import MAX_BODY, json_response, read_body, too_large
from modelci.serving.manager import ServingManager
from modelci.serving.oiphttp import mount_oip
from modelci.serving.openapi import ModelDoc, describe
from modelci.serving.service import ModelService

__all__ = ["create_serving_app", "mount_serving"]

_MAX_FEEDBACK_BODY = 1 << 20
_DOCS_ASSETS = "/docs-assets"


def _error(exc: ModelCIError) -> Response:
    if isinstance(exc, BadRequest):
        return json_response({"detail": exc.errors}, exc.http_status)
    return json_response({"detail": str(exc)}, exc.http_status)


async def _predict(service: ModelService, request: Request) -> Response:
    try:
        body = await read_body(request, MAX_BODY)
    except ClientDisconnect:
        return json_response(
            {"detail": "the client closed the connection before sending its body"}, 400
        )
    if body is None:
        return too_large({"detail": f"the body is over {MAX_BODY >> 20} MB; send fewer rows"})
    try:
        result = await service.predict_async(body)
    except ModelCIError as exc:
        return _error(exc)
    return Response(
        b'{"predictions":'
        + orjson.dumps(result.predictions)
        + b',"model":'
        + orjson.dumps(service.name)
        + b',"version":'
        + str(result.version).encode()
        + b',"request_id":"'
        + result.request_id.encode()
        + b'"}',
        media_type="application/json",
        headers={"x-model-version": str(result.version), "x-request-id": result.request_id},
    )


def mount_serving(app: FastAPI, manager: ServingManager, *, prefix: str = "") -> None:
    """Add the model routes to app: POST {prefix}/models/{name}/predict, POST
    {prefix}/predict, GET {prefix}/models, GET {prefix}/models/{name}, GET
    {prefix}/models/{name}/form and GET {prefix}/readyz; app's OpenAPI then
    describes each served model's predict body, and its /docs and /redoc work
    offline. The caller starts and closes the manager (``manager.start()`` /
    ``manager.close()``). All but readyz ask for a bearer token when the app's
    ``MODELCI_PREDICT_AUTH`` is token."""
    auth = [Depends(predict_auth)]
    # First: its /v2/models/{name}/... routes must not reach /models/{name:path}'s.
    mount_oip(app, manager, prefix=prefix, dependencies=auth)
    _describe_models(app, manager, prefix)
    _serve_docs_offline(app)

    @app.post(
        prefix + "/models/{name:path}/predict",
        tags=["serving"],
        summary="Predict with a model's champion",
        dependencies=auth,
    )
    async def predict_model(name: str, request: Request) -> Response:
        try:
            service = manager.get(name)
        except ModelCIError as exc:
            return _error(exc)
        return await _predict(service, request)

    @app.post(
        prefix + "/predict",
        tags=["serving"],
        summary="Predict with the only served model",
        dependencies=auth,
    )
    async def predict_only(request: Request) -> Response:
        try:
            service = manager.only()
        except ModelCIError as exc:
            return json_response({"detail": str(exc)}, 409 if len(manager.services) > 1 else 404)
        return await _predict(service, request)

    @app.post(
        prefix + "/models/{name:path}/feedback",
        tags=["serving"],
        summary="The true labels of a served request, for the live metric",
        dependencies=auth,
        openapi_extra={"requestBody": FEEDBACK_BODY},
        responses=FEEDBACK_RESPONSES,
    )
    async def feedback(name: str, request: Request) -> Response:
        try:
            manager.get(name)
            body = await read_body(request, _MAX_FEEDBACK_BODY)
            if body is None:
                return json_response(
                    {"detail": "the body is over 1 MB: send one request's labels"}, 413
                )
            parsed = parse_feedback(body)
            if manager.sessions is None:
                return json_response(
                    {"detail": "this server keeps no prediction log to attach it to"}, 409
                )
            matched = await run_in_threadpool(record_feedback, manager.sessions, name, parsed)
        except ClientDisconnect:
            return json_response(
                {"detail": "the client closed the connection before its body"}, 400
            )
        except ModelCIError as exc:
            return _error(exc)
        return json_response(
            {"request_id": parsed.request_id, "labels": len(parsed.labels), "matched": matched},
            200 if matched else 202,
        )

    # Without it, GET /models/NAME/predict would reach GET /models/{name:path} and
    # answer that no model is named "NAME/predict".
    @app.get(prefix + "/models/{name:path}/predict", include_in_schema=False)
    async def predict_by_get(name: str) -> Response:
        return Response(
            orjson.dumps({"detail": "use POST to predict, with the inputs as a JSON body"}),
            status_code=405,
            media_type="application/json",
            headers={"allow": "POST"},
        )

    @app.get(prefix + "/models", tags=["serving"], summary="Served models", dependencies=auth)
    async def list_models() -> Response:
        return json_response(
            {"models": [manager.status(name) for name in sorted(manager.services)]}
        )

    @app.get(
        prefix + "/models/{name:path}/form",
        tags=["serving"],
        response_class=HTMLResponse,
        summary="A form to try a prediction by hand",
        dependencies=auth,
    )
    async def model_form(name: str) -> Response:
        try:
            service = manager.get(name)
        except ModelCIError as exc:
            return _error(exc)
        loaded = service.current
        if loaded is None:
            return json_response({"detail": service.status()["state"]}, 503)
        example = loaded.spec.input_example[0] if loaded.spec.input_example else {}
        page = render_form(service.status(), example, f"{prefix}/models/{name}/predict")
        return HTMLResponse(page)

    @app.get(
        prefix + "/models/{name:path}",
        tags=["serving"],
        summary="A served model",
        dependencies=auth,
    )
    async def show_model(name: str) -> Response:
        try:
            return json_response(manager.status(name))
        except ModelCIError as exc:
            return _error(exc)

    @app.get(prefix + "/readyz", tags=["serving"], summary="Every served model is loaded")
    async def readyz() -> Response:
        readiness = manager.readiness()
        return json_response(readiness, 200 if readiness["ready"] else 503)


def _describe_models(app: FastAPI, manager: ServingManager, prefix: str) -> None:
    """Make app's /openapi.json carry each served model's predict body; built on
    every request (FastAPI's own part is cached), since the served models change."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        models = []
        for name, service in sorted(manager.services.items()):
            loaded = service.current
            if loaded is not None:
                spec = loaded.spec
                models.append(
                    ModelDoc(
                        name,
                        loaded.version.version,
                        spec.columns,
                        spec.input_example,
                        service.max_rows,
                    )
                )
        doc = describe(generate(), models, prefix=prefix, served=len(manager.services))
        if getattr(app.state, "predict_auth", "none") == "token":
            _require_bearer(doc, prefix)
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _require_bearer(doc: dict[str, Any], prefix: str) -> None:
    """Mark the serving routes (all but readyz) as needing a bearer token."""
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes.setdefault("HTTPBearer", {"type": "http", "scheme": "bearer"})
    for path, operations in doc.get("paths", {}).items():
        if path == prefix + "/predict" or path.startswith(
            (prefix + "/models", prefix + "/v2/models")
        ):
            for operation in operations.values():
                operation["security"] = [{"HTTPBearer": []}]


def _serve_docs_offline(app: FastAPI) -> None:
    """Serve /docs and /redoc with the Swagger UI and ReDoc scripts shipped by the
    fastapi-offline package, instead of FastAPI's pages that load them from a CDN
    (blank on a machine without internet access)."""
    replaced = {app.docs_url, app.redoc_url}
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if not (isinstance(route, Route) and route.path in replaced)
    ]
    static = files("fastapi_offline") / "static"
    app.mount(_DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"
    favicon = f"{_DOCS_ASSETS}/favicon.png"

    if app.docs_url is not None:

        @app.get(app.docs_url, include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{title} - Swagger UI",
                oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
                swagger_js_url=f"{root}{_DOCS_ASSETS}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{_DOCS_ASSETS}/swagger-ui.css",
                swagger_favicon_url=root + favicon,
                # null: no badge from validator.swagger.io
                swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
            )

    if app.redoc_url is not None:

        @app.get(app.redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{title} - ReDoc",
                redoc_js_url=f"{root}{_DOCS_ASSETS}/redoc.standalone.js",
                redoc_favicon_url=root + favicon,
                with_google_fonts=False,
            )


def create_serving_app(manager: ServingManager, *, start: bool = True) -> FastAPI:
    """A standalone app serving the manager's models; starts and closes it with the app."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if start:
            await run_in_threadpool(manager.start, wait=True)
        try:
            yield
        finally:
            if start:
                await run_in_threadpool(manager.close)

    app = FastAPI(title="modelci serving", lifespan=lifespan)

    @app.get("/healthz", tags=["serving"], summary="The server is up")
    async def healthz() -> Response:
        return json_response({"ok": True})

    mount_serving(app, manager)
    return app
