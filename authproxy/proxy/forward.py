"""Streaming forwarder: one pooled aiohttp client session per process.

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

from authproxy.errors import (
    PayloadTooLarge,
    RequestRejected,
    RequestTimeout,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from authproxy.policy.routes import Route
from authproxy.proxy.headers import copy_response_headers

# Bodies up to this size, when the upstream states their length, are read whole
# and sent in one write: fewer syscalls for the common small API response.
_SMALL_BODY = 64 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestBody:
    """The client's request body as an async iterator, with a size limit and an idle timeout.

    A failure here surfaces from aiohttp as a generic connection error, so the
    reason is kept on the object and the caller checks ``error`` by type.
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


class ClientGone(Exception):
    """The client closed its connection while the response was being sent."""


class Forwarder:
    """Sends requests to upstreams over pooled keep-alive connections."""

    def __init__(self, *, client_idle_timeout: float):
        self._client_idle_timeout = client_idle_timeout
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[Route, aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,  # the upstream's own limits apply; a proxy must not queue behind a pool cap
            keepalive_timeout=30.0,
            ttl_dns_cache=10,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # bytes pass through as the upstream encoded them
            cookie_jar=aiohttp.DummyCookieJar(),  # upstream cookies belong to the browser, not to us
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Forwarder.start() was not awaited"
        return self._session

    def timeout_for(self, route: Route) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(route)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=route.connect_timeout,
                sock_connect=route.connect_timeout,
                sock_read=route.read_timeout,
            )
            self._timeouts[route] = timeout
        return timeout

    def upstream_url(self, route: Route, path: str, query: str) -> URL:
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
        url: URL,
        headers: CIMultiDict[str],
        body: RequestBody | None,
    ) -> Awaitable[aiohttp.ClientResponse]:
        """Send the request upstream; awaiting the result gives the response once its
        headers arrived. Not a coroutine itself: the caller awaits aiohttp directly, one
        frame less on every resumption of the hot path. Failures go to ``recover``."""
        return self.session.request(
            request.method,
            url,
            headers=headers,
            data=body.chunks() if body is not None else None,
            allow_redirects=False,
            timeout=self.timeout_for(route),
            compress=None,
            chunked=None,
        )

    async def recover(
        self,
        failure: BaseException,
        request: web.BaseRequest,
        route: Route,
        url: URL,
        headers: CIMultiDict[str],
        body: RequestBody | None,
    ) -> aiohttp.ClientResponse:
        """After ``send`` failed: send once more when that is safe, else raise our error."""
        if body is not None and body.error is not None:
            raise _body_failure(body.error) from None
        # A pooled keep-alive connection the upstream closed just as we reused it:
        # a bodiless idempotent request is safe to send once more.
        if (
            isinstance(failure, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
            and not isinstance(failure, aiohttp.ClientConnectorError)
            and body is None
            and request.method in _IDEMPOTENT
        ):
            try:
                return await self.send(request, route, url, headers, body)
            except (aiohttp.ClientError, asyncio.TimeoutError) as again:
                raise translate_upstream_error(again) from None
        raise translate_upstream_error(failure) from None

    async def relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        request_id: str,
    ) -> web.StreamResponse:
        """Stream the upstream response to the client; the caller releases ``upstream``."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        copy_response_headers(upstream.headers, response.headers, request_id)
        status = upstream.status
        length = upstream.content_length
        try:
            if request.method == "HEAD" or status in (204, 304) or status < 200:
                await response.prepare(request)
                await response.write_eof()
            elif length is not None and length <= _SMALL_BODY:
                body = await upstream.read()
                await response.prepare(request)
                await response.write_eof(body)
            else:
                await response.prepare(request)
                content = upstream.content
                idle = self._client_idle_timeout
                while True:
                    chunk = await content.readany()
                    if not chunk:
                        break
                    # A client that stops reading must not hold its connection and an
                    # upstream one forever (nginx's send_timeout).
                    async with asyncio.timeout(idle):
                        await response.write(chunk)
                await response.write_eof()
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise translate_upstream_error(exc) from None
            raise ClientGone() from exc
        except ConnectionError as exc:  # the client went away (reset, or "Connection lost" under backpressure)
            raise ClientGone() from exc
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise translate_upstream_error(exc) from None
        return response


def _body_failure(error: Exception) -> Exception:
    """What went wrong reading the client's body: a refusal we answer, or the client gone."""
    if isinstance(error, RequestRejected):
        return error
    return ClientGone()


def translate_upstream_error(exc: BaseException) -> UpstreamError:
    """Map aiohttp's exceptions onto ours by type; the message is safe to show."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout("timeout", "the upstream service did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnavailable("refused", "the upstream service refused the connection")
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamUnavailable("invalid_response", "the upstream service sent an invalid response")
    return UpstreamUnavailable("reset", "the upstream service closed the connection")
