"""The Open Inference Protocol's REST routes (``/v2/...``), beside modelci's own.

Clients and load balancers written for KServe, MLServer or Triton work with
modelci unchanged: health (``/v2/health/live``, ``/v2/health/ready``), server
and model metadata (``/v2``, ``/v2/models/{name}``), model readiness and
``POST /v2/models/{name}/infer``, each also under
``/v2/models/{name}/versions/{version}/...`` (only the champion's version is
served). The bodies are ``serving/oip.py``'s; the prediction path, its
validation and the prediction log are the same as ``/models/{name}/predict``'s.
Errors are ``{"error": message}`` as the protocol asks, with ``detail`` (the
FastAPI-style list) beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from modelci.errors import BadRequest, ModelCIError, ModelNotFound
from modelci.serving.httpbody import MAX_BODY, json_response, read_body, too_large
from modelci.serving.manager import ServingManager
from modelci.serving.oip import InferCall, infer_response, model_metadata
from modelci.serving.oipdoc import HEALTH_RESPONSES, INFER_BODY, INFER_RESPONSES, MODEL_RESPONSES
from modelci.serving.service import ModelService

__all__ = ["mount_oip"]


def _error(exc: ModelCIError) -> Response:
    content: dict[str, Any] = {"error": str(exc)}
    if isinstance(exc, BadRequest):
        content["detail"] = exc.errors
    return json_response(content, exc.http_status)


def _server_version() -> str:
    try:
        return package_version("modelci")
    except PackageNotFoundError:
        return "unknown"


def _service(manager: ServingManager, name: str, version: str | None) -> ModelService:
    """The served model; ModelNotFound for another version than its champion's."""
    service = manager.get(name)
    if version is not None:
        loaded = service.current
        if loaded is None or str(loaded.version.version) != version:
            served = "none" if loaded is None else loaded.version.version
            raise ModelNotFound(
                f"model {name!r} version {version!r} is not served (the champion's, "
                f"{served}, is); leave /versions/... out to use the champion"
            )
    return service


async def _infer(
    manager: ServingManager, name: str, version: str | None, request: Request
) -> Response:
    try:
        service = _service(manager, name, version)
        body = await read_body(request, MAX_BODY)
        if body is None:
            return too_large({"error": f"the body is over {MAX_BODY >> 20} MB; send fewer rows"})
        declared = request.headers.get("inference-header-content-length")
        if declared is not None and not declared.isdigit():
            return json_response(
                {"error": f"Inference-Header-Content-Length {declared!r} is not a byte count"},
                400,
            )
        call = InferCall(body, int(declared) if declared is not None else None)
        result = await service.predict_async(body, call.batch)
    except ClientDisconnect:
        return json_response({"error": "the client closed the connection before its body"}, 400)
    except ModelCIError as exc:
        return _error(exc)
    return Response(
        infer_response(call, name, result.version, result.predictions, result.request_id),
        media_type="application/json",
        headers={"x-model-version": str(result.version), "x-request-id": result.request_id},
    )


def _metadata(manager: ServingManager, name: str, version: str | None) -> Response:
    try:
        service = _service(manager, name, version)
    except ModelCIError as exc:
        return _error(exc)
    loaded = service.current
    if loaded is None:
        return json_response({"error": service.why_not_ready()}, 503)
    return json_response(
        model_metadata(name, loaded.version.version, loaded.spec, loaded.example_output)
    )


def _model_ready(manager: ServingManager, name: str, version: str | None) -> Response:
    try:
        service = _service(manager, name, version)
    except ModelCIError as exc:
        return _error(exc)
    ready = service.ready()
    return json_response({"name": name, "ready": ready}, 200 if ready else 503)


def mount_oip(
    app: FastAPI, manager: ServingManager, *, prefix: str = "", dependencies: Sequence[Depends]
) -> None:
    """Add the ``/v2`` routes; ``dependencies`` (the predict token) guard all but health."""
    v2 = prefix + "/v2"
    tags: list[str | Any] = ["open inference protocol"]
    deps = list(dependencies)

    @app.get(v2 + "/health/live", tags=tags, summary="The server answers")
    async def live() -> Response:
        return json_response({"live": True})

    @app.get(
        v2 + "/health/ready",
        tags=tags,
        summary="Every served model is ready",
        responses=HEALTH_RESPONSES,
    )
    async def ready() -> Response:
        is_ready = bool(manager.readiness()["ready"])
        return json_response({"ready": is_ready}, 200 if is_ready else 503)

    @app.get(v2, tags=tags, summary="Server metadata")
    async def server_metadata() -> Response:
        return json_response(
            {"name": "modelci", "version": _server_version(), "extensions": ["binary_tensor_data"]}
        )

    # The versioned paths first: {name:path} would take "NAME/versions/1" for a name.
    @app.post(
        v2 + "/models/{name:path}/versions/{version}/infer",
        tags=tags,
        summary="Infer with a given version (the champion's)",
        dependencies=deps,
        openapi_extra={"requestBody": INFER_BODY},
        responses=INFER_RESPONSES,
    )
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await _infer(manager, name, version, request)

    @app.post(
        v2 + "/models/{name:path}/infer",
        tags=tags,
        summary="Infer with a model's champion",
        dependencies=deps,
        openapi_extra={"requestBody": INFER_BODY},
        responses=INFER_RESPONSES,
    )
    async def infer(name: str, request: Request) -> Response:
        return await _infer(manager, name, None, request)

    @app.get(
        v2 + "/models/{name:path}/versions/{version}/ready",
        tags=tags,
        summary="A version is ready",
        dependencies=deps,
        responses=MODEL_RESPONSES,
    )
    async def version_ready(name: str, version: str) -> Response:
        return _model_ready(manager, name, version)

    @app.get(
        v2 + "/models/{name:path}/ready",
        tags=tags,
        summary="A model is ready",
        dependencies=deps,
        responses=MODEL_RESPONSES,
    )
    async def model_ready(name: str) -> Response:
        return _model_ready(manager, name, None)

    @app.get(
        v2 + "/models/{name:path}/versions/{version}",
        tags=tags,
        summary="A version's metadata",
        dependencies=deps,
        responses=MODEL_RESPONSES,
    )
    async def version_metadata(name: str, version: str) -> Response:
        return _metadata(manager, name, version)

    @app.get(
        v2 + "/models/{name:path}",
        tags=tags,
        summary="Model metadata",
        dependencies=deps,
        responses=MODEL_RESPONSES,
    )
    async def metadata(name: str) -> Response:
        return _metadata(manager, name, None)
