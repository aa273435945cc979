"""The upstream HTTP/1.1 client: pooled keep-alive connections, streaming both ways.

Why our own and not aiohttp's ClientSession: a reverse proxy needs a fraction of a
general client (no cookies, redirects, auth, proxies, compression, multipart), and
that general machinery was the largest single cost per proxied request (bench/RESULTS.md).
What is left is small: an asyncio Protocol per connection, the response parsed by
llhttp (through httptools, the parser uvicorn uses), and flow control in both directions.

- Requests: head and body written as they come; a body of unknown length goes chunked
  (RFC 9112 7.1); the body is written while the response is awaited, so an upstream
  may answer early.
- Responses: 1xx informational responses are skipped (RFC 9110 15.2); a body ends at
  its Content-Length, its last chunk, or (neither given) the connection's close
  (RFC 9112 6.3). Reading pauses when ``_HIGH_WATER`` bytes wait unread.
- Connections: reused while both sides keep them alive, closed after ``keepalive_timeout``
  idle. A request that finds a reused connection closed before any response byte
  is sent again on a new one when that is safe (idempotent, no body: RFC 9110 9.2.2).
- Failures are typed: ``UpstreamUnavailable`` (refused, reset, invalid_response) and
  ``UpstreamTimeout``; a client body that fails its limits raises its own refusal.
- Framing is never guessed: a body must match its Content-Length, only ``chunked`` is an
  accepted transfer coding, a status outside 100-599, oversized headers or any byte after
  a complete response make the connection unusable (RFC 9112 11.2: request smuggling).
- Timeouts as nginx's: ``read`` between two reads from the upstream, counted once the
  request is sent; the same span for each write of the request body (send timeout).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator

import httptools
from multidict import CIMultiDict

from authproxy.errors import BadRequest, RequestRejected, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from authproxy.policy.routes import Origin

_HIGH_WATER = 256 * 1024  # unread response bytes that pause reading from the upstream
_LOW_WATER = 64 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
# Methods whose request means nothing without content: an absent body is sent as
# Content-Length: 0, so the upstream does not wait for one (RFC 9110 8.6).
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
_SWEEP_INTERVAL = 10.0
_MAX_HEADER_BYTES = 64 * 1024  # response head (nginx allows 4-8 KiB by default)
_MAX_HEADERS = 256
_NO_HEADERS: CIMultiDict[str] = CIMultiDict()  # never mutated: a response's headers before they arrive


class ClientBodyFailed(Exception):
    """Reading the client's request body failed (the client left); the caller answers 499."""


def _reset() -> UpstreamUnavailable:
    return UpstreamUnavailable("reset", "the upstream service closed the connection")


def _timeout() -> UpstreamTimeout:
    return UpstreamTimeout("timeout", "the upstream service did not answer in time")


class _HeadersDone(Exception):
    """Stops the parser after a HEAD response's headers (llhttp would wait for a body)."""


class _Unacceptable(Exception):
    """Raised from a parser callback: the response cannot be framed safely."""


class _Surplus(Exception):
    """Raised from a parser callback: bytes after a complete response (never ours to read)."""


def _invalid(reason: str = "the upstream service sent an invalid response") -> UpstreamUnavailable:
    return UpstreamUnavailable("invalid_response", reason)


class UpstreamResponse:
    """One response: status and headers at once, the body read as it arrives."""

    __slots__ = ("status", "reason", "headers", "content_length", "_connection", "_chunks", "_buffered",
                 "_complete", "_error", "_waiter", "_read_timeout", "_until_close", "_headers_done", "_writer",
                 "_received_any", "_raw_headers", "_reason_bytes", "_head_bytes")

    def __init__(self, connection: _Connection, read_timeout: float):
        self.status = 0
        self.reason = ""
        self.headers: CIMultiDict[str] = _NO_HEADERS  # replaced when the head arrives
        self.content_length: int | None = None
        self._connection = connection
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        self._until_close = False
        self._headers_done = False
        self._writer: asyncio.Task[None] | None = None
        self._received_any = False
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._reason_bytes = b""
        self._head_bytes = 0

    # --- fed by the connection ----------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered > _HIGH_WATER:
            self._connection.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    # --- read by the proxy -----------------------------------------------------------

    async def _wait(self, timed: bool = True) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(self._read_timeout, self._on_timeout, waiter) if timed else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None

    def _on_timeout(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._error = _timeout()
            self._connection.abort()
            waiter.set_result(None)

    async def _wait_headers(self) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            # The read timeout counts once the request is sent (nginx's proxy_read_timeout):
            # a long upload is timed by its writes instead.
            writer = self._writer
            await self._wait(timed=writer is None or writer.done())

    async def readany(self) -> bytes:
        """The next body bytes (all that arrived), or b"" once the body is complete."""
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._connection.resume_reading()
                return data
            if self._complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    @property
    def body_error(self) -> BaseException | None:
        """Why the request body failed on the client's side (limits, idle time, the client
        leaving), when it did: the real cause behind an upstream error that followed."""
        writer = self._writer
        if writer is None or not writer.done() or writer.cancelled():
            return None
        return writer.exception()

    @property
    def uploading(self) -> bool:
        """The request body is still being sent (the upstream answered early)."""
        return self._writer is not None and not self._writer.done()

    async def stop_upload(self) -> None:
        """Abandon the request body and wait until its writer has stopped: it reads the
        client's body, which the server reads (drains) itself once the handler returns."""
        writer = self._writer
        if writer is not None and not writer.done():
            self._connection.abort()  # the upstream got part of a body: never reuse it
            writer.cancel()
            await asyncio.wait({writer})

    def release(self) -> None:
        """Done with the response: its connection goes back to the pool when it can be
        reused (body complete, both sides keep-alive, request fully sent), else closes.
        Call ``stop_upload`` first when ``uploading``."""
        connection = self._connection
        if self._complete and not self._chunks and not self.uploading and connection.reusable():
            connection.release()
        else:
            connection.abort()

    def close(self) -> None:
        self._connection.abort()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an origin; its parser lives as long as it does."""

    def __init__(self, pool: UpstreamPool, origin: Origin):
        self._pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self._keep_alive = True
        self._head_request = False
        self._informational = False
        self._paused_reading = False
        self._paused_writing = False
        self._drain: asyncio.Future[None] | None = None
        self._aborted = False  # we cut it: its end is not the upstream's end of a body
        self._packet = 0  # size of the packet being parsed (for the response-head limit)
        self.idle_since = 0.0

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or response._complete:
            # Nothing asked, or the answer was complete: bytes now are never a response to
            # anything we sent, and a connection that carries them cannot be trusted again.
            self.abort()
            return
        response._received_any = True
        self._packet = len(data)
        try:
            self._parser.feed_data(data)
            if not response._headers_done and response._error is None:
                # llhttp buffers a header line until it ends, so the head is limited here, per
                # packet, not in on_header (one endless line would otherwise fill memory).
                response._head_bytes += len(data)
                if response._head_bytes > _MAX_HEADER_BYTES:
                    response._fail(_invalid())
                    self.abort()
                    return
                response._wake()  # bytes arrived: the read timeout counts from now (between reads)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _HeadersDone):
                self._keep_alive = False  # the parser still expects a body: never reuse it
                response._finish()
            elif isinstance(cause, _Surplus):
                self.abort()  # the answer before them stands; the connection does not
            else:
                response._fail(_invalid())
                self.abort()
        except httptools.HttpParserUpgrade:
            response._fail(_invalid("the upstream service switched protocols"))
            self.abort()
        except httptools.HttpParserError:
            response._fail(_invalid())
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response._complete:
            if response._headers_done and response._until_close and exc is None and not self._aborted:
                response._finish()  # a body delimited by the connection's close (RFC 9112 6.3 item 8)
            else:
                response._fail(_reset())
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("upstream connection lost"))
        self._keep_alive = False
        self._pool._forget(self)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        response = self.response
        if response is None or response._complete:
            self._keep_alive = False
            raise _Surplus()
        response._raw_headers = []
        response._reason_bytes = b""

    def on_status(self, status: bytes) -> None:
        if self.response is not None:
            self.response._reason_bytes += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        status = self._parser.get_status_code()
        if not 100 <= status <= 599 or len(response._raw_headers) > _MAX_HEADERS:
            raise _Unacceptable()
        if response._head_bytes + self._packet > _MAX_HEADER_BYTES and (
            len(response._reason_bytes) + sum(len(n) + len(v) for n, v in response._raw_headers) > _MAX_HEADER_BYTES
        ):  # counted exactly only when the packets so far could hold a head over the limit
            raise _Unacceptable()
        if status < 200:  # informational (100 Continue, 103 Early Hints): not the answer
            self._informational = True
            response._wake()  # the upstream is alive: the read timeout starts again
            return
        headers: CIMultiDict[str] = CIMultiDict()
        chunked = False
        for name, value in response._raw_headers:
            key = name.decode("utf-8", "surrogateescape")
            text = value.decode("utf-8", "surrogateescape")
            headers.add(key, text)
            lower = key.lower()
            if lower == "content-length":
                try:
                    response.content_length = int(text)
                except ValueError:
                    pass
            elif lower == "transfer-encoding":
                # Only "chunked" frames a body we can forward; other codings (or a list) would be
                # read to the close and passed on undeclared (RFC 9112 6.1, 6.3).
                if text.strip().lower() != "chunked":
                    raise _Unacceptable()
                chunked = True
        response.status = status
        response.reason = response._reason_bytes.decode("latin-1", "replace")
        response.headers = headers
        response._raw_headers = []
        self._keep_alive = bool(self._parser.should_keep_alive())
        no_body = self._head_request or status in (204, 304)
        response._until_close = not no_body and response.content_length is None and not chunked
        response._headers_done = True
        response._wake()
        if self._head_request:
            raise _HeadersDone()

    def on_body(self, body: bytes) -> None:
        if self._informational:
            raise _Unacceptable()  # a 1xx response has no body (RFC 9110 15.2)
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self.response is not None:
            self.response._finish()

    # --- used by the pool and the response ----------------------------------------------------

    def begin(self, response: UpstreamResponse, head_request: bool) -> None:
        self.response = response
        self._head_request = head_request

    def reusable(self) -> bool:
        transport = self.transport
        # Bytes of a request body still queued would go before the next request's head.
        return (self._keep_alive and not self.closed and transport is not None and not transport.is_closing()
                and not self._paused_writing and transport.get_write_buffer_size() == 0)

    def release(self) -> None:
        self.response = None
        self._pool._give_back(self)

    def pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None:
            self._paused_reading = False
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait until the upstream takes more; ``timeout`` is nginx's proxy_send_timeout."""
        if self.closed:
            raise ConnectionResetError("upstream connection lost")
        if self._paused_writing:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._drain
            finally:
                self._drain = None

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


class UpstreamPool:
    """Keep-alive connections per origin, no cap (the upstream's own limits apply)."""

    def __init__(self, *, keepalive_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None):
        self.keepalive_timeout = keepalive_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl = ssl_context  # default: the system's CAs, hostname checked
        self._sweeper: asyncio.TimerHandle | None = None
        self.connections_opened = 0

    async def request(
        self,
        origin: Origin,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: AsyncIterator[bytes] | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        has_length: bool,
    ) -> UpstreamResponse:
        """Send; the response once its headers arrived. ``has_length``: the headers carry
        Content-Length for ``body`` (else it goes chunked)."""
        if body is None and method not in _BODYLESS and "Content-Length" not in headers:
            headers["Content-Length"] = "0"
        elif body is not None and not has_length:
            headers["Transfer-Encoding"] = "chunked"
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append("\r\n")
        text = "".join(lines)
        # Defence in depth (the server's parser refuses these already): one CRLF per line
        # and no NUL, so no value can start a header or a request of its own.
        if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
            raise BadRequest("a header or the target holds a line break or NUL")
        head = text.encode("utf-8", "surrogateescape")
        length = int(headers["Content-Length"]) if body is not None and has_length else None
        retry_allowed = body is None and method in _IDEMPOTENT
        fresh = False
        while True:
            connection, reused = await self._acquire(origin, connect_timeout, fresh)
            response = UpstreamResponse(connection, read_timeout)
            connection.begin(response, method == "HEAD")
            connection.write(head)
            if body is not None:
                writer = response._writer = asyncio.get_running_loop().create_task(
                    _send_body(connection, response, body, length, read_timeout)
                )
                writer.add_done_callback(_writer_done)
            try:
                await response._wait_headers()
            except BaseException as exc:  # cancellation too: nothing may outlive the request
                writer = response._writer
                body_failed = writer is not None and writer.done() and not writer.cancelled() and writer.exception()
                await response.stop_upload()
                connection.abort()
                if isinstance(exc, UpstreamError):
                    if body_failed:
                        raise body_failed from None  # the client's body failed first: that is the answer
                    if reused and retry_allowed and not fresh and not response._received_any and not isinstance(
                        exc, UpstreamTimeout
                    ):
                        fresh = True  # a pooled connection the upstream had closed: once more, on a new one
                        continue
                raise
            return response

    async def _acquire(self, origin: Origin, connect_timeout: float, fresh: bool = False) -> tuple[_Connection, bool]:
        idle = None if fresh else self._idle.get(origin)
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                connection = idle.pop()
                if connection.reusable() and now - connection.idle_since < self.keepalive_timeout:
                    return connection, True
                connection.abort()
        return await self._connect(origin, connect_timeout), False

    async def _connect(self, origin: Origin, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context = None
        if origin.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin), origin.host, origin.port, ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError:
            raise _timeout() from None
        except OSError:  # refused, unreachable, name not found, TLS failure
            raise UpstreamUnavailable("refused", "the upstream service refused the connection") from None
        self.connections_opened += 1
        self._all.add(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        return connection

    def _give_back(self, connection: _Connection) -> None:
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(connection.origin, []).append(connection)

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)

    def _sweep(self) -> None:
        """Close connections idle for longer than keepalive_timeout."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for origin, idle in list(self._idle.items()):
            keep = [c for c in idle if c.reusable() and now - c.idle_since < self.keepalive_timeout]
            for connection in idle:
                if connection not in keep:
                    connection.abort()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep) if self._all else None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._all):
            connection.abort()
        self._idle.clear()
        await asyncio.sleep(0)  # let transports run their close callbacks


def _writer_done(task: asyncio.Task[None]) -> None:
    """A body writer's failure is reported through the request (or ends with the
    response); marking it retrieved keeps asyncio from logging it again."""
    if not task.cancelled():
        task.exception()


async def _send_body(
    connection: _Connection, response: UpstreamResponse, body: AsyncIterator[bytes], length: int | None,
    send_timeout: float,
) -> None:
    """Write the request body with backpressure: as sent (``length``, which it must
    match exactly) or chunked. If the client's side fails (limits, the client leaving,
    a body longer or shorter than announced) the upstream connection is aborted and the
    failure raised here for the request to report. If the upstream side fails, the
    response reports it."""
    sent = 0
    chunks = None
    try:
        chunks = body.__aiter__()
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except RequestRejected:
                _abandon(connection, response)
                raise
            except Exception as exc:  # the client's body stream broke: the client left
                _abandon(connection, response)
                raise ClientBodyFailed() from exc
            if not chunk:
                continue  # an empty chunk would end a chunked body (RFC 9112 7.1)
            sent += len(chunk)
            if length is not None and sent > length:
                # Never more than announced: the surplus would be the upstream's next request.
                _abandon(connection, response)
                raise ClientBodyFailed()
            connection.write(chunk if length is not None else b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await connection.drain(send_timeout)
        if length is not None and sent != length:
            _abandon(connection, response)
            raise ClientBodyFailed()
        if length is None:
            connection.write(b"0\r\n\r\n")
    except TimeoutError:  # the upstream stopped taking the body: nginx's proxy_send_timeout
        connection.abort()
        response._fail(_timeout())
    except ConnectionError:  # the upstream went away mid-upload; the response side reports it
        connection.abort()
    except BaseException:  # cancelled (stop_upload) or anything unforeseen: a partial body never stays
        connection.abort()
        raise
    finally:
        response._wake()  # the read timeout starts now
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


def _abandon(connection: _Connection, response: UpstreamResponse) -> None:
    connection.abort()
    response._fail(_reset())
