"""JUnit parsing: the reference files, hostile and broken input, constant memory, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
import xml.etree.ElementTree as StdET
import zipfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.analysis.junit import JUnitError, parse_junit, parse_zip
from tests.helpers import REFERENCE, run_cli

JUNIT = sorted((REFERENCE / "junit").glob("*.xml"))


def minimal_reading(path: Path, depth: int) -> dict[str, dict[str, float]]:
    """The test's own reading: every <testcase>, its app from classname (or the enclosing suite's
    name without the timestamp suffix), time summed, result from the first child element."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    root = StdET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.iter("testsuite")
    for suite in suites:
        for case in suite.iter("testcase"):
            cls = case.get("classname")
            app = (
                ".".join(cls.split(".")[:depth]) if cls else suite.get("name", "").rsplit("-", 1)[0]
            )
            tags = {child.tag for child in case}
            result = (
                "failed"
                if "failure" in tags
                else "error"
                if "error" in tags
                else "skipped"
                if "skipped" in tags
                else "passed"
            )
            out[app]["seconds"] += float(case.get("time", "0"))
            out[app][result] += 1
    return {k: dict(v) for k, v in out.items()}


@pytest.mark.parametrize("path", JUNIT, ids=[p.name for p in JUNIT])
@pytest.mark.parametrize("depth", [1, 2])
def test_reference_files(path: Path, depth: int) -> None:
    """pytest xunit1/xunit2 and Django xmlrunner (single file, per class): per-suite times and
    counts equal the test's own reading of the XML."""
    expected = minimal_reading(path, depth)
    with path.open("rb") as handle:
        report = parse_junit(handle, depth)
    assert set(report.suites) == set(expected)
    for name, totals in report.suites.items():
        assert totals.seconds == pytest.approx(expected[name]["seconds"], abs=1e-9)
        for result in ("passed", "failed", "error", "skipped"):
            assert totals.counts[result] == expected[name].get(result, 0), (name, result)


def test_suite_name_fallback_strips_xmlrunner_timestamp() -> None:
    doc = b'<testsuite name="blog.tests.PostTests-20261128232454"><testcase name="t" time="1.5"/></testsuite>'
    report = parse_junit(io.BytesIO(doc))
    assert set(report.suites) == {"blog.tests.PostTests"}


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<testsuites><testsuite name="&lol9;"><testcase name="x" time="1"/></testsuite></testsuites>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE t [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<testsuites><testsuite name="&secret;"><testcase name="x" time="1"/></testsuite></testsuites>"""
TRUNCATED = (REFERENCE / "junit" / "pytest-9.2-pytest-django-xunit2.xml").read_bytes()[:700]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb(uncompressed: int) -> bytes:
    """A valid JUnit prefix followed by `uncompressed` bytes of whitespace, deflated (~1000:1)."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("junit.xml", "w") as member,
    ):
        member.write(b"<testsuites><testsuite name='bomb'>")
        block = b" " * (1 << 20)
        for _ in range(uncompressed >> 20):
            member.write(block)
        member.write(b"</testsuite></testsuites>")
    return buffer.getvalue()


def _peak_growth(action: Callable[[], object]) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    with contextlib.suppress(JUnitError):
        action()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (BILLION_LAUGHS, "junit_hostile"),
        (XXE, "junit_hostile"),
        (TRUNCATED, "junit_invalid"),
        (b"<html><body>not junit</body></html>", "junit_invalid"),
        (b"\xff\xfe garbage", "junit_invalid"),
    ],
    ids=["billion-laughs", "xxe", "truncated", "not-junit", "garbage"],
)
def test_hostile_and_broken_documents_are_rejected(data: bytes, reason: str) -> None:
    """Rejected with a reason, before any entity expansion, and without memory growth."""
    with pytest.raises(JUnitError) as info:
        parse_junit(io.BytesIO(data))
    assert info.value.reason == reason
    assert _peak_growth(lambda: parse_junit(io.BytesIO(data))) < 5 * 1024 * 1024


def test_zip_bomb_is_rejected_without_memory_growth() -> None:
    """A member inflating past the cap is rejected while reading (the zip directory's sizes are not
    trusted), with peak memory growth far under 50 MB."""
    bomb = zip_bomb(300 << 20)
    assert len(bomb) < 2 << 20
    with pytest.raises(JUnitError) as info:
        parse_zip(bomb, max_uncompressed=256 << 20)
    assert info.value.reason == "artifact_too_large"
    growth = _peak_growth(lambda: parse_zip(bomb, max_uncompressed=64 << 20))
    assert growth < 50 * 1024 * 1024, growth


def test_zip_with_good_and_bad_members() -> None:
    """Good members count; unreadable ones are reported, not fatal."""
    good = (REFERENCE / "junit" / "pytest-9.2-pytest-django-xunit2.xml").read_bytes()
    report, bad = parse_zip(_zip({"a/junit.xml": good, "b/evil.xml": XXE, "readme.txt": b"x"}))
    assert set(report.suites) == {"blog", "shop"}
    assert len(bad) == 1
    assert bad[0][0] == "junit_hostile"
    assert "evil.xml" in bad[0][1]
    with pytest.raises(JUnitError):
        parse_zip(b"PK not a zip")


def test_analyze_junit_cli(tmp_path: Path) -> None:
    """`analyze junit --json` prints per-suite time and counts and the slowest cases; a bad file
    exits 1 naming it, after printing what it has."""
    files = [str(p) for p in JUNIT]
    result = run_cli("analyze", "junit", "--json", *files)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data["suites"]) == {"blog", "shop"}
    assert data["slowest"][0]["seconds"] >= data["slowest"][-1]["seconds"]
    bad = tmp_path / "bad.xml"
    bad.write_bytes(XXE)
    table = run_cli("analyze", "junit", "--suite-depth", "2", files[0], str(bad))
    assert table.returncode == 1
    assert "bad.xml" in table.stderr
    assert "shop.tests" in table.stdout
    assert run_cli("analyze", "junit", "--suite-depth", "0", files[0]).returncode == 2
