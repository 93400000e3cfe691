"""The GitHub payloads the exporter reads, as pydantic models: only the fields used, unknown ones
ignored, wrong types refused with the field named. Timestamps become epoch seconds and must lie
between GitHub's first day and now plus a small clock skew (pass `context={"now": ...}`); a
timestamp outside that range is malformed, so it can never poison a latest-value gauge.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo

from exporter.sources.errors import MalformedResponse
from exporter.timeutil import parse_timestamp

# 2008-01-01: before GitHub existed. Clock skew tolerated between GitHub and this machine.
EARLIEST = 1_199_145_600.0
MAX_SKEW = 300.0
# GitHub allows 50 re-runs of a run; anything beyond is treated as malformed.
MAX_ATTEMPTS = 100


def _timestamp(value: Any, info: ValidationInfo) -> float | None:
    if value is None or value == "":
        return None
    parsed = parse_timestamp(value)
    if parsed is None:
        raise ValueError(f"not a timestamp: {str(value)[:40]!r}")
    context = info.context or {}
    now = float(context.get("now", time.time()))
    if parsed < EARLIEST or parsed > now + float(context.get("skew", MAX_SKEW)):
        raise ValueError(f"timestamp {str(value)[:40]} is outside {EARLIEST:.0f}..now")
    return parsed


Timestamp = Annotated[float | None, BeforeValidator(_timestamp)]
Id = Annotated[int, Field(ge=0, le=2**63 - 1, strict=True)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WorkflowRun(_Payload):
    id: Id
    name: str | None = None
    status: str
    conclusion: str | None = None
    created_at: Timestamp
    updated_at: Timestamp = None
    run_started_at: Timestamp = None
    run_attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] = 1
    head_branch: str | None = None
    head_sha: str | None = None
    event: str | None = None
    path: str | None = None

    @property
    def workflow(self) -> str:
        return self.name or ""


class Step(_Payload):
    name: str = ""
    number: int = 0
    status: str | None = None
    conclusion: str | None = None
    started_at: Timestamp = None
    completed_at: Timestamp = None


class Job(_Payload):
    id: Id
    run_id: Id | None = None
    run_attempt: int | None = None
    name: str = ""
    status: str
    conclusion: str | None = None
    created_at: Timestamp = None
    started_at: Timestamp = None
    completed_at: Timestamp = None
    labels: list[str] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)
    runner_name: str | None = None
    runner_group_name: str | None = None


class WebhookJob(Job):
    """A workflow_job webhook's job: the jobs API's job plus where it ran."""

    run_attempt: Annotated[int, Field(ge=1, le=MAX_ATTEMPTS)] = 1
    workflow_name: str | None = None
    head_branch: str | None = None
    head_sha: str | None = None


class RepositoryRef(_Payload):
    full_name: str


class WorkflowJobEvent(_Payload):
    action: str
    workflow_job: WebhookJob
    repository: RepositoryRef


class WorkflowRunEvent(_Payload):
    action: str
    workflow_run: WorkflowRun
    repository: RepositoryRef


class Runner(_Payload):
    id: Id
    status: str = "offline"
    busy: bool = False


class RunnerGroup(_Payload):
    id: Id
    name: str


class Artifact(_Payload):
    id: Id
    name: str
    expired: bool = False
    created_at: Timestamp = None
    size_in_bytes: int | None = None


class CacheUsage(_Payload):
    active_caches_size_in_bytes: Annotated[int, Field(ge=0)]
    active_caches_count: Annotated[int, Field(ge=0)]


class CacheEntry(_Payload):
    key: str = ""
    size_in_bytes: Annotated[int, Field(ge=0)] = 0


class ContentFile(_Payload):
    type: str = "file"
    content: str
    sha: str = ""


M = TypeVar("M", bound=BaseModel)


def parse(
    model: type[M], data: Any, what: str, now: float | None = None, skew: float = MAX_SKEW
) -> M:
    """One payload, or MalformedResponse naming the first bad field."""
    context = {"now": time.time() if now is None else now, "skew": skew}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise MalformedResponse(f"{what}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "payload"
    more = len(exc.errors()) - 1
    return f"{where}: {first.get('msg', 'invalid')}" + (f" (and {more} more)" if more else "")
