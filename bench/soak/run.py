"""The soak: worker groups as separate hosts, the callback receiver and producers on one
Redis under Sentinel, a steady mixed load for a long time, one planned failover and one
rolling restart of a group on the way, and memory sampled throughout."""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from bench.chaos.cluster import WorkerGroups
from bench.chaos.traffic import Tally, Traffic, Users, tally
from bench.harness import is_verification_process, memory_mb, reset, worker_pids
from bench.progress import Progress
from flashcall_dev.sentinel_stack import SentinelGroup, sentinel_group
from flashcall_dev.stack import LocalStack, ManagedProcess, local_stack
from worker.core import keys
from worker.redis.connections import sync_client

__all__ = ["Sample", "SoakConfig", "SoakResult", "live_figures", "soak"]

Say = Callable[[str], None]
DETAILED = 5
"""Verifications lost or called twice whose whole story goes into the results."""
_ROLES = {True: "verify", False: "check", None: "gone"}


@dataclass(frozen=True)
class SoakConfig:
    seconds: float = 1800
    """How long producers start verifications; the count afterwards takes up to `drain_s` more."""
    rate: float = 40
    """Verifications started per second, steadily."""
    groups: int = 2
    latency_ms: int = 300
    sample_every_s: float = 10
    typing_share: float = 0.85
    """Users who type the code they see; the others never do, and their verifications
    move through every step (flash call, voice, SMS) until one is delivered."""
    busy_share: float = 0.1
    """Flash and voice calls that find the line busy: the provider's callback, through
    the receiver, moves the verification to the next provider or channel."""
    drain_s: float = 240
    """After the load: how long the count waits for verifications still in flight (a
    user who never types holds one for two step timeouts, 150 s)."""


@dataclass
class Sample:
    at_s: float
    """Seconds since the load began."""
    rss_mb: dict[str, float]
    """Resident memory by process: `group<n> verify`, `group<n> check`, `group<n> main`, `callbacks`."""
    redis_used_mb: float
    redis_keys: int
    accepted: int


@dataclass
class SoakResult:
    config: SoakConfig
    tally: Tally
    samples: list[Sample]
    marks: dict[str, float]
    """What happened when, in seconds since the load began: failover, restart."""
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.__dict__,
            "tally": self.tally.__dict__,
            "marks": self.marks,
            "figures": self.figures,
            "samples": [sample.__dict__ for sample in self.samples],
        }


def _types_code(share: float) -> Callable[[str], bool]:
    """The same user decides the same way in every run: a hash of the id, not a coin."""

    def decides(verification: str) -> bool:
        digest = hashlib.blake2b(verification.encode(), digest_size=4).digest()
        return int.from_bytes(digest, "big") / 2**32 < share

    return decides


@contextlib.contextmanager
def _environment(
    config: SoakConfig, say: Say
) -> Iterator[tuple[SentinelGroup, LocalStack, WorkerGroups, ManagedProcess]]:
    work = Path(tempfile.mkdtemp(prefix="flashcall-soak-"))
    with (
        sentinel_group(work / "sentinel") as sentinels,
        local_stack(redis_url=sentinels.url, sandbox_latency_ms=config.latency_ms) as stack,
    ):
        reset(stack, config.latency_ms)
        if config.busy_share:
            busy = {"state": "BUSY", "callback_delay_ms": 300}
            answer = httpx.post(
                f"{stack.sandbox_url}/_sandbox/script",
                json={
                    "provider": "voicepassword",
                    "chance": {"probability": config.busy_share, "behaviour": busy},
                },
            )
            answer.raise_for_status()
        receiver, receiver_url = stack.start_callbacks()
        workers = WorkerGroups(stack, count=config.groups, env={"FLASHCALL_CALLBACK_BASE_URL": receiver_url})
        workers.start()
        say(f"{config.groups} worker groups, the callback receiver and Sentinel up; logs in {stack.log_dir}")
        yield sentinels, stack, workers, receiver


def soak(config: SoakConfig, say: Say) -> SoakResult:
    with _environment(config, say) as (sentinels, stack, workers, receiver):
        traffic = Traffic(stack.redis_url, "soak")
        users = Users(
            stack.redis_url, stack.sandbox_url, [traffic], types_code=_types_code(config.typing_share)
        )
        users.start()
        began = time.monotonic()
        samples: list[Sample] = []
        sampling = threading.Event()
        sampler = threading.Thread(
            target=_sample_until,
            args=(sampling, began, config.sample_every_s, stack, workers, receiver, traffic, samples),
            daemon=True,
        )
        sampler.start()
        traffic.start_rate(config.rate, config.seconds)
        marks: dict[str, float] = {}
        figures: dict[str, Any] = {}
        with Progress(
            "soak",
            config.seconds,
            lambda: time.monotonic() - began,
            duration=True,
            figures=lambda: live_figures(samples, traffic, users),
        ):
            _sleep_until(began + config.seconds / 3)
            marks["failover"] = round(time.monotonic() - began, 1)
            say("planned failover")
            sentinels.planned_failover()
            figures["failover_s"] = round(time.monotonic() - began - marks["failover"], 1)
            say(f"new primary after {figures['failover_s']} s")

            _sleep_until(began + config.seconds * 2 / 3)
            marks["restart"] = round(time.monotonic() - began, 1)
            say("rolling restart of group 1")
            workers.restart(1)
            figures["restart_s"] = round(time.monotonic() - began - marks["restart"], 1)
            say(f"group 1 back after {figures['restart_s']} s")

            traffic.join()
        marks["load_ended"] = round(time.monotonic() - began, 1)
        say(f"load ended: {len(traffic.accepted)} accepted; waiting for those in flight")
        traffic.retry_refused()
        counted = tally(
            stack.redis_url,
            stack.sandbox_url,
            traffic,
            in_flight_at_fault=set(),
            fault_at=began,
            wait_s=config.drain_s,
        )
        sampling.set()
        sampler.join(config.sample_every_s + 10)
        users.stop()
        wrong = (counted.called_twice_ids + counted.lost_ids)[:DETAILED]
        if wrong:
            figures["what_went_wrong"] = _explain(stack, traffic, wrong)
        figures.update(_memory_by_kind(stack, traffic))
        figures["producer_errors"] = dict(traffic.errors)
        figures["checks_sent"] = users.checks_sent
        return SoakResult(config, counted, samples, marks, figures)


def live_figures(samples: list[Sample], traffic: Traffic, users: Users) -> str:
    """What an operator watches during the soak, from the sampler's latest two samples and
    the producers' and users' counts: nothing here asks Redis or a process anything more."""
    accepted = len(traffic.accepted)
    errors = sum(traffic.errors.values())
    parts = []
    if len(samples) >= 2 and samples[-1].at_s > samples[-2].at_s:
        last, before = samples[-1], samples[-2]
        parts.append(f"{(last.accepted - before.accepted) / (last.at_s - before.at_s):.1f}/s")
    parts += [f"approved {users.approved / accepted:.0%}" if accepted else "approved -", f"errors {errors}"]
    if samples:
        last = samples[-1]
        parts += [
            f"RSS {sum(last.rss_mb.values()):.0f} MB/{len(last.rss_mb)} processes",
            f"Redis {last.redis_used_mb:.0f} MB",
        ]
    return ", ".join(parts)


def _memory_by_kind(stack: LocalStack, traffic: Traffic) -> dict[str, Any]:
    """Where Redis memory goes, for the capacity model: a kept verification record, and the
    event stream (capped, so it stops growing at its cap)."""
    client = sync_client(stack.redis_url, decode_responses=True, socket_timeout=30)
    try:
        ids = list(traffic.accepted)[:: max(1, len(traffic.accepted) // 200)]
        sizes = [client.memory_usage(keys.verification(v), samples=0) or 0 for v in ids]
        entries = int(client.xlen(keys.EVENTS))
        stream = int(client.memory_usage(keys.EVENTS) or 0)
    finally:
        client.close()
    return {
        "verification_record_bytes": round(statistics.mean(sizes)) if sizes else None,
        "event_entries": entries,
        "event_entry_bytes": round(stream / entries) if entries else None,
    }


def _explain(stack: LocalStack, traffic: Traffic, verifications: list[str]) -> dict[str, Any]:
    """The events and the provider records of verifications that went wrong: what a
    developer needs to tell a redelivery from a failover from a restart."""
    wanted = set(verifications)
    events: dict[str, list[dict[str, str]]] = {v: [] for v in verifications}
    client = sync_client(stack.redis_url, decode_responses=True, socket_timeout=30)
    try:
        cursor = "-"
        while True:
            entries = cast(list[Any], client.xrange(keys.EVENTS, cursor, "+", count=10_000))
            for entry_id, fields in entries:
                if fields.get("id") in wanted:
                    events[fields["id"]].append({"entry": entry_id, **fields})
            if len(entries) < 10_000:
                break
            cursor = "(" + entries[-1][0]
    finally:
        client.close()
    records = httpx.get(f"{stack.sandbox_url}/_sandbox/records", timeout=60).json()["records"]
    explained = {}
    for verification in verifications:
        number = traffic.accepted[verification][-10:]
        explained[verification] = {
            "events": events[verification],
            "records": [r for r in records if (r.get("number") or "")[-10:] == number],
        }
    return explained


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def _sample_until(
    stop: threading.Event,
    began: float,
    every_s: float,
    stack: LocalStack,
    workers: WorkerGroups,
    receiver: ManagedProcess,
    traffic: Traffic,
    samples: list[Sample],
) -> None:
    client = sync_client(stack.redis_url, decode_responses=True, socket_timeout=5)
    try:
        while not stop.is_set():
            taken = time.monotonic()
            with contextlib.suppress(Exception):
                # A sample missed across the failover is a gap in the plot, not a failure.
                samples.append(_sample(taken - began, client, workers, receiver, traffic))
            stop.wait(max(0.0, every_s - (time.monotonic() - taken)))
    finally:
        client.close()


def _sample(
    at_s: float, client: Any, workers: WorkerGroups, receiver: ManagedProcess, traffic: Traffic
) -> Sample:
    pids: dict[str, int] = {}
    for n, group in enumerate(list(workers.groups)):
        pids[f"group{n} main"] = group.process.pid
        for pid in worker_pids(group):
            pids[f"group{n} {_ROLES[is_verification_process(pid)]}"] = pid
    pids["callbacks"] = receiver.process.pid
    rss = {name: memory_mb(pid) for name, pid in pids.items()}
    memory = client.info("memory")
    return Sample(
        at_s=round(at_s, 1),
        rss_mb={name: round(mb, 1) for name, mb in rss.items() if mb},
        redis_used_mb=round(int(memory["used_memory"]) / 2**20, 2),
        redis_keys=int(client.dbsize()),
        accepted=len(traffic.accepted),
    )
