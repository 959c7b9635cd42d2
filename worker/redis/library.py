"""The `flashcall` Redis Functions library (flashcall.lua beside this module): its source,
its version and its installation."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import redis
import redis.asyncio

__all__ = ["LIBRARY_NAME", "install", "install_async", "library_source", "library_version"]

LIBRARY_NAME = "flashcall"


@cache
def library_source() -> str:
    return resources.files(__package__).joinpath("flashcall.lua").read_text(encoding="utf-8")


def library_version() -> str:
    found = re.search(r"^local VERSION = '([^']+)'", library_source(), re.MULTILINE)
    if found is None:  # pragma: no cover - guarded by a unit test on the shipped file
        raise RuntimeError("flashcall.lua declares no VERSION")
    return found.group(1)


def install(client: redis.Redis) -> None:
    """Load (or replace) the library: idempotent, atomic, safe from many processes at once."""
    client.function_load(library_source(), replace=True)


async def install_async(client: redis.asyncio.Redis) -> None:
    await client.function_load(library_source(), replace=True)
