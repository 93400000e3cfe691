"""`python -m simulator demo|simulate`: the exporter against the built-in simulators, or the GitHub
simulator alone. Development tools: the simulator is not part of the exporter's wheel or image."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from exporter.cli import (
    EXIT_OK,
    EXIT_USAGE,
    exit_now,
    install_sigterm,
    log_options,
    wait_for_stop,
)
from exporter.config import DEFAULT_LISTEN, ConfigError, parse_listen
from exporter.logging import configure_logging


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
        help="seed, optimized, regression or journey (default: %(default)s)",
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
    simulate.add_argument("--speed", type=float, default=0.0)
    simulate.add_argument("--repository", action="append", help="owner/name (repeatable)")
    simulate.add_argument(
        "--repositories", type=int, default=0, help="N generated repositories acme/repo-0…N-1"
    )
    simulate.add_argument("--token", default="sim-token")
    simulate.add_argument("--app", help="APP_ID:INSTALLATION_ID:PUBLIC_KEY_FILE for App auth")
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from simulator.demo import Demo

    try:
        host, port = parse_listen(args.listen)
    except ValueError as exc:
        raise ConfigError(f"--listen: {exc}") from None
    stop = threading.Event()
    install_sigterm(stop)
    state = args.state or str(Path(tempfile.mkdtemp(prefix="cipe-demo-")) / "state.db")
    demo = Demo(scenario=args.scenario, seed=args.seed, speed=args.speed, state_path=state)
    demo.start(f"{host}:{port}")
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(
        f"ci-pipeline-exporter demo: http://{shown}:{demo.port}/metrics "
        f"(scenario {args.scenario}; GitHub simulator at {demo.github_url})",
        flush=True,
    )
    wait_for_stop(stop)
    demo.stop()
    exit_now(EXIT_OK)
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulator.github import GitHubSimulator

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
        repositories=tuple(repositories),
        host=host,
        port=port,
    ).start()
    print(json.dumps({"url": sim.url}), flush=True)
    stop = threading.Event()
    install_sigterm(stop)
    wait_for_stop(stop)
    sim.stop()
    return EXIT_OK


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
