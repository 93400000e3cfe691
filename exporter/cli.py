"""Commands and exit codes: 0 success, 1 a source failed, 2 usage or configuration errors."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from exporter import __version__
from exporter.config import (
    DEFAULT_LISTEN,
    ConfigError,
    effective_config,
    load_config,
    parse_listen,
    secrets,
)
from exporter.logging import configure_logging, get_logger
from exporter.sources.errors import SourceError
from exporter.store import StateError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Config errors printed, one line each; the rest are counted on one more line.
MAX_ERROR_LINES = 20
log = get_logger("exporter.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _env_default(name: str, default: str | None) -> str | None:
    return os.environ.get(f"CIPE_CLI_{name}", default)


def log_options() -> _Parser:
    """--log-format and --log-level, shared by every command (and the simulator's)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=_env_default("LOG_FORMAT", None),
        help="log line format (env CIPE_CLI_LOG_FORMAT; default: console on a terminal, else json)",
    )
    common.add_argument(
        "--log-level",
        default=_env_default("LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error"),
        help="minimum level (env CIPE_CLI_LOG_LEVEL; default: %(default)s)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = log_options()
    parser = _Parser(prog="ci-pipeline-exporter", description=__doc__, parents=[common])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", parents=[common], help="the long-running exporter")
    serve.add_argument("--config", required=True, help="YAML configuration file")
    serve.add_argument(
        "--listen", help=f"HOST:PORT (default: the config's listen, {DEFAULT_LISTEN})"
    )

    once = sub.add_parser(
        "once", parents=[common], help="poll every source once and print the metrics"
    )
    once.add_argument("--config", required=True, help="YAML configuration file")

    check = sub.add_parser(
        "check-config", parents=[common], help="validate and print the effective config"
    )
    # --config as in the other commands, or positional as it always was.
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("file", nargs="?", help="YAML configuration file")
    where.add_argument("--config", help="YAML configuration file (the same)")

    backfill = sub.add_parser(
        "backfill", parents=[common], help="history as OpenMetrics with timestamps"
    )
    backfill.add_argument("--config", required=True, help="YAML configuration file")
    backfill.add_argument("--since", default="30d", help="how far back (default: %(default)s)")
    backfill.add_argument(
        "--output", required=True, help="OpenMetrics file (a .checkpoint file beside it resumes)"
    )

    add_report_parser(sub, common)

    analyze = sub.add_parser("analyze", parents=[common], help="analyse local files")
    kinds = analyze.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    buildkit = kinds.add_parser(
        "buildkit",
        parents=[common],
        help="BuildKit plain progress or a GitHub job log → build summary",
    )
    buildkit.add_argument("file", metavar="FILE|-")
    buildkit.add_argument("--json", action="store_true", help="JSON instead of text")
    image = kinds.add_parser(
        "image", parents=[common], help="image reference → per-platform size, layers, digest"
    )
    image.add_argument(
        "ref",
        metavar="REF",
        help="[http://]HOST[:PORT]/NAME:TAG or …@DIGEST (http for loopback only)",
    )
    image.add_argument("--json", action="store_true", help="JSON instead of a table")
    image.add_argument("--username-env", help="environment variable holding the registry user name")
    image.add_argument(
        "--password-env", help="environment variable holding the registry password/token"
    )
    junit = kinds.add_parser(
        "junit", parents=[common], help="JUnit XML (or artifact zips) → per-suite time and counts"
    )
    junit.add_argument("files", nargs="+", metavar="FILE")
    junit.add_argument("--json", action="store_true", help="JSON instead of a table")
    junit.add_argument(
        "--suite-depth",
        type=int,
        default=1,
        help="dotted components of classname that name the suite (default: %(default)s)",
    )
    flaky = kinds.add_parser(
        "flaky",
        parents=[common],
        help="the flaky test cases in the state store (state.path; read-only)",
    )
    flaky.add_argument("--config", required=True, help="YAML configuration file")
    flaky.add_argument("--json", action="store_true", help="JSON instead of a table")

    return parser


def add_report_parser(sub: Any, common: _Parser) -> None:
    report = sub.add_parser(
        "report", parents=[common], help="the pipeline review: HTML, markdown or JSON"
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="YAML configuration file: read its state store")
    source.add_argument("--prometheus", metavar="URL", help="Prometheus base URL (PromQL API)")
    report.add_argument(
        "--since", default="7d", help="with --prometheus: how far back (default: %(default)s)"
    )
    report.add_argument("--format", choices=("html", "markdown", "json"), default="html")
    report.add_argument("--output", default="-", help="file to write (default: stdout)")


def install_sigterm(stop: threading.Event) -> None:
    def handler(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def wait_for_stop(stop: threading.Event) -> None:
    """Until SIGTERM or SIGINT, in short waits: the kernel may hand the signal to any thread, and
    Python runs its handler on the main thread only when that thread runs again (a plain
    `stop.wait()` could sleep through it for ever)."""
    while not stop.wait(0.5):
        pass


def cmd_check_config(args: argparse.Namespace) -> int:
    """The effective config on stdout, loadable as a config again: where each secret comes from
    is a block of YAML comments. Exit 0 with a missing secret (CI may validate without it), but
    a warning per missing secret on stderr: serve would refuse to start."""
    config = load_config(args.config or args.file)
    found = secrets(config)
    print(yaml.safe_dump(effective_config(config), sort_keys=False), end="")
    if found:
        block = yaml.safe_dump({"secrets": {s.name: s.origin for s in found}}, sort_keys=False)
        print("# Where each secret comes from (never its value):")
        print("".join(f"# {line}\n" for line in block.splitlines()), end="")
    for secret in found:
        if not secret.present:
            print(
                f"ci-pipeline-exporter: warning: {secret.problem}: serve would refuse to start",
                file=sys.stderr,
            )
    return EXIT_OK


def cmd_once(args: argparse.Namespace) -> int:
    from exporter.app import App

    config = load_config(args.config)
    app = App(config)
    try:
        ok = app.poll_once()
        sys.stdout.write(app.exposition.render().decode())
    finally:
        app.close()
    return EXIT_OK if ok else EXIT_FAILED


def exit_now(code: int) -> None:
    """After an orderly stop (store closed) that a poll outlived, leave without joining worker
    threads: a poll still waiting on the network must not hold the process past its grace period."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve_until_stopped(app: Any, listen: str | None, stop: threading.Event) -> int:
    app.start(listen)
    wait_for_stop(stop)
    log.info("stopping")
    if not app.stop():
        log.warning("a poll outlived the grace period; leaving without it")
        exit_now(EXIT_OK)
    log.info("stopped")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from exporter.app import App

    config = load_config(args.config)
    if args.listen:
        try:
            parse_listen(args.listen)
        except ValueError as exc:
            raise ConfigError(f"--listen: {exc}") from None
    stop = threading.Event()
    install_sigterm(stop)
    app = App(config)
    return serve_until_stopped(app, args.listen, stop)


def _check_writable(path: Path, option: str) -> None:
    """Before any API request is spent: the file (and its .checkpoint beside it) can be written."""
    existed = path.exists()
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        with path.open("ab"):
            pass
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write {path}: {exc.strerror}") from None
    if not existed:
        path.unlink()


def cmd_backfill(args: argparse.Namespace) -> int:
    from exporter.backfill import backfill
    from exporter.timeutil import parse_duration

    config = load_config(args.config)
    try:
        since = parse_duration(args.since)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    output = Path(args.output)
    _check_writable(output, "--output")
    try:
        count = backfill(config, since, output)
    except SourceError as exc:
        print(
            f"ci-pipeline-exporter: backfill stopped: {exc.reason}: {exc}; what was fetched is in "
            f"{output}.checkpoint, run it again to resume",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(
        f"wrote {count} run attempts to {args.output}; load them with: "
        f"promtool tsdb create-blocks-from openmetrics {args.output} DATA_DIR"
    )
    return EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    from exporter import cli_analyze as analyze

    if args.kind == "image":
        user = os.environ.get(args.username_env) if args.username_env else None
        password = os.environ.get(args.password_env) if args.password_env else None
        return analyze.run_image(args.ref, args.json, user, password)
    if args.kind == "buildkit":
        return analyze.run_buildkit(args.file, args.json)
    if args.kind == "junit":
        if args.suite_depth < 1:
            raise ConfigError("--suite-depth: must be 1 or more")
        return analyze.run_junit(args.files, args.json, args.suite_depth)
    if args.kind == "flaky":
        from exporter.cli_flaky import run_flaky

        return run_flaky(args.config, args.json)
    raise ConfigError(f"analyze {args.kind}: unknown")


def cmd_report(args: argparse.Namespace) -> int:
    from exporter.report.command import run

    return run(args.config, args.prometheus, args.since, args.format, args.output)


COMMANDS = {
    "report": cmd_report,
    "analyze": cmd_analyze,
    "backfill": cmd_backfill,
    "serve": cmd_serve,
    "once": cmd_once,
    "check-config": cmd_check_config,
}


def print_config_error(exc: ConfigError) -> None:
    """Every problem on its own line (the first one is the one-line message of old)."""
    lines = list(exc.lines[:MAX_ERROR_LINES])
    if len(exc.lines) > MAX_ERROR_LINES:
        lines.append(f"… and {len(exc.lines) - MAX_ERROR_LINES} more")
    for line in lines:
        print(f"ci-pipeline-exporter: config error: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_format, args.log_level)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_USAGE
    except StateError as exc:
        print(f"ci-pipeline-exporter: state error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # Typically the listen address is taken; an operator's error, not a crash.
        print(f"ci-pipeline-exporter: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
