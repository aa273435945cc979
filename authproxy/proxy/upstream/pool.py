"""Keep-alive connections per origin, and the request: its head written, its body
uploaded alongside, the response returned once its head arrived.

A request that finds a reused connection closed before any response byte is sent again
on a new one when that is safe (idempotent and bodiless: RFC 9110 9.2.2). Idle
connections are closed after ``keepalive_timeout``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

from multidict import CIMultiDict

from authproxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from authproxy.proxy.upstream.buffer import timeout_error
from authproxy.proxy.upstream.head import request_head
from authproxy.proxy.upstream.origin import Origin
from authproxy.proxy.upstream.protocol import _Connection
from authproxy.proxy.upstream.response import UpstreamResponse
from authproxy.proxy.upstream.upload import _send_body, upload_done

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
_SWEEP_INTERVAL = 10.0


class UpstreamPool:
    """Keep-alive connections per origin, no cap (the upstream's own limits apply)."""

    def __init__(self, *, keepalive_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None):
        self.keepalive_timeout = keepalive_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._all: set[_Connection] = set()
        self._ssl = ssl_context  # default: the system's CAs, hostname checked
        self._sweeper: asyncio.TimerHandle | None = None
        self.connections_opened = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the pool runs on, asked once: ``asyncio.get_running_loop()`` makes
        a getpid() syscall per call on CPython 3.11 (its fork check)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

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
        head = request_head(method, target, headers, body=body is not None, has_length=has_length)
        length = int(headers["Content-Length"]) if body is not None and has_length else None
        retry_allowed = body is None and method in _IDEMPOTENT
        fresh = False
        while True:
            connection, reused = await self._acquire(origin, connect_timeout, fresh)
            response = UpstreamResponse(connection, read_timeout)
            connection.begin(response, method == "HEAD")
            connection.write(head)
            if body is not None:
                upload = response.upload = self.loop().create_task(
                    _send_body(connection, response.body, body, length, read_timeout)
                )
                upload.add_done_callback(upload_done)
            try:
                await response.wait_head()
            except BaseException as exc:  # cancellation too: nothing may outlive the request
                body_failed = response.body_error
                await response.stop_upload()
                connection.abort()
                if isinstance(exc, UpstreamError):
                    if body_failed:
                        raise body_failed from None  # the client's body failed first: that is the answer
                    if reused and retry_allowed and not fresh and not connection.received_any and not isinstance(
                        exc, UpstreamTimeout
                    ):
                        fresh = True  # a pooled connection the upstream had closed: once more, on a new one
                        continue
                raise
            return response

    async def _acquire(self, origin: Origin, connect_timeout: float, fresh: bool = False) -> tuple[_Connection, bool]:
        idle = None if fresh else self._idle.get(origin)
        if idle:
            now = self.loop().time()
            while idle:
                connection = idle.pop()
                if connection.reusable() and now - connection.idle_since < self.keepalive_timeout:
                    return connection, True
                connection.abort()
        return await self._connect(origin, connect_timeout), False

    async def _connect(self, origin: Origin, connect_timeout: float) -> _Connection:
        loop = self.loop()
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
            raise timeout_error() from None
        except OSError:  # refused, unreachable, name not found, TLS failure
            raise UpstreamUnavailable("refused", "the upstream service refused the connection") from None
        self.connections_opened += 1
        self._all.add(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        return connection

    # --- called by the connections -----------------------------------------------------------

    def idle(self, connection: _Connection) -> None:
        """``connection`` finished an exchange and may carry the next."""
        connection.idle_since = connection.loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)

    def lost(self, connection: _Connection) -> None:
        """``connection`` closed."""
        self._all.discard(connection)

    def _sweep(self) -> None:
        """Close connections idle for longer than keepalive_timeout."""
        loop = self.loop()
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
