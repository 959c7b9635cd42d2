"""The FlashingCall REST gateway (login/password): a flash call whose caller number ends in
the code, or its VoiceCode variant speaking the code.

Document: ../shared/providers/flashingcall-rest-gateway.txt ("FlashingCall (VoiceCode)").
One JSON request, posted to the configured URL itself (the document names none):

    {"login": ..., "password": ..., "destAddr": "7XXXXXXXXXX",
     "message": {"type": "FLASHINGCALL", "data": {"text": "<code>", "ttl": <minutes>}}}

Errors answer an HTTP status other than 200 with {"error": {"code": <int>, "description":
...}, "extendedDescription": ...}. The document gives no success body and delivers statuses
through a mechanism it does not describe, so a delivered attempt advances on the routing
step's timeout alone.

routing.yaml entry (`type: gateway`):

- credentials `login`, `password` (they travel in the body, as the document shows);
- channels: `flashcall` for the FLASHINGCALL variant or `voice` for VoiceCode. The request is
  the same; which one an account delivers is agreed with the gateway's support, so an entry
  is one or the other;
- options:
  - `variant`: `flashcall` (default) or `voicecode`, as agreed for the account;
  - `ttl`: minutes the gateway keeps trying, "1".."5", default "1": the gateway stops about
    when a routing step of 60 s gives up on it, so a late call does not reach a user who has
    moved on to another provider's code;
  - `message_id_field`: the member of the success body that carries the gateway's message
    id, default `messageId` (the sandbox's); a success body without it is still delivered,
    with no ref.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar, Self

from worker.core.errors import ConfigurationError
from worker.core.verification import Channel, Outcome
from worker.providers.base import (
    Classification,
    DocumentedError,
    HttpProvider,
    SendRequest,
    SendResult,
    TransportFailure,
    classifications,
)

__all__ = [
    "DEFAULT_MESSAGE_ID_FIELD",
    "DEFAULT_TTL_MINUTES",
    "ERRORS",
    "MESSAGE_TYPE",
    "SEND_ERRORS",
    "Gateway",
    "Variant",
]

MESSAGE_TYPE = "FLASHINGCALL"
"""The only message type of the document; the VoiceCode variant sends it too."""
DEFAULT_TTL_MINUTES = 1
DEFAULT_MESSAGE_ID_FIELD = "messageId"
TTL_MINUTES = range(1, 6)
"""The document's "от 1 до 5 минут"."""


class Variant(StrEnum):
    """What the account delivers for a FLASHINGCALL message, as agreed with the gateway's support."""

    FLASHCALL = "flashcall"
    """A call from a number whose last digits are the code ("четырёх, либо шести цифр")."""
    VOICECODE = "voicecode"
    """A call whose voice message speaks the code ("код из четырёх цифр")."""

    @property
    def channel(self) -> Channel:
        return Channel.FLASHCALL if self is Variant.FLASHCALL else Channel.VOICE

    @property
    def code_lengths(self) -> frozenset[int]:
        return frozenset({4, 6}) if self is Variant.FLASHCALL else frozenset({4})


# The account, its IP whitelist, its sender number or our request is wrong, or the gateway
# is down: every number would fail alike, so the provider leaves rotation once enough pile up.
_PROVIDER_FAULT = Classification(Outcome.PROVIDER_ERROR, breaker_failure=True)

#: Every row of the document's table "Коды ошибок отправки", verbatim: code, description,
#: HTTP status.
ERRORS: tuple[DocumentedError, ...] = (
    DocumentedError("1", "Service is unavailable", "send", _PROVIDER_FAULT, http_status=503),
    # Our server's address is not on the account's whitelist: every request fails until fixed.
    DocumentedError("2", "Invalid IP-address", "send", _PROVIDER_FAULT, http_status=403),
    # The gateway sheds load; backing off from it is exactly what the breaker is for.
    DocumentedError("3", "Too many connections", "send", _PROVIDER_FAULT, http_status=429),
    # The adapter always sends a complete, well-typed request, so this is a fault on our side
    # or a change on theirs, never the user's number.
    DocumentedError("4", "Invalid request", "send", _PROVIDER_FAULT, http_status=400),
    DocumentedError("5", "Invalid login", "send", _PROVIDER_FAULT, http_status=401),
    DocumentedError("6", "Invalid password", "send", _PROVIDER_FAULT, http_status=401),
    # The caller-number pool of the account is not set up: an integration fault.
    DocumentedError("7", "serviceNumber is not defined", "send", _PROVIDER_FAULT, http_status=400),
    # The user's number itself: no provider will reach it, and it must not open the breaker.
    DocumentedError(
        "8",
        "destAddr is not correct",
        "send",
        Classification(Outcome.BAD_NUMBER, breaker_failure=False),
        http_status=406,
    ),
    # FLASHINGCALL is the only type the adapter sends: the account lacks the service.
    DocumentedError("9", "Message type is not correct", "send", _PROVIDER_FAULT, http_status=406),
    # This gateway will not send that message again now; another provider (with another
    # code) may. About one number, so never a breaker failure.
    DocumentedError(
        "10",
        "Prohibited sending duplicates",
        "send",
        Classification(Outcome.REFUSED, breaker_failure=False),
        http_status=409,
    ),
    # The ttl option is checked to be 1..5 at start-up: the account refuses what the document allows.
    DocumentedError("11", "Invalid TTL", "send", _PROVIDER_FAULT, http_status=406),
    # The document's description of 100 is just "100": an internal error of the gateway.
    DocumentedError("100", "100", "send", _PROVIDER_FAULT, http_status=500),
)

#: The send request's errors, by code.
SEND_ERRORS: Mapping[str, Classification] = classifications(ERRORS, "send")
_MEANINGS: Mapping[str, str] = {error.code: error.meaning for error in ERRORS}

# A code the document does not list is treated like the gateway's own faults, kept verbatim.
_UNKNOWN_ERROR = _PROVIDER_FAULT
_HTTP_OK = 200


class Gateway(HttpProvider):
    type: ClassVar[str] = "gateway"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.FLASHCALL, Channel.VOICE})
    credential_names: ClassVar[frozenset[str]] = frozenset({"login", "password"})
    option_names: ClassVar[frozenset[str]] = frozenset({"variant", "ttl", "message_id_field"})
    errors: ClassVar[tuple[DocumentedError, ...]] = ERRORS

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        timeout: float,
        login: str,
        password: str,
        variant: Variant = Variant.FLASHCALL,
        ttl_minutes: int = DEFAULT_TTL_MINUTES,
        message_id_field: str = DEFAULT_MESSAGE_ID_FIELD,
    ) -> None:
        super().__init__(name, base_url=base_url, timeout=timeout)
        self._login = login
        self._password = password
        self.variant = variant
        self._ttl_minutes = ttl_minutes
        self._message_id_field = message_id_field

    @classmethod
    def from_config(
        cls,
        name: str,
        *,
        base_url: str,
        timeout: float,
        credentials: Mapping[str, str],
        options: Mapping[str, str],
    ) -> Self:
        variant = options.get("variant", Variant.FLASHCALL.value)
        if variant not in {known.value for known in Variant}:
            raise ConfigurationError(
                f"provider {name}: option variant must be flashcall or voicecode, not {variant!r}"
            )
        ttl = options.get("ttl", str(DEFAULT_TTL_MINUTES))
        if ttl not in {str(minutes) for minutes in TTL_MINUTES}:
            raise ConfigurationError(f"provider {name}: option ttl must be minutes from 1 to 5, not {ttl!r}")
        message_id_field = options.get("message_id_field", DEFAULT_MESSAGE_ID_FIELD)
        if not message_id_field:
            raise ConfigurationError(f"provider {name}: option message_id_field must not be empty")
        return cls(
            name,
            base_url=base_url,
            timeout=timeout,
            login=credentials["login"],
            password=credentials["password"],
            variant=Variant(variant),
            ttl_minutes=int(ttl),
            message_id_field=message_id_field,
        )

    def supports(self, channel: Channel, code_length: int, previous_ref: str | None) -> bool:
        return channel is self.variant.channel and code_length in self.variant.code_lengths

    def router_generates_code(self, channel: Channel, code_length: int) -> bool:
        # The gateway never makes up a code: the message text carries the client's own.
        return True

    def request_body(self, request: SendRequest) -> dict[str, Any]:
        """The document's example request, field for field: `text` is the code alone (the
        VoiceCode operator puts it into the agreed template), `ttl` an integer of minutes."""
        if request.code is None:
            raise ValueError("the gateway sends only a code the router generated")
        return {
            "login": self._login,
            "password": self._password,
            "destAddr": request.phone,
            "message": {
                "type": MESSAGE_TYPE,
                "data": {"text": request.code, "ttl": self._ttl_minutes},
            },
        }

    async def send(self, request: SendRequest) -> SendResult:
        # The whole endpoint URL comes from configuration, so the request goes to it as is.
        try:
            status, answer = await self.post_json("", self.request_body(request))
        except TransportFailure as failure:
            return failure.result()
        return self.classify(status, answer)

    def classify(self, status: int, answer: Any) -> SendResult:
        """One answer of the gateway -> the attempt's result.

        A readable `error.code` decides, whatever the HTTP status (an HTTP 200 carrying an
        error is an error too); the status is kept in the detail.
        """
        if not isinstance(answer, dict):
            return SendResult.failed(_UNKNOWN_ERROR, _unreadable(status), "answer is not a JSON object")
        error = answer.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            if not isinstance(code, int) or isinstance(code, bool):
                return SendResult.failed(_UNKNOWN_ERROR, _unreadable(status), "error without a numeric code")
            error_code = str(code)
            meaning = _MEANINGS.get(error_code, "an error code the document does not list")
            return SendResult.failed(
                SEND_ERRORS.get(error_code, _UNKNOWN_ERROR), error_code, f"HTTP {status}: {meaning}"
            )
        if status != _HTTP_OK:
            return SendResult.failed(_UNKNOWN_ERROR, f"http_{status}", "error status without an error object")
        # The document gives no success body; an empty object confirms nothing (a stub or a
        # misrouted URL answers so), while any other object without an error is acceptance.
        if not answer:
            return SendResult.failed(_UNKNOWN_ERROR, "unexpected_answer", "empty JSON object")
        return SendResult(outcome=Outcome.DELIVERED, ref=self._message_id(answer))

    def _message_id(self, answer: Mapping[str, Any]) -> str | None:
        # The call is placed either way: a missing or odd id must not make the router ring again.
        value = answer.get(self._message_id_field)
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            return None
        return str(value)


def _unreadable(status: int) -> str:
    """The error code of an answer whose body cannot be read: named by its status unless 200."""
    return "unexpected_answer" if status == _HTTP_OK else f"http_{status}"
