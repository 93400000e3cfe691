"""Simulated objects → GitHub REST payloads shaped like the official examples (and valid against
the official schemas)."""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from importlib import resources
from typing import Any

from exporter.timeutil import format_timestamp
from simulator.model import SimAttempt, SimJob, SimRun
from simulator.runners import GROUPS, RUNNERS


@cache
def _template(name: str) -> dict[str, Any]:
    text = resources.files("simulator").joinpath("data", name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _repo_urls(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {k: _repo_urls(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_repo_urls(v, old, new) for v in obj]
    return obj


def _ts(value: float | None) -> str | None:
    return None if value is None else format_timestamp(value)


def run_payload(
    run: SimRun, attempt: SimAttempt, t: float, base: str, *, workflow_name: str, path: str
) -> dict[str, Any]:
    template = _template("workflow-run.json")
    owner, name = run.repository.split("/")
    body = copy.deepcopy(template)
    repo = _repo_urls(body["repository"], "octocat/Hello-World", run.repository)
    repo["name"], repo["full_name"] = name, run.repository
    repo["owner"]["login"] = owner
    repo["id"] = 1000 + int(hashlib.sha1(run.repository.encode()).hexdigest()[:7], 16)
    body["repository"] = repo
    body["head_repository"] = copy.deepcopy(repo)
    api = f"{base}/repos/{run.repository}/actions/runs/{run.id}"
    if t < attempt.first_start:
        status, conclusion = "queued", None
    elif t < attempt.end:
        status, conclusion = "in_progress", None
    else:
        status, conclusion = "completed", attempt.conclusion
    body.update(
        {
            "id": run.id,
            "name": workflow_name,
            "node_id": f"WFR_sim{run.id}",
            "check_suite_id": run.id + 1,
            "check_suite_node_id": f"CS_sim{run.id}",
            "head_branch": run.branch,
            "head_sha": run.head_sha,
            "path": path,
            "run_number": run.run_number,
            "event": run.event,
            "display_title": f"Change {run.run_number}",
            "status": status,
            "conclusion": conclusion,
            "workflow_id": 161335,
            "url": api,
            "html_url": f"https://github.com/{run.repository}/actions/runs/{run.id}",
            "pull_requests": [],
            "created_at": _ts(run.created_at),
            "updated_at": _ts(attempt.events_until(t)),
            "run_attempt": attempt.number,
            "referenced_workflows": [],
            "run_started_at": _ts(attempt.created_at),
            "jobs_url": f"{api}/jobs",
            "logs_url": f"{api}/logs",
            "check_suite_url": f"{base}/repos/{run.repository}/check-suites/{run.id + 1}",
            "artifacts_url": f"{api}/artifacts",
            "cancel_url": f"{api}/cancel",
            "rerun_url": f"{api}/rerun",
            "previous_attempt_url": (
                f"{api}/attempts/{attempt.number - 1}" if attempt.number > 1 else None
            ),
            "workflow_url": f"{base}/repos/{run.repository}/actions/workflows/161335",
        }
    )
    body["head_commit"] = {
        **body["head_commit"],
        "id": run.head_sha,
        "message": f"Change {run.run_number}",
        "timestamp": _ts(run.created_at - 5),
    }
    return body


def _runner(labels: tuple[str, ...]) -> dict[str, Any]:
    """The runner a started job ran on: a self-hosted one with its labels, else GitHub's."""
    hosted = next((r for r in RUNNERS if set(labels) <= set(r.labels) and r.online), None)
    if "self-hosted" in labels and hosted is not None:
        group = next(g for g in GROUPS if g.id == hosted.group_id)
        return {
            "runner_id": hosted.id,
            "runner_name": hosted.name,
            "runner_group_id": group.id,
            "runner_group_name": group.name,
        }
    return {
        "runner_id": 7,
        "runner_name": "GitHub Actions 7",
        "runner_group_id": 1,
        "runner_group_name": "GitHub Actions",
    }


def job_payload(
    run: SimRun, attempt: SimAttempt, job: SimJob, t: float, *, base: str, workflow_name: str
) -> dict[str, Any]:
    if t < job.started_at:
        status, conclusion, started, completed = "queued", None, job.created_at, None
        runner: dict[str, Any] = {
            "runner_id": None,
            "runner_name": None,
            "runner_group_id": None,
            "runner_group_name": None,
        }
    else:
        done = t >= job.completed_at
        status = "completed" if done else "in_progress"
        conclusion = job.conclusion if done else None
        started, completed = job.started_at, (job.completed_at if done else None)
        runner = _runner(job.labels)
    steps = []
    for step in job.steps:
        if status == "queued":
            break
        if step.started_at is not None and t < step.started_at:
            steps.append(
                {
                    "name": step.name,
                    "status": "queued",
                    "conclusion": None,
                    "number": step.number,
                    "started_at": None,
                    "completed_at": None,
                }
            )
            continue
        finished = step.completed_at is None or t >= step.completed_at
        if step.started_at is None and status != "completed":
            steps.append(
                {
                    "name": step.name,
                    "status": "queued",
                    "conclusion": None,
                    "number": step.number,
                    "started_at": None,
                    "completed_at": None,
                }
            )
            continue
        steps.append(
            {
                "name": step.name,
                "status": "completed" if finished else "in_progress",
                "conclusion": step.conclusion if finished else None,
                "number": step.number,
                "started_at": _ts(step.started_at),
                "completed_at": _ts(step.completed_at) if finished else None,
            }
        )
    api = f"{base}/repos/{run.repository}"
    return {
        "id": job.id,
        "run_id": run.id,
        "run_url": f"{api}/actions/runs/{run.id}",
        "run_attempt": attempt.number,
        "node_id": f"CR_sim{job.id}",
        "head_sha": run.head_sha,
        "url": f"{api}/actions/jobs/{job.id}",
        "html_url": f"https://github.com/{run.repository}/actions/runs/{run.id}/job/{job.id}",
        "status": status,
        "conclusion": conclusion,
        "created_at": _ts(job.created_at),
        "started_at": _ts(started),
        "completed_at": _ts(completed),
        "name": job.name,
        "steps": steps,
        "check_run_url": f"{api}/check-runs/{job.id}",
        "labels": list(job.labels),
        **runner,
        "workflow_name": workflow_name,
        "head_branch": run.branch,
    }


def artifact_payload(
    repository: str,
    run: SimRun,
    artifact_id: int,
    name: str,
    *,
    size: int,
    created_at: float,
    base: str,
) -> dict[str, Any]:
    api = f"{base}/repos/{repository}/actions/artifacts/{artifact_id}"
    return {
        "id": artifact_id,
        "node_id": f"MDg6QXJ0aWZhY3Q{artifact_id}",
        "name": name,
        "size_in_bytes": size,
        "url": api,
        "archive_download_url": f"{api}/zip",
        "expired": False,
        "created_at": _ts(created_at),
        "expires_at": _ts(created_at + 90 * 86400),
        "updated_at": _ts(created_at),
        "digest": "sha256:" + hashlib.sha256(f"{artifact_id}".encode()).hexdigest(),
        "workflow_run": {
            "id": run.id,
            "repository_id": 1000 + int(hashlib.sha1(repository.encode()).hexdigest()[:7], 16),
            "head_repository_id": 1000 + int(hashlib.sha1(repository.encode()).hexdigest()[:7], 16),
            "head_branch": run.branch,
            "head_sha": run.head_sha,
        },
    }
