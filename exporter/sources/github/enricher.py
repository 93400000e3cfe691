"""The shared part of the enrichers (job logs, JUnit artifacts): what they read with, and how a
permanent problem becomes a counted, logged skip."""

from __future__ import annotations

from typing import Any

from exporter.config import RepositoryConfig
from exporter.logging import get_logger
from exporter.sources.github.client import GitHubClient
from exporter.state import Store
from exporter.telemetry import Telemetry

log = get_logger(__name__)


class RepositoryEnricher:
    skip_event = "skipped"

    def __init__(
        self,
        repo: RepositoryConfig,
        client: GitHubClient,
        store: Store,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.repo = repo
        self.client = client
        self.store = store
        self.telemetry = telemetry
        self.source = f"github:{repo.name}"

    def _skip(self, reason: str, detail: str, **fields: Any) -> None:
        """Counted in poll_errors_total{reason} and logged; the poll goes on."""
        if self.telemetry is not None:
            self.telemetry.poll_errors.labels(self.source, reason).inc()
        log.warning(self.skip_event, source=self.source, reason=reason, detail=detail, **fields)
