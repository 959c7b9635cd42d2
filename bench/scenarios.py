"""The benchmark's scenarios. Each one returns plain data for bench/results.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import httpx
import redis

from bench.harness import (
    CPUS,
    LATENCIES,
    ROUTING,
    Phones,
    Run,
    Usage,
    check_round_trips,
    commands_ran,
    cpu_seconds,
    drive_baseline,
    drive_project,
    inbox,
    is_verification_process,
    machine_cpu,
    median,
    open_verifications,
    peak_rss_mb,
    percentile,
    reset,
    set_latency,
    start_project,
    worker_pids,
)
from flashcall_dev.stack import REPO_ROUTING, LocalStack, ManagedProcess, redis_server
from worker.core import keys
from worker.redis import functions

PRODUCER_ROUND_TRIPS = 3
WRONG_CODE = "00000000"
"""What the checks that must leave their verification open type."""
QUIET_PAUSE_S = (0.2, 0.5)
"""Between two checks on the quiet worker: a person reading the code off the phone and typing it."""
QUIET_SETTLE_S = 2.0
"""After the quiet run's calls were placed, before its first check: the burst's wake-ups are over."""
CHECKED_BY = {"provider": ({}, "telphin"), "router": ({"channels": ["voice"]}, "voicepassword")}
"""The quiet checks' two kinds of code: the start request's fields, and the provider that
must have placed the call. routing.yaml's default policy calls with Telphin first, and
Telphin checks its codes itself; a voice call goes to VoicePassword, whose code the router checks."""
SLOWLOG_LEN = 100_000
"""SLOWLOG entries kept while every command is logged: more than a sample's top-level commands."""
TOP = 12
BARE_THREADS = 8
"""bare_actor's threads, as ../shared/bench measured it (more threads do not help it)."""
BARE_ASYNC_THREADS = 256
"""bare_async_actor's threads, as ../shared/bench runs it."""

# Rough rates, only to size each run so that it lasts `Bench.seconds`.
_PROJECT_RATE = {0: 1000, 100: 950, 500: 750, 2000: 430}
_BARE_ACTOR_RATE = 1050
_BARE_ASYNC_RATE = {0: 900, 100: 850, 500: 500, 2000: 250}
# routing.yaml's Telphin codes are judged by Telphin, from one of the check process's 32
# threads: start -> approved runs at no more than 32 / latency then.
_APPROVAL_RATE = {0: 400, 100: 250, 500: 60, 2000: 15}


Say = Callable[[str], None]


@dataclass
class Bench:
    """What the scenarios share: the stack, fresh phone numbers, and the size of runs."""

    started: LocalStack
    seconds: float
    """How long each throughput run should last."""
    say: Say
    phones: Phones = field(default_factory=Phones)
    peaks_mb: list[float] = field(default_factory=list)
    """Peak RSS of every project worker process of every run."""

    def size(self, rate: float, processes: int = CPUS) -> int:
        return max(50, int(rate * self.seconds * min(processes, CPUS) / CPUS))


@contextlib.contextmanager
def project_worker(bench: Bench, latency_ms: int, processes: int = CPUS) -> Iterator[ManagedProcess]:
    reset(bench.started, latency_ms)
    worker = start_project(bench.started, processes)
    try:
        yield worker
    finally:
        bench.peaks_mb.extend(peak_rss_mb(worker))
        worker.stop()
        bench.started.processes.remove(worker)


def _summary(run: Run) -> dict[str, Any]:
    return {
        "label": run.label,
        "count": run.count,
        "unfinished": run.requested - run.count,
        "seconds": round(run.seconds, 2),
        "rate": round(run.rate, 1),
        "p50_ms": run.percentile(50) if run.latencies_ms else None,
        "p99_ms": run.percentile(99) if run.latencies_ms else None,
        **({"cpu_ms_per_verification": run.cpu_ms} if run.cpu_ms else {}),
    }


def throughput(
    bench: Bench,
    latency_ms: int,
    processes: int = CPUS,
    *,
    bare_actor: bool = False,
    side: Callable[[], Callable[[], dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Verifications per second from start to delivered, project and baselines side by side.
    `side` prepares, once the worker runs, what then runs in a thread alongside the
    project's load; that answer joins the result."""
    result: dict[str, Any] = {"latency_ms": latency_ms, "processes": processes}
    count = bench.size(_PROJECT_RATE.get(latency_ms, 500), processes)
    bench.say(f"project, {processes} processes, sandbox {latency_ms} ms: {count} verifications")
    with project_worker(bench, latency_ms, processes) as worker:
        during = side() if side else None
        extra: dict[str, Any] = {}
        helper = threading.Thread(target=lambda: extra.update(during() if during else {}))
        sandbox_pid = [bench.started.sandbox.process.pid] if bench.started.sandbox else []
        sandbox_before = cpu_seconds(sandbox_pid)
        before = machine_cpu(bench.started, worker_pids(worker))
        helper.start()
        run = drive_project(bench.started, bench.phones.take(count), "tp", latency_ms, processes)
        helper.join()
        result["project"] = _summary(run)
        result["cpu_ms_per_verification"] = machine_cpu(bench.started, worker_pids(worker)).per(
            before, run.count
        )
        result["worker_cpu_ms_per_verification"] = result["cpu_ms_per_verification"]["worker"]
        result["sandbox_cpu_share"] = round((cpu_seconds(sandbox_pid) - sandbox_before) / run.seconds, 3)
        result["peak_rss_mb"] = [round(peak, 1) for peak in peak_rss_mb(worker)]
        result.update(extra)
    baselines = []
    modules = [("bare_actor", BARE_THREADS, _BARE_ACTOR_RATE)] if bare_actor else []
    modules.append(("bare_async_actor", BARE_ASYNC_THREADS, _BARE_ASYNC_RATE.get(latency_ms, 300)))
    for module, threads, rate in modules:
        size = bench.size(rate, processes)
        bench.say(f"{module}, {processes}x{threads}, sandbox {latency_ms} ms: {size} messages")
        reset(bench.started, latency_ms)
        baselines.append(
            _summary(drive_baseline(bench.started, module, threads, size, latency_ms, processes))
        )
    result["baselines"] = baselines
    best = max(baselines, key=lambda baseline: baseline["rate"])
    result["ratio"] = round(result["project"]["rate"] / best["rate"], 2) if best["rate"] else None
    result["ratio_to"] = best["label"]
    return result


def shipped(bench: Bench, *, quiet: int, sample: int) -> dict[str, Any]:
    """routing.yaml as shipped, on one worker: Redis per verification and on the idle worker
    (`sample` verifications, while the worker is fresh), the quiet checks (`quiet` of each
    kind), then start -> approved at every provider latency."""
    with routed(bench, REPO_ROUTING), project_worker(bench, 0) as worker:
        # The boot's first heartbeats, timers and routing loads are not what idle costs.
        time.sleep(2)
        bench.say(f"Redis per verification, routing.yaml: {sample} verifications, and the idle worker")
        commands = redis_commands(bench, worker, sample)
        quieted = quiet_checks(bench, quiet)
        approved = [approval(bench, worker, latency) for latency in LATENCIES]
    return {"commands": commands, "quiet_checks": quieted, "approval": approved}


def approval(bench: Bench, worker: ManagedProcess, latency_ms: int) -> dict[str, Any]:
    """Start -> approved on the running worker, with the sandbox at `latency_ms`: each
    verification's code typed by a simulated user once its call is delivered. The rate, and
    the CPU of the worker and of Redis and the commands Redis ran (functions' own included)
    per approval, over the whole run: every start, call, check and timer is paid for."""
    processes = len([pid for pid in worker_pids(worker) if is_verification_process(pid)])
    count = bench.size(_APPROVAL_RATE[latency_ms], processes)
    bench.say(f"project to approval, {processes} processes, sandbox {latency_ms} ms: {count} verifications")
    set_latency(bench.started, latency_ms)
    client = redis.Redis.from_url(bench.started.redis_url, decode_responses=True)
    try:
        before = Usage.now(worker, client)
        run = drive_project(
            bench.started, bench.phones.take(count), "ap", latency_ms, processes, goal="approved"
        )
        after = Usage.now(worker, client)
    finally:
        client.close()
    commands = after.commands_since(before) - run.sent
    per = max(run.count, 1)
    return {
        "latency_ms": latency_ms,
        "processes": processes,
        **_summary(run),
        "delivered_by": dict(run.providers),
        "worker_cpu_ms_per_verification": round((after.workers_cpu - before.workers_cpu) * 1000 / per, 3),
        "check_cpu_ms_per_verification": round((after.checks_cpu - before.checks_cpu) * 1000 / per, 3),
        "redis_cpu_ms_per_verification": round((after.redis_cpu - before.redis_cpu) * 1000 / per, 3),
        "commands_per_verification": round(commands.total() / per, 1),
        "top_commands_per_verification": [
            (name, round(calls / per, 2)) for name, calls in commands.most_common(TOP)
        ],
    }


def checks_under_load(bench: Bench, count: int, latency_ms: int) -> Callable[[], dict[str, Any]]:
    """Before the load: open 2 x `count` verifications and time `count` checks on the idle
    worker, 5 ms apart. Returned: what times the other `count` checks while the load runs.
    The code is wrong: the verifications stay open."""
    set_latency(bench.started, 0)
    opened = open_verifications(bench.started, bench.phones.take(2 * count), "chk").ids
    wrong = [(verification, WRONG_CODE) for verification in opened]
    idle = check_round_trips(bench.started, wrong[:count], pause=0.005)
    set_latency(bench.started, latency_ms)

    def during() -> dict[str, Any]:
        time.sleep(min(2.0, bench.seconds / 5))
        loaded = check_round_trips(bench.started, wrong[count:], pause=bench.seconds / count / 2)
        return {"checks": {"idle": _spread(idle), "load": _spread(loaded)}}

    return during


def quiet_checks(bench: Bench, count: int) -> dict[str, Any]:
    """The right code typed into a quiet system: `count` sequential checks on the running
    worker, idle but for them (routing.yaml as shipped), QUIET_PAUSE_S apart, for each kind
    of CHECKED_BY. Each kind's verifications are opened just before their checks, well
    within their step's timeout."""
    set_latency(bench.started, 0)
    result: dict[str, Any] = {}
    for kind, (request, provider) in CHECKED_BY.items():
        opened = open_verifications(bench.started, bench.phones.take(count), f"q{kind}", request)
        with httpx.Client(base_url=bench.started.sandbox_url, timeout=5) as sandbox:
            checks = [
                (verification, inbox(sandbox, opened.phone(verification))["code"])
                for verification in opened.ids
                if opened.delivered_by[verification] == provider
            ]
        bench.say(f"quiet checks, code checked by the {kind}: {len(checks)} checks")
        time.sleep(QUIET_SETTLE_S)
        taken = check_round_trips(bench.started, checks, pause=QUIET_PAUSE_S)
        answers = Counter(answer for _, answer in taken)
        if set(answers) != {"approved"}:
            raise RuntimeError(f"checks with the right code were answered {dict(answers)}")
        result[kind] = {**_spread(taken), "provider": provider, "delivered_by": dict(opened.providers)}
    return result


@contextlib.contextmanager
def routed(bench: Bench, routing: Path) -> Iterator[None]:
    """The workers started in the block read this routing file."""
    bench.started.routing_path = routing
    try:
        yield
    finally:
        bench.started.routing_path = ROUTING


def _spread(taken: list[tuple[float, str]]) -> dict[str, Any]:
    times = [ms for ms, _ in taken]
    return {"n": len(times), "p50_ms": round(median(times), 2), "p99_ms": round(percentile(times, 99), 2)}


BREAKER_ROUTING = """\
# Two VoicePassword accounts at different prices: the benchmark opens the cheaper one's
# breaker and measures what skipping it costs.
providers:
  vp-cheap:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    channels: {flashcall: {cost: 0.30}}
    breaker: {fail_max: 5, reset_timeout: 1h}
  vp-other:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    channels: {flashcall: {cost: 0.35}}
policies:
  default:
    steps:
      - {channel: flashcall, timeout: 60s}
"""


def breaker_overhead(bench: Bench) -> dict[str, Any]:
    """start -> delivered with every breaker closed, then with the cheaper provider's breaker
    open, at a steady pace well below capacity, so that only the skip shows."""
    per_second = 150.0
    count = max(100, int(per_second * bench.seconds))
    folder = Path(tempfile.mkdtemp(prefix="flashcall-bench-"))
    routing = folder / "routing.yaml"
    routing.write_text(BREAKER_ROUTING, encoding="utf-8")
    try:
        with routed(bench, routing), project_worker(bench, 0):
            # A fresh worker's first seconds (imports, pools, JIT-free warm caches) would
            # otherwise land in the closed run only and make skipping look free.
            warm = max(50, count // 4)
            drive_project(bench.started, bench.phones.take(warm), "bw", 0, CPUS, per_second)
            bench.say(f"breaker closed: {count} verifications at {per_second:.0f}/s")
            closed = drive_project(bench.started, bench.phones.take(count), "bc", 0, CPUS, per_second)
            client = redis.Redis.from_url(bench.started.redis_url)
            functions.breaker_set("vp-cheap", "open", now_ms=int(time.time() * 1000)).run(client)
            client.close()
            bench.say(f"breaker open: {count} verifications at {per_second:.0f}/s")
            opened = drive_project(bench.started, bench.phones.take(count), "bo", 0, CPUS, per_second)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "per_second": per_second,
        "closed": {**_summary(closed), "providers": dict(closed.providers)},
        "open": {**_summary(opened), "providers": dict(opened.providers)},
        "overhead_p50_ms": opened.percentile(50) - closed.percentile(50),
        "overhead_p99_ms": opened.percentile(99) - closed.percentile(99),
    }


def replica_overhead(bench: Bench) -> dict[str, Any]:
    """What a claim's wait for a replica costs: start -> delivered at a steady pace, with the
    bench's Redis alone, then with a replica attached (each claim then travels with
    `WAIT 1`), and the Redis commands per verification of each run."""
    per_second = 150.0
    count = max(100, int(per_second * bench.seconds))
    client = redis.Redis.from_url(bench.started.redis_url, decode_responses=True)
    try:
        with project_worker(bench, 0):
            drive_project(bench.started, bench.phones.take(max(50, count // 4)), "rw", 0, CPUS, per_second)
            bench.say(f"no replica: {count} verifications at {per_second:.0f}/s")
            alone = _commands_during(client, lambda: _steady(bench, "rn", count, per_second))
            with _replica_of(bench.started.redis_url, client):
                # Each process reads INFO replication at most once a second while it claims.
                drive_project(
                    bench.started, bench.phones.take(max(50, count // 4)), "rx", 0, CPUS, per_second
                )
                bench.say(f"one replica: {count} verifications at {per_second:.0f}/s")
                replicated = _commands_during(client, lambda: _steady(bench, "ry", count, per_second))
    finally:
        client.close()
    runs = {"alone": alone, "replica": replicated}
    return {
        "per_second": per_second,
        **{
            name: {
                **_summary(run),
                "wait_per_verification": round(ran["wait"] / max(run.count, 1), 2),
                "info_per_verification": round(ran["info"] / max(run.count, 1), 3),
                "commands_per_verification": round(ran.total() / max(run.count, 1), 1),
            }
            for name, (run, ran) in runs.items()
        },
        "overhead_p50_ms": replicated[0].percentile(50) - alone[0].percentile(50),
        "overhead_p99_ms": replicated[0].percentile(99) - alone[0].percentile(99),
    }


def _steady(bench: Bench, label: str, count: int, per_second: float) -> Run:
    return drive_project(bench.started, bench.phones.take(count), label, 0, CPUS, per_second)


def _commands_during(client: redis.Redis, action: Callable[[], Run]) -> tuple[Run, Counter[str]]:
    """The run, and the commands Redis ran meanwhile by name (functions' own included)."""
    client.config_resetstat()
    run = action()
    return run, commands_ran(client)


@contextlib.contextmanager
def _replica_of(redis_url: str, primary: redis.Redis) -> Iterator[None]:
    """A redis-server replicating the bench's, in sync, for as long as the block runs."""
    folder = Path(tempfile.mkdtemp(prefix="flashcall-bench-replica-"))
    port = str(urlsplit(redis_url).port or 6379)
    try:
        with redis_server(
            folder, name="replica", args=["--replicaof", "127.0.0.1", port, "--dir", str(folder)]
        ):
            deadline = time.monotonic() + 30
            while not _in_sync(primary):
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not catch up with the bench's Redis in 30 s")
                time.sleep(0.05)
            yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _in_sync(primary: redis.Redis) -> bool:
    info = primary.info("replication")
    replicas = [value for name, value in info.items() if name.startswith("slave")]
    return bool(replicas) and all(
        replica["state"] == "online" and int(replica["offset"]) >= int(info["master_repl_offset"])
        for replica in replicas
    )


def redis_commands(bench: Bench, worker: ManagedProcess, count: int) -> dict[str, Any]:
    """What Redis does per verification from start to approved on the running worker, quiet
    but for it, seen twice, each time beside an idle stretch whose rate is left out. Under
    MONITOR: the commands (INFO commandstats), the round trips (commands clients sent, not
    ones a function called) and the commands each library function and broker script ran
    itself. Under SLOWLOG, logging every command a client sent: the microseconds each took."""
    set_latency(bench.started, 0)
    idle_seconds = max(1.5, bench.seconds / 2)
    clients = [
        redis.Redis.from_url(bench.started.redis_url, decode_responses=True, single_connection_client=True)
        for _ in range(3)
    ]
    client, producer, watcher = clients
    bench_only = {_address(each) for each in clients}
    watching = _address(watcher)
    # Every process that consumes messages heartbeats; the worker's other forks do not.
    processes = client.zcard(keys.heartbeats())

    def approve() -> None:
        _approve(bench.started, producer, watcher, bench.phones.take(count))

    try:
        idle = _monitored(client, lambda: time.sleep(idle_seconds))
        busy = _monitored(client, approve)
        idle_timed = _slowlogged(client, lambda: time.sleep(idle_seconds))
        timed = _slowlogged(client, approve)
    finally:
        for each in clients:
            each.close()
    # The producer contract is exactly three round trips: flashcall_start, flashcall_check and
    # the BLPOP for the reply (MONITOR does not show a BLPOP that blocked, so it is not counted
    # there). What the bench itself sends to find out when calls were delivered is not counted.
    producer_trips = PRODUCER_ROUND_TRIPS * count
    worker_trips = sum(
        _beyond(idle, busy, _worker(idle.sent, bench_only), _worker(busy.sent, bench_only)).values()
    )
    # The watcher only reads the stream to learn when calls were placed.
    ran = _beyond(idle, busy, idle.commands, busy.commands - Counter({"xread": busy.sent[watching]}))
    commands = sum(ran.values())
    top = sorted(ran.items(), key=lambda item: -item[1])[:TOP]
    idle_rate = idle.commands.total() / idle.seconds
    functions_usec = _beyond(idle_timed, timed, idle_timed.usec, timed.usec)
    inner = idle.inner | busy.inner
    inner_usec = _beyond(
        idle_timed,
        timed,
        Counter({name: idle_timed.command_usec[name] for name in inner}),
        Counter({name: timed.command_usec[name] for name in inner}),
    )
    return {
        "verifications": count,
        "commands_per_verification": round(commands / count, 1),
        "round_trips_per_verification": round((worker_trips + producer_trips) / count, 1),
        "worker_round_trips_per_verification": round(worker_trips / count, 1),
        "producer_round_trips_per_verification": round(producer_trips / count, 1),
        "idle_commands_per_second": round(idle_rate, 1),
        "processes": processes,
        "idle_commands_per_process_per_second": round(idle_rate / processes, 1),
        "top_commands_per_verification": [(name, round(n / count, 2)) for name, n in top],
        "functions": _functions(count, (idle, busy), (idle_timed, timed)),
        "functions_usec_per_verification": round(sum(functions_usec.values()) / count, 1),
        "their_commands_usec_per_verification": round(sum(inner_usec.values()) / count, 1),
        "their_commands_usec": [
            (name, round(usec / count, 1))
            for name, usec in sorted(inner_usec.items(), key=lambda item: -item[1])[:TOP]
        ],
        "idle_functions": _idle_functions(idle, idle_timed),
    }


def _functions(
    count: int, monitored: tuple[_Observed, _Observed], timed: tuple[_Observed, _Observed]
) -> list[dict[str, Any]]:
    """Per verification, the calls of each function and script, the commands they ran
    themselves and the microseconds they took: the costliest first."""
    calls = _beyond(*monitored, monitored[0].calls, monitored[1].calls)
    own = _beyond(*monitored, monitored[0].own, monitored[1].own)
    timed_calls = _beyond(*timed, timed[0].calls, timed[1].calls)
    usec = _beyond(*timed, timed[0].usec, timed[1].usec)
    names = sorted(calls.keys() | usec.keys(), key=lambda name: (-usec.get(name, 0), -own.get(name, 0)))
    return [
        {
            "name": name,
            "calls": round(calls.get(name, 0) / count, 2),
            "commands_per_call": _ratio_of(own.get(name, 0), calls.get(name, 0)),
            "commands": round(own.get(name, 0) / count, 1),
            "usec_per_call": _ratio_of(usec.get(name, 0), timed_calls.get(name, 0)),
            "usec": round(usec.get(name, 0) / count, 1),
        }
        for name in names[:TOP]
    ]


def _idle_functions(monitored: _Observed, timed: _Observed) -> list[dict[str, Any]]:
    """Per second of an idle worker, the calls of each function and script, their own
    commands and their microseconds: the most commands first."""
    names = sorted(
        monitored.calls.keys() | timed.calls.keys(),
        key=lambda name: (-monitored.own[name], -timed.usec[name]),
    )
    return [
        {
            "name": name,
            "calls_per_second": round(monitored.calls[name] / monitored.seconds, 2),
            "commands_per_second": round(monitored.own[name] / monitored.seconds, 1),
            "usec_per_second": round(timed.usec[name] / timed.seconds, 1),
        }
        for name in names[:TOP]
    ]


def _ratio_of(part: float, whole: float) -> float | None:
    return round(part / whole, 1) if whole >= 1 else None


@dataclass
class _Observed:
    """What Redis did while an action ran."""

    seconds: float
    commands: Counter[str] = field(default_factory=Counter)
    """By name, functions' own included (INFO commandstats)."""
    sent: Counter[str] = field(default_factory=Counter)
    """Commands clients sent (not functions), by client address (MONITOR)."""
    calls: Counter[str] = field(default_factory=Counter)
    """Calls of each library function and broker script (see `script_called`)."""
    own: Counter[str] = field(default_factory=Counter)
    """Commands each of them ran itself (MONITOR)."""
    usec: Counter[str] = field(default_factory=Counter)
    """Microseconds each of them took (SLOWLOG)."""
    inner: set[str] = field(default_factory=set)
    """The names of the commands functions and scripts ran (MONITOR)."""
    command_usec: Counter[str] = field(default_factory=Counter)
    """Microseconds Redis spent in each command by name, functions' own included (INFO
    commandstats)."""


def _beyond(
    idle: _Observed, busy: _Observed, at_idle: Counter[str], at_busy: Counter[str]
) -> dict[str, float]:
    """`at_busy` less what `at_idle`'s rate comes to over as long (none below zero)."""
    share = busy.seconds / idle.seconds
    return {name: max(0.0, n - at_idle[name] * share) for name, n in at_busy.items()}


def _worker(sent: Counter[str], bench_only: set[str]) -> Counter[str]:
    return Counter({address: n for address, n in sent.items() if address not in bench_only})


def _address(client: redis.Redis) -> str:
    return cast(str, cast(dict[str, Any], client.client_info())["addr"])


_CONSUMER_ID = re.compile(r"__acks__\.[^.]+\.")


def script_called(command: str) -> str | None:
    """The library function or broker script a command calls: the function's name, Dramatiq's
    dispatch script with its command, or the SHA1 of another script with its first key (the
    consumer's id left out); None for any other command."""
    words = command.split(" ", 5)
    verb = words[0].upper()
    if verb in ("FCALL", "FCALL_RO") and len(words) > 1:
        return words[1]
    if verb not in ("EVALSHA", "EVALSHA_RO") or len(words) < 3:
        return None
    if words[2] == "0" or len(words) < 4:
        return f"script {words[1][:8]}"
    if words[3] == keys.BROKER_NAMESPACE and len(words) > 4:
        return f"dramatiq {words[4]}"
    return f"script {words[1][:8]} on {_CONSUMER_ID.sub('__acks__.*.', words[3])}"


def _approve(started: LocalStack, producer: redis.Redis, watcher: redis.Redis, phones: list[str]) -> None:
    """Start every verification, wait for its call, and check the code the phone got."""
    pipe = producer.pipeline(transaction=False)
    prefix = f"cmd-{time.time_ns()}-"
    for n, phone in enumerate(phones):
        functions.start(json.dumps({"id": f"{prefix}{n}", "phone": "+" + phone})).queue(pipe)
    pipe.execute()
    delivered: set[str] = set()
    cursor = "0-0"
    deadline = time.time() + 120
    while len(delivered) < len(phones) and time.time() < deadline:
        for _, entries in cast(list[Any], watcher.xread({keys.EVENTS: cursor}, block=1000) or []):
            for entry_id, fields in entries:
                cursor = entry_id
                if fields["event"] == "delivered" and fields["id"].startswith(prefix):
                    delivered.add(fields["id"])
    with httpx.Client(base_url=started.sandbox_url, timeout=5) as sandbox:
        for n, phone in enumerate(phones):
            code = inbox(sandbox, phone)["code"]
            reply = functions.check(json.dumps({"id": f"{prefix}{n}", "code": code})).run(producer)
            answer = producer.blpop([reply], 5)
            if answer is None or json.loads(answer[1])["status"] != "approved":
                raise RuntimeError(f"verification {prefix}{n} was not approved: {answer}")


def _monitored(client: redis.Redis, action: Callable[[], None]) -> _Observed:
    """Commands Redis ran during `action`, and under MONITOR who sent them and what each
    function call ran itself: Redis shows a script's FCALL or EVALSHA before the commands
    the script runs (FCALL from Redis 7.0.6 on)."""
    seen = _Observed(0.0)
    stop = f"bench-monitor-stop-{time.time_ns()}"
    ready = threading.Event()

    def watch() -> None:
        calling: str | None = None
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            ready.set()
            while True:
                command = monitor.next_command()
                if stop in command["command"]:
                    return
                if command["client_type"] == "lua":
                    if calling is not None:
                        seen.own[calling] += 1
                    seen.inner.add(command["command"].split(" ", 1)[0].lower())
                    continue
                seen.sent[f"{command['client_address']}:{command['client_port']}"] += 1
                calling = script_called(command["command"])
                if calling is not None:
                    seen.calls[calling] += 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait(5)
    client.config_resetstat()
    began = time.monotonic()
    action()
    seen.seconds = time.monotonic() - began
    seen.commands = commands_ran(client) - Counter({"config|resetstat": 1})
    client.echo(stop)
    watcher.join(30)
    return seen


def _command_usec(client: redis.Redis) -> Counter[str]:
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return Counter({name.removeprefix("cmdstat_"): values["usec"] for name, values in stats.items()})


def _slowlogged(client: redis.Redis, action: Callable[[], None]) -> _Observed:
    """The calls of functions and scripts during `action`, and how long each took, from
    SLOWLOG logging every command (what Redis times for INFO commandstats, per call)."""
    kept = {
        name: str(client.config_get(name)[name]) for name in ("slowlog-log-slower-than", "slowlog-max-len")
    }
    client.config_set("slowlog-max-len", SLOWLOG_LEN)
    client.slowlog_reset()
    client.config_set("slowlog-log-slower-than", 0)
    spent = _command_usec(client)
    began = time.monotonic()
    try:
        action()
    finally:
        client.config_set("slowlog-log-slower-than", kept["slowlog-log-slower-than"])
    seen = _Observed(time.monotonic() - began, command_usec=_command_usec(client) - spent)
    # Raw: redis-py's SLOWLOG GET parser fails on a client that decodes responses.
    entries = cast(list[list[Any]], client.execute_command("SLOWLOG", "GET", "-1"))  # type: ignore[no-untyped-call]
    client.slowlog_reset()
    client.config_set("slowlog-max-len", kept["slowlog-max-len"])
    if len(entries) >= SLOWLOG_LEN:
        raise RuntimeError(f"SLOWLOG filled up ({SLOWLOG_LEN} entries): some calls went untimed")
    # An entry: id, when, microseconds, the command's words, client address, client name.
    for _, _, usec, words, *_ in entries:
        calling = script_called(" ".join(words))
        if calling is not None:
            seen.calls[calling] += 1
            seen.usec[calling] += int(usec)
    return seen


def sandbox_capacity(bench: Bench, project_rate: float) -> dict[str, Any]:
    """Requests per second the sandbox answers on VoicePassword's send endpoint with nothing
    else running, against the project's best rate."""
    reset(bench.started, 0)
    url = bench.started.provider_urls["voicepassword"] + "/api/voice-password/send/"
    seconds = max(2.0, bench.seconds / 2)
    served = asyncio.run(_hammer(url, seconds, concurrency=256))
    return {
        "requests_per_second": round(served / seconds, 1),
        "times_project_rate": round(served / seconds / project_rate, 1) if project_rate else None,
    }


async def _hammer(url: str, seconds: float, concurrency: int) -> int:
    served = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": "sandbox-voicepassword-key"}

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal served
        while time.monotonic() < deadline:
            body = {"number": f"7998{n:03d}{served % 10000:04d}", "flashcall": {"code": "1234"}}
            async with session.post(url, json=body, headers=headers) as answer:
                await answer.read()
            served += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session, n) for n in range(concurrency)))
    return served


def profile(bench: Bench, latency_ms: int = 0) -> dict[str, Any]:
    """py-spy on a verification process and on the check process under the load, from start
    to approved (a simulated user types every code, routing.yaml as shipped): where their
    CPU goes."""
    # The venv's own py-spy, when `make bench` runs outside an activated venv.
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed (make bench installs it)"}
    count = bench.size(_APPROVAL_RATE[latency_ms])
    seconds = max(3, int(bench.seconds * 0.7))
    folder = Path(tempfile.mkdtemp(prefix="flashcall-profile-"))
    recorders: dict[str, subprocess.Popen[bytes]] = {}
    with routed(bench, REPO_ROUTING), project_worker(bench, latency_ms) as worker:
        pids = worker_pids(worker)
        roles = {
            "verification": next(pid for pid in pids if is_verification_process(pid)),
            "check": next(pid for pid in pids if is_verification_process(pid) is False),
        }
        for role, pid in roles.items():
            argv = [spy, "record", "--format", "raw", "--gil", "--nonblocking", "--rate", "200"]
            argv += ["--duration", str(seconds), "--pid", str(pid), "--output", str(folder / role)]
            recorders[role] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        bench.say(
            f"profiling processes {roles} for {seconds} s under a {latency_ms} ms load, start to approved"
        )
        drive_project(bench.started, bench.phones.take(count), "prof", latency_ms, CPUS, goal="approved")
        errors = {role: recorder.communicate(timeout=seconds + 30)[1] for role, recorder in recorders.items()}
    profiles: dict[str, Any] = {"latency_ms": latency_ms}
    for role, recorder in recorders.items():
        output = folder / role
        if recorder.returncode != 0 or not output.exists():
            profiles[role] = {
                "error": f"py-spy failed: {errors[role].decode(errors='replace').strip()[-300:]}"
            }
        else:
            profiles[role] = summarize_profile(output.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    return profiles


def summarize_profile(stacks: str, top: int = 15) -> dict[str, Any]:
    """py-spy's collapsed stacks ("frame;frame;frame count") as the functions that hold the
    GIL themselves (self) and the project's functions with what they call (inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in stacks.splitlines():
        frames, _, count_text = line.rpartition(" ")
        if not frames or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        names = [_function(frame) for frame in frames.split(";")]
        own[names[-1]] += count
        for name in set(names):
            if name.startswith("worker/") or "/worker/" in name:
                inclusive[name] += count
    share = 100 / samples if samples else 0.0
    return {
        "samples": samples,
        "self": [(name, round(count * share, 1)) for name, count in own.most_common(top)],
        "inclusive": [(name, round(count * share, 1)) for name, count in inclusive.most_common(top)],
    }


def _function(frame: str) -> str:
    """'send (worker/verification/verifier.py:120)' -> 'worker/verification/verifier.py:send'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1].lstrip("/")
            if marker == "/lib/python3":
                path = path.split("/", 1)[-1]
            break
    else:
        if "/worker/" in path:
            path = "worker/" + path.split("/worker/", 1)[1]
    return f"{path}:{name}"
