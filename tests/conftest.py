"""Shared fixtures.

Integration tests (marked `integration`) share one redis-server, one sandbox and one
worker process for the whole session, started on free ports. Each test uses its own
verification ids and phone numbers, so tests never see each other's state. Tests of
the Redis library alone get a redis-server of their own (`library`), flushed before
each test, so that they may move its clock freely.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
import redis
import structlog

from flashcall_dev.stack import LocalStack, ManagedProcess, free_port, local_stack, redis_server
from tests.support import API_KEY, Api, OwnStack, Sandbox
from worker.client import Producer
from worker.redis.library import install

TEST_ROUTING = Path(__file__).parent / "routing.test.yaml"

#: Loggers worker.logs.structured.configure() sets a level of their own on.
_NOISY_LOGGERS = ("httpx", "httpcore", "aiohttp.access")

_numbers = itertools.count(secrets.randbelow(5_000_000) + 1_000_000)


@pytest.fixture(scope="session")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> OwnStack:
    """For modules whose routing differs from the session's: redis-server, sandbox, no worker."""

    def start(routing: str) -> AbstractContextManager[LocalStack]:
        path = tmp_path_factory.mktemp("routing") / "routing.yaml"
        path.write_text(routing, encoding="utf-8")
        return local_stack(routing_path=path)

    return start


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    with local_stack(routing_path=TEST_ROUTING) as started:
        yield started


@pytest.fixture(scope="session")
def worker(stack: LocalStack) -> ManagedProcess:
    return stack.start_worker(processes=1, threads=32)


@pytest.fixture(scope="session")
def sandbox(stack: LocalStack) -> Iterator[Sandbox]:
    control = Sandbox(stack.sandbox_url)
    yield control
    control.close()


@pytest.fixture(scope="session")
def api(stack: LocalStack, worker: ManagedProcess) -> Api:
    """`flashcall api` in front of the session's Redis and worker, with the key of a client
    named `shop` (API_KEY), and its metrics on a port of its own."""
    metrics_port = free_port()
    process, url = stack.start_api(keys=f"shop:{API_KEY}", metrics_port=metrics_port)
    return Api(url=url, key=API_KEY, metrics_url=f"http://127.0.0.1:{metrics_port}/metrics", process=process)


@pytest.fixture
def api_client(api: Api) -> Iterator[httpx.Client]:
    """An HTTP client of the session's API, sending the `shop` key."""
    client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}, timeout=10)
    yield client
    client.close()


@pytest.fixture
def producer(stack: LocalStack) -> Iterator[Producer]:
    client = Producer.from_url(stack.redis_url)
    yield client
    client.close()


def _new_phone() -> str:
    return f"7999{next(_numbers):07d}"


@pytest.fixture
def phone() -> str:
    """A Russian mobile number no other test of the session uses, as 7XXXXXXXXXX."""
    return _new_phone()


@pytest.fixture
def new_phone() -> Callable[[], str]:
    """Makes more numbers that no other test of the session uses."""
    return _new_phone


@pytest.fixture
def verification_id(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:60]}-{secrets.token_hex(4)}".replace("[", "-").replace("]", "")


@pytest.fixture(scope="module")
def library_url() -> Iterator[str]:
    with redis_server(Path(tempfile.mkdtemp(prefix="flashcall-library-"))) as url:
        yield url


@pytest.fixture
def library(library_url: str) -> Iterator[redis.Redis]:
    """A redis-server with only the flashcall library in it, empty before each test."""
    client = redis.Redis.from_url(library_url, decode_responses=True)
    client.flushall()
    install(client)
    yield client
    client.close()


@pytest.fixture
def restore_logging(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Undo configure(): structlog defaults, the root logger's handlers and levels."""
    root = logging.getLogger()
    # pytest adds capture handlers of its own around each test phase and removes them itself.
    pytest_phase_handler = type(caplog.handler)
    kept = [handler for handler in root.handlers if not isinstance(handler, pytest_phase_handler)]
    root_level = root.level
    noisy_levels = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    yield
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter):
            root.removeHandler(handler)
    for handler in kept:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(root_level)
    for name, level in noisy_levels.items():
        logging.getLogger(name).setLevel(level)
