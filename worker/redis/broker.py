"""Dramatiq's Redis broker with three repairs: poison messages, idle latency, recovery.

Poison messages. Dramatiq's Redis consumer fetches message bodies without their ids and
decodes each as it hands it out; one that is not JSON or lacks fields raises, the
consumer thread restarts, and the messages it had prefetched stay in its ack set until
the process dies. Here the fetch returns ids with bodies; a message that cannot be
processed goes to the dead-letter queue (`<queue>.XQ`) under its id, with its reason
logged, and the consumer carries on. A consumer that closes puts its prefetched
messages back on the queue.

Idle latency and idle cost. An idle Dramatiq consumer polls with a growing sleep of up to
a second, which a user typing a code would feel, and each poll is a fetch (a script of
three commands). The flashcall functions push a token onto `flashcall:wake:<queue>` with
every message they enqueue, and so does this broker with every message Dramatiq enqueues
here (retries into the delay queue, delayed messages coming due) or a consumer hands back.
An idle consumer blocks on that list (BLPOP) for up to a second, and so wakes at once; when
the wait ends without a token, it fetches only if the queue holds anything (LLEN: a
producer may enqueue without a token, docs/protocol.md) or a maintenance pass just ran.
An idle consumer so costs two commands a second.

Round trips. A fetch that found fewer messages than it had room for emptied the queue: the
consumer waits on the wake list next instead of asking again. Acknowledgements travel
with the next fetch (in a batch of their own only while the consumer hands out prefetched
messages, or when it has no room); a fetch pops with one LPOP and a count, and writes no
heartbeat (the maintenance passes do).

Codes. A dead letter of a check keeps no typed code: before a message of an actor with
secret arguments is stored in the dead-letter queue, by either path (refused here, or
failed and nacked by Dramatiq), its secret argument is replaced (worker/logs/redaction.py).

Recovery. Dramatiq returns a dead worker's unacknowledged messages during "maintenance",
which it runs on a random 1 in 1,000 of its commands; a quiet system can wait for it
indefinitely. Each consumer here runs Dramatiq's own maintenance on its queue at a
fixed interval instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from dramatiq import Middleware
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff, current_millis, q_name
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message, get_encoder

from worker.core import keys
from worker.logs import redaction
from worker.logs.structured import get_logger

__all__ = ["MAINTENANCE_INTERVAL", "FlashcallBroker"]

log = get_logger(__name__)

#: Seconds between maintenance passes of each consumer (Dramatiq's are random). A pass
#: also renews the process's heartbeat, which fetches no longer write (Dramatiq's write
#: one each): it must come well within Dramatiq's heartbeat timeout (60 s). Every fetch
#: follows a check that a pass is due.
MAINTENANCE_INTERVAL = 15.0
#: Wake tokens kept per queue, as the library keeps them (flashcall.lua's WAKE_TOKENS).
WAKE_TOKENS = 16

_MESSAGE_FIELDS: dict[str, type] = {
    "queue_name": str,
    "actor_name": str,
    "args": list,
    "kwargs": dict,
    "options": dict,
    "message_id": str,
    "message_timestamp": int,
}

# Dramatiq's ack (a message done: out of the consumer's unacknowledged set, its body gone) of
# the ids ARGV[first] onwards. A message no longer in the set (returned to the queue meanwhile)
# keeps its body; several are looked up in one command.
_ACK_FUNCTION = """
local function ack(acks, messages, first)
    local ids = {}
    for i = first, #ARGV do ids[#ids + 1] = ARGV[i] end
    if #ids == 1 then
        if redis.call('SREM', acks, ids[1]) > 0 then redis.call('HDEL', messages, ids[1]) end
    elseif #ids > 1 then
        local held, done = redis.call('SMISMEMBER', acks, unpack(ids)), {}
        for i, id in ipairs(ids) do
            if held[i] == 1 then done[#done + 1] = id end
        end
        if #done > 0 then
            redis.call('SREM', acks, unpack(done))
            redis.call('HDEL', messages, unpack(done))
        end
    end
end
"""

# The acks of ARGV[2] onwards, then Dramatiq's fetch without its heartbeat: pop up to ARGV[1],
# remember as unacknowledged; answers ids with bodies.
_FETCH = (
    _ACK_FUNCTION
    + """
local queue, messages, acks = KEYS[1], KEYS[2], KEYS[3]
ack(acks, messages, 2)
local out, ids = {}, redis.call('LPOP', queue, ARGV[1])
if ids then
    redis.call('SADD', acks, unpack(ids))
    local bodies = redis.call('HMGET', messages, unpack(ids))
    for i, id in ipairs(ids) do
        out[#out + 1] = id
        out[#out + 1] = bodies[i]
    end
end
return out
"""
)

_ACK_MANY = (
    _ACK_FUNCTION
    + """
ack(KEYS[1], KEYS[2], 1)
return #ARGV
"""
)

# Dramatiq's nack (a failed message out of the consumer's unacknowledged set, into the
# dead-letter queue), with the body to keep given instead of copied from the queue.
_NACK = """
local acks, messages, dead, dead_messages = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, now, body = ARGV[1], ARGV[2], ARGV[3]
if redis.call('SREM', acks, id) > 0 and redis.call('HDEL', messages, id) > 0 then
    redis.call('ZADD', dead, now, id)
    redis.call('HSET', dead_messages, id, body)
end
"""

#: Acknowledgements are sent in batches of this many, or after this many seconds.
ACK_BATCH = 64
ACK_DELAY = 0.02


def _problem(fields: Any, queue_name: str, message_id: str) -> str | None:
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
    if fields["options"].get("redis_message_id") != message_id:
        return "message option redis_message_id is not the id the message is queued under"
    if fields["queue_name"] != queue_name:
        return f"message names queue {fields['queue_name']!r} but sits on {queue_name!r}"
    eta = fields["options"].get("eta")
    if eta is not None and (not isinstance(eta, int | float) or isinstance(eta, bool)):
        return "message option 'eta' is not a number"
    return None


class _Consumer(_RedisConsumer):
    broker: FlashcallBroker

    def __init__(self, broker: FlashcallBroker, queue_name: str, prefetch: int, timeout: int) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._wake_key = keys.wake(queue_name)
        self._quiet = False
        """Set when a wait for a wake token ended without one: no fetch until something says
        the queue may hold messages."""
        self._emptied = False
        """The last fetch emptied the queue: wait on the wake list before fetching again."""
        self._next_maintenance = 0.0
        self._acks: list[str] = []
        self._acks_lock = threading.Lock()
        self._acks_due = 0.0

    def ack(self, message: MessageProxy) -> None:
        """Acknowledge later, with others: a worker thread does not wait a round trip to
        Redis per message. Until sent (with the consumer's next fetch, at most its idle
        timeout later; in a batch at most ACK_DELAY later while it hands out prefetched
        messages; or at close) a message that was processed is still unacknowledged; were the
        process to die then, it would be processed again, which every actor is made to bear."""
        with self._acks_lock:
            if not self._acks:
                self._acks_due = time.monotonic() + ACK_DELAY
            self._acks.append(message.options["redis_message_id"])
            self.queued_message_ids.discard(message.message_id)

    def nack(self, message: MessageProxy) -> None:
        """Dramatiq's nack, but a message with secret arguments is kept without them: the
        message as processed (with the traceback Retries added), redacted."""
        if redaction.secret_argument(message.actor_name, message.queue_name) is None:
            super().nack(message)  # type: ignore[no-untyped-call]
            return
        try:
            self.broker.nack_redacted(
                self.queue_name,
                message.options["redis_message_id"],
                redaction.redacted_message(message).encode(),
            )
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]
        finally:
            self.queued_message_ids.discard(message.message_id)

    def _take_acks(self, *, force: bool = False) -> list[str]:
        """The acknowledgements to send now (all of them with `force`, else a batch when due)."""
        with self._acks_lock:
            if not self._acks or (
                not force and len(self._acks) < ACK_BATCH and time.monotonic() < self._acks_due
            ):
                return []
            taken, self._acks = self._acks, []
            return taken

    def _return_acks(self, taken: list[str]) -> None:
        """Kept for the next flush: Redis being away must not strand them unacknowledged."""
        with self._acks_lock:
            self._acks[:0] = taken

    def _flush_acks(self, *, force: bool = False) -> None:
        taken = self._take_acks(force=force)
        if not taken:
            return
        try:
            self.broker.ack_many(self.queue_name, taken)
        except redis.RedisError:
            self._return_acks(taken)
            raise

    def _fetch(self, room: int) -> None:
        """Fetch up to `room` messages, with every acknowledgement not yet sent."""
        taken = self._take_acks(force=True)
        try:
            self.message_cache = self.broker.fetch(self.queue_name, room, acks=taken)
        except redis.RedisError:
            self._return_acks(taken)
            raise
        self._emptied = len(self.message_cache) < room
        self._quiet = False

    def _worth_fetching(self) -> bool:
        """After a wait that ended without a token: acknowledgements to send go with a fetch;
        else a fetch only if the queue holds anything."""
        if not self._quiet:
            return True
        with self._acks_lock:
            if self._acks:
                return True
        return bool(self.broker.client.llen(keys.queue(self.queue_name)))

    def __next__(self) -> MessageProxy | None:
        try:
            while True:
                if self.message_cache:
                    self._flush_acks()
                    message_id, data = self.message_cache.pop(0)
                    message = self._decode(message_id, data)
                    if message is None:
                        continue
                    self.misses = 0
                    self.queued_message_ids.add(message.message_id)
                    return MessageProxy(message)

                self._maintain()
                room = self.prefetch - self.outstanding_message_count
                if room > 0 and not self._emptied and self._worth_fetching():
                    self._fetch(room)
                    if self.message_cache:
                        continue
                self._emptied = False
                # Waiting on the wake list, the acknowledgements not yet due go with the fetch
                # that follows; without room, that fetch may be a while.
                self._flush_acks(force=room <= 0)
                self._wait(room)
                return None
        except (redis.ConnectionError, redis.TimeoutError) as e:
            # Both mean Redis is away (redis-py's sockets time out after 5 s by default, as
            # when Redis is frozen): Dramatiq restarts the consumer instead of losing its thread.
            raise ConnectionClosed(e) from None  # type: ignore[no-untyped-call]

    def _wait(self, room: int) -> None:
        """Wait for work: with room for messages, on the queue's wake tokens, for as long as
        Dramatiq's idle timeout (a second); with none, for Dramatiq's growing backoff (a token
        taken now would be lost to the consumers that have room)."""
        if room > 0:
            self._quiet = self.broker.client.blpop([self._wake_key], self.timeout / 1000) is None
            return
        self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
        time.sleep(backoff_ms / 1000)

    def _maintain(self) -> None:
        now = time.monotonic()
        if now >= self._next_maintenance:
            self._next_maintenance = now + MAINTENANCE_INTERVAL
            self.broker.maintain(self.queue_name)
            # It may have returned a dead worker's messages to the queue, without a token.
            self._quiet = False

    def _decode(self, message_id: str, data: bytes | None) -> Message[Any] | None:
        if data is None:
            # The id was queued without a body (purged, or a producer's half-written message).
            self._dead_letter(message_id, b"", "queued id without a message body")
            return None
        try:
            fields = get_encoder().decode(data)
        except DecodeError:
            self._dead_letter(message_id, data, "message is not UTF-8 JSON")
            return None
        problem = _problem(fields, self.queue_name, message_id)
        if problem is not None:
            self._dead_letter(message_id, data, problem)
            return None
        fields["args"] = tuple(fields["args"])
        return Message(**fields)

    def _dead_letter(self, message_id: str, data: bytes, reason: str) -> None:
        self.broker.dead_letter(self.queue_name, message_id, data, reason)
        log.error(
            "poison message moved to the dead-letter queue",
            queue=self.queue_name,
            redis_message_id=message_id,
            reason=reason,
        )

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        try:
            super().requeue(messages)  # type: ignore[no-untyped-call]
            self.broker.wake(self.queue_name)
        except redis.RedisError as error:
            # As a connection error, which Dramatiq's consumer thread survives; any other
            # exception while it closes a consumer ends the thread, and with it the queue.
            raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Flush acknowledgements; return prefetched messages that were never handed out,
        instead of stranding them."""
        try:
            self._flush_acks(force=True)
        except redis.RedisError:
            # Away, frozen or at maxmemory: whatever it is, closing must not kill the
            # consumer's thread, or Dramatiq cannot restart the consumer.
            log.warning(
                "acknowledgements not sent; those messages will be processed again", queue=self.queue_name
            )
        cached, self.message_cache = self.message_cache, []
        if cached:
            try:
                self.broker.do_requeue(self.queue_name, *[message_id for message_id, _ in cached])
                self.broker.wake(self.queue_name)
            except redis.RedisError:
                log.warning(
                    "prefetched messages not returned; they come back once this worker's heartbeat times out",
                    queue=self.queue_name,
                    count=len(cached),
                )
        super().close()


class FlashcallBroker(RedisBroker):
    """The Redis broker under the `flashcall` namespace, with the consumer above."""

    def __init__(self, *, client: redis.Redis, middleware: list[Middleware] | None = None) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            client=client, namespace=keys.BROKER_NAMESPACE, middleware=middleware
        )
        self._fetch = client.register_script(_FETCH)
        self._ack_many = client.register_script(_ACK_MANY)
        self._nack = client.register_script(_NACK)

    @property
    def consumer_class(self) -> type[_Consumer]:
        return _Consumer

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Dramatiq's enqueue, and a wake token for the consumers of the queue it went to (the
        delay queue, with a delay)."""
        enqueued: Message[Any] = super().enqueue(message, delay=delay)
        self.wake(enqueued.queue_name)
        return enqueued

    def wake(self, queue_name: str) -> None:
        """Push a wake token for the idle consumers of a queue, as the library does."""
        key = keys.wake(queue_name)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, "1")
            pipe.ltrim(key, 0, WAKE_TOKENS - 1)
            pipe.execute()

    def fetch(
        self, queue_name: str, count: int, *, acks: Iterable[str] = ()
    ) -> list[tuple[str, bytes | None]]:
        """Acknowledge `acks`, then up to `count` messages as (id, body); a body is None when
        the id has none."""
        flat = self._fetch(
            keys=[
                keys.queue(queue_name),
                keys.queue_messages(queue_name),
                keys.consumer_acks(self.broker_id, queue_name),
            ],
            args=[count, *acks],
        )
        return [(flat[i].decode(), flat[i + 1] or None) for i in range(0, len(flat), 2)]

    def ack_many(self, queue_name: str, message_ids: list[str]) -> None:
        """Dramatiq's ack, for many messages in one round trip."""
        self._ack_many(keys=[keys.consumer_acks(self.broker_id, queue_name), keys.queue_messages(queue_name)],
                       args=message_ids)  # fmt: skip

    def dead_letter(self, queue_name: str, message_id: str, data: bytes, reason: str) -> None:
        """Move a fetched message to its queue's dead-letter queue, as Dramatiq's nack does,
        without the secret arguments it may carry."""
        canonical = q_name(queue_name)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.dead_letters(canonical), {message_id: current_millis()})
            pipe.hset(
                keys.dead_letter_messages(canonical),
                message_id,
                redaction.dead_letter_body(queue_name, data, reason),
            )
            pipe.hdel(keys.queue_messages(queue_name), message_id)
            pipe.srem(keys.consumer_acks(self.broker_id, queue_name), message_id)
            pipe.execute()

    def nack_redacted(self, queue_name: str, message_id: str, body: bytes) -> None:
        """Dramatiq's nack of a message this consumer holds, keeping `body` as its dead letter."""
        canonical = q_name(queue_name)
        self._nack(
            keys=[
                keys.consumer_acks(self.broker_id, queue_name),
                keys.queue_messages(queue_name),
                keys.dead_letters(canonical),
                keys.dead_letter_messages(canonical),
            ],
            args=[message_id, current_millis(), body],
        )

    def maintain(self, queue_name: str) -> None:
        """Dramatiq's maintenance of one queue, now: unacknowledged messages of workers whose
        heartbeat is older than the heartbeat timeout go back on the queue; old dead letters go."""
        self.scripts["dispatch"](
            keys=[self.namespace],
            args=[
                "qsize",
                current_millis(),
                queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                1,
                self._max_unpack_size(),  # type: ignore[no-untyped-call]
            ],
        )
