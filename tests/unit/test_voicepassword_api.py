"""What VoicePassword and MobilGroup share (worker/providers/voicepassword/api.py) and where
each states a difference of its document: headers, key placement, flash codes, callback URLs.

Both adapters are reached through a stubbed transport (`httpx.MockTransport`, see
tests/unit/stub_transport.py): no network is touched.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.stub_transport import answer, exchange
from worker.core.errors import ConfigurationError
from worker.core.verification import Channel
from worker.providers.base import SendRequest
from worker.providers.mobilgroup import MobilGroup
from worker.providers.voicepassword.adapter import VoicePassword
from worker.providers.voicepassword.api import VoicePasswordApi

API_KEY = "shared-test-key"
PHONE = "79999999999"
OK = answer({"result": "ok", "id": "1", "price": "0.35", "code": "1234"})
KINDS = [VoicePassword, MobilGroup]


def sent(kind: type[VoicePasswordApi], request: SendRequest, options: dict[str, str]) -> httpx.Request:
    provider = kind.from_config(
        "p", base_url="https://p.example.test", timeout=1.0, credentials={"api_key": API_KEY}, options=options
    )
    _, [request_sent] = exchange(provider, OK, lambda p: p.send(request))
    return request_sent


def flashcall(code: str | None = "1234") -> SendRequest:
    return SendRequest(channel=Channel.FLASHCALL, phone=PHONE, code_length=4, code=code)


def test_voicepassword_sends_the_charset_header_its_document_lists() -> None:
    assert sent(VoicePassword, flashcall(), {}).headers["charset"] == "utf-8"


def test_mobilgroup_sends_no_charset_header_since_its_document_lists_none() -> None:
    assert "charset" not in sent(MobilGroup, flashcall(), {}).headers


@pytest.mark.parametrize("kind", KINDS)
def test_security_placement_puts_the_key_first_in_the_body_and_not_in_a_header(
    kind: type[VoicePasswordApi],
) -> None:
    request = sent(kind, flashcall(code=None), {"api_key_in": "security"})

    assert json.loads(request.content) == {"security": {"apiKey": API_KEY}, "number": PHONE, "capacity": "4"}
    assert "authorization" not in request.headers


@pytest.mark.parametrize("kind", KINDS)
def test_an_unknown_key_placement_is_refused_at_configuration(kind: type[VoicePasswordApi]) -> None:
    with pytest.raises(ConfigurationError, match="api_key_in"):
        kind.from_config(
            "p",
            base_url="https://p.example.test",
            timeout=1.0,
            credentials={"api_key": API_KEY},
            options={"api_key_in": "url"},
        )


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (VoicePassword, {"number": PHONE, "flashcall": {"code": "1234"}, "callback_url": "https://cb.test/"}),
        (MobilGroup, {"number": PHONE, "capacity": "4"}),
    ],
)
def test_a_flash_call_with_a_router_code_and_callback_url_sends_what_the_document_has(
    kind: type[VoicePasswordApi], body: dict[str, object]
) -> None:
    request = SendRequest(
        channel=Channel.FLASHCALL, phone=PHONE, code_length=4, code="1234", callback_url="https://cb.test/"
    )

    assert json.loads(sent(kind, request, {}).content) == body
