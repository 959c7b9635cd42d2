"""Limits on more than the number (routing.yaml's limits.per_key ... overall), as
flashcall_start enforces them on a real redis-server: what each counts together, what a
refused start is told, and that only accepted starts count."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import OwnStack, cases
from worker.core import keys, phone
from worker.redis import functions
from worker.redis.functions import PublishedConfig
from worker.routing.config import RoutingConfig
from worker.routing.operators import operator_of, prefix_table
from worker.routing.published import published

pytestmark = pytest.mark.integration

MINUTE_MS = 60_000
#: Each phone of its own, so that the per-number limit never answers instead.
_phones = (f"+7999{n:07d}" for n in range(10**7))


def limit(
    client: redis.Redis, kind: str, *rules: tuple[int, int], operators: dict[str, str] | None = None
) -> None:
    config = PublishedConfig(
        policies=("default",), per_phone=((10**6, MINUTE_MS),), keyed={kind: rules}, operators=operators or {}
    )
    functions.publish_config(config).run(client)


def start(client: redis.Redis, verification_id: str, **fields: Any) -> dict[str, Any]:
    request = {"id": verification_id, "phone": next(_phones), **fields}
    return functions.start(json.dumps(request)).run(client)


def start_number(client: redis.Redis, verification_id: str, number: str) -> dict[str, Any]:
    return functions.start(json.dumps({"id": verification_id, "phone": "+" + number})).run(client)


def routing(**limits: Any) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "providers": {
                "vp": {
                    "type": "voicepassword",
                    "base_url": "https://vp.example.test",
                    "credentials": {"api_key": "env:VP_KEY"},
                    "channels": {"voice": {"cost": "1"}},
                }
            },
            "policies": {"default": {"steps": [{"channel": "voice"}]}},
            "limits": limits,
        }
    )


def statuses(client: redis.Redis, count: int, **fields: Any) -> list[str]:
    return [start(client, f"v-{time.time_ns()}-{n}", **fields)["status"] for n in range(count)]


def test_a_start_beyond_a_per_ip_limit_is_refused_naming_the_limit(library: redis.Redis) -> None:
    limit(library, "per_ip", (2, MINUTE_MS))
    statuses(library, 2, client_ip="203.0.113.7")

    answer = start(library, "third", client_ip="203.0.113.7")

    assert (answer["status"], answer["reason"], answer["limit"]) == ("failed", "rate_limited", "per_ip")
    assert 1 <= answer["retry_after"] <= 61


def test_another_address_is_not_held_by_a_per_ip_limit(library: redis.Redis) -> None:
    limit(library, "per_ip", (1, MINUTE_MS))
    start(library, "first", client_ip="203.0.113.7")

    assert start(library, "second", client_ip="203.0.113.8")["status"] == "pending"


def test_starts_without_a_client_ip_are_not_counted_per_ip(library: redis.Redis) -> None:
    limit(library, "per_ip", (1, MINUTE_MS))

    assert statuses(library, 3) == ["pending"] * 3


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ("2001:db8::1", "2001:0DB8:0000:0000:0000:0000:0000:0001"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8::ffff:1:1", "2001:db8:0:0:0:ffff:0.1.0.1"),
    ],
)
def test_one_address_written_two_ways_is_one_address(library: redis.Redis, first: str, again: str) -> None:
    limit(library, "per_ip", (1, MINUTE_MS))
    start(library, "first", client_ip=first)

    assert start(library, "second", client_ip=again)["limit"] == "per_ip"


def _canonical(address: str) -> tuple[str, str]:
    """What Python's ipaddress makes of an address and its /24 or /64, in the library's spelling."""
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if isinstance(parsed, ipaddress.IPv4Address):
        return str(parsed), str(ipaddress.ip_network(f"{parsed}/24", strict=False))
    groups = [f"{int(group, 16):x}" for group in parsed.exploded.split(":")]
    return ":".join(groups), ":".join(groups[:4]) + "::/64"


@pytest.mark.parametrize("case", [c for c in cases("ips") if c["valid"]], ids=lambda case: case["why"])
def test_every_address_start_takes_is_counted_as_python_reads_it(
    library: redis.Redis, case: dict[str, Any]
) -> None:
    config = PublishedConfig(
        policies=("default",),
        per_phone=((10**6, MINUTE_MS),),
        keyed={"per_ip": ((10**6, MINUTE_MS),), "per_network": ((10**6, MINUTE_MS),)},
    )
    functions.publish_config(config).run(library)
    start(library, "a", client_ip=case["input"])

    counted = {
        kind: [key.split(":", 3)[3] for key in library.scan_iter(f"{keys.PREFIX}limit:{kind}:*")]
        for kind in ("per_ip", "per_network")
    }

    assert (counted["per_ip"], counted["per_network"]) == tuple([name] for name in _canonical(case["input"]))


def test_a_per_network_limit_counts_an_ipv4_slash_24_together(library: redis.Redis) -> None:
    limit(library, "per_network", (2, MINUTE_MS))
    start(library, "a", client_ip="198.51.100.1")
    start(library, "b", client_ip="198.51.100.200")

    assert start(library, "c", client_ip="198.51.100.77")["limit"] == "per_network"
    assert start(library, "d", client_ip="198.51.101.1")["status"] == "pending"


def test_a_per_network_limit_counts_an_ipv6_slash_64_together(library: redis.Redis) -> None:
    limit(library, "per_network", (1, MINUTE_MS))
    start(library, "a", client_ip="2001:db8:1:2::1")

    assert start(library, "b", client_ip="2001:db8:1:2:ffff::9")["limit"] == "per_network"
    assert start(library, "c", client_ip="2001:db8:1:3::1")["status"] == "pending"


def test_a_per_range_limit_counts_numbers_that_differ_in_their_last_four_digits(library: redis.Redis) -> None:
    limit(library, "per_range", (2, MINUTE_MS))
    start_number(library, "a", "79161230001")
    start_number(library, "b", "79161239999")

    assert start_number(library, "c", "79161235555")["limit"] == "per_range"
    assert start_number(library, "d", "79161245555")["status"] == "pending"


def test_a_per_key_limit_counts_the_producers_limit_key(library: redis.Redis) -> None:
    limit(library, "per_key", (1, MINUTE_MS))
    start(library, "a", limit_key="account:1001")

    assert start(library, "b", limit_key="account:1001")["limit"] == "per_key"
    assert start(library, "c", limit_key="account:1002")["status"] == "pending"
    assert start(library, "d")["status"] == "pending"


def test_a_limit_key_that_is_not_a_short_plain_text_is_refused(library: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="'limit_key' must be 1 to 128 characters"):
        start(library, "a", limit_key="user name")


def test_an_overall_limit_counts_every_start(library: redis.Redis) -> None:
    limit(library, "overall", (3, MINUTE_MS))

    assert statuses(library, 4) == ["pending", "pending", "pending", "failed"]


def test_a_per_operator_limit_counts_numbers_of_one_operator_range(library: redis.Redis) -> None:
    limit(library, "per_operator", (1, MINUTE_MS), operators={"7916": "mts", "7926": "megafon"})
    start_number(library, "a", "79161234567")

    assert start_number(library, "b", "79167654321")["limit"] == "per_operator"
    assert start_number(library, "c", "79267654321")["status"] == "pending"


def test_a_refused_start_does_not_count_against_the_limits(library: redis.Redis) -> None:
    limit(library, "overall", (2, MINUTE_MS))
    statuses(library, 5)

    counts = library.hvals(keys.PREFIX + "limit:overall:all")

    assert sum(int(count) for count in counts) == 2


def test_the_refused_start_and_its_event_name_the_limit(library: redis.Redis) -> None:
    limit(library, "overall", (1, MINUTE_MS))
    start(library, "a")
    start(library, "refused")

    entries = cast(list[tuple[str, dict[str, str]]], library.xrange(keys.EVENTS))
    [event] = [fields for _, fields in entries if fields["id"] == "refused"]

    assert (event["event"], event["reason"], event["limit"]) == ("failed", "rate_limited", "overall")
    assert library.hget(keys.verification("refused"), "limit") == "overall"


def test_the_per_phone_limit_is_named_too(library: redis.Redis) -> None:
    limit(library, "overall", (100, MINUTE_MS))
    start_number(library, "a", "79991234567")
    functions.publish_config(PublishedConfig(policies=("default",), per_phone=((1, MINUTE_MS),))).run(library)

    assert start_number(library, "b", "79991234567")["limit"] == "per_phone"


def test_the_longest_wait_of_several_limits_is_the_one_told(library: redis.Redis) -> None:
    config = PublishedConfig(
        policies=("default",),
        per_phone=((10**6, MINUTE_MS),),
        keyed={"per_ip": ((1, MINUTE_MS),), "overall": ((1, 60 * MINUTE_MS),)},
    )
    functions.publish_config(config).run(library)
    start(library, "a", client_ip="203.0.113.7")

    answer = start(library, "b", client_ip="203.0.113.7")

    assert answer["limit"] == "overall"
    assert answer["retry_after"] > 60


def test_a_window_admits_starts_again_once_it_has_passed(library: redis.Redis) -> None:
    limit(library, "overall", (1, 1000))
    start(library, "a")
    refused = start(library, "b")
    time.sleep(2.1)

    assert refused["status"] == "failed"
    assert 1 <= refused["retry_after"] <= 2
    assert start(library, "c")["status"] == "pending"


def test_what_a_subject_holds_stays_a_few_fields_with_an_expiry(library: redis.Redis) -> None:
    limit(library, "overall", (10**6, 1000), (10**6, MINUTE_MS))
    for n in range(4):
        start(library, f"v-{n}")
        time.sleep(0.6)

    key = keys.PREFIX + "limit:overall:all"

    assert library.hlen(key) <= 4
    assert 0 < library.pttl(key) <= 2 * MINUTE_MS


def test_nothing_is_published_for_limits_routing_yaml_does_not_set(library: redis.Redis) -> None:
    limit(library, "per_operator", (1, MINUTE_MS), operators={"7916": "mts"})
    config = routing()
    functions.publish_config(published(config)).run(library)

    assert not library.exists(keys.PREFIX + "config:guards", keys.PREFIX + "config:operators")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(number=st.from_regex(r"\A79[0-9]{9}\Z"))
def test_start_places_a_number_in_the_operator_range_routing_learns_it_in(
    library: redis.Redis, number: str
) -> None:
    limit(library, "per_operator", (10**6, MINUTE_MS), operators=prefix_table({}))
    start_number(library, f"v-{number}", number)

    counted = {key.rsplit(":", 1)[1] for key in library.scan_iter(keys.PREFIX + "limit:per_operator:*")}
    for key in library.scan_iter(keys.PREFIX + "limit:per_operator:*"):
        library.delete(key)

    if phone.is_valid_russian(number):
        assert counted == {operator_of(number, {})}


def test_a_limit_per_operator_publishes_the_operator_table() -> None:
    config = routing(per_operator=[{"limit": 100, "per": "1m"}])

    assert published(config).operators == prefix_table({})


# --- safe and block lists -----------------------------------------------------------------


def listed(client: redis.Redis, lists: dict[str, str], **keyed: tuple[tuple[int, int], ...]) -> None:
    config = PublishedConfig(policies=("default",), per_phone=((1, MINUTE_MS),), keyed=keyed, lists=lists)
    functions.publish_config(config).run(client)


def test_a_number_of_a_blocked_range_is_refused_and_never_called(library: redis.Redis) -> None:
    listed(library, {"7900555": "blocked"})

    answer = start_number(library, "a", "79005551234")

    assert (answer["status"], answer["reason"], answer["created"]) == ("failed", "blocked", True)
    assert "retry_after" not in answer
    assert library.llen(keys.queue(keys.VERIFY_QUEUE)) == 0


def test_a_blocked_start_is_remembered_like_a_rate_limited_one(library: redis.Redis) -> None:
    listed(library, {"79005551234": "blocked"})
    start_number(library, "a", "79005551234")

    again = start_number(library, "a", "79005551234")

    assert (again["status"], again["reason"], again["created"]) == ("failed", "blocked", False)
    assert functions.status("a").run(library)["reason"] == "blocked"


def test_a_safe_number_inside_a_blocked_range_is_called(library: redis.Redis) -> None:
    listed(library, {"7900555": "blocked", "79005551234": "safe"})

    assert start_number(library, "a", "79005551234")["status"] == "pending"
    assert start_number(library, "b", "79005559999")["reason"] == "blocked"


def test_a_safe_range_passes_the_limits_on_what_starts_share(library: redis.Redis) -> None:
    listed(library, {"7999": "safe"}, overall=((1, MINUTE_MS),))

    assert [start(library, f"v-{n}")["status"] for n in range(3)] == ["pending"] * 3


def test_a_safe_number_is_still_held_by_its_own_numbers_limit(library: redis.Redis) -> None:
    listed(library, {"79991234567": "safe"})
    start_number(library, "a", "79991234567")

    assert start_number(library, "b", "79991234567")["limit"] == "per_phone"


def test_routing_yaml_refuses_a_prefix_that_is_both_safe_and_blocked() -> None:
    with pytest.raises(ValueError, match="7900 is both safe and blocked"):
        RoutingConfig.model_validate(
            {**routing().model_dump(mode="json"), "fraud": {"safe": ["7900"], "blocked": ["7900"]}}
        )


def test_the_fraud_lists_of_routing_yaml_are_published_with_their_lists() -> None:
    config = RoutingConfig.model_validate(
        {**routing().model_dump(mode="json"), "fraud": {"safe": ["79991234567"], "blocked": ["7900"]}}
    )

    assert published(config).lists == {"79991234567": "safe", "7900": "blocked"}


_RELOADED = """
providers:
  vp:
    type: voicepassword
    base_url: https://vp.example.test
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    channels: {voice: {cost: 0.35}}
policies:
  default:
    steps: [{channel: voice}]
"""


def test_a_block_list_saved_into_routing_yaml_holds_once_the_workers_reload_it(own_stack: OwnStack) -> None:
    with own_stack(_RELOADED) as stack:
        stack.start_worker(processes=1, threads=4, env={"FLASHCALL_RELOAD_INTERVAL_MS": "200"})
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        assert start_number(client, "before", "79005550001")["status"] == "pending"

        stack.routing_path.write_text(_RELOADED + "fraud: {blocked: ['7900555']}\n", encoding="utf-8")
        deadline = time.monotonic() + 20
        while not client.exists(keys.PREFIX + "config:lists") and time.monotonic() < deadline:
            time.sleep(0.1)

        assert start_number(client, "after", "79005550002")["reason"] == "blocked"
        client.close()
