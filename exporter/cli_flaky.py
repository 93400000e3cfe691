"""`analyze flaky --config FILE [--json]`: the flaky test cases recorded in the state store, with
their occurrences, last occurrence, runs affected and the minutes their re-runs cost.

Reads the config's `state.path` read-only, so it can run beside a serving exporter.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, TextIO

from exporter.config import ConfigError, load_config
from exporter.store.cases import FlakyCase, read_flaky_cases
from exporter.timeutil import format_timestamp


def flaky_json(cases: list[FlakyCase]) -> dict[str, Any]:
    return {
        "cases": [
            {
                **{k: v for k, v in asdict(case).items() if k != "rerun_seconds"},
                "last_seen": format_timestamp(case.last_seen),
                "rerun_minutes": round(case.rerun_seconds / 60, 1),
            }
            for case in cases
        ]
    }


def print_flaky(cases: list[FlakyCase], out: TextIO) -> None:
    if not cases:
        print("no flaky test cases recorded", file=out)
        return
    print(
        f"{'flaky':>6} {'runs':>5} {'rerun min':>9}  {'last seen':<20}  repository / workflow  case",
        file=out,
    )
    for case in cases:
        name = f"{case.classname}::{case.name}" if case.classname else case.name
        print(
            f"{case.flaky:>6} {case.runs:>5} {case.rerun_seconds / 60:>9.1f}  "
            f"{format_timestamp(case.last_seen):<20}  {case.repository} / {case.workflow}  "
            f"[{case.suite}] {name}",
            file=out,
        )


def run_flaky(config_path: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    config = load_config(config_path)
    if config.state.path == ":memory:":
        raise ConfigError("state.path: :memory: keeps no history to read")
    cases = read_flaky_cases(config.state.path)
    if as_json:
        print(json.dumps(flaky_json(cases), indent=2), file=out)
    else:
        print_flaky(cases, out)
    return 0
