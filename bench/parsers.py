"""Parser throughput: BuildKit job logs and JUnit XML in MB/s, beside `wc -l` on the same file.

    python -m bench.parsers [--mb 200] [--write-doc]

Writes a synthetic 200 MB GitHub job log with BuildKit output and a JUnit file, times the parsers
(best of 3) and `wc -l`, prints a table, and with --write-doc updates docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import machine, update_section
from exporter.analysis.build_log import analyze_job_log
from exporter.analysis.junit import parse_junit


def write_log(path: Path, megabytes: int) -> None:
    lines = []
    for i in range(4000):
        minute, second = (i // 60) % 60, i % 60
        ts = f"2026-11-28T10:{minute:02d}:{second:02d}.{i % 10_000_000:07d}Z"
        vertex = i % 900 + 2
        lines.append(
            f"{ts} #{vertex} [deps {i % 9 + 1}/9] RUN pip install --no-cache-dir -r requirements-{i}.txt\n"
        )
        lines.append(
            f"{ts} #{vertex} {i % 50}.123 Collecting package-{i} (from -r requirements.txt (line {i}))\n"
        )
        lines.append(f"{ts} #{vertex} DONE {i % 30}.4s\n")
    block = "".join(lines).encode()
    with path.open("wb") as handle:
        written = 0
        while written < megabytes << 20:
            handle.write(block)
            written += len(block)


def write_junit(path: Path, megabytes: int) -> None:
    with path.open("wb") as handle:
        handle.write(b'<?xml version="1.0"?><testsuites><testsuite name="pytest">')
        written, i = 0, 0
        while written < megabytes << 20:
            case = (
                f'<testcase classname="app{i % 12}.tests.test_mod.Tests" name="test_{i}" time="{i % 97 / 10:.3f}">'
                f"{'<skipped/>' if i % 31 == 0 else ''}</testcase>\n"
            ).encode()
            handle.write(case)
            written += len(case)
            i += 1
        handle.write(b"</testsuite></testsuites>")


def best_of(runs: int, action: object) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        action()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def wc_seconds(path: Path) -> float:
    return best_of(
        3, lambda: subprocess.run(["wc", "-l", str(path)], check=True, capture_output=True)
    )


def run(megabytes: int) -> list[tuple[str, float, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        log, xml = Path(tmp) / "job.log", Path(tmp) / "junit.xml"
        write_log(log, megabytes)
        write_junit(xml, max(1, megabytes // 4))

        def parse_log() -> None:
            with log.open("rb") as handle:
                analyze_job_log(iter(lambda: handle.read(1 << 16), b""))

        def parse_xml() -> None:
            with xml.open("rb") as handle:
                parse_junit(handle)

        for name, path, action in (
            ("BuildKit job log", log, parse_log),
            ("JUnit XML", xml, parse_xml),
        ):
            size = path.stat().st_size / (1 << 20)
            seconds = best_of(3, action)
            rows.append((name, size, size / seconds, size / wc_seconds(path)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args()
    rows = run(args.mb)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = [
        "| input | size (MiB) | parser (MiB/s) | `wc -l` (MiB/s) | parser ÷ wc |",
        "|---|---|---|---|---|",
    ]
    for name, size, parser_rate, wc_rate in rows:
        table.append(
            f"| {name} | {size:.0f} | {parser_rate:.1f} | {wc_rate:.0f} | {parser_rate / wc_rate:.3f} |"
        )
    text = "\n".join(
        [
            f"Command: `python -m bench.parsers --mb {args.mb} --write-doc` (best of 3 runs each).",
            f"Machine: {machine()}; Python {platform.python_version()}.",
            "",
            *table,
            "",
            f"Peak RSS of the whole benchmark process: {peak:.0f} MiB (the parsers stream in 64 KiB chunks;",
            "`tests/test_buildkit.py` asserts < 50 MB growth on a 200 MB log).",
        ]
    )
    print(text)
    if args.write_doc:
        update_section("Parser throughput", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
