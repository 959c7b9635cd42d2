"""Working imitations of the providers' HTTP APIs, with outcomes tests can script.

One aiohttp server: each provider under its own path prefix (`/voicepassword/...`), and the
control API under `/_sandbox/` (health, reset, script, balance, latency, inbox, records).
Sandbox credentials, fixtures and defaults are detailed in each provider's module:

- VoicePassword (`worker.sandbox.voicepassword`): API key `sandbox-voicepassword-key`, registered
  caller numbers 74950000000 and 74951111111, balance 1000.00 Rub.
"""

from worker.sandbox.app import create_app, serve

__all__ = ["create_app", "serve"]
