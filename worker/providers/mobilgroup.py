"""MobilGroup (base URL https://voice.mobilgroup.ru): flash call, voice call speaking a code,
SMS follow-up.

Document: ../shared/providers/mobilgroup-voice-password.txt ("Описание API услуги
Авторизация по звонку / Flash-Call"). It describes the Voice-Password API VoicePassword also
serves (worker/providers/voicepassword/api.py: the request bodies, both API key placements,
the answers), with less in it: no flash code of the client's (a flash call's code is always
the service's, `capacity` digits), no `callback_url`, no `/get/` handler (so no balance or
call state), and eight send errors.

Its parameter table puts `number` and `capacity` under a "Секция settings" and spells the
key `ApiKey`, while all of its examples write `number` and `capacity` at the top level and
`security.apiKey`; requests follow the examples, as VoicePassword's do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from worker.providers.base import Classification, DocumentedError, classifications
from worker.providers.voicepassword.api import VoicePasswordApi, send_errors

__all__ = ["ERRORS", "SEND_ERRORS", "MobilGroup"]

#: Every error code of the document, verbatim, in its order.
ERRORS: tuple[DocumentedError, ...] = send_errors(
    "unknown_request",
    "authorisation_failed",
    "user_disabled",
    "number_is_empty",
    "number_not_valid",
    "number_not_permitted",
    "not_enough_money",
    "ani_phone_not_valid",
)

#: The send handler's errors, by code.
SEND_ERRORS: Mapping[str, Classification] = classifications(ERRORS, "send")


class MobilGroup(VoicePasswordApi):
    type: ClassVar[str] = "mobilgroup"
    errors: ClassVar[tuple[DocumentedError, ...]] = ERRORS
    client_flash_code: ClassVar[bool] = False
    takes_callback_url: ClassVar[bool] = False
