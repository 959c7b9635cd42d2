"""Status callbacks a provider posts to the client's `callback_url` once a call or SMS settles."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from flashcall_dev.sandbox.state import Record

__all__ = ["CallbackSender"]

CALLBACK_TIMEOUT_S = 5.0
PENDING = "pending"
FAILED = "failed"


class CallbackSender:
    """Posts JSON callbacks after a delay; a receiver's failure only ends up in the record."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # No per-host limit: under benchmark load hundreds of callbacks go to one receiver at once.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT_S),
        )

    async def close(self) -> None:
        await self.cancel_all()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def cancel_all(self) -> None:
        """Drop callbacks not yet sent, so none from before a reset lands in the next test."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def schedule(self, url: str, body: Mapping[str, str], delay_s: float, record: Record) -> None:
        record.callback_status = PENDING
        task = asyncio.get_running_loop().create_task(self._post(url, body, delay_s, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, body: Mapping[str, str], delay_s: float, record: Record) -> None:
        await asyncio.sleep(delay_s)
        if self._session is None:
            raise RuntimeError("CallbackSender.start() must be awaited before callbacks are scheduled")
        try:
            async with self._session.post(url, json=body) as response:
                await response.read()
                record.callback_status = str(response.status)
        except (aiohttp.ClientError, TimeoutError):
            record.callback_status = FAILED
