"""End to end: `once` against the simulator's `seed` scenario equals the simulator's ground truth."""

from __future__ import annotations

from pathlib import Path

import httpx

from simulator.github import GitHubSimulator
from tests.helpers import Exposition, assert_matches_truth, run_cli


def test_once_matches_ground_truth(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str]
) -> None:
    """Every count and sum of the run, job, queue, step and critical-path histograms equals what the
    simulator served, including failed runs, skipped jobs and second attempts."""
    result = run_cli("once", "--config", str(config_file), env=env)
    assert result.returncode == 0, result.stderr
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    assert any(a["attempt"] == 2 for a in truth["attempts"])
    assert any(a["conclusion"] == "failure" for a in truth["attempts"])
    exposition = Exposition.parse(result.stdout)
    assert_matches_truth(exposition, truth)
    # Every critical path came from the workflow file's needs: graph.
    assert exposition.by("cicd_pipeline_run_critical_path_source_total", "source") == {
        ("needs",): float(len(truth["attempts"]))
    }


def test_once_is_incremental_and_exact(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str]
) -> None:
    """Repeated `once` with the same state while time moves in small steps (runs completing,
    re-runs starting after observed first attempts): counts always equal truth, never double."""
    for _ in range(8):
        sim.clock.advance(11 * 60)
        result = run_cli("once", "--config", str(config_file), env=env)
        assert result.returncode == 0, result.stderr
        truth = httpx.get(f"{sim.url}/_sim/truth").json()
        exposition = Exposition.parse(result.stdout)
        assert_matches_truth(exposition, truth)
        active = truth["active"]["acme/webapp"]
        for state in ("pending", "executing"):
            assert exposition.total("cicd_pipeline_run_active", state=state) == active[state]
