"""The HTTP API's part of the benchmark (issue 22): status reads per second on one core, and
a check over the API beside the same check over Redis directly.

Status reads: one `flashcall api` process pinned to one core, a load generator (aiohttp,
keep-alive connections) pinned to another with Redis, the sandbox and the worker, so that
the API's core is the API's alone. The figures are the reads per second, the API's CPU per
read, and how busy each side was: an API near 100% of its core and a generator below it
mean the API is what the rate measures.

Checks: pairs of checks, one over the API (POST /v1/verifications/{id}/check) and one over
Redis (FCALL flashcall_check, then BLPOP), each on a verification of its own, the two
started together, each from a process of its own; on a quiet worker, and under the load of
the 500 ms throughput run.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client as http_client
import json
import multiprocessing
import os
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import redis

from bench.harness import (
    cpu_seconds,
    drive_project,
    inbox,
    median,
    open_verifications,
    percentile,
    set_latency,
)
from bench.scenarios import QUIET_PAUSE_S, QUIET_SETTLE_S, WRONG_CODE, Bench, project_worker
from flashcall_dev.stack import ManagedProcess
from worker.redis import functions

API_KEY = "bench-api-key-0123456789abcdefghijklmnopqr"
"""The bench's client key (at least 32 characters), named `bench`."""
CONNECTIONS = 32
"""Keep-alive connections of the status-read generator: enough requests in flight to keep
the API's loop busy, few enough that none waits long for its turn."""
LOAD_LATENCY_MS = 500
"""The provider latency of the loaded checks: the 500 ms throughput run's."""
LOAD_RATE = 750
"""Verifications per second the worker reaches at 500 ms (to size the load)."""
PAIR_S = 0.025
"""What a pair of checks under load takes at most on average, pauses included: the load
lasts long enough for all of them."""
LOADED_PAUSE_S = 0.002
TIMED_PAIRS_LIMIT_S = 600
"""The longest the timed pairs may take before the part gives up on them."""


def api_part(bench: Bench, *, checks: int, loaded_checks: int, read_seconds: float) -> dict[str, Any]:
    """Status reads for `read_seconds`, then `checks` pairs of checks on a quiet worker and
    `loaded_checks` under load, with one worker and one API process throughout."""
    with project_worker(bench, 0) as worker:
        server, url = bench.started.start_api(keys=f"bench:{API_KEY}", name="api-bench")
        try:
            reads = status_reads(bench, server, worker, url, read_seconds)
            quiet = quiet_pairs(bench, url, checks)
            loaded = loaded_pairs(bench, url, loaded_checks)
        finally:
            server.stop()
            bench.started.processes.remove(server)
    return {"status_reads": reads, "checks": {"quiet": quiet, "load": loaded}}


def cores() -> tuple[set[int], set[int]] | None:
    """The API's core and the generator's (everything else), or None on one core."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    return {allowed[-1]}, set(allowed[:-1])


def pin(pid: int, to: set[int]) -> None:
    """Every thread of the process: sched_setaffinity moves only the thread it is given."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task.name), to)


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += _descendants(int(child))
    return found


def _core_busy(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies of each core so far, from /proc/stat: everyone's, not only ours."""
    seen: dict[int, tuple[int, int]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(value) for value in values]
            idle = ticks[3] + ticks[4]
            seen[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return seen


def _share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> float:
    busy = sum(after[cpu][0] - before[cpu][0] for cpu in after)
    total = sum(after[cpu][1] - before[cpu][1] for cpu in after)
    return round(busy / total, 3) if total else float("nan")


@contextlib.contextmanager
def _pinned(bench: Bench, server: ManagedProcess, worker: ManagedProcess) -> Iterator[set[int] | None]:
    """The API on its core and the stack's other processes (Redis, sandbox, worker) off it,
    for as long as the block runs; yields the generator's cores."""
    split = cores()
    if split is None:
        yield None
        return
    api_core, rest = split
    everything = api_core | rest
    others = _descendants(worker.process.pid)
    others += [process.process.pid for process in bench.started.processes if process is not server]
    if bench.started.sandbox:
        others.append(bench.started.sandbox.process.pid)
    client = redis.Redis.from_url(bench.started.redis_url)
    others.append(int(client.info("server")["process_id"]))
    client.close()
    pin(server.process.pid, api_core)
    for pid in others:
        with contextlib.suppress(OSError):
            pin(pid, rest)
    try:
        yield rest
    finally:
        for pid in [server.process.pid, *others]:
            with contextlib.suppress(OSError):
                pin(pid, everything)


def status_reads(
    bench: Bench, server: ManagedProcess, worker: ManagedProcess, url: str, seconds: float
) -> dict[str, Any]:
    """GET /v1/verifications/{id} on open verifications, as fast as the API answers them."""
    set_latency(bench.started, 0)
    ids = open_verifications(bench.started, bench.phones.take(200), "api").ids
    split = cores()
    bench.say(f"API status reads, {CONNECTIONS} connections, {seconds:g} s, cores (api, rest): {split}")
    with _pinned(bench, server, worker) as generator_cores:
        api_pid = server.process.pid
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as generator:
            # Imports and connections first: the timed run starts on a warm generator.
            generator.submit(_read_statuses, url, ids, 0.5, generator_cores).result()
            used = cpu_seconds([api_pid])
            watched = split[0] | split[1] if split else set()
            busy = _core_busy(watched)
            done = generator.submit(_read_statuses, url, ids, seconds, generator_cores).result()
            api_cpu = cpu_seconds([api_pid]) - used
            after = _core_busy(watched)
    answered = done["statuses"]
    if set(answered) != {"200"}:
        raise RuntimeError(f"status reads were answered {answered}")
    count = done["count"]
    return {
        "connections": CONNECTIONS,
        "pinned": split is not None,
        "api_cores": sorted(split[0]) if split else [],
        "generator_cores": sorted(split[1]) if split else [],
        "count": count,
        "seconds": round(done["seconds"], 2),
        "requests_per_second": round(count / done["seconds"], 1),
        "api_cpu_ms_per_request": round(api_cpu * 1000 / max(count, 1), 3),
        "api_cpu_share": round(api_cpu / done["seconds"], 3),
        "generator_cpu_share": round(done["cpu"] / done["seconds"], 3),
        "api_core_busy": _share({c: busy[c] for c in split[0]}, {c: after[c] for c in split[0]})
        if split
        else None,
        "generator_cores_busy": _share({c: busy[c] for c in split[1]}, {c: after[c] for c in split[1]})
        if split
        else None,
        "p50_ms": done["p50_ms"],
        "p99_ms": done["p99_ms"],
    }


def _read_statuses(url: str, ids: list[str], seconds: float, on: set[int] | None) -> dict[str, Any]:
    if on:
        os.sched_setaffinity(0, on)
    return asyncio.run(_read_for(url, ids, seconds))


async def _read_for(url: str, ids: list[str], seconds: float) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    taken: list[float] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(base_url=url, connector=connector, headers=headers) as session:

        async def reader(n: int) -> None:
            while time.monotonic() < deadline:
                began = time.perf_counter()
                async with session.get(f"/v1/verifications/{ids[n % len(ids)]}") as answer:
                    await answer.read()
                taken.append(time.perf_counter() - began)
                statuses[str(answer.status)] += 1
                n += CONNECTIONS

        cpu = time.process_time()
        began = time.monotonic()
        deadline = began + seconds
        await asyncio.gather(*(reader(n) for n in range(CONNECTIONS)))
        elapsed = time.monotonic() - began
        cpu = time.process_time() - cpu
    return {
        "count": statuses.total(),
        "seconds": elapsed,
        "cpu": cpu,
        "statuses": dict(statuses),
        "p50_ms": round(median(taken) * 1000, 2),
        "p99_ms": round(percentile(taken, 99) * 1000, 2),
    }


Check = tuple[str, str]
Timed = tuple[str, list[tuple[float, str]], str]
"""A side's checks, each (milliseconds, result), and its failure (empty when none)."""


def quiet_pairs(bench: Bench, url: str, count: int) -> dict[str, Any]:
    """The right code, `count` pairs of checks on the quiet worker, QUIET_PAUSE_S apart."""
    set_latency(bench.started, 0)
    opened = open_verifications(bench.started, bench.phones.take(2 * count), "apiq")
    with httpx.Client(base_url=bench.started.sandbox_url, timeout=5) as sandbox:
        checks = [(v, inbox(sandbox, opened.phone(v))["code"]) for v in opened.ids]
    bench.say(f"API and Redis checks on the quiet worker: {count} of each")
    time.sleep(QUIET_SETTLE_S)
    timed = time_pairs(bench.started.redis_url, url, checks[0::2], checks[1::2], QUIET_PAUSE_S)
    return _compared(timed, expect={"approved"})


def loaded_pairs(bench: Bench, url: str, count: int) -> dict[str, Any]:
    """A wrong code, `count` pairs of checks while the worker places the 500 ms run's calls."""
    set_latency(bench.started, 0)
    opened = open_verifications(bench.started, bench.phones.take(2 * count), "apil").ids
    wrong = [(verification, WRONG_CODE) for verification in opened]
    size = max(50, int(LOAD_RATE * max(bench.seconds, count * PAIR_S)))
    set_latency(bench.started, LOAD_LATENCY_MS)
    bench.say(
        f"API and Redis checks under a {LOAD_LATENCY_MS} ms load of {size} verifications: {count} of each"
    )
    load = threading.Thread(
        target=drive_project,
        args=(bench.started, bench.phones.take(size), "apiload", LOAD_LATENCY_MS, 0),
    )
    load.start()
    try:
        time.sleep(min(2.0, bench.seconds / 5))
        timed = time_pairs(bench.started.redis_url, url, wrong[0::2], wrong[1::2], LOADED_PAUSE_S)
    finally:
        load.join()
    return {**_compared(timed, expect={"rejected"}), "verifications": size}


def _compared(timed: dict[str, list[tuple[float, str]]], expect: set[str]) -> dict[str, Any]:
    for side, taken in timed.items():
        answers = {answer for _, answer in taken}
        if answers != expect:
            raise RuntimeError(f"checks over {side} were answered {answers}, not {expect}")
    spread = {side: _spread([ms for ms, _ in taken]) for side, taken in timed.items()}
    return {
        **spread,
        "difference_p50_ms": round(spread["api"]["p50_ms"] - spread["redis"]["p50_ms"], 2),
        "difference_p99_ms": round(spread["api"]["p99_ms"] - spread["redis"]["p99_ms"], 2),
    }


def _spread(times: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(times),
        **{f"p{p}_ms": round(percentile(times, p), 2) for p in (50, 95, 99)},
    }


def time_pairs(
    redis_url: str,
    api_url: str,
    over_redis: Sequence[Check],
    over_api: Sequence[Check],
    pause: float | tuple[float, float],
) -> dict[str, list[tuple[float, str]]]:
    """Each pair's two checks at the same moment, one over Redis and one over the API, each
    from a process of its own, as check_round_trips times them; `pause` seconds (or a seeded
    draw between two bounds) between two pairs.

    Started together, the two checks of a pair meet the same machine: on a shared VM whose
    two cores the load keeps busy, a check's tail is a stall of some tens of milliseconds
    (a process waiting for a core, Redis busy with a longer function) that holds whatever
    is in flight, and two checks taken one after the other met different stalls, so that
    the difference of their p99s was mostly which side the slowest stalls happened to hit."""
    context = multiprocessing.get_context("spawn")
    together = context.Barrier(2)
    answers: multiprocessing.Queue[Timed] = context.Queue()
    sides = [
        context.Process(target=_time_side, args=(side, url, list(checks), pause, together, answers))
        for side, url, checks in (("redis", redis_url, over_redis), ("api", api_url, over_api))
    ]
    for process in sides:
        process.start()
    try:
        timed = [answers.get(timeout=TIMED_PAIRS_LIMIT_S) for _ in sides]
    finally:
        for process in sides:
            process.join(5)
            if process.is_alive():
                process.kill()
    failed = [f"over {side}: {error}" for side, _, error in timed if error]
    if failed:
        raise RuntimeError(f"timed checks failed {'; '.join(failed)}")
    return {side: taken for side, taken, _ in timed}


def _time_side(
    side: str,
    url: str,
    checks: list[Check],
    pause: float | tuple[float, float],
    together: threading.Barrier,
    answers: multiprocessing.Queue[Timed],
) -> None:
    check, close = _checker(side, url)
    # Both sides draw the same pauses, so that they reach each pair's barrier together.
    pauses = random.Random(22)  # noqa: S311 - a typist's rhythm, not a secret
    taken: list[tuple[float, str]] = []
    error = ""
    try:
        for verification, code in checks:
            together.wait(timeout=30)
            began = time.perf_counter()
            result = check(verification, code)
            taken.append(((time.perf_counter() - began) * 1000, result))
            time.sleep(pause if isinstance(pause, float | int) else pauses.uniform(*pause))
    except Exception as failure:  # noqa: BLE001 - reported to the parent, which raises it
        # The other side stops at its next barrier instead of waiting out its timeout.
        together.abort()
        error = repr(failure)
    finally:
        close()
    answers.put((side, taken, error))


def _checker(side: str, url: str) -> tuple[Callable[[str, str], str], Callable[[], None]]:
    """How one side checks a code, connected and warm (the first request's connection and
    imports are not what a check costs), and how it closes."""
    if side == "redis":
        client = redis.Redis.from_url(url, decode_responses=True)
        client.ping()

        def by_redis(verification: str, code: str) -> str:
            key = functions.check(json.dumps({"id": verification, "code": code})).run(client)
            answer = client.blpop([key], 5)
            if answer is None:
                raise RuntimeError("a check over Redis got no answer within 5 s")
            result: str = json.loads(answer[1])["result"]
            return result

        return by_redis, client.close

    # The standard library's client, kept alive: httpx spends about 1.3 ms of CPU a request
    # here (http.client 0.45 ms), the caller's cost rather than the API's, and under load a
    # CPU millisecond of the probe's is several of the figure.
    address = urllib.parse.urlsplit(url)
    http = http_client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    http.request("GET", "/health")
    http.getresponse().read()

    def by_api(verification: str, code: str) -> str:
        path = f"/v1/verifications/{verification}/check"
        http.request("POST", path, body=json.dumps({"code": code}), headers=headers)
        answer = http.getresponse()
        text = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"a check over the API was answered {answer.status}: {text!r}")
        result: str = json.loads(text)["result"]
        return result

    return by_api, http.close
