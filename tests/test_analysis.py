"""Pure analysis: result mapping, job facts from real payloads, workflow graphs, critical path."""

from __future__ import annotations

import json

import pytest

from exporter.analysis.pipeline import (
    IncompleteError,
    JobFacts,
    critical_path_from_needs,
    critical_path_from_timestamps,
    job_facts,
    run_facts,
)
from exporter.analysis.results import map_result
from exporter.analysis.workflow import WorkflowError, parse_workflow
from exporter.payloads.github import Job, WorkflowRun
from tests.helpers import REFERENCE

EXAMPLES = REFERENCE / "github-api" / "examples"


@pytest.mark.parametrize(
    ("conclusion", "result"),
    [
        ("success", "success"),
        ("failure", "failure"),
        ("cancelled", "cancellation"),
        ("timed_out", "timeout"),
        ("skipped", "skip"),
        ("startup_failure", "error"),
        ("action_required", "error"),
        ("neutral", "success"),
        ("stale", "cancellation"),
        (None, "error"),
        ("something_new", "error"),
    ],
)
def test_result_mapping(conclusion: object, result: str) -> None:
    assert map_result(conclusion) == result


def test_job_facts_from_the_official_example() -> None:
    """The spec's job example: mixed time zones (Z and -08:00), post steps numbered 16/17."""
    job = Job.model_validate(json.loads((EXAMPLES / "job.json").read_text()))
    facts = job_facts(job)
    assert facts.seconds == 119  # 17:42:40Z → 17:44:39Z
    assert facts.runner == "bar,foo,self-hosted"
    assert facts.queue_seconds is None  # the example has no created_at
    assert [s.seconds for s in facts.steps][:2] == [1, 4]
    assert sum(s.seconds for s in facts.steps) == 119
    assert facts.steps[-1].number == 17


def test_incomplete_jobs_are_not_observed() -> None:
    job = json.loads((EXAMPLES / "job.json").read_text())
    job["status"] = "in_progress"
    with pytest.raises(IncompleteError):
        job_facts(Job.model_validate(job))


def _job(job_id: int, name: str, start: float, end: float, result: str = "success") -> JobFacts:
    return JobFacts(job_id, name, result, "ubuntu-latest", start - 5, start, end, ())


WORKFLOW = """
name: CI
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps: [{run: make}]
  test:
    name: Test (${{ matrix.python }})
    needs: build
    strategy: {matrix: {python: ["3.11", "3.12"]}}
    runs-on: ubuntu-latest
    steps: [{run: make test}]
  deploy:
    needs: [test, build]
    uses: ./.github/workflows/deploy.yml
"""


def test_workflow_names_map_to_definitions() -> None:
    """Matrix instances, `${{ }}` names and reusable-workflow jobs resolve to their job ids."""
    graph = parse_workflow(WORKFLOW)
    assert graph.jobs["deploy"].needs == ("test", "build")
    assert graph.resolve("build") == "build"
    assert graph.resolve("Test (3.11)") == "test"
    assert graph.resolve("deploy / push-image") == "deploy"
    assert graph.resolve("unknown") is None


@pytest.mark.parametrize(
    "text", ["jobs: [", "name: x", "jobs: {a: {needs: [nope]}}", "jobs: {a: 3}"]
)
def test_bad_workflows_are_rejected(text: str) -> None:
    with pytest.raises(WorkflowError):
        parse_workflow(text)


def test_critical_path_from_needs_and_from_timestamps() -> None:
    """With the graph, the path follows needs: back from the last job through the dependency that
    finished last; without it, through the job that finished last before each start."""
    graph = parse_workflow(WORKFLOW)
    jobs = [
        _job(1, "build", 0, 100),
        _job(2, "Test (3.11)", 110, 400),
        _job(3, "Test (3.12)", 112, 500),
        _job(4, "deploy / push-image", 510, 560),
        _job(5, "unrelated-lint", 0, 505),
    ]
    by_needs = critical_path_from_needs(jobs, graph)
    assert by_needs is None  # "unrelated-lint" can't be mapped: fall back
    mapped = jobs[:4]
    path = critical_path_from_needs(mapped, graph)
    assert path is not None
    assert [j.id for j in path] == [1, 3, 4]
    assert sum(j.seconds for j in path) == 100 + 388 + 50
    assert [j.id for j in critical_path_from_timestamps(jobs)] == [5, 4]
    assert [j.id for j in critical_path_from_timestamps(mapped)] == [1, 3, 4]


def test_run_facts_wall_time_excludes_skipped_jobs() -> None:
    run = json.loads((EXAMPLES / "workflow-run.json").read_text())
    run.update(status="completed", conclusion="failure")
    base = json.loads((EXAMPLES / "job.json").read_text())
    skipped = {
        **base,
        "id": 2,
        "name": "later",
        "conclusion": "skipped",
        "started_at": "2020-01-20T18:00:00Z",
        "completed_at": "2020-01-20T18:00:00Z",
        "steps": [],
    }
    facts = run_facts(
        "octo-org/octo-repo",
        WorkflowRun.model_validate(run),
        [Job.model_validate(base), Job.model_validate(skipped)],
    )
    assert facts.seconds == 119
    assert facts.result == "failure"
    assert facts.critical_path_source == "timestamps"
