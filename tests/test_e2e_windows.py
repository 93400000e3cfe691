"""The run window: GitHub's 1,000-result search cap, its lagging run list, re-runs hours after a
run's creation, and repositories removed from the config.

The exporter reads the wall clock (`time.time`) and rounds window starts down to the wall clock's
hour; the simulator has its own clock (speed 0, advanced by the tests). The tests place simulated
runs relative to the wall clock's hours and durations so both clocks tell the same story."""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import yaml

from simulator.github import GitHubSimulator
from simulator.model import Timeline
from simulator.scenarios import SCENARIOS, Scenario
from tests.helpers import TOKEN, Exposition, assert_matches_truth, run_cli, write_config
from tests.schemas import ResponseValidator, validated_simulator

REPO = "acme/webapp"
HOUR = 3600.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _poll_matches_truth(config: Path, env: dict[str, str], sim: GitHubSimulator) -> Exposition:
    """One `once` poll (state carried over from the previous ones); its counts equal the truth."""
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    exposition = Exposition.parse(result.stdout)
    truth: dict[str, Any] = httpx.get(f"{sim.url}/_sim/truth").json()
    assert_matches_truth(exposition, truth)
    assert exposition.total("ci_pipeline_exporter_runs_observed_total") == len(truth["attempts"])
    return exposition


def _advance_to(sim: GitHubSimulator, t: float) -> None:
    httpx.post(
        f"{sim.url}/_sim/advance", params={"seconds": t - sim.clock.now()}
    ).raise_for_status()


def _jobs_fetches(sim: GitHubSimulator, run_id: int, attempt: int) -> int:
    path = f"/repos/{REPO}/actions/runs/{run_id}/attempts/{attempt}/jobs"
    return sum(1 for r in sim.requests if r["path"] == path and r["status"] == 200)


def _lagged_run(scenario: Scenario, seed: int, minimum: float) -> tuple[int, float, float]:
    """The first run after the history whose list lag is at least `minimum`: its index, its
    created_at relative to the timeline's base time, and its lag (all independent of the base)."""
    probe = Timeline(REPO, scenario, seed, base_time=0.0)
    index = scenario.history_runs
    while probe.run(index).list_lag < minimum:
        index += 1
    return index, probe.run(index).created_at, probe.run(index).list_lag


def test_lagging_run_list_across_the_hour(tmp_path: Path, env: dict[str, str]) -> None:
    """A run created 30 s before the hour is listed only minutes later, so a poll in the next hour
    misses it; the next window still reaches back before the hour (the listing overlap), and across
    consecutive polls every completed attempt is observed exactly once."""
    scenario = replace(SCENARIOS["optimized"], history_runs=4, failure_rate=0.0, list_lag=240.0)
    index, offset, lag = _lagged_run(scenario, seed=3, minimum=90)
    # Simulated time placed so that the run is created 30 s before the wall clock's current hour:
    # the polls below all run after that hour began, so their windows start at it or later unless
    # they reach back.
    hour = math.floor(time.time() / HOUR) * HOUR
    start = hour - 30 - offset + scenario.history_runs * scenario.run_interval
    with validated_simulator(scenario, seed=3, token=TOKEN, start=start) as sim:
        run = sim.timelines[REPO].run(index)
        assert run.created_at == hour - 30
        assert run.list_lag == lag
        # rerun_window 0: only the overlap past the last poll reaches back. An hourly poll interval
        # makes the overlap (2 intervals + 5 min) cover the hour whatever the wall clock's minute.
        config = write_config(
            tmp_path / "c.yaml",
            sim.url,
            state=tmp_path / "s.db",
            poll_interval="1h",
            rerun_window="0s",
        )
        _advance_to(sim, run.created_at + lag / 2)
        with httpx.Client(base_url=sim.url, headers=AUTH) as client:
            assert client.get(f"/repos/{REPO}/actions/runs/{run.id}").status_code == 200
            listed = client.get(f"/repos/{REPO}/actions/runs", params={"per_page": 100}).json()
            assert run.id not in [r["id"] for r in listed["workflow_runs"]]
        _poll_matches_truth(config, env, sim)  # the history; the run exists but is not listed
        _advance_to(sim, run.listed_at)
        _poll_matches_truth(config, env, sim)  # listed, still in progress
        _advance_to(sim, run.attempts[0].end + 1)
        _poll_matches_truth(config, env, sim)  # completed: observed
        _advance_to(sim, run.attempts[0].end + 600)
        _poll_matches_truth(config, env, sim)  # and not again
        assert _jobs_fetches(sim, run.id, 1) == 1


def test_late_rerun_of_an_old_run(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str]
) -> None:
    """A run created five hours ago (older than the window's hour rounding, within rerun_window)
    is re-run now and keeps its created_at: its attempt 2 is observed exactly once, attempt 1 is
    not fetched again. The simulator's clock starts at the wall clock's now."""
    now = sim.clock.now()
    run = next(
        r
        for r in sim.timelines[REPO].runs_until(now)
        if 4.5 * HOUR <= now - r.created_at <= 5.5 * HOUR and len(r.attempts) == 1
    )
    _poll_matches_truth(config_file, env, sim)  # attempt 1, among the history
    rerun = httpx.post(
        f"{sim.url}/_sim/rerun", params={"repository": REPO, "run_id": run.id}
    ).json()
    assert rerun["attempt"] == 2
    _advance_to(sim, run.attempts[1].first_start + 1)
    _poll_matches_truth(config_file, env, sim)  # attempt 2 in progress
    _advance_to(sim, rerun["end"] + 1)
    _poll_matches_truth(config_file, env, sim)  # attempt 2 completed: observed
    _advance_to(sim, rerun["end"] + 600)
    exposition = _poll_matches_truth(config_file, env, sim)  # and not again
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    assert [a["attempt"] for a in truth["attempts"] if a["run_id"] == run.id] == [1, 2]
    assert _jobs_fetches(sim, run.id, 2) == 1
    assert _jobs_fetches(sim, run.id, 1) == 1
    assert exposition.total("ci_pipeline_exporter_runs_observed_total") == len(truth["attempts"])


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
    """After a repository is removed from the config, none of its series is exported and the
    state file keeps nothing of it (records, pending tasks, observed ids); added back, it starts
    afresh from the lookback window and its metrics equal truth again."""
    repos = ["acme/webapp", "acme/api"]
    with validated_simulator("seed", seed=2, token=TOKEN, repositories=tuple(repos)) as sim:
        config = write_config(
            tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repositories=repos
        )
        both = Exposition.parse(run_cli("once", "--config", str(config), env=env).stdout)
        assert both.select("cicd_pipeline_run_duration_seconds_count", repository="acme/api")
        data = yaml.safe_load(config.read_text())
        configured = data["github"]["repositories"]
        data["github"]["repositories"] = [{"name": "acme/webapp"}]
        config.write_text(yaml.safe_dump(data))
        one = run_cli("once", "--config", str(config), env=env)
        assert "acme/api" not in one.stdout
        assert Exposition.parse(one.stdout).select(
            "cicd_pipeline_run_duration_seconds_count", repository="acme/webapp"
        )
        db = sqlite3.connect(tmp_path / "s.db")
        for table in ("source_records", "pending", "observed"):
            rows = db.execute(f"SELECT count(*) FROM {table} WHERE source = 'github:acme/api'")
            assert rows.fetchone() == (0,), table
        assert db.execute("SELECT count(*) FROM observed").fetchone()[0] > 0
        db.close()
        data["github"]["repositories"] = configured
        config.write_text(yaml.safe_dump(data))
        _poll_matches_truth(config, env, sim)
