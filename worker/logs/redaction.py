"""Codes out of logs and dead letters: the typed code a check carries, the codes delivered.

Matching the text a code is printed in misses every form nobody thought of (Dramatiq
prints a check as `check_code(...)` in one line, as `args=(...)` in another, inside a
traceback in a third). So codes are hidden by what they are, in two layers:

- By position. `check_code`'s argument `code` is secret. A dead letter of it keeps its
  body with that argument replaced, and any log line about a Dramatiq message of it (the
  message among the line's arguments, or the actor's own `Received args=...`) hides that
  argument's value.
- By value. While a message is processed, the values of its secret arguments are hidden
  from every log line written in its context; so is every code the router generates or
  a provider returns, from the moment it is known. The context is a contextvar, which
  follows a worker thread into the coroutines it starts: whatever logger writes the line
  (the router's, Dramatiq's, httpx's), in whatever form (an f-string, an exception's text),
  the value is replaced wherever it stands on its own (not inside a longer run of digits).
  A number that merely equals a code in such a line (a latency, an id's digits) is
  hidden too: this errs on the side of hiding.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.message import Message

from worker.core import keys

__all__ = [
    "REDACTED",
    "SECRET_ARGUMENTS",
    "SecretArgument",
    "dead_letter_body",
    "hidden_values",
    "hide",
    "hiding",
    "message_secrets",
    "redacted_message",
    "reset_hidden",
    "scoped",
    "scrub",
    "secret_argument",
    "secret_values",
    "secrets_in",
]

REDACTED = "[redacted]"

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SecretArgument:
    """An actor argument that must never be logged nor kept: where it is in a message."""

    actor: str
    queue: str
    name: str
    position: int


SECRET_ARGUMENTS = (SecretArgument(actor="check_code", queue=keys.CHECK_QUEUE, name="code", position=1),)
"""tests/unit/test_redaction.py checks each against its actor's signature."""

_BY_ACTOR = {secret.actor: secret for secret in SECRET_ARGUMENTS}
# A message on a queue of secrets is read as that queue's actor's, whatever actor it names:
# an unknown actor on `checks` is still most likely a check.
_BY_QUEUE = {secret.queue: secret for secret in SECRET_ARGUMENTS}

_HIDDEN: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "flashcall_hidden", default=frozenset()
)


def secret_argument(actor_name: object, queue_name: object = None) -> SecretArgument | None:
    """The secret argument of a message of this actor on this queue, if it has one."""
    found = _BY_ACTOR.get(actor_name) if isinstance(actor_name, str) else None
    if found is None and isinstance(queue_name, str):
        found = _BY_QUEUE.get(q_name(queue_name))
    return found


def _forms(value: object) -> set[str]:
    """The forms a secret value takes in text: as it is, and as repr() and JSON escape it
    (a line may quote a message's arguments or a request body); none when blank."""
    if isinstance(value, bool) or value is None:
        return set()
    text = value if isinstance(value, str) else str(value)
    if not text.strip():
        return set()
    return {text, repr(text)[1:-1], json.dumps(text)[1:-1]}


def secret_values(
    actor_name: object, args: object, kwargs: object, queue_name: object = None
) -> frozenset[str]:
    """The values of a message's secret arguments, as text."""
    secret = secret_argument(actor_name, queue_name)
    if secret is None:
        return frozenset()
    found: list[object] = []
    if isinstance(args, list | tuple) and len(args) > secret.position:
        found.append(args[secret.position])
    if isinstance(kwargs, Mapping) and secret.name in kwargs:
        found.append(kwargs[secret.name])
    return frozenset(form for value in found for form in _forms(value))


def message_secrets(message: Message[Any] | MessageProxy) -> frozenset[str]:
    return secret_values(message.actor_name, message.args, message.kwargs, message.queue_name)


def secrets_in(
    logger_name: str, arguments: Sequence[object], values: Iterable[object] = ()
) -> frozenset[str]:
    """The secret values of a log line about messages: those of every Dramatiq message
    among its positional arguments and other values, and the arguments of a secret actor's
    own `Received args=%r kwargs=%r` line (its logger is named after the actor)."""
    found: frozenset[str] = frozenset()
    for argument in (*arguments, *values):
        if isinstance(argument, Message | MessageProxy):
            found |= message_secrets(argument)
    actor = logger_name.rpartition(".")[2]
    if actor in _BY_ACTOR and len(arguments) >= 2:
        found |= secret_values(actor, arguments[0], arguments[1])
    return found


# --- by value ---------------------------------------------------------------------------


def hide(*values: object) -> None:
    """Hide these values from every log line written from here on in this context: a
    worker thread's until reset_hidden, a coroutine's until its `scoped` function returns."""
    added = {form for value in values for form in _forms(value)}
    if added:
        _HIDDEN.set(_HIDDEN.get() | added)


def reset_hidden(values: Iterable[str] = ()) -> None:
    """Hide exactly these values from here on in this context (none: hide nothing more)."""
    _HIDDEN.set(frozenset(values))


@contextlib.contextmanager
def hiding(values: Iterable[str]) -> Iterator[None]:
    """Hide these values, besides those already hidden, for the lines written inside."""
    token = _HIDDEN.set(_HIDDEN.get() | frozenset(values))
    try:
        yield
    finally:
        _HIDDEN.reset(token)


def scoped(function: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """What a coroutine function hides stays hidden until it returns, and no longer: a
    caller that runs many of them in one task does not collect their codes."""

    @functools.wraps(function)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        token = _HIDDEN.set(_HIDDEN.get())
        try:
            return await function(*args, **kwargs)
        finally:
            _HIDDEN.reset(token)

    return run


def hidden_values(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """What to hide in the current context, and `extra`: longest first, so that a value
    that is part of another never leaves the rest of it behind."""
    values = _HIDDEN.get()
    if extra:
        values = values | frozenset(extra)
    return tuple(sorted(values, key=len, reverse=True)) if values else ()


def _hide_in(text: str, values: tuple[str, ...]) -> str:
    # str.find rather than a regular expression: checks would compile one per typed code.
    for value in values:
        start = text.find(value)
        if start < 0:
            continue
        pieces: list[str] = []
        done = 0
        while start >= 0:
            end = start + len(value)
            if (start == 0 or not text[start - 1].isdigit()) and (
                end == len(text) or not text[end].isdigit()
            ):
                pieces += (text[done:start], REDACTED)
                done = end
                start = text.find(value, end)
            else:
                start = text.find(value, start + 1)
        text = "".join((*pieces, text[done:]))
    return text


def scrub(value: Any, values: tuple[str, ...]) -> Any:
    """The value with every hidden value replaced wherever it stands on its own (not inside
    a longer run of digits), at any depth; a number equal to one becomes the mark."""
    if isinstance(value, str):
        return _hide_in(value, values)
    if isinstance(value, Mapping):
        return {key: scrub(item, values) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item, values) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in values:
        return REDACTED
    if isinstance(value, Message | MessageProxy):
        # Rendered now, as Dramatiq prints it, rather than by a renderer that would not scrub it.
        return _hide_in(str(value), values)
    return value


# --- by position ------------------------------------------------------------------------


def _redacted_fields(fields: dict[str, Any], secret: SecretArgument) -> dict[str, Any]:
    """A message's fields (as decoded or as Message.asdict gives them) with the secret
    argument replaced, and its value hidden in the options (a retried message's traceback)."""
    values = secret_values(secret.actor, fields.get("args"), fields.get("kwargs"))
    out = dict(fields)
    args, kwargs = fields.get("args"), fields.get("kwargs")
    if isinstance(args, list | tuple):
        out["args"] = [REDACTED if n == secret.position else arg for n, arg in enumerate(args)]
    elif "args" in fields:
        out["args"] = REDACTED
    if isinstance(kwargs, Mapping):
        out["kwargs"] = {name: REDACTED if name == secret.name else arg for name, arg in kwargs.items()}
    elif "kwargs" in fields:
        out["kwargs"] = REDACTED
    options = fields.get("options")
    if values and isinstance(options, Mapping):
        hidden = tuple(sorted(values, key=len, reverse=True))
        # The id the message is stored under stays as it is: the dead-letter set names it.
        out["options"] = {
            name: option if name == "redis_message_id" else scrub(option, hidden)
            for name, option in options.items()
        }
    return out


def redacted_message(message: Message[Any] | MessageProxy) -> Message[Any]:
    """The message with its secret arguments replaced (itself when it has none)."""
    fields = message.asdict()
    secret = secret_argument(fields["actor_name"], fields["queue_name"])
    if secret is None:
        return message if isinstance(message, Message) else Message(**fields)
    return Message(**_redacted_fields(fields, secret))


def dead_letter_body(queue_name: str, data: bytes, reason: str) -> bytes:
    """What the dead-letter queue keeps of a message body: the body itself, but with the
    secret argument replaced where the message has one. A body on a queue of secrets that
    cannot be read as a JSON object cannot say where its secret is: it is not kept, only
    its size and the reason."""
    try:
        fields = json.loads(data)
    except ValueError:
        fields = None
    if isinstance(fields, dict):
        secret = secret_argument(fields.get("actor_name"), queue_name)
        if secret is None:
            return data
        return json.dumps(
            _redacted_fields(fields, secret), ensure_ascii=False, separators=(",", ":")
        ).encode()
    if secret_argument(None, queue_name) is None:
        return data
    return json.dumps(
        {"body": REDACTED, "bytes": len(data), "reason": reason}, separators=(",", ":")
    ).encode()
