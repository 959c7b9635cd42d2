"""One step of the capacity measurement: worker groups under more load than they carry,
and what each approved verification cost Redis, the workers and the machine.

Costs are counted over the whole step (from the first start to the last approval) and
divided by the verifications approved, so that every start, call, check and timer of
the step is paid for. Rates and CPU shares are counted over the steady window, between
the samples where 10% and 90% of the step's verifications had been approved: a fresh
worker's first seconds and the tail of the last users' checks stay out of it.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from bench.capacity.users import Users
from bench.chaos.cluster import WorkerGroups
from bench.chaos.traffic import Traffic
from bench.harness import cpu_seconds, is_verification_process, reset, worker_pids
from bench.progress import Progress
from flashcall_dev.stack import LocalStack, ManagedProcess
from worker.core import keys
from worker.core.errors import FlashcallError
from worker.redis.connections import sync_client

__all__ = ["measure_step"]

SAMPLE_S = 0.25
SETTLE_S = 2.0
"""After the groups booted: their first heartbeats, timers and routing loads are not idle."""
IDLE_S = 3.0
STALL_S = 15.0
"""A step ends when every start was approved, or when none was for this long."""
BURST = 500
"""Starts per pipeline: one pipeline of thousands could outlast the producer's 2 s timeout."""
PLANNED_SHARE = 0.7
"""Of one core, what a primary is planned to use: the rest absorbs bursts, forks for
persistence and replication, and a slower command mix."""
_CLOCK = os.sysconf("SC_CLK_TCK")

Say = Callable[[str], None]


@dataclass(frozen=True)
class Sample:
    """Counters at one moment; CPU in seconds since each process started."""

    at: float
    approved: int
    redis_cpu: float
    workers_cpu: float
    checks_cpu: float
    """The check processes' share of workers_cpu."""
    sandbox_cpu: float
    own_cpu: float
    """This process: the producers, the simulated users and this sampler."""
    machine_busy: float
    machine_total: float
    """CPU seconds of every CPU, busy and in all, from /proc/stat."""


class Probe:
    """Reads the counters of a step's processes."""

    def __init__(self, stack: LocalStack, groups: list[ManagedProcess]) -> None:
        self._client = sync_client(stack.redis_url, decode_responses=True)
        self._groups = groups
        self._sandbox = [stack.sandbox.process.pid] if stack.sandbox else []
        self._pids: set[int] = set()
        self._check_pids: set[int] = set()

    def close(self) -> None:
        self._client.close()

    def sample(self, approved: int) -> Sample:
        # Every process a group ever had: a CPU figure must not drop with a process gone.
        for group in self._groups:
            children = set(worker_pids(group)) - self._pids
            self._pids |= {group.process.pid, *children}
            self._check_pids |= {pid for pid in children if is_verification_process(pid) is False}
        cpu = cast(dict[str, float], self._client.info("cpu"))
        times = os.times()
        busy, total = _machine()
        return Sample(
            at=time.monotonic(),
            approved=approved,
            redis_cpu=cpu["used_cpu_user"] + cpu["used_cpu_sys"],
            workers_cpu=cpu_seconds(sorted(self._pids)),
            checks_cpu=cpu_seconds(sorted(self._check_pids)),
            sandbox_cpu=cpu_seconds(self._sandbox),
            own_cpu=times.user + times.system,
            machine_busy=busy,
            machine_total=total,
        )

    def commands(self) -> Counter[str]:
        """Commands Redis ran so far by name, those of functions and scripts included."""
        stats = cast(dict[str, dict[str, int]], self._client.info("commandstats"))
        return Counter(
            {
                name.removeprefix("cmdstat_"): values["calls"]
                for name, values in stats.items()
                if name != "cmdstat_info"
            }
        )

    def dead_groups(self) -> list[int]:
        return [n for n, group in enumerate(self._groups) if group.process.poll() is not None]


def _machine() -> tuple[float, float]:
    # user nice system idle iowait irq softirq steal; guest time is already in user.
    ticks = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    total = sum(ticks)
    return (total - ticks[3] - ticks[4]) / _CLOCK, total / _CLOCK


def measure_step(
    stack: LocalStack, groups: int, count: int, *, latency_ms: int, first_number: int, say: Say
) -> dict[str, Any]:
    """`groups` worker groups of one verification and one check process each, `count`
    verifications started at once and approved by simulated users; the step's figures."""
    reset(stack, latency_ms)
    workers = WorkerGroups(stack, count=groups, processes=1)
    try:
        say(f"{groups} worker groups: starting")
        workers.start()
        return _load(stack, workers, count, first_number, say)
    finally:
        # Every worker process of the step, a group that failed to boot included: the
        # next step's reset needs Redis without workers.
        stack.stop()


def _load(
    stack: LocalStack, workers: WorkerGroups, count: int, first_number: int, say: Say
) -> dict[str, Any]:
    probe = Probe(stack, workers.groups)
    client = sync_client(stack.redis_url, decode_responses=True)
    traffic = Traffic(stack.redis_url, f"cap{workers.count}", first_number=first_number)
    users = Users(stack.redis_url, stack.sandbox_url, traffic)
    try:
        time.sleep(SETTLE_S)
        at_idle = probe.commands()
        idle_from = probe.sample(0)
        time.sleep(IDLE_S)
        idle_to = probe.sample(0)
        at_load = probe.commands()
        users.start()
        say(f"{workers.count} worker groups: {count} verifications")
        began = probe.sample(0)
        for first in range(0, count, BURST):
            traffic.burst(min(BURST, count - first))
        traffic.retry_refused()
        followed, events, providers = _follow(probe, client, len(traffic.accepted))
        samples = [began, *followed]
        ran = probe.commands() - at_load
        statuses = _statuses(client, traffic.accepted)
        dead = probe.dead_groups()
    finally:
        users.stop()
        client.close()
        probe.close()
    if dead:
        raise FlashcallError(f"worker groups {dead} exited during the step")
    approved = samples[-1].approved
    if not approved:
        raise FlashcallError(f"no verification was approved; statuses {dict(statuses)}")
    figures = _figures(traffic, samples, ran, idle=(idle_from, idle_to, at_load - at_idle))
    return {
        "groups": workers.count,
        **figures,
        "statuses": dict(statuses),
        "events": dict(events),
        "delivered_by": dict(providers),
    }


def _follow(
    probe: Probe, client: redis.Redis, accepted: int
) -> tuple[list[Sample], Counter[str], Counter[str]]:
    """Counts events until every accepted start was approved or STALL_S passed without an
    approval, sampling every SAMPLE_S; answers the samples, the events by name and the
    providers that delivered."""
    samples: list[Sample] = []
    events: Counter[str] = Counter()
    providers: Counter[str] = Counter()
    approved = 0
    # The step began on an empty database: the whole stream is this step's.
    cursor = "0-0"
    progress = time.monotonic()
    due = progress + SAMPLE_S
    with Progress("approved", accepted, lambda: approved, unit="verifications"):
        while approved < accepted and time.monotonic() - progress < STALL_S:
            # BLOCK 0 would wait forever.
            block = max(1, int((due - time.monotonic()) * 1000))
            answer = cast(list[Any], client.xread({keys.EVENTS: cursor}, block=block, count=5000) or [])
            for _, entries in answer:
                for entry_id, fields in entries:
                    cursor = entry_id
                    events[fields["event"]] += 1
                    if fields["event"] == "delivered":
                        providers[fields.get("provider", "")] += 1
                    elif fields["event"] == "approved":
                        approved += 1
                        progress = time.monotonic()
            if time.monotonic() >= due:
                samples.append(probe.sample(approved))
                due += SAMPLE_S
    samples.append(probe.sample(approved))
    return samples, events, providers


def _statuses(client: redis.Redis, ids: Iterable[str]) -> Counter[str]:
    pipe = client.pipeline(transaction=False)
    for verification in ids:
        pipe.hget(keys.verification(verification), "status")
    return Counter(status or "missing" for status in pipe.execute())


def _steady_window(samples: list[Sample]) -> tuple[Sample, Sample]:
    """The last sample with at most 10% of the approvals and the first with at least 90%."""
    total = samples[-1].approved
    low = [sample for sample in samples if sample.approved <= 0.1 * total][-1]
    high = next(sample for sample in samples if sample.approved >= 0.9 * total)
    return low, high


def _figures(
    traffic: Traffic,
    samples: list[Sample],
    ran: Counter[str],
    *,
    idle: tuple[Sample, Sample, Counter[str]],
) -> dict[str, Any]:
    began, end = samples[0], samples[-1]
    approved = end.approved
    low, high = _steady_window(samples)
    window = high.at - low.at
    redis_ms = (end.redis_cpu - began.redis_cpu) * 1000 / approved
    ours = (
        (high.redis_cpu - low.redis_cpu)
        + (high.workers_cpu - low.workers_cpu)
        + (high.sandbox_cpu - low.sandbox_cpu)
        + (high.own_cpu - low.own_cpu)
    )
    idle_from, idle_to, idle_ran = idle
    idle_s = idle_to.at - idle_from.at
    idle_share = (idle_to.redis_cpu - idle_from.redis_cpu) / idle_s
    idle_commands = idle_ran.total() / idle_s
    seconds = end.at - began.at
    return {
        "started": len(traffic.accepted),
        "refused": len(traffic.refused),
        "approved": approved,
        "seconds": round(seconds, 1),
        "steady_window_s": round(window, 1),
        "approved_per_second": round((high.approved - low.approved) / window, 1),
        "redis_cpu_ms_per_verification": round(redis_ms, 3),
        "commands_per_verification": round(ran.total() / approved, 1),
        "worker_cpu_ms_per_verification": round((end.workers_cpu - began.workers_cpu) * 1000 / approved, 2),
        "check_cpu_ms_per_verification": round((end.checks_cpu - began.checks_cpu) * 1000 / approved, 2),
        "redis_cpu_share": round((high.redis_cpu - low.redis_cpu) / window, 3),
        "worker_cpu_cores": round((high.workers_cpu - low.workers_cpu) / window, 2),
        "sandbox_cpu_cores": round((high.sandbox_cpu - low.sandbox_cpu) / window, 2),
        "load_generator_cpu_cores": round((high.own_cpu - low.own_cpu) / window, 2),
        "other_cpu_cores": round(max(0.0, (high.machine_busy - low.machine_busy) - ours) / window, 2),
        "machine_cpu_busy": round(
            (high.machine_busy - low.machine_busy) / (high.machine_total - low.machine_total), 3
        ),
        "idle": {
            "redis_cpu_share": round(idle_share, 4),
            "commands_per_second": round(idle_commands, 1),
            "worker_cpu_cores": round((idle_to.workers_cpu - idle_from.workers_cpu) / idle_s, 3),
        },
        # The groups' work whatever the load (heartbeats, timers, routing polls) grows with
        # the groups, not with the verifications: these two leave it out.
        "redis_cpu_ms_per_verification_beyond_idle": round(
            (end.redis_cpu - began.redis_cpu - idle_share * seconds) * 1000 / approved, 3
        ),
        "commands_per_verification_beyond_idle": round((ran.total() - idle_commands * seconds) / approved, 1),
        "top_commands_per_verification": [
            (name, round(calls / approved, 2)) for name, calls in ran.most_common(12)
        ],
        "ceiling": _ceiling(redis_ms),
    }


def _ceiling(redis_cpu_ms_per_verification: float) -> dict[str, float]:
    """Verifications per second one primary carries at all of one core, and as planned."""
    at_one_core = 1000 / redis_cpu_ms_per_verification
    return {
        "at_one_core": round(at_one_core, 0),
        "planned": round(at_one_core * PLANNED_SHARE, 0),
        "planned_share": PLANNED_SHARE,
    }
