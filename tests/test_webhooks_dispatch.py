"""The dispatcher's ordering guarantees, with repositories that record into lists: a completed
run's enrichments (downloads that can take minutes) never hold back the job events behind it."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from exporter.payloads.github import WorkflowJobEvent, WorkflowRunEvent
from exporter.webhooks.dispatch import Dispatcher
from exporter.webhooks.receiver import Delivery
from tests.helpers import REFERENCE, wait_for

EXAMPLES = REFERENCE / "github-api" / "examples"


def _event(name: str) -> tuple[WorkflowJobEvent | WorkflowRunEvent, Delivery]:
    payload: dict[str, Any] = json.loads((EXAMPLES / f"webhook-{name}.json").read_text())
    kind, action = name.split(".")[:2]
    context = {"now": time.time(), "skew": 300.0}
    model = WorkflowJobEvent if kind == "workflow_job" else WorkflowRunEvent
    event = model.model_validate(payload, context=context)
    return event, Delivery(kind, action, payload, b"", {})


class SlowlyEnrichedRepository:
    """Records what reaches it; its enrichments wait until released."""

    def __init__(self) -> None:
        self.jobs: list[int] = []
        self.enriching = threading.Event()
        self.release = threading.Event()
        self.enrichments = 0

    def on_job(self, event: WorkflowJobEvent) -> str:
        self.jobs.append(event.workflow_job.id)
        return "recorded"

    def on_run(self, event: WorkflowRunEvent) -> str:
        return "recorded"

    def enrich(self) -> int:
        self.enriching.set()
        self.release.wait(30)
        self.enrichments += 1
        return 1


def test_job_events_are_not_held_back_by_a_runs_enrichments() -> None:
    outcomes: list[tuple[str, str, str]] = []
    dispatcher = Dispatcher(lambda *outcome: outcomes.append(outcome), workers=1)
    dispatcher.start()
    repo = SlowlyEnrichedRepository()
    try:
        run, run_delivery = _event("workflow_run.completed")
        job, job_delivery = _event("workflow_job.completed.success.with-organization")
        assert isinstance(job, WorkflowJobEvent)
        assert dispatcher.submit("a/b", repo, run, run_delivery)
        assert repo.enriching.wait(10), "a completed run's enrichments start"
        # The one event worker is free while the enrichment runs: the job is recorded now.
        assert dispatcher.submit("a/b", repo, job, job_delivery)
        assert wait_for(lambda: repo.jobs, 10) == [job.workflow_job.id]
        assert repo.enrichments == 0
        # More completed runs while it runs: the repository is enriched once more, not per run.
        for _ in range(3):
            assert dispatcher.submit("a/b", repo, run, run_delivery)
        wait_for(lambda: len(outcomes) == 5, 10)
        repo.release.set()
        assert wait_for(lambda: repo.enrichments == 2, 10)
        time.sleep(0.2)
        assert repo.enrichments == 2
    finally:
        repo.release.set()
        dispatcher.stop()
    assert outcomes[:2] == [
        ("workflow_run", "completed", "recorded"),
        ("workflow_job", "completed", "recorded"),
    ]


def test_a_failing_enrichment_leaves_the_dispatcher_working() -> None:
    class Broken(SlowlyEnrichedRepository):
        def enrich(self) -> int:
            self.enrichments += 1
            raise RuntimeError("an upstream provoked this")

    dispatcher = Dispatcher(lambda *_: None, workers=1)
    dispatcher.start()
    repo = Broken()
    try:
        run, run_delivery = _event("workflow_run.completed")
        job, job_delivery = _event("workflow_job.completed.success.with-organization")
        dispatcher.submit("a/b", repo, run, run_delivery)
        assert wait_for(lambda: repo.enrichments == 1, 10)
        dispatcher.submit("a/b", repo, run, run_delivery)
        dispatcher.submit("a/b", repo, job, job_delivery)
        assert wait_for(lambda: repo.enrichments == 2 and repo.jobs, 10)
    finally:
        dispatcher.stop()
