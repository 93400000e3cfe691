"""Faults: 5xx, secondary rate limits, latency spikes, malformed and truncated bodies."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from simulator.github import Faults, GitHubSimulator
from tests.helpers import assert_matches_truth, free_port, scrape, serve, wait_for, write_config


def test_faults_do_not_stop_the_exporter_and_counts_converge(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """With 20 % 5xx, secondary rate limits with and without retry-after, 5 s latency spikes and
    malformed/truncated JSON, the process stays up, /metrics keeps answering, errors are counted,
    and once the faults stop the counts converge to ground truth."""
    config = write_config(
        tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", timeout="2s", max_retries=1
    )
    sim.set_faults(
        Faults(
            error_rate=0.2,
            rate_limit_rate=0.05,
            retry_after=None,
            latency_rate=0.03,
            latency_seconds=5.0,
            malformed_rate=0.05,
            truncate_rate=0.05,
            seed=11,
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serve(config, port, env, tmp_path / "log") as process:
        deadline = time.monotonic() + 25
        scrapes = 0
        while time.monotonic() < deadline:
            sim.clock.advance(600)
            assert process.poll() is None
            assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200
            scrapes += 1
            time.sleep(0.5)
        faults_seen = {r["fault"] for r in sim.requests if r["fault"]}
        assert {"error", "rate_limit", "malformed", "truncate"} <= faults_seen
        errors = scrape(url).by("ci_pipeline_exporter_poll_errors_total", "reason")
        assert sum(errors.values()) > 0, errors
        sim.set_faults(Faults())

        def converged() -> bool:
            truth = httpx.get(f"{sim.url}/_sim/truth").json()
            exp = scrape(url)
            return exp.total("ci_pipeline_exporter_runs_observed_total") == len(
                truth["attempts"]
            ) and (exp.total("ci_pipeline_exporter_up") == 1)

        wait_for(converged, 40, message="convergence after faults stop")
        assert_matches_truth(scrape(url), httpx.get(f"{sim.url}/_sim/truth").json())
        assert process.poll() is None
        assert scrapes > 10
    log = (tmp_path / "log").read_text()
    assert "poll failed" in log
    assert "Traceback" not in log
