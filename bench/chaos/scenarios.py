"""Fault scenarios: each starts its own Redis, sandbox and worker groups, drives load
through the producer contract, breaks something, lets it recover, and counts."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.chaos.cluster import ChaosRedis, WorkerGroups
from bench.chaos.traffic import Tally, Traffic, Users, pending, tally
from bench.harness import peak_rss_mb, reset
from bench.progress import Progress
from flashcall_dev.sentinel_stack import SentinelGroup, sentinel_group
from flashcall_dev.stack import LocalStack, local_stack
from worker.core import keys
from worker.core.errors import FlashcallError
from worker.redis import functions
from worker.redis.connections import sync_client

__all__ = ["SCENARIOS", "Result", "Scenario"]

LATENCY_MS = 1000
"""Providers answer in a second, so that hundreds of calls are in flight when a fault hits."""
HIGH_RATE = 250.0
RECOVERY_BOUND_S = 90.0

Say = Callable[[str], None]


@dataclass
class Env:
    stack: LocalStack
    server: ChaosRedis | None
    """The Redis a scenario breaks (None under Sentinel, where `sentinels` has the nodes)."""
    workers: WorkerGroups
    users: Users | None = None
    sentinels: SentinelGroup | None = None

    @property
    def standalone(self) -> ChaosRedis:
        if self.server is None:
            raise FlashcallError("this scenario runs under Sentinel")
        return self.server

    @property
    def url(self) -> str:
        return self.stack.redis_url

    def client(self) -> redis.Redis:
        return sync_client(self.url, decode_responses=True, socket_timeout=5)


@dataclass
class Result:
    scenario: str
    fault: str
    in_flight: int
    tally: Tally
    notes: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    expected_loss: str | None = None
    """Why this scenario cannot keep what Redis held, when it cannot."""

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "fault": self.fault,
            "in_flight": self.in_flight,
            **self.tally.__dict__,
            "figures": self.figures,
            "notes": self.notes,
            "expected_loss": self.expected_loss,
        }


@contextlib.contextmanager
def environment(*, aof: bool = False, groups: int = 2, latency_ms: int = LATENCY_MS) -> Iterator[Env]:
    work = Path(tempfile.mkdtemp(prefix="flashcall-chaos-"))
    chaos_redis = ChaosRedis(work / "redis", aof=aof)
    chaos_redis.start()
    try:
        with local_stack(redis_url=chaos_redis.url, sandbox_latency_ms=latency_ms) as stack:
            reset(stack, latency_ms)
            workers = WorkerGroups(stack, count=groups)
            workers.start()
            yield Env(stack, chaos_redis, workers)
    finally:
        chaos_redis.stop()


@contextlib.contextmanager
def sentinel_environment(*, groups: int = 2, latency_ms: int = LATENCY_MS) -> Iterator[Env]:
    work = Path(tempfile.mkdtemp(prefix="flashcall-chaos-"))
    with (
        sentinel_group(work / "sentinel") as sentinels,
        local_stack(redis_url=sentinels.url, sandbox_latency_ms=latency_ms) as stack,
    ):
        reset(stack, latency_ms)
        workers = WorkerGroups(stack, count=groups)
        workers.start()
        yield Env(stack, None, workers, sentinels=sentinels)


def _drive(
    env: Env,
    name: str,
    *,
    rate: float,
    seconds: float,
    fault_after: float,
    inject: Callable[[Env], None],
    burst: int = 0,
    wait_s: float = 150,
    before_retry: Callable[[Traffic], None] | None = None,
) -> tuple[Traffic, Tally, int]:
    """Load, the fault at `fault_after`, then the count; answers the traffic, its tally
    and how many were in flight when the fault hit."""
    traffic = Traffic(env.url, name)
    env.users = Users(env.url, env.stack.sandbox_url, [traffic])
    env.users.start()
    if burst:
        traffic.burst(burst)
    with Progress(
        f"{name}: load",
        seconds,
        _since(time.monotonic()),
        duration=True,
        figures=lambda: f"accepted {len(traffic.accepted)}, refused {len(traffic.refused)}",
    ):
        traffic.start_rate(rate, seconds)
        time.sleep(fault_after)
        in_flight = pending(env.url, list(traffic.accepted))
        fault_at = time.monotonic()
        inject(env)
        traffic.join()
    if before_retry is not None:
        before_retry(traffic)
    traffic.retry_refused()
    counted = tally(
        env.url,
        env.stack.sandbox_url,
        traffic,
        in_flight_at_fault=in_flight,
        fault_at=fault_at,
        wait_s=wait_s,
    )
    return traffic, counted, len(in_flight)


def _since(began: float) -> Callable[[], float]:
    return lambda: time.monotonic() - began


def _kill_and_restart_group(env: Env) -> None:
    env.workers.kill_process(0)
    env.workers.wait_for_exit(0)
    env.workers.restart_dead()


def _kill_all_and_restart(env: Env) -> None:
    env.workers.kill_all()
    time.sleep(2)
    env.workers.restart_dead()


def _killing(
    name: str, title: str, description: str, inject: Callable[[Env], None], **load: Any
) -> Callable[[Say], Result]:
    """A scenario that SIGKILLs workers under `load` (rate, seconds, fault_after, burst)."""

    def scenario(say: Say) -> Result:
        with environment() as env:
            _, counted, in_flight = _drive(env, name, inject=inject, **load)
        return Result(title, description, in_flight, counted)

    return scenario


def redis_restart_aof(say: Say) -> Result:
    def inject(env: Env) -> None:
        env.standalone.shutdown()
        time.sleep(3)
        env.standalone.start()

    with environment(aof=True) as env:
        traffic, counted, in_flight = _drive(env, "aof", rate=150, seconds=25, fault_after=8, inject=inject)
    result = Result(
        "Redis restarted, AOF",
        "SIGTERM to Redis (appendonly yes, everysec); back 3 s later",
        in_flight,
        counted,
    )
    result.figures["producer_errors"] = dict(traffic.errors)
    return result


def redis_restart_empty(say: Say) -> Result:
    back: dict[str, float] = {}

    def inject(env: Env) -> None:
        env.standalone.kill()
        time.sleep(3)
        env.standalone.start()
        restarted = time.monotonic()
        client = env.client()
        while time.monotonic() - restarted < 60:
            with contextlib.suppress(redis.RedisError):
                functions.version().run(client)
                back["functions_s"] = round(time.monotonic() - restarted, 2)
                break
            time.sleep(0.05)
        client.close()

    with environment(aof=False) as env:
        traffic, counted, in_flight = _drive(env, "empty", rate=150, seconds=25, fault_after=8, inject=inject)
    result = Result(
        "Redis restarted, no persistence",
        "SIGKILL to Redis without AOF; an empty Redis 3 s later",
        in_flight,
        counted,
    )
    result.figures["functions_back_s"] = back.get("functions_s")
    result.figures["producer_errors"] = dict(traffic.errors)
    result.expected_loss = (
        "Redis was the only copy: the verifications it held are gone with it (counted as lost); "
        "producers learn it from flashcall_status (not found) and start again"
    )
    return result


def redis_frozen(say: Say) -> Result:
    def inject(env: Env) -> None:
        env.standalone.freeze()
        time.sleep(30)
        env.standalone.thaw()

    with environment() as env:
        traffic, counted, in_flight = _drive(
            env, "frozen", rate=100, seconds=45, fault_after=8, inject=inject
        )
    result = Result(
        "Redis unreachable 30 s",
        "SIGSTOP to Redis for 30 s (no answers, connections open)",
        in_flight,
        counted,
    )
    result.figures["producer_errors"] = dict(traffic.errors)
    return result


def _provider_fault(name: str, behaviour: dict[str, Any], description: str) -> Callable[[Say], Result]:
    def scenario(say: Say) -> Result:
        def inject(env: Env) -> None:
            httpx.post(
                f"{env.stack.sandbox_url}/_sandbox/script",
                json={"provider": "telphin", "chance": {"probability": 1.0, "behaviour": behaviour}},
            ).raise_for_status()

        with environment(latency_ms=200) as env:
            _, counted, in_flight = _drive(env, name, rate=50, seconds=20, fault_after=0.0, inject=inject)
            records = httpx.get(
                f"{env.stack.sandbox_url}/_sandbox/records", params={"provider": "telphin"}, timeout=30
            ).json()["records"]
        result = Result(
            f"provider {description}", f"Telphin (the cheapest flash call) {description}", in_flight, counted
        )
        result.figures["calls_to_dead_provider"] = sum(record["kind"] == "flashcall" for record in records)
        result.notes.append("routing.yaml: Telphin breaker fail_max 5")
        return result

    return scenario


def burst(say: Say) -> Result:
    figures: dict[str, Any] = {}

    def inject(env: Env) -> None:
        extra = Traffic(env.url, "burst10x", first_number=5_000_000)
        if env.users is not None:
            env.users.traffic.append(extra)
        extra.start_rate(10 * 30, 5)
        # One number asked for 20 times within the burst: the per-number limit (1 per 2 min) holds.
        same = env.client()
        answers = [
            functions.start(f'{{"id": "same-{n}", "phone": "+79970000001"}}').run(same) for n in range(20)
        ]
        same.close()
        extra.join()
        figures["burst_accepted"] = len(extra.accepted)
        figures["burst_refused"] = len(extra.refused)
        figures["same_number_starts"] = len(answers)

    with environment() as env:
        _, counted, in_flight = _drive(env, "steady", rate=30, seconds=25, fault_after=8, inject=inject)
        records = httpx.get(
            f"{env.stack.sandbox_url}/_sandbox/records", params={"number": "79970000001"}, timeout=30
        ).json()["records"]
        figures["same_number_calls"] = len(records)
        figures["worker_peak_rss_mb"] = [round(p, 1) for g in env.workers.groups for p in peak_rss_mb(g)]
        info = env.client().info("memory")
        figures["redis_peak_mb"] = round(int(info["used_memory_peak"]) / 2**20, 1)
    return Result(
        "burst 10x",
        "30/s steady, then 300/s for 5 s and one number 20 times",
        in_flight,
        counted,
        figures=figures,
    )


def maxmemory(say: Say) -> Result:
    figures: dict[str, Any] = {}

    def inject(env: Env) -> None:
        client = env.client()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        # Below what is in use: every write is refused until the limit is lifted.
        client.config_set("maxmemory", max(1, used - 64 * 1024))
        time.sleep(6)
        client.config_set("maxmemory", 0)
        client.close()

    def half_written(traffic: Traffic) -> None:
        client = env.client()
        figures["refused_but_written"] = sum(client.exists(keys.verification(v)) for v in traffic.refused)
        client.close()

    with environment() as env:
        traffic, counted, in_flight = _drive(
            env, "oom", rate=100, seconds=20, fault_after=6, inject=inject, before_retry=half_written
        )
    figures["producer_errors"] = dict(traffic.errors)
    return Result(
        "Redis at maxmemory",
        "maxmemory below use, noeviction, for 6 s",
        in_flight,
        counted,
        figures=figures,
    )


def _sentinel(
    name: str,
    title: str,
    fault: str,
    failover: Callable[[SentinelGroup], int],
    expected_loss: str | None = None,
) -> Callable[[Say], Result]:
    """A failover of the Sentinel group under load, made by `failover`."""

    def scenario(say: Say) -> Result:
        figures: dict[str, Any] = {}

        def inject(env: Env) -> None:
            assert env.sentinels is not None
            began = time.monotonic()
            figures["new_primary_after_s"] = None
            failover(env.sentinels)
            figures["new_primary_after_s"] = round(time.monotonic() - began, 1)

        with sentinel_environment() as env:
            traffic, counted, in_flight = _drive(
                env, name, rate=150, seconds=25, fault_after=8, inject=inject
            )
        figures["producer_errors"] = dict(traffic.errors)
        return Result(title, fault, in_flight, counted, figures=figures, expected_loss=expected_loss)

    return scenario


Scenario = Callable[[Say], Result]

SCENARIOS: dict[str, Scenario] = {
    "kill-one-busy": _killing(
        "kill1",
        "kill -9 one worker process, busy",
        "SIGKILL a verification process mid-call; its group restarts",
        _kill_and_restart_group,
        rate=HIGH_RATE,
        seconds=25,
        fault_after=8,
    ),
    "kill-one-quiet": _killing(
        "kill1q",
        "kill -9 one worker process, quiet",
        "300 started at once, then 1 every 2 s; SIGKILL as above",
        _kill_and_restart_group,
        rate=0.5,
        seconds=30,
        fault_after=1.0,
        burst=300,
    ),
    "kill-all": _killing(
        "killall",
        "kill -9 every worker",
        "SIGKILL every process of both groups; restarted 2 s later",
        _kill_all_and_restart,
        rate=HIGH_RATE,
        seconds=25,
        fault_after=8,
    ),
    "redis-restart-aof": redis_restart_aof,
    "redis-restart-empty": redis_restart_empty,
    "redis-unreachable": redis_frozen,
    "provider-hang": _provider_fault("provider-hang", {"hang": True}, "accepts and never answers"),
    "provider-trickle": _provider_fault("provider-trickle", {"trickle": True}, "answers a byte a second"),
    "provider-reset": _provider_fault("provider-reset", {"disconnect": True}, "resets connections"),
    "sentinel-failover": _sentinel(
        "failover",
        "Sentinel failover",
        "SENTINEL FAILOVER (1 primary, 1 replica, 3 sentinels); workers and producers use redis+sentinel://",
        SentinelGroup.failover,
        expected_loss=(
            "replication is asynchronous: what the old primary took after the replica was promoted "
            "and before clients moved (they ask the sentinels twice a second) is gone. A start lost "
            "that way is a start the producer must send again (flashcall_status: not found) unless "
            "it waited for a replica (docs/protocol.md); claims wait for the replica, so nobody is "
            "called twice"
        ),
    ),
    "sentinel-planned-failover": _sentinel(
        "planned",
        "Sentinel planned failover",
        "writes held (CLIENT PAUSE WRITE), replica caught up, SENTINEL FAILOVER, old primary made a replica",
        SentinelGroup.planned_failover,
    ),
    "burst": burst,
    "maxmemory": maxmemory,
}
