"""The sandbox's memory: accounts, what every provider received, scripts and each phone's inbox.

Everything lives in one process and one event loop, so plain containers are enough; the
indexes exist because benchmarks push thousands of requests through and count them per number.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

__all__ = [
    "Account",
    "Behaviour",
    "Delivery",
    "Message",
    "Record",
    "SandboxState",
]

_FIRST_ID = 100_000


@dataclass(slots=True)
class Account:
    balance: Decimal
    currency: str = "Rub"


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One scripted step: how the provider treats the next send request for a number."""

    latency_ms: int | None = None
    error_code: str | None = None
    http_status: int | None = None
    body: str | None = None
    disconnect: bool = False
    hang: bool = False
    trickle: bool = False
    """Answer 200 with headers at once, then a body of one byte a second that never ends."""
    state: str | None = None
    deliver: bool = True
    callback_delay_ms: int | None = None


NORMAL = Behaviour()
"""What a provider does for a number with no script left."""


@dataclass(slots=True)
class Record:
    """One request a provider received, whatever became of it."""

    provider: str
    path: str
    kind: str | None
    number: str | None
    at: float
    id: str | None = None
    price: str | None = None
    state: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    callback_status: str | None = None
    fault: str | None = None
    """`disconnect`, `hang` or `trickle` when the request got no whole HTTP answer."""
    body: object = None
    """The request body as received (decoded JSON, or the raw text when it is not JSON), and
    the request's headers that carry credentials, so contract tests can check every field."""
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Message:
    """What the user's phone shows: a (missed) call or an SMS."""

    provider: str
    channel: str
    sender: str
    code: str
    text: str | None
    at: float

    def to_json(self) -> dict[str, object]:
        return {
            "provider": self.provider,
            "channel": self.channel,
            "from": self.sender,
            "code": self.code,
            "text": self.text,
            "at": self.at,
        }


@dataclass(slots=True)
class Delivery:
    """A call or SMS a provider accepted and charged for."""

    id: str
    provider: str
    channel: str
    number: str
    code: str
    caller: str
    price: Decimal
    state: str
    """The final state, reached at `settles_at`."""
    placed_at: float
    settles_at: float
    callback_url: str | None


@dataclass(slots=True)
class SandboxState:
    default_balances: Mapping[str, Decimal]
    latency_ms: int = 0
    now: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    accounts: dict[str, Account] = field(init=False)
    records: list[Record] = field(init=False, default_factory=list)
    deliveries: dict[str, Delivery] = field(init=False, default_factory=dict)
    _records_by_provider: dict[str, list[Record]] = field(init=False, default_factory=dict)
    _records_by_number: dict[str, list[Record]] = field(init=False, default_factory=dict)
    _deliveries_by_provider: dict[str, list[Delivery]] = field(init=False, default_factory=dict)
    _scripts: dict[tuple[str, str | None], deque[Behaviour]] = field(init=False, default_factory=dict)
    _chances: dict[tuple[str, str | None], tuple[float, Behaviour]] = field(init=False, default_factory=dict)
    _inboxes: dict[str, list[Message]] = field(init=False, default_factory=dict)
    # Ids keep counting across resets so a late answer from before a reset never names a new call.
    _ids: Iterator[int] = field(init=False, default_factory=lambda: itertools.count(_FIRST_ID))

    def __post_init__(self) -> None:
        self.accounts = self._fresh_accounts()

    def _fresh_accounts(self) -> dict[str, Account]:
        return {name: Account(balance) for name, balance in self.default_balances.items()}

    def reset(self) -> None:
        self.accounts = self._fresh_accounts()
        self.records.clear()
        self.deliveries.clear()
        self._records_by_provider.clear()
        self._records_by_number.clear()
        self._deliveries_by_provider.clear()
        self._scripts.clear()
        self._chances.clear()
        self._inboxes.clear()

    def new_id(self) -> str:
        return str(next(self._ids))

    def add_record(
        self,
        provider: str,
        path: str,
        kind: str | None,
        number: str | None,
        *,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> Record:
        record = Record(
            provider=provider,
            path=path,
            kind=kind,
            number=number,
            at=self.now(),
            body=body,
            headers=dict(headers or {}),
        )
        self.records.append(record)
        self._records_by_provider.setdefault(provider, []).append(record)
        if number is not None:
            self._records_by_number.setdefault(number, []).append(record)
        return record

    def find_records(self, *, provider: str | None = None, number: str | None = None) -> list[Record]:
        if number is not None:
            found = self._records_by_number.get(number, [])
            return found if provider is None else [r for r in found if r.provider == provider]
        if provider is not None:
            return self._records_by_provider.get(provider, [])
        return self.records

    def set_script(
        self,
        provider: str,
        number: str | None,
        steps: Iterable[Behaviour],
        chance: tuple[float, Behaviour] | None = None,
    ) -> None:
        """Steps for the next requests, then (if given) a behaviour taken with a probability."""
        self._scripts[(provider, number)] = deque(steps)
        if chance is None:
            self._chances.pop((provider, number), None)
        else:
            self._chances[(provider, number)] = chance

    def next_behaviour(self, provider: str, number: str | None) -> Behaviour:
        """Consume the next step of the number's own script, else of the provider-wide one;
        once the steps are spent, the script's chance behaviour, if it has one.

        A number with a script of its own never falls back to the provider-wide one, even once
        its steps run out: that is how a test exempts one number from a blanket script.
        """
        key = (provider, number)
        if number is None or key not in self._scripts:
            key = (provider, None)
        steps = self._scripts.get(key)
        if steps:
            return steps.popleft()
        chance = self._chances.get(key)
        if chance is not None and self.rng.random() < chance[0]:
            return chance[1]
        return NORMAL

    def charge(self, provider: str, price: Decimal) -> bool:
        account = self.accounts[provider]
        if account.balance < price:
            return False
        account.balance -= price
        return True

    def add_delivery(self, delivery: Delivery) -> None:
        self.deliveries[delivery.id] = delivery
        self._deliveries_by_provider.setdefault(delivery.provider, []).append(delivery)

    def deliveries_of(self, provider: str) -> list[Delivery]:
        return self._deliveries_by_provider.get(provider, [])

    def deliver(self, number: str, message: Message) -> None:
        self._inboxes.setdefault(number, []).append(message)

    def inbox(self, number: str) -> list[Message]:
        return self._inboxes.get(number, [])
