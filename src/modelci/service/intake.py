"""Taking in a GitHub delivery: store it, then queue it, the same for every source.

Webhooks (``api.py``), polling (``polling.py``) and the start-up repair of
deliveries stored but never queued (``server.py``) all go through here, so a
delivery is handled the same way whatever brought it: stored first (keyed by
its delivery id, so a repeat is recognised), queued once, marked dispatched.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

from modelci.github import BadDelivery
from modelci.store import records as store
from modelci.store.db import Database

__all__ = ["DeliveryQueue", "dispatch_delivery", "submit_delivery"]


class DeliveryQueue(Protocol):
    def defer_delivery(self, delivery_id: str) -> int | None: ...


def dispatch_delivery(database: Database, queue: DeliveryQueue, *, delivery_id: str) -> None:
    """Queue a stored delivery and record that it was queued."""
    job_id = queue.defer_delivery(delivery_id)
    with database.session() as session:
        store.mark_delivery_dispatched(session, delivery_id=delivery_id, job_id=job_id)


def submit_delivery(
    database: Database,
    queue: DeliveryQueue,
    *,
    delivery_id: str,
    event: str,
    payload: dict[str, Any],
    action: str | None = None,
) -> bool:
    """Store and queue a delivery; False when that delivery id was seen before.

    ``BadDelivery`` when the store could not keep it as it is (see ``_check_storable``).
    """
    if action is None and isinstance(payload.get("action"), str):
        action = payload["action"]
    _check_storable(delivery_id=delivery_id, event=event, action=action, payload=payload)
    with database.session() as session:
        created = store.record_delivery(
            session, delivery_id=delivery_id, event=event, action=action, payload=payload
        )
    if created:
        dispatch_delivery(database, queue, delivery_id=delivery_id)
    return created


# NUL as orjson escapes it, after an even number of backslashes: after an odd
# number it is the six characters of text, which jsonb keeps.
_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")
_ONLY_GITHUB = "only GitHub's own deliveries are expected on this URL"


def _check_storable(
    *, delivery_id: str, event: str, action: str | None, payload: dict[str, Any]
) -> None:
    """Refuse what the database would reject, naming it, instead of failing the insert."""
    for what, value in (
        ("the X-GitHub-Delivery header", delivery_id),
        ("the X-GitHub-Event header", event),
        ("the payload's action", action),
    ):
        if value is not None and len(value) > store.DELIVERY_TEXT_MAX:
            raise BadDelivery(
                f"{what} is {len(value):,} characters long; at most "
                f"{store.DELIVERY_TEXT_MAX} are accepted",
                hint=_ONLY_GITHUB,
            )
    try:
        encoded = orjson.dumps(payload)
    except orjson.JSONEncodeError as exc:  # e.g. a lone surrogate (\ud800) in a string
        raise BadDelivery(f"the payload cannot be stored: {exc}", hint=_ONLY_GITHUB) from None
    if _NUL.search(encoded):  # PostgreSQL's jsonb refuses NUL characters
        raise BadDelivery(
            "the payload contains a NUL character (\\u0000), which cannot be stored",
            hint=_ONLY_GITHUB,
        )
