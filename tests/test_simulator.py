"""The simulator: schema-valid payloads for every endpoint, filters, pagination, ETags, the 1,000
result cap, faults and the ground truth record."""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

import httpx
import pytest

from exporter.timeutil import format_timestamp, parse_timestamp
from simulator.github import Faults, GitHubSimulator
from simulator.model import Timeline
from simulator.scenarios import SCENARIOS
from tests.helpers import ROOT, TOKEN, run_cli, simulator_cmd
from tests.schemas import ResponseValidator, validated_simulator

AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = "acme/webapp"


def test_every_endpoint_is_schema_valid(sim: GitHubSimulator) -> None:
    """Runs (list, one, attempt), jobs (attempt, latest, all) and rate_limit validate against the
    official schemas, through history with failures, skipped jobs and second attempts, and while
    runs are queued and in progress."""
    validator = sim.on_response
    assert isinstance(validator, ResponseValidator)
    with httpx.Client(base_url=sim.url, headers=AUTH) as client:
        for _ in range(6):
            runs = client.get("/repos/acme/webapp/actions/runs", params={"per_page": 100}).json()
            for run in runs["workflow_runs"]:
                rid = run["id"]
                client.get(f"/repos/acme/webapp/actions/runs/{rid}")
                for attempt in range(1, run["run_attempt"] + 1):
                    client.get(f"/repos/acme/webapp/actions/runs/{rid}/attempts/{attempt}")
                    client.get(f"/repos/acme/webapp/actions/runs/{rid}/attempts/{attempt}/jobs")
                client.get(f"/repos/acme/webapp/actions/runs/{rid}/jobs", params={"filter": "all"})
            sim.clock.advance(7 * 60)
        client.get("/rate_limit")
    assert validator.errors == []
    assert set(validator.validated) == {
        "list_runs",
        "get_run",
        "get_attempt",
        "attempt_jobs",
        "run_jobs",
        "rate_limit",
    }


def test_filters_pagination_and_etag(sim: GitHubSimulator) -> None:
    """`created` filters, Link pagination, and If-None-Match → 304 without rate-limit cost."""
    with httpx.Client(base_url=sim.url, headers=AUTH) as client:
        everything = client.get("/repos/acme/webapp/actions/runs", params={"per_page": 100}).json()
        total = everything["total_count"]
        assert total == len(everything["workflow_runs"]) >= 30
        middle = sorted(r["created_at"] for r in everything["workflow_runs"])[total // 2]
        newer = client.get(
            "/repos/acme/webapp/actions/runs", params={"created": f">={middle}"}
        ).json()
        assert all(r["created_at"] >= middle for r in newer["workflow_runs"])
        pages: list[Any] = []
        url: str | None = "/repos/acme/webapp/actions/runs?per_page=7"
        while url:
            response = client.get(url)
            pages.append(response.json()["workflow_runs"])
            url = response.links.get("next", {}).get("url")
        assert sum(len(p) for p in pages) == total
        assert len(pages) == -(-total // 7)
        first = client.get("/repos/acme/webapp/actions/runs")
        remaining = int(first.headers["x-ratelimit-remaining"])
        again = client.get(
            "/repos/acme/webapp/actions/runs", headers={"If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304
        assert int(again.headers["x-ratelimit-remaining"]) == remaining
        assert (
            client.get(
                "/repos/acme/webapp/actions/runs", headers={"Authorization": "Bearer nope"}
            ).status_code
            == 401
        )


def test_search_cap() -> None:
    """A filtered search returns at most 1,000 runs, with the true total_count."""
    sim = GitHubSimulator("seed", seed=1, token=TOKEN, start=1_900_000_000)
    sim.scenario = SCENARIOS["seed"]
    sim.clock.advance(1200 * 1800)
    sim.start()
    try:
        # The first request generates 1,200 simulated hours of runs: seconds of CPU, more than
        # httpx's default 5 s timeout on a loaded machine.
        with httpx.Client(base_url=sim.url, headers=AUTH, timeout=60) as client:
            body = client.get(
                "/repos/acme/webapp/actions/runs",
                params={"created": ">=2000-01-01", "per_page": 100, "page": 11},
            ).json()
            assert body["total_count"] > 1000
            assert body["workflow_runs"] == []
    finally:
        sim.stop()


@pytest.mark.parametrize("name", ["journey", "optimized", "regression", "seed"])
def test_scenarios_have_their_shape(name: str) -> None:
    """seed runs take 23–27 min and optimized 10–12 min on the critical path plus queues; the
    regression slides back; the journey goes from the first to the second."""
    sim = GitHubSimulator(name, seed=4, token=TOKEN)
    if name == "regression":
        sim.clock.advance(40 * sim.scenario.run_interval)  # past the change point
    try:
        attempts = [a for a in sim.truth()["attempts"] if a["conclusion"] == "success"]
        walls = [
            max(j["completed_at"] for j in a["jobs"]) - min(j["started_at"] for j in a["jobs"])
            for a in attempts
        ]
        median = sorted(walls)[len(walls) // 2] / 60
        if name == "seed":
            assert 21 <= median <= 27
        elif name == "optimized":
            assert 10 <= median <= 12
        elif name == "regression":
            assert max(walls[-5:]) / 60 > 1.2 * (sorted(walls[:20])[10] / 60)
        else:
            assert 21 <= walls[0] / 60 <= 27
            assert 10 <= sorted(walls[-20:])[10] / 60 <= 12
    finally:
        sim.server.server_close()


def test_faults_are_injected_and_logged(sim: GitHubSimulator) -> None:
    """Injected faults answer as configured and the request log records them."""
    sim.set_faults(Faults(error_rate=1.0))
    with httpx.Client(base_url=sim.url, headers=AUTH) as client:
        assert client.get("/repos/acme/webapp/actions/runs").status_code in (500, 502, 503)
        sim.set_faults(Faults(rate_limit_rate=1.0, retry_after=True))
        limited = client.get("/repos/acme/webapp/actions/runs")
        assert limited.status_code == 403
        assert limited.headers["retry-after"] == "1"
        sim.set_faults(Faults(malformed_rate=1.0))
        with pytest.raises(json.JSONDecodeError):
            client.get("/repos/acme/webapp/actions/runs").json()
    assert [r["fault"] for r in sim.requests] == ["error", "rate_limit", "malformed"]


def test_list_lag_hides_new_runs_from_the_list() -> None:
    """With a list lag, a new run exists by id at once but appears in the runs list (filtered or
    not) only at created_at + its seeded lag; ground truth still counts it once completed. Without
    the option no run lags."""
    default = Timeline(REPO, SCENARIOS["seed"], seed=6, base_time=1_800_000_000.0)
    assert all(default.run(index).list_lag == 0 for index in range(40))
    with validated_simulator("optimized", seed=2, token=TOKEN, list_lag=300.0) as sim:
        timeline = sim.timelines[REPO]
        upcoming = [timeline.run(timeline.scenario.history_runs + i) for i in range(6)]
        assert all(0 <= r.list_lag <= 300 for r in upcoming)
        assert len({r.list_lag for r in upcoming}) > 1  # the lag varies per run
        run = next(r for r in upcoming if r.list_lag >= 2)
        since = format_timestamp(run.created_at)
        with httpx.Client(base_url=sim.url, headers=AUTH) as client:

            def listed(**params: str) -> list[int]:
                body = client.get(f"/repos/{REPO}/actions/runs", params=params).json()
                return [r["id"] for r in body["workflow_runs"]]

            sim.clock.advance(run.created_at - sim.clock.now())
            assert client.get(f"/repos/{REPO}/actions/runs/{run.id}").status_code == 200
            assert run.id not in listed()
            assert listed(created=f">={since}") == []
            sim.clock.advance(run.listed_at - sim.clock.now())
            assert run.id in listed()
            assert listed(created=f">={since}") == [run.id]
        sim.clock.advance(run.attempts[-1].end - sim.clock.now())
        assert run.id in [a["run_id"] for a in sim.truth()["attempts"]]


def test_late_rerun_keeps_created_at(sim: GitHubSimulator) -> None:
    """A run created five hours ago re-run now (`POST /_sim/rerun`): same created_at, run_attempt
    2 with new timestamps, listed by a `created` search reaching back to the run, and both attempts
    in the ground truth once completed. A run whose last attempt is in progress, or an unknown
    run, is refused."""
    now = sim.clock.now()
    timeline = sim.timelines[REPO]
    old = next(
        r
        for r in reversed(timeline.runs_until(now))
        if now - r.created_at >= 5 * 3600 and len(r.attempts) == 1
    )
    with httpx.Client(base_url=sim.url, headers=AUTH) as client:

        def rerun(run_id: int) -> httpx.Response:
            params = {"repository": REPO, "run_id": str(run_id)}
            return client.post("/_sim/rerun", params=params)

        before = client.get(f"/repos/{REPO}/actions/runs/{old.id}").json()
        answer = rerun(old.id)
        assert answer.status_code == 200, answer.text
        assert answer.json()["attempt"] == before["run_attempt"] + 1 == 2
        assert rerun(old.id).status_code == 409  # attempt 2 is not completed yet
        sim.clock.advance(answer.json()["end"] + 1 - now)
        after = client.get(f"/repos/{REPO}/actions/runs/{old.id}").json()
        assert after["created_at"] == before["created_at"]
        assert after["run_attempt"] == 2
        assert after["status"] == "completed"
        assert parse_timestamp(after["run_started_at"]) == now
        jobs = client.get(f"/repos/{REPO}/actions/runs/{old.id}/attempts/2/jobs").json()
        assert min(parse_timestamp(j["started_at"]) or 0 for j in jobs["jobs"]) > now
        search = client.get(
            f"/repos/{REPO}/actions/runs", params={"created": before["created_at"], "per_page": 1}
        ).json()
        assert [(r["id"], r["run_attempt"]) for r in search["workflow_runs"]] == [(old.id, 2)]
        truth = [a for a in sim.truth()["attempts"] if a["run_id"] == old.id]
        assert [a["attempt"] for a in truth] == [1, 2]
        assert {a["created_at"] for a in truth} == {old.created_at}
        assert rerun(old.id + 1).status_code == 404


def test_simulate_serves_a_registry_too() -> None:
    """`python -m simulator simulate` prints the registry's URL beside the GitHub API's, and
    `analyze image` reads an image from it (it had no registry, so `registries:` couldn't be
    tried against it)."""
    process = subprocess.Popen(
        simulator_cmd("simulate", "--log-format", "json"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        urls = json.loads(process.stdout.readline())
        assert httpx.get(f"{urls['url']}/rate_limit", headers=AUTH).status_code in (200, 401)
        ref = f"{urls['registry_url']}/acme/webapp/web:latest"
        result = run_cli("analyze", "image", ref, "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        assert "acme/webapp/web" in result.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
