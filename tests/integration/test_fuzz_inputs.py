"""Bad input, fuzzed: producer requests and provider callbacks, on a real redis-server.

Whatever a producer sends to flashcall_start, flashcall_check or flashcall_cancel is either
accepted or refused with one of the errors docs/protocol.md lists: never a Lua runtime
error, never a hang, and a refusal writes nothing (no verification, no event, no queued
message). Whatever a provider posts to the callback receiver is answered 200, 400, 404, 409
or 410, never 500, and only a 200 that is not a repeat queues anything.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import CALLBACK, GUARD
from worker.callbacks.app import MAX_BODY_BYTES, create_app
from worker.core import keys
from worker.redis import functions
from worker.redis.functions import PublishedConfig
from worker.redis.library import install
from worker.redis.store import Store

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Every refusal docs/protocol.md documents ("Errors"), as Redis words it after "ERR ".
DOCUMENTED_REFUSALS = re.compile(
    "flashcall: (?:"
    + "|".join(
        [
            r"expected one argument: a JSON object",
            r"request is \d+ bytes, the limit is 4096",
            r"request is not a JSON object",
            r"request is not a JSON object: [0-9A-Za-z.+-]+(?:\.\.\.)? is not a JSON number",
            r"unknown field '.*'",
            r"'id' is required and must be a string",
            r"'id' must be 1 to 128 characters of letters, digits and \. _ : - "
            r"\(starting with a letter or digit\)",
            r"'phone' is required and must be a string",
            r"'phone' must be a Russian number: \+7XXXXXXXXXX, 7XXXXXXXXXX or 8XXXXXXXXXX",
            r"'policy' must be a policy name from routing\.yaml",
            r"unknown policy '.*': it is not in routing\.yaml",
            r"'channels' must be a non-empty list of flashcall, voice, sms",
            r"'channels' may hold only flashcall, voice and sms",
            r"'channels' names (?:flashcall|voice|sms) twice",
            r"'code_length' must be an integer from 4 to 6",
            r"'ttl' must be an integer from 30 to 86400",
            r"'client_ip' must be an IPv4 or IPv6 address",
            r"'metadata' must be a JSON object",
            r"'metadata' is \d+ bytes, the limit is 1024",
            r"'metadata' may hold only finite numbers",
            r"id '.*' is already used by a verification of another phone",
            r"'code' is required: a string of 4 to 8 digits",
            r"expected one argument: a verification id "
            r"\(1 to 128 characters of letters, digits and \. _ : -\)",
        ]
    )
    + ")",
    re.DOTALL,
)

TOKEN = "fuzz-token"

# -- strategies ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
#: JSON number tokens that Python's json module never writes but a producer's encoder might.
raw_numbers = st.sampled_from(
    ["1e999", "-1e999", "NaN", "-NaN", "Infinity", "-Infinity", "0x10", "1E400", "-0", "600.0", "4.5", "1e2"]
)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True) | st.text(max_size=140)
phones = (
    st.from_regex(r"(\+7|7|8)[ ()-]?9[0-9]{2}[ ()-]?[0-9]{3}-?[0-9]{2}-?[0-9]{2}", fullmatch=True)
    | st.text(alphabet="+0123456789 -()", max_size=20)
    | json_values
)
start_fields: dict[str, st.SearchStrategy[Any]] = {
    "policy": st.sampled_from(["default", "voice_first", "vip", "a b", ""]) | json_values,
    "channels": st.lists(st.sampled_from(["flashcall", "voice", "sms", "fax"]), max_size=4) | json_values,
    "code_length": st.integers(0, 10) | json_values,
    "ttl": st.sampled_from([29, 30, 600, 86400, 86401]) | json_values,
    "client_ip": st.sampled_from(["203.0.113.7", "2001:db8::1", "::ffff:1.2.3.4", "1::2::3"])
    | st.from_regex(r"[0-9a-fA-F:.]{0,46}", fullmatch=True)
    | json_values,
    "metadata": st.dictionaries(st.text(max_size=10), json_values, max_size=5) | json_values,
}
start_requests = st.fixed_dictionaries(
    {"id": ids, "phone": phones},
    optional={**start_fields, "callback": json_values, "": json_values},
)
check_requests = st.fixed_dictionaries(
    {"id": ids, "code": st.from_regex(r"[0-9]{3,9}", fullmatch=True) | json_values},
    optional={"phone": json_values},
)


def payloads(requests: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Requests as a producer might send them: JSON of any shape, with a raw number token
    where a field was, cut short, not JSON at all, or not even UTF-8."""

    def with_raw_number(request: dict[str, Any], name: str, token: str) -> str:
        raw = {"n": "\x00raw"} if name == "metadata.n" else "\x00raw"
        return json.dumps({**request, name.split(".")[0]: raw}).replace('"\\u0000raw"', token)

    return st.one_of(
        requests.map(json.dumps),
        requests.map(lambda request: json.dumps(request, ensure_ascii=False)),
        st.builds(
            with_raw_number,
            requests,
            st.sampled_from(["code_length", "ttl", "metadata", "metadata.n", "id", "code"]),
            raw_numbers,
        ),
        st.builds(lambda r, n: json.dumps(r)[:n], requests, st.integers(0, 60)),
        st.builds(
            lambda r, n: json.dumps({**r, "metadata": {"pad": "x" * n}}), requests, st.integers(0, 5000)
        ),
        json_values.map(json.dumps),
        st.text(max_size=60),
    ).map(str.encode) | st.binary(max_size=60)


def ids_as_sent() -> st.SearchStrategy[bytes]:
    return (
        st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True).map(str.encode)
        | st.text(max_size=140).map(str.encode)
        | st.binary(max_size=30)
    )


callback_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={name: json_values | st.just(value) for name, value in CALLBACK.items()},
    ).map(lambda body: json.dumps(body).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 30_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 8_000).map(lambda depth: b'{"id":' * depth + b"1" + b"}" * depth),
    st.text(max_size=100).map(str.encode),
    st.binary(max_size=100),
).filter(lambda body: len(body) <= MAX_BODY_BYTES)

# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(library_url: str) -> Iterator[redis.Redis]:
    """The library on a redis-server of its own, answering in bytes, with routing.yaml's
    policies published; a call that hangs fails after 10 s."""
    client = redis.Redis.from_url(library_url, socket_timeout=10)
    client.flushall()
    install(client)
    config = PublishedConfig(policies=("default", "voice_first"), per_phone=((1, 120_000), (10, 86_400_000)))
    functions.publish_config(config).run(client)
    yield client
    client.close()


class Receiver:
    """The callback receiver's ASGI application, driven in-process over httpx."""

    def __init__(self, redis_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._store = Store.connect(redis_url, pool_size=4)
        app = create_app(self._store)
        app.state.store = self._store  # what the application's lifespan does when served
        self._http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://receiver"
        )

    def post(self, path: str, body: bytes) -> httpx.Response:
        """The final answer, as a provider's HTTP client that follows redirects sees it
        (Starlette redirects `/callbacks/a/b/` to `/callbacks/a/b`)."""
        return self._loop.run_until_complete(self._http.post(path, content=body, follow_redirects=True))

    def close(self) -> None:
        self._loop.run_until_complete(self._http.aclose())
        self._loop.run_until_complete(self._store.aclose())
        self._loop.close()


@pytest.fixture(scope="module")
def receiver(library_url: str, server: redis.Redis) -> Iterator[Receiver]:
    """The callback receiver in-process, with one token issued for provider vp, its attempt
    delivered as the call CALLBACK["id"]."""
    functions.start(json.dumps({"id": "callback-order", "phone": "+79990000099"})).run(server)
    now = _redis_now(server)
    claimed = functions.begin_attempt(
        "callback-order",
        expected_attempt=0,
        now_ms=now,
        step=0,
        channel="voice",
        provider="vp",
        code_hash="",
        deadline_ms=now + 30_000,
        guard=GUARD,
        callback_token=TOKEN,
        provider_type="voicepassword",
    ).send(server)
    assert cast(list[bytes], claimed)[0] == b"ok"
    delivered = functions.attempt_delivered(
        "callback-order",
        attempt=1,
        now_ms=now,
        provider="vp",
        channel="voice",
        step=0,
        ref=CALLBACK["id"],
        price_e4=3500,
        code_hash="",
        provider_checks=False,
        step_deadline_ms=now + 30_000,
        latency_ms=100,
        day=GUARD.day,
        poll_at_ms=0,
    ).send(server)
    assert delivered == b"ok"
    client = Receiver(library_url)
    yield client
    client.close()


def _redis_now(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


# -- helpers ------------------------------------------------------------------------------------


def snapshot(client: redis.Redis) -> dict[str, Any]:
    """What a refused request must leave as it was."""
    verify, check = keys.queue(keys.VERIFY_QUEUE), keys.queue(keys.CHECK_QUEUE)
    return {
        "keys": sorted(cast(list[bytes], client.keys("*"))),
        "events": client.xlen(keys.EVENTS) if client.exists(keys.EVENTS) else 0,
        "queued": (client.llen(verify), client.llen(check)),
        "sequence": client.get(keys.SEQUENCE),
    }


def queued(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    ids = cast(list[bytes], client.lrange(keys.queue(queue), 0, -1))
    bodies = cast(list[bytes], client.hmget(keys.queue_messages(queue), ids)) if ids else []
    return [json.loads(body) for body in bodies]


def call(
    client: redis.Redis, function: Callable[[str], functions.Call[Any]], argument: bytes
) -> tuple[str, str]:
    """('answer', text) or ('refused', message) of a function of one argument, given any bytes
    for it, which its wrapper would not send."""
    try:
        answer = client.fcall(function("").name, 0, argument)
    except redis.ResponseError as error:
        return "refused", str(error)
    return "answer", cast(bytes, answer).decode()


def assert_clear_refusal(message: str) -> None:
    assert DOCUMENTED_REFUSALS.fullmatch(message), f"not a documented refusal: {message!r}"


# -- producer requests -----------------------------------------------------------------------


@FUZZ
@given(payload=payloads(start_requests))
def test_a_start_request_is_answered_or_refused_with_a_documented_error(
    server: redis.Redis, payload: bytes
) -> None:
    kind, text = call(server, functions.start, payload)
    if kind == "refused":
        assert_clear_refusal(text)
    else:
        answer = json.loads(text)
        assert answer["status"] in ("pending", "sending", "sent", "failed", "expired")
        assert isinstance(answer["created"], bool)


@FUZZ
@given(payload=payloads(start_requests))
def test_a_refused_start_writes_nothing(server: redis.Redis, payload: bytes) -> None:
    before = snapshot(server)
    kind, _ = call(server, functions.start, payload)
    if kind == "refused":
        assert snapshot(server) == before


def _events_of(client: redis.Redis, verification_id: str) -> list[bytes]:
    return [
        fields[b"event"]
        for _, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(keys.EVENTS))
        if fields[b"id"] == verification_id.encode()
    ]


@FUZZ
@given(payload=payloads(start_requests))
def test_an_accepted_start_stores_a_whole_verification_or_a_refusals_small_record(
    server: redis.Redis, payload: bytes
) -> None:
    kind, text = call(server, functions.start, payload)
    if kind != "answer" or not json.loads(text)["created"]:
        return
    verification_id = json.loads(text)["id"]
    stored = cast(dict[bytes, bytes], server.hgetall(keys.verification(verification_id)))
    if json.loads(text).get("reason") == "rate_limited":
        assert set(stored) == {
            b"phone", b"policy", b"status", b"reason", b"limit", b"created_at", b"updated_at", b"expires_at"
        }  # fmt: skip
        assert _events_of(server, verification_id) == [b"failed"]
    else:
        assert {b"phone", b"status", b"expires_at", b"checks", b"max_checks", b"codes"} <= set(stored)
        assert _events_of(server, verification_id) == [b"created"]
        advances = [m["args"][0] for m in queued(server, keys.VERIFY_QUEUE) if m["actor_name"] == "advance"]
        assert verification_id in advances
    assert functions.status(verification_id).run(server)["id"] == verification_id


@FUZZ
@given(payload=payloads(check_requests))
def test_a_check_request_is_answered_with_a_reply_key_or_refused_with_a_documented_error(
    server: redis.Redis, payload: bytes
) -> None:
    kind, text = call(server, functions.check, payload)
    if kind == "refused":
        assert_clear_refusal(text)
    else:
        assert re.fullmatch(r"flashcall:reply:\d+", text)


@FUZZ
@given(payload=payloads(check_requests))
def test_a_refused_check_writes_nothing(server: redis.Redis, payload: bytes) -> None:
    before = snapshot(server)
    kind, _ = call(server, functions.check, payload)
    if kind == "refused":
        assert snapshot(server) == before


@FUZZ
@given(function=st.sampled_from([functions.cancel, functions.status]), argument=ids_as_sent())
def test_a_cancel_or_status_of_any_id_is_answered_or_refused_with_a_documented_error(
    server: redis.Redis, function: Callable[[str], functions.Call[Any]], argument: bytes
) -> None:
    before = snapshot(server)
    kind, text = call(server, function, argument)
    if kind == "refused":
        assert_clear_refusal(text)
        assert snapshot(server) == before
    else:
        assert json.loads(text)["id"].encode() == argument


# -- callbacks ----------------------------------------------------------------------------------


def queued_statuses(client: redis.Redis) -> int:
    return client.llen(keys.queue(keys.VERIFY_QUEUE))


@FUZZ
@given(body=callback_bodies)
def test_a_callback_body_is_answered_with_a_documented_status_never_500(
    receiver: Receiver, body: bytes
) -> None:
    response = receiver.post(f"/callbacks/vp/{TOKEN}", body)
    assert response.status_code in (200, 400, 409, 410), response.text


@FUZZ
@given(body=callback_bodies)
def test_only_an_accepted_callback_queues_a_status(
    receiver: Receiver, server: redis.Redis, body: bytes
) -> None:
    before = queued_statuses(server)
    response = receiver.post(f"/callbacks/vp/{TOKEN}", body)
    queued = response.status_code == 200 and not response.json().get("repeat")
    assert queued_statuses(server) == before + queued


@FUZZ
@given(
    provider=st.sampled_from(["vp", "mg"]) | st.text(min_size=1, max_size=10),
    token=st.sampled_from([TOKEN, TOKEN + "x", ""]) | st.text(min_size=1, max_size=40),
    body=callback_bodies,
)
def test_a_callback_to_an_unknown_address_is_answered_404_and_queues_nothing(
    receiver: Receiver, server: redis.Redis, provider: str, token: str, body: bytes
) -> None:
    if (provider, token) == ("vp", TOKEN):
        return
    before = queued_statuses(server)
    response = receiver.post(f"/callbacks/{quote(provider, safe='')}/{quote(token, safe='')}", body)
    assert response.status_code == 404, response.text
    assert queued_statuses(server) == before
