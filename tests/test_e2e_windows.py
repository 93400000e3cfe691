"""The run window: GitHub's 1,000-result search cap, and repositories removed from the config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from exporter.simulator.github import GitHubSimulator
from exporter.simulator.scenarios import SCENARIOS
from tests.helpers import TOKEN, Exposition, assert_matches_truth, run_cli, write_config
from tests.schemas import ResponseValidator, validated_simulator


def test_windows_split_below_the_search_cap(tmp_path: Path, env: dict[str, str]) -> None:
    """1,300 runs in the lookback: the window is split until each part returns under 1,000
    results, and every attempt is observed once."""
    busy = replace(SCENARIOS["optimized"], run_interval=60.0, history_runs=1300, failure_rate=0.0)
    sim = GitHubSimulator(busy, seed=5, token=TOKEN)
    validator = ResponseValidator()
    sim.on_response = validator
    sim.start()
    try:
        config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db")
        result = run_cli("once", "--config", str(config), env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        truth = sim.truth()
        assert len(truth["attempts"]) >= 1250
        assert_matches_truth(Exposition.parse(result.stdout), truth)
        listed = [r for r in sim.requests if r["path"] == "/repos/acme/webapp/actions/runs"]
        assert any(".." in r["query"] for r in listed)  # bounded sub-windows were used
        assert validator.errors == []
    finally:
        sim.stop()


def test_removed_repository_series_disappear(tmp_path: Path, env: dict[str, str]) -> None:
    """After a repository is removed from the config, none of its series is exported."""
    repos = ["acme/webapp", "acme/api"]
    with validated_simulator("seed", seed=2, token=TOKEN, repositories=tuple(repos)) as sim:
        config = write_config(
            tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repositories=repos
        )
        both = Exposition.parse(run_cli("once", "--config", str(config), env=env).stdout)
        assert both.select("cicd_pipeline_run_duration_seconds_count", repository="acme/api")
        data = yaml.safe_load(config.read_text())
        data["github"]["repositories"] = [{"name": "acme/webapp"}]
        config.write_text(yaml.safe_dump(data))
        one = run_cli("once", "--config", str(config), env=env)
        assert "acme/api" not in one.stdout
        assert Exposition.parse(one.stdout).select(
            "cicd_pipeline_run_duration_seconds_count", repository="acme/webapp"
        )
