"""JUnit artifacts of a newly completed attempt: listed, matched against the repository's
`junit.artifacts` globs, downloaded once each, parsed, and recorded with the attempt."""

from __future__ import annotations

import fnmatch
from typing import Any

from exporter import metrics as m
from exporter.analysis.junit import RESULTS, JUnitError, Report, parse_zip
from exporter.analysis.pipeline import RunFacts
from exporter.logging import get_logger
from exporter.sources.errors import NotFound
from exporter.sources.github.downloads import Expired, TooLarge, follow_download
from exporter.sources.github.enricher import RepositoryEnricher
from exporter.sources.github.poller import Recorder
from exporter.state import OTHER, Transaction
from exporter.timeutil import parse_timestamp

log = get_logger(__name__)
# Artifacts are uploaded before their job completes; allow for clock skew between services.
CREATED_SLACK = 5.0


class JUnitArtifacts(RepositoryEnricher):
    skip_event = "artifact skipped"

    def _candidates(self, facts: RunFacts) -> list[dict[str, Any]]:
        path = f"/repos/{self.repo.name}/actions/runs/{facts.run_id}/artifacts"
        found: list[dict[str, Any]] = []
        for _, items in self.client.paginate(path, {"per_page": 100}, "artifacts"):
            for artifact in items:
                name, artifact_id = artifact.get("name"), artifact.get("id")
                if not isinstance(name, str) or not isinstance(artifact_id, int):
                    continue
                if not any(fnmatch.fnmatchcase(name, glob) for glob in self.repo.junit.artifacts):
                    continue
                created = parse_timestamp(artifact.get("created_at"))
                if created is not None and created > facts.completed_at + CREATED_SLACK:
                    continue  # a later attempt's report
                if self.store.is_observed("artifact", f"{self.repo.name}/{artifact_id}"):
                    continue
                found.append(artifact)
        return found

    def _read_all(self, facts: RunFacts) -> tuple[Report, list[int]]:
        settings = self.repo.junit
        report = Report()
        done: list[int] = []
        for artifact in self._candidates(facts):
            artifact_id = int(artifact["id"])
            done.append(artifact_id)
            if artifact.get("expired") is True:
                self._skip(
                    "artifact_expired",
                    "artifact expired before it was read",
                    artifact_id=artifact_id,
                )
                continue
            try:
                data = follow_download(
                    self.client,
                    f"/repos/{self.repo.name}/actions/artifacts/{artifact_id}/zip",
                    settings.max_download_bytes,
                    "artifact",
                )
                parsed, bad_members = parse_zip(
                    data, settings.suite_depth, settings.max_uncompressed_bytes
                )
            except (NotFound, Expired, TooLarge) as exc:
                self._skip(f"artifact_{exc.reason}", str(exc), artifact_id=artifact_id)
                continue
            except JUnitError as exc:
                self._skip(exc.reason, str(exc), artifact_id=artifact_id)
                continue
            for reason, detail in bad_members:
                self._skip(reason, detail, artifact_id=artifact_id)
            report.merge(parsed)
        return report, done

    def report(self, facts: RunFacts) -> Report | None:
        """The attempt's per-suite totals, without recording anything (for backfill)."""
        if not self.repo.junit.artifacts:
            return None
        report, done = self._read_all(facts)
        return report if done else None

    def prepare(self, facts: RunFacts, run: dict[str, Any]) -> Recorder | None:
        if not self.repo.junit.artifacts:
            return None
        report, done = self._read_all(facts)
        if not done:
            return None
        return lambda tx: self._record(tx, facts, report, done)

    def _record(
        self, tx: Transaction, facts: RunFacts, report: Report, artifact_ids: list[int]
    ) -> None:
        repo, workflow = self.repo.name, facts.workflow
        for artifact_id in artifact_ids:
            tx.mark_observed("artifact", f"{repo}/{artifact_id}", self.source, facts.created_at)
        if not report.suites:
            return
        known = {
            labels[2]
            for labels in self.store.label_values(m.TEST_SUITE_DURATION.name, (repo, workflow))
        }
        folded: dict[str, tuple[float, dict[str, int]]] = {}
        for suite, totals in sorted(report.suites.items()):
            name = suite
            if suite not in known:
                if len(known) >= self.repo.junit.max_suites:
                    name = OTHER
                    tx.inc(m.SERIES_DROPPED, (m.TEST_SUITE_DURATION.name,))
                else:
                    known.add(suite)
            seconds, counts = folded.get(name, (0.0, dict.fromkeys(RESULTS, 0)))
            folded[name] = (
                seconds + totals.seconds,
                {r: counts[r] + totals.counts[r] for r in RESULTS},
            )
        for suite, (seconds, counts) in folded.items():
            tx.observe(m.TEST_SUITE_DURATION, (repo, workflow, suite), seconds)
            for result, count in counts.items():
                if count:
                    tx.inc(m.TEST_CASES, (repo, workflow, suite, result), count)
        tx.replace_latest_group(
            m.TEST_SUITE_LAST,
            (repo, workflow),
            {(suite,): seconds for suite, (seconds, _) in folded.items()},
            facts.completed_at,
        )
