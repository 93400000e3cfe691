"""End to end: per-app test time from the simulator's JUnit artifacts."""

from __future__ import annotations

import struct
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from exporter.analysis.junit import MAX_SECONDS
from simulator.github import GitHubSimulator
from tests.helpers import Exposition, run_cli, write_config
from tests.test_junit import BILLION_LAUGHS, _zip, zip_bomb

JUNIT = {"junit": {"artifacts": ["junit*"]}}


def _expected(truth: dict) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    durations: dict[str, list[float]] = defaultdict(list)
    cases: dict[tuple[str, str], int] = defaultdict(int)
    latest: dict[str, float] = {}
    newest = max(
        (a for a in truth["attempts"] if a["junit"]),
        key=lambda a: max(j["completed_at"] for j in a["jobs"]),
    )
    for attempt in truth["attempts"]:
        for suite, totals in attempt["junit"].items():
            durations[suite].append(totals["seconds"])
            for result in ("passed", "failed", "error", "skipped"):
                if totals[result]:
                    cases[(suite, result)] += int(totals[result])
    for suite, totals in newest["junit"].items():
        latest[suite] = totals["seconds"]
    return durations, cases, latest


def test_test_metrics_equal_ground_truth_and_artifacts_download_once(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """Suite durations (count and sum), case counts by result and the latest suite times equal the
    simulator's record; each artifact is downloaded once, never with the token."""
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=JUNIT)
    run_cli("once", "--config", str(config), env=env)
    sim.clock.advance(2 * 3600)
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    exp = Exposition.parse(result.stdout)
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    durations, cases, latest = _expected(truth)
    assert set(durations) == {"accounts", "pages", "blog", "config", "photos", "utils"}
    for suite, values in durations.items():
        labels = {"repository": "acme/webapp", "workflow": "CI", "suite": suite}
        assert exp.total("cicd_test_suite_duration_seconds_count", **labels) == len(values)
        assert exp.total("cicd_test_suite_duration_seconds_sum", **labels) == pytest.approx(
            sum(values), abs=1e-6
        )
        assert exp.total("cicd_test_suite_last_duration_seconds", **labels) == pytest.approx(
            latest[suite]
        )
    assert exp.by("cicd_test_cases_total", "suite", "result") == {
        k: float(v) for k, v in cases.items()
    }
    assert cases[("pages", "failed")] > 0
    downloads = [r["path"] for r in sim.blobs.requests]
    assert len(downloads) == len(set(downloads)) == sum(1 for a in truth["attempts"] if a["junit"])
    assert not any(r["authorization"] for r in sim.blobs.requests)
    run_cli("once", "--config", str(config), env=env)
    assert len(sim.blobs.requests) == len(downloads)


def _damaged(data: bytes, *, flags: int = 0, method: int | None = None) -> bytes:
    """The zip with every member's header (local and central) given extra flag bits (1: the
    member is encrypted) or another compression method (99: AES, which zipfile can't read)."""
    out = bytearray(data)
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = out.find(signature)
        while at >= 0:
            out[at + flag_at] |= flags
            if method is not None:
                out[at + method_at : at + method_at + 2] = struct.pack("<H", method)
            at = out.find(signature, at + 4)
    return bytes(out)


def _bad_deflate() -> bytes:
    """A zip whose member's deflate stream is garbage (the directory is intact)."""
    data = bytearray(
        _zip({"junit.xml": b"<testsuite name='a'><testcase name='t'/></testsuite>" * 50})
    )
    start = 30 + len("junit.xml")
    data[start : start + 20] = b"\xff" * 20
    return bytes(data)


@pytest.mark.parametrize(
    "kind",
    [
        "billion-laughs",
        "zip-bomb",
        "truncated-zip",
        "expired",
        "encrypted-member",
        "bad-deflate",
        "unknown-method",
    ],
)
def test_hostile_artifacts_are_counted_skips(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str], kind: str
) -> None:
    """A hostile, oversized, truncated or expired artifact is a counted, logged skip: the poll goes
    on, the run's other metrics are recorded, the artifact is not fetched again."""
    timeline = sim.timelines["acme/webapp"]
    run = timeline.run(len(timeline.runs_until(sim.clock.now())) - 1)
    artifact = sim.artifact(run, run.attempts[-1])
    assert artifact is not None
    payloads = {
        "billion-laughs": _zip({"junit.xml": BILLION_LAUGHS}),
        "zip-bomb": zip_bomb(80 << 20),
        "truncated-zip": artifact.zip_bytes()[:200],
        "encrypted-member": _damaged(artifact.zip_bytes(), flags=1),
        "bad-deflate": _bad_deflate(),
        "unknown-method": _damaged(artifact.zip_bytes(), method=99),
    }
    if kind == "expired":
        sim.blobs.ttl = -10
    else:
        sim.artifact_overrides[artifact.id] = payloads[kind]
    extra = {"junit": {"artifacts": ["junit*"], "max_uncompressed_bytes": 32 << 20}}
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=extra)
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    exp = Exposition.parse(result.stdout)
    reasons = exp.by("ci_pipeline_exporter_poll_errors_total", "reason")
    want = {
        "billion-laughs": "junit_hostile",
        "zip-bomb": "artifact_too_large",
        "truncated-zip": "artifact_invalid",
        "expired": "artifact_expired",
        "encrypted-member": "junit_invalid",
        "bad-deflate": "junit_invalid",
        "unknown-method": "junit_invalid",
    }[kind]
    assert reasons.get((want,), 0) >= 1, reasons
    assert "artifact skipped" in result.stderr
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    assert exp.total("ci_pipeline_exporter_runs_observed_total") == len(truth["attempts"])
    before = len(sim.blobs.requests)
    run_cli("once", "--config", str(config), env=env)
    assert len(sim.blobs.requests) == before


def test_absurd_case_times_are_capped_not_infinite(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """Two cases of `time="1e308"` would sum to infinity, which no histogram can observe: each
    case and each suite is capped (MAX_SECONDS), the attempt's report is recorded, and the poll
    and the rest of the repository go on."""
    timeline = sim.timelines["acme/webapp"]
    run = timeline.run(len(timeline.runs_until(sim.clock.now())) - 1)
    artifact = sim.artifact(run, run.attempts[-1])
    assert artifact is not None
    cases = b'<testcase classname="huge.t" name="a" time="1e308"/>' * 2
    sim.artifact_overrides[artifact.id] = _zip({"r.xml": b"<testsuite>" + cases + b"</testsuite>"})
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=JUNIT)
    result = run_cli("once", "--config", str(config), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    exp = Exposition.parse(result.stdout)
    huge = {"repository": "acme/webapp", "workflow": "CI", "suite": "huge"}
    assert exp.total("cicd_test_suite_duration_seconds_count", **huge) == 1
    assert exp.total("cicd_test_suite_duration_seconds_sum", **huge) == MAX_SECONDS
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    assert exp.total("ci_pipeline_exporter_runs_observed_total") == len(truth["attempts"])
    assert not exp.by("ci_pipeline_exporter_poll_errors_total", "reason")


def test_suites_beyond_the_cap_fold_into_other(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """With max_suites 3, the first three apps keep their names, the rest fold into "other", and
    the folds are counted; total time and case counts are unchanged by folding."""
    extra = {"junit": {"artifacts": ["junit*"], "max_suites": 3}}
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=extra)
    result = run_cli("once", "--config", str(config), env=env)
    exp = Exposition.parse(result.stdout)
    suites = {k[0] for k in exp.by("cicd_test_suite_duration_seconds_count", "suite")}
    assert len(suites) == 4
    assert "other" in suites
    assert (
        exp.total(
            "ci_pipeline_exporter_series_dropped_total", metric="cicd_test_suite_duration_seconds"
        )
        > 0
    )
    truth = httpx.get(f"{sim.url}/_sim/truth").json()
    durations, cases, _ = _expected(truth)
    assert exp.total("cicd_test_suite_duration_seconds_sum") == pytest.approx(
        sum(sum(v) for v in durations.values()), abs=1e-6
    )
    assert exp.total("cicd_test_cases_total") == sum(cases.values())
