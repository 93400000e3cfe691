"""The lock files pin every dependency pyproject.toml asks for, at a version it accepts, with hashes
(`make lock` regenerates them; `make test` and the image install from them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

LOCKS = ROOT / "requirements"


def _pins(path: Path) -> dict[str, str]:
    text = path.read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, flags=re.M)
    return {canonicalize_name(name): version for name, version in entries}


def _project() -> dict[str, list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"runtime": project["dependencies"], "test": project["optional-dependencies"]["test"]}


@pytest.mark.parametrize(
    ("lock", "groups"), [("runtime", ["runtime"]), ("test", ["runtime", "test"])]
)
def test_every_dependency_is_pinned_within_its_range(lock: str, groups: list[str]) -> None:
    pins = _pins(LOCKS / f"{lock}.lock")
    for group in groups:
        for line in _project()[group]:
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{lock}.lock lacks {name}"
            assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])


@pytest.mark.parametrize("lock", ["runtime", "test"])
def test_every_pin_has_hashes(lock: str) -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", (LOCKS / f"{lock}.lock").read_text())
    pinned = [b for b in blocks if re.match(r"[A-Za-z0-9_.\-]+==", b)]
    assert pinned
    for block in pinned:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_runtime_lock_is_a_subset_of_the_test_lock() -> None:
    runtime, test = _pins(LOCKS / "runtime.lock"), _pins(LOCKS / "test.lock")
    assert {name: test.get(name) for name in runtime} == runtime
