"""The worker process: its settings, the runtime it builds at boot (runtime.py: the store,
providers, routing and verifier of one process), its timer loop, heartbeats, metrics and
the Dramatiq middleware (middleware/)."""
