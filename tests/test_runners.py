"""Self-hosted runner pools: `cicd_worker_count{scope,runner_group,state}` from the runners API of
an organisation (by runner group) and of a repository; a token without the runner permission
(403) is a counted source error with a clear line, and the other sources go on."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from simulator.github import GitHubSimulator
from tests.helpers import TOKEN, free_port, scrape, serve, wait_for, write_config

WORKERS = "cicd_worker_count"


def _gpu_job_executing(sim: GitHubSimulator) -> float:
    """A moment, after now, when a job of the shortage scenario runs on the GPU pool."""
    timeline = sim.timelines["acme/webapp"]
    now = sim.clock.now()
    for run in timeline.runs_until(now + 86400):
        for job in run.attempts[0].jobs:
            if "gpu" in job.labels and job.started_at > now and job.conclusion != "skipped":
                return job.started_at + 1
    raise AssertionError("no GPU job in the next day")


def test_runner_pools_and_a_forbidden_token(tmp_path: Path) -> None:
    """While a GPU job runs: org/acme's gpu group has 1 busy and 1 offline runner, Default 2
    available; the repository's runners are counted under its scope. Then the runners API
    answers 403: each poll of the pools fails as `auth` with the missing permission named, the
    last good counts stay, and the repository's runs are still polled."""
    sim = GitHubSimulator("shortage", repositories=("acme/webapp",), token=TOKEN).start()
    try:
        sim.clock.advance(_gpu_job_executing(sim) - sim.clock.now())
        config = write_config(tmp_path / "config.yaml", sim.url, state=tmp_path / "state.db")
        data = yaml.safe_load(config.read_text())
        data["github"]["runners"] = [
            {"org": "acme", "poll_interval": "1s"},
            {"repository": "acme/webapp", "poll_interval": "1s"},
        ]
        config.write_text(yaml.safe_dump(data))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / "exporter.log"
        with serve(config, port, {"TEST_GITHUB_TOKEN": TOKEN}, log):
            wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 30)
            pools = scrape(url).by(WORKERS, "scope", "runner_group", "state")
            assert pools == {
                ("org/acme", "Default", "available"): 2.0,
                ("org/acme", "Default", "busy"): 0.0,
                ("org/acme", "Default", "offline"): 0.0,
                ("org/acme", "gpu", "available"): 0.0,
                ("org/acme", "gpu", "busy"): 1.0,
                ("org/acme", "gpu", "offline"): 1.0,
                ("repo/acme/webapp", "default", "available"): 2.0,
                ("repo/acme/webapp", "default", "busy"): 1.0,
                ("repo/acme/webapp", "default", "offline"): 1.0,
            }
            httpx.post(f"{sim.url}/_sim/runners?forbidden=1")
            errors = "ci_pipeline_exporter_poll_errors_total"
            wait_for(
                lambda: scrape(url).total(errors, source="runners:org/acme", reason="auth") >= 2,
                15,
                message="403s counted",
            )
            assert scrape(url).by(WORKERS, "scope", "runner_group", "state") == pools
            exposition = scrape(url)
            assert exposition.total("ci_pipeline_exporter_up", source="github:acme/webapp") == 1
            assert exposition.total("ci_pipeline_exporter_up", source="runners:org/acme") == 0
        text = log.read_text()
        assert "runner read permission" in text
        assert "Traceback" not in text
        assert TOKEN not in text
    finally:
        sim.stop()
