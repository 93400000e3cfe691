"""The `workflow` label of one repository, bounded: the names configured (the `workflows`
allowlist, targets) always stand; beyond them the first `limits.max_workflows` names seen are kept
(in the state store, so a restart keeps the same ones) and later names fold into `other`. Workflow
names come from payloads: a pull request can add workflows, and each name costs series in every
run, job and step metric."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from pydantic import Field

from exporter.logging import get_logger
from exporter.payloads.github import WebhookJob, WorkflowRun
from exporter.store import StateRecord, Store

log = get_logger(__name__)
OTHER = "other"
# Folded names remembered so each is counted and logged once (beyond, counted again: harmless).
MAX_FOLDED_REMEMBERED = 1000


class WorkflowNames(StateRecord):
    NAME = "workflow_names"
    names: list[str] = Field(default_factory=list)


class WorkflowLabels:
    def __init__(
        self,
        store: Store,
        source: str,
        limit: int,
        configured: Iterable[str],
        on_fold: Callable[[str], None],
    ) -> None:
        self.store = store
        self.source = source
        self.limit = limit
        self.configured = frozenset(configured)
        self.on_fold = on_fold
        self._lock = threading.Lock()
        self._known = set(store.records.get(source, WorkflowNames).names)
        self._folded: set[str] = set()

    def label(self, name: str) -> str:
        if name in self.configured or name in self._known:
            return name
        with self._lock:
            if name in self._known:
                return name
            if len(self._known) < self.limit:
                self._known.add(name)
                self.store.records.put(self.source, WorkflowNames(names=sorted(self._known)))
                return name
            if name not in self._folded and len(self._folded) < MAX_FOLDED_REMEMBERED:
                self._folded.add(name)
                log.warning(
                    "workflow beyond limits.max_workflows folded into other",
                    source=self.source,
                    workflow=name,
                    limit=self.limit,
                )
                self.on_fold(self.source)
            return OTHER

    def run(self, run: WorkflowRun) -> WorkflowRun:
        label = self.label(run.workflow)
        return run if label == run.workflow else run.model_copy(update={"name": label})

    def job(self, job: WebhookJob) -> WebhookJob:
        name = job.workflow_name or ""
        label = self.label(name)
        return job if label == name else job.model_copy(update={"workflow_name": label})
