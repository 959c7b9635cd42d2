"""What every benchmark scenario needs: a stack, a worker, a load, and measurements.

The project and the bare Dramatiq baselines run against the same redis-server and the
same sandbox endpoint (VoicePassword's send URL), one after the other, with the same
number of worker processes. Throughput is counted from the first message enqueued to
the last one done, with the workers already running.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import platform
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import httpx
import redis

from bench.progress import Progress
from flashcall_dev.stack import LocalStack, ManagedProcess, local_stack
from worker.core import keys
from worker.redis import functions
from worker.redis.connections import sync_client

ROOT = Path(__file__).resolve().parent.parent
ROUTING = ROOT / "docs" / "examples" / "voicepassword.yaml"
BASELINES = Path(os.environ.get("FLASHCALL_BASELINE_DIR", ROOT / "bench" / "baselines"))
CPUS = os.cpu_count() or 1
LATENCIES = (0, 100, 500, 2000)
"""The provider latencies (ms) every run that targets hold to is made at."""
STALL_S = 15.0
"""A run ends when nothing more finished for this long: bare actors drop what fails."""
USER_BATCH = 100
"""Codes a simulated user types between two round trips to Redis (one pipeline of checks)."""

Goal = Literal["delivered", "approved"]


@dataclass
class Run:
    """One throughput measurement: `count` verifications reached the goal in `seconds`."""

    label: str
    latency_ms: int
    processes: int
    count: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    """start -> goal of each verification (project runs only)."""
    ids: list[str] = field(default_factory=list)
    """The verifications that reached the goal (project runs only)."""
    delivered_by: dict[str, str] = field(default_factory=dict)
    """The provider that delivered each verification (project runs only)."""
    phones: list[str] = field(default_factory=list)
    """The numbers, in the order of the verifications' ids (project runs only)."""
    requested: int = 0
    """How many were sent; more than `count` when some never finished (see STALL_S)."""
    sent: Counter[str] = field(default_factory=Counter)
    """The commands the benchmark sent Redis to follow the run: not the project's."""
    cpu_ms: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per finished one, of the worker's processes, Redis and the sandbox
    (baseline runs; the project's are measured around its run)."""

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def providers(self) -> Counter[str]:
        return Counter(self.delivered_by.values())

    def phone(self, verification: str) -> str:
        return self.phones[_number(verification)]

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@contextmanager
def stack(latency_ms: int, routing: Path = ROUTING) -> Iterator[LocalStack]:
    with local_stack(sandbox_latency_ms=latency_ms, routing_path=routing) as started:
        reset(started, latency_ms)
        yield started


def set_latency(started: LocalStack, latency_ms: int) -> None:
    httpx.post(f"{started.sandbox_url}/_sandbox/latency", json={"latency_ms": latency_ms}).raise_for_status()


def start_project(
    started: LocalStack, processes: int = CPUS, env: dict[str, str] | None = None
) -> ManagedProcess:
    """`flashcall worker` with its default threads, as an operator runs it."""
    return started.start_worker(processes=processes, threads=None, env=env)


class Phones:
    """Numbers no earlier run of the benchmark used (per-number limits apply)."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, count: int) -> list[str]:
        first, self._next = self._next, self._next + count
        return [f"7999{n:07d}" for n in range(first, first + count)]


def drive_project(
    started: LocalStack,
    phones: list[str],
    label: str,
    latency_ms: int,
    processes: int,
    per_second: float | None = None,
    *,
    goal: Goal = "delivered",
    request: Mapping[str, Any] | None = None,
) -> Run:
    """Start one verification per phone through FCALL flashcall_start (all at once, or
    `per_second`), with `request`'s fields, and wait until each reached the goal: its call
    placed ("delivered"), or the code its phone got typed by a simulated user and approved
    ("approved"). The rate runs from the first start to the last verification there."""
    client = redis.Redis.from_url(started.redis_url, decode_responses=True)
    last_id = cast(list[Any], client.xrevrange(keys.EVENTS, count=1))
    length = client.xlen(keys.EVENTS)
    sent: Counter[str] = Counter({"xrevrange": 1, "xlen": 1})
    cursor = last_id[0][0] if last_id else "0-0"
    prefix = f"{label}-{time.time_ns()}-"
    began = time.time()
    feeder = threading.Thread(
        target=_start_all, args=(started.redis_url, prefix, phones, per_second, request or {})
    )
    users = _Users(started, phones) if goal == "approved" else None
    # Reading every event as it comes costs the CPU the run is measured on (a bare actor's
    # run is followed by one counter): with no user to tell of deliveries, only the
    # stream's length is read until it holds the fewest events that every verification
    # reaching the goal makes.
    reading = users is not None
    enough = length + _FEWEST_EVENTS[goal] * len(phones)
    feeder.start()
    created: dict[str, int] = {}
    done: dict[str, int] = {}
    delivered: dict[str, str] = {}
    progressed = began
    first_length = length

    def reached() -> int:
        # While only the stream's length is read, it tells how many got there, near enough.
        return min(len(phones), max(len(done), (length - first_length) // _FEWEST_EVENTS[goal]))

    shown = Progress(f"{label}: {goal}", len(phones), reached, unit="verifications").start()
    try:
        while len(done) < len(phones) and time.time() - progressed < STALL_S:
            if not reading:
                time.sleep(0.05)
                grown = client.xlen(keys.EVENTS)
                sent["xlen"] += 1
                if grown != length:
                    length, progressed = grown, time.time()
                reading = length >= enough
                continue
            answer = cast(list[Any], client.xread({keys.EVENTS: cursor}, block=1000, count=5000) or [])
            sent["xread"] += 1
            cursor, finished = _take_events(answer, cursor, prefix, goal, created, delivered, done, users)
            if finished:
                progressed = time.time()
        while not reading:
            answer = cast(list[Any], client.xread({keys.EVENTS: cursor}, count=5000) or [])
            sent["xread"] += 1
            cursor, _ = _take_events(answer, cursor, prefix, goal, created, delivered, done, users)
            reading = not answer
    finally:
        shown.stop()
        if users:
            users.stop()
        feeder.join()
        client.close()
    latencies = [float(done[v] - created[v]) for v in done if v in created]
    return Run(
        label,
        latency_ms,
        processes,
        len(done),
        (max(done.values()) / 1000 - began) if done else progressed - began,
        latencies,
        sorted(done, key=_number),
        delivered,
        phones,
        requested=len(phones),
        sent=sent,
    )


_FEWEST_EVENTS: dict[Goal, int] = {"delivered": 3, "approved": 4}
"""created, attempt_started and delivered; approved after them."""


def _take_events(
    answer: list[Any],
    cursor: str,
    prefix: str,
    goal: Goal,
    created: dict[str, int],
    delivered: dict[str, str],
    done: dict[str, int],
    users: _Users | None,
) -> tuple[str, bool]:
    """The run's verifications in an XREAD answer, noted down: the cursor after it, and
    whether any reached the goal."""
    finished = False
    for _, entries in answer:
        for entry_id, fields in entries:
            cursor = entry_id
            verification = fields.get("id", "")
            if not verification.startswith(prefix):
                continue
            event = fields["event"]
            if event == "created":
                created[verification] = int(fields["at"])
            elif event == "delivered" and verification not in delivered:
                delivered[verification] = fields.get("provider", "")
                if users:
                    users.type_code(verification)
            if event == goal and verification not in done:
                done[verification] = int(fields["at"])
                finished = True
    return cursor, finished


class _Users:
    """The people behind a run's phones: each types the code their phone got as soon as
    the call is delivered (a thread of its own, a pipeline of checks per batch). Their
    answers stay on the reply keys: the `approved` events are what the run counts."""

    def __init__(self, started: LocalStack, phones: list[str]) -> None:
        self._phones = phones
        self._due: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread = ThreadPoolExecutor(max_workers=1)
        self._typing = self._thread.submit(self._type, started.redis_url, started.sandbox_url)

    def type_code(self, verification: str) -> None:
        self._due.put(verification)

    def stop(self) -> None:
        """Once every code was typed; raises what stopped the users, if anything did."""
        self._due.put(None)
        try:
            self._typing.result()
        finally:
            self._thread.shutdown()

    def _type(self, redis_url: str, sandbox_url: str) -> None:
        client = redis.Redis.from_url(redis_url)
        with httpx.Client(base_url=sandbox_url, timeout=5) as sandbox:
            batch: list[str | None] = []
            while None not in batch:
                batch = [self._due.get()]
                while batch[-1] is not None and len(batch) < USER_BATCH and not self._due.empty():
                    batch.append(self._due.get())
                pipe = client.pipeline(transaction=False)
                for verification in batch:
                    if verification is not None:
                        code = inbox(sandbox, self._phones[_number(verification)])["code"]
                        functions.check(json.dumps({"id": verification, "code": code})).queue(pipe)
                pipe.execute()
        client.close()


def inbox(sandbox: httpx.Client, phone: str) -> dict[str, Any]:
    """The last call or SMS the phone got in the sandbox: its provider, channel and code."""
    answer = sandbox.get(f"/_sandbox/inbox/{phone}")
    answer.raise_for_status()
    message: dict[str, Any] = answer.json()["messages"][-1]
    return message


def _number(verification: str) -> int:
    return int(verification.rsplit("-", 1)[1])


def _start_all(
    redis_url: str, prefix: str, phones: list[str], per_second: float | None, request: Mapping[str, Any]
) -> None:
    client = redis.Redis.from_url(redis_url)
    if per_second is None:
        pipe = client.pipeline(transaction=False)
        for n, phone in enumerate(phones):
            functions.start(_start_request(prefix, n, phone, request)).queue(pipe)
            if n % 200 == 199:
                pipe.execute()
        pipe.execute()
    else:
        began = time.perf_counter()
        for n, phone in enumerate(phones):
            time.sleep(max(0.0, began + n / per_second - time.perf_counter()))
            functions.start(_start_request(prefix, n, phone, request)).run(client)
    client.close()


def _start_request(prefix: str, n: int, phone: str, request: Mapping[str, Any]) -> str:
    return json.dumps({**request, "id": f"{prefix}{n}", "phone": "+" + phone})


def baselines_missing() -> str | None:
    """Why the baselines cannot run, if they cannot."""
    missing = [name for name in ("bare_actor.py", "bare_async_actor.py") if not (BASELINES / name).exists()]
    if missing:
        return f"{', '.join(missing)} not found in {BASELINES} (set FLASHCALL_BASELINE_DIR)"
    return None


def drive_baseline(
    started: LocalStack, module: str, threads: int, count: int, latency_ms: int, processes: int = CPUS
) -> Run:
    """A bare actor of ../shared/bench, pointed at the sandbox's VoicePassword endpoint."""
    url = started.redis_url.rsplit("/", 1)[0] + "/1"
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {
        **os.environ,
        "REDIS_URL": url,
        "UPSTREAM": started.provider_urls["voicepassword"] + "/api/voice-password/send/",
        "PYTHONPATH": str(BASELINES),
        "dramatiq_worker_timeout": "100",
    }
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        module,
        "--processes",
        str(processes),
        "--threads",
        str(threads),
    ]
    worker = started.spawn(f"baseline-{module}", argv, env)
    try:
        deadline = time.time() + 60
        while client.zcard("dramatiq:__heartbeats__") < processes and time.time() < deadline:
            time.sleep(0.05)
        before = machine_cpu(started, worker_pids(worker))
        sender = subprocess.Popen(  # noqa: S603 - argv built here
            [
                sys.executable,
                "-c",
                f"import {module} as b\nfor i in range({count}): b.send.send(i, '7999%07d' % i)",
            ],
            env=env,
            cwd=BASELINES,
        )
        began = last = time.time()
        done = 0
        with Progress(f"{module}: done", count, lambda: done, unit="messages"):
            while done < count and time.time() - last < STALL_S:
                time.sleep(0.02)
                now = int(cast(bytes | None, client.get("bench:done")) or 0)
                if now > done:
                    done, last = now, time.time()
        seconds = last - began
        used = machine_cpu(started, worker_pids(worker)).per(before, done)
        sender.wait()
    finally:
        worker.stop(timeout=5)
        client.flushdb()
        client.close()
    return Run(
        f"{module} ({processes}x{threads})",
        latency_ms,
        processes,
        done,
        seconds,
        requested=count,
        cpu_ms=used,
    )


def check_round_trips(
    started: LocalStack, checks: Sequence[tuple[str, str]], pause: float | tuple[float, float] = 0.0
) -> list[tuple[float, str]]:
    """FCALL flashcall_check of each (verification, code) until its answer is popped: the
    milliseconds it took and the answer's result, one check at a time, `pause` seconds
    apart (or a pause drawn between the two bounds, as a person reads and types codes).
    Timed from a process of its own, as a producer would: this one's threads would delay
    the replies they time."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as prober:
        return prober.submit(_time_checks, started.redis_url, list(checks), pause).result()


def _time_checks(
    redis_url: str, checks: list[tuple[str, str]], pause: float | tuple[float, float]
) -> list[tuple[float, str]]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # Seeded: every run pauses alike.
    pauses = random.Random(20)  # noqa: S311 - a typist's rhythm, not a secret
    taken: list[tuple[float, str]] = []
    for verification, code in checks:
        began = time.perf_counter()
        key = functions.check(json.dumps({"id": verification, "code": code})).run(client)
        answer = client.blpop([key], 5)
        if answer is None:
            raise RuntimeError("a check got no answer within 5 s")
        taken.append(((time.perf_counter() - began) * 1000, json.loads(answer[1])["result"]))
        time.sleep(pause if isinstance(pause, float | int) else pauses.uniform(*pause))
    client.close()
    return taken


def open_verifications(
    started: LocalStack, phones: list[str], label: str, request: Mapping[str, Any] | None = None
) -> Run:
    """Verifications started and delivered, left open for checks to be made against."""
    run = drive_project(started, phones, label, latency_ms=0, processes=0, request=request)
    if run.count < len(phones):
        raise RuntimeError(f"only {run.count} of {len(phones)} verifications were delivered")
    return run


def peak_rss_mb(worker: ManagedProcess) -> list[float]:
    """VmHWM of each worker process (the children of `flashcall worker`)."""
    return [peak for pid in worker_pids(worker) if (peak := memory_mb(pid, "VmHWM")) is not None]


def memory_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM) in MB; None once the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def is_verification_process(pid: int) -> bool | None:
    """Whether a worker process makes provider calls: those run niced (worker/cli.py), the
    check processes and the supervisor do not. None once the process is gone."""
    try:
        return os.getpriority(os.PRIO_PROCESS, pid) > 0
    except OSError:
        return None


def machine(redis_url: str, **more: Any) -> dict[str, Any]:
    """What a measurement ran on, for its results: date, CPUs, Python, Redis, commit."""
    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": CPUS,
        "python": platform.python_version(),
        "redis": redis_version,
        "commit": _commit(),
        **more,
    }


def _commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, as a developer runs it
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return found.stdout.strip() or "unknown"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, numbers: bool = False) -> str:
    """A Markdown table; `numbers` aligns every column right."""
    rule = "---:|" if numbers else "---|"
    lines = ["| " + " | ".join(header) + " |", "|" + rule * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def worker_pids(worker: ManagedProcess) -> list[int]:
    """The worker processes `flashcall worker` forked."""
    pid = worker.process.pid
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def reset(started: LocalStack, latency_ms: int) -> None:
    """A clean slate between scenarios: an empty Redis database and a fresh sandbox with
    money on every account (no worker runs meanwhile)."""
    client = sync_client(started.redis_url)
    client.flushdb()
    client.close()
    httpx.post(f"{started.sandbox_url}/_sandbox/reset").raise_for_status()
    for spec in ("voicepassword", "mobilgroup"):
        answer = httpx.post(
            f"{started.sandbox_url}/_sandbox/balance", json={"provider": spec, "balance": "1000000000.00"}
        )
        answer.raise_for_status()
    set_latency(started, latency_ms)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system CPU time the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def commands_ran(client: redis.Redis) -> Counter[str]:
    """Commands Redis ran so far by name (INFO commandstats: those of functions and scripts
    included). The INFO that reads them is not among them yet; a CONFIG RESETSTAT is."""
    stats = cast(dict[str, dict[str, int]], client.info("commandstats"))
    return Counter({name.removeprefix("cmdstat_"): values["calls"] for name, values in stats.items()})


@dataclass(frozen=True)
class MachineCpu:
    """CPU seconds used so far by a worker's processes, Redis and the sandbox."""

    seconds: dict[str, float]

    def per(self, before: MachineCpu, count: int) -> dict[str, float]:
        """Milliseconds of each since `before`, per one of `count`."""
        return {
            name: round((used - before.seconds[name]) * 1000 / max(count, 1), 3)
            for name, used in self.seconds.items()
        }


def machine_cpu(started: LocalStack, worker: Sequence[int]) -> MachineCpu:
    """What a run shares the machine's cores with: the worker's processes (`worker`), Redis
    (INFO cpu) and the sandbox."""
    client = redis.Redis.from_url(started.redis_url)
    try:
        cpu = cast(dict[str, float], client.info("cpu"))
    finally:
        client.close()
    sandbox = [started.sandbox.process.pid] if started.sandbox else []
    return MachineCpu(
        {
            "worker": cpu_seconds(worker),
            "redis": cpu["used_cpu_user"] + cpu["used_cpu_sys"],
            "sandbox": cpu_seconds(sandbox),
        }
    )


@dataclass(frozen=True)
class Usage:
    """What a worker and Redis had used at one moment: CPU seconds and commands."""

    workers_cpu: float
    checks_cpu: float
    """The check processes' share of workers_cpu."""
    redis_cpu: float
    commands: Counter[str]

    @classmethod
    def now(cls, worker: ManagedProcess, client: redis.Redis) -> Usage:
        pids = worker_pids(worker)
        cpu = cast(dict[str, float], client.info("cpu"))
        return cls(
            workers_cpu=cpu_seconds(pids),
            checks_cpu=cpu_seconds([pid for pid in pids if is_verification_process(pid) is False]),
            redis_cpu=cpu["used_cpu_user"] + cpu["used_cpu_sys"],
            commands=commands_ran(client),
        )

    def commands_since(self, before: Usage) -> Counter[str]:
        """Commands Redis ran from `before` to this reading, less `before`'s INFO cpu (its
        INFO commandstats came first, and this one's is not counted yet)."""
        return self.commands - before.commands - Counter({"info": 1})
