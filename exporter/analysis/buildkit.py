"""BuildKit `--progress=plain` output → one summary per build: duration, cache backend, cache import
and export seconds, Dockerfile steps cached/executed/errored/canceled and per-instruction times.

Pure and streaming: `BuildKitParser.feed(text, ts, step)` per line, `finish()` at the end; memory
is bounded by the vertices of the build in progress, never by the log's length. Lines may carry
other prefixes (a CI's clock, GitHub's timestamp already stripped by the job-log reader).
Grammar: moby/buildkit util/progress/progressui/printer.go; samples: tests/fixtures/buildkit-logs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

VertexKind = Literal["step", "internal", "cache_import", "cache_export", "image_export", "other"]
StepResult = Literal["cached", "executed", "errored", "canceled"]
STEP_RESULTS: tuple[StepResult, ...] = ("cached", "executed", "errored", "canceled")
MAX_INSTRUCTION = 60
MAX_VERTICES = 2_000  # per build; beyond it new vertices are ignored (a garbage guard)

# `#N rest`, possibly behind another prefix (a timestamp, `20:02:37  `, `Error: `).
_LINE = re.compile(r"^(?:[^#]{0,64}?\s)?#(\d{1,6}) (.*)$|^#(\d{1,6}) (.*)$")
_DONE = re.compile(r"^DONE (\d+(?:\.\d+)?)s$")
_ELAPSED = re.compile(r"^(\d+\.\d+) ")
_STATUS_SECONDS = re.compile(r" (\d+(?:\.\d+)?)s(?: done)?$")
_STEP = re.compile(r"^\[(?P<inside>[^\]]*?)\s*(?P<i>\d+)/(?P<n>\d+)\]\s+(?P<instr>.+)$")
_IMPORT = re.compile(r"^importing cache manifest from (?P<ref>\S+)")
_HINT = re.compile(r"cache-(?:to|from)[:=\s]+\s*(?:type=)?(gha|registry|local|s3|azblob|inline)\b")
_EXPORT_CACHE = {
    "exporting to github actions cache": "gha",
    "exporting cache to registry": "registry",
    "exporting cache to amazon s3": "s3",
    "exporting cache to azure blob storage": "azblob",
    "exporting cache to client directory": "local",
    "exporting cache": "",
}


def import_backend(ref: str) -> str:
    """`gha:123` → gha; `s3:…`, `azblob:…`, `local:…` by scheme; anything else is a registry ref."""
    scheme = ref.split(":", 1)[0].lower()
    if scheme in ("gha", "s3", "azblob", "local"):
        return scheme
    return "registry"


@lru_cache(maxsize=4096)
def normalize_instruction(text: str) -> str:
    """`RUN pip install -r requirements.txt` → `RUN pip install`; `RUN --mount=… apt-get update &&
    apt-get install -y x` → `RUN apt-get update`; `COPY --from=build /app /app` → `COPY /app`.
    At most 60 characters."""
    text = " ".join(text.split())
    keyword, _, rest = text.partition(" ")
    keyword = keyword.upper()
    if keyword == "RUN":
        command = re.split(r"&&|\|\||;|\|", rest, maxsplit=1)[0]
        # Only the first words matter: a plain split (quotes stripped) is enough and fast.
        words = [w.strip("'\"") for w in command.split()]
        words = [
            w
            for w in words
            if not w.startswith("-") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)
        ]
        if words and words[0] in ("sh", "bash", "/bin/sh", "/bin/bash") and len(words) > 1:
            words = words[1:]
        result = " ".join(["RUN", *words[:2]])
    else:
        args = [w for w in rest.split() if not w.startswith("--")]
        result = " ".join([keyword, *args[:1]])
    return result[:MAX_INSTRUCTION].rstrip()


@dataclass
class Instruction:
    stage: str
    instruction: str
    seconds: float
    result: StepResult


@dataclass
class BuildSummary:
    index: int
    step: int | None
    duration_seconds: float
    cache_backend: str
    cache_import_seconds: float
    cache_export_seconds: float
    cache_export_prepare_seconds: float
    steps: dict[str, int]
    instructions: list[Instruction]
    error: str | None = None
    imported: bool = False  # the build imported a cache (so its import time is meaningful)
    exported: bool = False

    @property
    def cache_hit_ratio(self) -> float | None:
        cached, executed = self.steps["cached"], self.steps["executed"]
        return cached / (cached + executed) if cached + executed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step": self.step,
            "duration_seconds": round(self.duration_seconds, 3),
            "cache_backend": self.cache_backend,
            "cache_import_seconds": round(self.cache_import_seconds, 3),
            "cache_export_seconds": round(self.cache_export_seconds, 3),
            "cache_export_prepare_seconds": round(self.cache_export_prepare_seconds, 3),
            "cache_hit_ratio": None
            if self.cache_hit_ratio is None
            else round(self.cache_hit_ratio, 4),
            "steps": dict(self.steps),
            "instructions": [
                {
                    "stage": i.stage,
                    "instruction": i.instruction,
                    "seconds": round(i.seconds, 3),
                    "result": i.result,
                }
                for i in self.instructions
            ],
            "error": self.error,
        }


@dataclass
class _Vertex:
    name: str
    kind: VertexKind
    order: int
    stage: str = ""
    backend: str = ""
    terminal: str | None = None  # done, cached, error, canceled
    seconds: float | None = None  # from DONE
    status_seconds: float = 0.0  # sum of "… Ns done" status lines
    prepare_seconds: float = 0.0
    elapsed: float = 0.0  # last RUN output elapsed prefix
    first_ts: float | None = None
    last_ts: float | None = None

    def duration(self) -> float:
        if self.seconds is not None:
            return self.seconds
        spans = [self.status_seconds, self.elapsed]
        if self.first_ts is not None and self.last_ts is not None:
            spans.append(self.last_ts - self.first_ts)
        return max(0.0, *spans)


def _classify(name: str) -> tuple[VertexKind, str, str]:
    """(kind, stage, backend) of a vertex name."""
    if name.startswith("[internal]") or name.startswith("[auth]"):
        return "internal", "", ""
    step = _STEP.match(name)
    if step is not None:
        inside = step.group("inside").split()
        return "step", (inside[-1] if inside else "unnamed"), ""
    lowered = name.lower()
    imported = _IMPORT.match(name)
    if imported is not None:
        return "cache_import", "", import_backend(imported.group("ref"))
    for prefix, backend in _EXPORT_CACHE.items():
        if lowered == prefix or lowered.startswith(prefix + " "):
            return "cache_export", "", backend
    if lowered.startswith("exporting to "):
        return "image_export", "", ""
    return "other", "", ""


@dataclass
class _Build:
    index: int
    step: int | None
    hint: str
    vertices: dict[int, _Vertex] = field(default_factory=dict)
    first_ts: float | None = None
    last_ts: float | None = None
    error: str | None = None

    @property
    def substantive(self) -> bool:
        """Not just bake-definition or other internal vertices."""
        return any(v.kind != "internal" for v in self.vertices.values())

    def summary(self) -> BuildSummary:
        steps: dict[str, int] = dict.fromkeys(STEP_RESULTS, 0)
        instructions: list[Instruction] = []
        imports = exports = prepare = 0.0
        import_backends: list[str] = []
        export_backends: list[str] = []
        for vertex in sorted(self.vertices.values(), key=lambda v: v.order):
            if vertex.kind == "cache_import":
                imports += vertex.duration()
                import_backends.append(vertex.backend)
            elif vertex.kind == "cache_export":
                exports += vertex.duration()
                prepare += vertex.prepare_seconds
                export_backends.append(vertex.backend)
            elif vertex.kind == "step":
                instruction = _instruction(vertex)
                steps[instruction.result] += 1
                instructions.append(instruction)
        # Older BuildKit prints a bare "exporting cache": then the step's cache-to hint, else unknown.
        backend = (
            next((b for b in import_backends + export_backends if b), "")
            or self.hint
            or ("none" if not import_backends and not export_backends else "unknown")
        )
        return BuildSummary(
            self.index,
            self.step,
            self._duration(),
            backend,
            imports,
            exports,
            prepare,
            steps,
            instructions,
            self.error,
            imported=bool(import_backends),
            exported=bool(export_backends),
        )

    def _duration(self) -> float:
        if self.first_ts is not None and self.last_ts is not None:
            return max(0.0, self.last_ts - self.first_ts)
        return max(0.0, sum(v.duration() for v in self.vertices.values() if v.kind != "internal"))


def _instruction(vertex: _Vertex) -> Instruction:
    """A build step's instruction, its result and its own seconds (0 when cached)."""
    terminal = vertex.terminal
    result: StepResult
    if terminal == "cached":
        result, seconds = "cached", 0.0
    elif terminal == "done":
        result, seconds = "executed", vertex.duration()
    elif terminal == "error":
        result, seconds = "errored", vertex.duration()
    else:
        # No terminal line: canceled when the log is over (a cancelled job).
        result, seconds = "canceled", vertex.duration()
    raw = _STEP.match(vertex.name)
    text = raw.group("instr") if raw else vertex.name
    return Instruction(vertex.stage, normalize_instruction(text), seconds, result)


class BuildKitParser:
    """Feed lines; completed builds come out of `feed` (when the next one starts) and `finish`."""

    def __init__(self) -> None:
        self._build: _Build | None = None
        self._count = 0
        self._hints: dict[int | None, str] = {}
        self._order = 0

    def _start(self, step: int | None) -> None:
        self._build = _Build(-1, step, self._hints.get(step, ""))

    def feed(
        self, text: str, ts: float | None = None, step: int | None = None
    ) -> list[BuildSummary]:
        """One log line; returns the builds it closed."""
        match = _LINE.match(text)
        if match is None:
            self._other_line(text, step)
            return []
        number = int(match.group(1) or match.group(3))
        rest = ((match.group(2) if match.group(1) else match.group(4)) or "").rstrip()
        done: list[BuildSummary] = []
        build = self._build_for(number, rest, step, done)
        if build is not None:
            self._vertex_line(build, number, rest, ts)
        return done

    def _other_line(self, text: str, step: int | None) -> None:
        """A line outside BuildKit's numbered output: a cache-to hint or the build's error."""
        hint = _HINT.search(text)
        if hint is not None:
            self._hints[step] = hint.group(1)
        if self._build is not None and text.startswith("ERROR: ") and self._build.error is None:
            self._build.error = text[7:200]

    def _build_for(
        self, number: int, rest: str, step: int | None, done: list[BuildSummary]
    ) -> _Build | None:
        """The build this vertex line belongs to, closing the previous one when a new build
        starts (another step, `#0 building with`, or vertex numbers that restarted)."""
        build = self._build
        if build is not None and step != build.step and build.vertices:
            done.extend(self._close(build))
            build = None
        if number == 0 and rest.startswith("building with"):
            if build is not None:
                done.extend(self._close(build))
            self._start(step)
            return None
        vertex = build.vertices.get(number) if build is not None else None
        if (
            build is not None
            and vertex is not None
            and vertex.terminal is not None
            and not self._is_status(rest)
        ):
            # A finished vertex's number seen again with a header (resumption headers are
            # printed only for unfinished vertices): the numbers restarted, so a new build.
            done.extend(self._close(build))
            build = None
        if build is None:
            self._start(step)
            build = self._build
        return build

    def _vertex_line(self, build: _Build, number: int, rest: str, ts: float | None) -> None:
        if ts is not None:
            build.first_ts = ts if build.first_ts is None else build.first_ts
            build.last_ts = ts
        vertex = build.vertices.get(number)
        if vertex is None:
            if len(build.vertices) >= MAX_VERTICES or not rest or rest == "...":
                return
            kind, stage, backend = _classify(rest)
            self._order += 1
            build.vertices[number] = _Vertex(
                rest, kind, self._order, stage, backend, first_ts=ts, last_ts=ts
            )
            return
        if ts is not None:
            vertex.first_ts = ts if vertex.first_ts is None else vertex.first_ts
            vertex.last_ts = ts
        self._status(build, vertex, rest)

    @staticmethod
    def _is_status(rest: str) -> bool:
        return rest in ("CACHED", "CANCELED", "...") or rest.startswith(("DONE ", "ERROR"))

    @staticmethod
    def _status(build: _Build, vertex: _Vertex, rest: str) -> None:
        if rest in (vertex.name, "..."):
            return
        done = _DONE.match(rest)
        if done is not None:
            vertex.terminal, vertex.seconds = "done", float(done.group(1))
            return
        if rest == "CACHED":
            vertex.terminal = "cached"
            return
        if rest == "CANCELED":
            vertex.terminal = "canceled"
            return
        if rest.startswith("ERROR"):
            vertex.terminal = "error"
            if build.error is None:
                build.error = rest.removeprefix("ERROR:").strip()[:200] or "error"
            return
        elapsed = _ELAPSED.match(rest)
        if elapsed is not None:
            vertex.elapsed = max(vertex.elapsed, float(elapsed.group(1)))
            return
        seconds = _STATUS_SECONDS.search(rest)
        if seconds is not None and rest.endswith("done"):
            value = float(seconds.group(1))
            vertex.status_seconds += value
            if rest.startswith("preparing build cache for export"):
                vertex.prepare_seconds = max(vertex.prepare_seconds, value)

    def _close(self, build: _Build) -> list[BuildSummary]:
        if not build.substantive:
            return []
        build.index = self._count
        self._count += 1
        return [build.summary()]

    def finish(self) -> list[BuildSummary]:
        build, self._build = self._build, None
        return self._close(build) if build is not None else []


def parse_buildkit(
    lines: Iterable[str | tuple[str, float | None, int | None]],
) -> Iterator[BuildSummary]:
    """Builds from bare lines, or (text, ts, step) tuples from the job-log reader."""
    parser = BuildKitParser()
    for line in lines:
        if isinstance(line, str):
            yield from parser.feed(line)
        else:
            yield from parser.feed(*line)
    yield from parser.finish()
