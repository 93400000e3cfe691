"""API cost, read from the simulator's request log."""

from __future__ import annotations

from pathlib import Path

from simulator.github import GitHubSimulator
from tests.helpers import run_cli, write_config
from tests.schemas import validated_simulator


def test_idle_cycle_is_one_conditional_request_per_repository(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """With nothing new, a poll cycle costs one conditional request per repository, answered 304.
    (The cycle after the catch-up narrows the window from `lookback` to the re-run window once, so
    the steady state is measured from the third cycle on.)"""
    repositories = ["acme/webapp", "acme/api", "acme/worker"]
    with validated_simulator(
        "seed", seed=3, token=env["TEST_GITHUB_TOKEN"], repositories=tuple(repositories)
    ) as sim:
        config = write_config(
            tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repositories=repositories
        )
        for _ in range(2):
            assert run_cli("once", "--config", str(config), env=env).returncode == 0
        mark = len(sim.requests)
        result = run_cli("once", "--config", str(config), env=env)
        assert result.returncode == 0, result.stderr
        idle = sim.requests[mark:]
        assert [(r["path"], r["status"], r["conditional"]) for r in idle] == [
            (f"/repos/{repo}/actions/runs", 304, True) for repo in repositories
        ]
        # A 304 is free: the rate-limit budget is unchanged by the idle cycle.
        assert "ci_pipeline_exporter_api_requests_total" in result.stdout
        assert 'code="304"' in result.stdout


def test_new_completed_run_costs_its_jobs_page(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str]
) -> None:
    """A newly completed run costs one list request and one jobs page (fewer than 100 jobs); the
    workflow file is fetched only the first time, not again while its blob is unchanged."""
    mark = len(sim.requests)
    assert run_cli("once", "--config", str(config_file), env=env).returncode == 0
    first = sim.requests[mark:]
    assert sum(1 for r in first if "/contents/" in r["path"]) == 1
    timeline = sim.timelines["acme/webapp"]
    index = 0
    while timeline.run(index).created_at <= sim.clock.now():
        index += 1
    nxt = timeline.run(index)
    # Past the next run's completion, and before the one after it is created.
    sim.clock.advance(nxt.attempts[-1].end + 1 - sim.clock.now())
    assert timeline.run(index + 1).created_at > sim.clock.now()
    mark = len(sim.requests)
    assert run_cli("once", "--config", str(config_file), env=env).returncode == 0
    busy = [(r["path"], r["status"]) for r in sim.requests[mark:]]
    expected_jobs = [
        (f"/repos/acme/webapp/actions/runs/{nxt.id}/attempts/{a.number}/jobs", 200)
        for a in nxt.attempts
    ]
    list_requests = [b for b in busy if b[0] == "/repos/acme/webapp/actions/runs"]
    assert len(list_requests) == 1
    assert [b for b in busy if b[0].endswith("/jobs")] == expected_jobs
    assert not any("/contents/" in path for path, _ in busy)
    assert len(busy) == 1 + len(expected_jobs) + sum(
        1 for b in busy if "/attempts/" in b[0] and not b[0].endswith("/jobs")
    )
