"""The express lane: the proxy listener's own HTTP/1.1 server for the common request.

aiohttp's server spends about 20 µs of a core on each request before our handler runs
and after it returns (a request object, a stream writer, a task and a future per
request, a response object and its header machinery: bench/RESULTS.md), a fifth of what
a whole forwarded request costs. A connection starts here instead: llhttp (through
httptools, as the upstream client parses, and as uvicorn serves) parses each request,
the same ``ProxyHandler`` serves it as an ``ExpressRequest``, and the upstream's answer
goes straight to the socket (``ExpressConnection.relay``).

Only what needs nothing more is served here: HTTP/1.1, no body (neither Content-Length
nor Transfer-Encoding), no Upgrade and no Expect, exactly one Host, a head within the
listener's limits, one request at a time, and a path that is not one of the proxy's own
endpoints. Anything else, a byte llhttp refuses included, and the connection is handed
to aiohttp's server (``SafeRequestHandler``) with every byte from the start of that
request: aiohttp answers it as it always did (its refusal pages, sign-in, bodies,
WebSockets) and keeps the connection. A hand-off happens before anything of the request
was done (no metric, no log line, nothing sent upstream), so no request is served twice.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools
from aiohttp import web
from aiohttp.helpers import must_be_empty_body, rfc822_formatted_time, should_remove_content_length
from aiohttp.http import HttpVersion11
from aiohttp.http_parser import SINGLETON_HEADERS
from multidict import CIMultiDict, MultiDictProxy
from yarl import URL

from authproxy.errors import AuthproxyError, ClientGone, UpstreamError
from authproxy.metrics import EXPRESS
from authproxy.logs import log
from authproxy.proxy.deadline import Deadline
from authproxy.proxy.flow import ReadFlow, WriteFlow
from authproxy.proxy.forward import UpstreamFailedEarly
from authproxy.proxy.headers import request_id_from, response_headers
from authproxy.proxy.pages import error_response

if TYPE_CHECKING:
    from authproxy.proxy.upstream.response import UpstreamResponse
    from authproxy.web.listener import SafeServer

# Bodies up to this size, when the upstream states their length, are read whole and sent
# with the head in one write (as proxy/forward.py does for aiohttp's lane).
SMALL_BODY = 64 * 1024
# Bytes of a next request that may wait while one is served (a pipelining client);
# reading pauses beyond it.
PENDING_LIMIT = 64 * 1024
# Bytes of an unfinished request head the lane holds (plain requests' heads are a few KiB);
# a larger one goes to aiohttp's server, whose limits (limits.header_size per line,
# limits.max_headers) decide.
HEAD_LIMIT = 64 * 1024
_REASONS = {status.value: status.phrase for status in HTTPStatus}
# Request headers that need aiohttp's lane (a body, a protocol switch, 100-continue), and
# the hand-off's reason.
# Headers a request may carry once (aiohttp's parser refuses a second one).
_SINGLETONS = frozenset(name.encode() for name in SINGLETON_HEADERS)
_NOT_EXPRESS = {b"content-length": "body", b"transfer-encoding": "body", b"upgrade": "upgrade", b"expect": "expect"}


class HandOff(AuthproxyError):
    """Raised by the handler for an ``ExpressRequest`` it cannot serve here (the proxy's
    own endpoints), before it did anything: the connection goes to aiohttp's server."""


class ExpressSent:
    """What the handler returns for an answer the express lane already wrote; ``cut``: the
    exchange ended without one (the client left, or the answer broke off), so the
    connection ends too."""

    __slots__ = ("status", "cut")

    def __init__(self, status: int, cut: bool = False):
        self.status = status
        self.cut = cut


class ExpressRequest:
    """The parts of ``aiohttp.web.BaseRequest`` the proxy's forwarding path reads, for a
    request without a body."""

    __slots__ = ("method", "raw_path", "headers", "remote", "scheme", "transport", "connection")

    version = HttpVersion11
    content_length = None
    body_exists = False

    def __init__(self, method: str, raw_path: str, headers: CIMultiDict[str], connection: ExpressConnection):
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.remote = connection.remote
        self.scheme = connection.scheme
        self.transport = connection.transport
        self.connection = connection

    def relay(self, upstream: UpstreamResponse, request_id: str) -> Any:
        return self.connection.relay(self, upstream, request_id)

    @property
    def query(self) -> MultiDictProxy[str]:
        """The query's parameters, as aiohttp's ``request.query`` gives them (forward-auth's ``redirect``)."""
        query = self.raw_path.partition("?")[2].partition("#")[0]  # a fragment is no part of it (yarl's split)
        return URL.build(path="/", query_string=query, encoded=True).query


class _NotExpress(Exception):
    """Raised from a parser callback: this request goes to aiohttp's lane, for ``reason``
    (the label of ``authproxy_express_handoffs_total``)."""

    def __init__(self, reason: str):
        self.reason = reason


class ExpressConnection(ReadFlow, WriteFlow, asyncio.Protocol):
    """One client connection, served here until a request needs aiohttp's lane."""

    def __init__(self, server: SafeServer, *, max_line_size: int, max_field_size: int, max_headers: int,
                 keepalive_timeout: float, **_: Any):
        self.server = server
        self.handler = server.request_handler
        self.loop = server.loop
        self._max_line = max_line_size
        self._max_field = max_field_size
        self._max_headers = max_headers
        self._idle_timeout = keepalive_timeout
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.scheme = "http"
        self._parser = httptools.HttpRequestParser(self)
        self._buffer = bytearray()  # bytes of the request being received, from its first
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._singletons: set[bytes] = set()  # of the request being received (SINGLETONS)
        self._complete = False  # a whole request is in the buffer
        self._keep_alive = True  # the complete request's (Connection, HTTP version)
        self._request: bytes = b""  # the request being served, as received (for a hand-off)
        self._busy = False
        self._pending = bytearray()  # bytes that came while a request was served
        self._paused_reading = False
        self._idle = Deadline(self.loop, self._idled_out)  # the client's idle timeout
        self._close_after = False
        self._head_sent = False  # of the current answer
        self._waiter: asyncio.Future[ExpressRequest | None] | None = None  # the serving task's, between requests
        self._between = False  # the serving task runs _finished: a next request is left in _next
        self._next: ExpressRequest | None = None
        self.closed = False

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, (tuple, list)) and peer else ""
        self.scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self.server.express_opened(self)
        self._wait_idle()

    def data_received(self, data: bytes) -> None:
        if self._busy:  # a next request while one is served: it waits its turn
            self._pending += data
            if len(self._pending) > PENDING_LIMIT:
                self.pause_reading()
            return
        self._buffer += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._hand_off(bytes(self._buffer), cause.reason if isinstance(cause, _NotExpress) else "malformed")
            return
        except httptools.HttpParserUpgrade:
            self._hand_off(bytes(self._buffer), "upgrade")
            return
        except httptools.HttpParserError:
            self._hand_off(bytes(self._buffer), "malformed")  # aiohttp refuses these bytes itself
            return
        if not self._complete:
            if len(self._buffer) > HEAD_LIMIT:  # a head this large is aiohttp's to judge, under its own limits
                self._hand_off(bytes(self._buffer), "limits")
            return
        self._request = bytes(self._buffer)
        self._buffer.clear()
        self._complete = False
        self._serve()

    def eof_received(self) -> bool | None:
        return None  # close: a client that stopped sending has no next request

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._idle.cancel()
        self._stop_waiting()
        self.writing_lost("client connection lost")
        self.server.express_closed(self)

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second request in the same bytes (pipelining): aiohttp's lane
            raise _NotExpress("pipelined")
        self._url = b""
        self._headers = []
        self._singletons = set()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) + 32 > self._max_line:  # the request line's method and version, generously
            raise _NotExpress("limits")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= self._max_headers or len(name) + len(value) + 4 > self._max_field:
            raise _NotExpress("limits")
        lower = name.lower()
        if lower in _NOT_EXPRESS and not (lower == b"content-length" and value.strip(b" \t") == b"0"):
            raise _NotExpress(_NOT_EXPRESS[lower])  # a body, an upgrade, 100-continue (a length of 0 is no body)
        if lower in _SINGLETONS:
            if lower in self._singletons:
                raise _NotExpress("duplicate")  # aiohttp's parser refuses a second one (400)
            self._singletons.add(lower)
        # RFC 9110 5.5: whitespace around a field value is not part of it (llhttp keeps the trailing)
        headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        if parser.get_http_version() != "1.1":
            raise _NotExpress("http_version")
        if b"host" not in self._singletons:
            raise _NotExpress("host")  # none: aiohttp's lane answers as it does
        if parser.should_upgrade():
            raise _NotExpress("upgrade")

    def on_message_complete(self) -> None:
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the message is done

    # --- serving -------------------------------------------------------------------------------

    def _serve(self) -> None:
        self._busy = True
        self._head_sent = False
        self._idle.clear()
        parser = self._parser
        self._close_after = not self._keep_alive
        headers: CIMultiDict[str] = CIMultiDict(
            [(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
             for name, value in self._headers]
        )
        self._headers = []
        request = ExpressRequest(parser.get_method().decode("ascii"), self._url.decode("utf-8", "surrogateescape"),
                                 headers, self)
        if self._between:  # the serving task itself, between two requests (``_finished``)
            self._next = request
            return
        waiter = self._waiter
        if waiter is not None:  # the serving task waits for this
            self._waiter = None
            waiter.set_result(request)
        else:
            self.loop.create_task(self._serve_requests(request))

    async def _serve_requests(self, request: ExpressRequest | None) -> None:
        """The connection's one task: a request, then the next, for as long as the
        connection is ours (a task per request would cost ~2 µs more each)."""
        while request is not None:
            await self._exchange(request)
            request, self._next = self._next, None
            if request is None:
                transport = self.transport
                if self.closed or transport is None or transport.is_closing() or transport.get_protocol() is not self:
                    return
                waiter = self._waiter = self.loop.create_future()
                request = await waiter  # None: the connection ended, or went to aiohttp's lane

    def _stop_waiting(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set_result(None)

    async def _exchange(self, request: ExpressRequest) -> None:
        try:
            response = await self.handler(request)
        except HandOff:
            self._busy = False
            self._hand_off(self._request + bytes(self._pending), "own_endpoint")
            return
        except Exception as exc:  # a bug: the handler answers every error it knows (counted there as 500)
            EXPRESS.requests += 1
            self._unhandled(request, exc)
            return
        EXPRESS.requests += 1
        try:
            if response.__class__ is ExpressSent:
                if response.cut:  # the answer broke off, or never started: the connection ends
                    self._end()
                    return
            elif not self.closed:
                self._write_response(request, response)
            if self._paused_writing and not self.closed:
                # The client does not read what it asked for: no next request until it does, so
                # answers cannot pile up in the transport's buffer (aiohttp's lane drains too).
                await self.writable(self._idle_timeout)
        except (TimeoutError, ConnectionError):  # it stopped reading for the idle timeout, or left
            self._end()
            return
        except Exception as exc:  # a bug writing the answer (a header no answer may carry)
            log().error("unhandled_error", exc_info=exc, extra={"fields": {
                "request_id": request_id_from(request.headers), "status": 500, "reason": type(exc).__name__,
                "client": self.remote}})
            self._end()
            return
        self._finished()

    def _end(self) -> None:
        """The connection ends now, with nothing more read or served."""
        self._busy = False
        self.abort()

    def _unhandled(self, request: ExpressRequest, exc: Exception) -> None:
        """As aiohttp's lane (``SafeRequestHandler.handle_error``): logged with its type, a
        fixed 500 page when nothing was sent yet, and the connection ends."""
        request_id = request_id_from(request.headers)
        log().error("unhandled_error", exc_info=exc, extra={"fields": {
            "request_id": request_id, "status": 500, "reason": type(exc).__name__, "client": self.remote}})
        if self.closed or self._head_sent:
            self._end()
            return
        from authproxy.web.listener import refusal  # listener.py imports this module

        self._close_after = True
        error, text = refusal(500, exc)
        try:
            self._write_response(request, error_response(500, error, text, request_id, accept="text/html"))
        except Exception:  # noqa: BLE001 - nothing more to say to this client
            self._end()
            return
        self._finished()

    def _finished(self) -> None:
        self._busy = False
        self._request = b""
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        if self._close_after or self.server.draining:
            assert self.transport is not None
            self.transport.close()
            return
        pending = self._pending
        if pending:
            self._pending = bytearray()
            self.resume_reading()
            self._between = True
            try:
                self.data_received(bytes(pending))
            finally:
                self._between = False
            if self._busy or self.transport is None or self.transport.get_protocol() is not self:
                return
        self.resume_reading()
        self._wait_idle()

    @property
    def busy(self) -> bool:
        return self._busy

    def should_close(self) -> bool:
        """Whether this response ends the connection: the client asked, or the process drains."""
        close = self._close_after or self.server.draining
        self._close_after = close
        return close

    # --- answers -----------------------------------------------------------------------------

    def _write_response(self, request: ExpressRequest, response: web.StreamResponse) -> None:
        """The handler's own answer (a refusal, an error page, a redirect), serialised as
        aiohttp's lane would: its cookies, Content-Length, Content-Type, Date, Connection."""
        assert isinstance(response, web.Response)
        headers = CIMultiDict(response.headers)
        for cookie in response.cookies.values():
            headers.add("Set-Cookie", cookie.output(header="")[1:])
        status = response.status
        body = response.body
        data = body if isinstance(body, bytes) else b""
        if must_be_empty_body(request.method, status):
            if should_remove_content_length(request.method, status):
                headers.popall("Content-Length", None)
            elif "Content-Length" not in headers:
                headers["Content-Length"] = str(len(data))
            data = b""
        else:
            headers["Content-Length"] = str(len(data))
            if data:
                headers.setdefault("Content-Type", "application/octet-stream")
        headers.setdefault("Server", "authproxy")
        if "Date" not in headers:
            headers["Date"] = rfc822_formatted_time()
        if response.keep_alive is False:
            self._close_after = True
        self._send_head(status, response.reason, list(headers.items()), data)

    async def relay(self, request: ExpressRequest, upstream: UpstreamResponse, request_id: str) -> ExpressSent:
        """``Forwarder.relay`` for this lane: the upstream's answer straight to the socket.
        Raises as it does: ``UpstreamFailedEarly`` when nothing was sent yet, ``UpstreamError``
        mid-body, ``ClientGone`` when the client left or stopped reading."""
        status = upstream.status
        length = upstream.content_length
        method = request.method
        headers = response_headers(upstream.headers, request_id, date=True)
        if must_be_empty_body(method, status):
            if should_remove_content_length(method, status):
                headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
            self._send_head(status, upstream.reason, headers, b"")
            return ExpressSent(status)
        if length is not None and length <= SMALL_BODY:
            body = upstream.body
            if body.complete and body.error is None:
                data = body.take()  # the common case: it came with the head, no await
            else:
                try:
                    data = await upstream.read()
                except UpstreamError as exc:
                    raise UpstreamFailedEarly(exc) from None
            self._send_head(status, upstream.reason, headers, data)
            return ExpressSent(status)
        chunked = length is None
        if chunked:  # RFC 9112 7.1: the upstream's framing is hop-by-hop; ours says where it ends
            headers.append(("Transfer-Encoding", "chunked"))
        self._send_head(status, upstream.reason, headers, b"")
        while True:
            chunk = await upstream.readany()
            if not chunk:
                break
            await self._send(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            await self._send(b"0\r\n\r\n")
        return ExpressSent(status)

    def _send_head(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, '')}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers]
        if self.should_close():
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        # One CRLF per line and no NUL, as aiohttp's writer insists: no value starts a header
        # (or a response) of its own.
        if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
            raise ClientGone()  # never sent: the connection ends instead (logged by the handler as cut)
        if self.closed:
            raise ClientGone()
        assert self.transport is not None
        self._head_sent = True
        head = text.encode("utf-8", "surrogateescape")
        self.transport.write(head + body if body else head)

    async def _send(self, data: bytes) -> None:
        """A body chunk, waiting while the client's socket is full; a client that stops
        reading for the idle timeout is gone (nginx's send_timeout)."""
        if self.closed:
            raise ClientGone()
        assert self.transport is not None
        self.transport.write(data)
        try:
            await self.writable(self._idle_timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise ClientGone() from exc

    # --- the connection's life -------------------------------------------------------------------

    def _wait_idle(self) -> None:
        if self._idle_timeout > 0:
            self._idle.set_in(self._idle_timeout)

    def _idled_out(self) -> None:
        if not self._busy and self.transport is not None:
            self.transport.close()  # nothing (or half a head) for the idle timeout, as aiohttp's lane

    def close_if_idle(self) -> None:
        """Draining: an idle connection closes now; a busy one after its answer."""
        if not self._busy and self.transport is not None and not self._buffer:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _hand_off(self, data: bytes, reason: str) -> None:
        """From this request on, aiohttp's server serves the connection."""
        EXPRESS.handed_off(reason)
        self._idle.cancel()
        self._stop_waiting()
        self._buffer.clear()
        self._pending = bytearray()
        transport = self.transport
        if transport is None or self.closed:
            return
        self.resume_reading()
        self.server.express_closed(self)
        protocol = self.server.aiohttp_protocol()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused_writing:
            protocol.pause_writing()
        if data:
            protocol.data_received(data)
