"""VoicePassword (vp.voicepassword.ru): flash call, voice call speaking a code, SMS follow-up.

Document: ../shared/providers/voicepassword.txt. Every answer is HTTP 200 with
{"result": "ok", ...} or {"result": "error", "error_code": "..."}; numbers and options
travel as strings; prices are decimal strings in roubles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from worker.providers.base import (
    Channel,
    Classification,
    DocumentedError,
    HttpProvider,
    Outcome,
    SendRequest,
    SendResult,
    TransportFailure,
    classifications,
    parse_price,
)

__all__ = ["ERRORS", "SEND_ERRORS", "VoicePassword"]

_ACCOUNT = Classification(Outcome.PROVIDER_ERROR, breaker_failure=True)
_NOT_THIS_PROVIDER = Classification(Outcome.REFUSED, breaker_failure=False)
_QUERY = Classification(Outcome.PROVIDER_ERROR, breaker_failure=False)

#: Every error code of the document, verbatim. Those about the number are the user's
#: (never a breaker failure); those about the account or our request are the provider's.
ERRORS: tuple[DocumentedError, ...] = (
    DocumentedError("unknown_request", "Ошибочный запрос", "send", _ACCOUNT),
    DocumentedError("authorisation_failed", "Ошибка авторизации", "send", _ACCOUNT),
    DocumentedError("user_disabled", "Ваш аккаунт заблокирован", "send", _ACCOUNT),
    DocumentedError(
        "number_is_empty",
        "Некорректно указан номер абонента",
        "send",
        Classification(Outcome.BAD_NUMBER, breaker_failure=False),
    ),
    DocumentedError("number_not_valid", "Не удалось определить направление", "send", _NOT_THIS_PROVIDER),
    DocumentedError(
        "number_not_permitted", "Звонки на данное направление запрещены", "send", _NOT_THIS_PROVIDER
    ),
    DocumentedError("number_in_spam_list", "Номер занесен в СПАМ лист", "send", _NOT_THIS_PROVIDER),
    DocumentedError(
        "not_enough_money",
        "Недостаточно средств",
        "send",
        Classification(Outcome.NOT_ENOUGH_MONEY, breaker_failure=True),
    ),
    DocumentedError("ani_phone_not_valid", "Указан не прописанный в ЛК номер телефона", "send", _ACCOUNT),
    DocumentedError("code_not_valid", "Некорректно указан код", "send", _ACCOUNT),
    DocumentedError("unknown_request", "Ошибочный запрос", "get", _ACCOUNT),
    DocumentedError("authorisation_failed", "Ошибка авторизации", "get", _ACCOUNT),
    DocumentedError("user_disabled", "Ваш аккаунт заблокирован", "get", _ACCOUNT),
    DocumentedError("ID_Not_Found", "Неверный идентификатор запроса", "get", _QUERY),
    DocumentedError("Date_is_Empty", "В запросе не указана дата", "get", _QUERY),
)

#: The send handler's errors, by code.
SEND_ERRORS: Mapping[str, Classification] = classifications(ERRORS, "send")

_UNKNOWN_ERROR = _ACCOUNT
_CLIENT_CODE_LENGTH = 4
_SERVICE_CODE_LENGTHS = range(4, 7)


class VoicePassword(HttpProvider):
    type: ClassVar[str] = "voicepassword"
    channels: ClassVar[frozenset[Channel]] = frozenset(Channel)
    credential_names: ClassVar[frozenset[str]] = frozenset({"api_key"})
    option_names: ClassVar[frozenset[str]] = frozenset({"ani", "repeat"})
    errors: ClassVar[tuple[DocumentedError, ...]] = ERRORS

    SEND_PATH: ClassVar[str] = "/api/voice-password/send/"

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        timeout: float,
        api_key: str,
        ani: str | None = None,
        repeat: bool = False,
    ) -> None:
        super().__init__(name, base_url=base_url, timeout=timeout)
        self._headers = {"Authorization": api_key}
        self._ani = ani
        self._repeat = repeat

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
        return cls(
            name,
            base_url=base_url,
            timeout=timeout,
            api_key=credentials["api_key"],
            ani=options.get("ani"),
            repeat=options.get("repeat", "0") in {"1", "true", "yes"},
        )

    def supports(self, channel: Channel, code_length: int, previous_ref: str | None) -> bool:
        if channel is Channel.FLASHCALL:
            return code_length in _SERVICE_CODE_LENGTHS
        if channel is Channel.VOICE:
            # The voice code is "4 цифры кода", whoever generates it.
            return code_length == _CLIENT_CODE_LENGTH
        # SMS exists only as a follow-up re-sending the code of an earlier call here.
        return previous_ref is not None

    def router_generates_code(self, channel: Channel, code_length: int) -> bool:
        # A client code ("flashcall.code", "voice.code") is known before the call, so it
        # stays valid even if the worker dies while the provider answers.
        return channel is not Channel.SMS and code_length == _CLIENT_CODE_LENGTH

    def request_body(self, request: SendRequest) -> dict[str, Any]:
        body: dict[str, Any]
        if request.channel is Channel.SMS:
            body = {"sms": {"id": request.previous_ref}}
        elif request.channel is Channel.VOICE:
            voice: dict[str, str] = {}
            if request.code is not None:
                voice["code"] = request.code
            if self._repeat:
                voice["repeat"] = "1"
            if self._ani:
                voice["ani"] = self._ani
            body = {"number": request.phone, "voice": voice}
        elif request.code is not None:
            body = {"number": request.phone, "flashcall": {"code": request.code}}
        else:
            body = {"number": request.phone, "capacity": str(request.code_length)}
        if request.callback_url:
            body["callback_url"] = request.callback_url
        return body

    async def send(self, request: SendRequest) -> SendResult:
        try:
            status, answer = await self.post_json(self.SEND_PATH, self.request_body(request), self._headers)
        except TransportFailure as failure:
            return failure.result()
        return self.classify(status, answer, request)

    def classify(self, status: int, answer: Any, request: SendRequest) -> SendResult:
        """One answer of the send handler -> the attempt's result."""
        if status != 200:
            return SendResult.failed(_UNKNOWN_ERROR, f"http_{status}")
        if not isinstance(answer, dict):
            return SendResult.failed(_UNKNOWN_ERROR, "unexpected_answer", "answer is not a JSON object")
        if answer.get("result") == "error":
            error_code = answer.get("error_code")
            if not isinstance(error_code, str):
                return SendResult.failed(_UNKNOWN_ERROR, "unexpected_answer", "error without error_code")
            return SendResult.failed(SEND_ERRORS.get(error_code, _UNKNOWN_ERROR), error_code)
        if answer.get("result") != "ok":
            return SendResult.failed(_UNKNOWN_ERROR, "unexpected_answer", "result is neither ok nor error")

        ref = answer.get("id")
        if not isinstance(ref, str | int) or isinstance(ref, bool) or str(ref) == "":
            return SendResult.failed(_UNKNOWN_ERROR, "unexpected_answer", "ok without an id")
        code = answer.get("code")
        provider_code = request.code is None and request.channel is not Channel.SMS
        if provider_code and (not isinstance(code, str | int) or not str(code).isdigit()):
            return SendResult.failed(_UNKNOWN_ERROR, "unexpected_answer", "ok without the generated code")
        return SendResult(
            outcome=Outcome.DELIVERED,
            ref=str(ref),
            code=str(code) if provider_code else None,
            price=parse_price(answer.get("price")),
        )
