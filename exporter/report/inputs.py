"""What a report is computed from: the periods (now, a baseline period, the weeks of the trend),
each as Samples, and the workflow `needs:` graphs when the state store has them."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.analysis.workflow import WorkflowGraph
from exporter.report.samples import Samples


@dataclass
class Period:
    samples: Samples
    # Unix times; None for the state store, which holds totals, not history.
    start: float | None = None
    end: float | None = None

    @property
    def seconds(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return self.end - self.start


@dataclass
class ReportInput:
    source: str  # "state store …" or "Prometheus …", for the page's header
    kind: str  # "store" or "prometheus"
    generated_at: float
    now: Period
    baseline: Period | None = None
    weeks: list[Period] = field(default_factory=list)
    # Per repository, the workflow graphs the state store keeps (store only).
    graphs: dict[str, list[WorkflowGraph]] = field(default_factory=dict)
