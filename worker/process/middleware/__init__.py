"""Dramatiq middleware, cross-cutting work around every message: the process's role
(roles.py), its runtime's boot (boot.py), log context, dead letters and Dramatiq's own
metrics; chain.py puts them in order on the broker."""
