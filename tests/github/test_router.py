"""Dispatching events to handlers by (event, action)."""

from __future__ import annotations

import pytest

from modelci.github import Ignored, PingEvent, PullRequestEvent, PushEvent, Router, classify
from modelci.github.sansio import parse_delivery
from tests.github.helpers import TEST_SECRET, signed_delivery


def event_from(name: str) -> PullRequestEvent | PushEvent | PingEvent:
    headers, body = signed_delivery(name)
    event = classify(parse_delivery(headers, body, secret=TEST_SECRET))
    assert isinstance(event, PullRequestEvent | PushEvent | PingEvent)
    return event


def test_handlers_run_by_event_and_action_in_order() -> None:
    router: Router[str] = Router()

    @router.register(PullRequestEvent, "labeled", "unlabeled")
    def on_label(event: PullRequestEvent) -> str:
        return f"label:{event.label}"

    @router.register(PullRequestEvent)
    def on_any_pr(event: PullRequestEvent) -> str:
        return f"pr:{event.action}"

    @router.register(PushEvent)
    def on_push(event: PushEvent) -> str:
        return f"push:{event.branch}"

    assert router.dispatch(event_from("pull_request.labeled.json")) == ["label:bug", "pr:labeled"]
    assert router.dispatch(event_from("pull_request.synchronize.json")) == ["pr:synchronize"]
    assert router.dispatch(event_from("push.json")) == ["push:master"]
    assert router.dispatch(event_from("ping.json")) == []


def test_ignored_events_reach_no_handler() -> None:
    router: Router[int] = Router()
    router.add(PingEvent, lambda event: 1)
    assert router.dispatch(Ignored("issues", "opened", "not handled")) == []


def test_a_handler_registered_for_two_actions_runs_once() -> None:
    router: Router[str] = Router()
    calls: list[str] = []

    def handler(event: PullRequestEvent) -> str:
        calls.append(event.action or "")
        return "ok"

    router.add(PullRequestEvent, handler, "labeled")
    router.add(PullRequestEvent, handler)
    assert router.dispatch(event_from("pull_request.labeled.json")) == ["ok"]
    assert calls == ["labeled"]


def test_routers_combine_and_errors_propagate() -> None:
    first: Router[str] = Router()
    second: Router[str] = Router()
    first.add(PingEvent, lambda event: "first")

    def broken(event: PingEvent) -> str:
        raise RuntimeError("handler failed")

    second.add(PingEvent, broken)
    combined = Router(first, second)
    assert len(combined.handlers_for(event_from("ping.json"))) == 2
    with pytest.raises(RuntimeError, match="handler failed"):
        combined.dispatch(event_from("ping.json"))
