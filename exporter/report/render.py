"""Report → HTML (one self-contained page: inline CSS and SVG, no script, nothing fetched), markdown
or JSON. Templates are Jinja2 with autoescape on for HTML, so every name (repository, workflow,
job, step, suite, image) is text, never markup; markdown escapes its own specials."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import jinja2
from markupsafe import Markup, escape

from exporter import __version__
from exporter.report.model import Report

# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if abs(seconds) < 120:
        whole = abs(seconds) >= 10 or float(seconds).is_integer()
        return f"{seconds:.0f} s" if whole else f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def minutes(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} min"


def number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio * 100:.0f} %"


def size(value: float | None) -> str:
    if value is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def when(stamp: float | None) -> str:
    if stamp is None:
        return "—"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(stamp: float | None) -> str:
    return "—" if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%b %d")


def shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()<>#+!|~&])")


def markdown_text(value: Any) -> str:
    """A name as literal markdown text: specials escaped, line breaks folded."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(value).split()))


# Tick steps for time axes: seconds, minutes, hours.
TIME_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400, 43200)
OTHER_STEPS = tuple(f * 10.0**k for k in range(-3, 16) for f in (1, 2, 5))


def hint(text: str) -> Markup:
    """Our own guidance text: escaped, with `code` spans marked up."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def axis(value: float, kind: str = "duration", count: int = 5) -> list[float]:
    """Tick values from 0 to the first round value at or above `value`, at most `count` steps:
    whole minutes for times, 1-2-5 steps for the rest."""
    value = value if value > 0 and math.isfinite(value) else 1.0
    steps = TIME_STEPS if kind in ("duration", "minutes") else OTHER_STEPS
    step = next((s for s in steps if s * count >= value), steps[-1])
    return [step * i for i in range(math.ceil(value / step - 1e-9) + 1)]


def position(value: float, top: float, origin: float, length: float) -> float:
    """Where `value` falls on an axis from `origin`, `length` long, ending at `top`."""
    return round(origin + (value / top if top else 0.0) * length, 2)


def blocks(value: float, top: float, width: int = 24) -> str:
    """A text bar for markdown."""
    filled = 0 if top <= 0 else round(width * value / top)
    return "█" * filled or "▏"


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter.report", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters: dict[str, Callable[..., str]] = {
        "duration": duration,
        "minutes": minutes,
        "percent": percent,
        "number": number,
        "size": size,
        "when": when,
        "day": day,
        "shorten": shorten,
        "md": markdown_text,
        "blocks": blocks,
        "hint": hint,
    }
    env.filters.update(filters)
    env.globals.update(axis=axis, at=position, palette=PALETTE, version=__version__)
    return env


HTML = _environment(autoescape=True)
MARKDOWN = _environment(autoescape=False)


def colours(report: Report) -> dict[str, str]:
    """One colour per job name, the same in every chart."""
    names: list[str] = []
    for pipeline in report.pipelines:
        for bar in pipeline.critical_path.bars:
            names.extend(job.name for job in bar.jobs)
    ordered = list(dict.fromkeys(names))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(ordered)}


def _ids() -> Callable[[str], str]:
    counter = itertools.count(1)
    return lambda prefix: f"{prefix}{next(counter)}"


def render_html(report: Report) -> str:
    return HTML.get_template("report.html.j2").render(
        report=report, colour=colours(report), uid=_ids()
    )


def render_markdown(report: Report) -> str:
    return MARKDOWN.get_template("report.md.j2").render(report=report)


def as_data(report: Report) -> dict[str, Any]:
    data = dataclasses.asdict(report)
    data["version"] = __version__
    return data


def render_json(report: Report) -> str:
    return json.dumps(as_data(report), indent=2, allow_nan=False) + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {
    "html": render_html,
    "markdown": render_markdown,
    "json": render_json,
}
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "markdown": "text/markdown; charset=utf-8",
    "json": "application/json",
}


def formats() -> Iterable[str]:
    return RENDERERS.keys()
