"""BuildKit plain-progress and job-log parsing: what a person reads off each reference log,
normalisation, step matching, cache restores, hostile input, and constant memory."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.analysis.actions_cache import CacheRestoreDetector
from exporter.analysis.build_log import analyze_job_log
from exporter.analysis.buildkit import BuildKitParser, normalize_instruction, parse_buildkit
from exporter.analysis.log_lines import StepWindow, parse_log_lines
from exporter.timeutil import parse_timestamp
from tests.helpers import REFERENCE, ROOT, run_cli

LOGS = REFERENCE / "buildkit-logs"


def builds_of(name: str) -> list[dict]:  # type: ignore[type-arg]
    path = next(LOGS.glob(f"{name}*"))
    return [b.to_json() for b in parse_buildkit(path.read_text().splitlines())]


def test_01_gha_export_with_push() -> None:
    """Older BuildKit's bare "exporting cache": an export is measured (4.8 s of layer writes so far);
    pushing belongs to the image export, not to the cache."""
    (build,) = builds_of("01_")
    assert build["cache_export_seconds"] == pytest.approx(4.8)
    assert build["cache_import_seconds"] == 0
    assert build["steps"] == {"cached": 0, "executed": 0, "errored": 0, "canceled": 0}


def test_03_registry_import_and_cached_step() -> None:
    """Registry cache import from ghcr.io, 0.5 s; the RUN step is a cache hit after pulling blobs."""
    (build,) = builds_of("03_")
    assert build["cache_backend"] == "registry"
    assert build["cache_import_seconds"] == pytest.approx(0.5)
    assert build["steps"]["cached"] == 1
    assert build["steps"]["executed"] == 0
    assert build["cache_hit_ratio"] == 1.0
    assert build["instructions"][0]["instruction"] == "RUN apk update"


def test_04_errored_run_step() -> None:
    """The failing `RUN pip install -r requirements.txt` is the errored step, with its output's
    elapsed time; [internal] vertices are not steps."""
    (build,) = builds_of("04_")
    assert build["steps"] == {"cached": 0, "executed": 1, "errored": 1, "canceled": 0}
    errored = [i for i in build["instructions"] if i["result"] == "errored"]
    assert errored == [
        {
            "stage": "unnamed",
            "instruction": "RUN pip install",
            "seconds": 0.831,
            "result": "errored",
        }
    ]
    assert "exit code: 1" in build["error"]


def test_06_gha_export_timeout() -> None:
    """`exporting to GitHub Actions Cache` that ends in ERROR after 600.3 s of preparation."""
    (build,) = builds_of("06_")
    assert build["cache_backend"] == "gha"
    assert build["cache_export_seconds"] == pytest.approx(600.3)
    assert build["cache_export_prepare_seconds"] == pytest.approx(600.3)
    assert build["error"] == "maximum timeout reached"


def test_07_internal_and_auth_vertices_are_not_steps() -> None:
    """[internal], [auth], image resolution and interleaved `#2 ...` resumption: no step counted."""
    (build,) = builds_of("07_")
    assert build["steps"] == {"cached": 0, "executed": 0, "errored": 0, "canceled": 0}
    assert build["cache_backend"] == "none"


def test_09_slow_cache_export_preparation() -> None:
    """The 44.4 s "preparing build cache for export" is the export's preparation time."""
    (build,) = builds_of("09_")
    assert build["cache_export_prepare_seconds"] == pytest.approx(44.4)
    assert build["cache_export_seconds"] >= 44.4


def test_10_prefixed_registry_import_and_bake_definitions() -> None:
    """Lines behind a Jenkins clock prefix parse; the registry import takes 0.4 s; bake's
    definition-loading vertices alone are not builds."""
    builds = builds_of("10_")
    assert len(builds) == 1
    assert builds[0]["cache_backend"] == "registry"
    assert builds[0]["cache_import_seconds"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("RUN pip install -r requirements.txt", "RUN pip install"),
        ("RUN apt-get update && apt-get install -y curl", "RUN apt-get update"),
        ("RUN --mount=type=cache,target=/root/.cache pip install -r r.txt", "RUN pip install"),
        ("RUN DEBIAN_FRONTEND=noninteractive apt-get install -y x", "RUN apt-get install"),
        ("COPY --from=build /app /app", "COPY /app"),
        ("WORKDIR /srv", "WORKDIR /srv"),
        ("RUN " + "x" * 200, "RUN " + "x" * 56),
    ],
)
def test_instruction_normalisation(text: str, label: str) -> None:
    assert normalize_instruction(text) == label
    assert len(normalize_instruction(text)) <= 60


def test_several_builds_cancel_and_timestamps() -> None:
    """Two builds in one log (numbers restart), durations from line timestamps, and a vertex left
    without a terminal line when the job was cancelled counts as canceled."""
    lines = [
        ("#1 [internal] load build definition from Dockerfile", 100.0),
        ("#1 DONE 0.0s", 100.0),
        ("#2 [a 1/2] RUN make", 100.5),
        ("#2 DONE 10.0s", 110.5),
        ("#1 [internal] load build definition from Dockerfile", 120.0),
        ("#1 DONE 0.0s", 120.0),
        ("#2 [b 1/2] RUN make test", 121.0),
        ("#2 3.100 running", 124.1),
    ]
    parser = BuildKitParser()
    builds = [b for text, ts in lines for b in parser.feed(text, ts, None)] + parser.finish()
    assert [b.duration_seconds for b in builds] == pytest.approx([10.5, 4.1])
    assert builds[0].steps["executed"] == 1
    assert builds[1].steps["canceled"] == 1


def test_job_log_timestamps_continuations_and_steps() -> None:
    """The reference job log: 7-digit timestamps, continuation lines without one, BOM tolerated;
    lines are assigned to the API's steps by time."""
    raw = (
        (REFERENCE / "job-logs" / "pluhin-hladki-job-log-head.txt").read_bytes().split(b"\n", 1)[1]
    )
    lines = list(parse_log_lines([b"\xef\xbb\xbf" + raw]))
    assert len(lines) == raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    first_ts = parse_timestamp("2022-05-07T20:41:37.6272156Z")
    assert lines[0].ts == pytest.approx(first_ts, abs=1e-6)
    assert lines[0].text == "Requested labels: ubuntu-latest"
    assert all(line.ts is not None for line in lines)
    wrapped = list(
        parse_log_lines(
            [
                b"2026-01-01T00:00:01.5000000Z files_separator: \nmore\r\n"
                b"2026-01-01T00:00:02.0000000Z next\n"
            ]
        )
    )
    assert [(line.text, line.ts) for line in wrapped] == [
        ("files_separator: ", 1767225601.5),
        ("more", 1767225601.5),
        ("next", 1767225602.0),
    ]
    assert first_ts is not None
    steps = [
        StepWindow(1, "Set up job", first_ts, first_ts + 6),
        StepWindow(2, "Run", first_ts + 7, first_ts + 60),
    ]
    assigned = list(parse_log_lines([raw], steps))
    assert assigned[0].step == 1
    assert assigned[-1].step == 2


def test_cache_restore_hits_and_misses() -> None:
    """actions/cache v4 restore output → hit or miss; post (save) steps are not restores."""
    detector = CacheRestoreDetector()
    for text, step in [
        ("##[group]Run actions/cache@v4", 3),
        ("  key: k1", 3),
        ("##[endgroup]", 3),
        ("Cache restored from key: k1", 3),
        ("##[group]Run actions/cache/restore@v4", 4),
        ("Cache not found for input keys: k2", 4),
        ("##[group]Run make", 5),
        ("Cache restored from key: bogus", 5),
        ("Post job cleanup.", 9),
        ("Cache hit occurred on the primary key k1, not saving cache.", 9),
    ]:
        detector.feed(text, step)
    assert [(r.step, r.result) for r in detector.restores] == [(3, "hit"), (4, "miss")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=120),
            st.sampled_from(
                [
                    b"#1 [internal] load build definition from Dockerfile",
                    b"#2 [base 1/3] RUN make",
                    b"#2 DONE 1.5s",
                    b"#2 ERROR: boom",
                    b"#3 CACHED",
                    b"#3 CANCELED",
                    b"#2 ...",
                    b"#4 importing cache manifest from gha:1",
                    b"#4 DONE -3s",
                    b"#5 exporting to GitHub Actions Cache",
                    b"#5 preparing build cache for export 9e999s done",
                    b'#0 building with "x" instance using docker driver',
                    b"2026-01-01T00:00:00.0000000Z #6 [a 1/1] RUN x",
                    b"2026-13-45T99:99:99.0Z #6 DONE 1.0s",
                    b"#99999999 x",
                    b"##[group]Run actions/cache@v4",
                    b"Cache restored from key: x",
                    b"\xff\xfe\x00#7 DONE 2.0s",
                ]
            ),
        ),
        max_size=60,
    )
)
def test_parsers_never_raise_or_report_impossible_values(chunks: list[bytes]) -> None:
    """Truncated, interleaved, garbage and non-UTF-8 input: no exception, no negative or non-finite
    durations, counts consistent."""
    data = b"\n".join(chunks)
    for split in (len(data) // 3, 7):
        pieces = [data[:split], data[split:]]
        facts = analyze_job_log(pieces)
        for build in facts.builds:
            numbers = [
                build.duration_seconds,
                build.cache_import_seconds,
                build.cache_export_seconds,
                *(i.seconds for i in build.instructions),
            ]
            assert all(n >= 0 and math.isfinite(n) for n in numbers)
            assert sum(build.steps.values()) == len(build.instructions)
            ratio = build.cache_hit_ratio
            assert ratio is None or 0 <= ratio <= 1


MEMORY_SCRIPT = """
import resource, sys
from exporter.analysis.build_log import analyze_job_log

def chunks(total):
    block = []
    n = 0
    for i in range(2000):
        block.append(f"2026-11-28T10:{(i // 60) % 60:02d}:{i % 60:02d}.1234567Z #{i % 900 + 2} [stage {i % 9}/9] RUN pip install package-{i} && do-something --flag\\n")
        block.append(f"2026-11-28T10:{(i // 60) % 60:02d}:{i % 60:02d}.2234567Z #{i % 900 + 2} {i % 50}.123 output line with some text that a build prints\\n")
    data = "".join(block).encode()
    while n < total:
        yield data
        n += len(data)

base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
facts = analyze_job_log(chunks(int(sys.argv[1])))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(base, peak, facts.lines)
"""


def test_200_mb_log_in_constant_memory() -> None:
    """A 200 MB synthetic log is parsed with peak RSS growth under 50 MB (measured in a child
    process: ru_maxrss after imports vs at the end)."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(200 << 20)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr
    base, peak, lines = (int(x) for x in result.stdout.split())
    assert lines > 1_000_000
    assert (peak - base) * 1024 < 50 * 1024 * 1024, (base, peak)


def test_analyze_buildkit_cli() -> None:
    """`analyze buildkit FILE --json` prints each build; `-` reads stdin; text output is a summary."""
    path = next(LOGS.glob("04_*"))
    result = run_cli("analyze", "buildkit", "--json", str(path))
    assert result.returncode == 0, result.stderr
    (build,) = json.loads(result.stdout)["builds"]
    assert set(build) >= {
        "duration_seconds",
        "cache_backend",
        "cache_import_seconds",
        "cache_export_seconds",
        "steps",
        "instructions",
    }
    piped = subprocess.run(
        [sys.executable, "-m", "exporter", "analyze", "buildkit", "-"],
        input=next(LOGS.glob("03_*")).read_bytes(),
        capture_output=True,
        cwd=ROOT,
    )
    assert b"cache registry" in piped.stdout
    assert run_cli("analyze", "buildkit", "/nonexistent").returncode == 1
