"""ReportInput → Report: every pipeline's sections, the images, or the empty state."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from exporter import metrics as m
from exporter.analysis.workflow import WorkflowGraph
from exporter.report import hints, opportunities, sections
from exporter.report.inputs import ReportInput
from exporter.report.model import (
    Bottlenecks,
    CriticalPath,
    Graph,
    GraphNode,
    Headline,
    Images,
    JobBottleneck,
    Opportunities,
    Pipeline,
    Report,
    Tests,
)
from exporter.report.paths import PathModel, chain_model, choose_graph, graph_model, layers
from exporter.report.samples import Samples

STEPS_SHOWN = 8
# Without a known critical path, the bottlenecks of this many slowest jobs.
SLOWEST = 3
BUILD_JOB = ("build", "docker")


def build(source: ReportInput) -> Report:
    now = source.now
    names = sections.pipelines(now.samples)
    images = sections.images(now.samples)
    report = Report(
        source=source.source,
        kind=source.kind,
        generated_at=source.generated_at,
        period_start=now.start,
        period_end=now.end,
        baseline_start=source.baseline.start if source.baseline else None,
        baseline_end=source.baseline.end if source.baseline else None,
        pipelines=[_pipeline(source, repo, workflow, images) for repo, workflow in names],
        images=images,
    )
    if not report.pipelines:
        report.empty_help = list(
            hints.EMPTY_STORE if source.kind == "store" else hints.EMPTY_PROMETHEUS
        )
    return report


def _pipeline(source: ReportInput, repo: str, workflow: str, images: Images) -> Pipeline:
    samples = source.now.samples
    head = sections.headline(samples, repo, workflow)
    means = sections.job_means(samples, repo, workflow)
    jobs = samples.label_values(m.JOB_DURATION.name, "job_name", repository=repo, workflow=workflow)
    graph = choose_graph(source.graphs.get(repo, ()), jobs)
    path = _critical_path(source, repo, workflow, head, graph)
    path_jobs = [j.name for j in path.bars[-1].jobs] if path.bars else []
    model = graph_model(graph, means) if graph else chain_model(path_jobs, means)
    tests = sections.tests(samples, repo, workflow)
    context = opportunities.Context(samples, repo, workflow, path_jobs, model, source.now.seconds)
    return Pipeline(
        repository=repo,
        workflow=workflow,
        headline=head,
        critical_path=path,
        graph=_graph(graph, means, path_jobs, source.kind),
        bottlenecks=_bottlenecks(samples, repo, workflow, path_jobs),
        cache=sections.cache(samples, repo, workflow),
        tests=tests,
        opportunities=_opportunities(context, tests, images),
        cost=sections.cost(source.now, source.baseline, repo, workflow, head),
        trend=sections.trend(source.weeks, repo, workflow, head, source.kind),
    )


def _opportunities(context: opportunities.Context, tests: Tests, images: Images) -> Opportunities:
    if not context.path_jobs:
        return Opportunities(hint=hints.OPPORTUNITIES_NO_PATH)
    return opportunities.find(context, tests, images)


def _order(graph: WorkflowGraph | None) -> Callable[[Sequence[str]], list[str]]:
    """Jobs in the order they run: by the needs: graph's columns, else by name."""
    column = layers({i: d.needs for i, d in graph.jobs.items()}) if graph else {}

    def order(names: Sequence[str]) -> list[str]:
        def key(name: str) -> tuple[int, str]:
            node = graph.resolve(name) if graph else None
            return (column.get(node, 0) if node else 0, name)

        return sorted(names, key=key)

    return order


def _critical_path(
    source: ReportInput, repo: str, workflow: str, head: Headline, graph: WorkflowGraph | None
) -> CriticalPath:
    order = _order(graph)
    pipeline = (repo, workflow, head.branch)
    now = sections.path_bar(source.now, "now", pipeline, order=order)
    if now is None:
        return CriticalPath(hint=hints.PATH)
    bars = [now]
    if source.baseline is not None:
        names = [j.name for j in now.jobs]
        before = sections.path_bar(
            source.baseline, "baseline period", pipeline, order=order, fallback=names
        )
        if before is not None:
            bars.insert(0, before)
    hint = hints.PATH_PROMETHEUS if source.kind == "prometheus" and not now.jobs else None
    return CriticalPath(bars, hint)


def _graph(
    graph: WorkflowGraph | None, means: dict[str, float], path: Sequence[str], kind: str
) -> Graph:
    if graph is None:
        return Graph(hint=hints.GRAPH_STORE if kind == "store" else hints.GRAPH_PROMETHEUS)
    model: PathModel = graph_model(graph, means)
    critical = {graph.resolve(name) for name in path}
    column = layers({i: d.needs for i, d in graph.jobs.items()})
    nodes = [
        GraphNode(
            job_id,
            d.name or job_id,
            list(d.needs),
            model.durations.get(job_id),
            job_id in critical,
            column.get(job_id, 0),
        )
        for job_id, d in graph.jobs.items()
    ]
    nodes.sort(key=lambda n: (n.layer, not n.critical, n.id))
    rows: dict[int, int] = {}
    for node in nodes:
        node.row = rows.get(node.layer, 0)
        rows[node.layer] = node.row + 1
    return Graph(nodes)


def _bottlenecks(samples: Samples, repo: str, workflow: str, path: Sequence[str]) -> Bottlenecks:
    """Each critical-path job's slowest steps and Dockerfile instructions; without the path,
    those of the slowest jobs."""
    jobs, hint = list(path), None
    if not jobs:
        means = sections.job_means(samples, repo, workflow)
        jobs = sorted(means, key=lambda j: -means[j])[:SLOWEST]
        hint = hints.SLOWEST_JOBS if jobs else hints.PATH
    found = []
    for job in jobs:
        steps, job_mean = sections.own_steps(samples, repo, workflow, job)
        build = sections.instructions(samples, repo, workflow, job, job_mean)
        missing = None
        if not build and any(word in job.lower() for word in BUILD_JOB):
            missing = hints.BUILDKIT
        found.append(
            JobBottleneck(job, job_mean, steps[:STEPS_SHOWN], build[:STEPS_SHOWN], missing)
        )
    return Bottlenecks(found, hint)
