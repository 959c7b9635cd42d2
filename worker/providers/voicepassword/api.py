"""The Voice-Password API that VoicePassword and MobilGroup both serve, built once.

Both documents (../shared/providers/voicepassword.txt and mobilgroup-voice-password.txt)
describe the same send handler, `POST /api/voice-password/send/`: the number written
`79999999999`, numeric options as strings (`"capacity": "4"`, `"repeat": "1"`), the API key
in the `Authorization` header or in `security.apiKey`, and every answer HTTP 200 with
`{"result": "ok", ...}` or `{"result": "error", "error_code": "..."}`. `VoicePasswordApi`
builds those requests and reads those answers; each adapter subclasses it and states only
where its document differs (a client-side flash code, `callback_url`, extra headers, its
error list, VoicePassword's `/get/`).

Options (routing.yaml `options:`), the same for both:

- `api_key_in`: `header` (default; `Authorization: <key>`) or `security` (the key in the
  body's `security.apiKey`, the placement every example of the documents shows).
- `ani`: a caller number registered in the account, for voice calls (`voice.ani`).
- `repeat`: `1` speaks the voice code twice (`voice.repeat`).
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
    parse_price,
)

__all__ = [
    "ACCOUNT",
    "UNKNOWN_ERROR",
    "ApiKeyPlacement",
    "ErrorAnswer",
    "VoicePasswordApi",
    "ok_answer",
    "send_errors",
]

ACCOUNT = Classification(Outcome.PROVIDER_ERROR, breaker_failure=True)
"""A fault of the account or of our request: the provider's, never the user's."""
_NOT_THIS_PROVIDER = Classification(Outcome.REFUSED, breaker_failure=False)
UNKNOWN_ERROR = ACCOUNT
"""An error no document lists, or an answer of no documented shape."""

# The send handler's error codes as the documents word them (alike in both), and how the
# router treats each; an adapter lists the codes its own document has. Those about the
# number are the user's (never a breaker failure); those about the account or our request
# are the provider's.
_SEND_ERRORS: Mapping[str, tuple[str, Classification]] = {
    "unknown_request": ("Ошибочный запрос", ACCOUNT),
    "authorisation_failed": ("Ошибка авторизации", ACCOUNT),
    "user_disabled": ("Ваш аккаунт заблокирован", ACCOUNT),
    "number_is_empty": (
        "Некорректно указан номер абонента",
        Classification(Outcome.BAD_NUMBER, breaker_failure=False),
    ),
    "number_not_valid": ("Не удалось определить направление", _NOT_THIS_PROVIDER),
    "number_not_permitted": ("Звонки на данное направление запрещены", _NOT_THIS_PROVIDER),
    "number_in_spam_list": ("Номер занесен в СПАМ лист", _NOT_THIS_PROVIDER),
    "not_enough_money": (
        "Недостаточно средств",
        Classification(Outcome.NOT_ENOUGH_MONEY, breaker_failure=True),
    ),
    "ani_phone_not_valid": ("Указан не прописанный в ЛК номер телефона", ACCOUNT),
    "code_not_valid": ("Некорректно указан код", ACCOUNT),
}

_VOICE_CODE_LENGTH = 4
"""The voice code is "4 цифры кода", whoever generates it; so is a client flash code."""
_SERVICE_CODE_LENGTHS = range(4, 7)
"""capacity: 4 by default, more only for a service-generated flash code. The documents name
no maximum; 6 is the longest the router asks for."""
_REPEAT_ON = frozenset({"1", "true", "yes"})


def _send_error(code: str) -> DocumentedError:
    meaning, classification = _SEND_ERRORS[code]
    return DocumentedError(code, meaning, "send", classification)


def send_errors(*codes: str) -> tuple[DocumentedError, ...]:
    """The send handler's errors of one document, in its order."""
    return tuple(_send_error(code) for code in codes)


class ApiKeyPlacement(StrEnum):
    """Where the API key travels: both documents accept either, "one of the two ways"."""

    HEADER = "header"
    SECURITY = "security"


class ErrorAnswer(Exception):
    """An answer that is not `{"result": "ok", ...}`: the provider's error code verbatim, or
    a name for what is wrong with it (`http_<status>`, `unexpected_answer`)."""

    def __init__(self, error_code: str, detail: str = "") -> None:
        super().__init__(error_code)
        self.error_code = error_code
        self.detail = detail


def ok_answer(status: int, answer: Any) -> dict[str, Any]:
    """The body of an ok answer; raises ErrorAnswer for anything else."""
    if status != 200:
        raise ErrorAnswer(f"http_{status}")
    if not isinstance(answer, dict):
        raise ErrorAnswer("unexpected_answer", "answer is not a JSON object")
    if answer.get("result") == "error":
        error_code = answer.get("error_code")
        if not isinstance(error_code, str):
            raise ErrorAnswer("unexpected_answer", "error without error_code")
        raise ErrorAnswer(error_code)
    if answer.get("result") != "ok":
        raise ErrorAnswer("unexpected_answer", "result is neither ok nor error")
    return answer


def _identifier(value: object) -> str | None:
    """An id as the documents write it ("1234"), or as a JSON number."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        return None
    return str(value)


def _is_code(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool) and str(value).isdigit()


class VoicePasswordApi(HttpProvider):
    """A provider of the Voice-Password API; subclasses set their document's differences."""

    channels: ClassVar[frozenset[Channel]] = frozenset(Channel)
    credential_names: ClassVar[frozenset[str]] = frozenset({"api_key"})
    option_names: ClassVar[frozenset[str]] = frozenset({"api_key_in", "ani", "repeat"})

    SEND_PATH: ClassVar[str] = "/api/voice-password/send/"

    client_flash_code: ClassVar[bool]
    """Whether the document has the `flashcall` section: a 4-digit flash code the client picks."""
    protocol_headers: ClassVar[Mapping[str, str]] = {}
    """Headers the document lists besides Content-Type and Authorization."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        timeout: float,
        api_key: str,
        api_key_in: ApiKeyPlacement = ApiKeyPlacement.HEADER,
        ani: str | None = None,
        repeat: bool = False,
    ) -> None:
        super().__init__(name, base_url=base_url, timeout=timeout)
        self._api_key = api_key
        self._api_key_in = api_key_in
        self._ani = ani
        self._repeat = repeat
        self._send_errors = classifications(self.errors, "send")

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
        placement = options.get("api_key_in", ApiKeyPlacement.HEADER.value)
        try:
            api_key_in = ApiKeyPlacement(placement)
        except ValueError:
            raise ConfigurationError(
                f"provider {name}: api_key_in must be one of {', '.join(ApiKeyPlacement)}, not {placement!r}"
            ) from None
        return cls(
            name,
            base_url=base_url,
            timeout=timeout,
            api_key=credentials["api_key"],
            api_key_in=api_key_in,
            ani=options.get("ani"),
            repeat=options.get("repeat", "0") in _REPEAT_ON,
        )

    def supports(self, channel: Channel, code_length: int, previous_ref: str | None) -> bool:
        if channel is Channel.FLASHCALL:
            return code_length in _SERVICE_CODE_LENGTHS
        if channel is Channel.VOICE:
            return code_length == _VOICE_CODE_LENGTH
        # SMS exists only as a follow-up re-sending the code of an earlier call here.
        return previous_ref is not None

    def _takes_code(self, channel: Channel) -> bool:
        """Whether a request on `channel` can carry the client's code ("voice.code", and
        "flashcall.code" where the document has it)."""
        return channel is Channel.VOICE or (channel is Channel.FLASHCALL and self.client_flash_code)

    def router_generates_code(self, channel: Channel, code_length: int) -> bool:
        # A client code is known before the call, so it stays valid even if the worker dies
        # while the provider answers.
        return self._takes_code(channel) and code_length == _VOICE_CODE_LENGTH

    def _client_code(self, request: SendRequest) -> str | None:
        """The router's code, where the request can carry it; None lets the service make one up."""
        return request.code if self._takes_code(request.channel) else None

    def request_body(self, request: SendRequest) -> dict[str, Any]:
        """The send request's body as the documents' examples write it, without the credentials."""
        body: dict[str, Any]
        code = self._client_code(request)
        if request.channel is Channel.SMS:
            body = {"sms": {"id": request.previous_ref}}
        elif request.channel is Channel.VOICE:
            voice: dict[str, str] = {}
            if code is not None:
                voice["code"] = code
            if self._repeat:
                voice["repeat"] = "1"
            if self._ani:
                # VoicePassword's table names it `api`; every example of both documents `ani`.
                voice["ani"] = self._ani
            body = {"number": request.phone, "voice": voice}
        elif code is not None:
            body = {"number": request.phone, "flashcall": {"code": code}}
        else:
            body = {"number": request.phone, "capacity": str(request.code_length)}
        if request.callback_url and self.takes_callback_url:
            body["callback_url"] = request.callback_url
        return body

    async def post(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """POST `body` to one of the API's handlers with the API key where configured."""
        headers = dict(self.protocol_headers)
        if self._api_key_in is ApiKeyPlacement.SECURITY:
            # First, as in every example of the documents.
            body = {"security": {"apiKey": self._api_key}, **body}
        else:
            headers["Authorization"] = self._api_key
        return await self.post_json(path, body, headers)

    async def send(self, request: SendRequest) -> SendResult:
        try:
            status, answer = await self.post(self.SEND_PATH, self.request_body(request))
        except TransportFailure as failure:
            return failure.result()
        return self.classify(status, answer, request)

    def classify(self, status: int, answer: Any, request: SendRequest) -> SendResult:
        """One answer of the send handler -> the attempt's result."""
        try:
            body = ok_answer(status, answer)
        except ErrorAnswer as error:
            return SendResult.failed(
                self._send_errors.get(error.error_code, UNKNOWN_ERROR), error.error_code, error.detail
            )
        ref = _identifier(body.get("id"))
        if ref is None:
            return SendResult.failed(UNKNOWN_ERROR, "unexpected_answer", "ok without an id")
        code = body.get("code")
        service_code = request.channel is not Channel.SMS and self._client_code(request) is None
        if service_code and not _is_code(code):
            return SendResult.failed(UNKNOWN_ERROR, "unexpected_answer", "ok without the generated code")
        return SendResult(
            outcome=Outcome.DELIVERED,
            ref=ref,
            code=str(code) if service_code else None,
            price=parse_price(body.get("price")),
        )
