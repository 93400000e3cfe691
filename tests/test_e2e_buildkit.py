"""End to end: BuildKit and Actions cache metrics from the simulator's job logs equal its record."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator.github import GitHubSimulator
from tests.helpers import Exposition, run_cli, write_config
from tests.schemas import validated_simulator

LOGS = {"logs": {"jobs": ["build*"]}, "actions_cache": {"poll_interval": 0}}


@dataclass
class _Expected:
    builds: dict[tuple[str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    steps: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    instructions: dict[tuple[str, str, str], list[float]] = field(
        default_factory=lambda: defaultdict(list)
    )
    restores: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    restore_seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, log: dict[str, Any]) -> None:
        job = log["job"]
        for build in log["builds"]:
            self.builds[(job, build["backend"])].append(build)
            self.steps[(job, "cached")] += build["cached"]
            self.steps[(job, "executed")] += build["executed"]
            for item in build["instructions"]:
                self.instructions[(job, item["stage"], item["instruction"])].append(item["seconds"])
        for restore in log["restores"]:
            self.restores[(job, restore["result"])] += 1
            self.restore_seconds[job].append(restore["seconds"])


def _check(exp: Exposition, truth: dict[str, Any], repo: str = "acme/webapp") -> None:
    expected = _Expected()
    for attempt in truth["attempts"]:
        for log in attempt["logs"]:
            if fnmatch.fnmatchcase(log["job"], "build*"):
                expected.add(log)
    builds, steps, instructions = expected.builds, expected.steps, expected.instructions
    restores, restore_seconds = expected.restores, expected.restore_seconds
    assert builds, "the scenario has builds"
    for (job, backend), items in builds.items():
        labels = {"repository": repo, "job_name": job, "cache_backend": backend}
        for metric, key in (
            ("buildkit_build_duration_seconds", "duration_seconds"),
            ("buildkit_cache_import_seconds", "import_seconds"),
            ("buildkit_cache_export_seconds", "export_seconds"),
        ):
            assert exp.total(f"{metric}_count", **labels) == len(items), (metric, job, backend)
            assert exp.total(f"{metric}_sum", **labels) == pytest.approx(
                sum(b[key] for b in items), abs=0.01
            ), metric
    assert exp.by("buildkit_steps_total", "job_name", "result") == {
        k: float(v) for k, v in steps.items() if v
    }
    for (job, stage, instruction), values in instructions.items():
        labels = {"job_name": job, "stage": stage, "instruction": instruction}
        assert exp.total("buildkit_step_duration_seconds_count", **labels) == len(values)
        assert exp.total("buildkit_step_duration_seconds_sum", **labels) == pytest.approx(
            sum(values), abs=1e-6
        )
    assert exp.by("github_actions_cache_restores_total", "job_name", "result") == {
        k: float(v) for k, v in restores.items()
    }
    for job, values in restore_seconds.items():
        assert exp.total("github_actions_cache_restore_seconds_sum", job_name=job) == pytest.approx(
            sum(values)
        )
    cache = truth["actions_cache"][repo]
    assert exp.total("github_actions_cache_usage_bytes", repository=repo) == cache["usage_bytes"]
    assert exp.total("github_actions_cache_entries", repository=repo) == cache["entries"]
    assert (
        exp.total("github_actions_cache_entries_bytes", kind="buildkit") == cache["buildkit_bytes"]
    )
    assert exp.total("github_actions_cache_entries_bytes", kind="other") == cache["other_bytes"]
    assert exp.total("github_actions_cache_limit_bytes") == 10 * 1024**3


def test_buildkit_metrics_equal_ground_truth(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """The seed scenario (gha cache): every buildkit_* and github_actions_cache_* series equals the
    simulator's record; logs are read once each, never with the token."""
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=LOGS)
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    _check(Exposition.parse(result.stdout), truth)
    logs = [r for r in sim.blobs.requests if r["path"].startswith("/logs/")]
    assert logs
    assert len({r["path"] for r in logs}) == len(logs)
    assert not any(r["authorization"] for r in sim.blobs.requests)
    sim.clock.advance(3 * 3600)
    again = run_cli("once", "--config", str(config), env=env)
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    _check(Exposition.parse(again.stdout), truth)
    logs = [r for r in sim.blobs.requests if r["path"].startswith("/logs/")]
    assert len({r["path"] for r in logs}) == len(logs)


def test_registry_cache_after_the_change(tmp_path: Path, env: dict[str, str]) -> None:
    """The optimized scenario uses the registry cache: imports are faster than the baseline's gha
    imports, base layers are cached, and no BuildKit bytes sit in the Actions cache."""
    with validated_simulator("optimized", seed=3, token=env["TEST_GITHUB_TOKEN"]) as sim:
        config = write_config(
            tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=LOGS
        )
        result = run_cli("once", "--config", str(config), env=env)
        exp = Exposition.parse(result.stdout)
        truth = httpx.get(f"{sim.url}/_sim/truth").json()
        _check(exp, truth)
        assert exp.select("buildkit_cache_import_seconds_count", cache_backend="registry")
        assert not exp.select("buildkit_cache_import_seconds_count", cache_backend="gha")
        assert exp.total("github_actions_cache_entries_bytes", kind="buildkit") == 0
        cached = exp.total("buildkit_steps_total", job_name="build-docker-image", result="cached")
        executed = exp.total(
            "buildkit_steps_total", job_name="build-docker-image", result="executed"
        )
        assert cached / (cached + executed) > 0.5  # the seed's share is 4/9


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"logs": {"jobs": ["build*"], "max_bytes": 2000}}, "log_truncated"),
        ({"logs": {"jobs": ["build*"]}}, "log_expired"),
    ],
)
def test_truncated_and_expired_logs_are_counted(
    sim: GitHubSimulator,
    tmp_path: Path,
    env: dict[str, str],
    extra: dict[str, Any],
    reason: str,
) -> None:
    """A log over logs.max_bytes is read up to the cap and counted; an expired link is a counted
    skip; either way the poll succeeds and every run is observed."""
    if reason == "log_expired":
        sim.blobs.ttl = -10
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=extra)
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    exp = Exposition.parse(result.stdout)
    assert exp.total("ci_pipeline_exporter_poll_errors_total", reason=reason) > 0
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    assert exp.total("ci_pipeline_exporter_runs_observed_total") == len(truth["attempts"])
