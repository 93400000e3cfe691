"""Hostile upstreams: each failure an adversarial run found, reproduced against the simulator (over
HTTP, with its fault hooks), a trickling socket server, or a mock transport for a registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.sources.errors import TooLarge, TransportError
from exporter.sources.github.auth import TokenAuth
from exporter.sources.github.client import GitHubClient
from exporter.sources.http import RetryPolicy, make_client
from exporter.sources.registry.client import MAX_MANIFEST_BYTES, MAX_PLATFORMS, RegistryClient
from exporter.telemetry import Telemetry
from simulator.github import GitHubSimulator
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
