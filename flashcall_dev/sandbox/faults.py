"""Answers of a provider that misbehaves: slow, dropping the connection, hanging, or broken."""

from __future__ import annotations

import asyncio
import contextlib
from http import HTTPStatus

from aiohttp import web

from flashcall_dev.sandbox.state import Behaviour, Record

__all__ = ["delay", "faulty_answer"]

# A hanging request looks for its client leaving this often; cheap even with hundreds in flight.
_HANG_POLL_S = 0.1
_TRICKLE_BYTE_S = 1.0
_REASONS = {status.value: status.phrase for status in HTTPStatus}


async def delay(latency_ms: int) -> None:
    if latency_ms > 0:
        await asyncio.sleep(latency_ms / 1000)


def _gone(request: web.BaseRequest) -> bool:
    return request.transport is None or request.transport.is_closing()


def _drop(request: web.BaseRequest) -> web.Response:
    if request.transport is not None:
        request.transport.close()
    # Nothing reaches the client once the transport is closed; aiohttp just needs a response object.
    return web.Response()


async def _trickle(request: web.BaseRequest, closing: asyncio.Event) -> web.StreamResponse:
    """A server that is alive but stuck: every read succeeds, so only a total deadline ends it."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        while not _gone(request) and not closing.is_set():
            await response.write(b" ")
            await asyncio.sleep(_TRICKLE_BYTE_S)
    return response


def _error_page(status: int) -> web.Response:
    """What the reverse proxy in front of a real provider sends when the service behind it fails."""
    title = f"{status} {_REASONS.get(status, 'Error')}"
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(status=status, text=page, content_type="text/html")


async def faulty_answer(
    request: web.BaseRequest, behaviour: Behaviour, record: Record, closing: asyncio.Event
) -> web.StreamResponse | None:
    """The scripted transport-level answer, or None when the provider answers normally."""
    if behaviour.hang:
        record.fault = "hang"
        # Without handler cancellation aiohttp keeps a handler running after its client left.
        while not _gone(request) and not closing.is_set():
            await asyncio.sleep(_HANG_POLL_S)
        return _drop(request)
    if behaviour.trickle:
        record.fault = "trickle"
        return await _trickle(request, closing)
    if behaviour.disconnect:
        record.fault = "disconnect"
        return _drop(request)
    if behaviour.body is not None:
        record.http_status = behaviour.http_status or int(HTTPStatus.OK)
        return web.Response(status=record.http_status, text=behaviour.body, content_type="application/json")
    if behaviour.http_status is not None:
        record.http_status = behaviour.http_status
        return _error_page(behaviour.http_status)
    return None
