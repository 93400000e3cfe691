"""Exactly once across SIGKILL (between polls and during a poll), restarts and re-runs."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from simulator.github import Faults, GitHubSimulator
from tests.helpers import (
    Exposition,
    assert_matches_truth,
    expected_from_truth,
    free_port,
    run_cli,
    scrape,
    serve,
    wait_for,
)


def _converged(url: str, sim: GitHubSimulator) -> bool:
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    observed = scrape(url).total("ci_pipeline_exporter_runs_observed_total")
    return observed == len(truth["attempts"])


def test_sigkill_between_and_during_polls(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """Killed with SIGKILL between polls and in the middle of one, restarted: after catching up,
    every count equals ground truth, including runs that completed while it was down."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "exporter.log"
    with serve(config_file, port, env, log) as process:
        wait_for(lambda: _converged(url, sim), 30, message="first catch-up")
        process.send_signal(signal.SIGKILL)
        process.wait()
    # Down for three simulated hours: runs start and complete meanwhile.
    sim.clock.advance(3 * 3600)
    with serve(config_file, port, env, log) as process:
        wait_for(lambda: _converged(url, sim), 30, message="catch-up after SIGKILL between polls")
        # Make the next poll slow, let it start observing, and kill it mid-way.
        sim.set_faults(Faults(latency_rate=1.0, latency_seconds=0.4, path_pattern=r"/jobs$"))
        sim.clock.advance(3 * 3600)
        before = len(sim.requests)
        wait_for(
            lambda: sum(1 for r in sim.requests[before:] if r["path"].endswith("/jobs")) >= 2,
            30,
            message="a poll in progress",
        )
        process.send_signal(signal.SIGKILL)
        process.wait()
    sim.set_faults(Faults())
    with serve(config_file, port, env, log):
        wait_for(lambda: _converged(url, sim), 30, message="catch-up after SIGKILL during a poll")
        truth = httpx.get(f"{sim.url}/_sim/truth").json()
        assert_matches_truth(scrape(url), truth)
    assert sum(1 for a in truth["attempts"] if a["attempt"] == 2) >= 2


def _rerun_index(sim: GitHubSimulator, after: float) -> int:
    timeline = sim.timelines["acme/webapp"]
    index = 0
    while True:
        run = timeline.run(index)
        if run.created_at > after and len(run.attempts) == 2:
            return index
        index += 1


def test_rerun_second_attempt_counted_once(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str]
) -> None:
    """Attempt 1 is observed when it completes; the re-run's attempt 2 is a new observation later,
    and attempt 1 is not observed again."""
    assert run_cli("once", "--config", str(config_file), env=env).returncode == 0
    run = sim.timelines["acme/webapp"].run(_rerun_index(sim, sim.clock.now()))
    first, second = run.attempts
    # Just after attempt 1 completed, before the re-run was requested.
    sim.clock.advance(first.end + 1 - sim.clock.now())
    result = run_cli("once", "--config", str(config_file), env=env)
    exposition = Exposition.parse(result.stdout)
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    assert_matches_truth(exposition, truth)
    failures_before = exposition.total("cicd_pipeline_run_duration_seconds_count", result="failure")
    # After the re-run completed.
    sim.clock.advance(second.end + 1 - sim.clock.now())
    mark = len(sim.requests)
    result = run_cli("once", "--config", str(config_file), env=env)
    exposition = Exposition.parse(result.stdout)
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    assert_matches_truth(exposition, truth)
    assert (
        exposition.total("cicd_pipeline_run_duration_seconds_count", result="failure")
        == failures_before
    )
    # Attempt 1 was not fetched again.
    paths = [r["path"] for r in sim.requests[mark:]]
    assert not any(f"/runs/{run.id}/attempts/1" in p for p in paths)
    assert any(f"/runs/{run.id}/attempts/2/jobs" in p for p in paths)
    expected = expected_from_truth(truth)
    assert sum(expected["run"].count.values()) == exposition.total(
        "ci_pipeline_exporter_runs_observed_total"
    )
