"""Enrichments that follow a recorded run attempt: each job log read for BuildKit and actions/cache
facts, and the attempt's JUnit artifacts. They run as pending tasks after the attempt's own
metrics are recorded, so an unreadable log or artifact never holds back the run, job and step
metrics: a task is retried on later polls a bounded number of times, then given up and counted.
"""

from __future__ import annotations

import fnmatch
import io
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from exporter.analysis.build_log import JobLogFacts, analyze_job_log
from exporter.analysis.flaky import CaseOutcomes
from exporter.analysis.junit import JUnitError, Report, parse_zip
from exporter.analysis.log_lines import StepWindow
from exporter.config import JunitConfig, LogsConfig
from exporter.logging import get_logger
from exporter.observations import RepositoryPolicy, Task, Unit, job_log_unit, junit_unit
from exporter.payloads.github import MAX_SKEW, Artifact, describe
from exporter.sources.errors import Expired, NotFound, RedirectRefused, TooLarge
from exporter.sources.github.client import GitHubClient
from exporter.store import Store

log = get_logger(__name__)
# Artifacts are uploaded before their job completes; allow for clock skew between services.
CREATED_SLACK = 5.0
# In a junit.artifacts glob, the run attempt the artifact's name carries (${{ github.run_attempt }}).
ATTEMPT_FIELD = "{attempt}"


class Enricher(Protocol):
    kind: str

    def run(self, task: Task) -> Unit:
        """The task's unit; raises SourceError when the upstream could not be read."""
        ...

    def count_skips(self) -> None:
        """Count the skips of the last run, whose unit was committed."""
        ...


class _Base:
    kind = ""
    skip_event = "enrichment skipped"

    def __init__(self, policy: RepositoryPolicy, client: GitHubClient) -> None:
        self.policy = policy
        self.client = client
        self.source = policy.source
        self._skips: list[str] = []

    def skip(self, reason: str, detail: str, **fields: Any) -> None:
        """A logged skip that does not fail the task; counted when the task's unit is committed,
        so a task that fails later and is tried again counts it once."""
        self._skips.append(reason)
        log.warning(self.skip_event, source=self.source, reason=reason, detail=detail, **fields)

    def count_skips(self) -> None:
        skips, self._skips = self._skips, []
        for reason in skips:
            self.client.skip(self.source, reason)


class JobLogEnricher(_Base):
    kind = "log"
    skip_event = "job log skipped"

    def __init__(
        self, policy: RepositoryPolicy, client: GitHubClient, settings: LogsConfig
    ) -> None:
        super().__init__(policy, client)
        self.settings = settings

    def read(self, data: Mapping[str, Any]) -> JobLogFacts:
        self._skips = []  # a new try: what an earlier, failed one found is not counted
        steps = [StepWindow(int(s[0]), str(s[1]), s[2], s[3]) for s in data.get("steps", ())]
        job_id = int(data["job_id"])
        path = f"/repos/{self.policy.repository}/actions/jobs/{job_id}/logs"
        limit = self.settings.max_bytes
        read = [0]

        def capped(chunks: Iterable[bytes]) -> Iterable[bytes]:
            for chunk in chunks:
                room = limit - read[0]
                read[0] += len(chunk)
                yield chunk[: max(0, room)]
                if read[0] > limit:
                    return

        # The cap truncates rather than refuses: a long log's first part still holds its builds.
        with self.client.download(path, "log", max_bytes=2**62) as chunks:
            facts = analyze_job_log(capped(chunks), steps)
        if facts.builds_dropped:
            self.skip(
                "log_builds_dropped",
                f"{facts.builds_dropped} builds beyond the first 100",
                job_id=job_id,
            )
        if read[0] > limit:
            self.skip("log_truncated", f"read the first {limit} bytes", job_id=job_id)
        return facts

    def run(self, task: Task) -> Unit:
        return job_log_unit(task, self.read(task.data), self.policy)


class JUnitEnricher(_Base):
    kind = "junit"
    skip_event = "artifact skipped"

    def __init__(
        self,
        policy: RepositoryPolicy,
        client: GitHubClient,
        store: Store,
        settings: JunitConfig,
        clock_skew: float = MAX_SKEW,
    ) -> None:
        super().__init__(policy, client)
        self.store = store
        self.settings = settings
        self.clock_skew = clock_skew

    def _belongs(self, artifact: Artifact, data: Mapping[str, Any]) -> bool:
        """Whether the artifact is this attempt's report: named for the attempt by a glob with
        {attempt}, else matched by a glob and created while the attempt ran (the artifacts API
        lists a run's artifacts of every attempt)."""
        attempt = str(int(data["attempt"]))
        named = [g for g in self.settings.artifacts if ATTEMPT_FIELD in g]
        if any(
            fnmatch.fnmatchcase(artifact.name, g.replace(ATTEMPT_FIELD, attempt)) for g in named
        ):
            return True
        if not any(
            fnmatch.fnmatchcase(artifact.name, g)
            for g in self.settings.artifacts
            if ATTEMPT_FIELD not in g
        ):
            return False
        started = float(data.get("started_at") or data["created_at"]) - CREATED_SLACK
        completed = float(data["completed_at"]) + CREATED_SLACK
        created = artifact.created_at
        return created is None or started <= created <= completed

    def candidates(self, data: Mapping[str, Any]) -> list[Artifact]:
        """The run's artifacts holding this attempt's reports, not read before."""
        repo = self.policy.repository
        path = f"/repos/{repo}/actions/runs/{int(data['run_id'])}/artifacts"
        found: list[Artifact] = []
        for _, items in self.client.paginate(
            path, {"per_page": 100}, "artifacts", source=self.source
        ):
            for item in items:
                artifact = _artifact(item, self.clock_skew)
                if artifact is None:
                    self.skip("malformed", "artifact item without id and name")
                    continue
                if not self._belongs(artifact, data):
                    continue  # not a report, or another attempt's
                if not self.store.is_observed("artifact", f"{repo}/{artifact.id}"):
                    found.append(artifact)
        return found

    def report(
        self, data: Mapping[str, Any], cases: CaseOutcomes | None = None
    ) -> tuple[Report, list[int]]:
        """The attempt's reports merged, and the artifact ids read; each case also goes to
        `cases` as it is parsed."""
        self._skips = []  # a new try: what an earlier, failed one found is not counted
        report = Report()
        done: list[int] = []
        for artifact in self.candidates(data):
            done.append(artifact.id)
            if artifact.expired:
                self.skip(
                    "artifact_expired",
                    "artifact expired before it was read",
                    artifact_id=artifact.id,
                )
                continue
            parsed = self._read(artifact.id, cases)
            if parsed is not None:
                report.merge(parsed)
        return report, done

    def _read(self, artifact_id: int, cases: CaseOutcomes | None) -> Report | None:
        path = f"/repos/{self.policy.repository}/actions/artifacts/{artifact_id}/zip"
        try:
            buffer = io.BytesIO()
            with self.client.download(path, "artifact", self.settings.max_download_bytes) as chunks:
                for chunk in chunks:
                    buffer.write(chunk)
                    if buffer.tell() > self.settings.max_download_bytes:
                        raise TooLarge(
                            f"artifact exceeds the {self.settings.max_download_bytes} byte cap"
                        )
            parsed, bad_members = parse_zip(
                buffer.getvalue(),
                self.settings.suite_depth,
                self.settings.max_uncompressed_bytes,
                on_case=None if cases is None else cases.add,
            )
        except (TooLarge, NotFound, Expired, RedirectRefused) as exc:
            # This artifact can't be read; the others of the attempt still count.
            self.skip(f"artifact_{exc.reason}", str(exc), artifact_id=artifact_id)
            return None
        except JUnitError as exc:
            self.skip(exc.reason, str(exc), artifact_id=artifact_id)
            return None
        for reason, detail in bad_members:
            self.skip(reason, detail, artifact_id=artifact_id)
        return parsed

    def run(self, task: Task) -> Unit:
        cases = CaseOutcomes(self.settings.max_cases)
        report, artifact_ids = self.report(task.data, cases)
        return junit_unit(task, report if artifact_ids else None, artifact_ids, self.policy, cases)


def _artifact(item: object, skew: float) -> Artifact | None:
    try:
        return Artifact.model_validate(item, context={"now": time.time(), "skew": skew})
    except ValidationError as exc:
        log.debug("artifact item unreadable", detail=describe(exc))
        return None
