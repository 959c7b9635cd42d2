"""The router's exceptions: each says what went wrong and what to do about it."""

from __future__ import annotations


class FlashcallError(Exception):
    """Base of every error the router raises on purpose."""


class ConfigurationError(FlashcallError):
    """The environment or a routing file is wrong; fix it and restart (or save the file again)."""


class UsageError(ConfigurationError):
    """A command was given arguments it cannot take; `flashcall` exits with status 2, as
    argparse does for the ones it refuses itself."""


class RoutingFileError(ConfigurationError):
    """A routing file failed validation; the message names the line and the field."""


class BadMessage(FlashcallError):
    """A queue message that can never be processed (wrong shape or types): dead-lettered, not retried."""


class StoreUnavailable(FlashcallError):
    """Redis could not be reached or answered an error; the operation is safe to retry."""


class ClaimUnreplicated(StoreUnavailable):
    """No replica acknowledged an attempt's claim in time: the provider is not called (a
    failover could lose the claim and let the attempt be called again), and the message is
    retried like after an outage of Redis."""

    def __init__(self, message: str, *, written: bool) -> None:
        super().__init__(message)
        self.written = written
        """Whether the claim was written on the primary (where it may survive: its attempt then
        waits for its lease) or held back before writing."""
