"""Binds each message's verification id to every log line written while it is processed,
and hides its secret arguments (a check's typed code) from every one of them."""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq.broker import MessageProxy

from worker.logs import redaction

__all__ = ["LogContext"]


class LogContext(dramatiq.Middleware):
    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        # Worker threads are reused: start from a clean context every time.
        structlog.contextvars.clear_contextvars()
        redaction.reset_hidden(redaction.message_secrets(message))
        args = message.args
        structlog.contextvars.bind_contextvars(
            actor=message.actor_name,
            message_id=message.message_id,
            verification_id=args[0] if args and isinstance(args[0], str) else None,
            provider=None,
            channel=None,
            step=None,
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()
        redaction.reset_hidden()

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        structlog.contextvars.clear_contextvars()
        redaction.reset_hidden()
