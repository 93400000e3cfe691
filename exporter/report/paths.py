"""The job dependency graph as the report uses it: which definition a job name belongs to, layers
for drawing, and the critical path's length by job means — also with some jobs made shorter,
which is how opportunities are estimated."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.analysis.workflow import WorkflowGraph


@dataclass(frozen=True)
class PathModel:
    """Nodes with their durations and dependencies. Built from the workflow's `needs:` graph
    ("needs"), or, without one, from the latest critical path's jobs as a chain ("chain": each
    job waits for the one before, so shortening a job shortens the path by as much)."""

    durations: Mapping[str, float]
    needs: Mapping[str, tuple[str, ...]]
    resolve: Callable[[str], str | None]
    kind: str

    def length(self, overrides: Mapping[str, float] | None = None) -> float:
        """The longest path, with `overrides` (job name → seconds) in place of the means."""
        durations = dict(self.durations)
        for name, seconds in (overrides or {}).items():
            node = self.resolve(name)
            if node is not None:
                durations[node] = seconds
        finish: dict[str, float] = {}
        for node in topological(self.needs):
            before = max((finish.get(n, 0.0) for n in self.needs.get(node, ())), default=0.0)
            finish[node] = before + durations.get(node, 0.0)
        return max(finish.values(), default=0.0)

    def saving(self, overrides: Mapping[str, float]) -> float:
        return max(0.0, self.length() - self.length(overrides))


def topological(needs: Mapping[str, Sequence[str]]) -> list[str]:
    """Nodes after everything they need; a cycle (an invalid file) is broken where it is met."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    for root in sorted(needs):
        stack = [(root, iter(needs.get(root, ())))]
        state.setdefault(root, 1)
        if state[root] == 2:
            continue
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if state.get(c, 0) == 0 and c in needs), None)
            if child is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            else:
                state[child] = 1
                stack.append((child, iter(needs.get(child, ()))))
    return order


def layers(needs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Column of each node: 0 without needs, else one after the furthest need."""
    layer: dict[str, int] = {}
    for node in topological(needs):
        layer[node] = 1 + max((layer.get(n, -1) for n in needs.get(node, ())), default=-1)
    return layer


def graph_model(graph: WorkflowGraph, means: Mapping[str, float]) -> PathModel:
    """`means` by job name; a matrix job's instances share a definition: the slowest counts."""
    durations: dict[str, float] = {}
    for name, seconds in means.items():
        node = graph.resolve(name)
        if node is not None:
            durations[node] = max(durations.get(node, 0.0), seconds)
    needs = {job_id: d.needs for job_id, d in graph.jobs.items()}
    return PathModel(durations, needs, graph.resolve, "needs")


def chain_model(jobs: Sequence[str], means: Mapping[str, float]) -> PathModel:
    needs = {name: (jobs[i - 1],) if i else () for i, name in enumerate(jobs)}
    durations = {name: means.get(name, 0.0) for name in jobs}
    known = set(jobs)
    return PathModel(durations, needs, lambda n: n if n in known else None, "chain")


def choose_graph(graphs: Iterable[WorkflowGraph], job_names: Sequence[str]) -> WorkflowGraph | None:
    """The stored graph that maps most of the pipeline's job names (a repository keeps one per
    workflow file, and the metrics name workflows, not files)."""
    best: tuple[int, WorkflowGraph] | None = None
    for graph in graphs:
        score = sum(1 for name in job_names if graph.resolve(name) is not None)
        if score and (best is None or score > best[0]):
            best = (score, graph)
    return best[1] if best else None
