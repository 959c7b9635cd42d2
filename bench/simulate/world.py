"""The world the router must learn: who gets the code, who types it, and when.

Every random draw is a hash of (seed, verification index, what is drawn), not a step of a
shared generator: the three routers make different attempts, and a shared generator would
hand the same user different luck under each of them. Hashing gives each user the same
luck whichever router serves them (common random numbers), so that differences between
routers are the routers', not the dice's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from worker.core.verification import Channel

__all__ = [
    "ABANDON",
    "MIX",
    "OPERATORS",
    "PREFIXES",
    "Arrival",
    "Delays",
    "World",
    "arrivals",
    "uniform",
]

OPERATORS: tuple[str, ...] = ("mts", "megafon", "beeline", "t2")

#: Share of verifications per operator range, roughly the Russian market's.
MIX: Mapping[str, float] = {"mts": 0.30, "megafon": 0.25, "beeline": 0.22, "t2": 0.23}

#: DEF codes allocated to each operator. Numbers are drawn from them and kept only when the
#: router's own operator_of agrees, so that the world and the router name the same range.
PREFIXES: Mapping[str, tuple[str, ...]] = {
    "mts": tuple(f"79{d}" for d in (*range(10, 20), *range(80, 90))),
    "megafon": tuple(f"792{d}" for d in range(10)),
    "beeline": ("7903", "7905", "7906", "7909", *(f"796{d}" for d in range(9))),
    "t2": ("7900", "7902", "7904", "7908", "7950", "7951", "7952", "7953", "7977"),
}

#: Users who never type any code, whoever delivers it.
ABANDON = 0.03


def uniform(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by the seed and the parts."""
    digest = hashlib.blake2b("|".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64


@dataclass(frozen=True, slots=True)
class Delays:
    """Seconds from a delivery to the typed code: a floor plus a log-normal part, capped
    below the step's timeout, so that a user who got the code types it while the attempt
    that delivered it is still the current one."""

    floor_s: float
    median_s: float
    sigma: float
    cap_s: float

    def draw(self, u1: float, u2: float) -> float:
        # Box-Muller from two uniforms: a normal deviate without a generator's state.
        normal = math.sqrt(-2.0 * math.log(max(u1, 1e-12))) * math.cos(2.0 * math.pi * u2)
        return min(self.floor_s + self.median_s * math.exp(self.sigma * normal), self.cap_s)

    @property
    def mean_s(self) -> float:
        """Mean of the uncapped draw (the cap is far in the tail)."""
        return self.floor_s + self.median_s * math.exp(self.sigma**2 / 2)


DEFAULT_DELAYS: Mapping[Channel, Delays] = {
    Channel.FLASHCALL: Delays(floor_s=4, median_s=8, sigma=0.5, cap_s=50),
    Channel.VOICE: Delays(floor_s=8, median_s=10, sigma=0.5, cap_s=80),
    Channel.SMS: Delays(floor_s=10, median_s=15, sigma=0.6, cap_s=300),
}


@dataclass(frozen=True, slots=True)
class Arrival:
    index: int
    id: str
    phone: str
    operator: str


def arrivals(
    seed: int, count: int, operator_of: Callable[[str], str], *, prefix: str = "sim"
) -> Iterator[Arrival]:
    """`count` verifications of distinct numbers, their operators mixed as MIX says."""
    seen: set[str] = set()
    names = tuple(MIX)
    for index in range(count):
        point, chosen = uniform(seed, index, "operator"), names[-1]
        for name in names:
            point -= MIX[name]
            if point < 0:
                chosen = name
                break
        attempt = 0
        while True:
            prefixes = PREFIXES[chosen]
            head = prefixes[int(uniform(seed, index, "prefix", attempt) * len(prefixes))]
            tail = int(uniform(seed, index, "line", attempt) * 10 ** (11 - len(head)))
            phone = f"{head}{tail:0{11 - len(head)}d}"
            # A range split between operators (ported blocks) would make the world and the
            # router disagree about the number: draw again.
            if phone not in seen and operator_of(phone) == chosen:
                break
            attempt += 1
        seen.add(phone)
        yield Arrival(index=index, id=f"{prefix}-{index:06d}", phone=phone, operator=chosen)


@dataclass
class World:
    """The truth at one moment: the chance that a delivered attempt of provider x channel
    reaches a user of each operator range (who then types the code unless they abandon),
    and how long users take."""

    seed: int
    rates: dict[tuple[str, Channel, str], float]
    delays: Mapping[Channel, Delays] = field(default_factory=lambda: dict(DEFAULT_DELAYS))
    abandon: float = ABANDON

    def rate(self, provider: str, channel: Channel, operator: str) -> float:
        return self.rates.get((provider, channel, operator), 0.0)

    def set_rate(self, provider: str, channel: Channel, operator: str, rate: float) -> None:
        self.rates[(provider, channel, operator)] = rate

    def abandons(self, index: int) -> bool:
        return uniform(self.seed, index, "abandon") < self.abandon

    def reaches(self, index: int, provider: str, channel: Channel, operator: str, nth: int) -> bool:
        """Whether the `nth` delivery by this provider and channel to verification `index` reached
        its user; drawn the same under every router."""
        return uniform(self.seed, index, "reach", provider, channel, nth) < self.rate(
            provider, channel, operator
        )

    def delay_s(self, index: int, provider: str, channel: Channel, nth: int) -> float:
        u1 = uniform(self.seed, index, "delay1", provider, channel, nth)
        u2 = uniform(self.seed, index, "delay2", provider, channel, nth)
        return self.delays[channel].draw(u1, u2)

    def conversion(self, provider: str, channel: Channel, operator: str) -> float:
        """P(approved while this attempt is current | delivered): what the router learns."""
        return self.rate(provider, channel, operator) * (1.0 - self.abandon)

    def approval_ms(self, channel: Channel) -> float:
        return self.delays[channel].mean_s * 1000
