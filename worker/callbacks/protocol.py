"""uvicorn's HTTP/1.1 protocol (h11) with the deadlines uvicorn lacks.

uvicorn 0.55 bounds only the wait between two requests of a kept-alive connection
(`timeout_keep_alive`, armed when a response completes, in uvicorn/protocols/http/h11_impl.py).
Nothing bounds a connection that never finishes its headers (its timer is disarmed by the
first byte) nor a body trickled a byte every few seconds: each holds its socket for as long
as its client likes. Here a request's headers must be complete within `header_timeout`
seconds of the connection (or of a kept-alive connection's first bytes of its next request),
and its body within `body_timeout` seconds of its headers; otherwise the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from worker.logs.structured import get_logger

__all__ = ["DeadlineH11Protocol"]

log = get_logger(__name__)


class DeadlineH11Protocol(H11Protocol):
    """Use `with_deadlines` for a class with deadlines of its own: uvicorn makes one
    protocol instance per connection from the class alone."""

    header_timeout: ClassVar[float] = 5.0
    body_timeout: ClassVar[float] = 5.0

    @classmethod
    def with_deadlines(cls, *, header_timeout: float, body_timeout: float) -> type[DeadlineH11Protocol]:
        return type(cls.__name__, (cls,), {"header_timeout": header_timeout, "body_timeout": body_timeout})

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            # The first bytes of a kept-alive connection's next request: its headers are due.
            self._arm(self.header_timeout, "headers")
        super().data_received(data)

    def handle_events(self) -> None:
        # Called for received bytes and again when a response completes (pipelined requests):
        # a new cycle is a request whose headers are complete.
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._arm(self.body_timeout, "body")
        if self.cycle is not None and not self.cycle.more_body:
            self._disarm()

    def _arm(self, seconds: float, waiting_for: str) -> None:
        self._disarm()
        self._waiting_for = waiting_for
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            log.info("connection closed: a request too slow to arrive", waiting_for=self._waiting_for)
            self.transport.close()
