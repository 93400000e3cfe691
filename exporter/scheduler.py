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
from exporter.sources.errors import RateLimited, SourceError, Stopping
from exporter.sources.github.ratelimit import RateBudget
from exporter.store import StateWriteError
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
            if not force and self._defer(job):
                return False
            job.last_attempt = time.time()
            return self._poll(job)
        finally:
            job.lock.release()

    def _defer(self, job: SourceJob) -> bool:
        """Skip this turn to save rate-limit budget (counted; the pause itself is logged once by
        the budget). A source never polled yet counts as failed, so readiness stays honest."""
        if job.budget is None:
            return False
        now = time.time()
        slowdown = job.budget.slowdown(now)
        if slowdown <= 1.0 or now - job.last_attempt >= job.interval * slowdown:
            return False
        self.telemetry.polls_deferred.labels(job.source).inc()
        if self.readiness.snapshot().get(job.source) == "pending":
            self.readiness.mark(job.source, False)
        return True

    def _poll(self, job: SourceJob) -> bool:
        started = time.perf_counter()
        ok = False
        try:
            result = job.poll()
            ok = True
            log.info("poll done", source=job.source, **_summary(result))
        except Stopping:
            return False
        except (SourceError, StateWriteError) as exc:
            self.telemetry.poll_errors.labels(job.source, exc.reason).inc()
            level = log.info if isinstance(exc, RateLimited) else log.warning
            level("poll failed", source=job.source, reason=exc.reason, error=str(exc))
        except Exception as exc:  # the loop must survive anything a payload can provoke
            self.telemetry.poll_errors.labels(job.source, "internal").inc()
            log.exception("poll crashed", source=job.source, error=str(exc))
        finally:
            self.telemetry.poll_duration.labels(job.source).observe(time.perf_counter() - started)
        self.telemetry.up.labels(job.source).set(1 if ok else 0)
        if ok:
            self.telemetry.last_success.labels(job.source).set(time.time())
        self.readiness.mark(job.source, ok)
        return ok


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
                "default": ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs) + 1)))
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    def add_maintenance(self, action: Callable[[], Any], interval: float) -> None:
        def guarded() -> None:
            try:
                action()
            except Exception as exc:  # housekeeping must not end the scheduler either
                log.exception("maintenance failed", error=str(exc))

        # First right after start (a restart after a long pause has the most to forget).
        self._scheduler.add_job(
            guarded,
            "interval",
            seconds=interval,
            id="maintenance",
            name="maintenance",
            next_run_time=datetime.now(UTC) + timedelta(seconds=5),
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
