"""Taking in a GitHub delivery: store it, then queue it, the same for every source.

Webhooks (``api.py``), polling (``polling.py``) and the start-up repair of
deliveries stored but never queued (``server.py``) all go through here, so a
delivery is handled the same way whatever brought it: stored first (keyed by
its delivery id, so a repeat is recognised), queued once, marked dispatched.
"""

from __future__ import annotations

from typing import Any, Protocol

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
    """Store and queue a delivery; False when that delivery id was seen before."""
    if action is None and isinstance(payload.get("action"), str):
        action = payload["action"]
    with database.session() as session:
        created = store.record_delivery(
            session, delivery_id=delivery_id, event=event, action=action, payload=payload
        )
    if created:
        dispatch_delivery(database, queue, delivery_id=delivery_id)
    return created
