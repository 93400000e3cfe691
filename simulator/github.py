"""A GitHub Actions REST API on loopback, driven by a scenario: the endpoints the exporter calls,
with filters, pagination, ETags, rate-limit headers, App installation tokens, injected faults, a
request log and the ground truth of what it served.

Control endpoints (not part of GitHub's API) live under `/_sim/`:
`GET /_sim/truth`, `GET /_sim/requests`, `POST /_sim/requests/clear`, `POST /_sim/advance?seconds=N`,
`POST /_sim/faults` (JSON body, see `Faults`), `GET /_sim/clock`,
`POST /_sim/rerun?repository=O/R&run_id=N[&at=T]` (a re-run of a completed run, see `rerun`),
`POST /_sim/runners?forbidden=1|0` (the runners API answers 403, as to a token without the
runner read permission).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

from exporter.timeutil import format_timestamp, parse_timestamp
from simulator.artifacts import JUnitArtifact, junit_artifact
from simulator.blobs import BlobServer
from simulator.buildlogs import JobLog, backend_for, cache_entries, job_log
from simulator.clock import SimClock
from simulator.loopback import LoopbackServer
from simulator.model import SimAttempt, SimRun, Timeline
from simulator.render import artifact_payload, job_payload, run_payload
from simulator.runners import GROUPS, busy_ids, group_payload, runner_payload, runners_in
from simulator.scenarios import SCENARIOS, Scenario

SEARCH_CAP = 1000


@dataclass
class Faults:
    """Probabilities per API request (seeded, so a test run is repeatable)."""

    error_rate: float = 0.0  # 500/502/503
    rate_limit_rate: float = 0.0  # 403 secondary rate limit
    retry_after: bool | None = None  # with retry-after: always, never, or None for either
    latency_rate: float = 0.0
    latency_seconds: float = 5.0
    malformed_rate: float = 0.0  # 200 with a body that is not JSON
    truncate_rate: float = 0.0  # 200 with half the JSON body
    seed: int = 0
    path_pattern: str = ""  # only paths matching this regex (default: every API path)


class _Route:
    def __init__(
        self, method: str, pattern: str, handler: Callable[..., tuple[int, Any, dict[str, str]]]
    ) -> None:
        self.method = method
        self.pattern = re.compile("^" + pattern + "$")
        self.handler = handler


class GitHubSimulator:
    def __init__(
        self,
        scenario: str | Scenario = "seed",
        *,
        seed: int = 1,
        repositories: tuple[str, ...] = ("acme/webapp",),
        token: str = "sim-token",
        speed: float = 0.0,
        start: float | None = None,
        app: tuple[int, int, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int = 5000,
        list_lag: float | None = None,
    ) -> None:
        self.scenario = SCENARIOS[scenario] if isinstance(scenario, str) else scenario
        if list_lag is not None:
            self.scenario = replace(self.scenario, list_lag=list_lag)
        self.seed = seed
        self.token = token
        self.app = app
        self.clock = SimClock(math.floor(start if start is not None else time.time()), speed)
        base_time = self.clock.now() - self.scenario.history_runs * self.scenario.run_interval
        self.timelines = {
            repo: Timeline(repo, self.scenario, seed, base_time, index)
            for index, repo in enumerate(repositories)
        }
        self._by_index = {index: repo for index, repo in enumerate(repositories)}
        self.requests: list[dict[str, Any]] = []
        self.faults = Faults()
        self._fault_rng = random.Random(0)
        self._lock = threading.Lock()
        self._installation_tokens: dict[str, float] = {}
        self.rate_limit = rate_limit
        self._remaining: dict[str, int] = {}
        # Called with (handler name, status, payload) for every API response: the tests validate
        # each payload against GitHub's schemas here.
        self.on_response: Callable[[str, int, Any], None] | None = None
        # Artifact id → bytes served instead of the generated zip (hostile inputs in tests).
        self.artifact_overrides: dict[int, bytes] = {}
        # Hostile answers for the tests: handler name → a function that rewrites the payload after
        # it was validated; a Location for every log and artifact redirect ("loop": a redirect
        # loop on the blob server).
        self.payload_hooks: dict[str, Callable[[Any], Any]] = {}
        self.redirect_override: str | None = None
        self._artifacts: dict[tuple[str, int, int], JUnitArtifact | None] = {}
        # The runners API answers 403 (a token without the runner read permission) when set.
        self.runners_forbidden = False
        self._logs: dict[int, JobLog] = {}
        self.blobs = BlobServer(self._resolve_blob, host=host)
        self.routes = [
            _Route("GET", r"/rate_limit", self._rate_limit),
            _Route("GET", r"/repos/([^/]+/[^/]+)/actions/runs", self._list_runs),
            _Route("GET", r"/repos/([^/]+/[^/]+)/actions/runs/(\d+)", self._get_run),
            _Route(
                "GET", r"/repos/([^/]+/[^/]+)/actions/runs/(\d+)/attempts/(\d+)", self._get_attempt
            ),
            _Route(
                "GET",
                r"/repos/([^/]+/[^/]+)/actions/runs/(\d+)/attempts/(\d+)/jobs",
                self._attempt_jobs,
            ),
            _Route("GET", r"/repos/([^/]+/[^/]+)/actions/runs/(\d+)/jobs", self._run_jobs),
            _Route("GET", r"/repos/([^/]+/[^/]+)/contents/(.+)", self._contents),
            _Route(
                "GET", r"/repos/([^/]+/[^/]+)/actions/runs/(\d+)/artifacts", self._run_artifacts
            ),
            _Route(
                "GET", r"/repos/([^/]+/[^/]+)/actions/artifacts/(\d+)/zip", self._download_artifact
            ),
            _Route("GET", r"/repos/([^/]+/[^/]+)/actions/jobs/(\d+)/logs", self._job_logs),
            _Route("GET", r"/repos/([^/]+/[^/]+)/actions/cache/usage", self._cache_usage),
            _Route("GET", r"/repos/([^/]+/[^/]+)/actions/caches", self._cache_list),
            _Route("POST", r"/app/installations/(\d+)/access_tokens", self._installation_token),
            _Route("GET", r"/orgs/([^/]+)/actions/runner-groups", self._runner_groups),
            _Route(
                "GET", r"/orgs/([^/]+)/actions/runner-groups/(\d+)/runners", self._group_runners
            ),
            _Route("GET", r"/repos/([^/]+/[^/]+)/actions/runners", self._repo_runners),
        ]
        simulator = self

        class Handler(_Handler):
            sim = simulator

        self._http = LoopbackServer(Handler, host, port, "github-sim")
        self.server = self._http.server

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._http.url

    def start(self) -> GitHubSimulator:
        self.blobs.start()
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()
        self.blobs.stop()

    # -- job logs and the Actions cache -------------------------------------------------------
    def job_log(self, run: SimRun, attempt: SimAttempt, job: Any) -> JobLog:
        with self._lock:
            found = self._logs.get(job.id)
        if found is None:
            builder = next((j for j in attempt.jobs if j.spec_id == "build-docker-image"), job)
            found = job_log(self.seed, run, job, backend_for(run, builder))
            with self._lock:
                if len(self._logs) > 2000:
                    self._logs.clear()
                self._logs[job.id] = found
        return found

    def _log_truth(self, run: SimRun, attempt: SimAttempt, job: Any) -> dict[str, Any]:
        log = self.job_log(run, attempt, job)
        return {
            "job": job.name,
            "job_id": job.id,
            "builds": [asdict(b) for b in log.builds],
            "restores": log.restores,
        }

    def _job_by_id(self, repo: str, job_id: int) -> tuple[SimRun, SimAttempt, Any] | None:
        run = self._find_run(repo, job_id // 100)
        t = self.clock.now()
        if run is None:
            return None
        for attempt in run.attempts:
            for job in attempt.jobs:
                if job.id == job_id and job.completed_at <= t and attempt.created_at <= t:
                    return run, attempt, job
        return None

    def _job_logs(
        self, h: _Handler, q: dict[str, str], repo: str, job_id: str
    ) -> tuple[int, Any, dict[str, str]]:
        if self._job_by_id(repo, int(job_id)) is None:
            return 404, {"message": "Not Found"}, {}
        return 302, {}, {"Location": self._location(f"/logs/{repo}/{job_id}.txt")}

    def cache_entries(self, repo: str, t: float) -> list[dict[str, Any]]:
        timeline = self.timelines[repo]
        runs = []
        for run in timeline.runs_until(t):
            attempt = run.attempt_at(t)
            if attempt is None or attempt.end > t:
                continue
            builder = next((j for j in attempt.jobs if j.spec_id == "build-docker-image"), None)
            runs.append((run, backend_for(run, builder) if builder else "registry"))
        return cache_entries(self.seed, repo, runs, t)

    def _cache_usage(
        self, h: _Handler, q: dict[str, str], repo: str
    ) -> tuple[int, Any, dict[str, str]]:
        if repo not in self.timelines:
            return 404, {"message": "Not Found"}, {}
        entries = self.cache_entries(repo, self.clock.now())
        return (
            200,
            {
                "full_name": repo,
                "active_caches_size_in_bytes": sum(e["size_in_bytes"] for e in entries),
                "active_caches_count": len(entries),
            },
            {},
        )

    def _cache_list(
        self, h: _Handler, q: dict[str, str], repo: str
    ) -> tuple[int, Any, dict[str, str]]:
        if repo not in self.timelines:
            return 404, {"message": "Not Found"}, {}
        entries = self.cache_entries(repo, self.clock.now())
        return self._paginate(h, q, entries, len(entries), "actions_caches")

    # -- artifacts --------------------------------------------------------------------------------
    def artifact(self, run: SimRun, attempt: SimAttempt) -> JUnitArtifact | None:
        key = (run.repository, run.index, attempt.number)
        with self._lock:
            if key not in self._artifacts:
                self._artifacts[key] = junit_artifact(self.seed, run, attempt)
            return self._artifacts[key]

    def _artifacts_until(self, run: SimRun, t: float) -> list[JUnitArtifact]:
        found = []
        for attempt in run.attempts:
            artifact = self.artifact(run, attempt) if attempt.created_at <= t else None
            if artifact is not None and artifact.created_at <= t:
                found.append(artifact)
        return found

    def _artifact_by_id(self, repo: str, artifact_id: int) -> tuple[SimRun, JUnitArtifact] | None:
        run = self._find_run(repo, (artifact_id // 10) // 100)
        if run is None:
            return None
        for artifact in self._artifacts_until(run, self.clock.now()):
            if artifact.id == artifact_id:
                return run, artifact
        return None

    def _resolve_blob(self, path: str) -> bytes | None:
        logged = re.match(r"^/logs/([^/]+/[^/]+)/(\d+)\.txt$", path)
        if logged is not None:
            job = self._job_by_id(logged.group(1), int(logged.group(2)))
            return self.job_log(*job).text if job else None
        match = re.match(r"^/artifacts/([^/]+/[^/]+)/(\d+)\.zip$", path)
        if match is None:
            return None
        artifact_id = int(match.group(2))
        if artifact_id in self.artifact_overrides:
            return self.artifact_overrides[artifact_id]
        found = self._artifact_by_id(match.group(1), artifact_id)
        return found[1].zip_bytes() if found else None

    def set_faults(self, faults: Faults) -> None:
        with self._lock:
            self.faults = faults
            self._fault_rng = random.Random(faults.seed)

    # -- re-runs ----------------------------------------------------------------------------------
    def rerun(self, repository: str, run_id: int, at: float | None = None) -> SimAttempt:
        """Re-run a completed run at simulated time `at` (default: now), hours after its creation
        if need be: GitHub keeps the run's created_at, so only windows reaching back that far list
        it again. Raises KeyError for an unknown run, ValueError for one not completed at `at`."""
        run = self._find_run(repository, run_id)
        if run is None:
            raise KeyError(f"no run {run_id} in {repository}")
        return self.timelines[repository].rerun(run, self.clock.now() if at is None else at)

    # -- ground truth -----------------------------------------------------------------------------
    def truth(self, t: float | None = None) -> dict[str, Any]:
        """Every attempt completed by t (default: now), with raw timestamps, and the runs active at
        t; computed from the timeline, not from anything the exporter does."""
        t = self.clock.now() if t is None else t
        attempts: list[dict[str, Any]] = []
        active: dict[str, dict[str, int]] = {}
        for repo, timeline in self.timelines.items():
            counts = {"pending": 0, "executing": 0}
            for run in timeline.runs_until(t):
                current = run.attempt_at(t)
                if current is not None and t < current.end:
                    counts["pending" if t < current.first_start else "executing"] += 1
                for attempt in run.attempts:
                    if attempt.created_at > t or attempt.end > t:
                        continue
                    attempts.append(self._attempt_truth(repo, run, attempt))
            active[repo] = counts
        caches = {repo: self._cache_truth(repo, t) for repo in self.timelines}
        return {"now": t, "attempts": attempts, "active": active, "actions_cache": caches}

    def _attempt_truth(self, repo: str, run: SimRun, attempt: SimAttempt) -> dict[str, Any]:
        art = self.artifact(run, attempt)
        return {
            "repository": repo,
            "run_id": run.id,
            "attempt": attempt.number,
            "workflow": run.workflow,
            "branch": run.branch,
            "event": run.event,
            "conclusion": attempt.conclusion,
            "created_at": run.created_at,
            "critical_path": attempt.critical_path,
            "junit": art.suites if art else {},
            "artifact_id": art.id if art else None,
            "logs": [
                self._log_truth(run, attempt, job)
                for job in attempt.jobs
                if job.conclusion != "skipped"
            ],
            "jobs": [
                {
                    "id": job.id,
                    "name": job.name,
                    "conclusion": job.conclusion,
                    "labels": list(job.labels),
                    "created_at": job.created_at,
                    "started_at": job.started_at,
                    "completed_at": job.completed_at,
                    "steps": [asdict(s) for s in job.steps],
                }
                for job in attempt.jobs
            ],
        }

    def _cache_truth(self, repo: str, t: float) -> dict[str, int]:
        entries = self.cache_entries(repo, t)
        buildkit = sum(
            e["size_in_bytes"]
            for e in entries
            if e["key"].startswith(("buildkit-blob-", "index-buildkit-"))
        )
        total = sum(e["size_in_bytes"] for e in entries)
        return {
            "usage_bytes": total,
            "entries": len(entries),
            "buildkit_bytes": buildkit,
            "other_bytes": total - buildkit,
        }

    # -- helpers ----------------------------------------------------------------------------------
    def _find_run(self, repo: str, run_id: int) -> SimRun | None:
        timeline = self.timelines.get(repo)
        if timeline is None:
            return None
        relative = run_id - Timeline.RUN_ID_BASE
        repo_index, rest = divmod(relative, 100_000_000)
        if relative < 0 or self._by_index.get(repo_index) != repo or rest % 7:
            return None
        index = rest // 7
        if timeline.created_at(index) > self.clock.now():
            return None
        return timeline.run(index)

    def _base(self, handler: BaseHTTPRequestHandler) -> str:
        return f"http://{handler.headers.get('Host') or '127.0.0.1'}"

    # -- endpoints ----------------------------------------------------------------------------------
    def _rate_limit(self, h: _Handler, q: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        key = h.identity or "anonymous"
        remaining = self._remaining.get(key, self.rate_limit)
        reset = int(time.time() // 3600 + 1) * 3600
        core = {
            "limit": self.rate_limit,
            "remaining": remaining,
            "reset": reset,
            "used": self.rate_limit - remaining,
        }
        search = {"limit": 30, "remaining": 30, "reset": reset, "used": 0}
        return 200, {"resources": {"core": core, "search": search}, "rate": core}, {}

    def _list_runs(
        self, h: _Handler, q: dict[str, str], repo: str
    ) -> tuple[int, Any, dict[str, str]]:
        timeline = self.timelines.get(repo)
        if timeline is None:
            return 404, {"message": "Not Found"}, {}
        t = self.clock.now()
        runs = [r for r in timeline.runs_until(t) if r.listed_at <= t]
        created = q.get("created")
        if created:
            low, high = _created_range(created)
            runs = [r for r in runs if low <= r.created_at <= high]
        for key in ("branch", "event"):
            if key in q:
                attr = "branch" if key == "branch" else "event"
                runs = [r for r in runs if getattr(r, attr) == q[key]]
        payloads = []
        for run in sorted(runs, key=lambda r: r.created_at, reverse=True):
            attempt = run.attempt_at(t)
            assert attempt is not None
            payloads.append(
                run_payload(
                    run,
                    attempt,
                    t,
                    self._base(h),
                    workflow_name=run.workflow,
                    path=run.workflow_path,
                )
            )
        if "status" in q:
            payloads = [p for p in payloads if q["status"] in (p["status"], p["conclusion"])]
        total = len(payloads)
        filtered = any(
            k in q for k in ("created", "status", "branch", "event", "actor", "head_sha")
        )
        if filtered:
            payloads = payloads[:SEARCH_CAP]
        return self._paginate(h, q, payloads, total, "workflow_runs")

    def _paginate(
        self, h: _Handler, q: dict[str, str], items: list[Any], total: int, key: str
    ) -> tuple[int, Any, dict[str, str]]:
        per_page = max(1, min(100, int(q.get("per_page", "30") or 30)))
        page = max(1, int(q.get("page", "1") or 1))
        pages = max(1, math.ceil(len(items) / per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        headers: dict[str, str] = {}
        if pages > 1:
            path = urlsplit(h.path).path
            links = []

            def link(n: int, rel: str) -> str:
                query = {**q, "per_page": str(per_page), "page": str(n)}
                return f'<{self._base(h)}{path}?{urlencode(query)}>; rel="{rel}"'

            if page < pages:
                links += [link(page + 1, "next"), link(pages, "last")]
            if page > 1:
                links += [link(1, "first"), link(page - 1, "prev")]
            headers["Link"] = ", ".join(links)
        return 200, {"total_count": total, key: chunk}, headers

    def _get_run(
        self, h: _Handler, q: dict[str, str], repo: str, run_id: str
    ) -> tuple[int, Any, dict[str, str]]:
        run = self._find_run(repo, int(run_id))
        t = self.clock.now()
        attempt = run.attempt_at(t) if run else None
        if run is None or attempt is None:
            return 404, {"message": "Not Found"}, {}
        return (
            200,
            run_payload(
                run,
                attempt,
                t,
                self._base(h),
                workflow_name=run.workflow,
                path=run.workflow_path,
            ),
            {},
        )

    def _get_attempt(
        self, h: _Handler, q: dict[str, str], repo: str, run_id: str, number: str
    ) -> tuple[int, Any, dict[str, str]]:
        run = self._find_run(repo, int(run_id))
        t = self.clock.now()
        attempts = [
            a
            for a in (run.attempts if run else [])
            if a.number == int(number) and a.created_at <= t
        ]
        if run is None or not attempts:
            return 404, {"message": "Not Found"}, {}
        return (
            200,
            run_payload(
                run,
                attempts[0],
                t,
                self._base(h),
                workflow_name=run.workflow,
                path=run.workflow_path,
            ),
            {},
        )

    def _jobs_of(
        self, h: _Handler, q: dict[str, str], run: SimRun, numbers: list[int]
    ) -> tuple[int, Any, dict[str, str]]:
        t = self.clock.now()
        items = []
        for attempt in run.attempts:
            if attempt.number not in numbers or attempt.created_at > t:
                continue
            for job in attempt.jobs:
                if job.created_at <= t:
                    items.append(
                        job_payload(
                            run, attempt, job, t, base=self._base(h), workflow_name=run.workflow
                        )
                    )
        return self._paginate(h, q, items, len(items), "jobs")

    def _attempt_jobs(
        self, h: _Handler, q: dict[str, str], repo: str, run_id: str, number: str
    ) -> tuple[int, Any, dict[str, str]]:
        run = self._find_run(repo, int(run_id))
        t = self.clock.now()
        if run is None or not any(
            a.number == int(number) and a.created_at <= t for a in run.attempts
        ):
            return 404, {"message": "Not Found"}, {}
        return self._jobs_of(h, q, run, [int(number)])

    def _run_jobs(
        self, h: _Handler, q: dict[str, str], repo: str, run_id: str
    ) -> tuple[int, Any, dict[str, str]]:
        run = self._find_run(repo, int(run_id))
        t = self.clock.now()
        current = run.attempt_at(t) if run else None
        if run is None or current is None:
            return 404, {"message": "Not Found"}, {}
        numbers = [a.number for a in run.attempts] if q.get("filter") == "all" else [current.number]
        return self._jobs_of(h, q, run, numbers)

    def _contents(
        self, h: _Handler, q: dict[str, str], repo: str, path: str
    ) -> tuple[int, Any, dict[str, str]]:
        timeline = self.timelines.get(repo)
        ref = q.get("ref", "")
        if timeline is None or not path.startswith(".github/workflows/"):
            return 404, {"message": "Not Found"}, {}
        run = next(
            (
                r
                for r in timeline.runs_until(self.clock.now())
                if r.head_sha == ref and r.workflow_path == path
            ),
            None,
        )
        if run is None:
            return 404, {"message": "No commit found for the ref " + ref}, {}
        content = run.workflow_text.encode()
        api = f"{self._base(h)}/repos/{repo}/contents/{path}?ref={ref}"
        return (
            200,
            {
                "type": "file",
                "encoding": "base64",
                "size": len(content),
                "name": path.rsplit("/", 1)[-1],
                "path": path,
                "content": base64.encodebytes(content).decode(),
                "sha": run.blob_sha,
                "url": api,
                "git_url": None,
                "html_url": None,
                "download_url": None,
                "_links": {"self": api, "git": None, "html": None},
            },
            {},
        )

    def _run_artifacts(
        self, h: _Handler, q: dict[str, str], repo: str, run_id: str
    ) -> tuple[int, Any, dict[str, str]]:
        run = self._find_run(repo, int(run_id))
        if run is None:
            return 404, {"message": "Not Found"}, {}
        items = [
            artifact_payload(
                repo,
                run,
                a.id,
                a.name,
                size=len(self.artifact_overrides.get(a.id, a.zip_bytes())),
                created_at=a.created_at,
                base=self._base(h),
            )
            for a in self._artifacts_until(run, self.clock.now())
        ]
        return self._paginate(h, q, items, len(items), "artifacts")

    def _download_artifact(
        self, h: _Handler, q: dict[str, str], repo: str, artifact_id: str
    ) -> tuple[int, Any, dict[str, str]]:
        if self._artifact_by_id(repo, int(artifact_id)) is None:
            return 404, {"message": "Not Found"}, {}
        return 302, {}, {"Location": self._location(f"/artifacts/{repo}/{artifact_id}.zip")}

    def _location(self, path: str) -> str:
        if self.redirect_override == "loop":
            return f"{self.blobs.url}/loop"
        return self.redirect_override or self.blobs.signed(path)

    def _installation_token(
        self, h: _Handler, q: dict[str, str], installation: str
    ) -> tuple[int, Any, dict[str, str]]:
        if self.app is None or int(installation) != self.app[1]:
            return 404, {"message": "Not Found"}, {}
        app_id, _, public_key = self.app
        auth = h.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        try:
            claims = jwt.decode(
                token, public_key, algorithms=["RS256"], options={"require": ["exp", "iat", "iss"]}
            )
        except jwt.PyJWTError as exc:
            return (
                401,
                {"message": f"A JSON web token could not be decoded: {type(exc).__name__}"},
                {},
            )
        if str(claims.get("iss")) != str(app_id) or claims["exp"] - claims["iat"] > 660:
            return 401, {"message": "'Issuer' claim or expiry is invalid"}, {}
        minted = "ghs_" + secrets.token_hex(18)
        expires = time.time() + 3600
        with self._lock:
            self._installation_tokens[minted] = expires
        return (
            201,
            {
                "token": minted,
                "expires_at": format_timestamp(expires),
                "permissions": {"actions": "read", "contents": "read"},
                "repository_selection": "all",
            },
            {},
        )

    # -- self-hosted runners --------------------------------------------------------------------------
    def _runners_answer(
        self, h: _Handler, q: dict[str, str], group_id: int | None
    ) -> tuple[int, Any, dict[str, str]]:
        if self.runners_forbidden:
            return 403, {"message": "Resource not accessible by personal access token"}, {}
        busy = busy_ids(self.timelines.values(), self.clock.now())
        items = [runner_payload(r, r.id in busy) for r in runners_in(group_id)]
        return self._paginate(h, q, items, len(items), "runners")

    def _runner_groups(
        self, h: _Handler, q: dict[str, str], org: str
    ) -> tuple[int, Any, dict[str, str]]:
        if self.runners_forbidden:
            return 403, {"message": "Resource not accessible by personal access token"}, {}
        items = [group_payload(g, self._base(h), org) for g in GROUPS]
        return self._paginate(h, q, items, len(items), "runner_groups")

    def _group_runners(
        self, h: _Handler, q: dict[str, str], org: str, group_id: str
    ) -> tuple[int, Any, dict[str, str]]:
        if not any(g.id == int(group_id) for g in GROUPS):
            return 404, {"message": "Not Found"}, {}
        return self._runners_answer(h, q, int(group_id))

    def _repo_runners(
        self, h: _Handler, q: dict[str, str], repo: str
    ) -> tuple[int, Any, dict[str, str]]:
        if repo not in self.timelines:
            return 404, {"message": "Not Found"}, {}
        return self._runners_answer(h, q, None)

    # -- request plumbing ---------------------------------------------------------------------------
    def authorized(self, header: str) -> str | None:
        """The identity behind an Authorization header, or None."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not value:
            return None
        value = value.strip()
        if value == self.token:
            return "pat"
        with self._lock:
            expires = self._installation_tokens.get(value)
        if expires is not None and expires > time.time():
            return "installation"
        return None

    def draw_fault(self, path: str) -> str | None:
        with self._lock:
            f = self.faults
            if f.path_pattern and not re.search(f.path_pattern, path):
                return None
            roll = self._fault_rng.random
            if f.latency_rate and roll() < f.latency_rate:
                return "latency"
            for name, rate in (
                ("error", f.error_rate),
                ("rate_limit", f.rate_limit_rate),
                ("malformed", f.malformed_rate),
                ("truncate", f.truncate_rate),
            ):
                if rate and roll() < rate:
                    return name
            return None

    def fault_retry_after(self) -> bool:
        with self._lock:
            if self.faults.retry_after is None:
                return self._fault_rng.random() < 0.5
            return self.faults.retry_after

    def spend(self, identity: str | None) -> tuple[int, int]:
        key = identity or "anonymous"
        with self._lock:
            remaining = max(0, self._remaining.get(key, self.rate_limit) - 1)
            self._remaining[key] = remaining
        return remaining, int(time.time() // 3600 + 1) * 3600

    def peek_remaining(self, identity: str | None) -> int:
        with self._lock:
            return self._remaining.get(identity or "anonymous", self.rate_limit)

    def log_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def control(self, method: str, path: str, q: dict[str, str], body: bytes) -> tuple[int, Any]:
        handlers: dict[tuple[str, str], Callable[[dict[str, str], bytes], tuple[int, Any]]] = {
            ("GET", "/_sim/truth"): lambda q, _: (
                200,
                self.truth(float(q["t"]) if "t" in q else None),
            ),
            ("GET", "/_sim/requests"): lambda _q, _b: (200, self._requests_copy()),
            ("POST", "/_sim/requests/clear"): lambda _q, _b: self._clear_requests(),
            ("POST", "/_sim/advance"): lambda q, _: (
                200,
                {"now": self.clock.advance(float(q.get("seconds", "0")))},
            ),
            ("GET", "/_sim/clock"): lambda _q, _b: (
                200,
                {"now": self.clock.now(), "speed": self.clock.speed},
            ),
            ("POST", "/_sim/rerun"): lambda q, _: self._control_rerun(q),
            ("POST", "/_sim/faults"): lambda _q, body: self._control_faults(body),
            ("POST", "/_sim/runners"): lambda q, _: self._control_runners(q),
        }
        handler = handlers.get((method, path))
        return handler(q, body) if handler else (404, {"message": "unknown control endpoint"})

    def _requests_copy(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.requests)

    def _clear_requests(self) -> tuple[int, Any]:
        with self._lock:
            self.requests.clear()
        return 200, {"cleared": True}

    def _control_faults(self, body: bytes) -> tuple[int, Any]:
        data = json.loads(body or b"{}")
        known = {f.name for f in fields(Faults)}
        self.set_faults(Faults(**{k: v for k, v in data.items() if k in known}))
        return 200, asdict(self.faults)

    def _control_runners(self, q: dict[str, str]) -> tuple[int, Any]:
        self.runners_forbidden = q.get("forbidden") in ("1", "true")
        return 200, {"forbidden": self.runners_forbidden}

    def _control_rerun(self, q: dict[str, str]) -> tuple[int, Any]:
        try:
            run_id, at = int(q.get("run_id", "")), float(q["at"]) if "at" in q else None
        except ValueError:
            return 400, {"message": "run_id (an integer) and at (seconds) are expected"}
        try:
            attempt = self.rerun(q.get("repository", ""), run_id, at)
        except KeyError as exc:
            return 404, {"message": str(exc.args[0])}
        except ValueError as exc:
            return 409, {"message": str(exc)}
        return 200, {
            "attempt": attempt.number,
            "created_at": attempt.created_at,
            "end": attempt.end,
        }


def _created_range(expression: str) -> tuple[float, float]:
    """GitHub's search date syntax: `>=T`, `>T`, `<=T`, `<T`, `A..B` (with `*`), or a day."""

    def point(text: str, end: bool) -> float:
        if text == "*":
            return math.inf if end else -math.inf
        value = parse_timestamp(text if "T" in text else text + "T00:00:00Z")
        if value is None:
            raise ValueError(text)
        if "T" not in text and end:
            value += 86399
        return value

    expression = expression.strip()
    for op in (">=", "<=", ">", "<"):
        if expression.startswith(op):
            value = point(expression[len(op) :], op.startswith("<"))
            return {
                ">=": (value, math.inf),
                ">": (value + 1, math.inf),
                "<=": (-math.inf, value),
                "<": (-math.inf, value - 1),
            }[op]
    if ".." in expression:
        a, b = expression.split("..", 1)
        return point(a, False), point(b, True)
    return point(expression, False), point(expression, True)


class _Handler(BaseHTTPRequestHandler):
    sim: GitHubSimulator
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle + delayed ACK cost 40 ms each.
    disable_nagle_algorithm = True
    identity: str | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """The request log is kept in memory for the tests, not printed."""

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        sim = self.sim
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if split.path.startswith("/_sim/"):
            status, answer = sim.control(method, split.path, query, body)
            self._send(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})
            return
        entry: dict[str, Any] = {
            "method": method,
            "path": split.path,
            "query": split.query,
            "t": time.time(),
            "conditional": "If-None-Match" in self.headers,
        }
        is_token_request = split.path.startswith("/app/")
        self.identity = (
            None if is_token_request else sim.authorized(self.headers.get("Authorization", ""))
        )
        entry["authorized"] = bool(self.identity) or is_token_request
        fault = sim.draw_fault(split.path)
        if fault == "latency":
            time.sleep(sim.faults.latency_seconds)
            fault = None
        status, payload, extra = self._answer(method, split.path, query, fault, is_token_request)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
            **extra,
        }
        status, raw = self._body(status, payload, fault, headers)
        entry["status"] = status
        entry["fault"] = fault
        sim.log_request(entry)
        self._send(status, raw, headers)

    def _answer(
        self, method: str, path: str, query: dict[str, str], fault: str | None, token_request: bool
    ) -> tuple[int, Any, dict[str, str]]:
        """The route's answer, or the injected fault, or 401/404."""
        sim = self.sim
        route_match = next(
            (
                (route, found)
                for route in sim.routes
                if (found := route.pattern.match(path)) and route.method == method
            ),
            None,
        )
        if route_match is None:
            return 404, {"message": "Not Found"}, {}
        if not token_request and self.identity is None:
            return 401, {"message": "Bad credentials"}, {}
        if fault == "error":
            return random.choice([500, 502, 503]), {"message": "Server Error"}, {}
        if fault == "rate_limit":
            message = (
                "You have exceeded a secondary rate limit. Please wait a few minutes before "
                "you try again."
            )
            return (
                403,
                {"message": message},
                {"retry-after": "1"} if sim.fault_retry_after() else {},
            )
        route, found = route_match
        try:
            status, payload, extra = route.handler(self, query, *found.groups())
        except (ValueError, KeyError) as exc:
            return 422, {"message": f"Validation Failed: {exc}"}, {}
        name = route.handler.__name__.lstrip("_")
        if sim.on_response is not None:
            sim.on_response(name, status, payload)
        if name in sim.payload_hooks and status == 200:
            payload = sim.payload_hooks[name](payload)
        return status, payload, extra

    def _body(
        self, status: int, payload: Any, fault: str | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """The serialised body with its ETag (a 304 when it matches), rate-limit headers, and the
        malformed or truncated fault applied."""
        sim = self.sim
        raw = json.dumps(payload, separators=(",", ":")).encode()
        if status == 200:
            etag = 'W/"' + hashlib.sha256(raw).hexdigest()[:40] + '"'
            headers["ETag"] = etag
            if self.headers.get("If-None-Match") == etag:
                status, raw = 304, b""
        if self.identity is not None:
            remaining = (
                sim.peek_remaining(self.identity) if status == 304 else sim.spend(self.identity)[0]
            )
            headers.update(
                {
                    "x-ratelimit-limit": str(sim.rate_limit),
                    "x-ratelimit-remaining": str(remaining),
                    "x-ratelimit-used": str(sim.rate_limit - remaining),
                    "x-ratelimit-reset": str(int(time.time() // 3600 + 1) * 3600),
                    "x-ratelimit-resource": "core",
                }
            )
        if status == 200 and fault == "malformed":
            raw = b"<html><body>Unicorn! This page is taking too long to load.</body></html>"
        elif status == 200 and fault == "truncate":
            raw = raw[: len(raw) // 2]
        return status, raw
