"""Load through the producer contract, and the count afterwards: what was lost, who was
called twice, how long recovery took. Counted from Redis and the sandbox's own records."""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import redis

from bench.progress import Progress
from worker.core import keys
from worker.redis import functions
from worker.redis.connections import sync_client

__all__ = ["DONE", "Tally", "Traffic", "Users", "tally"]

CALLS = frozenset({"flashcall", "voice", "sms"})
"""Sandbox records that placed a call or sent an SMS (not code checks or status queries)."""
EXAMPLES = 20
DONE = frozenset({"sent", "approved", "failed", "expired", "canceled", "max_attempts"})
"""Where a verification is no longer the system's to finish: the code reached the user, or it ended."""


@dataclass
class Traffic:
    """Producers starting verifications with FCALL flashcall_start, each with a fresh number.

    A start that got an error is retried once with the same id after the run (as a producer
    retries), so that a start Redis applied before the connection broke is not miscounted."""

    redis_url: str
    label: str
    first_number: int = 0
    accepted: dict[str, str] = field(default_factory=dict)
    """id -> phone (without +) of every start Redis answered with the verification."""
    refused: dict[str, str] = field(default_factory=dict)
    """id -> the error the producer got."""
    errors: Counter[str] = field(default_factory=Counter)
    """The producers' errors by kind, for the table."""
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def _client(self) -> redis.Redis:
        # A producer's timeouts: an answer within 2 s, or an error it can act on.
        return sync_client(self.redis_url, decode_responses=True, socket_timeout=2, socket_connect_timeout=1)

    def _ids(self, count: int) -> list[tuple[str, str]]:
        with self._lock:
            first, self._next = self._next, self._next + count
        return [
            (f"{self.label}-{n}", f"7998{self.first_number + n:07d}") for n in range(first, first + count)
        ]

    def _record(self, verification: str, phone: str, answer: Any) -> None:
        if isinstance(answer, Exception):
            self.refused[verification] = f"{type(answer).__name__}: {answer}"
            self.errors[_kind(answer)] += 1
        else:
            self.accepted[verification] = phone

    def burst(self, count: int) -> None:
        """`count` starts at once, pipelined."""
        client = self._client()
        batch = self._ids(count)
        pipe = client.pipeline(transaction=False)
        for verification, phone in batch:
            functions.start(_request(verification, phone)).queue(pipe)
        try:
            answers = pipe.execute(raise_on_error=False)
        except redis.RedisError as error:
            answers = [error] * len(batch)
        for (verification, phone), answer in zip(batch, answers, strict=True):
            self._record(verification, phone, answer)
        client.close()

    def start_rate(self, per_second: float, seconds: float) -> None:
        """Starts at a steady rate in the background, in batches every 50 ms."""

        def run() -> None:
            client = self._client()
            began = time.monotonic()
            sent = 0
            while not self._stop.is_set() and time.monotonic() - began < seconds:
                due = int((time.monotonic() - began) * per_second) - sent
                if due > 0:
                    for verification, phone in self._ids(due):
                        try:
                            answer: Any = functions.start(_request(verification, phone)).run(client)
                        except redis.RedisError as error:
                            answer = error
                        self._record(verification, phone, answer)
                    sent += due
                time.sleep(0.05)
            client.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def retry_refused(self) -> None:
        """What a producer does after an error: the same request again (flashcall_start is
        idempotent by id). Those that now succeed count as accepted, late."""
        client = self._client()
        for verification in list(self.refused):
            phone = f"7998{self.first_number + int(verification.rsplit('-', 1)[1]):07d}"
            try:
                functions.start(_request(verification, phone)).run(client)
            except redis.RedisError:
                continue
            del self.refused[verification]
            self.accepted[verification] = phone
        client.close()

    def in_flight(self) -> int:
        """Accepted verifications not yet sent or ended, now."""
        return len(pending(self.redis_url, self.accepted))


@dataclass
class Users:
    """The people behind the numbers: each looks at their phone a little after a call was
    begun for them and types the code they see (a flash call's digits, a spoken code, an
    SMS), as long as the verification is open. A call that never rang shows them nothing."""

    redis_url: str
    sandbox_url: str
    traffic: list[Traffic]
    """Whose users these are: their accepted verifications give each id its phone."""
    look_after_s: float = 1.5
    looks: int = 4
    types_code: Callable[[str], bool] = lambda verification: True
    """Whether the user behind a verification types the code at all (by its id)."""
    checks_sent: int = 0
    approved: int = 0
    """Approved verifications of `traffic` seen on the stream: the soak shows their share live."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _phone(self, verification: str) -> str | None:
        for traffic in self.traffic:
            phone = traffic.accepted.get(verification)
            if phone is not None:
                return phone
        return None

    def _run(self) -> None:
        client = sync_client(self.redis_url, decode_responses=True, socket_timeout=3)
        sandbox = httpx.Client(base_url=self.sandbox_url, timeout=5)
        due: list[tuple[float, str, str, int]] = []
        seen: set[str] = set()
        cursor = "$"
        while not self._stop.is_set():
            try:
                answer = cast(list[Any], client.xread({keys.EVENTS: cursor}, block=200, count=2000) or [])
                for _, entries in answer:
                    for entry_id, fields in entries:
                        cursor = entry_id
                        verification = fields.get("id", "")
                        phone = self._phone(verification)
                        at = time.monotonic() + self.look_after_s
                        if fields.get("event") == "approved" and phone is not None:
                            self.approved += 1
                        if (
                            fields.get("event") == "attempt_started"
                            and phone is not None
                            and self.types_code(verification)
                        ):
                            heapq.heappush(due, (at, verification, phone, 0))
                now = time.monotonic()
                while due and due[0][0] <= now:
                    _, verification, phone, looked = heapq.heappop(due)
                    if verification in seen:
                        continue
                    messages = sandbox.get(f"/_sandbox/inbox/{phone}").json()["messages"]
                    if messages:
                        request = json.dumps({"id": verification, "code": messages[-1]["code"]})
                        try:
                            functions.check(request).run(client)
                        except redis.RedisError:
                            # The app showed an error: its user types the code again shortly.
                            heapq.heappush(due, (now + self.look_after_s, verification, phone, looked))
                            raise
                        seen.add(verification)
                        self.checks_sent += 1
                    elif looked + 1 < self.looks:
                        heapq.heappush(due, (now + self.look_after_s, verification, phone, looked + 1))
            except (redis.RedisError, httpx.HTTPError):
                # Redis or the sandbox is away (the fault under test): look again shortly.
                time.sleep(0.5)
        client.close()
        sandbox.close()


def _request(verification: str, phone: str) -> str:
    return json.dumps({"id": verification, "phone": "+" + phone})


def _national(number: str) -> str:
    return "".join(c for c in number if c.isdigit())[-10:]


def _kind(error: Exception) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text[:90]}"


def pending(redis_url: str, ids: Iterable[str]) -> set[str]:
    """The verifications among `ids` that are neither sent nor ended (or do not exist)."""
    client = sync_client(redis_url, decode_responses=True, socket_timeout=5)
    try:
        ordered = list(ids)
        pipe = client.pipeline(transaction=False)
        for verification in ordered:
            pipe.hget(keys.verification(verification), "status")
        statuses = pipe.execute()
    finally:
        client.close()
    return {v for v, status in zip(ordered, statuses, strict=True) if status not in DONE}


@dataclass
class Tally:
    accepted: int
    refused: int
    lost: int
    """Accepted, and neither sent nor ended when the wait was over."""
    called_twice: int
    """Numbers that received more provider calls than their verification claimed attempts:
    a call placed twice for one attempt (a redelivery that called again)."""
    recalled_after_fault: int
    """Verifications that needed more than one attempt (a fallback, which may follow a crash)."""
    recovery_s: float | None
    """From the fault until the last verification in flight then was sent or ended."""
    statuses: dict[str, int]
    lost_ids: list[str] = field(default_factory=list)
    """Up to EXAMPLES of the lost, to look into."""
    called_twice_ids: list[str] = field(default_factory=list)
    """Up to EXAMPLES of those called twice."""


def tally(
    redis_url: str,
    sandbox_url: str,
    traffic: Traffic,
    *,
    in_flight_at_fault: set[str],
    fault_at: float,
    wait_s: float,
) -> Tally:
    """Wait until every accepted verification is sent or ended (or `wait_s` passed), then count."""
    waiting = pending(redis_url, traffic.accepted)
    recovered_at = time.monotonic() if not (waiting & in_flight_at_fault) else None
    deadline = time.monotonic() + wait_s
    accepted = len(traffic.accepted)
    with Progress(
        f"{traffic.label}: sent or ended",
        accepted,
        lambda: accepted - len(waiting),
        unit="verifications",
        figures=lambda: f"{len(waiting)} still waiting",
    ):
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting = pending(redis_url, waiting)
            if recovered_at is None and not (waiting & in_flight_at_fault):
                recovered_at = time.monotonic()
    # The calls first, the claims after: an attempt is claimed before its call is placed, so
    # claims read later cover every call already recorded, even while verifications go on
    # (a step timing out between the two reads would otherwise look like a second call).
    records = httpx.get(f"{sandbox_url}/_sandbox/records", timeout=30).json()["records"]
    client = sync_client(redis_url, decode_responses=True)
    pipe = client.pipeline(transaction=False)
    ordered = list(traffic.accepted)
    for verification in ordered:
        pipe.hmget(keys.verification(verification), ["status", "attempt"])
    fields = cast(list[list[str | None]], pipe.execute())
    client.close()
    # Providers write numbers their own way (+7..., 7..., 8...): the last ten digits identify one.
    calls = Counter(
        _national(record["number"]) for record in records if record["number"] and record["kind"] in CALLS
    )
    twice = recalled = 0
    twice_ids: list[str] = []
    statuses: Counter[str] = Counter()
    for verification, (status, attempts) in zip(ordered, fields, strict=True):
        statuses[status or "missing"] += 1
        claimed = int(attempts or 0)
        # A verification Redis no longer holds (it lost its data) has no claims to compare with.
        if status is not None and calls[_national(traffic.accepted[verification])] > claimed:
            twice += 1
            twice_ids.append(verification)
        if claimed > 1:
            recalled += 1
    return Tally(
        accepted=len(traffic.accepted),
        refused=len(traffic.refused),
        lost=len(waiting),
        called_twice=twice,
        recalled_after_fault=recalled,
        recovery_s=None if recovered_at is None else round(recovered_at - fault_at, 1),
        statuses=dict(statuses),
        lost_ids=sorted(waiting)[:EXAMPLES],
        called_twice_ids=twice_ids[:EXAMPLES],
    )
