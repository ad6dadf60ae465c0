"""Request bodies and JSON answers shared by the serving routes (``http`` and
``oiphttp``): a body is read chunk by chunk and refused as soon as it passes its
cap, whatever its Content-Length says."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["MAX_BODY", "json_response", "read_body", "too_large"]

MAX_BODY = 64 << 20  # bytes of a predict request
RETRY_AFTER_S = "2"  # a worker restarts, or a champion loads, within seconds


def json_response(content: Any, status: int = 200) -> Response:
    # A 503 here is always temporary: say when to come back.
    headers = {"retry-after": RETRY_AFTER_S} if status == 503 else None
    return Response(
        orjson.dumps(content), status_code=status, media_type="application/json", headers=headers
    )


def too_large(content: Any) -> Response:
    """413, closing the connection: the only way to stop the client sending the rest
    (a kept-alive connection would have to read, and discard, all of it first)."""
    response = json_response(content, 413)
    response.headers["connection"] = "close"
    return response


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is over limit bytes (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
