"""Expected roubles per approved verification: what learned routing ranks candidates by.

An attempt costs its price (adjusted by its provider's API health, as static routing
ranks it) and converts with the probability learned for its provider x channel x operator
range; when it does not, the verification goes on to the following steps, whose expected
cost and approval chance are worked out the same way, from the last step back. A
candidate's figure is the expected cost of the verification from here divided by its
expected chance of approval from here:

    (price + (1 - p) * cost_after) / (p + (1 - p) * approval_after)

A provider's estimate for one operator range starts from what it converts on every range
and moves to the range's own figure as the range's attempts accumulate:

    (approvals here + k × rate everywhere) / (attempts here + k),  k = min_samples / 2

so that what one range teaches about a provider counts for the others at once, while a
range that differs (flash calls that do not reach t2's subscribers) shows as soon as its
own attempts say so. And when the provider's recent conversion over every range (a short
memory, `memory`/5 attempts) differs from its long one by more than twice its own
uncertainty, the provider changed (it degraded, or recovered while only exploration saw
it): the estimate is scaled by recent over long, so that the change moves traffic after a
few attempts, not after `memory` of them on every range.

An estimate moves traffic only once it rests on `min_samples` observed attempts of the
provider on the channel, over every range. Until then the candidate is taken to convert
as the leading choice does (its price decides): with no data at all, as always
converting, which ranks by price alone, as static routing does. It cannot take the lead
from a leader whose estimate is its own either (worker/routing/select.py): exploration
gathers its sample first. An optimistic guess (always converts) would hand the traffic to
every provider whose sample had faded, and back, over and over; a pooled one (what the
channel converts on this range, whoever carries it) would make an untried provider look
as bad as the one that failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.core.verification import Channel
from worker.routing.config import LearningConfig
from worker.routing.state import Conversion, RoutingState

__all__ = ["NOTHING", "Estimate", "Outlook", "estimate", "through"]


@dataclass(frozen=True, slots=True)
class Outlook:
    """A verification's expected cost from some step on, and its chance of approval."""

    cost: float
    approval: float

    @property
    def per_approval(self) -> float:
        return self.cost / self.approval if self.approval > 0 else math.inf


#: After the last step: nothing more is spent, and nothing more approved.
NOTHING = Outlook(0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Estimate:
    rate: float
    """P(approved | delivered attempt) that ranking uses."""
    own: bool
    """Whether it is this candidate's own, observed often enough to move traffic."""
    observed: Conversion
    """This candidate's own observations, however few."""


def estimate(
    state: RoutingState,
    learning: LearningConfig,
    provider: str,
    channel: Channel,
    operator: str,
    *,
    prior: float = 1.0,
) -> Estimate:
    """Its own rate once observed `min_samples` times, `prior` until then."""
    observed = state.learned.get((provider, channel, operator), Conversion())
    everywhere = state.overall.get((provider, channel), Conversion())
    if everywhere.trials < learning.min_samples:
        return Estimate(prior, False, observed)
    weight = learning.min_samples / 2
    rate = (observed.approvals + weight * everywhere.rate) / (observed.trials + weight)
    lately = state.recent.get((provider, channel))
    if lately is not None and lately.trials >= learning.recent_memory / 2:
        spread = math.sqrt(max(lately.rate * (1 - lately.rate), 0.01) / lately.trials)
        if abs(lately.rate - everywhere.rate) > 2 * spread:
            rate = rate * lately.rate / everywhere.rate if everywhere.rate > 0 else lately.rate
    return Estimate(min(1.0, rate), True, observed)


def through(price: float, rate: float, after: Outlook) -> Outlook:
    """The outlook of making an attempt now, then, if it does not convert, `after`."""
    return Outlook(price + (1 - rate) * after.cost, rate + (1 - rate) * after.approval)
