"""Telphin Flash Calls (flashcall.telphin.ru): a flash call whose caller number ends in a
4-digit code that Telphin makes up, keeps and checks itself (`POST /auth/`).

Document: ../shared/providers/telphin-flashcall.txt. Both requests are JSON bodies carrying
the credentials (`app_id`, `app_secret`) and the number as `+7XXXXXXXXXX`. Success is
`{"status": "succes", ...}` (sic, as the document spells it); an error is
`{"status": "error", "description": "<code>"}`.

Where the document is silent:
- It names no HTTP statuses. An error in the documented shape is read by its code whatever
  the status (the code says more than the status); any other answer counts only with 200.
- The start answer echoes the number; the echo is not compared, since the document's own
  example echoes a number one digit short.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar, Self

from worker.core.verification import Channel, Outcome
from worker.providers.base import (
    Classification,
    CodeCheck,
    DocumentedError,
    HttpProvider,
    SendRequest,
    SendResult,
    TransportFailure,
    classifications,
)

__all__ = ["AUTH_ERRORS", "ERRORS", "SEND_ERRORS", "Telphin"]

_ACCOUNT = Classification(Outcome.PROVIDER_ERROR, breaker_failure=True)
# Telphin's own per-number limits: another provider may still call the number now.
_NUMBER_LIMIT = Classification(Outcome.REFUSED, breaker_failure=False)
# A check's verdict on the typed code, not a fault: the outcome is never routed on (no
# Outcome names a rejected code); only "no breaker failure" matters.
_CODE_REJECTED = Classification(Outcome.PROVIDER_ERROR, breaker_failure=False)

_CLIENT_NOT_FOUND = "Клиент, с указанными App ID и App Secret, не найден"
_PARAMETERS = "Присланы не все параметры запроса или они имеют не верный тип"
_NOT_CONNECTED = "Услуга «Flash Calls» не подключена"

#: Every error code of the document's two tables, verbatim: "send" for the call's, "auth" for
#: the check's. Descriptions are the document's own, down to its Latin/Cyrillic lookalikes.
ERRORS: tuple[DocumentedError, ...] = (
    DocumentedError("invalid_client", _CLIENT_NOT_FOUND, "send", _ACCOUNT),
    DocumentedError(
        "one_call_for_two_minutes",
        "На 1 Б-номер не может поступить 2 вызова с сервиса в течение 2-х минут",
        "send",
        _NUMBER_LIMIT,
    ),
    DocumentedError(
        "ten_calls_per_day",
        "На 1 Б-номер не может поступить более 10 вызовов с сервиса в течение 1-х суток",
        "send",
        _NUMBER_LIMIT,
    ),
    DocumentedError("parameters_error", _PARAMETERS, "send", _ACCOUNT),
    DocumentedError(
        "direction_error",
        "Ошибка вызываемого номера. Для вызова доступны только РФ номера в формате +7 или 8",
        "send",
        Classification(Outcome.BAD_NUMBER, breaker_failure=False),
    ),
    DocumentedError("service_is_not_connected", _NOT_CONNECTED, "send", _ACCOUNT),
    # The check's table writes "Арр" in Cyrillic letters where the call's has Latin "App".
    DocumentedError(
        "invalid_client", "Клиент, с указанными Арр ID и Арр Secret, не найден", "auth", _ACCOUNT
    ),
    DocumentedError(
        "code_lifetime_expired", "Время жизни кода аутентификации истекло", "auth", _CODE_REJECTED
    ),
    DocumentedError(
        "auth_code_does_not_exist",
        "Для данного номера не существует кода аутентификации",
        "auth",
        _CODE_REJECTED,
    ),
    DocumentedError(
        "auth_attempts_ended", "Закончились попытки ввода кода аутентификации", "auth", _CODE_REJECTED
    ),
    DocumentedError("invalid_code", "Не верный код аутентификации", "auth", _CODE_REJECTED),
    DocumentedError("parameters_error", _PARAMETERS, "auth", _ACCOUNT),
    DocumentedError("service_is_not_connected", _NOT_CONNECTED, "auth", _ACCOUNT),
)

#: The call's errors, by code.
SEND_ERRORS: Mapping[str, Classification] = classifications(ERRORS, "send")
#: The check's errors, by code.
AUTH_ERRORS: Mapping[str, Classification] = classifications(ERRORS, "auth")

_UNKNOWN_ERROR = _ACCOUNT
_UNEXPECTED = "unexpected_answer"
_SUCCESS = "succes"  # sic: the document's spelling, the only one Telphin answers with
_CODE_LENGTH = 4


def _failure(status: int, answer: Any) -> tuple[str, str] | None:
    """None for the documented success answer; else an error code (Telphin's own, verbatim,
    or one naming what is wrong with the answer) and a detail for logs."""
    if isinstance(answer, dict) and answer.get("status") == "error":
        description = answer.get("description")
        if isinstance(description, str) and description:
            return description, ""
        return _UNEXPECTED, "error without a description"
    if status != HTTPStatus.OK:
        return f"http_{status}", "neither 200 nor an error in the documented shape"
    if not isinstance(answer, dict):
        return _UNEXPECTED, "answer is not a JSON object"
    if answer.get("status") != _SUCCESS:
        return _UNEXPECTED, 'status is neither "succes" nor "error"'
    return None


class Telphin(HttpProvider):
    type: ClassVar[str] = "telphin"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.FLASHCALL})
    credential_names: ClassVar[frozenset[str]] = frozenset({"app_id", "app_secret"})
    errors: ClassVar[tuple[DocumentedError, ...]] = ERRORS

    SEND_PATH: ClassVar[str] = "/"
    AUTH_PATH: ClassVar[str] = "/auth/"

    def __init__(self, name: str, *, base_url: str, timeout: float, app_id: str, app_secret: str) -> None:
        super().__init__(name, base_url=base_url, timeout=timeout)
        self._credentials = {"app_id": app_id, "app_secret": app_secret}

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
            app_id=credentials["app_id"],
            app_secret=credentials["app_secret"],
        )

    def supports(self, channel: Channel, code_length: int, previous_ref: str | None) -> bool:
        # Telphin's code is the caller number's last 4 digits, always.
        return channel is Channel.FLASHCALL and code_length == _CODE_LENGTH

    def request_body(self, phone: str) -> dict[str, str]:
        """The call's body; `phone` in the router's 7XXXXXXXXXX form, sent as +7XXXXXXXXXX."""
        return {**self._credentials, "number": "+" + phone}

    def auth_body(self, phone: str, code: str) -> dict[str, str]:
        return {**self.request_body(phone), "auth_code": code}

    async def send(self, request: SendRequest) -> SendResult:
        try:
            status, answer = await self.post_json(self.SEND_PATH, self.request_body(request.phone))
        except TransportFailure as failure:
            return failure.result()
        return self.classify(status, answer)

    def classify(self, status: int, answer: Any) -> SendResult:
        """One answer of the call's handler -> the attempt's result."""
        failure = _failure(status, answer)
        if failure is not None:
            error_code, detail = failure
            return SendResult.failed(SEND_ERRORS.get(error_code, _UNKNOWN_ERROR), error_code, detail)
        # No id, code or price comes back: the router charges the configured cost and asks
        # Telphin to check the code the user types.
        return SendResult(outcome=Outcome.DELIVERED, provider_checks_code=True)

    async def check_code(self, phone: str, code: str) -> CodeCheck:
        try:
            status, answer = await self.post_json(self.AUTH_PATH, self.auth_body(phone, code))
        except TransportFailure as failure:
            return CodeCheck(matched=False, error_code=failure.error_code, breaker_failure=True)
        return self.judge(status, answer)

    def judge(self, status: int, answer: Any) -> CodeCheck:
        """One answer of the check's handler -> the verdict on the typed code."""
        failure = _failure(status, answer)
        if failure is None:
            return CodeCheck(matched=True)
        error_code, _ = failure
        classification = AUTH_ERRORS.get(error_code, _UNKNOWN_ERROR)
        return CodeCheck(matched=False, error_code=error_code, breaker_failure=classification.breaker_failure)
