"""Working imitations of the providers' HTTP APIs, with outcomes tests can script.

Each provider is served on its own port at exactly its documented paths; the control API
(`/_sandbox/`: health, providers, reset, script, balance, latency, settings, inbox, records) on another.
Sandbox credentials, fixtures and defaults are detailed in each provider's module:

- VoicePassword (`flashcall_dev.sandbox.voicepassword`): API key `sandbox-voicepassword-key`, registered
  caller numbers 74950000000 and 74951111111, balance 1000.00 Rub.
- MobilGroup (`flashcall_dev.sandbox.mobilgroup`): API key `sandbox-mobilgroup-key`, registered caller
  numbers 74952222222 and 74953333333, balance 1000.00 Rub.
- FlashingCall REST gateway (`flashcall_dev.sandbox.gateway`): `POST /`; login `sandbox-gateway-login`
  (flash calls) or `sandbox-gateway-voicecode-login` (VoiceCode), password `sandbox-gateway-password`.
- Telphin (`flashcall_dev.sandbox.telphin`): `POST /` and `POST /auth/`; app_id `sandbox-telphin-app-id`,
  app_secret `sandbox-telphin-app-secret`; limits and code lifetime set by `/_sandbox/settings`.
"""

from flashcall_dev.sandbox.app import DEFAULT_PORT, RunningSandbox, default_provider_ports, serve, start

__all__ = ["DEFAULT_PORT", "RunningSandbox", "default_provider_ports", "serve", "start"]
