"""The ``appliance`` command."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from appliance import __version__
from appliance.config import ApplianceConfig, load_from_environment
from appliance.errors import ConfigError

# Flags that override the environment (and so the YAML); named as Settings' fields.
_FLAGS = ("config", "host", "port", "processes", "log_level", "log_format")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``appliance`` and ``python -m appliance``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    flags = {flag: getattr(args, flag, None) for flag in _FLAGS}
    try:
        settings, config = load_from_environment(**flags)
    except ConfigError as exc:
        print(f"appliance: invalid configuration {exc.source}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    if args.command == "check":
        print(describe(settings.config, config))
        return 0
    from appliance.logging import configure_logging
    from appliance.server import default_pid_file, serve

    pid_file = args.pid_file or default_pid_file(config.server.port)
    if args.command == "reload":
        return _signal_reload(pid_file)

    # Granian's worker processes build the app from the environment: hand them the same
    # file and overrides this process validated.
    os.environ.update(settings.export())
    configure_logging(config.logging, config.secrets())
    serve(config, pid_file)
    return 0


def _signal_reload(pid_file: Path) -> int:
    """Ask a running server to reload; the config was validated first."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"appliance: cannot signal the server via {pid_file}: {exc}", file=sys.stderr)
        return 1
    print(f"configuration is valid; reload signalled to PID {pid}")
    return 0


def describe(path: Path, config: ApplianceConfig) -> str:
    """A readable summary of what a config serves (names only, never secrets)."""
    server = config.server
    lines = [
        f"config: {path}",
        f"listen: http://{server.host}:{server.port}  processes: {server.processes}",
        "",
        f"{'MODEL':<28} {'TYPE':<10} {'BACKEND':<10} {'WORKERS':>7} {'CONCURRENCY':>11}",
    ]
    for m in config.models:
        lines.append(
            f"{m.name:<28} {m.type:<10} {m.backend:<10} {m.workers:>7} {m.max_concurrency:>11}"
        )
    if config.routes:
        lines += ["", f"{'ALIAS':<28} TARGETS"]
        lines += [f"{r.alias:<28} {' -> '.join(r.targets)}" for r in config.routes]
    keys = config.auth.api_keys
    lines += ["", f"api keys: {', '.join(k.name for k in keys) if keys else 'none (open)'}"]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance", description="An OpenAI-compatible model cluster from one YAML file."
    )
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="serve the API")
    check = commands.add_parser("check", help="validate a config and show what it serves")
    reload = commands.add_parser(
        "reload", help="validate the config, then tell the running server to reload it"
    )
    for sub in (serve, check, reload):
        sub.add_argument(
            "-c", "--config", type=Path, help="cluster YAML (default: configs/cluster.yaml)"
        )
    for sub in (serve, reload):
        sub.add_argument(
            "--pid-file", type=Path, help="main PID file (default: <tmp>/appliance-<port>.pid)"
        )
    serve.add_argument("--host", help="address to bind")
    serve.add_argument("--port", type=int, help="port to bind")
    serve.add_argument("--processes", type=int, help="Granian worker processes")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["json", "console"])
    return parser
