"""A response body between the upstream connection and the proxy: bytes that arrived
and are not read yet, with the watermarks that pause reading from the upstream.

The connection feeds it (``feed``, ``finish``, ``fail``) and the proxy reads it
(``readany``). Reading from the upstream pauses once more than ``HIGH_WATER`` bytes wait
unread, and resumes once the reader has taken them (then at most ``LOW_WATER`` remain:
each read takes all), so a slow client holds at most that much of a fast upstream's
answer in memory. Each wait for the upstream is bounded by the read timeout (nginx's
proxy_read_timeout: the time between two reads), after which the connection is cut.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Protocol

from authproxy.errors import UpstreamError, UpstreamTimeout
from authproxy.proxy.deadline import Deadline

HIGH_WATER = 256 * 1024  # unread response bytes that pause reading from the upstream
LOW_WATER = 64 * 1024  # ... and that resume it (every read takes all, so 0 in practice)


class Source(Protocol):
    """What a body buffer needs of the connection that feeds it."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def abort(self) -> None: ...


def timeout_error() -> UpstreamTimeout:
    return UpstreamTimeout("timeout", "the upstream service did not answer in time")


class BodyBuffer:
    __slots__ = ("_source", "_chunks", "buffered", "complete", "error", "_waiter", "_read_timeout", "_loop",
                 "_deadline")

    def __init__(self, source: Source, read_timeout: float):
        self._source = source
        self._chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0  # bytes waiting unread
        self.complete = False  # the body ended as its framing says
        self.error: UpstreamError | None = None  # why it will never be complete
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        # The source's event loop when it names one (a connection does): get_running_loop()
        # per wait would be a getpid() syscall each (CPython 3.11's fork check).
        self._loop: asyncio.AbstractEventLoop | None = getattr(source, "loop", None)
        # The read timeout: the connection's one timer when it has one (proxy/deadline.py).
        self._deadline: Deadline | None = getattr(source, "read_deadline", None)

    # --- fed by the connection ----------------------------------------------------------------

    def wake(self) -> None:
        """Something happened (bytes, the head, the end of an upload): a waiting reader
        looks again, and its read timeout starts over."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > HIGH_WATER:
            self._source.pause_reading()
        self.wake()

    def finish(self) -> None:
        self.complete = True
        self.wake()

    def fail(self, error: UpstreamError) -> None:
        """The body (or the head before it) will not come; the first reason stands, and a
        complete body stays complete."""
        if self.error is None and not self.complete:
            self.error = error
        self.wake()

    # --- read by the proxy ------------------------------------------------------------------

    async def wait(self, timed: bool = True) -> None:
        """Until the next ``wake``; ``timed``: at most the read timeout, after which the
        connection is cut and ``error`` says so."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        deadline = self._deadline
        if timed:
            if deadline is None:  # a source without its own (the connection has one)
                deadline = self._deadline = Deadline(loop, self.timed_out)
            deadline.set(loop.time() + self._read_timeout)
        try:
            await waiter
        finally:
            if timed and deadline is not None:
                deadline.clear()
            self._waiter = None

    def timed_out(self) -> None:
        """The read timeout passed while waiting: the connection is cut."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self.error = timeout_error()
            self._source.abort()
            waiter.set_result(None)

    async def readany(self) -> bytes:
        """The next body bytes (all that arrived), or b"" once the body is complete."""
        while True:
            if self._chunks:
                return self.take()
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self.wait()

    def take(self) -> bytes:
        """Everything buffered, at once: ``readany`` without an await (for a body already
        complete). The buffer is then under LOW_WATER, so the upstream may send again."""
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        self._source.resume_reading()
        return data

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    @property
    def drained(self) -> bool:
        """Complete and all read: nothing of this response is left on its connection."""
        return self.complete and not self._chunks
