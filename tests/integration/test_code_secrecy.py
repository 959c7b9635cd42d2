"""No code, typed or delivered, in any line a worker writes at any level, nor in any dead letter.

A stack of this module's own serves every kind of delivery the sandbox has: VoicePassword
flash calls and voice calls carrying the router's code and its SMS follow-up, MobilGroup
flash calls with the service's code and voice calls with the router's, Telphin flash calls
whose code only Telphin knows, and the REST gateway's flash calls. A worker runs at
DEBUG, INFO and WARNING, in both log formats, one after the other; each run verifies
every kind (a wrong code typed, then the code the phone got) and forces check messages
into the dead-letter queue by every path there is. Then every line the worker wrote, and
every key left in Redis, is searched for every code of the run.

Typed wrong codes and dead-lettered codes are 8 random digits, which nothing else in a
line contains; delivered codes are the sandbox's, found where they stand on their own
(not inside a longer number), with timestamps and masked phone numbers set aside.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis

from flashcall_dev.stack import LocalStack
from tests.support import OwnStack, Sandbox
from worker.client import Event, Producer
from worker.core import keys
from worker.logs.structured import REDACTED

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUTING = """
providers:
  vp:
    type: voicepassword
    base_url: https://vp.voicepassword.ru
    credentials: {api_key: env:VOICEPASSWORD_API_KEY}
    timeout: 2s
    channels: {flashcall: {cost: 0.35}, voice: {cost: 0.35}, sms: {cost: 3.30}}
  mg:
    type: mobilgroup
    base_url: https://voice.mobilgroup.ru
    credentials: {api_key: env:MOBILGROUP_API_KEY}
    timeout: 2s
    channels: {flashcall: {cost: 0.38}, voice: {cost: 0.40}}
  tel:
    type: telphin
    base_url: https://flashcall.telphin.ru
    credentials: {app_id: env:TELPHIN_APP_ID, app_secret: env:TELPHIN_APP_SECRET}
    timeout: 2s
    channels: {flashcall: {cost: 0.30}}
  gw:
    type: gateway
    base_url: https://gateway.invalid/api/message
    credentials: {login: env:GATEWAY_LOGIN, password: env:GATEWAY_PASSWORD}
    timeout: 2s
    channels: {flashcall: {cost: 0.45}}
    options: {variant: flashcall, ttl: "1"}
policies:
  default:
    steps: [{channel: flashcall, providers: [vp]}]
  vp_flash:
    steps: [{channel: flashcall, providers: [vp]}]
  vp_voice:
    steps: [{channel: voice, providers: [vp]}]
  vp_sms:
    steps: [{channel: flashcall, timeout: 1s, providers: [vp]}, {channel: sms, providers: [vp]}]
  mg_flash:
    steps: [{channel: flashcall, providers: [mg]}]
  mg_voice:
    steps: [{channel: voice, providers: [mg]}]
  tel_flash:
    steps: [{channel: flashcall, providers: [tel]}]
  gw_flash:
    steps: [{channel: flashcall, providers: [gw]}]
limits:
  per_phone: [{limit: 1000, per: 1m}]
health:
  min_samples: 100000
"""

#: policy -> the channel whose delivery carries the code the user types.
DELIVERIES = {
    "vp_flash": "flashcall",
    "vp_voice": "voice",
    "vp_sms": "sms",
    "mg_flash": "flashcall",
    "mg_voice": "voice",
    "tel_flash": "flashcall",
    "gw_flash": "flashcall",
}
#: (FLASHCALL_LOG_LEVEL, FLASHCALL_LOG_FORMAT) of each run.
RUNS = [("DEBUG", "json"), ("DEBUG", "console"), ("INFO", "json"), ("WARNING", "console")]
RUN_IDS = [f"{level}-{fmt}" for level, fmt in RUNS]

CHECKS, DELAYED, VERIFY = keys.CHECK_QUEUE, f"{keys.CHECK_QUEUE}.DQ", keys.VERIFY_QUEUE
#: Dead letters whose body is unreadable: kept as their size and reason only.
UNREADABLE = {"not-json", "not-utf8", "json-array"}

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?")
_MASKED_PHONE = re.compile(r"\+?[78]\d{3}\*{5}\d{2}")


@dataclass
class Run:
    log: str = ""
    typed: set[str] = field(default_factory=set)
    """Codes typed or carried by dead-lettered checks: 8 unusual digits each."""
    delivered: set[str] = field(default_factory=set)
    answers: dict[str, str] = field(default_factory=dict)
    """'<policy> <right|wrong>' -> the check's result."""
    dead: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """Dead-lettered message id -> (path, queue, the code it carried)."""


@dataclass
class Observed:
    runs: dict[str, Run]
    dead_letters: dict[str, dict[str, str]]
    """Every dead-letter hash in Redis: key -> {message id: body}."""
    dead_letter_keys: str
    """Every key with XQ in its name, and everything in it, as text."""
    redis_dump: str
    """Every key in Redis and everything in it, as text."""


def unusual_code() -> str:
    return str(secrets.randbelow(9 * 10**7) + 10**7)


def leaked(log: str, codes: set[str]) -> set[str]:
    """The codes that stand on their own somewhere in the log."""
    text = _MASKED_PHONE.sub("", _TIMESTAMP.sub("", log))
    return {code for code in codes if re.search(rf"(?<!\d){re.escape(code)}(?!\d)", text)}


def check_body(message_id: str, arguments: list[Any], **overrides: Any) -> str:
    body: dict[str, Any] = {
        "queue_name": CHECKS,
        "actor_name": "check_code",
        "args": arguments,
        "kwargs": {},
        "options": {"redis_message_id": message_id},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    body.update(overrides)
    return json.dumps(body)


def dead_letter_paths(tag: str, new_code: Callable[[], str]) -> list[tuple[str, str, str, str | bytes]]:
    """(path, queue, code, body) for every way a check message reaches the dead-letter queue."""
    out: list[tuple[str, str, str, str | bytes]] = []

    def add(path: str, queue: str, make: Callable[[str, str, str], str | bytes]) -> None:
        code = new_code()
        message_id = f"dead-{tag}-{path}"
        out.append((path, queue, code, make(message_id, code, f"flashcall:reply:{message_id}")))

    verification = f"secrecy-{tag}-dead"
    add("unknown-field", CHECKS, lambda m, c, r: check_body(m, [verification, c, r], surprise=1))
    add(
        "id-mismatch",
        CHECKS,
        lambda m, c, r: check_body(m, [verification, c, r], options={"redis_message_id": "x"}),
    )
    add("other-queue", CHECKS, lambda m, c, r: check_body(m, [verification, c, r], queue_name=VERIFY))
    add("not-json", CHECKS, lambda m, c, r: check_body(m, [verification, c, r])[:-30])
    add(
        "not-utf8",
        CHECKS,
        lambda m, c, r: check_body(m, [verification, c, r]).encode().replace(b"dead", b"\xff"),
    )
    add("json-array", CHECKS, lambda m, c, r: json.dumps([verification, c, r]))
    add("code-not-a-string", CHECKS, lambda m, c, r: check_body(m, [verification, int(c), r]))
    add("foreign-reply-key", CHECKS, lambda m, c, r: check_body(m, [verification, c, "elsewhere:1"]))
    add(
        "unexpected-keyword", CHECKS, lambda m, c, r: check_body(m, [verification, c, r], kwargs={"extra": 1})
    )
    add(
        "code-by-keyword",
        CHECKS,
        lambda m, c, r: check_body(m, [verification], kwargs={"code": c, "reply_key": r, "extra": 1}),
    )
    add(
        "unknown-actor", CHECKS, lambda m, c, r: check_body(m, [verification, c, r], actor_name="check_codes")
    )
    add(
        "delay-queue",
        DELAYED,
        lambda m, c, r: check_body(m, [verification, c, r], queue_name=DELAYED, surprise=1),
    )
    add("on-verifications", VERIFY, lambda m, c, r: check_body(m, [verification, c, r]))
    return out


def push(client: redis.Redis, queue: str, message_id: str, body: str | bytes) -> None:
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.queue_messages(queue), message_id, body)
        pipe.rpush(keys.queue(queue), message_id)
        pipe.rpush(keys.wake(queue), "1")
        pipe.execute()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def on_channel(channel: str) -> Callable[[Event], bool]:
    return lambda event: event["channel"] == channel


def dead_lettered(client: redis.Redis, queue: str, message_id: str) -> Callable[[], bool]:
    dead_set = keys.dead_letters(queue.removesuffix(".DQ"))
    return lambda: client.zscore(dead_set, message_id) is not None


def exercise(stack: LocalStack, producer: Producer, sandbox: Sandbox, tag: str, phones: Iterator[str]) -> Run:
    """Every kind of delivery with a wrong and a right check, then every dead-letter path."""
    run = Run()

    def new_code() -> str:
        while (code := unusual_code()) in run.typed:
            pass
        run.typed.add(code)
        return code

    for policy, channel in DELIVERIES.items():
        verification, phone = f"secrecy-{tag}-{policy}", next(phones)
        producer.start(verification, "+" + phone, policy=policy)
        producer.wait_for(verification, {"delivered"}, timeout=20, where=on_channel(channel))
        delivered = sandbox.inbox(phone)[-1]["code"]
        run.delivered.add(delivered)
        run.answers[f"{policy} wrong"] = producer.check(verification, new_code())["result"]
        run.answers[f"{policy} right"] = producer.check(verification, delivered)["result"]
    client = producer.client
    for path, queue, code, body in dead_letter_paths(tag, new_code):
        message_id = f"dead-{tag}-{path}"
        run.dead[message_id] = (path, queue, code)
        push(client, queue, message_id, body)
    for message_id, (path, queue, _) in run.dead.items():
        wait_until(dead_lettered(client, queue, message_id), f"{path} dead-lettered")
    return run


def text(value: object) -> str:
    # A poison body need not be UTF-8.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def dump(client: redis.Redis, pattern: str = "*") -> str:
    """Every key matching `pattern`, with all it holds, as text (`client` answers bytes)."""
    parts: list[str] = []
    for key in client.scan_iter(match=pattern, count=1000):
        kind = text(client.type(key))
        parts.append(text(key))
        if kind == "string":
            parts.append(text(client.get(key) or b""))
        elif kind == "hash":
            pairs = cast(dict[bytes, bytes], client.hgetall(key)).items()
            parts.extend(text(item) for pair in pairs for item in pair)
        elif kind == "list":
            parts.extend(map(text, client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.extend(map(text, client.smembers(key)))
        elif kind == "zset":
            parts.extend(map(text, client.zrange(key, 0, -1)))
        elif kind == "stream":
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(key))
            parts.extend(text(item) for _, fields in entries for pair in fields.items() for item in pair)
    return "\n".join(parts)


@pytest.fixture(scope="module")
def observed(own_stack: OwnStack) -> Iterator[Observed]:
    numbers = (f"79995{n:06d}" for n in range(secrets.randbelow(500_000), 1_000_000))
    with own_stack(ROUTING) as stack:
        producer, sandbox = Producer.from_url(stack.redis_url), Sandbox(stack.sandbox_url)
        runs: dict[str, Run] = {}
        for n, (level, fmt) in enumerate(RUNS):
            worker = stack.start_worker(
                processes=1,
                threads=8,
                name=f"worker-{level.lower()}-{fmt}",
                env={"FLASHCALL_LOG_LEVEL": level, "FLASHCALL_LOG_FORMAT": fmt},
            )
            run = exercise(stack, producer, sandbox, f"r{n}", numbers)
            # Stopped, so that every line is written and every acknowledgement sent.
            worker.stop()
            run.log = worker.log_path.read_text(errors="replace")
            runs[f"{level}-{fmt}"] = run
        raw = redis.Redis.from_url(stack.redis_url)
        dead_letters = {
            text(key): {
                text(name): text(body) for name, body in cast(dict[bytes, bytes], raw.hgetall(key)).items()
            }
            for key in raw.scan_iter(match="*.XQ.msgs")
        }
        yield Observed(
            runs=runs,
            dead_letters=dead_letters,
            dead_letter_keys=dump(raw, "*XQ*"),
            redis_dump=dump(raw),
        )
        raw.close()
        sandbox.close()
        producer.close()


@pytest.mark.parametrize("run", RUN_IDS)
def test_every_check_of_every_delivery_got_its_answer(observed: Observed, run: str) -> None:
    answers = observed.runs[run].answers
    assert answers == {
        **{f"{policy} wrong": "rejected" for policy in DELIVERIES},
        **{f"{policy} right": "approved" for policy in DELIVERIES},
    }


@pytest.mark.parametrize("run", RUN_IDS)
def test_no_line_the_worker_wrote_shows_a_typed_code(observed: Observed, run: str) -> None:
    found = observed.runs[run]
    assert leaked(found.log, found.typed) == set()


@pytest.mark.parametrize("run", RUN_IDS)
def test_no_line_the_worker_wrote_shows_a_delivered_code(observed: Observed, run: str) -> None:
    found = observed.runs[run]
    assert leaked(found.log, found.delivered) == set()


@pytest.mark.parametrize("run", ["DEBUG-json", "DEBUG-console"])
def test_at_debug_the_lines_that_carried_codes_are_written_without_them(observed: Observed, run: str) -> None:
    """The searches above are worth something only if the lines that held codes were written."""
    log = observed.runs[run].log
    assert re.search(rf"Received args=\('secrecy-[^']*', '{re.escape(REDACTED)}'", log)
    assert re.search(rf"Received message check_code\('secrecy-[^']*', '{re.escape(REDACTED)}'", log)
    assert "Retries exceeded for message" in log
    assert "Failed to process message check_code(" in log


@pytest.mark.parametrize("run", RUN_IDS)
def test_every_run_logged_its_dead_letters(observed: Observed, run: str) -> None:
    log = observed.runs[run].log
    assert "poison message moved to the dead-letter queue" in log
    assert "message moved to the dead-letter queue" in log.replace("poison message moved", "")


def test_no_dead_letter_record_holds_a_typed_code(observed: Observed) -> None:
    typed = {code for run in observed.runs.values() for code in run.typed}

    assert leaked(observed.dead_letter_keys, typed) == set()


def test_no_key_left_in_redis_holds_a_typed_code(observed: Observed) -> None:
    """Once a check is answered or dead-lettered, its message body is gone with its code."""
    typed = {code for run in observed.runs.values() for code in run.typed}

    assert leaked(observed.redis_dump, typed) == set()


def dead_letter(observed: Observed, message_id: str, queue: str) -> Any:
    return json.loads(observed.dead_letters[keys.dead_letter_messages(queue.removesuffix(".DQ"))][message_id])


def test_a_readable_dead_check_keeps_its_verification_and_reply_key_but_not_its_code(
    observed: Observed,
) -> None:
    for run in observed.runs.values():
        for message_id, (path, queue, _) in run.dead.items():
            if path in UNREADABLE:
                continue
            letter = dead_letter(observed, message_id, queue)
            arguments = letter["args"] + list(letter["kwargs"].values())
            assert arguments[0].startswith("secrecy-"), path
            assert REDACTED in arguments, path
            assert letter["options"]["redis_message_id"] in (message_id, "x"), path


def test_an_unreadable_dead_check_is_kept_as_its_size_and_reason(observed: Observed) -> None:
    for run in observed.runs.values():
        for message_id, (path, queue, _) in run.dead.items():
            if path in UNREADABLE:
                letter = dead_letter(observed, message_id, queue)
                assert letter["body"] == REDACTED
                assert letter["bytes"] > 0
                assert letter["reason"] in ("message is not UTF-8 JSON", "message is not a JSON object")
