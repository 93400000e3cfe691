from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.github import GitHubSimulator
from tests.helpers import TOKEN, write_config
from tests.schemas import validated_simulator

# Seed 6 of the `seed` scenario has failed runs and two re-runs (second attempts) in its history.
SEED = 6
START = 1_800_000_000.0


@pytest.fixture
def sim() -> Iterator[GitHubSimulator]:
    """The `seed` scenario; every payload it serves is validated against the official schemas."""
    with validated_simulator("seed", seed=SEED, token=TOKEN) as simulator:
        yield simulator


@pytest.fixture
def env() -> dict[str, str]:
    return {"TEST_GITHUB_TOKEN": TOKEN}


@pytest.fixture
def config_file(tmp_path: Path, sim: GitHubSimulator) -> Path:
    return write_config(tmp_path / "config.yaml", sim.url, state=tmp_path / "state.db")
