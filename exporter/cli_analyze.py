"""`analyze …` commands: the analyses as a user-facing tool over local files."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, TextIO

from exporter.analysis.build_log import analyze_job_log
from exporter.analysis.buildkit import BuildSummary
from exporter.analysis.junit import RESULTS, JUnitError, Report, parse_junit, parse_zip


def junit_report(paths: Sequence[str], depth: int, keep: int = 10) -> tuple[Report, list[str]]:
    report = Report()
    problems: list[str] = []
    for name in paths:
        path = Path(name)
        try:
            if path.suffix.lower() == ".zip":
                parsed, bad = parse_zip(path.read_bytes(), depth, keep=keep)
                problems.extend(f"{name}: {detail}" for _, detail in bad)
            else:
                with path.open("rb") as handle:
                    parsed = parse_junit(handle, depth, keep=keep)
        except OSError as exc:
            problems.append(f"{name}: {exc.strerror}")
            continue
        except JUnitError as exc:
            problems.append(f"{name}: {exc}")
            continue
        report.merge(parsed, keep)
    return report, problems


def junit_json(report: Report, keep: int = 10) -> dict[str, Any]:
    slowest = sorted(
        (c for s in report.suites.values() for c in s.slowest), key=lambda c: -c.seconds
    )[:keep]
    return {
        "suites": {
            name: {"seconds": round(totals.seconds, 3), **totals.counts}
            for name, totals in sorted(report.suites.items(), key=lambda item: -item[1].seconds)
        },
        "slowest": [
            {"suite": c.suite, "name": c.name, "seconds": c.seconds, "result": c.result}
            for c in slowest
        ],
    }


def print_junit(report: Report, out: TextIO, keep: int = 10) -> None:
    data = junit_json(report, keep)
    total = sum(s["seconds"] for s in data["suites"].values()) or 1.0
    header = f"{'suite':<30} {'seconds':>10} {'share':>6} " + " ".join(f"{r:>8}" for r in RESULTS)
    print(header, file=out)
    for name, suite in data["suites"].items():
        share = f"{100 * suite['seconds'] / total:5.1f}%"
        counts = " ".join(f"{suite[r]:>8}" for r in RESULTS)
        print(f"{name:<30} {suite['seconds']:>10.3f} {share:>6} {counts}", file=out)
    if data["slowest"]:
        print("\nslowest cases:", file=out)
        for case in data["slowest"]:
            print(
                f"  {case['seconds']:>9.3f}s  {case['suite']}  {case['name']}  ({case['result']})",
                file=out,
            )


def run_junit(paths: Sequence[str], as_json: bool, depth: int, out: TextIO = sys.stdout) -> int:
    report, problems = junit_report(paths, depth)
    if as_json:
        print(json.dumps({**junit_json(report), "problems": problems}, indent=2), file=out)
    else:
        print_junit(report, out)
    for problem in problems:
        print(f"ci-pipeline-exporter: {problem}", file=sys.stderr)
    return 1 if problems else 0


def buildkit_builds(stream: IO[bytes]) -> list[BuildSummary]:
    """A raw GitHub job log (timestamped) or a bare BuildKit log, read in chunks."""
    return analyze_job_log(iter(lambda: stream.read(1 << 16), b"")).builds


def print_buildkit(builds: list[BuildSummary], out: TextIO) -> None:
    if not builds:
        print("no BuildKit build found", file=out)
    for build in builds:
        data = build.to_json()
        ratio = "-" if data["cache_hit_ratio"] is None else f"{100 * data['cache_hit_ratio']:.0f}%"
        steps = data["steps"]
        print(
            f"build {build.index}: {data['duration_seconds']:.1f}s  cache {data['cache_backend']}  "
            f"import {data['cache_import_seconds']:.1f}s  export {data['cache_export_seconds']:.1f}s  "
            f"steps {steps['cached']} cached / {steps['executed']} executed / {steps['errored']} errored / "
            f"{steps['canceled']} canceled  (hit ratio {ratio})",
            file=out,
        )
        if build.error:
            print(f"  error: {build.error}", file=out)
        for item in data["instructions"]:
            print(
                f"  {item['seconds']:>8.1f}s  {item['result']:<9} [{item['stage']}] {item['instruction']}",
                file=out,
            )


def run_buildkit(path: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    try:
        if path == "-":
            builds = buildkit_builds(sys.stdin.buffer)
        else:
            with open(path, "rb") as handle:
                builds = buildkit_builds(handle)
    except OSError as exc:
        print(f"ci-pipeline-exporter: {path}: {exc.strerror}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"builds": [b.to_json() for b in builds]}, indent=2), file=out)
    else:
        print_buildkit(builds, out)
    return 0


def run_image(
    ref: str, as_json: bool, username: str | None, password: str | None, out: TextIO = sys.stdout
) -> int:
    """One image reference → per-platform compressed size, layers and digest (exit 1 if unreadable)."""
    from exporter.sources.errors import SourceError
    from exporter.sources.http import RetryPolicy, make_client
    from exporter.sources.registry.client import RegistryClient, parse_reference

    try:
        base, name, reference = parse_reference(ref)
    except ValueError as exc:
        print(f"ci-pipeline-exporter: {exc}", file=sys.stderr)
        return 2
    with make_client(30.0) as http:
        client = RegistryClient(
            base, http, username=username, password=password, retry=RetryPolicy(max_retries=2)
        )
        try:
            head = client.head(name, reference)
            platforms = client.platforms(name, head.digest or reference).images
        except SourceError as exc:
            print(f"ci-pipeline-exporter: {ref}: {exc}", file=sys.stderr)
            return 1
    if as_json:
        data = {
            "reference": ref,
            "digest": head.digest,
            "platforms": [
                {k: v for k, v in p.to_json().items() if k != "blobs"} for p in platforms
            ],
        }
        print(json.dumps(data, indent=2), file=out)
        return 0
    print(f"{ref}  {head.digest}", file=out)
    for p in platforms:
        print(
            f"  {p.platform:<18} {p.size / 1e6:>10.1f} MB  {p.layers:>3} layers  {p.digest}",
            file=out,
        )
    return 0
