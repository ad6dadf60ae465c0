"""The serving routes (the only serving module that imports FastAPI).

``mount_serving(app, manager)`` adds them to an existing app (``modelci
serve``); ``create_serving_app(manager)`` makes a standalone app (bench, tests).
Bodies are read raw and parsed with orjson against the model's columns, not
through a pydantic model: that path runs for every prediction. The prediction
itself is awaited on the model worker's pipe (no thread hop), so the event loop
keeps accepting requests meanwhile.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from modelci.errors import BadRequest, ModelCIError
from modelci.service.api import predict_auth
from modelci.serving.form import render_form
from modelci.serving.manager import ServingManager
from modelci.serving.service import ModelService

__all__ = ["create_serving_app", "mount_serving"]

_MAX_BODY = 64 << 20  # bytes of a predict request

_EXAMPLES = {
    "records": {
        "summary": "Rows as records",
        "value": {"records": [{"feature_a": 1.5, "colour": "red"}]},
    },
    "columns": {
        "summary": "Column lists",
        "value": {"columns": {"feature_a": [1.5, 2.0], "colour": ["red", "blue"]}},
    },
    "dataframe_split": {
        "summary": "MLflow's dataframe_split",
        "value": {"dataframe_split": {"columns": ["feature_a", "colour"], "data": [[1.5, "red"]]}},
    },
    "one_record": {"summary": "A single record", "value": {"feature_a": 1.5, "colour": "red"}},
}
_PREDICT_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "records, columns, dataframe_records, dataframe_split, or "
                    "one record; GET /models/{name} lists the columns, their types and the "
                    "allowed values of categorical ones",
                },
                "examples": _EXAMPLES,
            }
        },
    },
    "responses": {
        "200": {
            "description": "One prediction per row",
            "content": {
                "application/json": {
                    "example": {"predictions": [1], "model": "churn", "version": 3}
                }
            },
        },
        "422": {
            "description": "An input does not match the model's columns",
            "content": {
                "application/json": {
                    "example": {
                        "detail": [
                            {
                                "loc": ["body", "records", 0, "colour"],
                                "msg": "'pink' is not an allowed value; allowed: 'blue', 'red'",
                                "type": "enum",
                            }
                        ]
                    }
                }
            },
        },
        "503": {"description": "No version of the model is loaded, or its worker failed"},
    },
}


_RETRY_AFTER_S = "2"  # a worker restarts, or a champion loads, within seconds


def _json(content: Any, status: int = 200) -> Response:
    # A 503 here is always temporary: say when to come back.
    headers = {"retry-after": _RETRY_AFTER_S} if status == 503 else None
    return Response(
        orjson.dumps(content), status_code=status, media_type="application/json", headers=headers
    )


def _error(exc: ModelCIError) -> Response:
    if isinstance(exc, BadRequest):
        return _json({"detail": exc.errors}, exc.http_status)
    return _json({"detail": str(exc)}, exc.http_status)


async def _predict(service: ModelService, request: Request) -> Response:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_BODY:
        return _json({"detail": f"the body is over {_MAX_BODY >> 20} MB; send fewer rows"}, 413)
    body = await request.body()
    if len(body) > _MAX_BODY:
        return _json({"detail": f"the body is over {_MAX_BODY >> 20} MB; send fewer rows"}, 413)
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
        + b"}",
        media_type="application/json",
        headers={"x-model-version": str(result.version)},
    )


def mount_serving(app: FastAPI, manager: ServingManager, *, prefix: str = "") -> None:
    """Add the model routes to app: POST {prefix}/models/{name}/predict, POST
    {prefix}/predict, GET {prefix}/models, GET {prefix}/models/{name}, GET
    {prefix}/models/{name}/form and GET {prefix}/readyz. The caller starts and
    closes the manager (``manager.start()`` / ``manager.close()``). All but
    readyz ask for a bearer token when the app's ``MODELCI_PREDICT_AUTH`` is token."""
    auth = [Depends(predict_auth)]

    @app.post(
        prefix + "/models/{name:path}/predict",
        tags=["serving"],
        openapi_extra=_PREDICT_DOC,
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
        openapi_extra=_PREDICT_DOC,
        summary="Predict with the only served model",
        dependencies=auth,
    )
    async def predict_only(request: Request) -> Response:
        try:
            service = manager.only()
        except ModelCIError as exc:
            return _json({"detail": str(exc)}, 409 if len(manager.services) > 1 else 404)
        return await _predict(service, request)

    @app.get(prefix + "/models", tags=["serving"], summary="Served models", dependencies=auth)
    async def list_models() -> Response:
        return _json({"models": [manager.status(name) for name in sorted(manager.services)]})

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
            return _json({"detail": service.status()["state"]}, 503)
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
            return _json(manager.status(name))
        except ModelCIError as exc:
            return _error(exc)

    @app.get(prefix + "/readyz", tags=["serving"], summary="Every served model is loaded")
    async def readyz() -> Response:
        readiness = manager.readiness()
        return _json(readiness, 200 if readiness["ready"] else 503)


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
        return _json({"ok": True})

    mount_serving(app, manager)
    return app
