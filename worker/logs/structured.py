"""Structured logs: one JSON object per line in production, readable lines in development.

Every line goes through the same processors, Dramatiq's own stdlib logging included:
phone numbers are masked wherever they appear, values under secret-looking keys (codes,
API keys, passwords, callback URLs with their tokens) never leave the process, and codes
are hidden by value wherever they appear (worker/logs/redaction.py says how they are known).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from worker.logs import redaction
from worker.logs.redaction import REDACTED

__all__ = [
    "REDACTED",
    "configure",
    "configure_from_env",
    "get_logger",
    "hide_message_secrets",
    "hide_values",
    "mask_phones",
    "redact_secrets",
]

_SECRET_KEYS = frozenset(
    {
        "code",
        "codes",
        "auth_code",
        "api_key",
        "apikey",
        "app_id",
        "app_secret",
        "password",
        "secret",
        "code_secret",
        "authorization",
        "token",
        "callback_url",
        "security",
    }
)

_DIGIT = re.compile(r"[0-9]")
# A Russian number in any of the forms producers and providers write it.
_PHONE = re.compile(r"(?<![\d*])(\+?)([78])[\s(-]*(\d{3})[\s)-]*(\d{3})[\s-]*(\d{2})[\s-]*(\d{2})(?!\d)")
# URLs with a per-attempt callback token in their path.
_CALLBACK_TOKEN = re.compile(r"(/callbacks/[\w-]+/)[\w-]+")


def _mask_text(text: str) -> str:
    if _DIGIT.search(text):
        text = _PHONE.sub(lambda m: f"{m[1]}{m[2]}{m[3]}*****{m[6]}", text)
    if "/callbacks/" in text:
        text = _CALLBACK_TOKEN.sub(rf"\g<1>{REDACTED}", text)
    return text


def _is_secret(key: object) -> bool:
    return isinstance(key, str) and key.lower() in _SECRET_KEYS


#: Types of the values most lines hold: they nest nothing, and only an int can be a phone
#: number. Told apart by exact type first, since every value of every line goes through
#: these processors and isinstance against Mapping (an ABC) costs several times more.
_FLAT = frozenset({str, int, float, bool, type(None)})
#: No int below this has the eleven digits of a phone number.
_SMALLEST_PHONE = 7_000_000_000


def _redacted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: REDACTED if _is_secret(key) else _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def _masked(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return _mask_text(value)
    if kind is int:
        return _mask_text(str(value)) if value >= _SMALLEST_PHONE and _PHONE.fullmatch(str(value)) else value
    if kind in _FLAT:
        return value
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, Mapping):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and _PHONE.fullmatch(str(value)):
        return _mask_text(str(value))
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace values under secret-looking keys, at any depth."""
    # In place, and into nested values only where there are some: it runs for every line.
    for key, value in event_dict.items():
        if _is_secret(key):
            event_dict[key] = REDACTED
        elif type(value) not in _FLAT and isinstance(value, Mapping | list | tuple):
            event_dict[key] = _redacted(value)
    return event_dict


#: Where hide_message_secrets leaves what it found for hide_values, on the same line.
_LINE_SECRETS = "_flashcall_secrets"


def hide_message_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Find the secret arguments of the Dramatiq messages a line is about (a message among
    its arguments or values, or an actor's own `Received args=... kwargs=...`), for
    hide_values to hide on this line: Dramatiq writes some of them outside any message's
    context (`Received message ...` comes before any middleware runs)."""
    if event_dict.get("_from_structlog") is False:
        arguments = event_dict.pop("positional_args", ())
    else:
        arguments = event_dict.get("positional_args", ())
    if isinstance(arguments, Mapping):
        arguments = tuple(arguments.values())
    found = redaction.secrets_in(str(event_dict.get("logger", "")), arguments, event_dict.values())
    if found:
        event_dict[_LINE_SECRETS] = found
    return event_dict


def hide_values(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Replace every value hidden in this context, and those found on this line, wherever
    they stand in the line (exception texts included: they are rendered before)."""
    hidden = redaction.hidden_values(event_dict.pop(_LINE_SECRETS, ()))
    if hidden:
        for key, value in event_dict.items():
            event_dict[key] = redaction.scrub(value, hidden)
    return event_dict


def mask_phones(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask phone numbers (written as text or as integers) in every value."""
    for key, value in event_dict.items():
        event_dict[key] = _masked(value)
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        hide_message_secrets,
    ]


def configure(*, fmt: str = "auto", level: str = "INFO") -> None:
    """Route structlog and stdlib logging (Dramatiq's included) through one pipeline to stderr.

    fmt: "json", "console", or "auto" (console on a terminal, JSON otherwise).
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    # Tracebacks are rendered before masking: exception text can quote request values.
    final: list[Processor]
    if fmt == "json":
        # Frame locals stay out: they hold request bodies with keys and codes.
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        final = [tracebacks, redact_secrets, hide_values, mask_phones, structlog.processors.JSONRenderer()]
    else:
        final = [
            structlog.processors.format_exc_info,
            redact_secrets,
            hide_values,
            mask_phones,
            structlog.dev.ConsoleRenderer(colors=False),
        ]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        # The arguments of Dramatiq's lines, for hide_message_secrets (which drops them).
        pass_foreign_args=True,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    # Lines never show threads, processes or the calling source line: skip gathering them
    # for every record (the logging HOWTO's "Optimization"; a caller's frame costs most).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def configure_from_env() -> None:
    """configure() with FLASHCALL_LOG_FORMAT and FLASHCALL_LOG_LEVEL."""
    configure(
        fmt=os.environ.get("FLASHCALL_LOG_FORMAT", "auto"),
        level=os.environ.get("FLASHCALL_LOG_LEVEL", "INFO"),
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
