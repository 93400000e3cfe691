"""Job logs of the simulated build jobs: GitHub's timestamped raw format with `##[group]` step
sections, an actions/cache restore, and one BuildKit build per docker step whose cache backend
(gha in the baseline, registry after the change), import/export times, cached and executed
instructions add up to that step's duration. Each build's ground truth is recorded as written."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator.model import SimJob, SimRun
from simulator.scenarios import rng_for

# Docker steps: step name → (stage, [(Dockerfile instruction, expected label, main?)]).
# The `main` instruction takes the step's remaining time; the others are small.
DOCKER_STEPS: dict[str, tuple[str, list[tuple[str, str, bool]]]] = {
    "Build base layers": (
        "base",
        [
            (
                "FROM docker.io/library/python:3.12-slim",
                "FROM docker.io/library/python:3.12-slim",
                False,
            ),
            (
                "RUN apt-get update && apt-get install -y --no-install-recommends build-essential libpq-dev",
                "RUN apt-get update",
                True,
            ),
        ],
    ),
    "Install Python dependencies": (
        "deps",
        [
            ("COPY requirements.txt .", "COPY requirements.txt", False),
            ("RUN pip install --no-cache-dir -r requirements.txt", "RUN pip install", True),
        ],
    ),
    "npm install": (
        "assets",
        [
            ("COPY package.json package-lock.json ./", "COPY package.json", False),
            ("RUN npm ci --no-audit", "RUN npm ci", True),
        ],
    ),
    "Install Chromium": (
        "browsers",
        [
            ("RUN npx playwright install --with-deps chromium", "RUN npx playwright", True),
        ],
    ),
    "Build and push": (
        "app",
        [
            ("COPY . .", "COPY .", False),
            ("RUN python manage.py collectstatic --noinput", "RUN python manage.py", True),
        ],
    ),
    "Build web image": (
        "web",
        [
            ("COPY --from=deps /venv /venv", "COPY /venv", False),
            ("RUN python -m compileall -q /app", "RUN python compileall", True),
        ],
    ),
    "Build celery image": (
        "celery",
        [
            ("COPY --from=deps /venv /venv", "COPY /venv", False),
            ("RUN python -m compileall -q /app", "RUN python compileall", True),
        ],
    ),
    "Build and push images": (
        "web",
        [
            ("COPY --from=deps /venv /venv", "COPY /venv", False),
            ("RUN python -m compileall -q /app", "RUN python compileall", True),
        ],
    ),
}
RESTORE_STEP = "Restore cache"


def _ts(epoch: float) -> str:
    whole = int(epoch)
    fraction = round((epoch - whole) * 10_000_000)
    if fraction >= 10_000_000:
        whole, fraction = whole + 1, 0
    return datetime.fromtimestamp(whole, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:07d}Z"


@dataclass
class BuildTruth:
    job_id: int
    step: str
    backend: str
    import_seconds: float
    export_seconds: float
    duration_seconds: float
    cached: int
    executed: int
    instructions: list[dict[str, Any]] = field(
        default_factory=list
    )  # executed: stage, label, seconds


@dataclass
class JobLog:
    text: bytes
    builds: list[BuildTruth]
    restores: list[dict[str, Any]]  # result, seconds (the restore step's duration from the API)


def backend_for(run: SimRun, job: SimJob) -> str:
    """gha while the build restores the Actions cache slowly (the baseline), registry after."""
    restore = next(
        (s for s in job.steps if s.name == RESTORE_STEP and s.started_at is not None), None
    )
    if restore is None or restore.completed_at is None or restore.started_at is None:
        return "registry"
    return "gha" if restore.completed_at - restore.started_at >= 18 else "registry"


Lines = list[tuple[float, str]]


def job_log(seed: int, run: SimRun, job: SimJob, build_backend: str) -> JobLog:
    rng = rng_for(seed, run.repository, "log", job.id)
    lines: Lines = []
    builds: list[BuildTruth] = []
    restores: list[dict[str, Any]] = []
    digest = hashlib.sha256(f"{run.repository}:{job.id}".encode()).hexdigest()
    for step in job.steps:
        if step.started_at is None or step.completed_at is None:
            continue
        fixed = _fixed_lines(step.name, step.started_at)
        if fixed is not None:
            lines += fixed
        elif step.name == RESTORE_STEP:
            lines += _restore_lines(step, rng, digest, restores)
        elif step.name not in DOCKER_STEPS or step.completed_at - step.started_at < 3:
            lines += [
                (step.started_at + 0.1, f"##[group]Run {step.name.lower()}"),
                (step.started_at + 0.1, "##[endgroup]"),
                (step.completed_at - 0.1, "done"),
            ]
        else:
            build_lines, truth = _docker_build(
                step, run, job.id, build_backend, rng=rng, digest=digest
            )
            lines += build_lines
            builds.append(truth)
    text = "".join(f"{_ts(ts)} {line}\n" for ts, line in lines)
    return JobLog(text.encode(), builds, restores)


def _fixed_lines(name: str, start: float) -> Lines | None:
    if name == "Set up job":
        return [
            (start + 0.01, "Current runner version: '2.321.0'"),
            (start + 0.02, "##[group]Operating System"),
            (start + 0.03, "Ubuntu"),
            (start + 0.04, "##[endgroup]"),
            (start + 0.05, "Secret source: Actions"),
        ]
    if name == "Complete job":
        return [(start + 0.1, "Cleaning up orphan processes")]
    if name.startswith("Post "):
        return [(start + 0.1, "Post job cleanup."), (start + 0.2, "Cache saved successfully")]
    return None


def _restore_lines(
    step: Any, rng: random.Random, digest: str, restores: list[dict[str, Any]]
) -> Lines:
    start, end = step.started_at, step.completed_at
    hit = rng.random() < 0.85
    key = f"Linux-buildx-{digest[:40]}"
    lines = [
        (start + 0.1, "##[group]Run actions/cache@v4"),
        (start + 0.1, "with:"),
        (start + 0.1, "  path: /tmp/.buildx-cache"),
        (start + 0.1, f"  key: {key}"),
        (start + 0.1, "##[endgroup]"),
    ]
    if hit:
        lines += [
            (end - 0.5, f"Cache restored from key: {key}"),
            (end - 0.4, "Cache restored successfully"),
        ]
    else:
        lines.append((end - 0.4, f"Cache not found for input keys: {key}"))
    restores.append({"result": "hit" if hit else "miss", "seconds": end - start})
    return lines


def _docker_build(
    step: Any, run: SimRun, job_id: int, backend: str, *, rng: random.Random, digest: str
) -> tuple[Lines, BuildTruth]:
    """One `docker buildx build` step: BuildKit's plain progress output and what it measured."""
    start, end = step.started_at, step.completed_at
    duration = end - start
    stage, instructions = DOCKER_STEPS[step.name]
    gha = backend == "gha"
    cache_flag = (
        "type=gha,mode=max" if gha else f"type=registry,ref=ghcr.io/{run.repository}:buildcache"
    )
    lines: Lines = [
        (start + 0.1, "##[group]Run docker buildx build --target " + stage + " ."),
        (start + 0.1, f"  --cache-from {cache_flag}"),
        (start + 0.1, "##[endgroup]"),
    ]
    first = t = start + 0.5
    lines += [
        (t, '#0 building with "builder-sim" instance using docker-container driver'),
        (t, "#1 [internal] load build definition from Dockerfile"),
        (t, "#1 transferring dockerfile: 2.31kB done"),
        (t, "#1 DONE 0.0s"),
    ]
    import_seconds = round(rng.uniform(4.0, 6.0) if gha else rng.uniform(1.5, 2.5), 1)
    export_seconds = round(duration * (0.15 if gha else 0.06), 1)
    ref = f"gha:{abs(int(digest[:12], 16))}" if gha else f"ghcr.io/{run.repository}:buildcache"
    lines.append((t + 0.1, f"#2 importing cache manifest from {ref}"))
    if not gha:
        manifest = (
            "#2 inferred cache manifest type: application/vnd.oci.image.manifest.v1+json done"
        )
        lines.append((t + 0.2, manifest))
    t += 0.1 + import_seconds
    lines.append((t, f"#2 DONE {import_seconds:.1f}s"))
    truth = BuildTruth(job_id, step.name, backend, import_seconds, export_seconds, 0.0, 0, 0)
    budget = (end - 0.5) - t - export_seconds - 0.6
    t = _instruction_lines(lines, truth, stage, instructions, t=t, budget=budget)
    t = _export_lines(lines, len(instructions) + 3, t, export_seconds, gha)
    truth.duration_seconds = round(t, 7) - round(first, 7)
    lines += [
        (end - 0.2, "##[group]Digest"),
        (end - 0.2, "sha256:" + digest),
        (end - 0.2, "##[endgroup]"),
    ]
    return lines, truth


def _instruction_lines(
    lines: Lines,
    truth: BuildTruth,
    stage: str,
    instructions: Any,
    *,
    t: float,
    budget: float,
) -> float:
    total = len(instructions)
    for position, (instruction, label, main) in enumerate(instructions, start=1):
        number = position + 2
        lines.append((t + 0.05, f"#{number} [{stage} {position}/{total}] {instruction}"))
        if not main or budget < 3:
            # Small instructions and a main one with no time left (a pre-baked layer) hit the cache.
            lines.append((t + 0.1, f"#{number} CACHED"))
            truth.cached += 1
        else:
            seconds = round(budget, 1)
            lines.append((t + 1.0, f"#{number} 0.912 working on {label.lower()}"))
            t += seconds
            lines.append((t, f"#{number} DONE {seconds:.1f}s"))
            truth.executed += 1
            truth.instructions.append({"stage": stage, "instruction": label, "seconds": seconds})
        t += 0.1
    return t


def _export_lines(lines: Lines, number: int, t: float, export_seconds: float, gha: bool) -> float:
    lines += [
        (t + 0.1, f"#{number} exporting to image"),
        (t + 0.2, f"#{number} pushing layers 0.2s done"),
        (t + 0.3, f"#{number} DONE 0.3s"),
    ]
    t += 0.4
    number += 1
    name = "exporting to GitHub Actions Cache" if gha else "exporting cache to registry"
    prepared = export_seconds * 0.7
    lines += [
        (t, f"#{number} {name}"),
        (t + prepared, f"#{number} preparing build cache for export {prepared:.1f}s done"),
    ]
    t += export_seconds
    lines.append((t, f"#{number} DONE {export_seconds:.1f}s"))
    return t


def cache_entries(
    seed: int, repository: str, runs: list[tuple[SimRun, str]], now: float
) -> list[dict[str, Any]]:
    """Actions cache entries as GitHub keeps them: the newest first, evicted beyond 10 GiB."""
    entries: list[dict[str, Any]] = []
    for run, backend in reversed(runs[-60:]):
        rng = rng_for(seed, repository, "cache", run.index)
        created = run.created_at + 300
        digest = hashlib.sha256(f"{repository}:{run.index}".encode()).hexdigest()
        keys: list[tuple[str, int]] = [
            (f"Linux-buildx-{digest[:40]}", rng.randint(200, 400) * 1024**2)
        ]
        if backend == "gha":
            keys += [
                (
                    f"buildkit-blob-1-sha256:{hashlib.sha256(f'{digest}{i}'.encode()).hexdigest()}",
                    rng.randint(20, 120) * 1024**2,
                )
                for i in range(3)
            ]
            keys.append((f"index-buildkit-1-{digest[:32]}", rng.randint(2, 8) * 1024))
        for offset, (key, size) in enumerate(keys):
            entries.append(
                {
                    "id": (run.index + 1) * 10 + offset,
                    "ref": f"refs/heads/{run.branch}",
                    "key": key,
                    "version": hashlib.sha256(key.encode()).hexdigest(),
                    "last_accessed_at": datetime.fromtimestamp(
                        min(now, created + 60), tz=UTC
                    ).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "created_at": datetime.fromtimestamp(created, tz=UTC).strftime(
                        "%Y-%m-%dT%H:%M:%S.000Z"
                    ),
                    "size_in_bytes": size,
                }
            )
    kept, total = [], 0
    for entry in entries:
        if total + entry["size_in_bytes"] > 10 * 1024**3:
            continue
        total += entry["size_in_bytes"]
        kept.append(entry)
    return kept
