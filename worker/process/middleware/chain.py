"""The broker every worker process runs on: worker/redis/broker.py's FlashcallBroker with
Dramatiq's Retries and AsyncIO (its loop on a daemon thread) and the router's own middleware,
in the order they must run."""

from __future__ import annotations

from dramatiq import Middleware
from dramatiq.middleware import Retries

from worker.process.middleware.boot import RuntimeBoot
from worker.process.middleware.deadletters import DeadLetterLog
from worker.process.middleware.logcontext import LogContext
from worker.process.middleware.roles import ProcessRoles
from worker.process.middleware.shutdown import DaemonAsyncIO, OneShutdown
from worker.redis.broker import FlashcallBroker
from worker.redis.connections import sync_client

__all__ = ["build_broker"]


def build_broker(redis_url: str) -> FlashcallBroker:
    """The broker every worker process uses, with the router's middleware after Dramatiq's own."""
    client = sync_client(redis_url)
    # Dramatiq's Prometheus middleware reads its directory and port from the environment
    # when imported; `flashcall worker` sets them first.
    from worker.process.middleware.dramatiq_metrics import DramatiqMetrics

    # Of Dramatiq's defaults only Retries is used: no actor sets an age or time limit
    # (provider calls and Redis commands have timeouts of their own), and none uses
    # callbacks, pipelines or shutdown notifications. Each middleware runs on every message.
    middleware: list[Middleware] = [
        ProcessRoles(),
        Retries(),
        DramatiqMetrics(),
        DaemonAsyncIO(),
        RuntimeBoot(client=client),
        LogContext(),
        DeadLetterLog(),
        OneShutdown(),
    ]
    return FlashcallBroker(client=client, middleware=middleware)
