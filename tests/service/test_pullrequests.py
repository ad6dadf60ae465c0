"""The pull-request workflow's decisions (``handle_event``), per event and permission.

Events are GitHub's recorded payloads (tests/samples), changed only where a case
needs it; the queue and GitHub are fakes that record what was asked of them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelci.github import PullRequestEvent, PushEvent, classify
from modelci.github.sansio import Delivery
from modelci.service.pullrequests import (
    DeliveryJob,
    EvaluationJob,
    Outcome,
    handle_event,
)
from tests.github.helpers import load_sample

LABEL = "evaluate"
MAINTAINER, OUTSIDER = "maintainer", "outsider"


@dataclass
class FakeQueue:
    evaluations: list[EvaluationJob] = field(default_factory=list)
    deliveries: list[DeliveryJob] = field(default_factory=list)
    cancelled: list[tuple[str, int]] = field(default_factory=list)
    pending: int = 0  # what cancel_evaluations reports as cancelled

    def enqueue_evaluation(self, job: EvaluationJob) -> int:
        self.evaluations.append(job)
        return len(self.evaluations)

    def enqueue_delivery(self, job: DeliveryJob) -> int | None:
        if any(d.sha == job.sha for d in self.deliveries):
            return None
        self.deliveries.append(job)
        return 100 + len(self.deliveries)

    def cancel_evaluations(self, *, repo: str, number: int) -> int:
        self.cancelled.append((repo, number))
        cancelled, self.pending = self.pending, 0
        return cancelled

    def move_to_gpu(self, job: EvaluationJob | DeliveryJob) -> int | None:
        raise AssertionError("the workflow never moves jobs itself")


@dataclass
class FakeGitHub:
    writers: set[str] = field(default_factory=lambda: {MAINTAINER})
    said: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)

    def can_write(self, repo: str, username: str, installation_id: int | None) -> bool:
        self.asked.append(username)
        return username in self.writers

    def say(self, job_or_pr: EvaluationJob | PullRequestEvent, body: str) -> None:
        self.said.append(body)


def pr_event(
    action: str,
    *,
    sender: str = MAINTAINER,
    label: str | None = LABEL,
    labels: tuple[str, ...] = (LABEL,),
    merged: bool = False,
    base_ref: str | None = None,
) -> PullRequestEvent:
    payload: dict[str, Any] = copy.deepcopy(load_sample("pull_request.labeled.json"))
    payload["action"] = action
    payload["sender"]["login"] = sender
    if label is None:
        payload.pop("label", None)
    else:
        payload["label"] = {**payload["label"], "name": label}
    pr = payload["pull_request"]
    pr["labels"] = [{**pr["labels"][0], "name": name} for name in labels]
    pr["merged"] = merged
    if merged:
        pr["merge_commit_sha"] = "c" * 40
        pr["state"] = "closed"
    if base_ref is not None:
        pr["base"]["ref"] = base_ref
    event = classify(Delivery(delivery_id=f"d-{action}", event="pull_request", payload=payload))
    assert isinstance(event, PullRequestEvent)
    return event


def decide(event: Any, queue: FakeQueue, github: FakeGitHub) -> Outcome:
    return handle_event(event, label=LABEL, queue=queue, github=github)


def test_label_by_a_maintainer_queues_the_payloads_head() -> None:
    queue, github = FakeQueue(), FakeGitHub()
    event = pr_event("labeled")
    outcome = decide(event, queue, github)
    assert outcome.action == "queued"
    assert [job.head_sha for job in queue.evaluations] == [event.pull_request.head_sha]
    assert github.asked == [MAINTAINER]


def test_label_by_someone_without_write_access_runs_nothing_and_says_why() -> None:
    queue, github = FakeQueue(), FakeGitHub()
    outcome = decide(pr_event("labeled", sender=OUTSIDER), queue, github)
    assert outcome.action == "refused"
    assert queue.evaluations == [] and queue.cancelled == []
    assert len(github.said) == 1 and "write access" in github.said[0]


@pytest.mark.parametrize("spelling", ["Evaluate", "EVALUATE"])
def test_a_label_differing_only_in_case_is_the_same_label(spelling: str) -> None:
    # GitHub's label names are case-insensitive: a repository can't hold both.
    queue, github = FakeQueue(), FakeGitHub()
    assert decide(pr_event("labeled", label=spelling), queue, github).action == "queued"
    refused = FakeQueue()
    outcome = decide(pr_event("labeled", label=spelling, sender=OUTSIDER), refused, FakeGitHub())
    assert outcome.action == "refused" and refused.evaluations == []


def test_another_label_is_ignored_without_asking_github() -> None:
    queue, github = FakeQueue(), FakeGitHub()
    outcome = decide(pr_event("labeled", label="bug"), queue, github)
    assert outcome.action == "ignored"
    assert queue.evaluations == [] and github.asked == [] and github.said == []


def test_push_to_a_labeled_pull_request_by_a_maintainer_reevaluates() -> None:
    queue, github = FakeQueue(pending=1), FakeGitHub()
    outcome = decide(pr_event("synchronize", label=None), queue, github)
    assert outcome.action == "queued" and "superseding 1" in outcome.detail
    assert len(queue.evaluations) == 1


def test_push_by_someone_without_write_access_cancels_and_runs_nothing() -> None:
    queue, github = FakeQueue(pending=1), FakeGitHub()
    outcome = decide(pr_event("synchronize", label=None, sender=OUTSIDER), queue, github)
    assert outcome.action == "refused"
    assert queue.evaluations == []
    assert queue.cancelled  # the older head's run doesn't finish as if it were current
    assert "re-applies" in github.said[0]


def test_push_with_the_label_in_another_case_still_counts_as_labeled() -> None:
    queue, github = FakeQueue(), FakeGitHub()
    outcome = decide(pr_event("synchronize", label=None, labels=("Evaluate",)), queue, github)
    assert outcome.action == "queued"


def test_push_to_an_unlabeled_pull_request_is_ignored() -> None:
    queue, github = FakeQueue(), FakeGitHub()
    outcome = decide(pr_event("synchronize", label=None, labels=("bug",)), queue, github)
    assert outcome.action == "ignored" and queue.evaluations == [] and github.asked == []


def test_removing_the_label_cancels_what_is_pending() -> None:
    queue, github = FakeQueue(pending=2), FakeGitHub()
    outcome = decide(pr_event("unlabeled", labels=()), queue, github)
    assert outcome.action == "cancelled" and "2 pending" in outcome.detail
    assert queue.evaluations == [] and queue.deliveries == []


def test_removing_another_label_changes_nothing() -> None:
    queue, github = FakeQueue(pending=2), FakeGitHub()
    outcome = decide(pr_event("unlabeled", label="bug"), queue, github)
    assert outcome.action == "ignored" and queue.cancelled == []


def test_closing_without_merging_cancels_and_delivers_nothing() -> None:
    queue, github = FakeQueue(pending=1), FakeGitHub()
    outcome = decide(pr_event("closed", label=None), queue, github)
    assert outcome.action == "cancelled"
    assert queue.cancelled and queue.deliveries == [] and queue.evaluations == []


def test_merging_into_the_default_branch_delivers_the_merge_commit() -> None:
    queue, github = FakeQueue(), FakeGitHub()
    outcome = decide(pr_event("closed", label=None, merged=True), queue, github)
    assert outcome.action == "queued"
    assert [job.sha for job in queue.deliveries] == ["c" * 40]


def test_merging_into_another_branch_delivers_nothing() -> None:
    queue, github = FakeQueue(), FakeGitHub()
    decide(pr_event("closed", label=None, merged=True, base_ref="release"), queue, github)
    assert queue.deliveries == []


def test_push_to_the_default_branch_is_delivered_once() -> None:
    payload = load_sample("push.json")
    event = classify(Delivery(delivery_id="p1", event="push", payload=payload))
    assert isinstance(event, PushEvent) and event.to_default_branch
    queue, github = FakeQueue(), FakeGitHub()
    assert decide(event, queue, github).action == "queued"
    assert decide(event, queue, github).action == "recorded"
    assert len(queue.deliveries) == 1
