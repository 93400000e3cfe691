"""A real Debian `docker-registry` on loopback for the tests, and pushing images to it through the
registry HTTP API (blob uploads, then manifest PUT), as a client like buildx does."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx

from tests.helpers import free_port, require_binary, wait_for

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass
class Registry:
    url: str
    log: Path
    auth: tuple[str, str] | None = None
    pushed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=10)

    def access_lines(self) -> list[str]:
        """Requests as the registry logged them (combined log format)."""
        return re.findall(
            r'"(?:GET|HEAD|PUT|POST|PATCH) [^"]+ HTTP/1\.1" \d+',
            self.log.read_text(errors="replace"),
        )


@contextmanager
def docker_registry(tmp: Path, *, htpasswd: tuple[str, str] | None = None) -> Iterator[Registry]:
    binary = require_binary("docker-registry")
    port = free_port()
    storage = tmp / f"storage-{port}"
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if htpasswd is not None:
        user, password = htpasswd
        path = tmp / f"htpasswd-{port}"
        path.write_text(
            f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
        )
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(path)}}
    config_path = tmp / f"registry-{port}.json"
    config_path.write_text(json.dumps(config))  # YAML is a superset of JSON
    log = tmp / f"registry-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdout=out,
            stderr=out,
            env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
        )
    registry = Registry(f"http://127.0.0.1:{port}", log, htpasswd)
    try:
        wait_for(
            lambda: httpx.get(f"{registry.url}/v2/", timeout=1).status_code in (200, 401),
            20,
            interval=0.1,
            message="docker-registry",
            process=process,
            log=log,
        )
        yield registry
    finally:
        process.terminate()
        process.wait(10)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(registry: Registry, name: str, data: bytes) -> dict[str, Any]:
    digest = _digest(data)
    with registry.client() as client:
        start = client.post(f"/v2/{name}/blobs/uploads/")
        assert start.status_code == 202, start.text
        location = start.headers["location"]
        joiner = "&" if "?" in location else "?"
        done = client.put(
            f"{location}{joiner}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def push_manifest(
    registry: Registry, name: str, reference: str, manifest: dict[str, Any], media_type: str
) -> str:
    body = json.dumps(manifest).encode()
    with registry.client() as client:
        response = client.put(
            f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
        )
        assert response.status_code == 201, response.text
    return _digest(body)


def push_image(
    registry: Registry,
    name: str,
    tag: str,
    layers: list[bytes],
    *,
    docker: bool = False,
    config: bytes | None = None,
) -> dict[str, Any]:
    """One single-platform image; returns its manifest digest and the sizes the test expects."""
    config = (
        config
        or json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}, "tag": tag}
        ).encode()
    )
    config_desc = push_blob(registry, name, config)
    layer_descs = [push_blob(registry, name, layer) for layer in layers]
    layer_type = (
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        if docker
        else "application/vnd.oci.image.layer.v1.tar+gzip"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json"
            if docker
            else "application/vnd.oci.image.config.v1+json",
            **config_desc,
        },
        "layers": [{"mediaType": layer_type, **d} for d in layer_descs],
    }
    digest = push_manifest(
        registry, name, tag, manifest, DOCKER_MANIFEST if docker else OCI_MANIFEST
    )
    blobs = {
        config_desc["digest"]: config_desc["size"],
        **{d["digest"]: d["size"] for d in layer_descs},
    }
    return {
        "digest": digest,
        "size": sum(blobs[d] for d in [config_desc["digest"]])
        + sum(d["size"] for d in layer_descs),
        "layers": len(layers),
        "blobs": blobs,
        "manifest": manifest,
    }
