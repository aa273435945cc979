"""WebSocket proxying (RFC 6455): handshake upstream first, then accept the client.

Handshaking upstream first lets a refused or failed upstream become a normal HTTP
answer, and lets us offer the client exactly the subprotocol the upstream chose. An
upstream that answers the upgrade with anything but 101 (a plain page, a 403, a
redirect) has its answer relayed as it is, status, headers and body: only a connection
that fails, or a 101 that breaks the handshake's rules (RFC 6455 4.1), is an upstream
error. Frames are relayed as they come, including pings and pongs (no automatic
answers here, so the endpoints see each other's), and a close on one side closes the
other with the same code; the answer travels back the same way.

On session routes two more rules hold:

- the handshake's ``Origin`` must be ours (``origin_allowed``): a browser sends the
  session cookie with a WebSocket handshake from any page of the same site, so without
  the check a sibling app's page could open the socket as the user (cross-site
  WebSocket hijacking);
- an open socket lives no longer than its session (``SessionWatch``): the session is
  checked every half cache TTL, and once it is signed out or expired both sides are
  closed with 1008 (policy violation).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from authproxy.errors import UpstreamUnavailable
from authproxy.logs import log
from authproxy.policy.routes import HostPattern
from authproxy.proxy.forward import ClientGone, translate_upstream_error
from authproxy.proxy.headers import connection_tokens, copy_response_headers
from authproxy.proxy.pages import error_response
from authproxy.store.base import StoreError

if TYPE_CHECKING:
    from authproxy.session.cookies import SessionTicket
    from authproxy.session.store import Sessions

# Headers of the client's handshake that the upstream handshake makes anew.
_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
SESSION_ENDED = 1008  # policy violation (RFC 6455 7.4.1): the session the socket was opened with ended
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    upgrade = request.headers.get("Upgrade")
    return (
        upgrade is not None
        and upgrade.lower() == "websocket"
        and request.method == "GET"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


# --- who may open a socket -------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _compiled(origins: tuple[str, ...]) -> tuple[tuple[str, HostPattern, int], ...]:
    """A route's ``websocket_origins`` (validated by the schema), once per distinct list."""
    compiled = []
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        host, _, port = rest.partition(":")
        compiled.append((scheme, HostPattern.compile(host), int(port) if port else _DEFAULT_PORTS[scheme]))
    return tuple(compiled)


def origin_allowed(
    origin: str | None, allowed: Sequence[str] | None, request_host: str, is_own_host: Callable[[str], bool]
) -> bool:
    """May a page of ``origin`` open a socket here? No Origin: not a browser, nothing to
    hijack (browsers always send it, RFC 6455 4.1 and the Fetch standard). ``allowed``:
    the route's ``websocket_origins``; None: our own hosts, any port (the request's own
    host, public_url's, the routes'). ``null`` (sandboxed frames, files) is never ours."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not host or parts.username is not None or parts.path not in ("", "/"):
        return False
    if allowed is None:
        return host == request_host.strip("[]").lower() or is_own_host(host)
    return any(scheme == parts.scheme and pattern.matches(host) and allowed_port == port
               for scheme, pattern, allowed_port in _compiled(tuple(allowed)))


class SessionWatch:
    """The session a socket was opened with, checked every ``every`` seconds."""

    def __init__(self, sessions: Sessions, ticket: SessionTicket, every: float):
        self._sessions = sessions
        self._ticket = ticket
        self.every = every

    async def alive(self) -> bool:
        """False once the session is signed out, expired or idle (through the session
        cache, so within its TTL on another replica). Store trouble is not an ending:
        the socket stays open, as cached sessions keep working."""
        try:
            return await self._sessions.load(self._ticket, int(time.time())) is not None
        except StoreError:
            return True


# --- the relay ----------------------------------------------------------------------------


def _sendable(code: int | None) -> int:
    """A close code that may be sent on the wire (1005/1006/1015 may not, RFC 6455 7.4.1)."""
    if code is None or code == 1005:
        return 1000
    if code in (1006, 1015) or not (1000 <= code <= 4999):
        return 1011
    return code


class WebSocketRelay:
    """One proxied WebSocket session."""

    def __init__(self, session: aiohttp.ClientSession, max_message: int | None, handshake_timeout: float,
                 watch: SessionWatch | None = None):
        self._session = session
        self._max_message = max_message or 0  # 0: aiohttp's "no limit"
        self._handshake_timeout = handshake_timeout
        self._watch = watch
        self.upstream_status: int | None = None

    async def run(
        self, request: web.BaseRequest, url: URL, headers: CIMultiDict[str], request_id: str
    ) -> web.StreamResponse:
        """``url``: the upstream's http(s) URL for this request."""
        if not web.WebSocketResponse().can_prepare(request).ok:
            # A malformed handshake (no or bad Sec-WebSocket-Key, wrong version): refuse it
            # before opening anything upstream.
            return error_response(
                400, "bad_request", "invalid WebSocket handshake", request_id, accept=request.headers.get("Accept")
            )
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        for name in list(headers):
            if name.lower() in _HANDSHAKE:
                del headers[name]
        key = base64.b64encode(os.urandom(16)).decode()
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Version"] = "13"
        headers["Sec-WebSocket-Key"] = key
        if protocols:
            headers["Sec-WebSocket-Protocol"] = ", ".join(protocols)
        try:
            async with asyncio.timeout(self._handshake_timeout):
                answer = await self._session.request(
                    "GET", url, headers=headers, allow_redirects=False, read_until_eof=False
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise translate_upstream_error(exc) from None
        self.upstream_status = answer.status
        if answer.status != 101:
            return await self._relay_answer(request, answer, request_id)
        try:
            protocol = _accepted(answer, key, protocols)
            upstream = _client_websocket(answer, protocol, self._max_message)
        except BaseException:
            answer.close()
            raise

        client = web.WebSocketResponse(
            protocols=(protocol,) if protocol else (),
            autoping=False,
            autoclose=False,
            max_msg_size=self._max_message,
            compress=False,
        )
        watching: asyncio.Task[None] | None = None
        try:
            await client.prepare(request)
            if self._watch is not None:
                watching = asyncio.create_task(self._end_with_session(client, upstream, request_id))
            await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
        finally:
            if watching is not None:
                watching.cancel()
                try:
                    await watching
                except asyncio.CancelledError:
                    pass
            if not upstream.closed:
                await upstream.close()
            if client.prepared and not client.closed:
                await client.close()
        return client

    async def _relay_answer(
        self, request: web.BaseRequest, answer: aiohttp.ClientResponse, request_id: str
    ) -> web.StreamResponse:
        """The upstream did not switch protocols: its answer, as it is, ends the exchange."""
        response = web.StreamResponse(status=answer.status, reason=answer.reason or None)
        copy_response_headers(answer.headers, response.headers, request_id)
        response.force_close()  # the client's connection was offered for an upgrade: not reused
        try:
            await response.prepare(request)
            while True:
                async with asyncio.timeout(self._handshake_timeout):
                    chunk = await answer.content.readany()
                if not chunk:
                    break
                await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
            # Headers are out: the only honest signal left is to cut the connection.
            if request.transport is not None:
                request.transport.abort()
            raise ClientGone() from exc
        finally:
            answer.close()  # a connection offered for an upgrade is not pooled again
        return response

    async def _end_with_session(self, client: web.WebSocketResponse,
                                upstream: aiohttp.ClientWebSocketResponse, request_id: str) -> None:
        assert self._watch is not None
        while not (client.closed or upstream.closed):
            await asyncio.sleep(self._watch.every)
            # The session cache's shared read runs in a task of its own (authproxy/singleflight.py),
            # so the socket ending meanwhile cancels this watch without cancelling that read.
            if client.closed or upstream.closed or await self._watch.alive():
                continue
            log().info("websocket_session_ended", extra={"fields": {"request_id": request_id}})
            # Both pumps see the closing and return; each side gets 1008 and answers it.
            await asyncio.gather(client.close(code=SESSION_ENDED, message=b"session ended"),
                                 upstream.close(code=SESSION_ENDED, message=b"session ended"),
                                 return_exceptions=True)
            return


def _accepted(answer: aiohttp.ClientResponse, key: str, offered: list[str]) -> str | None:
    """The subprotocol the upstream chose, once its 101 keeps RFC 6455 4.1's rules; a 101
    that does not is an invalid response (never relayed: the client asked for a socket)."""
    headers = answer.headers
    expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324 - RFC 6455
    if (headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in connection_tokens(headers)
            or headers.get("Sec-WebSocket-Accept", "") != expected
            or headers.get("Sec-WebSocket-Extensions")):  # we offered none (RFC 6455 9.1)
        raise UpstreamUnavailable("invalid_response", "the upstream service broke the WebSocket handshake")
    protocol = headers.get("Sec-WebSocket-Protocol")
    if protocol is not None and protocol.strip() not in offered:
        raise UpstreamUnavailable("invalid_response", "the upstream service chose a subprotocol nobody offered")
    return protocol.strip() if protocol is not None else None


def _client_websocket(answer: aiohttp.ClientResponse, protocol: str | None,
                      max_message: int) -> aiohttp.ClientWebSocketResponse:
    """aiohttp's client socket over the connection that answered 101, built as
    ``ClientSession.ws_connect`` builds it; ``ws_connect`` itself cannot be used because
    it drops the body of an answer that is not 101, which we relay."""
    from aiohttp._websocket.reader import WebSocketDataQueue
    from aiohttp.http import WebSocketReader, WebSocketWriter

    connection = answer.connection
    assert connection is not None and connection.protocol is not None and connection.transport is not None
    stream = connection.protocol
    stream.read_timeout = None  # a socket may be quiet for as long as its endpoints like
    loop = asyncio.get_running_loop()
    reader = WebSocketDataQueue(stream, 2**16, loop=loop)
    writer = WebSocketWriter(stream, connection.transport, use_mask=True)
    socket = aiohttp.ClientWebSocketResponse(
        reader, writer, protocol, answer, aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        False, False, loop,  # autoclose, autoping: the endpoints answer each other
    )
    try:
        parser = WebSocketReader(reader, max_message, False, True)  # compress, decode_text (aiohttp >= 3.12)
    except TypeError:
        parser = WebSocketReader(reader, max_message, compress=False)  # type: ignore[call-arg]
    socket._parser = parser  # kept alive by the socket, as ws_connect does
    stream.set_parser(parser, reader)
    return socket


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    """Relay frames from ``source`` to ``sink`` until ``source`` closes."""
    try:
        while True:
            message = await source.receive()
            kind = message.type
            if kind is WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif kind is WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif kind is WSMsgType.PING:
                await sink.ping(message.data)
            elif kind is WSMsgType.PONG:
                await sink.pong(message.data)
            elif kind is WSMsgType.CLOSE:
                # Pass the close on and wait for the other side's answer, then give the
                # source that answer: both endpoints see each other's close codes.
                await sink.close(code=_sendable(message.data), message=(message.extra or "").encode()[:123])
                await source.close(code=_sendable(sink.close_code))
                return
            elif kind is WSMsgType.CLOSING:
                return  # the other direction is closing this socket and completes the handshake
            else:  # CLOSED, ERROR: the source is gone without a close frame
                if not sink.closed:
                    code = 1009 if source.exception() is not None and _too_big(source.exception()) else 1011
                    await sink.close(code=code)
                return
    except (ConnectionResetError, aiohttp.ClientError):
        if not sink.closed:
            await sink.close(code=1011)


def _too_big(exc: BaseException | None) -> bool:
    return isinstance(exc, aiohttp.WebSocketError) and exc.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
