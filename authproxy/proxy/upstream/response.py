"""One upstream response as the proxy sees it: status and headers once its head has
arrived, the body read as it arrives (a ``BodyBuffer``), and the request body's upload,
which may still run when the upstream answers early."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from authproxy.proxy.upstream.buffer import BodyBuffer

if TYPE_CHECKING:
    from authproxy.proxy.upstream.protocol import _Connection

_NO_HEADERS: CIMultiDict[str] = CIMultiDict()  # never mutated: a response's headers before they arrive


class UpstreamResponse:
    """One response: status and headers at once, the body read as it arrives."""

    __slots__ = ("status", "reason", "headers", "content_length", "body", "upload", "head_received", "_connection")

    def __init__(self, connection: _Connection, read_timeout: float):
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = _NO_HEADERS  # replaced when the head arrives
        self.content_length: int | None = None
        self.body = BodyBuffer(connection, read_timeout)  # fed by the connection
        self.upload: asyncio.Task[None] | None = None  # the request body's writer, when there is a body
        self.head_received = False
        self._connection = connection

    def receive_head(self, status: int, reason: str, headers: CIMultiDict[str], content_length: int | None) -> None:
        """The final response's head arrived (called by the connection)."""
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content_length = content_length
        self.head_received = True
        self.body.wake()

    async def wait_head(self) -> None:
        """Until the head arrived; the upstream's failure to send it raises."""
        body = self.body
        while not self.head_received:
            if body.error is not None:
                raise body.error
            # The read timeout counts once the request is sent (nginx's proxy_read_timeout):
            # a long upload is timed by its writes instead.
            upload = self.upload
            await body.wait(timed=upload is None or upload.done())

    _wait_headers = wait_head  # the name the framing fuzzer drives

    # Not coroutines themselves: the buffer's, handed on, so reading costs no extra frame.
    def readany(self) -> Coroutine[Any, Any, bytes]:
        """The next body bytes (all that arrived), or b"" once the body is complete."""
        return self.body.readany()

    def read(self) -> Coroutine[Any, Any, bytes]:
        """The whole body."""
        return self.body.read()

    @property
    def _buffered(self) -> int:  # bytes waiting unread (the flow-control test reads it)
        return self.body.buffered

    @property
    def body_error(self) -> BaseException | None:
        """Why the request body failed on the client's side (limits, idle time, the client
        leaving), when it did: the real cause behind an upstream error that followed."""
        upload = self.upload
        if upload is None or not upload.done() or upload.cancelled():
            return None
        return upload.exception()

    @property
    def uploading(self) -> bool:
        """The request body is still being sent (the upstream answered early)."""
        return self.upload is not None and not self.upload.done()

    async def stop_upload(self) -> None:
        """Abandon the request body and wait until its writer has stopped: it reads the
        client's body, which the server reads (drains) itself once the handler returns."""
        upload = self.upload
        if upload is not None and not upload.done():
            self._connection.abort()  # the upstream got part of a body: never reuse it
            upload.cancel()
            await asyncio.wait({upload})

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool when it can be
        reused (body complete and read, both sides keep-alive, request fully sent), else
        closes. Call ``stop_upload`` first when ``uploading``."""
        connection = self._connection
        if self.body.drained and not self.uploading and connection.reusable():
            connection.release()
        else:
            connection.abort()

    def close(self) -> None:
        self._connection.abort()
