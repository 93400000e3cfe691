"""Image sizes from a real docker-registry (Debian's distribution 2.8) and the registry simulator's
token flow: sizes, layers, sets, cost, failures and credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulator.registry import RegistrySimulator
from tests.helpers import Exposition, free_port, run_cli
from tests.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    docker_registry,
    push_blob,
    push_image,
    push_manifest,
)
from tests.schemas import validated_simulator


def _layer(seed: str, size: int) -> bytes:
    return (seed.encode() * (size // len(seed) + 1))[:size]


def populate(registry: Registry) -> dict[str, Any]:
    """Docker v2 image, OCI image, two-platform OCI index with an attestation, and two images that
    share base layers. Returns what the test expects, computed from the blobs it pushed."""
    base = [_layer("base-os", 40_000), _layer("python", 30_000)]
    expected: dict[str, Any] = {}
    expected["app/docker:v1"] = {
        "unknown/unknown": push_image(
            registry, "app/docker", "v1", [_layer("d1", 5000), _layer("d2", 7000)], docker=True
        )
    }
    expected["app/oci:v1"] = {
        "unknown/unknown": push_image(registry, "app/oci", "v1", [_layer("o1", 9000)])
    }
    amd = push_image(registry, "app/multi", "amd64-tmp", [*base, _layer("amd", 11_000)])
    arm = push_image(registry, "app/multi", "arm64-tmp", [*base, _layer("arm", 12_000)])
    attestation_layer = push_blob(registry, "app/multi", _layer("in-toto", 3000))
    attestation_config = push_blob(registry, "app/multi", b'{"in-toto": true}')
    attestation = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **attestation_config},
        "layers": [{"mediaType": "application/vnd.in-toto+json", **attestation_layer}],
    }
    attestation_raw = json.dumps(attestation).encode()
    attestation_digest = push_manifest(registry, "app/multi", "att-tmp", attestation, OCI_MANIFEST)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": amd["digest"],
                "size": len(json.dumps(amd["manifest"])),
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": arm["digest"],
                "size": len(json.dumps(arm["manifest"])),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": attestation_digest,
                "size": len(attestation_raw),
                "platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": amd["digest"],
                },
            },
        ],
    }
    push_manifest(registry, "app/multi", "v1", index, OCI_INDEX)
    expected["app/multi:v1"] = {"linux/amd64": amd, "linux/arm64/v8": arm}
    web = push_image(registry, "app/web", "v1", [*base, _layer("web", 21_000)])
    worker = push_image(registry, "app/worker", "v1", [*base, _layer("worker", 17_000)])
    expected["app/web:v1"] = {"unknown/unknown": web}
    expected["app/worker:v1"] = {"unknown/unknown": worker}
    blobs = {**web["blobs"], **worker["blobs"]}
    expected["_set"] = {"total": web["size"] + worker["size"], "unique": sum(blobs.values())}
    return expected


IMAGES = [
    {"name": "app/docker", "tags": ["v1"]},
    {"name": "app/oci", "tags": ["v1"]},
    {"name": "app/multi", "tags": ["v1"]},
    {"name": "app/web", "tags": ["v1"], "set": "shared"},
    {"name": "app/worker", "tags": ["v1"], "set": "shared"},
]


def _config(tmp_path: Path, registries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"state": {"path": str(tmp_path / "state.db")}, "registries": registries})
    )
    return path


@pytest.mark.integration
def test_sizes_layers_sets_and_cost(tmp_path: Path) -> None:
    """Sizes, layer counts and set total/unique bytes equal what the test pushed; attestation
    manifests are skipped; a second poll of unchanged tags costs one request per tag (access log)."""
    with docker_registry(tmp_path) as registry:
        expected = populate(registry)
        config = _config(tmp_path, [{"url": registry.url, "images": IMAGES}])
        result = run_cli("once", "--config", str(config))
        assert result.returncode == 0, result.stderr[-2000:]
        exp = Exposition.parse(result.stdout)
        for key, platforms in expected.items():
            if key == "_set":
                continue
            name, tag = key.split(":")
            sizes = exp.by(
                "container_image_size_bytes",
                "platform",
                image=name,
                tag=tag,
                registry=registry.host,
            )
            layers = exp.by("container_image_layers", "platform", image=name, tag=tag)
            assert sizes == {(p,): float(v["size"]) for p, v in platforms.items()}, key
            assert layers == {(p,): float(v["layers"]) for p, v in platforms.items()}, key
        assert (
            exp.total("container_image_set_size_bytes", set="shared", kind="total")
            == expected["_set"]["total"]
        )
        assert (
            exp.total("container_image_set_size_bytes", set="shared", kind="unique")
            == expected["_set"]["unique"]
        )
        assert expected["_set"]["unique"] < expected["_set"]["total"]
        before = len(registry.access_lines())
        again = run_cli("once", "--config", str(config))
        assert again.returncode == 0
        lines = registry.access_lines()[before:]
        assert len(lines) == len(IMAGES), lines
        assert all(line.startswith('"HEAD /v2/') for line in lines)
        assert Exposition.parse(again.stdout).by("container_image_size_bytes", "image") == exp.by(
            "container_image_size_bytes", "image"
        )
        # The tag vanishes (manifest deleted): its series go, the poll reports not_found.
        with registry.client() as client:
            digest = expected["app/oci:v1"]["unknown/unknown"]["digest"]
            assert client.delete(f"/v2/app/oci/manifests/{digest}").status_code == 202
        gone = run_cli("once", "--config", str(config))
        assert gone.returncode == 1
        after = Exposition.parse(gone.stdout)
        assert not after.select("container_image_size_bytes", image="app/oci")
        assert after.select("container_image_size_bytes", image="app/multi")
        assert after.total("ci_pipeline_exporter_poll_errors_total", reason="not_found") == 1


@pytest.mark.integration
def test_failures_are_counted_per_registry(tmp_path: Path) -> None:
    """Down, 401, 404 (the tag's series dropped), 429 and a malformed manifest: counted errors and
    up == 0 for that registry, while the other registries keep their metrics."""
    with (
        docker_registry(tmp_path) as open_registry,
        docker_registry(tmp_path, htpasswd=("ci", "s3cret-pass")) as locked,
    ):
        populate(open_registry)
        sim = RegistrySimulator("before").start()
        try:
            registries: list[dict[str, Any]] = [
                {
                    "url": open_registry.url,
                    "images": [*IMAGES, {"name": "app/missing", "tags": ["v1"]}],
                },
                {"url": locked.url, "images": [{"name": "app/oci", "tags": ["v1"]}]},
                {
                    "url": f"http://127.0.0.1:{free_port()}",
                    "images": [{"name": "app/oci", "tags": ["v1"]}],
                    "max_retries": 0,
                },
                {
                    "url": sim.url,
                    "max_retries": 0,
                    "images": [
                        {"name": "acme/webapp/web"},
                        {"name": "acme/webapp/celery"},
                        {"name": "acme/webapp/celerybeat"},
                    ],
                },
            ]
            sim.faults = {"acme/webapp/celery": "429", "acme/webapp/celerybeat": "malformed"}
            result = run_cli("once", "--config", str(_config(tmp_path, registries)))
            assert result.returncode == 1
            exp = Exposition.parse(result.stdout)
            up = {k[0]: v for k, v in exp.by("ci_pipeline_exporter_up", "source").items()}
            assert all(value == 0 for value in up.values()), up
            reasons = exp.by("ci_pipeline_exporter_poll_errors_total", "source", "reason")
            assert reasons[(f"registry:{open_registry.host}", "not_found")] == 1
            assert reasons[(f"registry:{locked.host}", "auth")] == 1
            assert any(
                source.endswith(registries[2]["url"].removeprefix("http://"))
                and reason == "transport"
                for source, reason in reasons
            )
            assert {r for (s, r) in reasons if s == f"registry:{sim.host}"} == {
                "rate_limited",
                "malformed",
            }, reasons
            # Other images of the failing registries still have their metrics.
            assert exp.select(
                "container_image_size_bytes", registry=open_registry.host, image="app/multi"
            )
            assert exp.select(
                "container_image_size_bytes", registry=sim.host, image="acme/webapp/web"
            )
            assert "Traceback" not in result.stderr
        finally:
            sim.stop()


def test_a_registry_that_is_down_counts_one_failure(tmp_path: Path) -> None:
    """A registry nobody listens on, with three tags: one poll, one failure
    (poll_errors_total{reason="transport"} == 1, it was one per tag), `up` 0, no retry storm."""
    url = f"http://127.0.0.1:{free_port()}"
    images = [{"name": "app/web", "tags": ["v1", "v2"]}, {"name": "app/worker", "tags": ["v1"]}]
    config = _config(tmp_path, [{"url": url, "max_retries": 0, "images": images}])
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 1, result.stderr[-2000:]
    exp = Exposition.parse(result.stdout)
    source = f"registry:{url.removeprefix('http://')}"
    assert exp.by("ci_pipeline_exporter_poll_errors_total", "reason", source=source) == {
        ("transport",): 1.0
    }
    assert exp.total("ci_pipeline_exporter_up", source=source) == 0
    assert "image skipped" not in result.stderr


@pytest.mark.integration
def test_basic_auth_credentials_never_printed(tmp_path: Path) -> None:
    """htpasswd (Basic) registry with credentials from the environment: sizes are read, and the
    password appears in no output."""
    password = "s3cret-registry-pass"
    with docker_registry(tmp_path, htpasswd=("ci", password)) as registry:
        populate(registry)
        config = _config(
            tmp_path,
            [
                {
                    "url": registry.url,
                    "username_env": "REG_USER",
                    "password_env": "REG_PASS",
                    "images": [{"name": "app/oci", "tags": ["v1"]}],
                }
            ],
        )
        env = {"REG_USER": "ci", "REG_PASS": password}
        result = run_cli("once", "--config", str(config), "--log-level", "debug", env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert Exposition.parse(result.stdout).select("container_image_size_bytes", image="app/oci")
        checked = run_cli("check-config", str(config), env=env)
        cli = run_cli(
            "analyze",
            "image",
            "--json",
            "--username-env",
            "REG_USER",
            "--password-env",
            "REG_PASS",
            f"{registry.url}/app/oci:v1",
            env=env,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["platforms"][0]["layers"] == 1
        for output in (
            result.stdout + result.stderr,
            checked.stdout + checked.stderr,
            cli.stdout + cli.stderr,
        ):
            assert password not in output


def test_token_flow_and_templated_tags_against_the_simulator(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """ghcr.io's flow (401 → token realm → Bearer), anonymous and with credentials; a tag template
    `sha-{head_sha:7}` filled from the latest successful run; the set's 75 % duplication visible."""
    with validated_simulator("seed", seed=6, token=env["TEST_GITHUB_TOKEN"]) as github:
        registry = RegistrySimulator(
            "before", credentials=("bot", "ghp_registrytoken123456")
        ).start()
        try:
            images = [
                {
                    "name": n,
                    "tags": ["latest", "sha-{head_sha:7}"],
                    "set": "webapp",
                    "run": {"repository": "acme/webapp", "workflow": "CI"},
                }
                for n in ("acme/webapp/web", "acme/webapp/celery", "acme/webapp/celerybeat")
            ]
            config = tmp_path / "c.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "state": {"path": str(tmp_path / "s.db")},
                        "github": {
                            "api_url": github.url,
                            "token_env": "TEST_GITHUB_TOKEN",
                            "lookback": "3d",
                            "repositories": [{"name": "acme/webapp"}],
                        },
                        "registries": [
                            {
                                "url": registry.url,
                                "username_env": "RU",
                                "password_env": "RP",
                                "images": images,
                            }
                        ],
                    }
                )
            )
            run_env = {**env, "RU": "bot", "RP": "ghp_registrytoken123456"}
            run_cli("once", "--config", str(config), env=run_env)  # the first poll learns the run
            result = run_cli("once", "--config", str(config), env=run_env)
            assert result.returncode == 0, result.stderr[-2000:]
            exp = Exposition.parse(result.stdout)
            truth = registry.expected()
            assert (
                exp.total(
                    "container_image_size_bytes", image="acme/webapp/web", tag="sha-{head_sha:7}"
                )
                == truth["acme/webapp/web"]["size"]
            )
            assert (
                exp.total("container_image_set_size_bytes", set="webapp", kind="total")
                == truth["_set"]["total"]
            )
            assert (
                exp.total("container_image_set_size_bytes", set="webapp", kind="unique")
                == truth["_set"]["unique"]
            )
            assert truth["_set"]["unique"] / truth["_set"]["total"] == pytest.approx(0.5, abs=0.01)
            shas = [r["path"] for r in registry.requests if "/manifests/sha-" in r["path"]]
            assert shas
            assert all(len(p.rsplit("sha-", 1)[1]) == 7 for p in shas)
            assert any(r["path"] == "/token" and r["status"] == 200 for r in registry.requests)
            assert "ghp_registrytoken123456" not in result.stdout + result.stderr
            anonymous = RegistrySimulator("after").start()
            try:
                out = run_cli(
                    "analyze", "image", "--json", f"{anonymous.url}/acme/webapp/web:latest"
                )
                assert out.returncode == 0, out.stderr
                assert (
                    json.loads(out.stdout)["platforms"][0]["size"]
                    == anonymous.expected()["acme/webapp/web"]["size"]
                )
                assert (
                    run_cli(
                        "analyze", "image", f"{anonymous.url}/acme/webapp/nope:latest"
                    ).returncode
                    == 1
                )
                assert run_cli("analyze", "image", "http://example.com/a/b:c").returncode == 2
            finally:
                anonymous.stop()
        finally:
            registry.stop()
