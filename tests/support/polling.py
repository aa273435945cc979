"""Waiting on a condition another process or task brings about, by polling it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def settled(read: Callable[[], Any], expected: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """What ``read()`` gives (awaited, when it gives an awaitable) once it equals ``expected``, or
    at the timeout: the caller asserts on it, so a failure shows the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if inspect.isawaitable(value):
            value = await value
        if value == expected or time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)
