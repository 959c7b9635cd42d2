"""Cross-cutting work around every message: process runtime and log context."""

from worker.middleware.deadletters import DeadLetterLog
from worker.middleware.logcontext import LogContext
from worker.middleware.runtime import RuntimeBoot

__all__ = ["DeadLetterLog", "LogContext", "RuntimeBoot"]
