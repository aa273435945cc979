"""Streaming forwarder: requests go out over our own pooled HTTP/1.1 client
(``proxy.http_client``), WebSocket upgrades through one aiohttp client session.

Bodies stream in both directions with backpressure: a chunk is read from one side
only after the previous one was written to the other, and aiohttp pauses reading a
socket whose buffer is full, so memory stays flat whatever the body size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from authproxy.errors import (  # noqa: F401 - ClientGone re-exported
    AuthproxyError,
    ClientGone,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from authproxy.policy.routes import Route
from authproxy.proxy.headers import copy_response_headers
from authproxy.proxy.http_client import UpstreamPool, UpstreamResponse

# Bodies up to this size, when the upstream states their length, are read whole
# and sent in one write: fewer syscalls for the common small API response.
_SMALL_BODY = 64 * 1024


class RequestBody:
    """The client's request body as an async iterator, with a size limit and an idle timeout.

    A refusal (size, idle time) is raised as such; the upstream client reports it
    instead of the upstream connection it aborts.
    """

    __slots__ = ("_content", "_limit", "_idle", "received", "error")

    def __init__(self, content: aiohttp.StreamReader, limit: int | None, idle_timeout: float):
        self._content = content
        self._limit = limit
        self._idle = idle_timeout
        self.received = 0
        self.error: Exception | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._content
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle):
                        chunk = await content.readany()
                except TimeoutError:
                    raise RequestTimeout(f"no request body data arrived for {self._idle:g}s") from None
                if not chunk:
                    return
                self.received += len(chunk)
                if self._limit is not None and self.received > self._limit:
                    raise PayloadTooLarge(f"request body exceeds this route's limit of {self._limit} bytes")
                yield chunk
        except Exception as exc:
            self.error = exc
            raise


class _OneWrite(web.StreamResponse):
    """A response whose head is written together with its body (or its end), in one
    write: aiohttp (3.12+) writes a ``StreamResponse``'s head as soon as it is prepared,
    a second write() syscall per request, and a second read for the client."""

    _send_headers_immediately = False


class UpstreamFailedEarly(AuthproxyError):
    """The upstream failed before any response byte went to the client: ``error`` can
    still be answered with an error page."""

    def __init__(self, error: UpstreamError):
        self.error = error
        super().__init__(str(error))


class Forwarder:
    """Sends requests to upstreams over pooled keep-alive connections (our own HTTP/1.1
    client); WebSocket upgrades go through aiohttp's client session."""

    def __init__(self, *, client_idle_timeout: float):
        self._client_idle_timeout = client_idle_timeout
        self.pool = UpstreamPool(keepalive_timeout=30.0)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=10),
            auto_decompress=False,  # bytes pass through as the upstream encoded them
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies belong to the browser, not to us
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )

    async def close(self) -> None:
        await self.pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp's client, for WebSocket upgrades."""
        assert self._session is not None, "Forwarder.start() was not awaited"
        return self._session

    @staticmethod
    def websocket_url(route: Route, path: str, query: str) -> URL:
        upstream = route.upstream.url
        # Built from parts (no parsing); already canonical, so it must not be re-quoted.
        return URL.build(
            scheme=upstream.scheme,
            host=upstream.raw_host or "",
            port=upstream.explicit_port,
            path=path,
            query_string=query,
            encoded=True,
        )

    def send(
        self,
        request: web.BaseRequest,
        route: Route,
        target: str,
        headers: CIMultiDict[str],
        body: RequestBody | None,
    ) -> Awaitable[UpstreamResponse]:
        """Send the request upstream; awaiting the result gives the response once its
        headers arrived. Not a coroutine itself: one frame less on the hot path.
        Raises ``UpstreamError``, a ``RequestRejected`` for the client's body, or
        ``ClientBodyFailed`` when the client left during its upload."""
        return self.pool.request(
            route.upstream.origin,
            request.method,
            target,
            headers,
            body.chunks() if body is not None else None,
            connect_timeout=route.connect_timeout,
            read_timeout=route.read_timeout,
            has_length="Content-Length" in headers,
        )

    async def relay(
        self,
        request: web.BaseRequest,
        upstream: UpstreamResponse,
        request_id: str,
    ) -> web.StreamResponse:
        """Stream the upstream response to the client; the caller releases ``upstream``.
        An upstream failure mid-body raises ``UpstreamError``; the client leaving, ``ClientGone``."""
        status = upstream.status
        length = upstream.content_length
        bodiless = request.method == "HEAD" or status in (204, 304)
        # The head goes out with the body when the body is small or absent; a streamed
        # body's head goes at once (the client learns the status while the body comes).
        kind = _OneWrite if bodiless or (length is not None and length <= _SMALL_BODY) else web.StreamResponse
        response = kind(status=status, reason=upstream.reason or None)
        copy_response_headers(upstream.headers, response.headers, request_id)
        try:
            if bodiless:
                await response.prepare(request)
                await response.write_eof()
            elif length is not None and length <= _SMALL_BODY:
                try:
                    body = await upstream.read()
                except UpstreamError as exc:
                    raise UpstreamFailedEarly(exc) from None
                await response.prepare(request)
                await response.write_eof(body)
            else:
                await response.prepare(request)
                idle = self._client_idle_timeout
                while True:
                    chunk = await upstream.readany()
                    if not chunk:
                        break
                    # A client that stops reading must not hold its connection and an
                    # upstream one forever (nginx's send_timeout).
                    async with asyncio.timeout(idle):
                        await response.write(chunk)
                await response.write_eof()
        except TimeoutError as exc:
            raise ClientGone() from exc
        except ConnectionError as exc:  # the client went away (reset, or "Connection lost" under backpressure)
            raise ClientGone() from exc
        return response


def translate_upstream_error(exc: BaseException) -> UpstreamError:
    """Map aiohttp's exceptions (WebSocket upgrades) onto ours by type; the message is safe to show."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout("timeout", "the upstream service did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable("refused", "the upstream service refused the connection")
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamUnavailable("invalid_response", "the upstream service sent an invalid response")
    return UpstreamUnavailable("reset", "the upstream service closed the connection")
