"""A deadline that costs a float store to move: one event-loop timer, re-armed only when
it fires.

A timer per request (``loop.call_later`` and its ``cancel``) costs about 1.8 µs on these
machines, and a request set two of them (the read timeout of the upstream's answer, the
client's idle timeout): most never fire. A ``Deadline`` keeps one timer per connection.
Moving the deadline later only records it; the timer, when it fires early, looks again
and sleeps until the new one. Moving it earlier than the armed timer re-arms at once, so
no deadline is ever late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_EARLY = 0.001  # libuv timers have millisecond resolution: a timer this close is due


class Deadline:
    __slots__ = ("_loop", "_callback", "_at", "_handle", "_armed_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]):
        self._loop = loop
        self._callback = callback  # called once the deadline passes (and not before)
        self._at: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    def set(self, at: float) -> None:
        """Call back at ``at`` (loop time) unless cleared or moved before."""
        self._at = at
        handle = self._handle
        if handle is None or at < self._armed_at:
            if handle is not None:
                handle.cancel()
            self._armed_at = at
            self._handle = self._loop.call_at(at, self._fire)

    def set_in(self, seconds: float) -> None:
        self.set(self._loop.time() + seconds)

    def clear(self) -> None:
        """No deadline (the timer, if armed, stops when it fires)."""
        self._at = None

    def cancel(self) -> None:
        """No deadline and no timer: for a connection that is gone."""
        self._at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        at = self._at
        if at is None:
            return
        if self._loop.time() + _EARLY >= at:
            self._at = None
            self._callback()
        else:
            self._armed_at = at
            self._handle = self._loop.call_at(at, self._fire)
