"""Proxies from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), as a deployment
behind an egress proxy sets them: the exporter's own transport honours them."""

from __future__ import annotations

from pathlib import Path

from simulator.github import GitHubSimulator
from tests.helpers import Exposition, assert_matches_truth, run_cli, write_config
from tests.proxy import forwarding_proxy

LOGS = {"logs": {"jobs": ["build*"]}}


def test_requests_go_through_the_proxy_unless_no_proxy_names_the_host(
    sim: GitHubSimulator, tmp_path: Path, env: dict[str, str]
) -> None:
    """With HTTP_PROXY set, every API request and every log download goes through the proxy and
    the metrics equal truth; with NO_PROXY naming the host, none does. A proxy the exporter can't
    use is a config error naming the variable, without repeating its URL."""
    config = write_config(tmp_path / "c.yaml", sim.url, state=tmp_path / "s.db", repo_extra=LOGS)
    with forwarding_proxy() as proxy:
        result = run_cli("once", "--config", str(config), env={**env, "HTTP_PROXY": proxy.url})
        assert result.returncode == 0, result.stderr[-2000:]
        assert_matches_truth(Exposition.parse(result.stdout), sim.truth())
        api = [url for url in proxy.seen if url.startswith(sim.url)]
        assert len(api) == len(sim.requests)
        assert any("/actions/runs" in url for url in api)
        assert len(proxy.seen) == len(api) + len(sim.blobs.requests) > len(api)
        seen = len(proxy.seen)
        bypass = {**env, "HTTP_PROXY": proxy.url, "NO_PROXY": "example.com, 127.0.0.1"}
        assert run_cli("once", "--config", str(config), env=bypass).returncode == 0
        assert len(proxy.seen) == seen
    secret = "socks5://user:hunter2@127.0.0.1:1080"
    refused = run_cli("once", "--config", str(config), env={**env, "ALL_PROXY": secret})
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "ci-pipeline-exporter: config error: ALL_PROXY: only http:// and https:// proxies are "
        "supported"
    )
