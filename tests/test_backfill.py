"""Backfill: from the simulator's `journey` scenario, `backfill`, then `promtool tsdb
create-blocks-from openmetrics`, then a real Prometheus on those blocks."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from simulator.github import GitHubSimulator
from tests.helpers import (
    free_port,
    require_binary,
    run_cli,
    scrape,
    serve,
    wait_for,
    write_config,
)
from tests.schemas import validated_simulator
from tests.servers import prometheus, query

MEDIAN_7D = 'histogram_quantile(0.5, sum by (le) (increase(cicd_pipeline_run_duration_seconds_bucket{result="success"}[7d])))'


@pytest.mark.integration
def test_backfill_gives_the_journey_from_baseline_to_target(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """The p50 run duration over the first week is near the baseline (23–27 min) and over the last
    week near the target (10–12 min), within 10 %; a second run resumes from the checkpoint."""
    promtool = require_binary("promtool")
    with validated_simulator("journey", seed=3, token=env["TEST_GITHUB_TOKEN"]) as sim:
        config = tmp_path / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state": {"path": str(tmp_path / "state.db")},
                    "github": {
                        "api_url": sim.url,
                        "token_env": "TEST_GITHUB_TOKEN",
                        "repositories": [
                            {"name": "acme/webapp", "junit": {"artifacts": ["junit*"]}}
                        ],
                    },
                    "targets": [
                        {
                            "repository": "acme/webapp",
                            "workflow": "CI",
                            "target": {"lower": "10m", "upper": "12m"},
                            "baseline": {"lower": "23m", "upper": "27m"},
                        }
                    ],
                }
            )
        )
        output = tmp_path / "history.om"
        result = run_cli(
            "backfill", "--config", str(config), "--since", "60d", "--output", str(output), env=env
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert output.read_text().endswith("# EOF\n")
        assert "cicd_test_suite_duration_seconds_bucket" in output.read_text()[-10_000_000:]
        jobs_requests = sum(1 for r in sim.requests if r["path"].endswith("/jobs"))
        assert jobs_requests >= 250
        again = run_cli(
            "backfill", "--config", str(config), "--since", "60d", "--output", str(output), env=env
        )
        assert again.returncode == 0
        assert (
            sum(1 for r in sim.requests if r["path"].endswith("/jobs")) == jobs_requests
        )  # resumed
        truth = sim.truth()
        first = min(a["created_at"] for a in truth["attempts"])
        last = max(max(j["completed_at"] for j in a["jobs"]) for a in truth["attempts"])
    data = tmp_path / "tsdb"
    blocks = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(output), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert blocks.returncode == 0, blocks.stderr[-2000:]
    with prometheus(tmp_path, data=data, extra_args=("--storage.tsdb.retention.time=10y",)) as url:
        first_week = float(query(url, MEDIAN_7D, at=first + 7 * 86400)[0]["value"][1])
        last_week = float(query(url, MEDIAN_7D, at=last)[0]["value"][1])
    assert 0.9 * 23 * 60 <= first_week <= 1.1 * 27 * 60, first_week / 60
    assert 0.9 * 10 * 60 <= last_week <= 1.1 * 12 * 60, last_week / 60
    assert os.path.exists(str(output) + ".checkpoint")


def _types(text: str) -> dict[str, str]:
    """Family → type from the `# TYPE` lines (prometheus-client's parser refuses a series given
    at several timestamps, which is what backfill writes)."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE))


def test_backfill_writes_the_types_of_the_live_exposition(
    sim: GitHubSimulator, config_file: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """Every family backfill writes has the type a live scrape (OpenMetrics) gives it: the step
    duration is a summary (it was written as a histogram with only +Inf buckets)."""
    output = tmp_path / "history.om"
    result = run_cli(
        "backfill", "--config", str(config_file), "--since", "3d", "--output", str(output), env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    written = _types(output.read_text())
    assert written["cicd_pipeline_task_step_duration_seconds"] == "summary"
    port = free_port()
    with serve(config_file, port, env, tmp_path / "serve.log"):
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: scrape(url).total("ci_pipeline_exporter_runs_observed_total") > 0, 30)
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        live = _types(httpx.get(f"{url}/metrics", headers=accept, timeout=10).text)
    assert {name: live.get(name) for name in written} == written


@pytest.mark.parametrize("where", ["missing-dir/history.om", "a-directory"])
def test_backfill_output_that_cannot_be_written_names_the_path(
    sim: GitHubSimulator, config_file: Path, tmp_path: Path, env: dict[str, str], where: str
) -> None:
    """An --output that can't be written is one line naming the option and the path, exit 2,
    before any API request is spent (it used to be a bare "No such file or directory")."""
    (tmp_path / "a-directory").mkdir()
    output = tmp_path / where
    result = run_cli("backfill", "--config", str(config_file), "--output", str(output), env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"ci-pipeline-exporter: config error: --output: cannot write {output}: "
    )
    assert not sim.requests


def test_backfill_upstream_failure_is_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    """GitHub unreachable: exit 1 with one line saying why and that the checkpoint resumes; no
    traceback (there was one)."""
    config = write_config(
        tmp_path / "config.yaml",
        f"http://127.0.0.1:{free_port()}",
        state=tmp_path / "state.db",
        max_retries=0,
    )
    output = tmp_path / "history.om"
    result = run_cli("backfill", "--config", str(config), "--output", str(output), env=env)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "ci-pipeline-exporter: backfill stopped: transport: " in result.stderr
    assert f"{output}.checkpoint, run it again to resume" in result.stderr
