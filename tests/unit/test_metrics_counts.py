"""The library's counts, drained into Prometheus counters (worker/process/metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from worker.process.metrics import Metrics


def test_the_conversion_guard_s_holds_and_releases_are_counted_per_range() -> None:
    registry = CollectorRegistry()

    Metrics(registry).count({"fraud_held|7900555": "2", "fraud_released|7900555": "1"})

    assert registry.get_sample_value("flashcall_fraud_holds_total", {"range": "7900555"}) == 2
    assert registry.get_sample_value("flashcall_fraud_releases_total", {"range": "7900555"}) == 1
