"""Call.run_then_pop: a check's FCALL and the BLPOP of its reply key in one write (the HTTP
API's check), on a real Redis holding the library."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
import redis.asyncio

from worker.redis import functions

PHONE = "+79991234567"
TOKEN = "d4" * 16


def run_then_pop(url: str, call: functions.Call[Any], key: str, timeout: float) -> tuple[Any, str | None]:
    async def go() -> tuple[Any, str | None]:
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            return await call.run_then_pop(client, key, timeout)
        finally:
            await client.aclose()

    return asyncio.run(go())


def blocked_clients(client: redis.Redis) -> int:
    return int(client.info("clients")["blocked_clients"])


def check(verification_id: str, token: str = TOKEN) -> functions.Call[str]:
    return functions.check(
        json.dumps({"code": "4567"}), via=json.dumps({"id": verification_id, "reply": token})
    )


def test_the_answer_and_what_the_reply_key_held_come_back_together(
    library: redis.Redis, library_url: str
) -> None:
    answer, popped = run_then_pop(library_url, check("nobody"), functions.reply_key_of(TOKEN), 5)

    assert answer == functions.reply_key_of(TOKEN)
    assert popped is not None
    assert json.loads(popped) == {"id": "nobody", "result": "not_found"}


def test_nothing_pushed_within_the_timeout_pops_none(library: redis.Redis, library_url: str) -> None:
    functions.start(json.dumps({"id": "order-7", "phone": PHONE})).run(library)

    answer, popped = run_then_pop(library_url, check("order-7"), functions.reply_key_of(TOKEN), 0.1)

    assert (answer, popped) == (functions.reply_key_of(TOKEN), None)


def test_a_refused_call_raises_its_error_without_waiting_out_the_blpop(
    library: redis.Redis, library_url: str
) -> None:
    # A call that waited out a BLPOP of 600 s would meet the suite's timeout (pyproject.toml).
    with pytest.raises(redis.ResponseError, match="'reply' must be 16 to 64 letters and digits"):
        run_then_pop(library_url, check("nobody", token="short"), "k", 600)


def test_a_refused_call_leaves_no_blpop_held_in_redis(library: redis.Redis, library_url: str) -> None:
    async def go() -> int:
        client = redis.asyncio.Redis.from_url(library_url, decode_responses=True)
        try:
            with pytest.raises(redis.ResponseError):
                await check("nobody", token="short").run_then_pop(client, "k", 60)
            # The dropped connection reaches Redis on its next turn of the event loop.
            deadline = time.monotonic() + 5
            while blocked_clients(library) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return blocked_clients(library)
        finally:
            await client.aclose()

    assert asyncio.run(go()) == 0
