"""Metrics and logs of a two-process worker under a scripted mix of outcomes.

The counters, scraped from the worker's one exposition port, must match what the
sandbox recorded and what the test did, exactly; `promtool check metrics` must accept
them; and no log line of any process may show a full phone number, a code, an API key,
a password or the code secret.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from flashcall_dev.sandbox.app import PROVIDERS
from flashcall_dev.stack import LocalStack, free_port
from tests.support import OwnStack, Sandbox
from worker.client import Producer
from worker.core import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUTING = """
providers:
  vp:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    timeout: 1s
    breaker: {fail_max: 1000, reset_timeout: 1s}
    channels: {flashcall: {cost: 0.35}, voice: {cost: 0.35}}
  tel:
    type: telphin
    base_url: https://flashcall.telphin.ru
    credentials: {app_id: env:TELPHIN_APP_ID, app_secret: env:TELPHIN_APP_SECRET}
    timeout: 1s
    breaker: {fail_max: 1000, reset_timeout: 1s}
    channels: {flashcall: {cost: 0.40}}
policies:
  default:
    steps:
      - {channel: flashcall, timeout: 30s}
      - {channel: voice}
limits:
  per_phone: [{limit: 1000, per: 1m}]
health:
  min_samples: 100000
"""

#: How each of the 24 verifications goes: what the sandbox does with its first call, and
#: what the user types.
PLAN: list[tuple[dict[str, Any] | None, str]] = [
    *[(None, "right")] * 8,
    *[(None, "wrong")] * 4,
    *[({"http_status": 503}, "right")] * 4,
    *[({"error_code": "number_in_spam_list"}, "right")] * 3,
    *[({"hang": True}, "right")] * 2,
    *[({"error_code": "number_is_empty"}, "none")] * 3,
]


@pytest.fixture(scope="module")
def observed(own_stack: OwnStack) -> Iterator[dict[str, Any]]:
    """Run the plan once; answer what the tests compare."""
    with own_stack(ROUTING) as stack:
        port = free_port()
        stack.start_worker(
            processes=2, threads=16, metrics_port=port, env={"FLASHCALL_STATE_INTERVAL_MS": "200"}
        )
        yield run_plan(stack, port)


def run_plan(stack: LocalStack, port: int) -> dict[str, Any]:
    producer, sandbox = Producer.from_url(stack.redis_url), Sandbox(stack.sandbox_url)
    phones = [f"7999{7_000_000 + n:07d}" for n in range(len(PLAN))]
    for (behaviour, _), phone in zip(PLAN, phones, strict=True):
        if behaviour is not None:
            sandbox.script(phone, behaviour)
    for n, phone in enumerate(phones):
        producer.start(f"obs-{n}", "+" + phone, metadata={"n": n})
    for n in range(len(PLAN)):
        producer.wait_for(f"obs-{n}", {"delivered", "failed"}, timeout=20)
    checks: Counter[str] = Counter()
    codes: list[str] = []
    for n, ((_, typed), phone) in enumerate(zip(PLAN, phones, strict=True)):
        inbox = sandbox.inbox(phone)
        if inbox:
            codes.append(inbox[-1]["code"])
        if typed == "none":
            continue
        code = inbox[-1]["code"] if typed == "right" else ("0000" if inbox[-1]["code"] != "0000" else "1111")
        checks[producer.check(f"obs-{n}", code)["result"]] += 1
    # Every count the library keeps reaches a process within REPORT_INTERVAL (5 s).
    deadline = time.monotonic() + 10
    while producer.client.exists(keys.PREFIX + "metrics") and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    records = [
        record
        for spec in PROVIDERS
        for record in httpx.get(
            f"{stack.sandbox_url}/_sandbox/records", params={"provider": spec.name}
        ).json()["records"]
        if record["kind"] != "get" and record["path"] != "/auth/"
    ]
    logs = [
        path.read_text(errors="replace") for path in stack.log_dir.glob("*.log") if path.name != "redis.log"
    ]
    return {
        "metrics": text,
        "samples": parse(text),
        "records": records,
        "checks": checks,
        "phones": phones,
        "codes": codes,
        "logs": "\n".join(logs),
        "secret": stack.code_secret,
    }


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        found = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$", line)
        assert found, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (metric, have), value in samples.items() if metric == name and wanted <= have)


def sandbox_outcome(record: dict[str, Any]) -> str:
    if record["id"]:
        return "delivered"
    if record["fault"] == "hang":
        return "timeout"
    if record["http_status"] and record["http_status"] >= 500:
        return "provider_error"
    return {"number_in_spam_list": "refused", "number_is_empty": "bad_number"}[record["error_code"]]


def test_every_verification_started_is_counted_once(observed: dict[str, Any]) -> None:
    assert total(observed["samples"], "flashcall_verifications_started_total") == len(PLAN)


def test_provider_requests_match_the_sandboxs_records_by_provider_and_outcome(
    observed: dict[str, Any],
) -> None:
    names = {"voicepassword": "vp", "telphin": "tel"}
    expected = Counter((names[r["provider"]], sandbox_outcome(r)) for r in observed["records"])
    counted = Counter(
        {
            (dict(labels)["provider"], dict(labels)["outcome"]): int(value)
            for (metric, labels), value in observed["samples"].items()
            if metric == "flashcall_provider_requests_total"
        }
    )
    assert counted == expected


def test_the_latency_histogram_counts_every_request(observed: dict[str, Any]) -> None:
    assert total(observed["samples"], "flashcall_provider_request_duration_seconds_count") == len(
        observed["records"]
    )


def test_cost_is_what_the_sandbox_charged_plus_the_configured_cost_of_unpriced_calls(
    observed: dict[str, Any],
) -> None:
    charged = sum(
        (Decimal(r["price"]) for r in observed["records"] if r["id"] and r["price"] is not None), Decimal(0)
    )
    unpriced = sum(
        (Decimal("0.40") for r in observed["records"] if r["id"] and r["price"] is None), Decimal(0)
    )
    counted = Decimal(str(total(observed["samples"], "flashcall_cost_roubles_total")))
    assert counted.quantize(Decimal("0.01")) == (charged + unpriced).quantize(Decimal("0.01"))


def test_checks_are_counted_by_result(observed: dict[str, Any]) -> None:
    for result, count in observed["checks"].items():
        assert total(observed["samples"], "flashcall_checks_total", result=result) == count


def test_approvals_are_counted_as_finished_and_by_provider(observed: dict[str, Any]) -> None:
    approved = observed["checks"]["approved"]
    assert total(observed["samples"], "flashcall_verifications_finished_total", status="approved") == approved
    assert total(observed["samples"], "flashcall_approvals_total") == approved


def test_bad_numbers_are_counted_as_failed_verifications_with_their_reason(observed: dict[str, Any]) -> None:
    failed = total(
        observed["samples"], "flashcall_verifications_finished_total", status="failed", reason="bad_number"
    )
    assert failed == 3


def test_fallbacks_are_counted_by_reason(observed: dict[str, Any]) -> None:
    samples = observed["samples"]
    assert total(samples, "flashcall_fallbacks_total", reason="provider_error") == 4
    assert total(samples, "flashcall_fallbacks_total", reason="refused") == 3
    assert total(samples, "flashcall_fallbacks_total", reason="timeout") == 2


def test_dramatiqs_own_metrics_are_exposed_beside_the_routers(observed: dict[str, Any]) -> None:
    assert total(observed["samples"], "dramatiq_messages_total", actor_name="advance") >= len(PLAN)


def test_breaker_state_is_a_gauge_per_provider(observed: dict[str, Any]) -> None:
    assert total(observed["samples"], "flashcall_breaker_state", provider="vp") == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is installed by .ci/run")
def test_promtool_accepts_the_metrics(observed: dict[str, Any]) -> None:
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=observed["metrics"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_no_log_line_shows_a_full_phone_number(observed: dict[str, Any]) -> None:
    for phone in observed["phones"]:
        for form in (phone, "+" + phone, "8" + phone[1:]):
            assert form not in observed["logs"]


def test_no_log_line_shows_a_code(observed: dict[str, Any]) -> None:
    codes = set(observed["codes"])
    for line in observed["logs"].splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        for value in walk(entry):
            assert not (isinstance(value, str) and value in codes), line
            assert not (isinstance(value, str) and re.search(r"check_code\('[^']*', '\d", value)), line


def test_no_log_line_shows_a_key_password_or_secret(observed: dict[str, Any]) -> None:
    secrets = [value for spec in PROVIDERS for value in spec.credentials.values()] + [observed["secret"]]
    for secret in secrets:
        assert secret not in observed["logs"]


def walk(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)
    else:
        yield value


def test_the_scenarios_logged_what_they_did(observed: dict[str, Any]) -> None:
    """The log checks above are only worth something if the scenarios were logged."""
    logs = observed["logs"]
    assert logs.count('"attempt delivered"') >= len(PLAN) - 3
    assert '"attempt failed"' in logs
    assert '"code checked"' in logs
