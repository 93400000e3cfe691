"""A workflow file's `needs:` graph, and mapping job display names to their definitions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


@dataclass(frozen=True)
class JobDefinition:
    id: str
    name: str | None
    needs: tuple[str, ...]


@dataclass
class WorkflowGraph:
    """Job definitions of one workflow file, keyed by job id."""

    jobs: dict[str, JobDefinition] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            job_id: {
                "name": d.name,
                "needs": list(d.needs),
            }
            for job_id, d in self.jobs.items()
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkflowGraph:
        return cls(
            {
                job_id: JobDefinition(job_id, v.get("name"), tuple(v.get("needs", ())))
                for job_id, v in data.items()
            }
        )

    def resolve(self, display_name: str) -> str | None:
        """The job id a display name belongs to: exact name or id; a matrix instance
        `name (a, b)`; a reusable workflow's `caller / inner`; a name with `${{ }}` expressions."""
        for job_id, d in self.jobs.items():
            if display_name in (d.name, job_id):
                return job_id
        for job_id, d in self.jobs.items():
            label = d.name or job_id
            for candidate in {label, job_id}:
                if display_name.startswith(candidate + " / ") or display_name.startswith(
                    candidate + " ("
                ):
                    return job_id
            if d.name and "${{" in d.name:
                pattern = (
                    "^"
                    + ".+?".join(re.escape(part) for part in _EXPRESSION.split(d.name))
                    + r"(?: / .*)?$"
                )
                if re.match(pattern, display_name):
                    return job_id
        return None


class WorkflowError(ValueError):
    """The workflow file can't be read as a workflow."""


def parse_workflow(text: str | bytes) -> WorkflowGraph:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WorkflowError(f"not YAML: {exc.__class__.__name__}") from None
    if not isinstance(document, dict) or not isinstance(document.get("jobs"), dict):
        raise WorkflowError("no jobs: mapping")
    graph = WorkflowGraph()
    for job_id, body in document["jobs"].items():
        if not isinstance(body, dict):
            raise WorkflowError(f"job {job_id!r} is not a mapping")
        needs = body.get("needs", ())
        if isinstance(needs, str):
            needs = (needs,)
        if not isinstance(needs, list | tuple) or not all(isinstance(n, str) for n in needs):
            raise WorkflowError(f"job {job_id!r}: needs is not a list of job ids")
        name = body.get("name")
        graph.jobs[str(job_id)] = JobDefinition(
            id=str(job_id), name=str(name) if name is not None else None, needs=tuple(needs)
        )
    for d in graph.jobs.values():
        for need in d.needs:
            if need not in graph.jobs:
                raise WorkflowError(f"job {d.id!r} needs unknown job {need!r}")
    return graph
