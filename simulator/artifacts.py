"""JUnit reports uploaded by the simulated test-suite job: per-app cases whose times add up to the
job's "Run tests" step, zipped like an Actions artifact."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

from simulator.model import SimAttempt, SimRun
from simulator.scenarios import rng_for

# The mission's test suite: 10 minutes split over six apps (relative weights).
APPS = (
    ("accounts", 2.0),
    ("pages", 3.0),
    ("blog", 2.5),
    ("config", 1.5),
    ("photos", 1.5),
    ("utils", 1.0),
)
TEST_JOB = "test-suite"
TEST_STEP = "Run tests"
ARTIFACT_NAME = "junit-report"


@dataclass(frozen=True)
class JUnitArtifact:
    id: int
    name: str
    created_at: float
    xml: bytes
    # Ground truth: suite → seconds and counts, from the times as written in the XML.
    suites: dict[str, dict[str, float]]
    # Ground truth: each case (suite, classname, name) → its result.
    cases: dict[tuple[str, str, str], str]

    def zip_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            info = zipfile.ZipInfo("junit.xml", date_time=(2026, 1, 1, 0, 0, 0))
            archive.writestr(info, self.xml)
        return buffer.getvalue()


def junit_artifact(seed: int, run: SimRun, attempt: SimAttempt) -> JUnitArtifact | None:
    job = next(
        (j for j in attempt.jobs if j.spec_id == TEST_JOB and j.conclusion != "skipped"), None
    )
    if job is None:
        return None
    step = next((s for s in job.steps if s.name == TEST_STEP and s.started_at is not None), None)
    if step is None or step.completed_at is None or step.started_at is None:
        return None
    total = step.completed_at - step.started_at
    rng = rng_for(seed, run.repository, "junit", run.index, attempt.number)
    weight_sum = sum(w for _, w in APPS)
    failing = attempt.conclusion == "failure"
    cases: list[str] = []
    results: dict[tuple[str, str, str], str] = {}
    suites: dict[str, dict[str, float]] = {}
    for app, weight in APPS:
        share = total * weight / weight_sum
        count = rng.randint(6, 14)
        raw = [rng.uniform(0.5, 1.5) for _ in range(count)]
        scale = share / sum(raw)
        totals = {"seconds": 0.0, "passed": 0, "failed": 0, "error": 0, "skipped": 0}
        for index, value in enumerate(raw):
            seconds = round(value * scale, 3)
            name = f"test_{app}_{index}"
            classname = f"{app}.tests.test_{app}.{app.title()}Tests"
            if index == count - 1:
                body, result = '<skipped type="pytest.skip" message="slow"/>', "skipped"
                seconds = 0.0
            elif failing and (app, index) in run.failing_cases:
                body, result = (
                    '<failure message="AssertionError">assert 200 == 500</failure>',
                    "failed",
                )
            else:
                body, result = "", "passed"
            cases.append(
                f'<testcase classname="{classname}" name="{name}" time="{seconds:.3f}">{body}</testcase>'
            )
            results[(app, classname, name)] = result
            totals["seconds"] = round(totals["seconds"] + seconds, 3)
            totals[result] += 1
        suites[app] = totals
    counts = {k: int(sum(s[k] for s in suites.values())) for k in ("failed", "error", "skipped")}
    xml = (
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
        f'<testsuite name="pytest" errors="{counts["error"]}" failures="{counts["failed"]}" '
        f'skipped="{counts["skipped"]}" tests="{len(cases)}" time="{total:.3f}">'
        + "".join(cases)
        + "</testsuite></testsuites>"
    ).encode()
    return JUnitArtifact(
        id=job.id * 10 + 1,
        name=ARTIFACT_NAME,
        created_at=step.completed_at + 5,
        xml=xml,
        suites=suites,
        cases=results,
    )
