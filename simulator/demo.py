"""`demo`: the simulators on loopback and the real exporter against them through its HTTP clients."""

from __future__ import annotations

from typing import Any

from exporter.app import App
from exporter.config import ConfigError, validate_config
from simulator.github import GitHubSimulator
from simulator.registry import IMAGE_SETS, RegistrySimulator
from simulator.scenarios import SCENARIOS
from simulator.webhooks import WebhookSender

DEMO_TOKEN = "demo-token-not-secret"
DEMO_WEBHOOK_SECRET = "demo-webhook-secret-not-secret"
DEMO_REPOSITORY = "acme/webapp"


class Demo:
    def __init__(
        self,
        scenario: str = "seed",
        seed: int = 1,
        speed: float = 300.0,
        state_path: str = ":memory:",
    ) -> None:
        if scenario not in SCENARIOS:
            raise ConfigError(
                f"--scenario: unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})"
            )
        self.registry = RegistrySimulator("after" if scenario == "optimized" else "before").start()
        self.github = GitHubSimulator(
            scenario, seed=seed, speed=speed, token=DEMO_TOKEN, repositories=(DEMO_REPOSITORY,)
        ).start()
        config = validate_config(demo_config(self.github.url, self.registry, scenario, state_path))
        self.app = App(
            config,
            environ={
                "CIPE_DEMO_TOKEN": DEMO_TOKEN,
                "CIPE_DEMO_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET,
            },
        )
        self.port = 0
        self.sender: WebhookSender | None = None

    @property
    def github_url(self) -> str:
        return self.github.url

    def start(self, listen: str) -> None:
        self.app.start(listen)
        assert self.app.server is not None
        assert self.app.webhooks is not None
        self.port = self.app.server.port
        hooks = self.app.webhooks
        self.sender = WebhookSender(
            self.github,
            f"http://127.0.0.1:{hooks.port}{hooks.hooks.path}",
            DEMO_WEBHOOK_SECRET,
            drop_rate=0.02,
            repeat_rate=0.05,
        ).start()

    @property
    def webhook_url(self) -> str:
        return self.sender.url if self.sender is not None else ""

    def stop(self) -> None:
        if self.sender is not None:
            self.sender.stop()
        self.app.stop()
        self.github.stop()
        self.registry.stop()


def demo_config(
    github_url: str, registry: RegistrySimulator, scenario: str, state_path: str
) -> dict[str, Any]:
    """The demo exporter's configuration: a declarative table of what `make demo` shows."""
    sim = SCENARIOS[scenario]
    return {
        "state": {"path": state_path},
        "github": {
            "api_url": github_url,
            "token_env": "CIPE_DEMO_TOKEN",
            "poll_interval": "2s",
            "lookback": f"{int(sim.history_runs * sim.run_interval + 86400)}s",
            "timeout": "10s",
            # Simulated time runs ahead of the wall clock.
            "clock_skew": "365d",
            # The simulator signs and sends workflow_job/workflow_run webhooks as its runs
            # progress (a few dropped or repeated, as GitHub may): the live queue fills in
            # within a second, and the poller reconciles every 30 s.
            "webhooks": {
                "listen": "127.0.0.1:0",
                "secret_env": "CIPE_DEMO_WEBHOOK_SECRET",
                "reconcile_interval": "30s",
            },
            "runners": [{"org": DEMO_REPOSITORY.partition("/")[0], "poll_interval": "10s"}],
            "repositories": [
                {
                    "name": DEMO_REPOSITORY,
                    "workflows": [sim.workflow_name],
                    "junit": {"artifacts": ["junit*"]},
                    "logs": {"jobs": ["build*"]},
                    "branches": ["main"],
                }
            ],
        },
        "registries": [
            {
                "url": registry.url,
                "poll_interval": "5s",
                "images": [
                    {
                        "name": name,
                        "tags": ["latest", "sha-{head_sha:7}"],
                        "set": "webapp",
                        "run": {
                            "repository": DEMO_REPOSITORY,
                            "workflow": sim.workflow_name,
                        },
                    }
                    for name in IMAGE_SETS[registry.images]
                ],
            }
        ],
        "targets": [
            {
                "repository": DEMO_REPOSITORY,
                "workflow": sim.workflow_name,
                "branch": "main",
                "target": {"lower": "10m", "upper": "12m"},
                "baseline": {"lower": "23m", "upper": "27m"},
            }
        ],
    }
