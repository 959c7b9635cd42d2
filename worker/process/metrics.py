"""The router's Prometheus metrics (prefix `flashcall_`), beside Dramatiq's own.

prometheus-client decides whether it writes per-process files for multiprocess mode when
it is first imported, from PROMETHEUS_MULTIPROC_DIR; `flashcall worker` sets that
before any process starts, and this module imports prometheus-client only inside
`Metrics()`, which is built at worker boot. One exposition server per host (Dramatiq's)
sums the processes' files at each scrape.

Counts of what happens inside the Redis library (verifications started and finished,
approvals, fallbacks, checks) are kept in one Redis hash by the functions themselves and
drained into these counters by whichever process takes them (atomically: each count is
taken once), so that they are exact across processes and hosts whether a worker, a
producer or a timer made the change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING

from worker.routing.state import RoutingState
from worker.verification.events import AttemptEvent, CallStatusEvent, UnreplicatedClaimEvent

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["BREAKER_STATES", "Metrics"]

#: flashcall_breaker_state's values.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        import prometheus_client as prom

        into = registry if registry is not None else prom.REGISTRY
        self.started = prom.Counter(
            "flashcall_verifications_started", "Verifications started.", ["policy"], registry=into
        )
        self.finished = prom.Counter(
            "flashcall_verifications_finished",
            "Verifications that reached a final status (reason: why one failed).",
            ["status", "reason"],
            registry=into,
        )
        self.requests = prom.Counter(
            "flashcall_provider_requests",
            "Calls and SMS requested of providers, by what came of the request.",
            ["provider", "channel", "outcome"],
            registry=into,
        )
        self.latency = prom.Histogram(
            "flashcall_provider_request_duration_seconds",
            "How long providers' APIs took to answer a call or SMS request.",
            ["provider", "channel"],
            buckets=_LATENCY_BUCKETS,
            registry=into,
        )
        self.call_states = prom.Counter(
            "flashcall_call_states",
            "Final states providers reported for delivered calls and SMS.",
            ["provider", "channel", "state"],
            registry=into,
        )
        self.fallbacks = prom.Counter(
            "flashcall_fallbacks",
            "Moves of a verification from one attempt to the next.",
            ["from_provider", "to_provider", "reason"],
            registry=into,
        )
        self.fraud_holds = prom.Counter(
            "flashcall_fraud_holds",
            "Holds of a number range by the conversion guard (its starts refused as fraud_suspected).",
            ["range"],
            registry=into,
        )
        self.fraud_releases = prom.Counter(
            "flashcall_fraud_releases",
            "Releases of a held number range: its hold ran out, or an operator released it.",
            ["range"],
            registry=into,
        )
        self.cost = prom.Counter(
            "flashcall_cost_roubles",
            "Roubles paid for delivered calls and SMS.",
            ["provider", "channel"],
            registry=into,
        )
        self.approvals = prom.Counter(
            "flashcall_approvals",
            "Approved verifications, by the provider and channel of their last delivered attempt.",
            ["provider", "channel"],
            registry=into,
        )
        self.checks = prom.Counter(
            "flashcall_checks", "Code checks answered, by result.", ["result"], registry=into
        )
        self.breaker = prom.Gauge(
            "flashcall_breaker_state",
            "Each provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["provider"],
            multiprocess_mode="livemax",
            registry=into,
        )
        self.balance = prom.Gauge(
            "flashcall_provider_balance_roubles",
            "Each provider's balance, as last read from it (providers that tell one).",
            ["provider"],
            multiprocess_mode="livemostrecent",
            registry=into,
        )
        self.out_of_money = prom.Gauge(
            "flashcall_provider_out_of_money",
            "1 while a provider is out of rotation for lack of money.",
            ["provider"],
            multiprocess_mode="livemax",
            registry=into,
        )
        self.queued = prom.Gauge(
            "flashcall_queue_messages",
            "Messages waiting in each queue (not yet fetched by a worker).",
            ["queue"],
            multiprocess_mode="livemax",
            registry=into,
        )
        self.backlog = prom.Gauge(
            "flashcall_backlog",
            "Work waiting for each queue: its list, delayed messages, messages fetched but not yet "
            "acknowledged, and (verifications) step and poll timers due now. Scale on this.",
            ["queue"],
            multiprocess_mode="livemax",
            registry=into,
        )
        self.dead_letters = prom.Gauge(
            "flashcall_dead_letters",
            "Messages in each queue's dead-letter queue.",
            ["queue"],
            multiprocess_mode="livemax",
            registry=into,
        )
        self.demotions = prom.Counter(
            "flashcall_learned_demotions",
            "Leading choices learned routing moved away from: their attempts converted too rarely "
            "for their cost (provider '-' is a skipped step brought back).",
            ["provider", "channel", "operator"],
            registry=into,
        )
        self.conversion = prom.Gauge(
            "flashcall_learned_conversion",
            "Learned P(approved | delivered attempt), per provider, channel and operator range.",
            ["provider", "channel", "operator"],
            multiprocess_mode="livemostrecent",
            registry=into,
        )
        self.conversion_samples = prom.Gauge(
            "flashcall_learned_samples",
            "The decayed count of attempts each learned conversion rests on.",
            ["provider", "channel", "operator"],
            multiprocess_mode="livemostrecent",
            registry=into,
        )
        self.unreplicated = prom.Counter(
            "flashcall_claims_unreplicated",
            "Attempts not called because no replica held their claim, handed back to be retried "
            "(claim: unacknowledged, written and not copied within FLASHCALL_REPLICA_WAIT_MS; held, "
            "not written while no replica had caught up).",
            ["claim"],
            registry=into,
        )
        self.timers = prom.Gauge(
            "flashcall_timers_pending",
            "Deadlines waiting in Redis: step timeouts, status polls, expiries.",
            ["kind"],
            multiprocess_mode="livemax",
            registry=into,
        )

    def attempt(self, event: AttemptEvent) -> None:
        self.requests.labels(event.provider, event.channel, str(event.outcome)).inc()
        self.latency.labels(event.provider, event.channel).observe(event.latency)
        if event.price is not None:
            self.cost.labels(event.provider, event.channel).inc(float(event.price))

    def call_status(self, event: CallStatusEvent) -> None:
        self.call_states.labels(event.provider, event.channel, str(event.state)).inc()

    def claim_unreplicated(self, event: UnreplicatedClaimEvent) -> None:
        self.unreplicated.labels("unacknowledged" if event.written else "held").inc()

    def count(self, drained: Mapping[str, str]) -> None:
        """Add the counts drained from the Redis library's hash (see the module docstring)."""
        for field, raw in drained.items():
            amount = int(raw)
            kind, *labels = field.split("|")
            if kind == "started":
                self.started.labels(*labels).inc(amount)
            elif kind == "finished":
                self.finished.labels(*labels).inc(amount)
            elif kind == "approved":
                self.approvals.labels(*labels).inc(amount)
            elif kind == "fallback":
                self.fallbacks.labels(*labels).inc(amount)
            elif kind == "checks":
                self.checks.labels(*labels).inc(amount)
            elif kind == "demoted":
                self.demotions.labels(*labels).inc(amount)
            elif kind == "fraud_held":
                self.fraud_holds.labels(*labels).inc(amount)
            elif kind == "fraud_released":
                self.fraud_releases.labels(*labels).inc(amount)

    def observe_state(self, state: RoutingState, providers: Iterable[str]) -> None:
        for name in providers:
            current = state.of(name)
            self.breaker.labels(name).set(BREAKER_STATES.get(current.breaker, 0))
            self.out_of_money.labels(name).set(1 if current.out_of_money else 0)
        for (provider, channel, operator), conversion in state.learned.items():
            self.conversion.labels(provider, channel, operator).set(conversion.rate)
            self.conversion_samples.labels(provider, channel, operator).set(conversion.trials)

    def observe_balance(self, provider: str, balance: Decimal) -> None:
        self.balance.labels(provider).set(float(balance))

    def observe_queues(
        self,
        queued: Mapping[str, int],
        dead: Mapping[str, int],
        timers: Mapping[str, int],
        backlog: Mapping[str, int] | None = None,
    ) -> None:
        for queue, count in queued.items():
            self.queued.labels(queue).set(count)
        for queue, count in (backlog or {}).items():
            self.backlog.labels(queue).set(count)
        for queue, count in dead.items():
            self.dead_letters.labels(queue).set(count)
        for kind, count in timers.items():
            self.timers.labels(kind).set(count)
