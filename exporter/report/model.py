"""The report's content: plain dataclasses of numbers (seconds, bytes, ratios 0–1) and names, the
same for HTML, markdown and JSON. A section without data carries `hint`: the config that enables
it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Headline:
    branch: str | None  # the target's branch; None: every branch
    runs: int  # successful runs in the period
    all_runs: int
    p50: float | None
    p90: float | None
    latest: float | None
    target: tuple[float, float] | None = None  # (lower, upper)
    # The histogram bucket the median falls in: the median is interpolated inside it, so a wide
    # bucket (all runs between a baseline's bounds) makes it an estimate; the page says so.
    p50_bucket: tuple[float, float] | None = None

    @property
    def p50_estimate(self) -> tuple[float, float] | None:
        """The median's bucket when it is wider than a minute: the median is then an estimate."""
        bucket = self.p50_bucket
        return bucket if bucket is not None and bucket[1] - bucket[0] > 60 else None

    baseline: tuple[float, float] | None = None
    within_share: float | None = None  # successful runs at or below the target's upper bound
    progress: float | None = None  # 0 at the baseline's upper bound, 1 at the target's
    target_met: bool | None = None  # the median at or below the target's upper bound
    hint: str | None = None


@dataclass
class PathJob:
    name: str
    mean: float | None  # mean of the job's successful runs in the period
    latest: float | None  # seconds in the latest successful run's critical path


@dataclass
class PathBar:
    label: str
    jobs: list[PathJob]
    critical_path_mean: float | None  # cicd_pipeline_run_critical_path_seconds: sum ÷ count
    start: float | None = None
    end: float | None = None
    total: float = field(init=False)  # the jobs' means added up

    def __post_init__(self) -> None:
        self.total = sum(j.mean or 0.0 for j in self.jobs)


@dataclass
class CriticalPath:
    bars: list[PathBar] = field(default_factory=list)  # the baseline period first, now last
    hint: str | None = None


@dataclass
class GraphNode:
    id: str
    label: str
    needs: list[str]
    mean: float | None
    critical: bool
    layer: int = 0
    row: int = 0


@dataclass
class Graph:
    nodes: list[GraphNode] = field(default_factory=list)
    hint: str | None = None


@dataclass
class Bar:
    """One bar of a breakdown: seconds and its share of the whole (the job, the suite total)."""

    name: str
    seconds: float
    share: float | None = None
    detail: str | None = None


@dataclass
class JobBottleneck:
    job: str
    job_mean: float | None
    steps: list[Bar]
    instructions: list[Bar]
    hint: str | None = None


@dataclass
class Bottlenecks:
    jobs: list[JobBottleneck] = field(default_factory=list)
    hint: str | None = None


@dataclass
class Backend:
    name: str
    builds: int
    import_mean: float | None
    export_mean: float | None


@dataclass
class HitRatio:
    job: str
    cached: int
    executed: int
    ratio: float | None
    latest: float | None


@dataclass
class Restores:
    job: str
    hits: int
    misses: int
    mean_seconds: float | None


@dataclass
class CacheUsage:
    repository: str
    used: float | None
    limit: float | None
    entries: float | None
    buildkit: float | None
    other: float | None
    share: float | None = field(init=False)  # of the limit

    def __post_init__(self) -> None:
        self.share = self.used / self.limit if self.used is not None and self.limit else None


@dataclass
class Cache:
    backends: list[Backend] = field(default_factory=list)
    hit_ratios: list[HitRatio] = field(default_factory=list)
    restores: list[Restores] = field(default_factory=list)
    usage: CacheUsage | None = None
    hint: str | None = None
    usage_hint: str | None = None


@dataclass
class Image:
    registry: str
    image: str
    tag: str
    platform: str
    bytes: float
    layers: int | None


@dataclass
class ImageSet:
    name: str
    total: float
    unique: float
    duplication: float = field(init=False)  # share of the total that is not unique

    def __post_init__(self) -> None:
        self.duplication = 1 - self.unique / self.total if self.total else 0.0


@dataclass
class Images:
    images: list[Image] = field(default_factory=list)
    sets: list[ImageSet] = field(default_factory=list)
    hint: str | None = None


@dataclass
class Suite:
    name: str
    runs: int
    mean: float | None  # seconds per run
    latest: float | None
    share: float | None
    passed: int = 0
    failed: int = 0  # failed + error
    skipped: int = 0


@dataclass
class FlakyTest:
    """A test case that failed and then passed on a re-run of the same commit."""

    suite: str
    case: str  # classname.name
    occurrences: int
    runs: int
    rerun_seconds: float
    last_seen: float


@dataclass
class Tests:
    suites: list[Suite] = field(default_factory=list)  # slowest first
    total_mean: float | None = None
    hint: str | None = None
    flaky: list[FlakyTest] = field(default_factory=list)  # costliest first
    flaky_hint: str | None = None

    @property
    def failing(self) -> list[Suite]:
        return sorted((s for s in self.suites if s.failed), key=lambda s: -s.failed)


@dataclass
class Evidence:
    label: str
    text: str


@dataclass
class Opportunity:
    kind: str
    title: str
    minutes_saved: float  # per run, on the critical path
    evidence: list[Evidence]
    assumption: str


@dataclass
class Opportunities:
    items: list[Opportunity] = field(default_factory=list)
    critical_path_model: float | None = None  # seconds: the path by job means
    model: str = ""  # "needs" (the graph) or "chain" (the latest path's jobs only)
    hint: str | None = None


@dataclass
class Cost:
    runs: int
    runner_minutes_per_run: float | None
    runs_per_month: float | None = None
    runner_minutes_per_month: float | None = None
    saved_minutes_per_run: float | None = None  # wall minutes against the baseline's upper bound
    saved_minutes_per_month: float | None = None
    runner_minutes_saved_per_month: float | None = None  # against the baseline period
    hint: str | None = None
    month_hint: str | None = None


@dataclass
class Week:
    start: float
    end: float
    runs: int
    p50: float | None
    p90: float | None


@dataclass
class Trend:
    weeks: list[Week] = field(default_factory=list)
    target: tuple[float, float] | None = None
    baseline: tuple[float, float] | None = None
    hint: str | None = None


@dataclass
class Pipeline:
    repository: str
    workflow: str
    headline: Headline
    critical_path: CriticalPath
    graph: Graph
    bottlenecks: Bottlenecks
    cache: Cache
    tests: Tests
    opportunities: Opportunities
    cost: Cost
    trend: Trend


@dataclass
class Report:
    source: str
    kind: str
    generated_at: float
    period_start: float | None
    period_end: float | None
    baseline_start: float | None
    baseline_end: float | None
    pipelines: list[Pipeline]
    images: Images
    empty_help: list[str] = field(default_factory=list)  # set when there is no run at all
