"""Dramatiq's Redis broker with two repairs: poison messages and idle latency.

Poison messages. Dramatiq's Redis consumer decodes each prefetched message as it hands
it out; one that is not JSON or lacks fields raises, the consumer thread restarts, and
the messages it had prefetched stay in its ack set until the process dies. Here a
message that cannot be processed is moved to the dead-letter queue (`<queue>.XQ`) with
its reason logged, and the consumer carries on with the messages around it. A consumer
that closes for any other reason puts its prefetched messages back on the queue.

Idle latency. An idle Dramatiq consumer polls with a growing sleep of up to a second,
which a user typing a code would feel. The flashcall functions push a token onto
`flashcall:wake:<queue>` with every message they enqueue; an idle consumer blocks on
that list (BLPOP) for as long as it would have slept, and so wakes at once.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq import Middleware
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message, get_encoder
from dramatiq.middleware import AsyncIO, default_middleware

from worker import keys
from worker.logging import get_logger
from worker.middleware import LogContext, RuntimeBoot

__all__ = ["FlashcallBroker", "build_broker"]

log = get_logger(__name__)

_MESSAGE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}

# Finds the id of a prefetched message by its body (a message we cannot decode tells us
# nothing else) and moves it from the consumer's ack set to the dead-letter queue.
_DEAD_LETTER_RAW = """
local acks, messages, xqueue, xmessages = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local body, now = ARGV[1], ARGV[2]
for _, id in ipairs(redis.call('SMEMBERS', acks)) do
    if redis.call('HGET', messages, id) == body then
        redis.call('ZADD', xqueue, now, id)
        redis.call('HSET', xmessages, id, body)
        redis.call('HDEL', messages, id)
        redis.call('SREM', acks, id)
        return id
    end
end
return false
"""


def _problem(fields: Any, queue_name: str) -> str | None:
    """Why a decoded message cannot be processed, or None when it can."""
    if not isinstance(fields, dict):
        return "message is not a JSON object"
    missing = sorted(set(_MESSAGE_FIELDS) - set(fields))
    if missing:
        return "message lacks " + ", ".join(missing)
    for name, kind in _MESSAGE_FIELDS.items():
        value = fields[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"message field {name!r} has the wrong type"
    unknown = sorted(set(fields) - set(_MESSAGE_FIELDS))
    if unknown:
        return "message has unknown fields " + ", ".join(unknown)
    if not isinstance(fields["options"].get("redis_message_id"), str):
        return "message options lack redis_message_id"
    if fields["queue_name"] != queue_name:
        return f"message names queue {fields['queue_name']!r} but sits on {queue_name!r}"
    eta = fields["options"].get("eta")
    if eta is not None and (not isinstance(eta, int | float) or isinstance(eta, bool)):
        return "message option 'eta' is not a number"
    return None


class _Consumer(_RedisConsumer):
    broker: FlashcallBroker

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    message = self._decode(data)
                    if message is None:
                        continue
                    self.misses = 0
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)

                messages: list[bytes | None] = []
                room = self.prefetch - self.outstanding_message_count
                if room > 0:
                    self.message_cache = messages = self.broker.do_fetch(self.queue_name, room)
                if not messages:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    if room > 0 and not self.queue_name.endswith(".DQ"):
                        self.broker.client.blpop([keys.wake(self.queue_name)], backoff_ms / 1000)
                    else:
                        time.sleep(backoff_ms / 1000)
                    return None
        except redis.ConnectionError as e:
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _decode(self, data: bytes | None) -> Message[Any] | None:
        if data is None:
            # The id was on the queue but its body was gone (purged or never written).
            log.warning("queue entry without a message body skipped", queue=self.queue_name)
            return None
        try:
            fields = get_encoder().decode(data)
        except DecodeError:
            self._dead_letter(data, "message is not UTF-8 JSON")
            return None
        problem = _problem(fields, self.queue_name)
        if problem is not None:
            self._dead_letter(data, problem)
            return None
        fields["args"] = tuple(fields["args"])
        return Message(**fields)

    def _dead_letter(self, data: bytes, reason: str) -> None:
        broker = self.broker
        message_id = broker.dead_letter_raw(
            keys=[
                keys.consumer_acks(broker.broker_id, self.queue_name),
                keys.queue_messages(self.queue_name),
                keys.dead_letters(q_name(self.queue_name)),
                keys.dead_letter_messages(q_name(self.queue_name)),
            ],
            args=[data, current_millis()],
        )
        log.error(
            "poison message moved to the dead-letter queue",
            queue=self.queue_name,
            redis_message_id=message_id.decode() if isinstance(message_id, bytes) else message_id,
            reason=reason,
        )

    def close(self) -> None:
        """Return prefetched messages that were never handed out, instead of stranding them."""
        cached, self.message_cache = self.message_cache, []
        returned: list[Any] = []
        for data in cached:
            message = self._decode(data)
            if message is not None:
                returned.append(message)
        if returned:
            try:
                self.requeue(returned)  # type: ignore[no-untyped-call]
            except redis.ConnectionError:
                log.warning(
                    "could not return prefetched messages; they come back after the heartbeat timeout",
                    queue=self.queue_name,
                    count=len(returned),
                )
        super().close()


class FlashcallBroker(RedisBroker):
    """The Redis broker under the `flashcall` namespace, with the consumer above."""

    def __init__(self, *, client: redis.Redis, middleware: list[Middleware] | None = None) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            client=client, namespace=keys.BROKER_NAMESPACE, middleware=middleware
        )
        self.dead_letter_raw = client.register_script(_DEAD_LETTER_RAW)

    @property
    def consumer_class(self) -> type[_Consumer]:
        return _Consumer


def build_broker(redis_url: str) -> FlashcallBroker:
    """The broker every worker process uses, with the router's middleware after Dramatiq's own."""
    client = redis.Redis.from_url(redis_url)
    middleware: list[Middleware] = [kind() for kind in default_middleware]
    middleware += [AsyncIO(), RuntimeBoot(client=client), LogContext()]
    return FlashcallBroker(client=client, middleware=middleware)
