"""The `flashcall` command."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.core.errors import ConfigurationError, FlashcallError, UsageError

if TYPE_CHECKING:
    # Imported where used: `flashcall --help` and the worker start without the receiver's imports.
    from worker.callbacks.app import ReceiverLimits

__all__ = ["main"]

#: Provider calls take 0.2 to 2 s and run as coroutines, but Dramatiq caps the calls in
#: flight per process at its thread count (each thread waits for its coroutine). 512 per
#: process keep 1,000 calls in flight on a 2-core host: 400 verifications/s even with
#: providers answering in 2 s (docs/benchmarks.md). Waiting threads cost no CPU.
DEFAULT_THREADS = 512

#: Seconds an operator's command waits for Redis to connect or answer: a Redis that hangs
#: (a network partition, a frozen primary) is a one-line failure, not a command that hangs.
REDIS_TIMEOUT_S = 10.0


def _worker(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from worker.process.middleware import roles
    from worker.process.settings import Settings
    from worker.routing.reload import RoutingHolder

    if not 0 <= args.check_processes <= 64 or not 0 <= args.nice <= 19:
        raise UsageError("--check-processes must be from 0 to 64, --nice from 0 to 19")
    if args.check_processes and "--queues" in extra:
        raise UsageError("--queues picks the queues itself: add --check-processes 0 to it")
    if args.metrics_port is not None:
        metrics_port = _port(args.metrics_port, "--metrics-port")
    else:
        metrics_port = _port(os.environ.get("FLASHCALL_METRICS_PORT") or "9191", "FLASHCALL_METRICS_PORT")
    _configure_logging()
    # What every process builds at boot, by the same code, checked once before any starts
    # (without connecting anywhere): one line and status 2 instead of each process ending
    # on it at boot, its reason somewhere in the logs of all (worker/process/middleware/boot.py).
    settings = Settings.from_env()
    RoutingHolder.check(settings.routing_path, os.environ)
    _prepare_metrics(args.metrics_dir, metrics_port)
    # Checks get processes of their own, which the others yield the CPU to
    # (worker/process/middleware/roles.py); every process inherits this environment.
    roles_dir = args.metrics_dir / "roles"
    roles_dir.mkdir()
    os.environ[roles.CHECK_PROCESSES] = str(args.check_processes)
    os.environ[roles.WORKER_NICE] = str(args.nice)
    os.environ[roles.ROLES_DIR] = str(roles_dir)
    argv = [
        "worker.actors",
        "--skip-logging",
        "--processes", str(args.processes + args.check_processes),
        "--threads", str(args.threads),
        "--worker-shutdown-timeout", str(args.shutdown_timeout * 1000),
        *extra,
    ]  # fmt: skip
    code: int = dramatiq_main(make_argument_parser().parse_args(argv))  # type: ignore[no-untyped-call]
    return code


def _configure_logging() -> None:
    from worker.logs.structured import configure_from_env

    try:
        configure_from_env()
    except ValueError as error:
        # The one setting it refuses (with a traceback) is the level: stdlib logging's.
        raise ConfigurationError(
            f"FLASHCALL_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL ({error})"
        ) from None


def _port(value: int | str, setting: str) -> int:
    raw = str(value)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigurationError(f"{setting} must be a port from 1 to 65535, not {raw!r}")
    return int(raw)


def _prepare_metrics(directory: Path, port: int) -> None:
    """Multiprocess Prometheus files in `directory`, served on `port` by Dramatiq's exposition
    server, both claimed for this worker first (worker/process/metrics_dir.py: a second worker
    on them refuses instead of emptying the first one's files). Set before any process
    starts: prometheus-client reads it on import."""
    from worker.process.metrics_dir import claim_metrics

    claim_metrics(directory, port)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # Dramatiq's own (lower-case) names for these two.
    os.environ["dramatiq_prom_db"] = str(directory)  # noqa: SIM112
    os.environ["dramatiq_prom_port"] = str(port)  # noqa: SIM112


#: The development tools' package: beside worker/ in the repository, not in the production
#: wheel nor the image, whose `flashcall sandbox` and `flashcall demo` say so.
_DEV_PACKAGE = "flashcall_dev"


def _require_dev_tools(command: str) -> None:
    if importlib.util.find_spec(_DEV_PACKAGE) is None:
        raise UsageError(
            f"`flashcall {command}` is a development tool ({_DEV_PACKAGE}, in the repository) and "
            "this installation has none: run it from the repository's venv (make install)"
        )


def _sandbox(args: argparse.Namespace, _: Sequence[str]) -> int:
    _require_dev_tools("sandbox")
    from flashcall_dev.sandbox import serve

    ports: dict[str, int] = {}
    for item in args.provider_port:
        name, _, port = item.partition("=")
        if not port.isdigit():
            raise UsageError(f"--provider-port takes NAME=PORT, not {item!r}")
        ports[name] = int(port)
    serve(args.host, args.port, provider_ports=ports, latency_ms=args.latency_ms)
    return 0


#: The receiver's limits (worker/callbacks/app.py, ReceiverLimits), each an option of its own,
#: and its default there, for --help without importing the receiver (a test holds them equal).
_RECEIVER_LIMITS = {
    "header-timeout": ("seconds for a request's headers to arrive", 5),
    "body-timeout": ("seconds for a request's body to arrive after its headers", 5),
    "idle-timeout": ("seconds an idle kept-alive connection is kept open", 5),
    "max-connections": ("open connections at which requests are answered 503", 1000),
}


def _callbacks(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.callbacks.app import serve

    port = _port(args.port, "--port")
    _configure_logging()
    limits = _receiver_limits(args)
    serve(args.host, port, redis_url=args.redis_url, limits=limits)
    return 0


def _receiver_limits(args: argparse.Namespace) -> ReceiverLimits:
    """The ReceiverLimits the options ask for, the rest at their defaults."""
    from worker.callbacks.app import ReceiverLimits

    names = [option.replace("-", "_") for option in _RECEIVER_LIMITS]
    return ReceiverLimits(**{name: getattr(args, name) for name in names if getattr(args, name) is not None})


def _api(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.api.app import serve
    from worker.api.keys import ApiKeys
    from worker.redis.connections import RedisTarget

    port = _port(args.port, "--port")
    metrics_port = _port(args.metrics_port, "--metrics-port")
    if not 0 < args.check_timeout <= 60:
        raise UsageError(
            f"--check-timeout must be more than 0 and at most 60 seconds, not {args.check_timeout:g}"
        )
    limits = _receiver_limits(args)
    RedisTarget.parse(args.redis_url, setting="--redis-url")
    _configure_logging()
    keys = ApiKeys.from_env()
    serve(
        args.host,
        port,
        redis_url=args.redis_url,
        keys=keys,
        metrics_port=metrics_port,
        check_timeout=args.check_timeout,
        limits=limits,
    )
    return 0


def _api_key(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.api.keys import ApiKeys, hashed_entry, new_key

    key = new_key()
    ApiKeys.parse([("NAME", f"{args.name}:{key}", False)])
    print(f"key (give it to the client; it is shown only now): {key}")
    print(f"line of FLASHCALL_API_KEYS_FILE: {hashed_entry(args.name, key)}")
    return 0


def _redis_install(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.redis.connections import RedisTarget, sync_client
    from worker.redis.library import install, library_version

    target = RedisTarget.parse(args.redis_url, setting="--redis-url")
    install(sync_client(target, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S))
    print(f"installed the flashcall library, version {library_version()}, into {target.describe()}")
    return 0


def _routing_check(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.routing import load_routing

    config = load_routing(args.file)
    print(f"{args.file}: valid ({len(config.providers)} providers, {len(config.policies)} policies)")
    unset = config.unset_credentials(os.environ)
    if unset:
        print("note: not set in this environment: " + ", ".join(unset))
    return 0


def _routing_file(args: argparse.Namespace) -> Path:
    return Path(args.file or os.environ.get("FLASHCALL_ROUTING") or "routing.yaml")


def _redis(args: argparse.Namespace) -> Any:
    from worker.redis.connections import RedisTarget, sync_client

    target = RedisTarget.parse(args.redis_url, setting="--redis-url")
    return sync_client(
        target, decode_responses=True, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )


def _routing_schema(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.routing.config import json_schema

    sys.stdout.write(json_schema())
    return 0


def _routing_explain(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.core.phone import normalise
    from worker.core.verification import Channel
    from worker.routing import load_routing
    from worker.routing.report import explain, read_admission, read_state

    config = load_routing(_routing_file(args))
    if args.policy not in config.policies:
        raise UsageError(f"no policy {args.policy!r} in {_routing_file(args)}")
    try:
        phone = normalise(args.phone)
        channels = [Channel(name) for name in args.channels.split(",")] if args.channels else []
    except ValueError as error:
        raise UsageError(str(error)) from None
    client = _redis(args)
    # What flashcall_start refuses never reaches a worker: asked first, as the start does.
    refusal = read_admission(
        client, phone=phone, policy=args.policy, client_ip=args.client_ip, limit_key=args.limit_key
    )
    state = read_state(client, config, now_ms=int(time.time() * 1000))
    text = explain(
        config,
        state,
        phone=phone,
        policy=args.policy,
        channels=channels,
        code_length=args.code_length,
        refusal=refusal,
    )
    print(text)
    return 0


def _breakers(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.routing import load_routing
    from worker.routing.report import breaker_report, reset_breakers

    config = load_routing(_routing_file(args))
    client = _redis(args)
    names = sorted(config.providers) if args.reset_all else args.reset
    unknown = sorted(set(names) - set(config.providers))
    if unknown:
        raise UsageError(f"no provider {', '.join(unknown)} in {_routing_file(args)}")
    if names:
        reset_breakers(client, names)
        print(f"reset: {', '.join(names)}")
    print(breaker_report(client, config))
    return 0


def _fraud(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.redis import functions

    client = _redis(args)
    now_ms = int(time.time() * 1000)
    if args.fraud_command == "release":
        if functions.fraud_release(args.range, now_ms=now_ms).run(client) == "not_held":
            raise FlashcallError(f"range {args.range} is not held")
        print(f"released: {args.range}")
        return 0
    held = functions.fraud_list(now_ms=now_ms).run(client)
    if not held:
        print("no range is held")
    for entry in held:
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.until_ms / 1000))
        left = (entry.until_ms - now_ms) / 1000
        print(f"{entry.range}  held until {until} ({left:.0f}s), hold {entry.level}")
    return 0


def _providers_errors(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.routing.catalog import error_table

    print(error_table())
    return 0


def _health(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.process.health import health_dir, liveness, readiness

    directory = args.dir or health_dir()
    problem = liveness(directory, max_age=args.max_age)
    if problem is None and args.ready:
        problem = readiness(args.redis_url, _routing_file(args), directory=directory, max_age=args.max_age)
    if problem is not None:
        print(f"flashcall health: {problem}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace, _: Sequence[str]) -> int:
    _require_dev_tools("demo")
    from flashcall_dev.demo import run_demo
    from flashcall_dev.stack import REPO_ROUTING

    routing = os.environ.get("FLASHCALL_ROUTING")
    return run_demo(
        redis_url=os.environ.get("REDIS_URL") or None, routing_path=Path(routing) if routing else REPO_ROUTING
    )


class _Help(argparse.HelpFormatter):
    """Every option's help says its default: the option's own words where it gives them (a
    default from the environment names the variable rather than show its value, which may
    hold a password), otherwise the value."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.default is None or action.default == []:
            shown = "none"
        elif action.default is False:
            shown = "off"
        else:
            shown = "%(default)s"
        return f"{text} (default: {shown})".lstrip()


class _Parser(argparse.ArgumentParser):
    """The parser of `flashcall` and, through add_subparsers, of each of its commands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flashcall-router")
    except PackageNotFoundError:
        # A checkout run without `make install`: no metadata to read.
        return "unknown (not installed)"


def _add_redis_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="the Redis to use, or its sentinels (default $REDIS_URL or redis://127.0.0.1:6379/0)",
    )


def _add_receiver_limits(parser: argparse.ArgumentParser) -> None:
    for option, (meaning, default) in _RECEIVER_LIMITS.items():
        parser.add_argument(f"--{option}", type=int, help=f"{meaning} (default {default})")


#: Dramatiq's options `flashcall worker` passes on (dramatiq.cli's make_argument_parser):
#: which queues to take, its pid file, and its reloader for development. The others are
#: flashcall's to set (processes, threads, shutdown timeout, logging, the broker and the
#: modules: their own options above or none) or would undo what it prepares for its
#: processes (spawned instead of forked, forks of one's own): refused like any unknown option.
_DRAMATIQ_OPTIONS: dict[str, dict[str, Any]] = {
    "--queues": {"nargs": "+", "metavar": "QUEUE", "help": "take messages of these queues only "
                 "(with --check-processes 0, which picks the queues itself otherwise; default: every queue)"},
    "--pid-file": {"metavar": "PATH", "help": "write the main process's pid to this file (default: none)"},
    "--watch": {"metavar": "DIR", "type": "directory", "help": "restart the processes when a source file "
                "under DIR changes (for development; default: off)"},
    "--watch-use-polling": {"action": "store_true", "help": "--watch polls instead of being notified"},
    "--watch-include": {"action": "append", "metavar": "PATTERN", "help": "files --watch watches besides "
                        "*.py (default: none)"},
    "--watch-exclude": {"action": "append", "metavar": "PATTERN", "help": "files --watch ignores "
                        "(default: none)"},
}  # fmt: skip


def _add_dramatiq_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Dramatiq's options, passed on to it")
    for option, spec in _DRAMATIQ_OPTIONS.items():
        if spec.get("type") == "directory":
            spec = {**spec, "type": _directory}
        group.add_argument(option, dest=_dramatiq_dest(option), **spec)


def _directory(value: str) -> str:
    if not Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return value


def _dramatiq_dest(option: str) -> str:
    return "dramatiq_" + option.removeprefix("--").replace("-", "_")


def _dramatiq_argv(args: argparse.Namespace) -> list[str]:
    """The Dramatiq options given, as Dramatiq's command line takes them."""
    argv: list[str] = []
    for option, spec in _DRAMATIQ_OPTIONS.items():
        value = getattr(args, _dramatiq_dest(option))
        if value is None or value is False:
            continue
        if value is True:
            argv.append(option)
        elif spec.get("nargs") == "+":
            argv += [option, *value]
        elif isinstance(value, list):
            argv += [part for each in value for part in (option, each)]
        else:
            argv += [option, value]
    return argv


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flashcall", description=__doc__)
    parser.add_argument("--version", action="version", version=f"flashcall {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser(
        "worker", help="run worker processes (under Dramatiq, with a few of its options)", allow_abbrev=False
    )
    worker.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help=f"processes that make verification calls (default: one a CPU, {os.cpu_count() or 1})",
    )
    worker.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="threads a process")
    worker.add_argument("--shutdown-timeout", type=int, default=30, help="seconds to finish work in flight")
    worker.add_argument(
        "--check-processes",
        type=int,
        default=1,
        help="processes of their own for code checks (0: the verification processes answer them too)",
    )
    worker.add_argument(
        "--nice",
        type=int,
        default=5,
        help="how much lower the verification processes' CPU priority is than the check processes'",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus metrics of every process of this worker, on /metrics "
        "(default $FLASHCALL_METRICS_PORT or 9191)",
    )
    worker.add_argument(
        "--metrics-dir",
        type=Path,
        default=Path(os.environ.get("FLASHCALL_METRICS_DIR", "/tmp/flashcall-metrics")),  # noqa: S108
        help="where the processes keep their metrics (emptied at start; one worker per directory; "
        "default $FLASHCALL_METRICS_DIR or /tmp/flashcall-metrics)",
    )
    _add_dramatiq_options(worker)
    worker.set_defaults(handler=_worker, dramatiq=True)

    sandbox = commands.add_parser(
        "sandbox",
        help="serve imitations of the provider APIs (control API on --port, providers after it; "
        "a development tool)",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--port", type=int, default=8600, help="port of the control API")
    sandbox.add_argument(
        "--provider-port",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="serve a provider on this port",
    )
    sandbox.add_argument("--latency-ms", type=int, default=0, help="milliseconds each answer is delayed")
    sandbox.set_defaults(handler=_sandbox)

    callbacks = commands.add_parser("callbacks", help="receive provider status callbacks")
    callbacks.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)",
    )
    callbacks.add_argument("--port", type=int, default=8700, help="port to listen on")
    _add_receiver_limits(callbacks)
    _add_redis_url(callbacks)
    callbacks.set_defaults(handler=_callbacks)

    api = commands.add_parser("api", help="serve the producer contract over HTTP (docs/api.md)")
    api.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on, the metrics' too (default 127.0.0.1; 0.0.0.0: every interface)",
    )
    api.add_argument("--port", type=int, default=8800, help="port to listen on")
    api.add_argument("--metrics-port", type=int, default=9192, help="Prometheus metrics (default 9192)")
    api.add_argument(
        "--check-timeout",
        type=float,
        default=5.0,
        help="seconds a check waits for a worker's answer before 504 (default 5)",
    )
    _add_receiver_limits(api)
    _add_redis_url(api)
    api.set_defaults(handler=_api)
    api_key = commands.add_parser("api-key", help="make a new API key and its FLASHCALL_API_KEYS_FILE line")
    api_key.add_argument("name", help="the key's name: 1 to 64 letters, digits, _ and -")
    api_key.set_defaults(handler=_api_key)

    redis_cmd = commands.add_parser("redis", help="manage the flashcall Redis Functions library")
    redis_sub = redis_cmd.add_subparsers(dest="redis_command", required=True)
    install = redis_sub.add_parser("install", help="load (or replace) the flashcall library")
    _add_redis_url(install)
    install.set_defaults(handler=_redis_install)

    routing = commands.add_parser("routing", help="work with routing files")
    routing_sub = routing.add_subparsers(dest="routing_command", required=True)
    check = routing_sub.add_parser("check", help="validate a routing file")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_routing_check)
    schema = routing_sub.add_parser("schema", help="print routing.yaml's JSON Schema (for editors)")
    schema.set_defaults(handler=_routing_schema)
    explain = routing_sub.add_parser(
        "explain", help="which provider each step would pick for a number right now, and why"
    )
    explain.add_argument("phone")
    explain.add_argument("--policy", default="default", help="the routing file's policy to follow")
    explain.add_argument(
        "--channels",
        help="comma-separated, as a start request's channels (default: none, every step of the policy)",
    )
    explain.add_argument("--code-length", type=int, default=4, help="digits of the code")
    explain.add_argument(
        "--client-ip", help="the start's client_ip, for the limits by address (default: none, not asked)"
    )
    explain.add_argument(
        "--limit-key", help="the start's limit_key, for the limits by key (default: none, not asked)"
    )
    explain.add_argument(
        "--file", type=Path, help="routing file (default $FLASHCALL_ROUTING or routing.yaml)"
    )
    _add_redis_url(explain)
    explain.set_defaults(handler=_routing_explain)

    breakers = commands.add_parser("breakers", help="show (and reset) the providers' circuit breakers")
    breakers.add_argument(
        "--reset", action="append", default=[], metavar="PROVIDER", help="close this breaker"
    )
    breakers.add_argument("--reset-all", action="store_true", help="close every breaker")
    breakers.add_argument(
        "--file", type=Path, help="routing file (default $FLASHCALL_ROUTING or routing.yaml)"
    )
    _add_redis_url(breakers)
    breakers.set_defaults(handler=_breakers)

    fraud = commands.add_parser("fraud", help="the number ranges the conversion guard holds")
    fraud_sub = fraud.add_subparsers(dest="fraud_command", required=True)
    fraud_list = fraud_sub.add_parser("list", help="show the ranges held, soonest released first")
    fraud_release = fraud_sub.add_parser("release", help="release a held range at once")
    fraud_release.add_argument("range", help="the range: a number less its last 4 digits (7999123)")
    for each in (fraud_list, fraud_release):
        _add_redis_url(each)
        each.set_defaults(handler=_fraud)

    providers = commands.add_parser("providers", help="what the router knows of its providers")
    providers_sub = providers.add_subparsers(dest="providers_command", required=True)
    errors = providers_sub.add_parser("errors", help="print the table of every documented error code")
    errors.set_defaults(handler=_providers_errors)

    health = commands.add_parser(
        "health",
        help="exit 0 while this container's worker processes are alive (Kubernetes exec probes)",
    )
    health.add_argument(
        "--ready", action="store_true", help="also require Redis to answer and the routing file to load"
    )
    health.add_argument(
        "--max-age",
        type=float,
        default=30.0,
        help="seconds after which a process's heartbeat is stale (default 30)",
    )
    health.add_argument(
        "--dir", type=Path, help="heartbeat files (default $FLASHCALL_HEALTH_DIR or /tmp/flashcall-health)"
    )
    health.add_argument("--file", type=Path, help="routing file (default $FLASHCALL_ROUTING or routing.yaml)")
    _add_redis_url(health)
    health.set_defaults(handler=_health)

    demo = commands.add_parser(
        "demo", help="verify a phone end to end against the sandbox (a development tool)"
    )
    demo.set_defaults(handler=_demo)
    return parser


#: Exit statuses (docs/operations.md, "Exit statuses"): argparse's own for usage, and
#: ours for everything else, so that scripts and probes can tell a typo from an outage.
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _one_line(error: BaseException) -> tuple[int, list[str]] | None:
    """The status and the lines `flashcall` answers an error with, or None for one it does
    not expect (a bug: its traceback is what a report needs)."""
    if isinstance(error, FlashcallError):
        # A line per problem (a routing file may have several), each saying whose it is.
        code = EXIT_USAGE if isinstance(error, ConfigurationError) else EXIT_FAILURE
        return code, str(error).splitlines() or [type(error).__name__]
    # Looked up, not imported: a command that never imported redis cannot have raised its
    # errors, and `flashcall --help` stays without its import.
    redis_errors: Any = sys.modules.get("redis.exceptions")
    if redis_errors is not None and isinstance(error, redis_errors.RedisError):
        text = " ".join(str(error).split()) or type(error).__name__
        if isinstance(error, redis_errors.ResponseError) and text.startswith("flashcall: "):
            # The library refusing the request, in its own words.
            return EXIT_FAILURE, ["refused: " + text.removeprefix("flashcall: ")]
        if isinstance(error, redis_errors.ResponseError) and "function" in text.lower():
            text += " (is the flashcall library loaded? flashcall redis install)"
        return EXIT_FAILURE, [f"Redis: {text}"]
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename is not None else ""
        return EXIT_FAILURE, [f"{where}{error.strerror or error}"]
    return None


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _command_parser(chosen, args)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Refused by the command's own parser: its usage line, not flashcall's.
        _command_parser(parser, args).error("unrecognized arguments: " + " ".join(extra))
    extra = _dramatiq_argv(args) if getattr(args, "dramatiq", False) else []
    try:
        code: int = args.handler(args, extra)
    except Exception as error:
        answer = _one_line(error)
        if answer is None:
            raise
        status, lines = answer
        for line in lines:
            print(f"flashcall: {line}", file=sys.stderr)
        return status
    return code


if __name__ == "__main__":
    sys.exit(main())
