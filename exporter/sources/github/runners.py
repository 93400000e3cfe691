"""Self-hosted runner pools: the runners of an organisation (by runner group) or of a repository,
counted as available, busy or offline (`cicd_worker_count`). A token without the runner read
permission gets a 403: a failed poll of this source with a clear line, never a crash."""

from __future__ import annotations

from dataclasses import dataclass

from exporter import metrics as m
from exporter.config import RunnersConfig
from exporter.logging import get_logger
from exporter.observations import Labels, replace_unit
from exporter.payloads.github import Runner, RunnerGroup, parse
from exporter.sources.errors import AuthError
from exporter.sources.github.client import GitHubClient
from exporter.store import Store

log = get_logger(__name__)
STATES = ("available", "busy", "offline")


@dataclass
class RunnersResult:
    groups: int = 0
    runners: int = 0


def runner_state(runner: Runner) -> str:
    if runner.status != "online":
        return "offline"
    return "busy" if runner.busy else "available"


class RunnersPoller:
    def __init__(self, settings: RunnersConfig, client: GitHubClient, store: Store) -> None:
        self.settings = settings
        self.client = client
        self.store = store
        self.scope = settings.scope
        self.source = f"runners:{self.scope}"

    def poll(self) -> RunnersResult:
        try:
            groups = self._groups()
        except AuthError as exc:
            raise AuthError(
                f"{exc} — the token lacks the runner read permission "
                "(fine-grained: Self-hosted runners: read; classic: admin:org or repo)",
                status=exc.status,
            ) from None
        counts: dict[Labels, float] = {}
        total = 0
        for group, runners in groups.items():
            for state in STATES:
                counts[(self.scope, group, state)] = 0.0
            for runner in runners:
                key = (self.scope, group, runner_state(runner))
                counts[key] += 1
                total += 1
        self.store.commit(replace_unit(self.source, m.WORKER_COUNT, (self.scope,), counts.items()))
        return RunnersResult(groups=len(groups), runners=total)

    def _groups(self) -> dict[str, list[Runner]]:
        if self.settings.repository is not None:
            path = f"/repos/{self.settings.repository}/actions/runners"
            return {"default": self._runners(path)}
        org = self.settings.org
        found: dict[str, list[Runner]] = {}
        path = f"/orgs/{org}/actions/runner-groups"
        for _, items in self.client.paginate(
            path, {"per_page": 100}, "runner_groups", source=self.source
        ):
            for item in items:
                group = parse(RunnerGroup, item, "runner group")
                runners = f"/orgs/{org}/actions/runner-groups/{group.id}/runners"
                found[group.name] = self._runners(runners)
        return found

    def _runners(self, path: str) -> list[Runner]:
        runners: list[Runner] = []
        for _, items in self.client.paginate(
            path, {"per_page": 100}, "runners", source=self.source
        ):
            runners.extend(parse(Runner, item, "runner") for item in items)
        return runners
