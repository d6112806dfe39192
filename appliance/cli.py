"""The ``appliance`` command."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from appliance import __version__
from appliance.config import ApplianceConfig, ModelConfig, load_from_environment
from appliance.errors import ConfigError
from appliance.serving import CHECKS

_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable

# Flags that override the environment (and so the YAML); named as Settings' fields.
_FLAGS = ("config", "host", "port", "processes", "log_level", "log_format")
# What each process of a multi-process server calls to build its app.
FACTORY = "appliance.http.app:app_from_environment"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``appliance`` and ``python -m appliance``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "worker":
        return _worker(args)
    if args.command == "usage":
        from appliance.accounting import usage_cli

        return usage_cli.run(args)
    flags = {flag: getattr(args, flag, None) for flag in _FLAGS}
    if args.command == "health":
        return _health(flags, args.timeout)
    try:
        settings, config = load_from_environment(CHECKS, **flags)
    except ConfigError as exc:
        print(f"appliance: invalid configuration {exc.source}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    if config.state.usage_path is not None:
        from appliance.accounting.ledger import path_problem

        unusable = path_problem(config.state.usage_path)
        if unusable is not None:
            print(f"appliance: invalid configuration {settings.config}", file=sys.stderr)
            print(f"  - state.usage_path: {unusable}", file=sys.stderr)
            return 2
    folder = config.capture.folder(config.state.usage_path) if config.capture.enabled else None
    if folder is not None:
        from appliance.accounting.requestfiles import folder_problem

        unusable = folder_problem(folder)
        if unusable is not None:
            print(f"appliance: invalid configuration {settings.config}", file=sys.stderr)
            print(f"  - capture.path: {unusable}", file=sys.stderr)
            return 2
    if args.command == "check":
        print(describe(settings.config, config))
        return 0
    from appliance.runtime.address import AddressError
    from appliance.runtime.logging import configure_logging
    from appliance.runtime.pidfile import PidFileError
    from appliance.runtime.server import default_pid_file, serve

    pid_file = args.pid_file or default_pid_file(config.server.port)
    if args.command == "reload":
        return _signal_reload(pid_file)

    # Granian's worker processes build the app from the environment: hand them the same
    # file and overrides this process validated.
    os.environ.update(settings.export())
    created = None
    if config.server.processes > 1:
        created = _prepare_metrics_folder(config.server.port)
    configure_logging(config.logging, config.secrets())

    def build() -> object:  # the app, when serving from this process
        from appliance.http.app import app_from_settings

        return app_from_settings(settings, config)

    try:
        return serve(config, build, FACTORY, pid_file)
    except (AddressError, PidFileError) as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    finally:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


def _health(flags: dict[str, object], timeout_s: float) -> int:
    """Probe the running server's ``/readyz`` (HTTPS when the config has ``server.tls``).

    The config is read without the checks of its files: a server running while its TLS
    files are being replaced is still probed.
    """
    from appliance.runtime.probe import readiness

    try:
        _, config = load_from_environment((), **flags)
    except ConfigError as exc:
        print(f"appliance: invalid configuration {exc.source}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    ready, said = readiness(config, timeout_s)
    print(said, file=sys.stdout if ready else sys.stderr)
    return 0 if ready else 1


def _worker(args: argparse.Namespace) -> int:
    """Serve one model: from --spec (the supervisor's way) or from a config's model."""
    from pydantic import TypeAdapter, ValidationError

    from appliance.child.server import run
    from appliance.config import LoggingConfig
    from appliance.runtime.logging import configure_logging, route_stdlib

    try:
        if args.spec:
            model = TypeAdapter(ModelConfig).validate_json(args.spec)
            logging_config = LoggingConfig(
                format=args.log_format or "json", level=args.log_level or "info"
            )
        else:
            _, config = load_from_environment(config=args.config)
            model_or_why = _local_model(config, args.model)
            if isinstance(model_or_why, str):
                print(f"appliance: {model_or_why}", file=sys.stderr)
                return 2
            model = model_or_why
            flags = {"format": args.log_format, "level": args.log_level}
            chosen = {k: v for k, v in flags.items() if v is not None}
            logging_config = config.logging.model_copy(update=chosen)
    except ValidationError as exc:
        print(f"appliance: invalid --spec: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"appliance: invalid configuration {exc.source}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    configure_logging(logging_config, [])
    route_stdlib(logging_config)  # aiohttp's own records, as JSON lines too
    run(model, args.host, args.port, args.port_file, args.exit_with_parent)
    return 0


def _local_model(config: ApplianceConfig, name: str | None) -> ModelConfig | str:
    """The local model ``name`` of ``config``, or a one-line reason it cannot be served."""
    from appliance.config.backends import LlamaCppModel, OnnxModel

    local = [m.name for m in config.models if isinstance(m, LlamaCppModel | OnnxModel)]
    choices = f"local models: {', '.join(local)}" if local else "the config has no local model"
    if name is None:
        return f"worker needs --model <name> with -c; {choices}"
    found = [m for m in config.models if m.name == name]
    if not found:
        return f"no model {name!r} in the config; {choices}"
    if not isinstance(found[0], LlamaCppModel | OnnxModel):
        return (
            f"model {name!r} is a {found[0].backend} model, served by the appliance itself; "
            f"worker serves local models (llama_cpp, onnx); {choices}"
        )
    return found[0]


def _prepare_metrics_folder(port: int) -> str | None:
    """Give every Granian process one folder for its metrics; a scrape sums them all.

    Only with several processes: the shared files cost a few microseconds per update that
    one process does not need. prometheus-client picks its multiprocess mode when it is
    first imported, so this runs before anything imports it (here or in a forked worker).
    Returns the folder if this made it (and removes it at exit), else None.
    """
    given = os.environ.get(_METRICS_ENV)
    folder = given or tempfile.mkdtemp(prefix=f"appliance-metrics-{port}-")
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))
    os.environ[_METRICS_ENV] = folder
    return None if given else folder


def _signal_reload(pid_file: Path) -> int:
    """Ask a running server to reload; the config was validated first.

    Only a PID whose file a running server holds is signalled: a file left by a server
    that is gone may name a PID the system has since given to another program.
    """
    from appliance.runtime.pidfile import PidFileError, running_pid

    try:
        pid = running_pid(pid_file)
        os.kill(pid, signal.SIGHUP)
    except PidFileError as exc:
        print(f"appliance: cannot signal the server: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"appliance: cannot signal the server via {pid_file}: {exc}", file=sys.stderr)
        return 1
    print(f"configuration is valid; reload signalled to PID {pid}")
    return 0


def describe(path: Path, config: ApplianceConfig) -> str:
    """A readable summary of what a config serves (names only, never secrets)."""
    server = config.server
    lines = [
        f"config: {path}",
        f"listen: {_listen(config)}  processes: {server.processes}",
        "",
        f"{'MODEL':<28} {'TYPE':<10} {'BACKEND':<10} {'WORKERS':>7} {'CONCURRENCY':>11}",
    ]
    for m in config.models:
        cap = "no cap" if m.max_concurrency is None else str(m.max_concurrency)
        lines.append(f"{m.name:<28} {m.type:<10} {m.backend:<10} {m.workers:>7} {cap:>11}")
    lines += _local_workers(config)
    if config.routes:
        lines += ["", f"{'ALIAS':<28} TARGETS"]
        lines += [f"{r.alias:<28} {' -> '.join(r.targets)}" for r in config.routes]
    keys = config.auth.api_keys
    lines += ["", f"api keys: {', '.join(k.name for k in keys) if keys else 'none (open)'}"]
    if config.state.usage_path is not None:
        lines.append(f"usage ledger: {config.state.usage_path}")
    return "\n".join(lines)


def _listen(config: ApplianceConfig) -> str:
    server, tls = config.server, config.server.tls
    if tls is None:
        return f"http://{server.host}:{server.port}"
    clients = " (client certificates required)" if tls.ca_file else ""
    return f"https://{server.host}:{server.port}{clients}"


def _local_workers(config: ApplianceConfig) -> list[str]:
    """What local models cost: their worker processes, per Granian process, and threads."""
    from appliance.config.backends import LlamaCppModel, OnnxModel
    from appliance.local.threads import available_cpus, thread_share

    local = [m for m in config.models if isinstance(m, LlamaCppModel | OnnxModel)]
    if not local:
        return []
    processes = config.server.processes
    per_process = sum(m.workers for m in local)
    share = thread_share(config)
    threads = ", ".join(
        f"{m.name} {m.options.n_threads or share}" + ("" if m.options.n_threads else " (default)")
        for m in local
    )
    lines = ["", f"local model workers: {per_process} per process; n_threads: {threads}"]
    if processes > 1:
        lines.append(
            f"note: processes: {processes}: every process starts its own local model "
            f"workers ({processes} x {per_process} = {processes * per_process} model "
            f"processes, each loading its model); cores: {available_cpus()}"
        )
    return lines


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
    health = commands.add_parser(
        "health", help="exit 0 if the running server answers /readyz with 200 (HTTP or HTTPS)"
    )
    for sub in (serve, check, reload, health):
        sub.add_argument(
            "-c", "--config", type=Path, help="cluster YAML (default: configs/cluster.yaml)"
        )
    for sub in (reload, health):
        sub.add_argument(
            "--port", type=int, help="the port the server was given, if not the file's"
        )
    health.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default 2)")
    worker = commands.add_parser(
        "worker", help="serve one model over the OpenAI protocol (local or remote worker)"
    )
    worker.add_argument("-c", "--config", type=Path, help="cluster YAML holding the model")
    worker.add_argument("--model", help="name of the model in the config to serve")
    worker.add_argument("--spec", help="the model declaration as JSON (used by the supervisor)")
    worker.add_argument("--host", default="127.0.0.1", help="address to bind")
    worker.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    worker.add_argument("--port-file", type=Path, help="write the bound port here when ready")
    worker.add_argument("--log-format", choices=["json", "console"])
    worker.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    worker.add_argument(
        "--exit-with-parent", action="store_true", help="exit when the parent process dies"
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
    from appliance.accounting import usage_cli

    usage_cli.add_parser(commands)
    return parser
