"""Single flight: concurrent calls for one key share one run of the work.

The one helper behind every "one caller does the work, the others wait" in authproxy
(the session cache's store reads, token refreshes, JWKS fetches, service tokens), as
Go's ``golang.org/x/sync/singleflight`` is there. Its contract:

- The work runs in a task of its own, started by the first caller for a key; callers
  that come while it runs await the same task.
- No caller's cancellation reaches the work or the other callers: each waits through
  ``asyncio.shield``, so a request that times out or is cancelled leaves only itself.
  The work carries on even when every caller has left (a refresh that redeemed a
  refresh token still saves the new tokens).
- Its outcome, value or exception, is every waiter's.
- The key is forgotten when the work ends, before any waiter resumes: a call after
  that starts a new run. A run that nobody awaits any more does not log its error as
  "never retrieved" (the work's owner decides what a failure means, not asyncio).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class SingleFlight(Generic[Key, Value]):
    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: dict[Key, asyncio.Task[Value]] = {}

    async def run(self, key: Key, work: Callable[[], Awaitable[Value]]) -> Value:
        """The outcome of ``work()``, or of the run already under way for ``key`` (whose
        ``work`` is then not called)."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._own(key, work))
            self._running[key] = task
            task.add_done_callback(functools.partial(self._settled, key))
        return await asyncio.shield(task)

    def running(self, key: Key) -> bool:
        """Whether a run for ``key`` is under way."""
        return key in self._running

    def __len__(self) -> int:
        return len(self._running)

    async def _own(self, key: Key, work: Callable[[], Awaitable[Value]]) -> Value:
        try:
            return await work()
        finally:
            # Inside the task, so the key is gone by the time the task is done and any
            # waiter resumes (a done callback would run one loop iteration later).
            self._forget(key, asyncio.current_task())

    def _forget(self, key: Key, task: asyncio.Future[Value] | None) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    def _settled(self, key: Key, task: asyncio.Task[Value]) -> None:
        self._forget(key, task)  # a task cancelled before it ever ran never reached ``_own``'s finally
        if not task.cancelled():
            task.exception()  # retrieved: waiters re-raise it; with none left it is not "lost"
