"""Sharding: two exporters with sharding.total 2 split repositories and image sets; the union of
their series equals a single exporter's, and no series appears in both. The webhook forwarder
survives faults and counts each delivery by what the owner answered."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import yaml

from exporter.config import ShardingConfig
from exporter.webhooks.forward import Forwarder
from exporter.webhooks.receiver import FORWARDED, Delivery
from simulator.registry import RegistrySimulator
from tests.helpers import TOKEN, Exposition, run_cli
from tests.schemas import validated_simulator

DOMAIN = ("cicd_", "buildkit_", "github_actions_", "container_")


def _domain(exposition: Exposition) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {key for key in exposition.samples if key[0].startswith(DOMAIN)}


def test_shards_partition_the_series(tmp_path: Path) -> None:
    repos = [f"acme/service-{i}" for i in range(8)]
    assert {ShardingConfig(total=2, index=0).owns(f"repo:{r}") for r in repos} == {True, False}
    with validated_simulator("seed", seed=5, token=TOKEN, repositories=tuple(repos)) as github:
        registry = RegistrySimulator("before").start()
        try:
            config = {
                "github": {
                    "api_url": github.url,
                    "token_env": "TEST_GITHUB_TOKEN",
                    "lookback": "3d",
                    "repositories": [
                        {
                            "name": r,
                            "logs": {"jobs": ["build*"]},
                            "junit": {"artifacts": ["junit*"]},
                        }
                        for r in repos
                    ],
                },
                "targets": [
                    {"repository": r, "workflow": "CI", "target": {"lower": "10m", "upper": "12m"}}
                    for r in repos
                ],
                "registries": [
                    {
                        "url": registry.url,
                        "images": [
                            {"name": "acme/webapp/web", "set": "webapp"},
                            {"name": "acme/webapp/celery", "set": "webapp"},
                            {"name": "acme/webapp/celerybeat"},
                        ],
                    }
                ],
            }
            outputs = {}
            for name, shard in (("single", None), ("zero", 0), ("one", 1)):
                data = {**config, "state": {"path": str(tmp_path / f"{name}.db")}}
                if shard is not None:
                    data["sharding"] = {"total": 2, "index": shard}
                path = tmp_path / f"{name}.yaml"
                path.write_text(yaml.safe_dump(data))
                result = run_cli("once", "--config", str(path), env={"TEST_GITHUB_TOKEN": TOKEN})
                assert result.returncode == 0, result.stderr[-2000:]
                outputs[name] = _domain(Exposition.parse(result.stdout))
        finally:
            registry.stop()
    assert outputs["zero"]
    assert outputs["one"]
    assert outputs["zero"] & outputs["one"] == set()
    assert outputs["zero"] | outputs["one"] == outputs["single"]
    # The environment sets the shard, as the Helm chart does from the pod ordinal.
    path = tmp_path / "single.yaml"
    result = run_cli(
        "check-config", str(path), env={"CIPE_SHARDING__TOTAL": "3", "CIPE_SHARDING__INDEX": "2"}
    )
    assert yaml.safe_load(result.stdout)["sharding"] == {"total": 3, "index": 2}
    bad = run_cli(
        "check-config", str(path), env={"CIPE_SHARDING__TOTAL": "2", "CIPE_SHARDING__INDEX": "2"}
    )
    assert bad.returncode == 2
    assert "sharding" in bad.stderr


def test_forwarder_survives_any_fault_and_counts_what_the_owner_answered() -> None:
    """Fault injection (a mock transport): an exception that is not an httpx error, then a 401
    from the owner, then a 202. The first two are counted `failed`, the third `forwarded` — the
    thread lived through the first; each sent to the owner's URL with the forwarded marker."""
    answers: list[Exception | int] = [RuntimeError("a bug below the client"), 401, 202]
    sent: list[httpx.Request] = []

    def owner(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    counted: list[tuple[str, str, str]] = []
    done = threading.Event()

    def count(event: str, action: str, outcome: str) -> None:
        counted.append((event, action, outcome))
        if len(counted) == 3:
            done.set()

    http = httpx.Client(transport=httpx.MockTransport(owner))
    forwarder = Forwarder("http://shard-{index}:9470/webhook", 0, count, http=http)
    forwarder.start()
    try:
        delivery = Delivery("workflow_job", "queued", {}, b"{}", {"x-github-event": "workflow_job"})
        for _ in range(3):
            assert forwarder(1, delivery)
        assert done.wait(10), counted
    finally:
        forwarder.stop()
    assert [outcome for _, _, outcome in counted] == ["failed", "failed", "forwarded"]
    assert {(event, action) for event, action, _ in counted} == {("workflow_job", "queued")}
    assert [str(r.url) for r in sent] == ["http://shard-1:9470/webhook"] * 3
    assert all(r.headers[FORWARDED] == "0" for r in sent)
