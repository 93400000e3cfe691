"""Signed `workflow_job` and `workflow_run` webhooks as the simulated runs progress, sent to a
receiver over HTTP like GitHub's hook deliveries: each event once, at its simulated moment, some
dropped or delivered twice under the same `X-GitHub-Delivery` when asked (a redelivery, or a
repository and an organisation hook). The envelope (`workflow`, `sender`, repository fields) comes
from octokit/webhooks' `workflow_run/completed` example (`data/webhook-workflow_run.json`, MIT)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import httpx

from simulator.github import GitHubSimulator
from simulator.model import SimAttempt, SimJob, SimRun
from simulator.render import job_payload, run_payload

# At one moment: a run is requested before its jobs queue, and completes after its last job.
_RANK = {("workflow_run", "requested"): 0, ("workflow_run", "in_progress"): 1}
_LAST = 9
_NOT_LITE = frozenset({"git_url", "ssh_url"})


@dataclass(frozen=True)
class Event:
    at: float
    name: str  # workflow_job | workflow_run
    action: str
    payload: dict[str, Any] = field(compare=False, repr=False)
    delivery: str = ""


@dataclass
class SenderStats:
    sent: int = 0
    dropped: int = 0
    repeated: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


@cache
def _envelope() -> dict[str, Any]:
    text = resources.files("simulator").joinpath("data", "webhook-workflow_run.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSender:
    """`pump()` delivers every event up to the simulator's now; `start()` pumps in a thread."""

    def __init__(
        self,
        github: GitHubSimulator,
        url: str,
        secret: str,
        *,
        drop_rate: float = 0.0,
        repeat_rate: float = 0.0,
        seed: int = 0,
        period: float = 0.2,
    ) -> None:
        self.github = github
        self.url = url
        self.secret = secret.encode()
        self.drop_rate = drop_rate
        self.repeat_rate = repeat_rate
        self.period = period
        self.stats = SenderStats()
        self.sent: list[Event] = []  # what reached the receiver, in order (tests read it)
        self._rng = random.Random(seed)
        self.since = github.clock.now()  # events after this simulated moment are delivered
        self._http = httpx.Client(timeout=10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="webhook-sender", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            self.pump()

    def pump(self) -> int:
        """Deliver the events of (last pump, now]; returns how many were delivered."""
        with self._lock:
            now = self.github.clock.now()
            events = events_between(self.github, self.since, now)
            self.since = now
            return sum(self._deliver(event) for event in events if not self._stop.is_set())

    def _deliver(self, event: Event) -> int:
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return 0
        times = 2 if self.repeat_rate and self._rng.random() < self.repeat_rate else 1
        self.stats.repeated += times - 1
        for _ in range(times):
            self.send(event)
        return 1

    def send(self, event: Event) -> int:
        """One delivery, signed; returns the HTTP status (0: no answer)."""
        body = json.dumps(event.payload).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/simulator",
            "X-GitHub-Event": event.name,
            "X-GitHub-Delivery": event.delivery,
            "X-Hub-Signature-256": sign(self.secret, body),
        }
        try:
            status = self._http.post(self.url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            status = 0
        self.stats.sent += 1
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        if not 200 <= status < 300:
            self.stats.failed += 1
        self.sent.append(event)
        return status


def events_between(github: GitHubSimulator, t0: float, t1: float) -> list[Event]:
    """Every webhook event with its moment in (t0, t1], in delivery order."""
    found: list[tuple[float, int, Event]] = []
    for timeline in github.timelines.values():
        for run in timeline.runs_until(t1):
            if run.attempts[-1].end <= t0:
                continue
            for attempt in run.attempts:
                found.extend(_attempt_events(github, run, attempt, t0, t1))
    found.sort(key=lambda item: (item[0], item[1], item[2].delivery))
    return [event for _, _, event in found]


def _attempt_events(
    github: GitHubSimulator, run: SimRun, attempt: SimAttempt, t0: float, t1: float
) -> list[tuple[float, int, Event]]:
    moments: list[tuple[str, str, float, SimJob | None]] = [
        ("workflow_run", "requested", attempt.created_at, None),
        ("workflow_run", "in_progress", attempt.first_start, None),
        ("workflow_run", "completed", attempt.end, None),
    ]
    for sim_job in attempt.jobs:
        if sim_job.conclusion != "skipped":
            moments.append(("workflow_job", "queued", sim_job.created_at, sim_job))
        if sim_job.conclusion != "skipped" and sim_job.started_at < sim_job.completed_at:
            moments.append(("workflow_job", "in_progress", sim_job.started_at, sim_job))
        moments.append(("workflow_job", "completed", sim_job.completed_at, sim_job))
    found = []
    for name, action, at, job in moments:
        if t0 < at <= t1:
            event = _event(github, run, attempt, name, action, at, job)
            found.append((at, _RANK.get((name, action), 5 if job else _LAST), event))
    return found


def _event(  # noqa: PLR0917 (one moment of one attempt, spelled out)
    github: GitHubSimulator,
    run: SimRun,
    attempt: SimAttempt,
    name: str,
    action: str,
    at: float,
    job: SimJob | None,
) -> Event:
    base = github.url
    rest = run_payload(run, attempt, at, base, workflow_name=run.workflow, path=run.workflow_path)
    envelope = _envelope()
    payload: dict[str, Any] = {
        "action": action,
        "repository": _repository(rest["repository"], envelope["repository"]),
        "sender": envelope["sender"],
    }
    if job is None:
        # The webhook's repository objects inside the run are the lighter "repo-lite".
        lite = {k: rest["repository"][k] for k in rest["repository"] if k not in _NOT_LITE}
        payload["workflow_run"] = {**rest, "repository": lite, "head_repository": lite}
        payload["workflow"] = {
            **envelope["workflow"],
            "name": run.workflow,
            "path": run.workflow_path,
            "id": rest["workflow_id"],
        }
        key = f"{run.repository}:run:{run.id}:{attempt.number}:{action}"
    else:
        # A job that queued and started at one moment: its in_progress payload (not completed).
        moment = at if action != "queued" else min(at, job.started_at - 0.5)
        payload["workflow_job"] = _skipped_steps_stamped(
            job_payload(run, attempt, job, moment, base=base, workflow_name=run.workflow)
        )
        key = f"{run.repository}:job:{job.id}:{action}"
    delivery = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
    return Event(at, name, action, payload, delivery)


def _skipped_steps_stamped(job: dict[str, Any]) -> dict[str, Any]:
    """In a completed job's webhook, skipped steps carry the job's end as both timestamps (the
    webhook schema requires them; the jobs API leaves them null)."""
    if job["status"] == "completed":
        for step in job["steps"]:
            if step["started_at"] is None:
                step["started_at"] = step["completed_at"] = job["completed_at"]
    return job


def _repository(rest: dict[str, Any], webhook: dict[str, Any]) -> dict[str, Any]:
    """The webhook's repository object (more fields than the REST one) for this repository."""
    repository = copy.deepcopy(webhook)
    repository.update({k: rest[k] for k in ("id", "name", "full_name", "html_url", "url")})
    repository["owner"] = {**repository["owner"], "login": rest["owner"]["login"]}
    return repository
