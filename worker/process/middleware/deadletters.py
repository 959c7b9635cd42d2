"""Says why each message went to the dead-letter queue."""

from __future__ import annotations

import dramatiq
from dramatiq.broker import MessageProxy

from worker.logs import redaction
from worker.logs.structured import get_logger

__all__ = ["DeadLetterLog"]

log = get_logger(__name__)


class DeadLetterLog(dramatiq.Middleware):
    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        # Dramatiq keeps the failure on the proxy (no public accessor) until post-processing ends.
        error = message._exception
        # After the message's own context has ended: the reason may quote its arguments.
        with redaction.hiding(redaction.message_secrets(message)):
            log.error(
                "message moved to the dead-letter queue",
                queue=message.queue_name,
                actor=message.actor_name,
                message_id=message.message_id,
                reason=f"{type(error).__name__}: {error}" if error is not None else "retries exhausted",
            )
