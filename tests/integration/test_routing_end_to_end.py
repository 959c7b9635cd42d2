"""Routing end to end: a stack of this module's own (redis-server, sandbox, a two-process
worker) running a routing file written here, so that breakers, health and money (kept in
Redis by provider name) and provider-wide sandbox scripts (kept by provider type) touch no
other test.

Each behaviour has its own providers and policy: a cheaper provider of one sandbox type
(mostly MobilGroup), to which faults are scripted per number, and a dearer backup of
another type (VoicePassword), which answers normally. Calls are counted in the sandbox's
records; waits are on the event stream, Redis state or the worker's log. The routing file
is laid out as Kubernetes mounts a ConfigMap (routing.yaml -> ..data/routing.yaml, ..data
-> a versioned directory), so that it can be both rewritten in place and swapped by
symlink.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis

from flashcall_dev.stack import LocalStack, ManagedProcess, local_stack
from tests.support import Sandbox
from worker.client import Event, Producer
from worker.core import keys
from worker.redis import functions
from worker.routing.config import RoutingConfig, load_routing
from worker.routing.report import breaker_report

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER_ENV = {
    "FLASHCALL_STATE_INTERVAL_MS": "200",
    "FLASHCALL_RELOAD_INTERVAL_MS": "200",
    "FLASHCALL_BALANCE_INTERVAL_MS": "500",
}
PROCESSES = 2
ALL_PROCESSES = PROCESSES + 1
"""The verification processes and the check process: each reads the routing file."""
HEALTH_MIN_SAMPLES = 4
MG, VP = "mobilgroup", "voicepassword"

#: name -> (sandbox type, flash call cost, extra fields); policies below name them.
PROVIDERS: dict[str, tuple[str, str, str]] = {
    # Fallback triggers: the cheaper provider fails as a number's script says.
    "fb-main": (MG, "0.30", "timeout: 1s\n    breaker: {fail_max: 50, reset_timeout: 60s}"),
    "fb-backup": (VP, "0.40", ""),
    "money-vp": (VP, "0.30", ""),
    "money-mg": (MG, "0.40", ""),
    "brk-main": (MG, "0.30", "breaker: {fail_max: 2, reset_timeout: 60s}"),
    "brk-backup": (VP, "0.40", ""),
    "mp-main": (MG, "0.30", "breaker: {fail_max: 3, reset_timeout: 60s}"),
    "mp-backup": (VP, "0.40", ""),
    "ho-main": (MG, "0.30", "breaker: {fail_max: 1, reset_timeout: 2s}"),
    "ho-backup": (VP, "0.40", ""),
    "cost-a": (VP, "0.50", ""),
    "cost-b": (VP, "0.30", ""),
    "cost-c": (VP, "0.40", ""),
    "hd-cheap": (MG, "0.30", "breaker: {fail_max: 100, reset_timeout: 60s}"),
    "hd-dear": (VP, "0.40", ""),
    "lim-vp": (VP, "0.30", ""),
    "rl-a": (VP, "0.30", ""),
    "rl-b": (VP, "0.40", ""),
    "cli-a": (VP, "0.10", ""),
    "cli-b": (MG, "0.20", ""),
    "cli-c": (VP, "0.30", 'prefixes: ["7800"]'),
    "cli-d": (VP, "0.40", ""),
}
POLICIES = {
    "fallback": ["fb-main", "fb-backup"],
    "money": ["money-vp", "money-mg"],
    "breaker": ["brk-main", "brk-backup"],
    "multiprocess": ["mp-main", "mp-backup"],
    "halfopen": ["ho-main", "ho-backup"],
    "cost": ["cost-a", "cost-b", "cost-c"],
    "health": ["hd-cheap", "hd-dear"],
    "limits": ["lim-vp"],
    "reload": ["rl-a", "rl-b"],
    "cli": ["cli-a", "cli-b", "cli-c", "cli-d"],
}
#: A range on the routing file's block list, which no other test numbers from.
BLOCKED_RANGE = "7999000"
CREDENTIALS = {VP: "{api_key: env:VOICEPASSWORD_API_KEY}", MG: "{api_key: env:MOBILGROUP_API_KEY}"}


def routing_text(urls: dict[str, str], costs: dict[str, str] | None = None) -> str:
    """The module's routing file; `costs` overrides flash call costs by provider name."""
    lines = ["providers:"]
    for name, (kind, cost, extra) in PROVIDERS.items():
        lines += [
            f"  {name}:",
            f"    type: {kind}",
            f"    base_url: {urls[kind]}",
            f"    credentials: {CREDENTIALS[kind]}",
            f"    channels: {{flashcall: {{cost: {(costs or {}).get(name, cost)}}}}}",
        ]
        lines += [f"    {extra}"] if extra else []
    lines += ["policies:", "  default:", "    steps: [{channel: flashcall, providers: [lim-vp]}]"]
    for policy, names in POLICIES.items():
        lines += [f"  {policy}:", f"    steps: [{{channel: flashcall, providers: [{', '.join(names)}]}}]"]
    lines += [
        "limits:",
        "  per_phone: [{limit: 2, per: 1h}]",
        "fraud:",
        f'  blocked: ["{BLOCKED_RANGE}"]',
        "health:",
        f"  min_samples: {HEALTH_MIN_SAMPLES}",
    ]
    return "\n".join(lines) + "\n"


class ConfigMap:
    """A directory as Kubernetes mounts a ConfigMap: `routing.yaml` -> `..data/routing.yaml`,
    `..data` -> `..<version>`; an update writes a new version and swaps `..data` atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "routing.yaml"
        self._versions = 0

    def publish(self, text: str) -> None:
        self._versions += 1
        version = self.root / f"..v{self._versions}"
        version.mkdir()
        (version / "routing.yaml").write_text(text, encoding="utf-8")
        staged = self.root / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(Path("..data") / "routing.yaml")

    def rewrite(self, text: str) -> None:
        """Edit the file in place (atomically, as an editor saving it would)."""
        target = self.path.resolve()
        staged = target.with_name("routing.yaml.tmp")
        staged.write_text(text, encoding="utf-8")
        os.replace(staged, target)


@dataclass
class Routed:
    """This module's stack and what the tests need of it."""

    stack: LocalStack
    worker: ManagedProcess
    configmap: ConfigMap
    original: str
    urls: dict[str, str]
    producer: Producer
    sandbox: Sandbox
    client: redis.Redis = field(init=False)
    in_force: str = field(init=False)
    """The text of the routing file the workers run on."""

    def __post_init__(self) -> None:
        self.client = self.producer.client
        self.in_force = self.original

    @property
    def config(self) -> RoutingConfig:
        return load_routing(self.configmap.path, environ={})

    def log_count(self, text: str) -> int:
        return self.worker.log_path.read_text(errors="replace").count(text)


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    configmap = ConfigMap(tmp_path_factory.mktemp("configmap"))
    with local_stack(routing_path=configmap.path) as stack:
        urls = dict(stack.provider_urls)
        original = routing_text(urls)
        configmap.publish(original)
        worker = stack.start_worker(processes=PROCESSES, threads=16, env=WORKER_ENV)
        producer = Producer.from_url(stack.redis_url)
        sandbox = Sandbox(stack.sandbox_url)
        try:
            yield Routed(stack, worker, configmap, original, urls, producer, sandbox)
        finally:
            sandbox.close()
            producer.close()


# --- helpers --------------------------------------------------------------------------


def script(routed: Routed, kind: str, number: str | None, *steps: dict[str, Any], **chance: Any) -> None:
    """Script the sandbox's `kind` for one number (or provider-wide when number is None)."""
    body: dict[str, Any] = {"provider": kind, "steps": list(steps)}
    if number is not None:
        body["number"] = number
    if chance:
        body["chance"] = chance
    httpx.post(f"{routed.stack.sandbox_url}/_sandbox/script", json=body, timeout=5).raise_for_status()


def set_balance(routed: Routed, kind: str, balance: str) -> None:
    answer = httpx.post(
        f"{routed.stack.sandbox_url}/_sandbox/balance", json={"provider": kind, "balance": balance}, timeout=5
    )
    answer.raise_for_status()


def calls(routed: Routed, kind: str, *numbers: str) -> int:
    """Requests the sandbox's `kind` received for these numbers."""
    return sum(len(routed.sandbox.records(number, provider=kind)) for number in numbers)


def start(routed: Routed, verification_id: str, phone: str, policy: str) -> dict[str, Any]:
    return routed.producer.start(verification_id, "+" + phone, policy=policy)


def finished(routed: Routed, verification_id: str, timeout: float = 15.0) -> Event:
    return routed.producer.wait_for(verification_id, {"delivered", "failed"}, timeout=timeout)


def verify(routed: Routed, verification_id: str, phone: str, policy: str) -> Event:
    """Start a verification and wait for its delivery (or failure)."""
    start(routed, verification_id, phone, policy)
    return finished(routed, verification_id)


def trail(routed: Routed, verification_id: str) -> list[tuple[str, str]]:
    """(event, provider) of every event of the verification after `created`."""
    return [(e["event"], e.get("provider", "")) for e in routed.producer.events(verification_id)][1:]


def breaker_state(routed: Routed, name: str) -> dict[str, str]:
    return cast(dict[str, str], routed.client.hgetall(keys.breaker(name)))


def redis_now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def holder(routed: Routed, verification_id: str) -> str:
    """The broker id (one per worker process) that holds the verification's advance message
    now: fetched and not yet acknowledged."""
    client = routed.client
    for key in cast(list[str], list(client.scan_iter(match=keys.consumer_acks("*", keys.VERIFY_QUEUE)))):
        message_ids = cast(set[str], client.smembers(key))
        if not message_ids:
            continue
        bodies = cast(
            list[str | None], client.hmget(keys.queue_messages(keys.VERIFY_QUEUE), list(message_ids))
        )
        if any(body and json.loads(body)["args"][0] == verification_id for body in bodies):
            return key.split("__acks__.", 1)[1].rsplit(".", 1)[0]
    raise AssertionError(f"no worker process holds the message of {verification_id}")


def started_on_a_process(routed: Routed, verification_id: str, phone: str, policy: str) -> str:
    """Start a verification, wait until a worker process is making its attempt, and answer
    which process it is. Starting the next only then lets idle processes take turns."""
    start(routed, verification_id, phone, policy)
    routed.producer.wait_for(verification_id, {"attempt_started"})
    return holder(routed, verification_id)


RELOADED = "routing file reloaded"
REFUSED = "routing file refused"


def changed(routed: Routed, write: Callable[[str], None], text: str, event: str = RELOADED) -> None:
    """Write the routing file and wait until every worker process logged `event`."""
    before = routed.log_count(event)
    write(text)
    wait_until(lambda: routed.log_count(event) >= before + ALL_PROCESSES, f"{event} by every process")
    if event == RELOADED:
        routed.in_force = text


@pytest.fixture
def restore_routing(routed: Routed) -> Iterator[None]:
    """Put the module's routing file back (and in force) after a test that changed it."""
    yield
    if routed.in_force != routed.original:
        changed(routed, routed.configmap.publish, routed.original)
    else:
        routed.configmap.publish(routed.original)


# --- fallback triggers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        pytest.param({"http_status": 503}, "provider_error", id="provider_error-5xx"),
        pytest.param({"hang": True}, "timeout", id="timeout-hang"),
        pytest.param({"error_code": "number_not_permitted"}, "refused", id="refused"),
    ],
)
def test_a_failed_call_falls_back_to_the_next_provider_of_the_step(
    routed: Routed, new_phone: Callable[[], str], behaviour: dict[str, Any], reason: str
) -> None:
    phone = new_phone()
    script(routed, MG, phone, behaviour)

    delivered = verify(routed, "trigger-" + reason, phone, "fallback")

    assert delivered["provider"] == "fb-backup"
    fallback = routed.producer.wait_for("trigger-" + reason, {"fallback"})
    assert (fallback["from_provider"], fallback["provider"], fallback["reason"]) == (
        "fb-main",
        "fb-backup",
        reason,
    )
    assert (calls(routed, MG, phone), len(routed.sandbox.calls(phone))) == (1, 1)


def test_out_of_money_falls_back_and_keeps_the_provider_out_until_a_balance_is_seen(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    # Only this test may read money-vp's balance, until it lets the workers poll again.
    routed.client.set(keys.balance_poll("money-vp"), "test", px=60_000)
    broke, skipped = new_phone(), new_phone()
    script(routed, VP, broke, {"error_code": "not_enough_money"})
    try:
        assert verify(routed, "money-1", broke, "money")["provider"] == "money-mg"
        fallback = routed.producer.wait_for("money-1", {"fallback"})
        assert (fallback["from_provider"], fallback["reason"]) == ("money-vp", "not_enough_money")
        assert routed.client.exists(f"{keys.PREFIX}provider:money-vp:no_money")

        assert verify(routed, "money-2", skipped, "money")["provider"] == "money-mg"
        assert trail(routed, "money-2") == [("attempt_started", "money-mg"), ("delivered", "money-mg")]
        assert calls(routed, VP, skipped) == 0

        set_balance(routed, VP, "250.00")
        routed.client.delete(keys.balance_poll("money-vp"))
        wait_until(
            lambda: (
                routed.client.hget(f"{keys.PREFIX}provider:money-vp", "balance") == "250.00"
                and not routed.client.exists(f"{keys.PREFIX}provider:money-vp:no_money")
            ),
            "the balance poll saw the positive balance",
        )
        # Each process sees the mark gone at its next state read (every 200 ms).
        back: list[str] = []
        deadline = time.monotonic() + 10
        while back[-1:] != ["money-vp"] and time.monotonic() < deadline:
            back.append(verify(routed, f"money-back-{len(back)}", new_phone(), "money")["provider"])
        assert back[-1:] == ["money-vp"], f"money-vp never back in rotation: {back}"
    finally:
        routed.client.delete(keys.balance_poll("money-vp"))
        set_balance(routed, VP, "1000.00")


def test_a_second_verification_skips_the_provider_whose_breaker_the_first_ones_opened(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    failing = [new_phone(), new_phone()]
    for number, phone in enumerate(failing):
        script(routed, MG, phone, {"http_status": 503})
        assert verify(routed, f"breaker-{number}", phone, "breaker")["provider"] == "brk-backup"
    assert breaker_state(routed, "brk-main")["state"] == "open"
    healthy = new_phone()

    delivered = verify(routed, "breaker-skipped", healthy, "breaker")

    assert delivered["provider"] == "brk-backup"
    assert trail(routed, "breaker-skipped") == [
        ("attempt_started", "brk-backup"),
        ("delivered", "brk-backup"),
    ]
    assert calls(routed, MG, healthy) == 0
    assert routed.producer.status("breaker-skipped")["attempts"] == 1


# --- breakers across processes --------------------------------------------------------


def test_a_breaker_opened_by_fail_max_failures_is_skipped_by_every_worker_process(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    first = new_phone()
    script(routed, MG, first, {"http_status": 503})
    assert verify(routed, "mp-first", first, "multiprocess")["provider"] == "mp-backup"
    # The rest fail slowly at mp-main and deliver slowly at mp-backup, so that each is still
    # held by its worker process when asked which it is, and several are in flight at once.
    burst = {f"mp-{n}": new_phone() for n in range(8)}
    for phone in burst.values():
        script(routed, MG, phone, {"latency_ms": 300, "http_status": 503})
        script(routed, VP, phone, {"latency_ms": 800})
    processes = {
        vid: started_on_a_process(routed, vid, phone, "multiprocess") for vid, phone in burst.items()
    }
    for vid in burst:
        assert finished(routed, vid)["provider"] == "mp-backup"
    assert breaker_state(routed, "mp-main")["state"] == "open"
    assert calls(routed, MG, first, *burst.values()) == 3

    after = {f"mp-open-{n}": new_phone() for n in range(6)}
    for phone in after.values():
        script(routed, VP, phone, {"latency_ms": 600})
    processes |= {
        vid: started_on_a_process(routed, vid, phone, "multiprocess") for vid, phone in after.items()
    }
    for vid in after:
        assert finished(routed, vid)["provider"] == "mp-backup"

    assert calls(routed, MG, *after.values()) == 0
    assert len(set(processes.values())) == PROCESSES, f"one process took every verification: {processes}"
    assert len({processes[vid] for vid in after}) == PROCESSES, (
        "only one process took verifications while the breaker was open"
    )


def test_after_the_reset_timeout_exactly_one_trial_call_goes_through_and_closes_the_breaker(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    failing = new_phone()
    script(routed, MG, failing, {"http_status": 503})
    assert verify(routed, "ho-open", failing, "halfopen")["provider"] == "ho-backup"
    opened = breaker_state(routed, "ho-main")
    assert opened["state"] == "open"
    due = int(opened["opened_at"]) + 2_000
    wait_until(lambda: redis_now_ms(routed.client) >= due, "the reset timeout is over")
    # Every number's trial call would take a while: the others are claimed meanwhile.
    racing = {f"ho-trial-{n}": new_phone() for n in range(4)}
    for phone in racing.values():
        script(routed, MG, phone, {"latency_ms": 700})

    with ThreadPoolExecutor(max_workers=len(racing)) as pool:
        list(pool.map(lambda item: start(routed, item[0], item[1], "halfopen"), racing.items()))
    providers = sorted(finished(routed, vid)["provider"] for vid in racing)

    assert providers == ["ho-backup", "ho-backup", "ho-backup", "ho-main"]
    assert calls(routed, MG, *racing.values()) == 1
    assert breaker_state(routed, "ho-main")["state"] == "closed"
    [row] = [
        line
        for line in breaker_report(routed.client, routed.config).splitlines()
        if line.startswith("ho-main")
    ]
    assert row.split()[1:3] == ["closed", "0/1"]


# --- ranking --------------------------------------------------------------------------


def test_the_cheapest_healthy_provider_of_the_channel_takes_every_verification(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    phones = {f"cost-{n}": new_phone() for n in range(3)}

    providers = [verify(routed, vid, phone, "cost")["provider"] for vid, phone in phones.items()]

    assert providers == ["cost-b", "cost-b", "cost-b"]
    assert all(
        trail(routed, vid) == [("attempt_started", "cost-b"), ("delivered", "cost-b")] for vid in phones
    )


@pytest.fixture
def mobilgroup_failing(routed: Routed) -> Iterator[None]:
    """Every MobilGroup call without a script of its number's own answers 503."""
    script(routed, MG, None, probability=1.0, behaviour={"http_status": 503})
    yield
    script(routed, MG, None)


@pytest.mark.usefixtures("mobilgroup_failing")
def test_a_cheaper_provider_that_keeps_failing_loses_first_place_after_min_samples(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    # Each process ranks from its own snapshot of the health windows, read every 200 ms:
    # keep verifying until three in a row leave hd-cheap alone.
    called_cheap: list[bool] = []
    deadline = time.monotonic() + 10
    while called_cheap[-3:] != [False, False, False] and time.monotonic() < deadline:
        phone = new_phone()
        assert verify(routed, f"health-{len(called_cheap)}", phone, "health")["provider"] == "hd-dear"
        called_cheap.append(calls(routed, MG, phone) == 1)

    assert called_cheap[:HEALTH_MIN_SAMPLES] == [True] * HEALTH_MIN_SAMPLES, called_cheap
    assert called_cheap[-3:] == [False, False, False], called_cheap
    state = functions.routing_state(
        now_ms=redis_now_ms(routed.client), window_ms=300_000, day="0", providers=["hd-cheap"]
    ).run(routed.client)
    health = state["hd-cheap"]["health"]["flashcall"]
    assert (health["ok"], health["fail"]) == (0, called_cheap.count(True))


# --- per-number limits ----------------------------------------------------------------


def test_the_routing_files_per_number_limits_hold_for_every_process(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    phone = new_phone()
    assert json.loads(cast(str, routed.client.get(keys.PREFIX + "config:limits"))) == [[2, 3_600_000]]
    for n in range(2):
        assert verify(routed, f"limit-{n}", phone, "limits")["event"] == "delivered"

    refused = start(routed, "limit-2", phone, "limits")

    assert (refused["status"], refused["reason"]) == ("failed", "rate_limited")
    assert 3590 <= refused["retry_after"] <= 3600
    assert [e["event"] for e in routed.producer.events("limit-2")] == ["failed"]
    assert len(routed.sandbox.calls(phone)) == 2


# --- reload ---------------------------------------------------------------------------


def reload_costs(routed: Routed, **costs: str) -> str:
    return routing_text(routed.urls, {name.replace("_", "-"): cost for name, cost in costs.items()})


@pytest.mark.usefixtures("restore_routing")
def test_a_rewritten_routing_file_changes_the_provider_chosen(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    assert verify(routed, "reload-before", new_phone(), "reload")["provider"] == "rl-a"

    changed(routed, routed.configmap.rewrite, reload_costs(routed, rl_a="0.50"))

    assert verify(routed, "reload-after", new_phone(), "reload")["provider"] == "rl-b"


@pytest.mark.usefixtures("restore_routing")
def test_a_configmap_symlink_swap_changes_the_provider_chosen(
    routed: Routed, new_phone: Callable[[], str]
) -> None:
    assert verify(routed, "swap-before", new_phone(), "reload")["provider"] == "rl-a"

    changed(routed, routed.configmap.publish, reload_costs(routed, rl_a="0.50"))

    assert verify(routed, "swap-after", new_phone(), "reload")["provider"] == "rl-b"


@pytest.mark.usefixtures("restore_routing")
@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        pytest.param(
            "fail_max: 2,", "fail_max: 0,", "providers.brk-main.breaker.fail_max", id="invalid-field"
        ),
        pytest.param(
            "env:MOBILGROUP_API_KEY", "env:UNSET_KEY", "environment variable UNSET_KEY", id="unset-credential"
        ),
    ],
)
def test_an_invalid_rewrite_is_refused_and_the_last_good_configuration_stays(
    routed: Routed, new_phone: Callable[[], str], old: str, new: str, error: str
) -> None:
    # Were it taken, rl-b would be chosen.
    invalid = reload_costs(routed, rl_a="0.50").replace(old, new, 1)
    refused_before = routed.log_count(REFUSED)

    changed(routed, routed.configmap.rewrite, invalid, event=REFUSED)

    phone = new_phone()
    assert verify(routed, f"invalid-{phone}", phone, "reload")["provider"] == "rl-a"
    log = routed.worker.log_path.read_text(errors="replace").splitlines()
    refusals = [json.loads(line) for line in log if REFUSED in line][refused_before:]
    assert len(refusals) == ALL_PROCESSES
    assert all(error in entry["error"] for entry in refusals)


# --- the operator commands ------------------------------------------------------------


def flashcall(routed: Routed, *args: str) -> str:
    """Run the `flashcall` command against this stack and answer its output."""
    done = subprocess.run(
        [sys.executable, "-m", "worker", *args, "--file", str(routed.configmap.path)],
        env={**os.environ, "REDIS_URL": routed.stack.redis_url},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


@pytest.fixture
def cli_state(routed: Routed) -> Iterator[None]:
    """cli-a's breaker open, cli-b's balance below its cost, as the workers would record them."""
    now = redis_now_ms(routed.client)
    functions.breaker_set("cli-a", "open", now_ms=now).run(routed.client)
    functions.provider_balance("cli-b", balance=Decimal("0.05"), now_ms=now).run(routed.client)
    yield
    functions.breaker_reset(["cli-a", "cli-b"]).run(routed.client)


def row(output: str, provider: str) -> str:
    """The table row of a provider: its name is the first column (after `->` if chosen)."""
    [found] = [
        line
        for line in output.splitlines()
        if line.split()[:1] in ([provider], ["->"]) and provider in line.split()[:2]
    ]
    return found


@pytest.mark.usefixtures("cli_state")
def test_routing_explain_tells_which_provider_is_chosen_and_why_the_others_are_not(routed: Routed) -> None:
    output = flashcall(routed, "routing", "explain", "+79991234567", "--policy", "cli")

    assert "chosen: the lowest score" in row(output, "cli-d")
    assert "dropped: breaker open" in row(output, "cli-a")
    assert "dropped: balance 0.05 below the cost" in row(output, "cli-b")
    assert "dropped: does not serve this number's prefix" in row(output, "cli-c")
    assert "79991234567" not in output


def test_routing_explain_refuses_a_kazakh_number_as_the_worker_does(routed: Routed) -> None:
    output = flashcall(routed, "routing", "explain", "+77011234567", "--policy", "cli")

    assert output.splitlines()[-1].startswith("refused: bad_number: not an assigned Russian number")
    assert "chosen" not in output


def fresh(prefix: str) -> str:
    """A number of this prefix nobody started yet in this module."""
    return prefix + f"{secrets.randbelow(10 ** (11 - len(prefix))):0{11 - len(prefix)}d}"


def used_up(routed: Routed, phone: str) -> None:
    """Both starts the module's per_phone limit allows within the hour, made and finished."""
    for n in range(2):
        finished(routed, start(routed, f"used-{phone}-{n}", phone, "cli")["id"])


#: case -> (the number's prefix, what the start meets before, the outcome both must state).
AGREEMENT: dict[str, tuple[str, Callable[[Routed, str], None] | None, str]] = {
    "a Russian mobile number": ("7916", None, "cli-a"),
    "a Moscow landline": ("7495", None, "cli-a"),
    "a Kazakh mobile number": ("7701", None, "bad_number"),
    "an Almaty landline": ("7727", None, "bad_number"),
    "a number on the block list": (BLOCKED_RANGE, None, "blocked"),
    "a number past its per_phone limit": ("7926", used_up, "rate_limited"),
}


def explained(output: str) -> str:
    """What an explanation's closing line says the start comes to: its provider or refusal."""
    last = output.splitlines()[-1]
    if last.startswith("next attempt: "):
        return last.removeprefix("next attempt: ").split(",")[0]
    assert last.startswith("refused: "), last
    return last.split(": ")[1]


def came_to(routed: Routed, verification_id: str, phone: str) -> str:
    """What a real start of the number came to: its first attempt's provider, or its refusal."""
    answer = start(routed, verification_id, phone, "cli")
    if answer["status"] == "failed":
        return str(answer["reason"])
    event = finished(routed, verification_id)
    return str(event.get("provider") or event["reason"])


@pytest.mark.parametrize("case", list(AGREEMENT))
def test_routing_explain_states_what_a_real_start_comes_to(routed: Routed, case: str) -> None:
    prefix, before, expected = AGREEMENT[case]
    phone = fresh(prefix)
    if before is not None:
        before(routed, phone)

    told = explained(flashcall(routed, "routing", "explain", "+" + phone, "--policy", "cli"))

    assert told == expected
    assert came_to(routed, f"agree-{phone}", phone) == told


@pytest.mark.usefixtures("cli_state")
def test_breakers_shows_an_open_breaker_and_when_its_trial_is_due(routed: Routed) -> None:
    output = flashcall(routed, "breakers")

    assert row(output, "cli-a").split()[:3] == ["cli-a", "open", "0/5"]
    assert "trial in" in row(output, "cli-a")
    assert row(output, "cli-d").split()[:3] == ["cli-d", "closed", "0/5"]


@pytest.mark.usefixtures("cli_state")
def test_breakers_reset_closes_the_breaker(routed: Routed) -> None:
    output = flashcall(routed, "breakers", "--reset", "cli-a")

    assert output.splitlines()[0] == "reset: cli-a"
    assert row(output, "cli-a").split()[:2] == ["cli-a", "closed"]
    assert not routed.client.exists(keys.breaker("cli-a"))
