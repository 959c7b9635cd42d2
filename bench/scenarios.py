"""The benchmark's scenarios. Each one returns plain data for bench/results.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
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
    ROUTING,
    Phones,
    Run,
    check_round_trips,
    cpu_seconds,
    drive_baseline,
    drive_project,
    is_verification_process,
    median,
    open_verifications,
    peak_rss_mb,
    percentile,
    reset,
    set_latency,
    start_project,
    worker_pids,
)
from flashcall_dev.stack import LocalStack, ManagedProcess, redis_server
from worker.core import keys
from worker.redis import functions

PRODUCER_ROUND_TRIPS = 3
BARE_THREADS = 8
"""bare_actor's threads, as ../shared/bench measured it (more threads do not help it)."""
BARE_ASYNC_THREADS = 256
"""bare_async_actor's threads, as ../shared/bench runs it."""

# Rough rates, only to size each run so that it lasts `Bench.seconds`.
_PROJECT_RATE = {0: 1000, 100: 950, 500: 750, 2000: 430}
_BARE_ACTOR_RATE = 1050
_BARE_ASYNC_RATE = {0: 900, 100: 850, 500: 500, 2000: 250}


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
        workers_before, sandbox_before = cpu_seconds(worker_pids(worker)), cpu_seconds(sandbox_pid)
        helper.start()
        run = drive_project(bench.started, bench.phones.take(count), "tp", latency_ms, processes)
        helper.join()
        result["project"] = _summary(run)
        result["worker_cpu_ms_per_verification"] = round(
            (cpu_seconds(worker_pids(worker)) - workers_before) * 1000 / max(run.count, 1), 3
        )
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


def checks_under_load(bench: Bench, count: int, latency_ms: int) -> Callable[[], dict[str, Any]]:
    """Before the load: open 2 x `count` verifications and time `count` checks on the idle
    worker. Returned: what times the other `count` checks while the load runs."""
    set_latency(bench.started, 0)
    opened = open_verifications(bench.started, bench.phones.take(2 * count), "chk")
    idle = check_round_trips(bench.started, opened[:count], pause=0.005)
    set_latency(bench.started, latency_ms)

    def during() -> dict[str, Any]:
        time.sleep(min(2.0, bench.seconds / 5))
        loaded = check_round_trips(bench.started, opened[count:], pause=bench.seconds / count / 2)
        return {"checks": {"idle": _spread(idle), "load": _spread(loaded)}}

    return during


def _spread(taken: list[float]) -> dict[str, Any]:
    return {"n": len(taken), "p50_ms": round(median(taken), 2), "p99_ms": round(percentile(taken, 99), 2)}


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
    bench.started.routing_path = routing
    try:
        with project_worker(bench, 0) as _:
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
        bench.started.routing_path = ROUTING
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
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return run, Counter({name.removeprefix("cmdstat_"): values["calls"] for name, values in stats.items()})


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


def redis_commands(bench: Bench, count: int) -> dict[str, Any]:
    """Commands per verification from start to approved: INFO commandstats over a run, less
    what the idle worker issues in as long, and the round trips among them (commands a
    client sent, not ones a function called), seen through MONITOR."""
    with project_worker(bench, 0):
        client = redis.Redis.from_url(bench.started.redis_url, decode_responses=True)
        time.sleep(2)
        idle_seconds = max(3.0, bench.seconds / 2)
        idle_total, idle_trips, _ = _observe(bench, client, lambda: time.sleep(idle_seconds))
        producer = redis.Redis.from_url(
            bench.started.redis_url, decode_responses=True, single_connection_client=True
        )
        watcher = redis.Redis.from_url(
            bench.started.redis_url, decode_responses=True, single_connection_client=True
        )
        bench_only = {_address(producer), _address(watcher)}
        phones = bench.phones.take(count)
        began = time.time()
        total, trips, by_client = _observe(
            bench, client, lambda: _approve(bench.started, producer, watcher, phones)
        )
        seconds = time.time() - began
        producer.close()
        watcher.close()
        client.close()
    idle_rate = idle_total.total() / idle_seconds
    idle_trip_rate = idle_trips / idle_seconds
    # The producer contract is exactly three round trips: flashcall_start, flashcall_check and
    # the BLPOP for the reply (MONITOR does not show a BLPOP that blocked, so it is not counted
    # there). What the bench itself sends to find out when calls were delivered is not counted.
    producer_trips = PRODUCER_ROUND_TRIPS * count
    worker_trips = trips - sum(by_client[address] for address in bench_only) - idle_trip_rate * seconds
    commands = total.total() - idle_rate * seconds
    top = [(name, round(calls / count, 2)) for name, calls in total.most_common(12)]
    return {
        "verifications": count,
        "commands_per_verification": round(commands / count, 1),
        "round_trips_per_verification": round((worker_trips + producer_trips) / count, 1),
        "worker_round_trips_per_verification": round(worker_trips / count, 1),
        "producer_round_trips_per_verification": round(producer_trips / count, 1),
        "idle_commands_per_second": round(idle_rate, 1),
        "top_commands_per_verification": top,
    }


def _address(client: redis.Redis) -> str:
    return cast(str, cast(dict[str, Any], client.client_info())["addr"])


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
            code = sandbox.get(f"/_sandbox/inbox/{phone}").json()["messages"][-1]["code"]
            reply = functions.check(json.dumps({"id": f"{prefix}{n}", "code": code})).run(producer)
            answer = producer.blpop([reply], 5)
            if answer is None or json.loads(answer[1])["status"] != "approved":
                raise RuntimeError(f"verification {prefix}{n} was not approved: {answer}")


def _observe(
    bench: Bench, client: redis.Redis, action: Callable[[], None]
) -> tuple[Counter[str], int, Counter[str]]:
    """Commands Redis ran during `action` (by name), how many of them clients sent, and by whom."""
    sent: Counter[str] = Counter()
    stop = f"bench-monitor-stop-{time.time_ns()}"
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            ready.set()
            while True:
                command = monitor.next_command()
                if stop in command["command"]:
                    return
                if command["client_type"] != "lua":
                    sent[f"{command['client_address']}:{command['client_port']}"] += 1

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait(5)
    client.config_resetstat()
    action()
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    client.echo(stop)
    watcher.join(30)
    ran = Counter(
        {
            name.removeprefix("cmdstat_"): values["calls"]
            for name, values in stats.items()
            if name not in ("cmdstat_info", "cmdstat_config|resetstat", "cmdstat_monitor")
        }
    )
    return ran, sum(sent.values()) - 2, sent


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


def profile(bench: Bench, latency_ms: int = 500) -> dict[str, Any]:
    """py-spy on one worker process under the load: where its CPU goes."""
    # The venv's own py-spy, when `make bench` runs outside an activated venv.
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed (make bench installs it)"}
    count = bench.size(_PROJECT_RATE[latency_ms])
    folder = Path(tempfile.mkdtemp(prefix="flashcall-profile-"))
    with project_worker(bench, latency_ms) as worker:
        pid = next(child for child in worker_pids(worker) if is_verification_process(child))
        output = folder / "profile.txt"
        seconds = max(3, int(bench.seconds * 0.7))
        argv = [spy, "record", "--format", "raw", "--gil", "--nonblocking", "--rate", "200"]
        argv += ["--duration", str(seconds), "--pid", str(pid), "--output", str(output)]
        recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603
        bench.say(f"profiling worker process {pid} for {seconds} s under a {latency_ms} ms load")
        drive_project(bench.started, bench.phones.take(count), "prof", latency_ms, CPUS)
        _, errors = recorder.communicate(timeout=seconds + 30)
    if recorder.returncode != 0 or not output.exists():
        return {"error": f"py-spy failed: {errors.decode(errors='replace').strip()[-300:]}"}
    stacks = output.read_text()
    shutil.rmtree(folder, ignore_errors=True)
    return summarize_profile(stacks)


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
