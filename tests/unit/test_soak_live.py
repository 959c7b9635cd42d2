"""What the soak's progress line shows an operator, from what the soak already counts."""

from __future__ import annotations

from collections import Counter

from bench.chaos.traffic import Traffic, Users
from bench.soak.run import Sample, live_figures


def _sample(at_s: float, accepted: int) -> Sample:
    return Sample(
        at_s=at_s,
        rss_mb={"group0 verify": 74.0, "group0 check": 47.0, "callbacks": 52.5},
        redis_used_mb=125.4,
        redis_keys=30_000,
        accepted=accepted,
    )


def _running(accepted: int, approved: int, errors: int) -> tuple[Traffic, Users]:
    traffic = Traffic("redis://unused", "soak")
    traffic.accepted = {f"soak-{n}": f"79980000{n:03d}" for n in range(accepted)}
    traffic.errors = Counter({"ConnectionError: gone": errors})
    users = Users("redis://unused", "http://unused", [traffic])
    users.approved = approved
    return traffic, users


def test_the_line_holds_the_rate_between_samples_the_approved_share_errors_and_memory() -> None:
    traffic, users = _running(accepted=200, approved=150, errors=2)
    figures = live_figures([_sample(10, 0), _sample(20, 200)], traffic, users)
    assert figures == "20.0/s, approved 75%, errors 2, RSS 174 MB/3 processes, Redis 125 MB"


def test_before_the_first_samples_it_shows_what_the_producers_counted() -> None:
    traffic, users = _running(accepted=0, approved=0, errors=0)
    assert live_figures([], traffic, users) == "approved -, errors 0"
