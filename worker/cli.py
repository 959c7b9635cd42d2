"""The `flashcall` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from worker.errors import FlashcallError

__all__ = ["main"]

#: Provider calls take 0.2 to 2 s and run as coroutines, but Dramatiq caps the calls in
#: flight per process at its thread count even for async actors (each thread waits on
#: its coroutine); 256 threads keep a few hundred calls in flight per process.
DEFAULT_THREADS = 256


def _worker(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from dramatiq.cli import main as dramatiq_main
    from dramatiq.cli import make_argument_parser

    from worker.logging import configure_from_env

    configure_from_env()
    argv = [
        "worker.actors",
        "--skip-logging",
        "--processes", str(args.processes),
        "--threads", str(args.threads),
        "--worker-shutdown-timeout", str(args.shutdown_timeout * 1000),
        *extra,
    ]  # fmt: skip
    code: int = dramatiq_main(make_argument_parser().parse_args(argv))  # type: ignore[no-untyped-call]
    return code


def _sandbox(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.sandbox import serve

    ports: dict[str, int] = {}
    for item in args.provider_port:
        name, _, port = item.partition("=")
        if not port.isdigit():
            raise FlashcallError(f"--provider-port takes NAME=PORT, not {item!r}")
        ports[name] = int(port)
    serve(args.host, args.port, provider_ports=ports, latency_ms=args.latency_ms)
    return 0


def _redis_install(args: argparse.Namespace, _: Sequence[str]) -> int:
    import redis

    from worker.redis import install, library_version

    client = redis.Redis.from_url(args.redis_url)
    install(client)
    print(f"installed the flashcall library, version {library_version()}, into {_safe_url(args.redis_url)}")
    return 0


def _routing_check(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.routing import load_routing

    config = load_routing(args.file)
    print(f"{args.file}: valid ({len(config.providers)} providers, {len(config.policies)} policies)")
    unset = sorted(
        variable
        for entry in config.providers.values()
        for variable in entry.credential_variables().values()
        if not os.environ.get(variable)
    )
    if unset:
        print("note: not set in this environment: " + ", ".join(unset))
    return 0


def _providers_errors(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.providers.catalog import error_table

    print(error_table())
    return 0


def _demo(args: argparse.Namespace, _: Sequence[str]) -> int:
    from worker.demo import run_demo
    from worker.stack import REPO_ROUTING

    routing = os.environ.get("FLASHCALL_ROUTING")
    return run_demo(
        redis_url=os.environ.get("REDIS_URL") or None, routing_path=Path(routing) if routing else REPO_ROUTING
    )


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashcall", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser(
        "worker", help="run worker processes (extra arguments go to dramatiq)", allow_abbrev=False
    )
    worker.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    worker.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    worker.add_argument("--shutdown-timeout", type=int, default=30, help="seconds to finish work in flight")
    worker.set_defaults(handler=_worker, passthrough=True)

    sandbox = commands.add_parser(
        "sandbox", help="serve imitations of the provider APIs (control API on --port, providers after it)"
    )
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8600)
    sandbox.add_argument(
        "--provider-port",
        action="append",
        default=[],
        metavar="NAME=PORT",
        help="serve a provider on this port",
    )
    sandbox.add_argument("--latency-ms", type=int, default=0)
    sandbox.set_defaults(handler=_sandbox)

    redis_cmd = commands.add_parser("redis", help="manage the flashcall Redis Functions library")
    redis_sub = redis_cmd.add_subparsers(dest="redis_command", required=True)
    install = redis_sub.add_parser("install", help="load (or replace) the flashcall library")
    install.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    install.set_defaults(handler=_redis_install)

    routing = commands.add_parser("routing", help="work with routing files")
    routing_sub = routing.add_subparsers(dest="routing_command", required=True)
    check = routing_sub.add_parser("check", help="validate a routing file")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_routing_check)

    providers = commands.add_parser("providers", help="what the router knows of its providers")
    providers_sub = providers.add_subparsers(dest="providers_command", required=True)
    errors = providers_sub.add_parser("errors", help="print the table of every documented error code")
    errors.set_defaults(handler=_providers_errors)

    demo = commands.add_parser("demo", help="verify a phone end to end against the sandbox")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error("unrecognized arguments: " + " ".join(extra))
    try:
        code: int = args.handler(args, extra)
    except FlashcallError as error:
        print(f"flashcall: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
