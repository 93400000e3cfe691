"""`python -m simulator demo|simulate`: the exporter against the built-in simulators, or the GitHub
simulator alone. Development tools: the simulator is not part of the exporter's wheel or image."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.cli import (
    EXIT_OK,
    EXIT_USAGE,
    exit_now,
    install_sigterm,
    log_options,
    wait_for_stop,
)
from exporter.config import DEFAULT_LISTEN, ConfigError, parse_listen
from exporter.logging import configure_logging, get_logger

if TYPE_CHECKING:
    from simulator.github import GitHubSimulator
    from simulator.webhooks import WebhookSender

log = get_logger("simulator")


def build_parser() -> argparse.ArgumentParser:
    common = log_options()
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description=__doc__, parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", parents=[common], help="the exporter against the simulators")
    demo.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT (default: %(default)s)")
    demo.add_argument(
        "--scenario",
        default="seed",
        help="seed, optimized, regression, shortage, journey or flaky (default: %(default)s)",
    )
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    demo.add_argument(
        "--speed",
        type=float,
        default=300.0,
        help="simulated seconds per real second (default: %(default)s)",
    )
    demo.add_argument("--state", help="state file (default: a temporary directory)")
    simulate = sub.add_parser(
        "simulate", parents=[common], help="the GitHub Actions simulator alone"
    )
    simulate.add_argument(
        "--listen", default="127.0.0.1:0", help="HOST:PORT (default: %(default)s)"
    )
    simulate.add_argument("--scenario", default="seed")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="simulated seconds per real second; 0 (the default) stands still: nothing new "
        "happens and no webhook is sent (the tests advance time through /_sim/advance)",
    )
    simulate.add_argument("--repository", action="append", help="owner/name (repeatable)")
    simulate.add_argument(
        "--repositories", type=int, default=0, help="N generated repositories acme/repo-0…N-1"
    )
    simulate.add_argument(
        "--token", default="sim-token", help="the token it accepts (default: %(default)s)"
    )
    simulate.add_argument(
        "--rate-limit",
        type=int,
        default=5000,
        help="core requests per hour and token (default: %(default)s, a personal token's)",
    )
    simulate.add_argument("--app", help="APP_ID:INSTALLATION_ID:PUBLIC_KEY_FILE for App auth")
    simulate.add_argument(
        "--webhook-url", help="send signed workflow_job/workflow_run webhooks to this URL"
    )
    simulate.add_argument(
        "--webhook-secret-env",
        default="GITHUB_WEBHOOK_SECRET",
        help="environment variable holding the webhook secret (default: %(default)s)",
    )
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from simulator.demo import Demo

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise ConfigError(f"--listen: {exc}") from None
    stop = threading.Event()
    install_sigterm(stop)
    scratch = None if args.state else Path(tempfile.mkdtemp(prefix="cipe-demo-"))
    state = args.state if scratch is None else str(scratch / "state.db")
    try:
        demo = Demo(scenario=args.scenario, seed=args.seed, speed=args.speed, state_path=state)
        demo.start(f"{host}:{port}")
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    shown = _hostport(_reachable(host), demo.port)
    print(
        f"ci-pipeline-exporter demo: listening on {_hostport(host, demo.port)}; open "
        f"http://{shown}/report (the pipeline review), http://{shown}/metrics "
        f"(scenario {args.scenario}; GitHub simulator at {demo.github_url}, "
        f"sending webhooks to {demo.webhook_url})",
        flush=True,
    )
    wait_for_stop(stop)
    demo.stop()
    if scratch is not None:  # a state of its own (no --state): not kept
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("stopped")
    exit_now(EXIT_OK)
    return EXIT_OK


def _reachable(host: str) -> str:
    """A wildcard address is not one to open: its loopback is."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.github import GitHubSimulator
    from simulator.registry import RegistrySimulator

    host, port = parse_listen(args.listen)
    app = None
    if args.app:
        app_id, installation, key_file = args.app.split(":", 2)
        app = (int(app_id), int(installation), Path(key_file).read_text(encoding="utf-8"))
    repositories = (
        args.repository or [f"acme/repo-{i}" for i in range(args.repositories)] or ["acme/webapp"]
    )
    sim = GitHubSimulator(
        args.scenario,
        seed=args.seed,
        speed=args.speed,
        token=args.token,
        app=app,
        rate_limit=args.rate_limit,
        repositories=tuple(repositories),
        host=host,
        port=port,
    ).start()
    sender = _webhook_sender(args, sim)
    # An OCI registry beside it (the demo's images), for trying `registries:` too.
    registry = RegistrySimulator("before", host=host).start()
    print(json.dumps({"url": sim.url, "registry_url": registry.url}), flush=True)
    stop = threading.Event()
    install_sigterm(stop)
    wait_for_stop(stop)
    if sender is not None:
        sender.stop()
    registry.stop()
    sim.stop()
    return EXIT_OK


def _webhook_sender(args: argparse.Namespace, sim: GitHubSimulator) -> WebhookSender | None:
    from simulator.webhooks import WebhookSender

    if not args.webhook_url:
        return None
    if not args.speed:
        log.warning("--webhook-url with --speed 0: simulated time stands still, nothing is sent")
    secret = os.environ.get(args.webhook_secret_env, "")
    if not secret:
        raise ConfigError(
            f"--webhook-secret-env: environment variable {args.webhook_secret_env} is not set"
        )
    return WebhookSender(sim, args.webhook_url, secret).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        return cmd_demo(args) if args.command == "demo" else cmd_simulate(args)
    except ConfigError as exc:
        print(f"python -m simulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"python -m simulator: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
