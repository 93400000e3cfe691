"""Job logs of a newly completed attempt's build jobs (`logs.jobs` globs), each read once: streamed
through the job-log reader into the BuildKit parser and the actions/cache restore detector, and
recorded with the attempt."""

from __future__ import annotations

import fnmatch
from typing import Any

from exporter import metrics as m
from exporter.analysis.joblog import StepWindow
from exporter.analysis.joblog_facts import JobLogFacts, analyze_job_log
from exporter.analysis.pipeline import JobFacts, RunFacts
from exporter.logging import get_logger
from exporter.sources.errors import NotFound
from exporter.sources.github.downloads import Expired, capped, open_stream
from exporter.sources.github.enricher import RepositoryEnricher
from exporter.sources.github.poller import Recorder
from exporter.state import OTHER, Transaction

log = get_logger(__name__)


class JobLogs(RepositoryEnricher):
    skip_event = "job log skipped"

    def wanted(self, job: JobFacts) -> bool:
        return job.result != "skip" and any(
            fnmatch.fnmatchcase(job.name, g) for g in self.repo.logs.jobs
        )

    def read(self, job: JobFacts) -> JobLogFacts | None:
        steps = [StepWindow(s.number, s.name, s.started_at, s.completed_at) for s in job.steps]
        truncated = [False]
        try:
            with open_stream(
                self.client, f"/repos/{self.repo.name}/actions/jobs/{job.id}/logs", "log"
            ) as chunks:
                facts = analyze_job_log(capped(chunks, self.repo.logs.max_bytes, truncated), steps)
        except NotFound as exc:
            self._skip("log_not_found", str(exc), job_id=job.id)
            return None
        except Expired as exc:
            self._skip("log_expired", str(exc), job_id=job.id)
            return None
        if facts.builds_dropped:
            self._skip(
                "log_builds_dropped",
                f"{facts.builds_dropped} builds beyond the first 100",
                job_id=job.id,
            )
        if truncated[0]:
            self._skip(
                "log_truncated", f"read the first {self.repo.logs.max_bytes} bytes", job_id=job.id
            )
        return facts

    def prepare(self, facts: RunFacts, run: dict[str, Any]) -> Recorder | None:
        if not self.repo.logs.jobs:
            return None
        found: list[tuple[JobFacts, JobLogFacts | None]] = []
        for job in facts.jobs:
            if self.wanted(job) and not self.store.is_observed(
                "joblog", f"{self.repo.name}/{job.id}"
            ):
                found.append((job, self.read(job)))
        if not found:
            return None
        return lambda tx: self._record(tx, facts, found)

    def _instruction_labels(
        self,
        workflow: str,
        job: str,
        stage: str,
        instruction: str,
        tx: Transaction,
        known: set[tuple[str, str]],
    ) -> tuple[str, str]:
        if (stage, instruction) in known:
            return stage, instruction
        if len(known) >= self.repo.logs.max_instructions:
            tx.inc(m.SERIES_DROPPED, (m.BUILDKIT_STEP_DURATION.name,))
            return OTHER, OTHER
        known.add((stage, instruction))
        return stage, instruction

    def _record(
        self, tx: Transaction, facts: RunFacts, found: list[tuple[JobFacts, JobLogFacts | None]]
    ) -> None:
        repo, workflow = self.repo.name, facts.workflow
        for job, log_facts in found:
            tx.mark_observed("joblog", f"{repo}/{job.id}", self.source, facts.created_at)
            if log_facts is None:
                continue
            known = {
                (labels[3], labels[4])
                for labels in self.store.label_values(
                    m.BUILDKIT_STEP_DURATION.name, (repo, workflow, job.name)
                )
            }
            for build in log_facts.builds:
                backend = build.cache_backend
                tx.observe(
                    m.BUILDKIT_BUILD, (repo, workflow, job.name, backend), build.duration_seconds
                )
                if build.imported:
                    tx.observe(
                        m.BUILDKIT_IMPORT,
                        (repo, workflow, job.name, backend),
                        build.cache_import_seconds,
                    )
                if build.exported:
                    tx.observe(
                        m.BUILDKIT_EXPORT,
                        (repo, workflow, job.name, backend),
                        build.cache_export_seconds,
                    )
                for result, count in build.steps.items():
                    if count:
                        tx.inc(m.BUILDKIT_STEPS, (repo, workflow, job.name, result), count)
                ratio = build.cache_hit_ratio
                if ratio is not None:
                    tx.set_latest(
                        m.BUILDKIT_HIT_RATIO,
                        (repo, workflow, job.name),
                        ratio,
                        (job.completed_at or facts.completed_at) + build.index * 1e-3,
                    )
                for instruction in build.instructions:
                    if instruction.result != "executed":
                        continue
                    stage, text = self._instruction_labels(
                        workflow, job.name, instruction.stage, instruction.instruction, tx, known
                    )
                    tx.observe(
                        m.BUILDKIT_STEP_DURATION,
                        (repo, workflow, job.name, stage, text),
                        instruction.seconds,
                    )
            steps = {s.number: s for s in job.steps}
            for restore in log_facts.restores:
                assert restore.result is not None
                tx.inc(m.CACHE_RESTORES, (repo, workflow, job.name, restore.result))
                step = steps.get(restore.step) if restore.step is not None else None
                if step is not None:
                    tx.observe(m.CACHE_RESTORE_SECONDS, (repo, workflow, job.name), step.seconds)
