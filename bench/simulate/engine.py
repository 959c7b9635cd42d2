"""One simulated run: one scenario, one router, the real router code, accelerated time.

What runs is the project's own: worker.verification.verifier.Verifier makes every attempt and checks
every code, through the providers' adapters, over HTTP to the sandbox; every state change
is a function of the flashcall library in a real redis-server, which enqueues the
Dramatiq messages itself. The engine only plays Dramatiq and the clock: it pops the
messages the library enqueued and hands them to the Verifier's methods, fires the
library's timers as simulated time passes, and refreshes the routing state snapshot once
a simulated second, as a worker process does. Nothing sleeps: the clock jumps from one
moment to the next (an arrival, a user typing a code, a one-second tick).

Users are the world's (bench/simulate/world.py): when the library records a delivery,
the world decides whether it reached the user and when they type the code, which they
read from the sandbox's inbox of their number.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

import httpx
import redis
import redis.asyncio
import yaml

from bench.simulate.metrics import cost_per_approved, leading, reaction_across
from bench.simulate.scenarios import COSTS, LEARNING, ORACLE_LEARNING, Change, Scenario, routing_document
from bench.simulate.world import OPERATORS, Arrival, World, arrivals
from flashcall_dev.sandbox.app import PROVIDERS as SANDBOX_PROVIDERS
from worker.core import keys
from worker.core.verification import CallState, Channel
from worker.providers.base import CallStatus
from worker.providers.registry import build_provider
from worker.redis.library import install_async
from worker.redis.store import Store
from worker.routing.breakers import Breakers
from worker.routing.config import RoutingConfig, load_routing, url_override_variable
from worker.routing.operators import operator_of
from worker.routing.published import published
from worker.routing.refresh import refresh_state
from worker.routing.reload import Routing
from worker.routing.state import Conversion, LearnedKey, RoutingState
from worker.verification.events import AttemptEvent, CallStatusEvent, UnreplicatedClaimEvent
from worker.verification.verifier import Verifier

__all__ = ["RouterKind", "RunResult", "SandboxEndpoints", "Simulation", "router_env"]

#: Simulated time starts here (Monday 2026-03-02 09:00 Moscow): fixed, so runs repeat.
START_MS = 1_772_431_200_000
TICK_MS = 1_000
#: The routing state snapshot is read this often, as FLASHCALL_STATE_INTERVAL_MS does.
REFRESH_MS = 1_000
#: flashcall_start's default lifetime of a verification.
TTL_MS = 600_000
#: flashcall_start's timer that picks up a start whose first message was lost.
START_RECOVERY_MS = 30_000
RICH = "100000000.00"
_FINAL = frozenset({"approved", "failed", "expired", "canceled", "max_attempts"})


class RouterKind(StrEnum):
    LEARNED = "learned"
    STATIC = "static"
    ORACLE = "oracle"


@dataclass(frozen=True, slots=True)
class SandboxEndpoints:
    control_url: str
    provider_urls: Mapping[str, str]
    """Where the sandbox serves each provider type."""


def router_env(endpoints: SandboxEndpoints, document: Mapping[str, Any]) -> dict[str, str]:
    """The environment the routing document's providers read: sandbox URLs and credentials."""
    specs = {spec.name: spec for spec in SANDBOX_PROVIDERS}
    env: dict[str, str] = {}
    for name, provider in document["providers"].items():
        spec = specs[provider["type"]]
        env[url_override_variable(name)] = endpoints.provider_urls[spec.name]
        for credential, reference in provider.get("credentials", {}).items():
            env[reference.removeprefix("env:")] = spec.credentials[credential]
    return env


class _Quiet:
    """The Verifier's observer: metrics and log lines per attempt are not what a run measures."""

    def attempt(self, event: AttemptEvent) -> None:
        return None

    def call_status(self, event: CallStatusEvent) -> None:
        return None

    def claim_unreplicated(self, event: UnreplicatedClaimEvent) -> None:
        return None


@dataclass
class _Record:
    arrival: Arrival
    first: dict[str, str] = field(default_factory=dict)
    """channel -> provider of the verification's first attempt on it."""
    delivered: Counter[tuple[str, str]] = field(default_factory=Counter)
    status: str = ""


@dataclass
class RunResult:
    scenario: str
    router: str
    count: int
    approved: int
    statuses: dict[str, int]
    cost_e4: int
    attempts: dict[str, int]
    """"provider/channel" -> attempts started."""
    deliveries: dict[str, int]
    """"provider/channel" -> deliveries the library recorded."""
    first_flash: dict[str, dict[str, int]]
    """operator -> provider of the first flash call -> verifications ("-": none)."""
    reactions: list[dict[str, Any]]
    demoted: list[dict[str, Any]]
    audit: dict[str, Any]
    """Accounting checks: what the library charged against the events and the sandbox."""
    estimates: list[dict[str, Any]] = field(default_factory=list)
    """What the router had learned at the end, beside the world's truth then."""
    costs_e4: list[int] = field(repr=False, default_factory=list)
    """Per verification, in arrival order."""
    approvals: list[bool] = field(repr=False, default_factory=list)
    flash_first: list[tuple[str, str]] = field(repr=False, default_factory=list)
    """Per verification: its operator range and who made its first flash call ("-": none)."""
    wall_s: float = 0.0
    simulated_s: float = 0.0
    learning: bool = False
    """Whether the router's routing.yaml had a learning section."""

    @property
    def cost_per_approved(self) -> float | None:
        return cost_per_approved(self.cost_e4, self.approved)

    @property
    def approval_rate(self) -> float:
        return self.approved / self.count if self.count else 0.0

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["cost_per_approved"] = self.cost_per_approved
        out["approval_rate"] = self.approval_rate
        return out


def span_ms(count: int, rate_per_s: float) -> int:
    """The simulated time a run of `count` arrivals covers at most: the last arrival, then
    its verification's time to live and a few ticks for the last events."""
    return int((count - 1) * (1000.0 / rate_per_s)) + TTL_MS + 5 * TICK_MS


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        router: RouterKind,
        *,
        redis_url: str,
        sandbox: SandboxEndpoints,
        count: int,
        rate_per_s: float = 1.0,
        seed: int = 1,
        learning: Mapping[str, Any] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """`learning` overrides options of the learning section (of the learned router and,
        but for explore and hysteresis, the oracle). `progress` is told the simulated
        milliseconds done (of `span_ms(count, rate_per_s)`) as the simulated clock moves."""
        self.scenario = scenario
        self.router = router
        self.redis_url = redis_url
        self.sandbox = sandbox
        self.count = count
        self.interval_ms = 1000.0 / rate_per_s
        self.seed = seed
        self.world = World(seed=seed, rates=dict(scenario.rates))
        self.now_ms = START_MS
        self._progress = progress or (lambda _: None)
        self.rate_per_s = rate_per_s
        self._costs = dict(COSTS)
        overrides = dict(learning or {})
        self._learning: Mapping[str, Any] | None = {
            RouterKind.LEARNED: {**LEARNING, **overrides},
            RouterKind.STATIC: None,
            RouterKind.ORACLE: {**LEARNING, **overrides, **ORACLE_LEARNING},
        }[router]
        self._named_operators: Mapping[str, tuple[str, ...]] = {}
        self._arrivals = list(arrivals(seed, count, lambda phone: operator_of(phone, self._named_operators)))
        self._records = [_Record(a) for a in self._arrivals]
        self._by_id = {a.id: r for a, r in zip(self._arrivals, self._records, strict=True)}
        self._user_events: list[tuple[int, int, str, str, str]] = []
        self._seq = 0
        self._last_event = "0-0"
        self._attempts: Counter[str] = Counter()
        self._deliveries: Counter[str] = Counter()
        self._delivered_e4 = 0
        self._checks: Counter[str] = Counter()
        self._demoted: list[dict[str, Any]] = []
        self._arrived = 0
        self._changes = sorted(scenario.changes, key=lambda c: c.at)
        self._applied = 0
        self.state = RoutingState()
        self._tmp = Path(tempfile.mkdtemp(prefix="flashcall-simulate-"))

    def _time(self) -> float:
        return self.now_ms / 1000

    # -- set-up ------------------------------------------------------------------------

    def _config(self) -> tuple[RoutingConfig, dict[str, Any]]:
        document = routing_document(self._costs, self._learning)
        path = self._tmp / f"routing-{self._seq}.yaml"
        self._seq += 1
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return load_routing(path, router_env(self.sandbox, document)), document

    def _breakers(self, config: RoutingConfig) -> Breakers:
        configs = {name: entry.breaker for name, entry in config.providers.items()}
        return Breakers(self._sync, configs, now=self._time)

    def _build_routing(self, previous: Routing | None = None) -> Routing:
        config, document = self._config()
        env = router_env(self.sandbox, document)
        providers = (
            dict(previous.providers)
            if previous is not None
            else {name: build_provider(name, entry, env) for name, entry in config.providers.items()}
        )
        return Routing(config=config, providers=providers, breakers=self._breakers(config))

    async def _sandbox(self, path: str, body: Mapping[str, Any]) -> None:
        response = await self._http.post(f"/_sandbox/{path}", json=dict(body))
        response.raise_for_status()

    async def _normal_script(self, provider: str) -> None:
        # Call states settle at once: a poll then finds the final state at its first try,
        # whatever the wall clock did meanwhile, and the run repeats exactly.
        script: dict[str, Any] = {"provider": provider, "steps": []}
        if provider in ("voicepassword", "mobilgroup"):
            script["chance"] = {"probability": 1, "behaviour": {"callback_delay_ms": 0}}
        await self._sandbox("script", script)

    async def _setup(self) -> None:
        self._client = redis.asyncio.Redis.from_url(self.redis_url, decode_responses=True)
        self._sync = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self._http = httpx.AsyncClient(base_url=self.sandbox.control_url, timeout=30)
        await self._client.flushall()
        await install_async(self._client)
        self.store = Store(self._client)
        await self._sandbox("reset", {})
        await self._sandbox("latency", {"latency_ms": 0})
        for provider in ("voicepassword", "mobilgroup"):
            await self._sandbox("balance", {"provider": provider, "balance": RICH})
        for spec in SANDBOX_PROVIDERS:
            await self._normal_script(spec.name)
        self.routing = self._build_routing()
        self._named_operators = dict(getattr(self.routing.config, "operators", {}) or {})
        await self.store.publish_config(published(self.routing.config))
        self.verifier = Verifier(
            store=self.store,
            routing=lambda: self.routing,
            state=lambda: self.state,
            code_secret=secrets.token_bytes(32),
            observer=_Quiet(),
            now=self._time,
        )
        await self._refresh()

    async def _teardown(self) -> None:
        for provider in self.routing.providers.values():
            await provider.aclose()
        await self._http.aclose()
        await self._client.aclose()
        self._sync.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- the router's own loops ----------------------------------------------------------

    async def _refresh(self) -> None:
        state = await refresh_state(self.store, self.routing.config, now_ms=self.now_ms)
        if self.router is RouterKind.ORACLE:
            # The truth at this moment: no recent change to detect, no estimate to doubt.
            state = dataclasses.replace(state, learned=self._truth(), recent={})
        self.state = state
        # The library's counters would otherwise pile up: a worker drains them into Prometheus.
        await self.store.drain_metrics()

    def _truth(self) -> dict[LearnedKey, Conversion]:
        """The world's rates now, as estimates no sample could move."""
        trials = 1_000_000.0
        truth: dict[LearnedKey, Conversion] = {}
        for name, entry in self.routing.config.providers.items():
            for channel in entry.channels:
                for operator in OPERATORS:
                    approvals = self.world.conversion(name, channel, operator) * trials
                    # Conversion sums the time to approval over approvals.
                    truth[(name, channel, operator)] = Conversion(
                        trials, approvals, approvals * self.world.approval_ms(channel)
                    )
        return truth

    async def _drain(self) -> None:
        """Run every message the library enqueued, as Dramatiq's workers would, in order."""
        queue, bodies = keys.queue(keys.VERIFY_QUEUE), keys.queue_messages(keys.VERIFY_QUEUE)
        while True:
            message_id = cast(str | None, await self._client.lpop(queue))
            if message_id is None:
                return
            raw = cast(str | None, await self._client.hget(bodies, message_id))
            await self._client.hdel(bodies, message_id)
            if raw is None:
                continue
            message = json.loads(raw)
            actor, args = message["actor_name"], message["args"]
            if actor == "advance":
                if len(args) > 3 and args[3]:
                    # The start payload carries flashcall_start's expiry, stamped by Redis TIME.
                    args[3] = {**args[3], "expires_at": self._expires[args[0]]}
                await self.verifier.advance(*args)
            elif actor == "poll":
                await self.verifier.poll(*args)
            elif actor == "call_status":
                status = args[3]
                await self.verifier.on_status(
                    args[0],
                    args[1],
                    args[2],
                    CallStatus(
                        ref=str(status["ref"]),
                        state=CallState(status["state"]),
                        provider_state=str(status["provider_state"]),
                        price=Decimal(status["price"]) if status.get("price") is not None else None,
                    ),
                )
            else:
                raise RuntimeError(f"the library enqueued an unknown actor {actor!r}")

    async def _fire_timers(self) -> None:
        await self.store.fire_timers(now_ms=self.now_ms, limit=100_000)
        await self._drain()

    # -- the world -----------------------------------------------------------------------

    async def _arrive(self, arrival: Arrival) -> None:
        answer = await self.store.start(json.dumps({"id": arrival.id, "phone": arrival.phone}))
        if answer.get("status") != "pending":
            raise RuntimeError(f"start refused: {answer}")
        # flashcall_start stamps its times with Redis TIME; the run's clock is simulated.
        now, expires = self.now_ms, self.now_ms + TTL_MS
        self._expires[arrival.id] = expires
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.verification(arrival.id),
                mapping={"created_at": now, "updated_at": now, "expires_at": expires},
            )
            pipe.zadd(keys.PREFIX + "timers:expire", {arrival.id: expires})
            pipe.zadd(keys.PREFIX + "timers:step", {arrival.id: now + START_RECOVERY_MS})
            await pipe.execute()
        self._arrived += 1
        await self._drain()

    async def _apply(self, change: Change) -> None:
        if change.kind == "rate":
            for operator in change.operators:
                self.world.set_rate(change.provider, change.channel, operator, change.value)
        elif change.kind == "restore":
            for operator in change.operators:
                key = (change.provider, change.channel, operator)
                self.world.set_rate(*key, self.scenario.rates.get(key, 0.0))
        elif change.kind == "outage":
            await self._sandbox(
                "script",
                {
                    "provider": change.provider,
                    "chance": {"probability": 1, "behaviour": {"http_status": 503}},
                },
            )
        elif change.kind == "outage_end":
            await self._normal_script(change.provider)
        elif change.kind == "price":
            # An operator's edit of routing.yaml: a new snapshot, its providers kept, as a reload does.
            self._costs[(change.provider, change.channel)] = Decimal(str(change.value))
            self.routing = self._build_routing(self.routing)
            await self._refresh()

    async def _read_events(self) -> None:
        while True:
            batch = cast(
                list[tuple[str, dict[str, str]]],
                await self._client.xrange(keys.EVENTS, f"({self._last_event}", "+", count=10_000),
            )
            if not batch:
                return
            for _, fields in batch:
                self._on_event(fields)
            self._last_event = batch[-1][0]

    def _on_event(self, fields: Mapping[str, str]) -> None:
        name = fields.get("event", "")
        if name == "demoted":
            at = int(fields.get("at", self.now_ms))
            self._demoted.append({**fields, "arrivals": self._arrivals_by(at)})
            return
        record = self._by_id.get(fields.get("id", ""))
        if record is None:
            return
        provider, channel = fields.get("provider", ""), fields.get("channel", "")
        if name == "attempt_started":
            self._attempts[f"{provider}/{channel}"] += 1
            record.first.setdefault(channel, provider)
        elif name == "delivered":
            self._deliveries[f"{provider}/{channel}"] += 1
            self._delivered_e4 += round(Decimal(fields.get("cost", "0")) * 10000)
            nth = record.delivered[(provider, channel)]
            record.delivered[(provider, channel)] += 1
            index, ch = record.arrival.index, Channel(channel)
            if self.world.abandons(index) or not self.world.reaches(
                index, provider, ch, record.arrival.operator, nth
            ):
                return
            due = int(fields["at"]) + int(self.world.delay_s(index, provider, ch, nth) * 1000)
            self._seq += 1
            heapq.heappush(self._user_events, (due, self._seq, record.arrival.id, provider, channel))
        elif fields.get("status") in _FINAL:
            record.status = fields["status"]

    def _arrivals_by(self, at_ms: int) -> int:
        return min(self.count, max(0, math.floor((at_ms - START_MS) / self.interval_ms) + 1))

    async def _user_types(self, verification_id: str, provider: str, channel: str) -> None:
        record = self._by_id[verification_id]
        if record.status:
            return
        phone = record.arrival.phone
        answer = await self._http.get(f"/_sandbox/inbox/{phone}")
        answer.raise_for_status()
        shown = [
            m for m in answer.json()["messages"] if m["provider"] == provider and m["channel"] == channel
        ]
        if not shown:
            self._checks["nothing in the inbox"] += 1
            return
        reply_key = keys.PREFIX + "reply:simulated"
        result = await self.verifier.check(verification_id, str(shown[-1]["code"]), reply_key)
        await self._client.delete(reply_key)
        self._checks[result] += 1
        await self._drain()

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> RunResult:
        began = time.monotonic()
        self._expires: dict[str, int] = {}
        await self._setup()
        try:
            await self._loop()
            return await self._result(time.monotonic() - began)
        finally:
            await self._teardown()

    def _arrival_ms(self, index: int) -> int:
        return START_MS + int(index * self.interval_ms)

    async def _loop(self) -> None:
        next_index, next_tick, next_refresh = 0, START_MS, START_MS + REFRESH_MS
        last_ms = START_MS + span_ms(self.count, self.rate_per_s)
        while True:
            moments = [next_tick]
            if next_index < self.count:
                moments.append(self._arrival_ms(next_index))
            if self._user_events:
                moments.append(self._user_events[0][0])
            now = min(moments)
            if now > last_ms:
                return
            self.now_ms = now
            self._progress(now - START_MS)
            if next_index < self.count and now == self._arrival_ms(next_index):
                while self._applied < len(self._changes) and next_index >= self._change_index(
                    self._changes[self._applied]
                ):
                    await self._apply(self._changes[self._applied])
                    self._applied += 1
                await self._arrive(self._arrivals[next_index])
                next_index += 1
                continue
            if self._user_events and now == self._user_events[0][0]:
                _, _, verification_id, provider, channel = heapq.heappop(self._user_events)
                await self._user_types(verification_id, provider, channel)
                continue
            await self._fire_timers()
            if now >= next_refresh:
                await self._refresh()
                next_refresh = now + REFRESH_MS
            await self._read_events()
            next_tick = now + TICK_MS
            if next_index >= self.count and all(r.status for r in self._records):
                return

    def _change_index(self, change: Change) -> int:
        return math.ceil(change.at * self.count)

    async def _result(self, wall_s: float) -> RunResult:
        await self._read_events()
        async with self._client.pipeline(transaction=False) as pipe:
            for arrival in self._arrivals:
                pipe.hmget(keys.verification(arrival.id), ["status", "cost_e4"])
            rows = await pipe.execute()
        statuses: Counter[str] = Counter()
        costs: list[int] = []
        approvals: list[bool] = []
        for status, cost in rows:
            statuses[status or "missing"] += 1
            costs.append(int(cost or 0))
            approvals.append(status == "approved")
        first_flash: dict[str, Counter[str]] = {operator: Counter() for operator in OPERATORS}
        for record in self._records:
            first_flash[record.arrival.operator][record.first.get(Channel.FLASHCALL, "-")] += 1
        return RunResult(
            scenario=self.scenario.name,
            router=str(self.router),
            count=self.count,
            approved=statuses["approved"],
            statuses=dict(statuses),
            cost_e4=sum(costs),
            attempts=dict(self._attempts),
            deliveries=dict(self._deliveries),
            first_flash={op: dict(c) for op, c in first_flash.items()},
            reactions=self._reactions(),
            demoted=self._demoted,
            audit=await self._audit(sum(costs), statuses),
            estimates=self._estimates(),
            costs_e4=costs,
            approvals=approvals,
            flash_first=[(r.arrival.operator, r.first.get(Channel.FLASHCALL, "-")) for r in self._records],
            wall_s=round(wall_s, 1),
            simulated_s=round((self.now_ms - START_MS) / 1000),
            learning=self._learning is not None,
        )

    def _estimates(self) -> list[dict[str, Any]]:
        if self.router is RouterKind.ORACLE:
            return []
        return [
            {
                "provider": provider,
                "channel": str(channel),
                "operator": operator,
                "trials": round(found.trials, 1),
                "estimate": round(found.rate, 3),
                "truth": round(self.world.conversion(provider, channel, operator), 3),
            }
            for (provider, channel, operator), found in sorted(self.state.learned.items())
        ]

    def _reactions(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for k, change in enumerate(self._changes):
            if change.expect is None:
                continue
            start = self._change_index(change)
            end = self._change_index(self._changes[k + 1]) if k + 1 < len(self._changes) else self.count
            served: dict[str, list[tuple[int, str | None]]] = {}
            for r in self._records:
                served.setdefault(r.arrival.operator, []).append(
                    (r.arrival.index, r.first.get(change.channel))
                )
            # Where it had traffic to move: before this change, or (to come back) before it was left.
            left = next(
                (
                    c
                    for c in reversed(self._changes[:k])
                    if c.expect == "leave" and (c.provider, c.channel) == (change.provider, change.channel)
                ),
                None,
            )
            then = self._change_index(left) if change.expect == "return" and left is not None else start
            led = [
                operator
                for operator in change.operators
                if leading(served.get(operator, []), change.provider, before=then)
            ]
            measured, each = reaction_across(
                served, change.provider, start=start, end=end, expect=change.expect, led=led
            )
            demoted = next(
                (
                    d["arrivals"] - start
                    for d in self._demoted
                    if d.get("provider") == change.provider
                    and d.get("channel") == change.channel
                    and d.get("operator") in change.operators
                    and start <= d["arrivals"] <= end
                ),
                None,
            )
            out.append(
                {
                    "label": change.label,
                    "at": start,
                    "provider": change.provider,
                    "channel": str(change.channel),
                    "expect": change.expect,
                    "kind": change.kind,
                    "reaction": measured.to_json(),
                    "by_operator": {operator: r.to_json() for operator, r in each.items()},
                    "first_demoted_after": demoted if change.expect == "leave" else None,
                }
            )
        return out

    async def _audit(self, cost_e4: int, statuses: Counter[str]) -> dict[str, Any]:
        """Does the accounting add up: every verification finished, what the verifications
        were charged equals the deliveries' costs on the event stream, and every delivery
        is a call or SMS the sandbox received and placed."""
        placed: dict[str, int] = {}
        for spec in SANDBOX_PROVIDERS:
            answer = await self._http.get("/_sandbox/records", params={"provider": spec.name})
            answer.raise_for_status()
            placed[spec.name] = sum(
                1
                for r in answer.json()["records"]
                if r.get("id") and r.get("kind") != "get" and not str(r.get("path", "")).startswith("/auth")
            )
        delivered_by_provider: Counter[str] = Counter()
        for key, n in self._deliveries.items():
            delivered_by_provider[key.split("/")[0]] += n
        return {
            "all_final": sum(statuses.values()) == self.count
            and not statuses.get("pending")
            and not statuses.get("sending")
            and not statuses.get("sent"),
            "charged_e4": cost_e4,
            "delivered_e4": self._delivered_e4,
            "charged_matches_deliveries": cost_e4 == self._delivered_e4,
            "placed_by_sandbox": placed,
            "delivered_by_library": dict(delivered_by_provider),
            "placed_matches_delivered": all(
                placed.get(name, 0) == delivered_by_provider.get(name, 0) for name in placed
            ),
            "checks": dict(self._checks),
        }
