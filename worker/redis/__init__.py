"""The Redis plumbing: the `flashcall` Functions library (library.py, flashcall.lua),
connections to one server or through Sentinel, claims that wait for a replica, the
verification store, and Dramatiq's broker with its repairs."""
