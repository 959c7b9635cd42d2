"""The soak's verdicts: what counts as lost, doubled and growing, from figures alone."""

from __future__ import annotations

from typing import Any

from bench.soak.report import checks, growth, redis_bytes_per_verification


def _result(*, verify_mb: list[float], lost: int = 0, called_twice: int = 0) -> dict[str, Any]:
    count = len(verify_mb)
    samples = [
        {
            "at_s": float(n * 10),
            "rss_mb": {"group0 verify": mb, "group0 check": 50.0, "group0 main": 60.0, "callbacks": 45.0},
            "redis_used_mb": 1.0 + n,
            "redis_keys": 1000 * (n + 1),
            "accepted": 100 * n,
        }
        for n, mb in enumerate(verify_mb)
    ]
    return {
        "tally": {"accepted": 1000, "refused": 0, "lost": lost, "called_twice": called_twice},
        "marks": {"load_ended": float((count - 1) * 10)},
        "samples": samples,
    }


def _verdicts(result: dict[str, Any]) -> dict[str, bool]:
    return {check.what: check.passed for check in checks(result)}


def test_steady_memory_and_a_full_count_pass_every_check() -> None:
    assert all(_verdicts(_result(verify_mb=[80.0] * 20)).values())


def test_a_lost_verification_fails_the_soak() -> None:
    assert not _verdicts(_result(verify_mb=[80.0] * 20, lost=1))["nothing lost"]


def test_a_number_called_twice_fails_the_soak() -> None:
    assert not _verdicts(_result(verify_mb=[80.0] * 20, called_twice=1))["nobody called twice"]


def test_warm_up_growth_in_the_first_quarter_is_not_a_leak() -> None:
    rss = [40.0, 60.0, 75.0, 80.0, 80.0] + [80.0] * 15
    assert _verdicts(_result(verify_mb=rss))["group0 verify memory flat"]


def test_memory_that_keeps_growing_fails_the_soak() -> None:
    rss = [80.0 + 2 * n for n in range(20)]
    assert not _verdicts(_result(verify_mb=rss))["group0 verify memory flat"]


def test_growth_compares_the_second_quarter_with_the_last() -> None:
    rss = [10.0] * 5 + [20.0] * 5 + [30.0] * 5 + [40.0] * 5
    assert growth(_result(verify_mb=rss)["samples"], 190.0, "group0 verify") == (20.0, 40.0)


def test_redis_memory_growing_with_its_keys_is_flat_per_key() -> None:
    assert _verdicts(_result(verify_mb=[80.0] * 20))["Redis memory per key flat"]


def test_redis_growth_per_verification_is_read_over_the_second_half() -> None:
    samples = [{"redis_used_mb": float(n), "accepted": 1024 * n} for n in range(10)]
    assert redis_bytes_per_verification(samples) == 1024.0
