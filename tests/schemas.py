"""Validation of simulator payloads against the official schemas in tests/fixtures/github-api."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import jsonschema

from simulator.github import GitHubSimulator
from tests.helpers import REFERENCE

SCHEMA_OF_HANDLER = {
    "list_runs": "workflow-run-paginated.json",
    "get_run": "workflow-run.json",
    "get_attempt": "workflow-run.json",
    "attempt_jobs": "job-paginated.json",
    "run_jobs": "job-paginated.json",
    "rate_limit": "rate-limit-overview.json",
}


@cache
def validator(name: str) -> Any:
    schema = json.loads((REFERENCE / "github-api" / "schemas" / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


class ResponseValidator:
    """Installed as the simulator's on_response hook: validates every 200 payload that has an
    official schema and remembers the errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.validated: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, handler: str, status: int, payload: Any) -> None:
        name = SCHEMA_OF_HANDLER.get(handler)
        if name is None or status != 200:
            return
        error = jsonschema.exceptions.best_match(validator(name).iter_errors(payload))
        with self._lock:
            self.validated[handler] = self.validated.get(handler, 0) + 1
            if error is not None:
                self.errors.append(f"{handler}: {error.json_path}: {error.message}")


@contextmanager
def validated_simulator(*args: Any, **kwargs: Any) -> Iterator[GitHubSimulator]:
    """A started simulator whose every payload is validated; fails the test on a schema error."""
    sim = GitHubSimulator(*args, **kwargs)
    validator = ResponseValidator()
    sim.on_response = validator
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()
    assert validator.errors == [], validator.errors[:5]
