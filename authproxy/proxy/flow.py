"""asyncio's flow control for a Protocol. Writing: the transport says when its buffer is
full (``pause_writing``) and when it drained (``resume_writing``), and a writer waits in
between (``writable``). Reading: the protocol pauses its transport while what it read waits
for a consumer. Shared by the upstream connections and the express lane's client connections."""

from __future__ import annotations

import asyncio


class WriteFlow:
    """Mixed into an ``asyncio.Protocol`` with a ``loop`` attribute."""

    loop: asyncio.AbstractEventLoop
    _paused_writing = False  # the transport's buffer is over its high-water mark
    _drain: asyncio.Future[None] | None = None  # a writer waits for resume_writing

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def writing_lost(self, why: str) -> None:
        """The connection is gone: a waiting writer gets ``ConnectionResetError(why)``."""
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError(why))

    async def writable(self, timeout: float) -> None:
        """Until the transport takes more (at once when it does). ``TimeoutError`` after
        ``timeout`` seconds; ``ConnectionResetError`` when the connection is lost meanwhile."""
        if self._paused_writing:
            drain = self._drain = self.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await drain
            finally:
                self._drain = None


class ReadFlow:
    """Mixed into an ``asyncio.Protocol`` with a ``transport`` attribute."""

    transport: asyncio.Transport | None
    _paused_reading = False

    def pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()
