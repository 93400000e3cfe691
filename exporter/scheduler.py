"""APScheduler jobs, one per source: no overlapping runs of the same job, jitter, and the poll's
outcome turned into up / last-success / error metrics. The poll loop never dies."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from exporter.logging import get_logger
from exporter.server import Readiness
from exporter.sources.errors import SourceError
from exporter.sources.github.client import RateBudget
from exporter.state import StoreClosed
from exporter.telemetry import Telemetry

log = get_logger(__name__)


@dataclass
class SourceJob:
    source: str
    poll: Callable[[], Any]
    interval: float
    budget: RateBudget | None = None
    last_attempt: float = field(default=0.0)
    lock: threading.Lock = field(default_factory=threading.Lock)


class PollRunner:
    """Runs one poll of a source and records its outcome."""

    def __init__(self, telemetry: Telemetry, readiness: Readiness) -> None:
        self.telemetry = telemetry
        self.readiness = readiness

    def run(self, job: SourceJob, *, force: bool = False) -> bool:
        if not job.lock.acquire(blocking=False):
            return False  # the previous poll of this source is still running
        try:
            now = time.time()
            if not force and job.budget is not None:
                slowdown = job.budget.slowdown(now)
                if slowdown > 1.0 and now - job.last_attempt < job.interval * slowdown:
                    self.telemetry.polls_deferred.labels(job.source).inc()
                    log.info(
                        "poll deferred to save rate limit", source=job.source, slowdown=slowdown
                    )
                    return False
            job.last_attempt = now
            started = time.perf_counter()
            ok = False
            try:
                result = job.poll()
                ok = True
                log.info("poll done", source=job.source, **_summary(result))
            except StoreClosed:
                return False
            except SourceError as exc:
                self.telemetry.poll_errors.labels(job.source, exc.reason).inc()
                log.warning("poll failed", source=job.source, reason=exc.reason, error=str(exc))
            except Exception as exc:  # the loop must survive anything a payload can provoke
                self.telemetry.poll_errors.labels(job.source, "internal").inc()
                log.exception("poll crashed", source=job.source, error=str(exc))
            finally:
                self.telemetry.poll_duration.labels(job.source).observe(
                    time.perf_counter() - started
                )
            self.telemetry.up.labels(job.source).set(1 if ok else 0)
            if ok:
                self.telemetry.last_success.labels(job.source).set(time.time())
            self.readiness.mark(job.source, ok)
            return ok
        finally:
            job.lock.release()


def _summary(result: Any) -> dict[str, Any]:
    if result is None or not hasattr(result, "__dataclass_fields__"):
        return {}
    return {
        k: v
        for k, v in vars(result).items()
        if isinstance(v, int | float | str) and not isinstance(v, bool)
    }


class Scheduler:
    def __init__(self, runner: PollRunner, jobs: list[SourceJob], max_workers: int = 4) -> None:
        self.runner = runner
        self.jobs = jobs
        self._scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs) or 1)))
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    def start(self) -> None:
        now = datetime.now(UTC)
        for index, job in enumerate(self.jobs):
            # Stagger first polls so many sources don't hit the API in the same second.
            first = now + timedelta(seconds=min(2.0, 0.05 * index) + random.random() * 0.1)
            self._scheduler.add_job(
                self.runner.run,
                "interval",
                args=[job],
                seconds=job.interval,
                jitter=min(job.interval * 0.1, 10.0),
                next_run_time=first,
                id=job.source,
                name=job.source,
            )
        self._scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
