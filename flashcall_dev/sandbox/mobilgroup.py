"""MobilGroup imitation, to the letter of the provider's document
(shared/providers/mobilgroup-voice-password.txt).

Served on its own port: a client whose base URL is `http://host:port` in place of
`https://voice.mobilgroup.ru` posts to `/api/voice-password/send/` (flash call, voice code,
SMS follow-up), which answers HTTP 200 with `{"result": "ok", ...}` or
`{"result": "error", "error_code": "..."}`. The handler is the one VoicePassword shares
(flashcall_dev/sandbox/voicepassword_api.py, with the decisions common to both); this module holds
MobilGroup's dialect of it.

Sandbox fixtures, and where this document differs from VoicePassword's:

- API key `sandbox-mobilgroup-key`, in the `Authorization` header or in the `security` section:
  `apiKey` as every example writes it, or `ApiKey` as the parameter table does.
- `number` and `capacity` at the top level, as every example writes them, or in a `settings`
  section, as the parameter table groups them; never in both places.
- Caller numbers registered for `voice.ani`: 74952222222, 74953333333.
- No `flashcall` section (a flash code is always the service's), no `callback_url`, no `/get/`:
  any of them is `unknown_request` (`/get/` is not served at all). The document has no
  `number_in_spam_list` and no `code_not_valid`: a code or capacity that is not allowed is
  `unknown_request`.
- An SMS follow-up answers as every other request: `code`, not VoicePassword's `message`.
- No call states are reported (no callbacks, no `/get/`); a scripted `state` still decides
  whether the phone shows the code, in VoicePassword's vocabulary.
"""

from __future__ import annotations

from aiohttp import web

from flashcall_dev.sandbox.voicepassword_api import Dialect, provider_spec, send_app

__all__ = ["API_KEY", "PROVIDER", "REGISTERED_ANI"]

API_KEY = "sandbox-mobilgroup-key"
REGISTERED_ANI = frozenset({"74952222222", "74953333333"})

MOBILGROUP = Dialect(
    name="mobilgroup",
    api_key=API_KEY,
    security_keys=frozenset({"apiKey", "ApiKey"}),
    registered_ani=REGISTERED_ANI,
    ani_fields=("ani",),
    send_errors=frozenset(
        {
            "unknown_request",
            "authorisation_failed",
            "user_disabled",
            "number_is_empty",
            "number_not_valid",
            "number_not_permitted",
            "not_enough_money",
            "ani_phone_not_valid",
        }
    ),
    code_error="unknown_request",
    client_flash_code=False,
    callback_url=False,
    settings_section=True,
    sms_message=False,
    sms_sender="MobilGroup",
)


def build_app() -> web.Application:
    return send_app(MOBILGROUP)


PROVIDER = provider_spec(MOBILGROUP, build_app)
