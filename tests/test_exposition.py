"""The cached exposition: the same samples prometheus-client would render, re-rendered only where
something changed, in both formats; stale series expire and are counted; what the series budget
keeps (step sums and latest values for every step, histograms only for opted-in jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from exporter import metrics as m
from exporter.analysis.pipeline import JobFacts, RunFacts, StepFacts
from exporter.config import validate_config
from exporter.exposition import Exposition
from exporter.observations import Observe, ReplaceGroup, RepositoryPolicy, Unit, attempt_units
from exporter.store import StateWriteError, Store
from exporter.store.aggregates import Partition, partition_of


def _unit(repo: str, value: float) -> Unit:
    return Unit(
        f"github:{repo}",
        items=(
            Observe(m.RUN_DURATION, (repo, "CI", "main", "push", "success"), value),
            Observe(m.STEP_DURATION, (repo, "CI", "build", "Compile", "success"), value / 2),
        ),
    )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _exposition(store: Store, repos: list[str]) -> Exposition:
    config = validate_config({"github": {"repositories": [{"name": r} for r in repos]}})
    return Exposition(store, config, CollectorRegistry())


def test_only_changed_partitions_are_rendered_again() -> None:
    """A scrape renders each (metric, repository) once per change: after one repository records a
    run, only its partitions are rendered again, and the text equals a fresh rendering."""
    store = Store(":memory:")
    repos = [f"acme/r{i}" for i in range(5)]
    for repo in repos:
        store.commit(_unit(repo, 600))
    exposition = _exposition(store, repos)
    rendered: list[tuple[str, str]] = []
    original = exposition._partition

    def counting(spec: m.MetricSpec, partition: Partition, openmetrics: bool) -> bytes:
        rendered.append((spec.name, partition_of(next(iter(partition)))))
        return original(spec, partition, openmetrics)

    exposition._partition = counting  # type: ignore[method-assign]
    first = exposition.render().decode()
    assert len(rendered) == 5 * 2
    rendered.clear()
    assert exposition.render().decode() == first
    assert rendered == []
    store.commit(_unit("acme/r3", 900))
    changed = exposition.render().decode()
    assert sorted(rendered) == [
        (m.RUN_DURATION.name, "acme/r3"),
        (m.STEP_DURATION.name, "acme/r3"),
    ]
    fresh = _exposition(store, repos).render().decode()
    assert _samples(changed) == _samples(fresh)
    key = (
        "cicd_pipeline_run_duration_seconds_count",
        (
            ("branch", "main"),
            ("event", "push"),
            ("repository", "acme/r3"),
            ("result", "success"),
            ("workflow", "CI"),
        ),
    )
    assert _samples(changed)[key] == 2


def test_both_formats_parse_and_agree() -> None:
    """Text and OpenMetrics (one # EOF at the end) carry the same samples; the series gauge counts
    label sets per metric, and the cap is exported."""
    store = Store(":memory:", max_series_per_metric=1234)
    for repo in ("acme/a", "acme/b"):
        store.commit(_unit(repo, 300))
    exposition = _exposition(store, ["acme/a", "acme/b"])
    text = exposition.render(openmetrics=False).decode()
    om = exposition.render(openmetrics=True).decode()
    assert om.endswith("# EOF\n")
    assert om.count("# EOF") == 1
    om_values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in om_families(om)  # type: ignore[no-untyped-call]
        for s in f.samples
    }
    for key, value in _samples(text).items():
        if key[0].startswith(("cicd_", "ci_pipeline_exporter_series")):
            assert om_values[key] == value, key
    samples = _samples(text)
    assert samples[("ci_pipeline_exporter_series", (("metric", m.RUN_DURATION.name),))] == 2
    assert samples[("ci_pipeline_exporter_series_limit", ())] == 1234


def test_stale_series_expire_counted() -> None:
    """A label set not updated for the TTL is dropped from the store and the exposition, counted
    per metric; a fresh one stays."""
    now = [1000.0]
    store = Store(":memory:", clock=lambda: now[0])
    store.commit(_unit("acme/old", 300))
    now[0] = 2000.0
    store.commit(_unit("acme/new", 300))
    expired = store.expire(before=1500.0)
    assert expired == {m.RUN_DURATION.name: 1, m.STEP_DURATION.name: 1}
    samples = _samples(_exposition(store, ["acme/old", "acme/new"]).render().decode())
    repos = {dict(k[1]).get("repository") for k in samples if k[0].startswith("cicd_")}
    assert repos == {"acme/new"}
    key = ("ci_pipeline_exporter_series_expired_total", (("metric", m.RUN_DURATION.name),))
    assert samples[key] == 1
    assert store.expire(before=1500.0) == {}


def _facts(jobs: list[str]) -> RunFacts:
    steps = (
        StepFacts("Checkout", 1, "success", 3.0, 0.0, 3.0),
        StepFacts("Run", 2, "success", 40.0, 3.0, 43.0),
    )
    job_facts = tuple(
        JobFacts(i, name, "success", "ubuntu-latest", 0.0, 1.0, 44.0, steps)
        for i, name in enumerate(jobs)
    )
    return RunFacts("acme/a", 1, 1, "CI", "main", "push", "success", 0.0, 44.0, 43.0, job_facts)


def test_steps_cost_a_sum_a_count_and_a_latest_value_unless_opted_in() -> None:
    """Every step has its average (sum and count) and its latest value; only jobs named in
    metrics.step_histograms get a step histogram; queue times go by runner labels, capped."""
    policy = RepositoryPolicy("acme/a", frozenset({"main"}), step_histograms=("build*",))
    units = attempt_units(_facts(["build-image", "test"]), policy)
    unit = Unit("github:acme/a", items=tuple(i for u in units for i in u.items))

    def labels(spec: m.MetricSpec) -> list[tuple[str, ...]]:
        return [i.labels for i in unit.items if not isinstance(i, ReplaceGroup) and i.spec == spec]

    histograms = {found[2] for found in labels(m.STEP_DISTRIBUTION)}
    summaries = {found[2] for found in labels(m.STEP_DURATION)}
    latest = {found[2:] for found in labels(m.STEP_LAST_DURATION)}
    assert histograms == {"build-image"}
    assert summaries == {"build-image", "test"}
    assert latest == {(j, s) for j in ("build-image", "test") for s in ("Checkout", "Run")}
    assert set(labels(m.JOB_QUEUE)) == {("acme/a", "CI", "ubuntu-latest")}
    store = Store(":memory:")
    runners = [Observe(m.JOB_QUEUE, ("acme/a", "CI", f"self-hosted,pool-{i}"), 5) for i in range(5)]
    store.commit(Unit("github:acme/a", items=tuple(runners), limits={"runners": 3}))
    kept = {labels[2] for labels, _ in store.aggregates.series_of(m.JOB_QUEUE.name)}
    assert len(kept) == 4
    assert "other" in kept


def test_a_failed_expiry_never_serves_a_stale_rendering(tmp_path: Path) -> None:
    """When expiry's write fails (disk full), the aggregates are reloaded from the file; later
    commits must show in the next scrape, not a rendering cached before the failure."""
    now = [1000.0]
    store = Store(tmp_path / "s.db", clock=lambda: now[0])
    exposition = _exposition(store, ["acme/a", "acme/old"])
    store.commit(_unit("acme/a", 10))
    assert _run_count(exposition, "acme/a") == 1
    store.commit(_unit("acme/a", 20))
    now[0] = 1.0
    store.commit(_unit("acme/old", 1))  # something for expiry to delete
    now[0] = 1000.0
    writes = store.db.run

    def full_disk(action: Any) -> None:
        raise StateWriteError("state write failed: database or disk is full")

    store.db.run = full_disk  # type: ignore[method-assign]
    with pytest.raises(StateWriteError):
        store.expire(before=500.0)
    store.db.run = writes  # type: ignore[method-assign]
    store.commit(_unit("acme/a", 30))
    assert _run_count(exposition, "acme/a") == 3


def _run_count(exposition: Exposition, repo: str) -> float:
    samples = _samples(exposition.render().decode())
    return sum(
        value
        for (name, labels), value in samples.items()
        if name == f"{m.RUN_DURATION.name}_count" and dict(labels)["repository"] == repo
    )
