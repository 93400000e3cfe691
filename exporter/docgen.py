"""Generates docs/metrics.md from exporter/metrics.py: `python -m exporter.docgen [--check]`."""

from __future__ import annotations

import sys
from pathlib import Path

from exporter import metrics as m

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def render() -> str:
    lines = [
        "# Metrics",
        "",
        "Generated from `exporter/metrics.py` by `make docs` (`python -m exporter.docgen`); a test",
        "fails when this file is stale. Histogram buckets are in seconds; run and critical-path",
        "histograms also get every configured target and baseline bound.",
        "",
    ]
    groups = (
        ("Pipelines, jobs and steps", m.PIPELINE_METRICS),
        ("Build cache and Actions cache (job logs, cache API)", m.BUILD_METRICS),
        ("Tests (JUnit artifacts)", m.TEST_METRICS),
        ("Images (OCI registries)", m.IMAGE_METRICS),
        ("The exporter itself", m.EXPORTER_METRICS),
    )
    for title, specs in groups:
        lines += [f"## {title}", "", "| metric | type | labels | meaning |", "|---|---|---|---|"]
        for spec in specs:
            labels = ", ".join(f"`{label}`" for label in spec.labels)
            meaning = spec.help.replace("|", "\\|")
            lines.append(f"| `{spec.name}` | {spec.type} | {labels} | {meaning} |")
        lines.append("")
        bucketed = [s for s in specs if s.type == "histogram"]
        if bucketed:
            lines.append("Buckets:")
            lines.append("")
            for spec in bucketed:
                bounds = ", ".join(f"{b:g}" for b in spec.buckets)
                extra = " + target and baseline bounds" if spec.target_buckets else ""
                lines.append(f"- `{spec.name}`: {bounds}{extra}")
            lines.append("")
        folding = [s for s in specs if s.foldable]
        if folding:
            lines.append(
                "Labels folded into `other` when a metric reaches `limits.max_series_per_metric`:"
            )
            lines.append("")
            for spec in folding:
                lines.append(f"- `{spec.name}`: {', '.join(f'`{x}`' for x in spec.foldable)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
