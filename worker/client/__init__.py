"""The Python producer client, the package's public API for backends written in Python:
the FCALL contract of docs/protocol.md, typed (producer.py), and the shard that owns a
phone number once one Redis primary is not enough (shards.py).

    from worker.client import Producer

    producer = Producer.from_url("redis://127.0.0.1:6379/0")
"""

from worker.client.producer import CheckTimeout, Event, Producer, StoreUnavailable
from worker.client.shards import Shards, jump_hash, shard_key, shard_of

__all__ = [
    "CheckTimeout",
    "Event",
    "Producer",
    "Shards",
    "StoreUnavailable",
    "jump_hash",
    "shard_key",
    "shard_of",
]
