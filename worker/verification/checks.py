"""Code checks, answered on the worker thread that took the message.

The process's event loop carries every provider call in flight, hundreds of them when
providers are slow; a check queued behind them there waited up to a quarter of a second
under load. The common check needs no provider: the typed code's keyed hash goes to
`flashcall_apply_check`, which compares it with the codes delivered and answers the
producer, in one round trip from this thread. Only a code a provider keeps (Telphin), or
a Redis that lost the library, sends the check on to the event loop: the first to ask the
provider (Verifier.check_with_provider), the second to check again (Verifier.check).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import redis

from worker.core.codes import code_hash
from worker.core.errors import ConfigurationError, StoreUnavailable
from worker.logs.structured import get_logger
from worker.redis import functions

__all__ = ["CodeChecks", "hash_proof", "verdict"]

log = get_logger(__name__)


def hash_proof(secrets: Sequence[bytes], verification_id: str, code: str) -> str:
    """The typed code's HMAC under each accepted secret, current first: `hash:<hex>[,<hex>...]`.

    All of them travel in the one call, so that a rotation of the secret costs a check
    one HMAC more per previous secret, never a second round trip."""
    if not secrets:
        raise ConfigurationError("no code secret to hash the typed code with: set FLASHCALL_CODE_SECRET")
    return "hash:" + ",".join(code_hash(secret, verification_id, code) for secret in secrets)


def verdict(matched: bool) -> str:
    return "1" if matched else "0"


class CodeChecks:
    def __init__(
        self,
        client: redis.Redis,
        secret: bytes,
        now: Callable[[], float] = time.time,
        *,
        previous_secrets: Sequence[bytes] = (),
    ) -> None:
        """`previous_secrets`: those a rotation of the code secret still accepts."""
        self._client = client
        self._secrets = (secret, *previous_secrets)
        self._now = now

    def check(self, verification_id: str, code: str, reply_key: str) -> str | functions.AskProvider | None:
        """The check's result, already answered on the reply key; AskProvider, unanswered,
        when only the provider can judge the code (Verifier.check_with_provider); None when
        the event loop must make the whole check (a library to reinstall)."""
        proof = hash_proof(self._secrets, verification_id, code)
        try:
            result = functions.apply_check(
                verification_id, proof=proof, reply_key=reply_key, now_ms=int(self._now() * 1000)
            ).run(self._client)
        except redis.ResponseError as error:
            if "function not found" in str(error).lower():
                return None
            raise
        except (redis.ConnectionError, redis.TimeoutError) as error:
            raise StoreUnavailable(f"Redis is unreachable ({error}); the message will be retried") from error
        if not isinstance(result, functions.AskProvider):
            log.info("code checked", result=result)
        return result
