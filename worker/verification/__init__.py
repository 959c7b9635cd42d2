"""Verification: what the actors do with a verification (verifier.py: claim, call, record,
fall back), how a typed code is checked (checks.py), and the events each attempt emits
(events.py)."""
