"""A local stack on free ports: redis-server, the sandbox and worker processes.

The demo (`make run`), the integration tests and the benchmarks all start their
processes through this module, and stop every one of them, children included.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis
import yaml

from flashcall_dev.sandbox.app import PROVIDERS as SANDBOX_PROVIDERS
from worker.core import keys
from worker.core.errors import FlashcallError
from worker.redis.connections import sync_client
from worker.routing.config import url_override_variable

__all__ = [
    "REDIS_INSTALL_HINT",
    "REPO_ROUTING",
    "LocalStack",
    "ManagedProcess",
    "free_port",
    "local_stack",
    "redis_server",
]

REDIS_INSTALL_HINT = (
    "redis-server is not installed. Install it (Debian/Ubuntu: sudo apt-get install redis-server; "
    "macOS: brew install redis) or point REDIS_URL at a Redis 7+ server."
)
REPO_ROUTING = Path(__file__).resolve().parent.parent / "routing.yaml"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class ManagedProcess:
    """A child process in its own session, so that stopping it stops its children too."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            # The leader only, as Kubernetes does: Dramatiq's main process forwards SIGTERM
            # to its workers (a SIGTERM to the group stops them as well).
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # The session may hold children that outlived their parent.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crash would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> ManagedProcess:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    process = subprocess.Popen(  # noqa: S603 - argv is built here, never from input
        argv, env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return ManagedProcess(name=name, process=process, log_path=log_path, _log=log)


def _wait_until(check: Callable[[], bool], *, timeout: float, what: str, process: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise FlashcallError(f"{what}: {process.name} exited early:\n{process.log_tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise FlashcallError(f"{what}: not ready after {timeout:.0f}s:\n{process.log_tail()}")


@dataclass
class LocalStack:
    redis_url: str
    sandbox_url: str
    provider_urls: Mapping[str, str]
    """Where the sandbox serves each provider type."""
    log_dir: Path
    code_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    processes: list[ManagedProcess] = field(default_factory=list)
    routing_path: Path = REPO_ROUTING
    sandbox: ManagedProcess | None = None

    def worker_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a worker that talks to this stack: sandbox URLs and credentials."""
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": self.redis_url,
                "FLASHCALL_CODE_SECRET": self.code_secret,
                "FLASHCALL_ROUTING": str(self.routing_path),
                "FLASHCALL_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # Every provider of the routing file goes to the sandbox's imitation of its type,
        # with the sandbox's credentials in the variables the file names.
        routing = yaml.safe_load(self.routing_path.read_text(encoding="utf-8"))
        specs = {spec.name: spec for spec in SANDBOX_PROVIDERS}
        for name, provider in routing["providers"].items():
            spec = specs[provider["type"]]
            env[url_override_variable(name)] = self.provider_urls[spec.name]
            for credential, reference in provider.get("credentials", {}).items():
                env[reference.removeprefix("env:")] = spec.credentials[credential]
        env.update(extra or {})
        return env

    def start_worker(
        self,
        *,
        processes: int = 1,
        threads: int | None = 32,
        check_processes: int = 1,
        env: Mapping[str, str] | None = None,
        name: str = "worker",
        metrics_port: int | None = None,
        args: Sequence[str] = (),
    ) -> ManagedProcess:
        """Start `flashcall worker` (with its default threads when `threads` is None, and more
        `args`); returns once its processes have installed the library and booted."""
        argv = [sys.executable, "-m", "worker", "worker", "--processes", str(processes), *args]
        argv += ["--check-processes", str(check_processes)]
        if threads is not None:
            argv += ["--threads", str(threads)]
        argv += ["--metrics-port", str(metrics_port or free_port())]
        argv += ["--metrics-dir", str(self.log_dir / f"{name}-metrics")]
        client = sync_client(self.redis_url, decode_responses=True)
        try:
            before = set(client.zrange(keys.heartbeats(), 0, -1))
            spawned = _spawn(name, argv, self.worker_env(env), self.log_dir)
            self.processes.append(spawned)
            # A process's consumers heartbeat once its runtime is up (it boots before them).
            _wait_until(
                lambda: (
                    len(set(client.zrange(keys.heartbeats(), 0, -1)) - before) >= processes + check_processes
                ),
                timeout=60,
                what="worker boot",
                process=spawned,
            )
        finally:
            client.close()
        return spawned

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> ManagedProcess:
        """Any other process, stopped with the stack; its output goes to <log_dir>/<name>.log."""
        process = _spawn(name, argv, env, self.log_dir)
        self.processes.append(process)
        return process

    def start_callbacks(
        self, *, name: str = "callbacks", args: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> tuple[ManagedProcess, str]:
        """Start `flashcall callbacks` on a free port, with more `args`, and with what the
        receiver needs of the environment (Redis, logs: no code secret, no provider keys),
        changed by `env`; answers it and its base URL."""
        return self._start_http("callbacks", name=name, args=args, env=env)

    def start_api(
        self,
        *,
        keys: str,
        name: str = "api",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
    ) -> tuple[ManagedProcess, str]:
        """Start `flashcall api` on a free port with FLASHCALL_API_KEYS=`keys` (and its metrics
        on `metrics_port`, or another free one), more `args`, the environment changed by `env`;
        answers it and its base URL."""
        args = ["--metrics-port", str(metrics_port or free_port()), *args]
        return self._start_http("api", name=name, args=args, env={"FLASHCALL_API_KEYS": keys, **(env or {})})

    def _start_http(
        self, command: str, *, name: str, args: Sequence[str], env: Mapping[str, str] | None
    ) -> tuple[ManagedProcess, str]:
        port = free_port()
        argv = [sys.executable, "-m", "worker", command, "--host", "127.0.0.1", "--port", str(port), *args]
        environment = {**os.environ, "REDIS_URL": self.redis_url, "FLASHCALL_LOG_FORMAT": "json"}
        environment.update({"PYTHONUNBUFFERED": "1", **(env or {})})
        server = _spawn(name, argv, environment, self.log_dir)
        self.processes.append(server)
        url = f"http://127.0.0.1:{port}"
        _wait_until(
            lambda: httpx.get(f"{url}/health", timeout=1).status_code == 200,
            timeout=20,
            what=f"flashcall {command}",
            process=server,
        )
        return server, url

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


@contextlib.contextmanager
def redis_server(
    log_dir: Path, *, name: str = "redis", args: Sequence[str] = (), port: int | None = None
) -> Iterator[str]:
    """A redis-server of our own on `port` (by default a free one), without persistence;
    yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FlashcallError(REDIS_INSTALL_HINT)
    port = port or free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *args]
    process = _spawn(name, argv, os.environ, log_dir)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            _wait_until(lambda: bool(client.ping()), timeout=10, what="redis-server", process=process)
        finally:
            client.close()
        yield url
    finally:
        process.stop()


def _start_sandbox(log_dir: Path, latency_ms: int, *, tries: int = 3) -> tuple[ManagedProcess, str]:
    """The sandbox, its providers on ports it binds itself (it tells them at
    /_sandbox/providers), its control API on a port picked here, picked again should another
    process have bound it in between."""
    attempt = 1
    while True:
        port = free_port()
        argv = [sys.executable, "-m", "worker", "sandbox", "--port", str(port)]
        argv += ["--latency-ms", str(latency_ms)]
        for spec in SANDBOX_PROVIDERS:
            argv += ["--provider-port", f"{spec.name}=0"]
        sandbox = _spawn("sandbox", argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, log_dir)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until(functools.partial(_sandbox_answers, url), timeout=20, what="sandbox", process=sandbox)
        except FlashcallError:
            sandbox.stop()
            if attempt == tries or "address already in use" not in sandbox.log_tail():
                raise
            attempt += 1
        else:
            return sandbox, url


def _sandbox_answers(url: str) -> bool:
    return httpx.get(f"{url}/_sandbox/health", timeout=1).status_code == 200


@contextlib.contextmanager
def local_stack(
    *, redis_url: str | None = None, sandbox_latency_ms: int = 0, routing_path: Path = REPO_ROUTING
) -> Iterator[LocalStack]:
    """Redis (REDIS_URL's, or a redis-server of our own) and the sandbox; workers on demand."""
    log_dir = Path(tempfile.mkdtemp(prefix="flashcall-"))
    with contextlib.ExitStack() as cleanup:
        if redis_url is None:
            redis_url = cleanup.enter_context(redis_server(log_dir))
        sandbox, sandbox_url = _start_sandbox(log_dir, sandbox_latency_ms)
        cleanup.callback(sandbox.stop)
        provider_urls = httpx.get(f"{sandbox_url}/_sandbox/providers", timeout=5).json()
        stack = LocalStack(
            redis_url=redis_url,
            sandbox_url=sandbox_url,
            provider_urls=provider_urls,
            log_dir=log_dir,
            routing_path=routing_path,
            sandbox=sandbox,
        )
        cleanup.callback(stack.stop)
        yield stack
