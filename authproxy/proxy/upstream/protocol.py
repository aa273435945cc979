"""One keep-alive connection to an origin: an asyncio Protocol whose bytes llhttp
(through httptools, the parser uvicorn uses) parses into the current response.

The head is checked here (its size) and framed by ``framing.response_framing``; the
body goes into the response's ``BodyBuffer``. Anything the framing does not account
for ends the connection: bytes when nothing was asked, a second response to one request
(RFC 9112 11.2), a body on a 1xx. A connection is reused only while both sides keep it
alive and nothing of the last exchange is left on it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools
from multidict import CIMultiDict

from authproxy.errors import UpstreamUnavailable
from authproxy.proxy.deadline import Deadline
from authproxy.proxy.flow import ReadFlow, WriteFlow
from authproxy.proxy.upstream.buffer import BodyBuffer
from authproxy.proxy.upstream.framing import INTERIM, UNTIL_CLOSE, Invalid, response_framing
from authproxy.proxy.upstream.origin import Origin
from authproxy.proxy.upstream.response import UpstreamResponse

if TYPE_CHECKING:
    from authproxy.proxy.upstream.pool import UpstreamPool

MAX_HEAD_BYTES = 64 * 1024  # a response head (nginx allows 4-8 KiB by default)


def reset_error() -> UpstreamUnavailable:
    return UpstreamUnavailable("reset", "the upstream service closed the connection")


def invalid_error(reason: str = "the upstream service sent an invalid response") -> UpstreamUnavailable:
    return UpstreamUnavailable("invalid_response", reason)


class _HeadersDone(Exception):
    """Stops the parser after a HEAD response's headers (llhttp would wait for a body)."""


class _Unacceptable(Exception):
    """Raised from a parser callback: the response cannot be framed safely."""


class _Surplus(Exception):
    """Raised from a parser callback: bytes after a complete response (never ours to read)."""


class _Connection(ReadFlow, WriteFlow, asyncio.Protocol):
    """One keep-alive connection to an origin; its parser lives as long as it does."""

    def __init__(self, pool: UpstreamPool, origin: Origin):
        self._pool = pool
        self.origin = origin
        # Asked once per connection: asyncio.get_running_loop() makes a getpid() syscall
        # on every call (CPython 3.11's fork check), three times a request before.
        self.loop = pool.loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self._body: BodyBuffer | None = None  # the response's
        self.closed = False
        self.received_any = False  # a byte of the current response arrived (the pool retries only before)
        self._keep_alive = True
        self._head_request = False
        self._in_head = False  # reading the current response's head (1xx heads included)
        self._informational = False  # between a 1xx head and its end
        self._until_close = False  # the current body ends at the connection's close
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._head_bytes = 0  # of the current response's heads, counted per packet
        self._paused_reading = False
        self._aborted = False  # we cut it: its end is not the upstream's end of a body
        self._packet = 0  # size of the packet being parsed (for the response-head limit)
        self.idle_since = 0.0
        # The read timeout of whichever response is being waited for: one timer per connection.
        self.read_deadline = Deadline(self.loop, self._read_timed_out)

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        body = self._body
        if body is None or body.complete:
            # Nothing asked, or the answer was complete: bytes now are never a response to
            # anything we sent, and a connection that carries them cannot be trusted again.
            self.abort()
            return
        self.received_any = True
        self._packet = len(data)
        try:
            self._parser.feed_data(data)
            if self._in_head and body.error is None:
                # llhttp buffers a header line until it ends, so the head is limited here, per
                # packet, not in on_header (one endless line would otherwise fill memory).
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    body.fail(invalid_error())
                    self.abort()
                    return
                body.wake()  # bytes arrived: the read timeout counts from now (between reads)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadersDone):
                self._keep_alive = False  # the parser still expects a body: never reuse it
                body.finish()
            elif isinstance(cause, _Surplus):
                self.abort()  # the answer before them stands; the connection does not
            else:
                body.fail(invalid_error())
                self.abort()
        except httptools.HttpParserUpgrade:
            body.fail(invalid_error("the upstream service switched protocols"))
            self.abort()
        except httptools.HttpParserError:
            body.fail(invalid_error())
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.read_deadline.cancel()
        body = self._body
        if body is not None and not body.complete:
            if not self._in_head and self._until_close and exc is None and not self._aborted:
                body.finish()  # a body delimited by the connection's close (RFC 9112 6.3 item 8)
            else:
                body.fail(reset_error())
        self.writing_lost("upstream connection lost")
        self._keep_alive = False
        self._pool.lost(self)

    def _read_timed_out(self) -> None:
        body = self._body
        if body is not None:
            body.timed_out()

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        body = self._body
        if body is None or body.complete:
            self._keep_alive = False
            raise _Surplus()
        self._raw_headers = []
        self._reason = b""

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response, body = self.response, self._body
        if response is None or body is None:
            return
        raw = self._raw_headers
        self._raw_headers = []
        if self._head_bytes + self._packet > MAX_HEAD_BYTES and (
            len(self._reason) + sum(len(n) + len(v) for n, v in raw) > MAX_HEAD_BYTES
        ):  # counted exactly only when the packets so far could hold a head over the limit
            raise _Unacceptable()
        headers: CIMultiDict[str] = CIMultiDict(
            [(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")) for name, value in raw]
        )
        status = self._parser.get_status_code()
        framing = response_framing(status, headers, self._head_request)
        if isinstance(framing, Invalid):
            raise _Unacceptable()
        if framing is INTERIM:  # 100 Continue, 103 Early Hints: not the answer
            self._informational = True
            body.wake()  # the upstream is alive: the read timeout starts again
            return
        self._keep_alive = bool(self._parser.should_keep_alive())
        self._until_close = framing is UNTIL_CLOSE
        self._in_head = False
        response.receive_head(status, self._reason.decode("latin-1", "replace"), headers, framing.length)
        if self._head_request:
            raise _HeadersDone()

    def on_body(self, body: bytes) -> None:
        if self._informational:
            raise _Unacceptable()  # a 1xx response has no body (RFC 9110 15.2)
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self._body is not None:
            self._body.finish()

    # --- used by the pool and the response ----------------------------------------------------

    def begin(self, response: UpstreamResponse, head_request: bool) -> None:
        """``response`` is the answer to the request about to be written."""
        self.response = response
        self._body = response.body
        self._head_request = head_request
        self._in_head = True
        self._until_close = False
        self._head_bytes = 0
        self.received_any = False

    def reusable(self) -> bool:
        transport = self.transport
        # Bytes of a request body still queued would go before the next request's head.
        return (self._keep_alive and not self.closed and transport is not None and not transport.is_closing()
                and not self._paused_writing and transport.get_write_buffer_size() == 0)

    def release(self) -> None:
        self.response = None
        self._body = None
        self._pool.idle(self)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait until the upstream takes more; ``timeout`` is nginx's proxy_send_timeout."""
        if self.closed:
            raise ConnectionResetError("upstream connection lost")
        await self.writable(timeout)

    def close(self) -> None:
        """A graceful close, for an idle connection with nothing left to send."""
        self._keep_alive = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close at once, discarding unsent bytes: close() would wait for an upstream that
        stopped reading, forever."""
        self._keep_alive = False
        self._aborted = True
        if self.transport is not None:
            self.transport.abort()
