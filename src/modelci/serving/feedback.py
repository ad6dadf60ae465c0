"""Feedback: the true labels of served predictions, for the live metric.

Predict answers a ``request_id``; when the truth is known (a customer churned, a
claim was fraud) the client posts it to ``POST /models/{name}/feedback``::

    {"request_id": "…", "label": 1}            # a one-row request
    {"request_id": "…", "labels": [1, 0, 1]}   # one label per row, in order

The prediction log is written in batches off the request path (every 0.5 s),
so feedback sent right after predict waits up to two seconds for its
prediction; then the number of labels must equal its rows. Feedback whose
prediction never reaches the log (dropped while the log was full) is kept as
sent (``matched: false``, 202). The monitoring job joins labels with
predictions per window (``monitor.live``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import orjson

from modelci.errors import BadRequest

__all__ = ["FEEDBACK_BODY", "FEEDBACK_RESPONSES", "Feedback", "parse_feedback", "record_feedback"]

MAX_LABELS = 10_000
LOG_WAIT_S = 2.0  # how long feedback waits for its prediction to reach the log
_LABEL = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}
# The body as OpenAPI describes it (the route parses it itself, as predict does):
# a request id and exactly one of label / labels.
FEEDBACK_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    "label": _LABEL,
                    "labels": {
                        "type": "array",
                        "items": _LABEL,
                        "minItems": 1,
                        "maxItems": MAX_LABELS,
                    },
                },
                "oneOf": [
                    {"required": ["request_id", "label"]},
                    {"required": ["request_id", "labels"]},
                ],
            }
        }
    },
}
FEEDBACK_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Stored, joined to its logged prediction"},
    202: {"description": "Stored; its prediction is not in the log (dropped or expired)"},
    404: {"description": "No served model has that name"},
    409: {"description": "This server keeps no prediction log"},
    413: {"description": "The body is over 1 MB"},
    422: {"description": "The body is wrong: each problem with its field (loc)"},
}
_REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
SessionFactory = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class Feedback:
    request_id: str
    labels: list[Any]


def _problem(loc: list[str | int], msg: str) -> BadRequest:
    return BadRequest(msg, errors=[{"loc": loc, "msg": msg, "type": "value_error"}])


def parse_feedback(body: bytes) -> Feedback:
    """The feedback in a request body; BadRequest naming the field that is wrong."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _problem(["body"], f"the body is not JSON ({exc}); send an object") from None
    if not isinstance(payload, dict):
        raise _problem(["body"], 'send an object: {"request_id": "...", "label": value}')
    unknown = sorted(set(payload) - {"request_id", "label", "labels"})
    if unknown:
        raise _problem(
            ["body", unknown[0]],
            f"unknown field {unknown[0]!r}: send request_id and label (one row) or labels",
        )
    request_id = payload.get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
        raise _problem(
            ["body", "request_id"],
            "request_id must be the 32 hex characters predict answered as request_id",
        )
    if ("label" in payload) == ("labels" in payload):
        raise _problem(
            ["body", "labels"], "send either label (a one-row request) or labels (one per row)"
        )
    labels = [payload["label"]] if "label" in payload else payload["labels"]
    if not isinstance(labels, list) or not labels:
        raise _problem(["body", "labels"], "labels must be a non-empty list, one label per row")
    if len(labels) > MAX_LABELS:
        raise _problem(["body", "labels"], f"at most {MAX_LABELS} labels per request")
    for index, label in enumerate(labels):
        if isinstance(label, (dict, list)) or label is None:
            raise _problem(["body", "labels", index], "a label is a number, a string or a boolean")
    return Feedback(request_id, labels)


def record_feedback(
    sessions: SessionFactory,
    model_name: str,
    feedback: Feedback,
    *,
    wait_s: float = LOG_WAIT_S,
) -> bool:
    """Store it; True when its prediction is in the log (and the label count fits).

    A prediction is logged within the log's flush interval (0.5 s), so feedback sent
    right after predict waits up to ``wait_s`` for it: then its label count is checked
    before anything is stored. One that never shows up (dropped when the log was full,
    or older than the retention) is kept as sent."""
    from modelci.store import monitoring

    deadline = time.monotonic() + wait_s
    while True:
        with sessions() as session:
            logged = monitoring.prediction_by_request(
                session, model_name=model_name, request_id=feedback.request_id
            )
            if logged is not None or time.monotonic() >= deadline:
                if logged is not None:
                    _check_rows(feedback, logged.outputs)
                monitoring.save_feedback(
                    session,
                    model_name=model_name,
                    request_id=feedback.request_id,
                    labels=feedback.labels,
                )
                return logged is not None
        time.sleep(0.1)


def _check_rows(feedback: Feedback, outputs: Any) -> None:
    rows = len(outputs) if isinstance(outputs, list) else 1
    if rows != len(feedback.labels):
        raise _problem(
            ["body", "labels"],
            f"request {feedback.request_id} predicted {rows} rows and this feedback "
            f"has {len(feedback.labels)} labels: send one label per row, in order",
        )
