"""Working imitations of the providers' HTTP APIs, with outcomes tests can script.

Each provider is served on its own port at exactly its documented paths; the control API
(`/_sandbox/`: health, providers, reset, script, balance, latency, inbox, records) on another.
Sandbox credentials, fixtures and defaults are detailed in each provider's module:

- VoicePassword (`worker.sandbox.voicepassword`): API key `sandbox-voicepassword-key`, registered
  caller numbers 74950000000 and 74951111111, balance 1000.00 Rub.
"""

from worker.sandbox.app import RunningSandbox, serve, start

__all__ = ["RunningSandbox", "serve", "start"]
