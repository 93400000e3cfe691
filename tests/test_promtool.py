"""The exposition passes the real promtool's lint."""

from __future__ import annotations

import subprocess
from pathlib import Path

from simulator.github import GitHubSimulator
from tests.helpers import require_binary, run_cli


def test_promtool_check_metrics(
    sim: GitHubSimulator, config_file: Path, env: dict[str, str]
) -> None:
    """`promtool check metrics` finds no problem in what `once` prints (names, types, HELP)."""
    promtool = require_binary("promtool")
    result = run_cli("once", "--config", str(config_file), env=env)
    assert result.returncode == 0
    assert "cicd_pipeline_task_step_duration_seconds_sum" in result.stdout
    assert "cicd_pipeline_run_duration_seconds_bucket" in result.stdout
    check = subprocess.run(
        [promtool, "check", "metrics"], input=result.stdout, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == ""
    assert check.stderr.strip() == ""
