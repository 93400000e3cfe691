"""GitHub client behaviour under fault injection (mock transports are for exactly this)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry

from exporter.sources.errors import MalformedResponse, RateLimited, ServerError, TransportError
from exporter.sources.github.auth import TokenAuth
from exporter.sources.github.client import GitHubClient, RateBudget, endpoint_template
from exporter.sources.retry import Backoff
from exporter.state import Store
from exporter.telemetry import Telemetry

Handler = Callable[[httpx.Request], httpx.Response]


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(
    handler: Handler, *, retries: int = 3, store: Store | None = None
) -> tuple[GitHubClient, Sleeps, Telemetry]:
    sleeps = Sleeps()
    telemetry = Telemetry(CollectorRegistry())
    client = GitHubClient(
        "https://ghe.example/api/v3",
        TokenAuth("ghp_" + "x" * 36),
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        telemetry=telemetry,
        cache=store,
        max_retries=retries,
        backoff=Backoff(base=0.5, sleep=sleeps, rng=random.Random(1)),
        secondary_wait=60.0,
    )
    return client, sleeps, telemetry


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

    client, _, telemetry = client_for(handler)
    assert client.get_json("/rate_limit") == {"ok": True}
    request = seen[0]
    assert str(request.url) == "https://ghe.example/api/v3/rate_limit"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["Authorization"].startswith("Bearer ghp_")
    assert telemetry.api_requests.labels("github", "/rate_limit", "200")._value.get() == 1


def test_pagination_follows_link_next() -> None:
    """Pages are followed by Link rel="next", never constructed."""

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params.get("page", "1"))
        headers = (
            {"Link": f'<https://ghe.example/api/v3/x?page={page + 1}>; rel="next"'}
            if page < 3
            else {}
        )
        return httpx.Response(200, json={"total_count": 5, "jobs": [{"id": page}]}, headers=headers)

    client, _, _ = client_for(handler)
    items = [item["id"] for _, page in client.paginate("/x", {}, "jobs") for item in page]
    assert items == [1, 2, 3]


def test_etag_304_serves_the_stored_body(tmp_path: object) -> None:
    """A conditional GET sends If-None-Match and a 304 returns the body stored with the ETag."""
    store = Store(":memory:")
    calls: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"v1"':
            return httpx.Response(304, headers={"ETag": '"v1"'})
        return httpx.Response(200, json={"workflow_runs": [{"id": 1}]}, headers={"ETag": '"v1"'})

    client, _, _ = client_for(handler, store=store)
    first = client.get_page(client.url("/runs"), conditional=True)
    second = client.get_page(client.url("/runs"), conditional=True)
    assert calls == [None, '"v1"']
    assert (first.cached, second.cached) == (False, True)
    assert second.data == first.data


def test_secondary_rate_limit_honours_retry_after() -> None:
    """403 with retry-after waits that long, then retries."""
    responses = iter(
        [
            httpx.Response(
                403, json={"message": "secondary rate limit"}, headers={"retry-after": "7"}
            ),
            httpx.Response(200, json={"ok": 1}),
        ]
    )
    client, sleeps, _ = client_for(lambda r: next(responses))
    assert client.get_json("/x") == {"ok": 1}
    assert sleeps == [7.0]


def test_primary_rate_limit_waits_for_reset_or_defers() -> None:
    """remaining=0 without retry-after: wait for x-ratelimit-reset; too long a wait ends the poll with
    RateLimited and blocks the budget until then."""
    import time

    reset = int(time.time()) + 3000
    client, sleeps, _ = client_for(
        lambda r: httpx.Response(
            403,
            json={"message": "API rate limit exceeded"},
            headers={
                "x-ratelimit-remaining": "0",
                "x-ratelimit-limit": "5000",
                "x-ratelimit-reset": str(reset),
            },
        )
    )
    with pytest.raises(RateLimited) as info:
        client.get_json("/x")
    assert info.value.until == pytest.approx(reset, abs=5)
    assert sleeps == []
    assert client.budget.slowdown() == float("inf")


def test_secondary_without_retry_after_backs_off_at_least_the_configured_wait() -> None:
    """No retry-after and remaining > 0: wait at least secondary_wait (GitHub: a minute); a wait
    that long is not slept inside the poll: the poll ends and the next one is deferred."""
    import time

    client, sleeps, _ = client_for(
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


def test_5xx_retries_are_bounded_with_backoff() -> None:
    """5xx is retried max_retries times with growing, jittered delays, then raised."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502)

    client, sleeps, _ = client_for(handler, retries=3)
    with pytest.raises(ServerError):
        client.get_json("/x")
    assert len(calls) == 4
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2]
    assert all(0.25 <= s <= 3.0 for s in sleeps)


def test_transport_errors_and_timeouts_are_retried_then_raised() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client, sleeps, _ = client_for(handler, retries=2)
    with pytest.raises(TransportError):
        client.get_json("/x")
    assert len(sleeps) == 2


def test_malformed_and_truncated_json_retried_then_raised() -> None:
    bodies = iter([b"<html>", b'{"a": [1, 2', b'{"a": 1}'])
    client, _, _ = client_for(lambda r: httpx.Response(200, content=next(bodies)), retries=2)
    assert client.get_json("/x") == {"a": 1}
    client, _, _ = client_for(lambda r: httpx.Response(200, content=b"{"), retries=1)
    with pytest.raises(MalformedResponse):
        client.get_json("/x")


def test_rate_headers_update_metrics_and_budget() -> None:
    """x-ratelimit-* headers of every response land in the gauges; the budget slows polling as
    remaining falls and stops below the reserve."""
    client, _, telemetry = client_for(
        lambda r: httpx.Response(
            200,
            json={},
            headers={
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "1000",
                "x-ratelimit-reset": "9999999999",
                "x-ratelimit-resource": "core",
            },
        )
    )
    client.get_json("/x")
    assert telemetry.rate_remaining.labels("core")._value.get() == 1000
    assert telemetry.rate_limit.labels("core")._value.get() == 5000
    assert client.budget.slowdown(now=0) == pytest.approx(2.5)
    budget = RateBudget(reserve=0.05)
    budget.update(
        httpx.Headers(
            {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "4000",
                "x-ratelimit-reset": "9999999999",
            }
        )
    )
    assert budget.slowdown(now=0) == 1.0
    budget.update(
        httpx.Headers(
            {
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "100",
                "x-ratelimit-reset": "9999999999",
            }
        )
    )
    assert budget.slowdown(now=0) == float("inf")


def test_401_retries_once_after_invalidating_auth() -> None:
    statuses = iter([401, 200])
    client, _, _ = client_for(
        lambda r: httpx.Response(next(statuses), content=json.dumps({}).encode())
    )
    assert client.get_json("/x") == {}
