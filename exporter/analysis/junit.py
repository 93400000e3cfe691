"""JUnit XML → per-suite (per-app) time and case counts.

Streaming (SAX over 64 KiB chunks, text ignored: constant memory) and safe against hostile XML:
defusedxml forbids DTDs, entity declarations and external references, so billion-laughs and XXE
documents are rejected before any expansion. Reads pytest xunit1/xunit2 and Django xmlrunner (single file and per
class, suite names with a `-YYYYMMDDHHMMSS` suffix), nested `<testsuites>`.
"""

from __future__ import annotations

import io
import lzma
import math
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, Literal
from xml.sax import SAXException
from xml.sax.handler import ContentHandler

from defusedxml import DefusedXmlException
from defusedxml.sax import make_parser

CaseResult = Literal["passed", "failed", "error", "skipped"]
RESULTS: tuple[CaseResult, ...] = ("passed", "failed", "error", "skipped")
_TIMESTAMP_SUFFIX = re.compile(r"-\d{14}$")
# A case's or a suite's seconds are capped here (about 31 years): `time="1e308"` twice must not
# sum to infinity, which no histogram can observe.
MAX_SECONDS = 1e9
# What a damaged or unusual zip member raises while it is read (bad deflate data, an encrypted
# member, an unsupported compression method).
_MEMBER_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
)


class JUnitError(ValueError):
    """Not a JUnit document we can read safely; `reason` is the skip reason label."""

    def __init__(self, message: str, reason: str = "junit_invalid") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Case:
    suite: str
    name: str
    seconds: float
    result: CaseResult
    classname: str = ""


@dataclass
class SuiteTotals:
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    slowest: list[Case] = field(default_factory=list)

    def add(self, case: Case, keep: int) -> None:
        self.seconds = min(MAX_SECONDS, self.seconds + case.seconds)
        self.counts[case.result] += 1
        self.slowest.append(case)
        if len(self.slowest) > keep * 4:
            self.slowest = sorted(self.slowest, key=lambda c: -c.seconds)[:keep]


@dataclass
class Report:
    suites: dict[str, SuiteTotals] = field(default_factory=dict)
    files: int = 0
    # Every case as it is read (per-case consumers bound their own memory); not merged.
    on_case: Callable[[Case], None] | None = None

    def add(self, case: Case, keep: int = 5) -> None:
        self.suites.setdefault(case.suite, SuiteTotals()).add(case, keep)
        if self.on_case is not None:
            self.on_case(case)

    def merge(self, other: Report, keep: int = 5) -> None:
        self.files += other.files
        for name, totals in other.suites.items():
            mine = self.suites.setdefault(name, SuiteTotals())
            mine.seconds = min(MAX_SECONDS, mine.seconds + totals.seconds)
            for result, count in totals.counts.items():
                mine.counts[result] += count
            mine.slowest = sorted(mine.slowest + totals.slowest, key=lambda c: -c.seconds)[
                : keep * 4
            ]


def suite_of(classname: str | None, suite_name: str | None, depth: int) -> str:
    """The app: the first `depth` dotted components of classname, else the testsuite name
    without xmlrunner's timestamp suffix."""
    if classname:
        return ".".join(classname.split(".")[:depth])
    name = _TIMESTAMP_SUFFIX.sub("", suite_name or "")
    return name or "unknown"


def _seconds(value: str | None) -> float:
    try:
        seconds = float(value or 0)
    except ValueError:
        return 0.0
    return min(MAX_SECONDS, seconds) if seconds >= 0 and math.isfinite(seconds) else 0.0


class _Handler(ContentHandler):
    """SAX events → cases; character data is ignored, so memory stays constant in the input size."""

    def __init__(self, report: Report, depth: int, keep: int) -> None:
        super().__init__()
        self.report = report
        self.depth = depth
        self.keep = keep
        self.suites: list[str] = []
        self.saw_root = False
        self.case: dict[str, str] | None = None
        self.result: CaseResult = "passed"

    def startElement(self, name: str, attrs: Any) -> None:
        tag = name.rsplit(":", 1)[-1]
        if not self.saw_root:
            if tag not in ("testsuites", "testsuite"):
                raise JUnitError(f"root element is <{tag}>, not <testsuites>/<testsuite>")
            self.saw_root = True
        if tag == "testsuite":
            self.suites.append(attrs.get("name", ""))
        elif tag == "testcase":
            self.case = {k: attrs.get(k, "") for k in ("classname", "name", "time")}
            self.result = "passed"
        elif self.case is not None:
            if tag == "failure":
                self.result = "failed"
            elif tag == "error" and self.result != "failed":
                self.result = "error"
            elif tag == "skipped" and self.result == "passed":
                self.result = "skipped"

    def endElement(self, name: str) -> None:
        tag = name.rsplit(":", 1)[-1]
        if tag == "testcase" and self.case is not None:
            suite = suite_of(
                self.case["classname"], self.suites[-1] if self.suites else None, self.depth
            )
            case = Case(
                suite,
                self.case["name"],
                _seconds(self.case["time"]),
                self.result,
                self.case["classname"],
            )
            self.report.add(case, self.keep)
            self.case = None
        elif tag == "testsuite" and self.suites:
            self.suites.pop()


def parse_junit(
    source: IO[bytes],
    depth: int = 1,
    keep: int = 5,
    on_case: Callable[[Case], None] | None = None,
) -> Report:
    """One JUnit XML document, fed to a defused expat parser in 64 KiB chunks; `on_case` sees
    every case as it is read. Raises JUnitError for hostile (DTD, entities, external references),
    truncated or non-JUnit input."""
    report = Report(files=1, on_case=on_case)
    handler = _Handler(report, depth, keep)
    parser = make_parser()
    parser.forbid_dtd = True
    parser.forbid_entities = True
    parser.forbid_external = True
    parser.setContentHandler(handler)
    try:
        while chunk := source.read(1 << 16):
            parser.feed(chunk)
        parser.close()
    except DefusedXmlException as exc:
        raise JUnitError(
            f"forbidden XML construct: {type(exc).__name__}", "junit_hostile"
        ) from None
    except SAXException as exc:
        raise JUnitError(f"not well-formed XML: {exc.getMessage()}", "junit_invalid") from None
    if not handler.saw_root:
        raise JUnitError("empty document")
    return report


def parse_zip(
    data: bytes | IO[bytes],
    depth: int = 1,
    max_uncompressed: int = 256 * 1024 * 1024,
    keep: int = 5,
    on_case: Callable[[Case], None] | None = None,
) -> tuple[Report, list[tuple[str, str]]]:
    """Every `.xml` member of an artifact zip. The uncompressed total is counted as it is read (the
    sizes in the zip directory can lie), and reading stops past `max_uncompressed`. Returns the
    report and, for each member skipped as unreadable, its (reason, detail)."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise JUnitError(f"not a zip archive: {exc}", "artifact_invalid") from None
    report = Report()
    skipped: list[tuple[str, str]] = []
    budget = [max_uncompressed]
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.lower().endswith(".xml"):
                continue
            try:
                with archive.open(info) as member:
                    capped = io.BufferedReader(_Capped(member, budget), buffer_size=1 << 16)
                    report.merge(parse_junit(capped, depth, keep, on_case), keep)
            except JUnitError as exc:
                if exc.reason == "artifact_too_large":
                    raise
                skipped.append((exc.reason, f"{info.filename}: {exc}"))
            except _MEMBER_ERRORS as exc:
                module, name = type(exc).__module__, type(exc).__name__
                kind = name if module == "builtins" else f"{module}.{name}"
                skipped.append(("junit_invalid", f"{info.filename}: {kind}: {exc}"[:300]))
    return report, skipped


class _Capped(io.RawIOBase):
    """A raw reader that raises once the budget shared by an archive's members is spent."""

    def __init__(self, inner: IO[bytes], budget: list[int]) -> None:
        self._inner = inner
        self._budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        chunk = self._inner.read(min(len(view), 1 << 16))
        self._budget[0] -= len(chunk)
        if self._budget[0] < 0:
            raise JUnitError("uncompressed artifact exceeds the cap", "artifact_too_large")
        view[: len(chunk)] = chunk
        return len(chunk)
