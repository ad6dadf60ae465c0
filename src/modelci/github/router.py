"""Dispatch typed webhook events to handlers registered by (event, action).

Like gidgethub's ``routing.Router``, but synchronous and keyed by event
class, so a handler's parameter type is checked by mypy::

    router: Router[str] = Router()

    @router.register(PullRequestEvent, "labeled", "synchronize")
    def on_pr(event: PullRequestEvent) -> str: ...

    results = router.dispatch(classify(delivery))

A handler registered without actions receives every action of its event.
Handlers run in registration order; an exception propagates to the caller
(later handlers do not run), so the caller decides how to report it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from modelci.github.events import GitHubEvent, Ignored

__all__ = ["Router"]

E = TypeVar("E", bound=GitHubEvent)
R = TypeVar("R")

_ANY_ACTION = None


class Router(Generic[R]):
    """Handlers by (event class, action); ``dispatch`` returns their results in order."""

    def __init__(self, *others: Router[R]) -> None:
        self._routes: list[tuple[type[GitHubEvent], str | None, Callable[[Any], R]]] = []
        for other in others:
            self._routes.extend(other._routes)

    def add(self, kind: type[E], handler: Callable[[E], R], *actions: str) -> None:
        """Call ``handler`` for events of ``kind`` with one of ``actions`` (all if none)."""
        for action in actions or (_ANY_ACTION,):
            self._routes.append((kind, action, handler))

    def register(
        self, kind: type[E], *actions: str
    ) -> Callable[[Callable[[E], R]], Callable[[E], R]]:
        """Decorator form of :meth:`add`."""

        def decorator(handler: Callable[[E], R]) -> Callable[[E], R]:
            self.add(kind, handler, *actions)
            return handler

        return decorator

    def handlers_for(self, event: GitHubEvent | Ignored) -> list[Callable[[Any], R]]:
        """The handlers ``dispatch`` would call, each once, in registration order."""
        if isinstance(event, Ignored):
            return []
        found: list[Callable[[Any], R]] = []
        for kind, action, handler in self._routes:
            if (
                type(event) is kind
                and (action is _ANY_ACTION or action == event.action)
                and handler not in found
            ):
                found.append(handler)
        return found

    def dispatch(self, event: GitHubEvent | Ignored) -> list[R]:
        """Call every matching handler with ``event``; ``Ignored`` matches none."""
        return [handler(event) for handler in self.handlers_for(event)]
