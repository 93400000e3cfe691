"""Shared test helpers: running the exporter's CLI, reading expositions, ground truth arithmetic.

The expected values here are computed from the simulator's raw record (timestamps), with the
test's own arithmetic, never with the exporter's analysis code.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.metrics import MetricSpec
from exporter.store import Store
from exporter.store.aggregates import ValueSeries

ROOT = Path(__file__).resolve().parent.parent
# Real payloads, logs and reports the tests read (tests/fixtures/README.md says where each came from).
REFERENCE = ROOT / "tests" / "fixtures"
# Where `make test` puts pinned tools (.ci/install-helm): beside the running interpreter's venv.
TOOLS_BIN = tuple(
    dict.fromkeys([Path(sys.prefix) / "tools" / "bin", ROOT / ".venv" / "tools" / "bin"])
)
TOKEN = "ghp_TESTTOKENabcdefghijklmnopqrstuvwxyz0123"

RESULT = {
    "success": "success",
    "failure": "failure",
    "cancelled": "cancellation",
    "timed_out": "timeout",
    "skipped": "skip",
}


def require_binary(name: str) -> str:
    """The path of a real server or tool binary: the pinned tools `make test` installs into the
    virtual environment (TOOLS_BIN, e.g. helm) first, then PATH. Skipped without it, failed when
    integration is required (CIPE_REQUIRE_INTEGRATION=1, as in CI)."""
    path = shutil.which(name, path=os.pathsep.join(str(p) for p in TOOLS_BIN)) or shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make test installs it)"
        if os.environ.get("CIPE_REQUIRE_INTEGRATION") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def exporter_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter", *args]


def simulator_cmd(*args: str) -> list[str]:
    """The development tools (demo, simulate) from the checkout: not part of the exporter's wheel."""
    return [sys.executable, "-m", "simulator", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        exporter_cmd(*args), capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT
    )


def printed_secrets(stdout: str) -> dict[str, str]:
    """check-config's `secrets:` block, which it prints as YAML comments (so its output loads)."""
    lines = stdout.splitlines()
    start = lines.index("# secrets:")
    block = [line[2:] for line in lines[start:] if line.startswith("# ")]
    found: dict[str, str] = yaml.safe_load("\n".join(block))["secrets"]
    return found


def write_config(
    path: Path,
    sim_url: str,
    *,
    state: Path,
    repositories: list[str] | None = None,
    repo_extra: dict[str, Any] | None = None,
    **github: Any,
) -> Path:
    config: dict[str, Any] = {
        "state": {"path": str(state)},
        "github": {
            "api_url": sim_url,
            "token_env": "TEST_GITHUB_TOKEN",
            "poll_interval": "1s",
            "lookback": "3d",
            "timeout": "5s",
            "retry_backoff": "0.05s",
            "secondary_rate_limit_wait": "0.2s",
            # The simulator's clock is advanced hours ahead of the wall clock in tests.
            "clock_skew": "2d",
            "repositories": [
                {"name": r, "branches": ["main"], **(repo_extra or {})}
                for r in (repositories or ["acme/webapp"])
            ],
            **github,
        },
        "targets": [
            {
                "repository": (repositories or ["acme/webapp"])[0],
                "workflow": "CI",
                "branch": "main",
                "target": {"lower": "10m", "upper": "12m"},
                "baseline": {"lower": "23m", "upper": "27m"},
            }
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Exposition:
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exposition:
        exp = cls()
        for family in text_string_to_metric_families(text):
            exp.types[family.name] = family.type
            for sample in family.samples:
                exp.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return exp

    def select(self, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            lab: value
            for (n, lab), value in self.samples.items()
            if n == name and all(dict(lab).get(k) == v for k, v in labels.items())
        }

    def total(self, name: str, **labels: str) -> float:
        return sum(self.select(name, **labels).values())

    def by(self, name: str, *keys: str, **labels: str) -> dict[tuple[str, ...], float]:
        out: dict[tuple[str, ...], float] = defaultdict(float)
        for lab, value in self.select(name, **labels).items():
            d = dict(lab)
            out[tuple(d.get(k, "") for k in keys)] += value
        return dict(out)


@dataclass
class Expected:
    """count and sum per label tuple, computed from the simulator's truth."""

    count: dict[tuple[str, ...], int] = field(default_factory=lambda: defaultdict(int))
    total: dict[tuple[str, ...], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, key: tuple[str, ...], value: float) -> None:
        self.count[key] += 1
        self.total[key] += value


def expected_from_truth(
    truth: dict[str, Any], branches: frozenset[str] = frozenset({"main"})
) -> dict[str, Expected]:
    """What each histogram must hold, from raw timestamps: run wall time, job execution, queue
    time by runner labels, step durations and critical path execution seconds (successful runs)."""
    out = {name: Expected() for name in ("run", "job", "queue", "step", "critical")}
    for attempt in truth["attempts"]:
        branch = attempt["branch"] if attempt["branch"] in branches else "other"
        result = RESULT.get(attempt["conclusion"], "error")
        ran = [j for j in attempt["jobs"] if j["conclusion"] != "skipped"]
        wall = max(j["completed_at"] for j in ran) - min(j["started_at"] for j in ran)
        out["run"].add((attempt["repository"], branch, attempt["event"], result), wall)
        by_name = {j["name"]: j for j in attempt["jobs"]}
        if result == "success":
            critical = sum(
                by_name[n]["completed_at"] - by_name[n]["started_at"]
                for n in attempt["critical_path"]
            )
            out["critical"].add((attempt["repository"], branch), critical)
        for job in attempt["jobs"]:
            job_result = RESULT.get(job["conclusion"], "error")
            out["job"].add(
                (attempt["repository"], job["name"], job_result),
                job["completed_at"] - job["started_at"],
            )
            if job["conclusion"] != "skipped":
                runner = ",".join(sorted(job["labels"]))
                out["queue"].add(
                    (attempt["repository"], runner), job["started_at"] - job["created_at"]
                )
            for step in job["steps"]:
                seconds = (
                    (step["completed_at"] - step["started_at"])
                    if step["started_at"] is not None
                    else 0.0
                )
                out["step"].add(
                    (
                        attempt["repository"],
                        job["name"],
                        step["name"],
                        RESULT.get(step["conclusion"], "error"),
                    ),
                    seconds,
                )
    return out


def assert_matches_truth(exp: Exposition, truth: dict[str, Any]) -> None:
    """Every count and sum of the run, job, queue, step and critical-path histograms equals truth."""
    expected = expected_from_truth(truth)
    checks = [
        ("run", "cicd_pipeline_run_duration_seconds", ("repository", "branch", "event", "result")),
        ("critical", "cicd_pipeline_run_critical_path_seconds", ("repository", "branch")),
        ("job", "cicd_pipeline_task_run_duration_seconds", ("repository", "job_name", "result")),
        ("queue", "cicd_pipeline_task_run_queue_seconds", ("repository", "runner_labels")),
        (
            "step",
            "cicd_pipeline_task_step_duration_seconds",
            ("repository", "job_name", "step", "result"),
        ),
    ]
    for key, metric, labels in checks:
        counts = exp.by(f"{metric}_count", *labels)
        sums = exp.by(f"{metric}_sum", *labels)
        want_counts = {k: float(v) for k, v in expected[key].count.items()}
        assert counts == want_counts, f"{metric} counts differ"
        for label_key, total in expected[key].total.items():
            assert sums.get(label_key) == pytest.approx(total, abs=1e-6), (
                f"{metric} sum {label_key}"
            )


def scrape(url: str, timeout: float = 5.0) -> Exposition:
    response = httpx.get(f"{url}/metrics", timeout=timeout)
    response.raise_for_status()
    return Exposition.parse(response.text)


def wait_for(
    predicate: Any,
    timeout: float,
    interval: float = 0.2,
    message: str = "condition",
    *,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> Any:
    """The first truthy value of `predicate` (HTTP and socket errors count as not yet); fails after
    `timeout`, or as soon as `process` (the server being waited for) exits, with its log's tail."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None else ""
            raise AssertionError(f"exited before {message}: {tail}")
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message} (last error: {last_error})")


@contextmanager
def serve(
    config: Path, port: int, env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`serve` as a subprocess with its logs in a file; stopped (SIGTERM) at the end."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            exporter_cmd(
                "serve",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
            ),
            stdout=log,
            stderr=log,
            env={**os.environ, **env},
            cwd=ROOT,
        )
        try:
            wait_for(
                lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200,
                30,
                message="exporter /healthz",
            )
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def stored_gauges(store: Store, spec: MetricSpec) -> dict[tuple[str, ...], float]:
    """A gauge's values in the store by label tuple (what /metrics renders from it)."""
    with store.reading() as aggregates:
        return {
            labels: series.value
            for labels, series in aggregates.series_of(spec.name)
            if isinstance(series, ValueSeries)
        }
