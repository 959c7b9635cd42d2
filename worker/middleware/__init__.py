"""Cross-cutting work around every message: process roles and runtime, log context, dead letters."""

from worker.middleware.deadletters import DeadLetterLog
from worker.middleware.logcontext import LogContext
from worker.middleware.roles import ProcessRoles
from worker.middleware.runtime import RuntimeBoot

__all__ = ["DeadLetterLog", "LogContext", "ProcessRoles", "RuntimeBoot"]
