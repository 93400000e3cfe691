"""Hostile upstreams: each failure an adversarial run found, reproduced against the simulator (over
HTTP, with its fault hooks), a trickling socket server, or a mock transport for a registry."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.app import policy_for
from exporter.config import validate_config
from exporter.observations import Task, Unit, task_done_unit
from exporter.sources.errors import TooLarge, TransportError
from exporter.sources.github.auth import TokenAuth
from exporter.sources.github.client import GitHubClient
from exporter.sources.github.poller import MAX_TRIES, TASK_SECONDS, RepositoryPoller
from exporter.sources.http import RetryPolicy, make_client
from exporter.sources.registry.client import MAX_MANIFEST_BYTES, MAX_PLATFORMS, RegistryClient
from exporter.store import Store
from exporter.telemetry import Telemetry
from simulator.github import Faults, GitHubSimulator
from tests.helpers import Exposition, assert_matches_truth, run_cli, write_config
from tests.hostile import Trickle, trickling_server

LOGS = {"logs": {"jobs": ["build*"]}, "junit": {"artifacts": ["junit*"]}}


def _once(config: Path, env: dict[str, str]) -> tuple[Exposition, str]:
    result = run_cli("once", "--config", str(config), env=env)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return Exposition.parse(result.stdout), result.stderr


def _reasons(exp: Exposition) -> dict[str, float]:
    return {k[0]: v for k, v in exp.by("ci_pipeline_exporter_poll_errors_total", "reason").items()}


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1:1/refused", "file:///etc/passwd", "ftp://127.0.0.1/x", "loop"],
)
def test_an_unfetchable_log_or_artifact_never_holds_back_runs(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str], location: str
) -> None:
    """Every job log and artifact redirects somewhere unfetchable (a refused port, file://,
    ftp://, a redirect loop): every run, job and step is recorded on the first poll (= truth),
    the skips are counted with their reason, and each log is tried on a bounded number of polls
    (then given up, counted), each try following a bounded number of redirects."""
    sim.redirect_override = location
    config = write_config(
        tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=LOGS, max_retries=0
    )
    exp, _ = _once(config, env)
    assert_matches_truth(exp, sim.truth())
    assert exp.total("ci_pipeline_exporter_up") == 1
    reasons = _reasons(exp)
    # A refused connection is transient: the whole attempt's report is tried again later. A
    # refused redirect is permanent: that one artifact is skipped at once.
    permanent = not location.startswith("http:")
    kind = "redirect_refused" if permanent else "transport"
    artifact_reason = f"artifact_{kind}" if permanent else f"junit_{kind}"
    assert reasons.get(f"log_{kind}", 0) > 0
    assert reasons.get(artifact_reason, 0) > 0
    logs = int(reasons[f"log_{kind}"])
    given_up = reasons.get("log_given_up", 0)
    for _ in range(3):
        exp, _ = _once(config, env)
        given_up += _reasons(exp).get("log_given_up", 0)
        assert _reasons(exp).get(f"log_{kind}", 0) <= logs
    assert_matches_truth(exp, sim.truth())
    assert given_up == (0 if permanent else logs)
    assert _reasons(exp).get(f"log_{kind}", 0) == 0  # nothing left to try
    assert _reasons(exp).get(artifact_reason, 0) == 0
    assert len(sim.blobs.requests) <= logs * 3 * 6


def test_a_far_future_timestamp_is_malformed_and_poisons_nothing(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """A job that says it completed on 9999-12-31 makes its attempt malformed (counted, given up
    after a few polls); the latest-value gauges keep real values."""

    def poison(payload: Any) -> Any:
        jobs = payload.get("jobs", [])
        if jobs and jobs[0]["run_id"] == poisoned:
            jobs[0]["completed_at"] = "9999-12-31T23:59:59Z"
        return payload

    timeline = sim.timelines["acme/webapp"]
    poisoned = timeline.run(len(timeline.runs_until(sim.clock.now())) - 2).id
    sim.payload_hooks["attempt_jobs"] = poison
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", clock_skew="5m")
    reasons: dict[str, float] = {}
    for _ in range(4):
        exp, _ = _once(config, env)
        for reason, count in _reasons(exp).items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons == {"malformed": 3, "attempt_given_up": 1}
    last = exp.select("cicd_pipeline_run_last_duration_seconds")
    assert last
    assert max(last.values()) < 3 * 3600
    truth = sim.truth()
    truth["attempts"] = [a for a in truth["attempts"] if a["run_id"] != poisoned]
    assert_matches_truth(exp, truth)


def test_absurd_created_at_and_run_attempt_are_skipped_and_never_counted_twice(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """A run created on 0001-01-01 and a run claiming attempt 1,000,000 are counted malformed on
    every poll and never observed; no other run is counted twice over repeated `once`."""

    def mangle(payload: Any) -> Any:
        runs = payload.get("workflow_runs", [])
        if len(runs) >= 2:
            runs[0]["created_at"] = "0001-01-01T00:00:00Z"
            runs[1]["run_attempt"] = 1_000_000
            runs.append("not an object")
        return payload

    sim.payload_hooks["list_runs"] = mangle
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db")
    observed = []
    for _ in range(3):
        exp, _ = _once(config, env)
        observed.append(exp.total("ci_pipeline_exporter_runs_observed_total"))
        # Each poll: the three bad items, counted; nothing else.
        assert _reasons(exp) == {"malformed": 3}
    assert observed[0] == observed[1] == observed[2] > 0
    attempts = [r for r in sim.requests if "/attempts/" in r["path"]]
    assert len(attempts) < 100


def test_the_timeout_bounds_the_whole_request() -> None:
    """An upstream that sends its body (or its headers) one byte at a time: the request ends
    after `timeout` in all, as a transport error, long before the answer would be complete."""
    for slow_headers in (False, True):
        trickle = Trickle(body=b"x" * 200, every=0.05, slow_headers=slow_headers)
        with trickling_server(trickle) as server, make_client(timeout=1.0) as http:
            client = GitHubClient(
                server.url,
                TokenAuth("ghp_" + "y" * 36),
                http=http,
                timeout=1.0,
                retry=RetryPolicy(max_retries=0),
            )
            with pytest.raises(TransportError):
                client.get_json("/repos/a/b/actions/runs")
        # 1 s of a 10+ s answer: far from all of it was sent.
        assert trickle.sent
        assert max(trickle.sent) < 100


def _registry(handler: Any) -> tuple[RegistryClient, list[str]]:
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        response: httpx.Response = handler(request)
        return response

    http = httpx.Client(transport=httpx.MockTransport(record))
    client = RegistryClient(
        "https://registry.example",
        http,
        telemetry=Telemetry(CollectorRegistry()),
        retry=RetryPolicy(max_retries=0),
    )
    return client, seen


def test_a_huge_manifest_is_too_large() -> None:
    """A manifest over the distribution spec's 4 MiB is refused while streaming (too_large)."""
    big = json.dumps({"layers": [{"digest": "sha256:" + "a" * 64, "size": 1}] * 100_000}).encode()
    assert len(big) > MAX_MANIFEST_BYTES
    client, _ = _registry(lambda r: httpx.Response(200, content=big))
    with pytest.raises(TooLarge):
        client.platforms("app", "latest")


def test_a_thousand_platform_index_reads_only_the_first_platforms() -> None:
    """An index of 1,000 platforms costs 1 + MAX_PLATFORMS requests, and the cut is reported."""
    index: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "digest": f"sha256:{i:064x}",
                "size": 1,
                "platform": {"os": "linux", "architecture": f"arch{i}"},
            }
            for i in range(1000)
        ],
    }
    image: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"digest": "sha256:" + "c" * 64, "size": 10},
        "layers": [{"digest": "sha256:" + "d" * 64, "size": 100}],
    }

    def handler(request: httpx.Request) -> httpx.Response:
        body = index if request.url.path.endswith("/latest") else image
        return httpx.Response(200, json=body, headers={"content-type": body["mediaType"]})

    client, seen = _registry(handler)
    found = client.platforms("app", "latest")
    assert len(found.images) == MAX_PLATFORMS
    assert found.cut == 1000 - MAX_PLATFORMS
    assert len(seen) == 1 + MAX_PLATFORMS


# -- listings that lie -----------------------------------------------------------------------------
def test_runs_listed_outside_their_window_are_malformed_and_never_observed(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """A listing asked for runs created since T that answers a run created years before T, or
    one without created_at, is malformed: counted on every poll and never observed (else it
    would be counted again once its id is pruned); every other run equals truth."""
    mangled: set[int] = set()

    def mangle(payload: Any) -> Any:
        runs = payload.get("workflow_runs", [])
        if len(runs) >= 2:
            runs[0]["created_at"] = "2020-01-01T00:00:00Z"
            runs[1]["created_at"] = None
            mangled.update((runs[0]["id"], runs[1]["id"]))
        return payload

    sim.payload_hooks["list_runs"] = mangle
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db")
    for _ in range(2):
        exp, _ = _once(config, env)
        assert _reasons(exp) == {"malformed": 2}
    truth = sim.truth()
    truth["attempts"] = [a for a in truth["attempts"] if a["run_id"] not in mangled]
    assert len(mangled) == 2
    assert_matches_truth(exp, truth)
    assert exp.total("ci_pipeline_exporter_runs_observed_total") == len(truth["attempts"])


def test_a_listing_that_always_claims_the_search_cap_ends(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """Every listing answers total_count 1000 (GitHub's search cap): windows are split down to a
    minute, not a second (and never recursively without end); the poll completes with every run,
    the cut is counted once, and the requests stay bounded."""

    def always_full(payload: Any) -> Any:
        payload["total_count"] = 1000
        return payload

    sim.payload_hooks["list_runs"] = always_full
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", lookback="2h")
    exp, _ = _once(config, env)
    assert exp.total("ci_pipeline_exporter_up") == 1
    assert _reasons(exp) == {"search_capped": 1}
    listings = [r for r in sim.requests if r["path"].endswith("/actions/runs")]
    # The window starts on the hour, at most 3 h back: at most 2 × 180 one-minute windows.
    assert 1 < len(listings) <= 2 * 180


def test_a_jobs_page_over_its_cap_is_given_up_not_retried_forever(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """An attempt whose jobs page is over the 32 MiB cap is tried on a few polls, then given up
    (counted); the poll never fails for it, and the runs after it are recorded."""
    timeline = sim.timelines["acme/webapp"]
    poisoned = timeline.run(len(timeline.runs_until(sim.clock.now())) - 2).id

    def pad(payload: Any) -> Any:
        jobs = payload.get("jobs", [])
        if jobs and jobs[0]["run_id"] == poisoned:
            payload["padding"] = "x" * (33 << 20)
        return payload

    sim.payload_hooks["attempt_jobs"] = pad
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db")
    reasons: dict[str, float] = {}
    for _ in range(4):
        exp, _ = _once(config, env)
        assert exp.total("ci_pipeline_exporter_up") == 1
        for reason, count in _reasons(exp).items():
            reasons[reason] = reasons.get(reason, 0) + count
    assert reasons == {"too_large": 3, "attempt_given_up": 1}
    truth = sim.truth()
    truth["attempts"] = [a for a in truth["attempts"] if a["run_id"] != poisoned]
    assert_matches_truth(exp, truth)


def test_a_skip_is_counted_once_when_its_task_is_tried_again(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """Each attempt lists an expired artifact beside its report, whose download fails (5xx) on
    the first poll: the expired one is logged on both tries but counted once, with the unit that
    finally records the report."""

    def with_expired(payload: Any) -> Any:
        artifacts = payload.get("artifacts", [])
        if artifacts:
            ghost = {**artifacts[0], "id": artifacts[0]["id"] + 10**9, "expired": True}
            artifacts.insert(0, ghost)  # read (and skipped) before the download that fails
        return payload

    sim.payload_hooks["run_artifacts"] = with_expired
    sim.set_faults(Faults(error_rate=1.0, path_pattern=r"/artifacts/\d+/zip$"))
    extra = {"junit": {"artifacts": ["junit*"]}}
    config = write_config(
        tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=extra, max_retries=0
    )
    first, first_log = _once(config, env)
    reports = sum(1 for a in sim.truth()["attempts"] if a["junit"])
    assert _reasons(first).get("junit_http_5xx") == reports
    logged = first_log.count("artifact expired before it was read")
    assert logged > 0
    assert "artifact_expired" not in _reasons(first)  # its task failed: nothing counted yet
    sim.set_faults(Faults())
    second, second_log = _once(config, env)
    assert second_log.count("artifact expired before it was read") == logged
    assert _reasons(second) == {"artifact_expired": logged}


# -- enrichment tasks under fault injection --------------------------------------------------------
class _Enricher:
    """A log enricher whose upstream is scripted: each run advances the clock by `cost` seconds
    and raises `fails[key]` when set."""

    kind = "log"

    def __init__(self, clock: list[float], cost: float, fails: dict[str, Exception]) -> None:
        self.clock, self.cost, self.fails = clock, cost, fails
        self.runs: list[str] = []

    def run(self, task: Task) -> Unit:
        self.runs.append(task.key)
        self.clock[0] += self.cost
        if task.key in self.fails:
            raise self.fails[task.key]
        return task_done_unit(task)

    def count_skips(self) -> None:
        pass


def _poller(enricher: _Enricher, tasks: int) -> tuple[RepositoryPoller, Store, Telemetry]:
    config = validate_config(
        {"github": {"api_url": "https://api.example", "repositories": [{"name": "acme/a"}]}}
    )
    assert config.github is not None
    repo = config.github.repositories[0]
    policy = policy_for(config, repo)
    telemetry = Telemetry(CollectorRegistry())
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    client = GitHubClient(
        "https://api.example", TokenAuth("ghp_" + "z" * 36), http=http, telemetry=telemetry
    )
    store = Store(":memory:")
    queued = tuple(Task("log", f"acme/a/{i}", policy.source, {}) for i in range(tasks))
    store.commit(Unit(policy.source, keys=(("attempt", "acme/a/1/1"),), enqueue=queued))
    poller = RepositoryPoller(
        repo,
        config.github,
        client,
        store,
        policy,
        clock=lambda: enricher.clock[0],
        enrichers=[enricher],
    )
    return poller, store, telemetry


def test_an_unexpected_error_in_a_task_is_a_counted_failed_try() -> None:
    """An enrichment that raises something no upstream error class names (a bug a payload
    provokes) fails only its own task: counted as `log_internal`, tried MAX_TRIES times across
    polls, then given up; the other tasks are done on the first poll."""
    enricher = _Enricher([0.0], 0.0, {"acme/a/1": RuntimeError("zlib went sideways")})
    poller, store, telemetry = _poller(enricher, 3)
    done = [poller.run_tasks() for _ in range(MAX_TRIES)]
    assert done == [2, 0, 0]
    assert store.pending(poller.source) == []

    def errors(reason: str) -> float | None:
        labels = {"source": poller.source, "reason": reason}
        return telemetry.registry.get_sample_value("ci_pipeline_exporter_poll_errors_total", labels)

    assert errors("log_internal") == MAX_TRIES
    assert errors("log_given_up") == 1


def test_enrichments_stop_at_the_poll_time_budget() -> None:
    """Slow downloads (50 s each) end a poll's enrichments once TASK_SECONDS have passed; the
    rest wait for the next poll, and nothing is lost."""
    enricher = _Enricher([0.0], 50.0, {})
    poller, store, _ = _poller(enricher, 10)
    first = poller.run_tasks()
    assert 0 < first < 10
    assert first == math.ceil(TASK_SECONDS / 50.0)
    while store.pending(poller.source):
        assert poller.run_tasks() > 0
    assert sorted(enricher.runs) == sorted(f"acme/a/{i}" for i in range(10))
