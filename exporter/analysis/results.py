"""GitHub conclusions → the OpenTelemetry CI/CD `result` values."""

from __future__ import annotations

RESULTS = ("success", "failure", "error", "timeout", "cancellation", "skip")

_MAP = {
    "success": "success",
    "failure": "failure",
    "cancelled": "cancellation",
    "timed_out": "timeout",
    "skipped": "skip",
    "startup_failure": "error",
    # Documented choices: a run waiting for approval produced no result of its own (error);
    # neutral is GitHub's "not a failure" (success); stale runs were superseded (cancellation).
    "action_required": "error",
    "neutral": "success",
    "stale": "cancellation",
}


def map_result(conclusion: object) -> str:
    """Any conclusion, including unknown ones and null, maps to one of RESULTS."""
    if isinstance(conclusion, str):
        return _MAP.get(conclusion.lower(), "error")
    return "error"
