"""GitHub client behaviour under fault injection (mock transports are for exactly this)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import httpx
import pytest
import tenacity.nap
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from exporter.scheduler import PollRunner, SourceJob
from exporter.server import Readiness
from exporter.sources.errors import (
    MalformedResponse,
    RateLimited,
    ServerError,
    SourceError,
    TooLarge,
    TransportError,
)
from exporter.sources.github.auth import TokenAuth
from exporter.sources.github.client import (
    MAX_BODY_BYTES,
    MAX_PAGES,
    GitHubClient,
    endpoint_template,
)
from exporter.sources.github.ratelimit import MAX_WAIT, RateBudget
from exporter.sources.http import RetryPolicy
from exporter.store import Store
from exporter.telemetry import Telemetry

Handler = Callable[[httpx.Request], httpx.Response]
API = "https://ghe.example/api/v3"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between retries, recorded instead of slept (tenacity's documented seam)."""
    waited: list[float] = []
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=waited.append))
    return waited


def client_for(
    handler: Handler, *, retries: int = 3, store: Store | None = None
) -> tuple[GitHubClient, Telemetry]:
    telemetry = Telemetry(CollectorRegistry())
    client = GitHubClient(
        API,
        TokenAuth("ghp_" + "x" * 36),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        telemetry=telemetry,
        cache=store.http_cache if store else None,
        retry=RetryPolicy(max_retries=retries, backoff=0.5),
        secondary_wait=60.0,
    )
    return client, telemetry


def test_endpoint_templates() -> None:
    """Endpoints are counted by templated path, never by owner/repo or ids."""
    assert endpoint_template("/repos/a/b/actions/runs/123/attempts/2/jobs") == (
        "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs"
    )
    assert (
        endpoint_template("/repos/a/b/contents/.github/workflows/ci.yml")
        == "/repos/{owner}/{repo}/contents/{path}"
    )


def test_headers_and_ghes_base_path() -> None:
    """Requests carry the API version, the JSON media type and the token; GHES's /api/v3 prefix is
    kept in URLs and stripped from the endpoint label."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client, telemetry = client_for(handler)
    assert client.get_json("/rate_limit") == {"ok": True}
    request = seen[0]
    assert str(request.url) == f"{API}/rate_limit"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["Authorization"].startswith("Bearer ghp_")
    assert (
        telemetry.registry.get_sample_value(
            "ci_pipeline_exporter_api_requests_total",
            {"api": "github", "endpoint": "/rate_limit", "code": "200"},
        )
        == 1
    )


def _paged(pages: int, link: Callable[[int], str]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        headers = {"Link": f'<{link(page + 1)}>; rel="next"'} if page < pages else {}
        return httpx.Response(200, json={"total_count": 5, "jobs": [{"id": page}]}, headers=headers)

    return handler


def test_pagination_follows_link_next() -> None:
    """Pages are followed by Link rel="next", never constructed."""
    client, _ = client_for(_paged(3, lambda n: f"{API}/x?page={n}"))
    items = [item["id"] for _, page in client.paginate("/x", {}, "jobs") for item in page]
    assert items == [1, 2, 3]


def test_next_on_another_origin_is_malformed_and_gets_no_token() -> None:
    """A `next` link to another scheme, host or port is a counted malformed error; the token never
    goes there and the foreign path never becomes an endpoint label."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return _paged(3, lambda n: f"http://127.0.0.1:9/steal?page={n}")(request)

    for other in (
        "http://ghe.example/api/v3/x",
        "https://ghe.example:8443/api/v3/x",
        "https://ghe.example:99999/api/v3/x",  # a port out of range: not our origin either
    ):

        def elsewhere(page: int, origin: str = other) -> str:
            return f"{origin}?page={page}"

        client, telemetry = client_for(_paged(3, elsewhere))
        with pytest.raises(MalformedResponse, match="another origin"):
            list(client.paginate("/x", {}, "jobs"))
    client, telemetry = client_for(handler)
    with pytest.raises(MalformedResponse):
        list(client.paginate("/x", {}, "jobs"))
    assert seen == [f"{API}/x"]
    text = json.dumps([s.labels for m in telemetry.registry.collect() for s in m.samples])
    assert "steal" not in text


def test_endless_unique_pages_stop_at_the_cap() -> None:
    """An endless chain of unique `next` pages stops at MAX_PAGES, counted as pages_capped."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return _paged(10**9, lambda n: f"{API}/x?page={n}")(request)

    client, telemetry = client_for(handler)
    pages = list(client.paginate("/x", {}, "jobs", source="github:a/b"))
    assert len(pages) == len(calls) == MAX_PAGES
    assert (
        telemetry.registry.get_sample_value(
            "ci_pipeline_exporter_poll_errors_total",
            {"source": "github:a/b", "reason": "pages_capped"},
        )
        == 1
    )


def test_body_over_the_cap_is_too_large() -> None:
    """A JSON page over MAX_BODY_BYTES is refused while streaming, counted as too_large, never
    parsed (memory stays bounded)."""
    big = b'{"jobs": [' + b'{"id": 1},' * (MAX_BODY_BYTES // 10) + b'{"id": 1}]}'
    client, _ = client_for(lambda r: httpx.Response(200, content=big), retries=0)
    with pytest.raises(TooLarge) as info:
        client.get_json("/x")
    assert info.value.reason == "too_large"


def test_etag_304_serves_the_stored_body(tmp_path: object) -> None:
    """A conditional GET sends If-None-Match and a 304 returns the body stored with the ETag."""
    store = Store(":memory:")
    calls: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"v1"':
            return httpx.Response(304, headers={"ETag": '"v1"'})
        return httpx.Response(200, json={"workflow_runs": [{"id": 1}]}, headers={"ETag": '"v1"'})

    client, _ = client_for(handler, store=store)
    first = client.get_page(client.url("/runs"), conditional=True)
    second = client.get_page(client.url("/runs"), conditional=True)
    assert calls == [None, '"v1"']
    assert (first.cached, second.cached) == (False, True)
    assert second.data == first.data


def test_secondary_rate_limit_honours_retry_after(sleeps: list[float]) -> None:
    """403 with retry-after waits that long, then retries."""
    responses = iter(
        [
            httpx.Response(
                403, json={"message": "secondary rate limit"}, headers={"retry-after": "7"}
            ),
            httpx.Response(200, json={"ok": 1}),
        ]
    )
    client, _ = client_for(lambda r: next(responses))
    assert client.get_json("/x") == {"ok": 1}
    assert sleeps == [pytest.approx(7.0, abs=0.1)]


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "1e12"},
        {
            "x-ratelimit-remaining": "0",
            "x-ratelimit-limit": "5000",
            "x-ratelimit-reset": "99999999999",
        },
    ],
    ids=["retry-after", "reset"],
)
def test_absurd_waits_are_capped_at_an_hour(sleeps: list[float], headers: dict[str, str]) -> None:
    """A 429 with Retry-After: 1e12, or a reset far in the future, pauses GitHub requests for at
    most MAX_WAIT (GitHub's reset window), not for millennia; nothing is slept inside the poll."""
    client, _ = client_for(lambda r: httpx.Response(429, json={"message": "x"}, headers=headers))
    with pytest.raises(RateLimited) as info:
        client.get_json("/x")
    assert info.value.until - time.time() <= MAX_WAIT + 1
    paused = client.budget.paused_until()
    assert paused is not None
    assert paused - time.time() <= MAX_WAIT + 1
    assert sleeps == []


def test_primary_rate_limit_defers_until_the_reset(sleeps: list[float]) -> None:
    """remaining=0 without retry-after: the wait is until x-ratelimit-reset; too long a wait ends
    the poll with RateLimited, and every later request is refused before it is sent."""
    reset = int(time.time()) + 3000
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            403,
            json={"message": "API rate limit exceeded"},
            headers={
                "x-ratelimit-remaining": "0",
                "x-ratelimit-limit": "5000",
                "x-ratelimit-reset": str(reset),
            },
        )

    client, _ = client_for(handler)
    with pytest.raises(RateLimited) as info:
        client.get_json("/x")
    assert info.value.until == pytest.approx(reset, abs=5)
    assert sleeps == []
    assert len(calls) == 1
    with pytest.raises(RateLimited):
        client.get_json("/y")
    assert len(calls) == 1  # the budget is checked inside the poll, before each request


def test_secondary_without_retry_after_backs_off_at_least_the_configured_wait(
    sleeps: list[float],
) -> None:
    """No retry-after and remaining > 0: wait at least secondary_wait (GitHub: a minute); a wait
    that long is not slept inside the poll: the poll ends and the next one is deferred."""
    client, _ = client_for(
        lambda r: httpx.Response(
            429, json={"message": "slow down"}, headers={"x-ratelimit-remaining": "100"}
        ),
        retries=1,
    )
    with pytest.raises(RateLimited) as info:
        client.get_json("/x")
    assert sleeps == []
    assert 60 <= info.value.until - time.time() <= 76
    assert client.budget.slowdown() == float("inf")


def test_5xx_retries_are_bounded_with_backoff(sleeps: list[float]) -> None:
    """5xx is retried max_retries times with growing, jittered delays, then raised."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502)

    client, _ = client_for(handler, retries=3)
    with pytest.raises(ServerError):
        client.get_json("/x")
    assert len(calls) == 4
    assert len(sleeps) == 3
    assert sleeps[0] < sleeps[2]
    assert all(0.5 <= s <= 3.0 for s in sleeps)


def test_transport_errors_and_timeouts_are_retried_then_raised(sleeps: list[float]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client, _ = client_for(handler, retries=2)
    with pytest.raises(TransportError):
        client.get_json("/x")
    assert len(sleeps) == 2


def test_malformed_and_truncated_json_retried_then_raised(sleeps: list[float]) -> None:
    bodies = iter([b"<html>", b'{"a": [1, 2', b'{"a": 1}'])
    client, _ = client_for(lambda r: httpx.Response(200, content=next(bodies)), retries=2)
    assert client.get_json("/x") == {"a": 1}
    client, _ = client_for(lambda r: httpx.Response(200, content=b"{"), retries=1)
    with pytest.raises(MalformedResponse):
        client.get_json("/x")


def test_rate_headers_update_metrics_and_budget() -> None:
    """x-ratelimit-* headers of every response land in the gauges; the budget slows polling as
    remaining falls and stops below the reserve."""
    reset = str(int(time.time()) + 1800)
    client, telemetry = client_for(
        lambda r: httpx.Response(
            200,
            json={},
            headers={
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "1000",
                "x-ratelimit-reset": reset,
                "x-ratelimit-resource": "core",
            },
        )
    )
    client.get_json("/x")
    gauge = telemetry.registry.get_sample_value
    assert gauge("ci_pipeline_exporter_github_rate_limit_remaining", {"resource": "core"}) == 1000
    assert gauge("ci_pipeline_exporter_github_rate_limit_limit", {"resource": "core"}) == 5000
    assert client.budget.slowdown() == pytest.approx(2.5)
    budget = RateBudget(reserve=0.05)
    limits = {"x-ratelimit-limit": "5000", "x-ratelimit-reset": reset}
    budget.update(httpx.Headers({**limits, "x-ratelimit-remaining": "4000"}))
    assert budget.slowdown() == 1.0
    budget.update(httpx.Headers({**limits, "x-ratelimit-remaining": "100"}))
    assert budget.slowdown() == float("inf")


def test_401_retries_once_after_invalidating_auth() -> None:
    """A 401 mints a new token once (an App token may be revoked early); a second 401 is raised."""
    statuses: Iterator[int] = iter([401, 200])
    client, _ = client_for(
        lambda r: httpx.Response(next(statuses), content=json.dumps({}).encode())
    )
    assert client.get_json("/x") == {}


def test_a_pause_is_logged_once_and_readiness_stays_honest() -> None:
    """A long rate limit pauses every GitHub source with one log line (not one per second); a
    source deferred before its first poll reads as failed in /readyz, so the other sources'
    readiness decides, and it polls again once the pause is over."""
    budget = RateBudget()
    with capture_logs() as logs:
        for _ in range(5):
            budget.block_until(time.time() + 1e12)
    assert [e["event"] for e in logs] == ["github requests paused for the rate limit"]
    paused = budget.paused_until()
    assert paused is not None
    assert paused <= time.time() + MAX_WAIT + 1
    readiness = Readiness(["github:a/b", "registry:r"])
    runner = PollRunner(Telemetry(CollectorRegistry()), readiness)
    polls: list[str] = []
    github = SourceJob("github:a/b", lambda: polls.append("github"), 60.0, budget)
    registry = SourceJob("registry:r", lambda: polls.append("registry"), 60.0)
    assert not runner.run(github)
    assert runner.run(registry)
    assert polls == ["registry"]
    assert readiness.snapshot() == {"github:a/b": "failed", "registry:r": "ok"}
    assert readiness.ready
    budget.blocked_until = 0.0
    assert runner.run(github)
    assert readiness.snapshot()["github:a/b"] == "ok"


@pytest.mark.parametrize("reset", ["nan", "inf", "1e400", "-inf"])
def test_a_reset_that_is_not_a_finite_number_pauses_nothing_for_ever(reset: str) -> None:
    """`x-ratelimit-reset: nan` (or infinite) with nothing remaining is no reset at all: the
    budget never answers "paused until nan", and an hour later requests flow."""
    headers = {
        "x-ratelimit-remaining": "0",
        "x-ratelimit-limit": "5000",
        "x-ratelimit-reset": reset,
    }
    client, _ = client_for(lambda r: httpx.Response(200, json={}, headers=headers))
    client.get_json("/x")
    later = time.time() + MAX_WAIT + 1
    paused = client.budget.paused_until()
    assert paused is None or time.time() <= paused <= later
    assert client.budget.paused_until(later) is None
    assert client.budget.slowdown(later) < float("inf")


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("https://127.0.0.1:99999/x", MalformedResponse),
        ("https://storage.example:-1/x", MalformedResponse),
        # httpx itself refuses this Location while reading the API's answer: a protocol error,
        # retried like one (a bounded number of times), never an unexpected exception.
        ("https://[::1/x", TransportError),
    ],
)
def test_a_redirect_that_cannot_be_parsed_is_malformed(
    location: str, error: type[SourceError]
) -> None:
    """A log or artifact redirect to a URL with a port out of range or a broken IPv6 host is
    malformed (a permanent skip), never an unexpected exception and never fetched."""
    fetched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ghe.example":
            return httpx.Response(302, headers={"location": location})
        fetched.append(str(request.url))
        return httpx.Response(200, content=b"log")

    client, _ = client_for(handler, retries=0)
    with (
        pytest.raises(error),
        client.download("/repos/a/b/actions/jobs/1/logs", "log", 100),
    ):
        pass
    assert fetched == []
