"""worker/core/keys.py and worker/redis/flashcall.lua name the same Redis keys and queues.

The Lua library builds its keys from constants declared at its top; these tests read that
text with regular expressions and compare it with the Python constants, so that renaming
one side alone fails here rather than in production.
"""

from __future__ import annotations

import re

import pytest

from worker.core import keys
from worker.redis.library import library_source, library_version

LUA = library_source()


def lua_string(name: str) -> str:
    """The value of `local NAME = '...'`."""
    found = re.search(rf"^local {name} = '([^']*)'", LUA, re.MULTILINE)
    assert found is not None, f"flashcall.lua declares no string {name}"
    return found.group(1)


def lua_prefixed(name: str) -> str:
    """The value of `local NAME = PREFIX .. '...'`, with PREFIX expanded."""
    found = re.search(rf"^local {name} = PREFIX \.\. '([^']*)'", LUA, re.MULTILINE)
    assert found is not None, f"flashcall.lua declares no PREFIX-based key {name}"
    return lua_string("PREFIX") + found.group(1)


def test_prefix_agrees() -> None:
    assert lua_string("PREFIX") == keys.PREFIX == "flashcall:"


def test_broker_namespace_agrees() -> None:
    assert lua_string("NAMESPACE") == keys.BROKER_NAMESPACE + ":"


def test_verify_queue_agrees() -> None:
    assert lua_string("VERIFY_QUEUE") == keys.VERIFY_QUEUE


def test_check_queue_agrees() -> None:
    assert lua_string("CHECK_QUEUE") == keys.CHECK_QUEUE


def test_events_key_agrees() -> None:
    assert lua_prefixed("K_EVENTS") == keys.EVENTS == "flashcall:events"


def test_sequence_key_agrees() -> None:
    assert lua_prefixed("K_SEQ") == keys.SEQUENCE == "flashcall:seq"


def test_refused_starts_key_agrees() -> None:
    assert lua_prefixed("K_REFUSED") == keys.REFUSED == "flashcall:refused"


def test_verification_key_agrees() -> None:
    assert re.search(r"local function vkey\(id\) return PREFIX \.\. 'v:' \.\. id end", LUA)
    assert keys.verification("order-42") == lua_string("PREFIX") + "v:" + "order-42"


@pytest.mark.parametrize("queue_name", [keys.VERIFY_QUEUE, keys.CHECK_QUEUE])
def test_queue_keys_agree_with_the_lua_enqueue(queue_name: str) -> None:
    namespace = lua_string("NAMESPACE")

    assert re.search(r"redis\.call\('RPUSH', NAMESPACE \.\. queue, mid\)", LUA)
    assert re.search(r"redis\.call\('HSET', NAMESPACE \.\. queue \.\. '\.msgs', mid, message\)", LUA)
    assert keys.queue(queue_name) == namespace + queue_name
    assert keys.queue_messages(queue_name) == namespace + queue_name + ".msgs"


@pytest.mark.parametrize("queue_name", [keys.VERIFY_QUEUE, keys.CHECK_QUEUE])
def test_wake_key_agrees_with_the_lua_enqueue(queue_name: str) -> None:
    assert re.search(r"local wake = PREFIX \.\. 'wake:' \.\. queue", LUA)
    assert keys.wake(queue_name) == lua_string("PREFIX") + "wake:" + queue_name


def test_timer_keys_live_under_the_python_timers_prefix() -> None:
    for name in ("K_STEP_TIMERS", "K_EXPIRY_TIMERS"):
        assert lua_prefixed(name).startswith(keys.TIMERS + ":")


def test_library_version_is_the_lua_version() -> None:
    assert library_version() == lua_string("VERSION")


def test_library_is_named_flashcall() -> None:
    assert LUA.startswith("#!lua name=flashcall\n")


def test_callback_token_key_agrees() -> None:
    # Named by the token's SHA-1 (redis.sha1hex in Lua), as begin_attempt writes it.
    assert "local function token_digest(token) return redis.sha1hex(token) end" in LUA
    assert "local function callback_key_of(digest) return PREFIX .. 'callback:' .. digest end" in LUA
    assert keys.callback_token("tok-1") == "flashcall:callback:f8d8a7af2041b07b1f974e47fab6a8de86301144"
