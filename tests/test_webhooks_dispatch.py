"""The dispatcher's ordering guarantees, with repositories that record into lists: a completed
run's enrichments (downloads that can take minutes) never hold back the job events behind it."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from exporter import metrics as m
from exporter.analysis.pipeline import IncompleteError, RunFacts
from exporter.app import policy_for
from exporter.config import validate_config
from exporter.observations import Task, Unit, attempt_key, task_done_unit
from exporter.payloads.github import WorkflowJobEvent, WorkflowRun, WorkflowRunEvent
from exporter.sources.github.auth import TokenAuth
from exporter.sources.github.client import GitHubClient
from exporter.sources.github.poller import RepositoryPoller
from exporter.store import Store
from exporter.webhooks.dispatch import Dispatcher
from exporter.webhooks.receiver import Delivery
from simulator.github import GitHubSimulator
from simulator.webhooks import Event as SimEvent
from simulator.webhooks import events_between
from tests.helpers import REFERENCE, TOKEN, stored_gauges, wait_for

EXAMPLES = REFERENCE / "github-api" / "examples"
SKEW = {"now": time.time() + 365 * 86400.0, "skew": 365 * 86400.0}


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
    """While a repository's enrichment runs, a job event of the same repository on the only
    worker is recorded at once, and runs completed meanwhile queue one more enrichment pass."""
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
        assert wait_for(lambda: len(outcomes) == 5, 10)
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
    """An enrichment that raises is logged; the next completed run enriches again, and job
    events keep being recorded."""

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


class BlockingLogs:
    """The job-log enrichment, blocked until released (as a slow download is)."""

    kind = "log"

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def run(self, task: Task) -> Unit:
        self.started.set()
        self.release.wait(30)
        return task_done_unit(task)

    def count_skips(self) -> None:
        return None


def _events(sim: GitHubSimulator, repository: str) -> list[SimEvent]:
    now = sim.clock.now()
    return [
        e
        for e in events_between(sim, now - 86400, now)
        if e.payload["repository"]["full_name"] == repository
    ]


def test_a_runs_enrichment_holds_back_neither_run_nor_job_events() -> None:
    """Real pollers against the simulator, one worker of each kind: while acme/a's job-log
    enrichment is blocked, another run event of acme/a and a job event of acme/b are recorded
    (the enrichment holds no lock a run event needs; job events never wait for run events)."""
    sim = GitHubSimulator("seed", repositories=("acme/a", "acme/b"), token=TOKEN).start()
    config = validate_config(
        {
            "github": {
                "api_url": sim.url,
                "clock_skew": "365d",
                "repositories": [{"name": "acme/a", "logs": {"jobs": ["*"]}}, {"name": "acme/b"}],
            }
        }
    )
    assert config.github is not None
    store = Store(":memory:")
    logs = BlockingLogs()
    with httpx.Client() as http:
        client = GitHubClient(sim.url, TokenAuth(TOKEN), http=http)
        pollers = {
            repo.name: RepositoryPoller(
                repo, config.github, client, store, policy_for(config, repo), enrichers=[logs]
            )
            for repo in config.github.repositories
        }
        outcomes: list[tuple[str, str, str]] = []
        dispatcher = Dispatcher(lambda *outcome: outcomes.append(outcome), workers=1)
        dispatcher.start()
        try:
            _dispatch(dispatcher, sim, pollers, ("acme/a", "workflow_run", "completed"))
            assert logs.started.wait(20), "acme/a's completed run left job logs to read"
            _dispatch(dispatcher, sim, pollers, ("acme/a", "workflow_run", "requested"))
            _dispatch(dispatcher, sim, pollers, ("acme/b", "workflow_job", "completed"))
            assert wait_for(lambda: len(outcomes) == 3, 10)
            assert not logs.release.is_set()
            assert sorted(outcomes) == [
                ("workflow_job", "completed", "recorded"),
                ("workflow_run", "completed", "recorded"),
                ("workflow_run", "requested", "recorded"),
            ]
        finally:
            logs.release.set()
            dispatcher.stop()
            sim.stop()


def _dispatch(
    dispatcher: Dispatcher,
    sim: GitHubSimulator,
    pollers: dict[str, RepositoryPoller],
    event: tuple[str, str, str],
) -> None:
    """The repository's latest simulated (name, action) event, submitted as the router would."""
    repository, name, action = event
    found = [e for e in _events(sim, repository) if (e.name, e.action) == (name, action)]
    payload = found[-1].payload
    model = WorkflowJobEvent if name == "workflow_job" else WorkflowRunEvent
    parsed = model.model_validate(payload, context={"now": time.time(), "skew": 365 * 86400.0})
    delivery = Delivery(name, action, payload, b"", {})
    assert dispatcher.submit(repository, pollers[repository], parsed, delivery)


def test_a_completed_run_the_api_does_not_know_yet_waits_for_the_reconciler() -> None:
    """Right after a `workflow_run` `completed`, the API may not show the run (or its jobs done)
    yet: nothing is recorded now (`ignored`, as the interface names it; the reconciler records
    the run), and nothing is marked observed."""
    sim = GitHubSimulator("seed", repositories=("acme/a",), token=TOKEN).start()
    config = validate_config(
        {"github": {"api_url": sim.url, "clock_skew": "365d", "repositories": [{"name": "acme/a"}]}}
    )
    assert config.github is not None
    (repo,) = config.github.repositories
    with httpx.Client() as http:
        client = GitHubClient(sim.url, TokenAuth(TOKEN), http=http)
        poller = RepositoryPoller(
            repo, config.github, client, Store(":memory:"), policy_for(config, repo)
        )
        (event,) = [
            e for e in _events(sim, "acme/a") if (e.name, e.action) == ("workflow_run", "completed")
        ][-1:]
        payload = {
            **event.payload,
            "workflow_run": {**event.payload["workflow_run"], "id": 987654321},
        }
        parsed = WorkflowRunEvent.model_validate(
            payload, context={"now": time.time(), "skew": 365 * 86400.0}
        )
        try:
            assert poller.on_run(parsed) == "ignored"
            assert not poller.store.is_observed(*attempt_key("acme/a", 987654321, 1))
        finally:
            sim.stop()


@pytest.mark.parametrize("api_lags", [False, True], ids=["api-current", "api-lags-once"])
def test_a_lost_completion_of_an_old_runs_rerun_is_found_by_the_reconciler(api_lags: bool) -> None:
    """A run older than the listing's window is re-run; its jobs open through webhooks, and
    their completion events are lost. The next poll does not list the run, but asks for the
    attempt by id once its jobs have been open 10 minutes: the attempt is recorded and the jobs
    close (they stayed `executing` until the lookback). When the API still shows a job open at
    that moment (fault injected once), the jobs stay open and the next poll records it."""
    sim = GitHubSimulator("seed", repositories=("acme/a",), token=TOKEN).start()
    github = {"api_url": sim.url, "clock_skew": "365d", "lookback": "3h", "rerun_window": "1h"}
    config = validate_config({"github": {**github, "repositories": [{"name": "acme/a"}]}})
    assert config.github is not None
    (repo,) = config.github.repositories
    store = Store(":memory:")
    try:
        with httpx.Client() as http:
            client = GitHubClient(sim.url, TokenAuth(TOKEN), http=http)
            poller = RepositoryPoller(
                repo, config.github, client, store, policy_for(config, repo), clock=sim.clock.now
            )
            old, opened = _open_an_old_runs_rerun(sim, poller)
            assert sum(stored_gauges(store, m.TASK_ACTIVE).values()) == opened
            if api_lags:
                _lag_once(poller, old.id)
                poller.poll()
                assert not store.is_observed(*attempt_key("acme/a", old.id, 2))
                assert sum(stored_gauges(store, m.TASK_ACTIVE).values()) == opened
            poller.poll()
        assert store.is_observed(*attempt_key("acme/a", old.id, 2))
        assert sum(stored_gauges(store, m.TASK_ACTIVE).values()) == 0
    finally:
        sim.stop()


def _open_an_old_runs_rerun(sim: GitHubSimulator, poller: RepositoryPoller) -> tuple[Any, int]:
    """A completed run created 4–6 hours ago, re-run now; its jobs' `in_progress` events
    delivered, none of their completions; the clock then past the attempt's end + 10 minutes."""
    now = sim.clock.now()
    old = next(
        r
        for r in sim.timelines["acme/a"].runs_until(now)
        if 4 * 3600 <= now - r.created_at <= 6 * 3600 and len(r.attempts) == 1
    )
    poller.poll()
    rerun = sim.rerun("acme/a", old.id)
    sim.clock.advance(rerun.first_start + 30 - sim.clock.now())
    started = [
        e
        for e in _events(sim, "acme/a")
        if e.name == "workflow_job"
        and e.action == "in_progress"
        and e.payload["workflow_job"]["run_id"] == old.id
        and e.payload["workflow_job"]["run_attempt"] == 2
    ]
    assert started
    for event in started:
        poller.on_job(WorkflowJobEvent.model_validate(event.payload, context=SKEW))
    sim.clock.advance(rerun.end + 700 - sim.clock.now())
    return old, len(started)


def _lag_once(poller: RepositoryPoller, run_id: int) -> None:
    """Fault injection: the next facts request for the run's attempt 2 finds a job still open
    (GitHub's API lag)."""
    real = poller.fetcher.facts
    lagged: list[int] = []

    def lagging(run: WorkflowRun, number: int) -> RunFacts:
        if run.id == run_id and number == 2 and not lagged:
            lagged.append(number)
            raise IncompleteError("a job is still in progress")
        return real(run, number)

    poller.fetcher.facts = lagging  # type: ignore[method-assign]
