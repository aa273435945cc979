"""WebSocket proxying (RFC 6455): connect upstream first, then accept the client.

Connecting upstream first lets a refused or rejected upstream become a normal
HTTP error, and lets us offer the client exactly the subprotocol the upstream
chose. Frames are relayed as they come, including pings and pongs (no automatic
answers here, so the endpoints see each other's), and a close on one side closes
the other with the same code; the answer travels back the same way.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from authproxy.errors import UpstreamUnavailable
from authproxy.proxy.forward import translate_upstream_error
from authproxy.proxy.pages import error_response

# Headers of the client's handshake that the upstream handshake makes anew.
_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
)


def is_websocket_upgrade(request: web.BaseRequest) -> bool:
    upgrade = request.headers.get("Upgrade")
    return (
        upgrade is not None
        and upgrade.lower() == "websocket"
        and request.method == "GET"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def _sendable(code: int | None) -> int:
    """A close code that may be sent on the wire (1005/1006/1015 may not, RFC 6455 7.4.1)."""
    if code is None or code == 1005:
        return 1000
    if code in (1006, 1015) or not (1000 <= code <= 4999):
        return 1011
    return code


class WebSocketRelay:
    """One proxied WebSocket session."""

    def __init__(self, session: aiohttp.ClientSession, max_message: int | None, handshake_timeout: float):
        self._session = session
        self._max_message = max_message or 0  # 0: aiohttp's "no limit"
        self._handshake_timeout = handshake_timeout
        self.upstream_status: int | None = None

    async def run(
        self, request: web.BaseRequest, url: URL, headers: CIMultiDict[str], request_id: str
    ) -> web.StreamResponse:
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
        ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
        try:
            async with asyncio.timeout(self._handshake_timeout):
                upstream = await self._session.ws_connect(
                    ws_url,
                    headers=headers,
                    protocols=protocols,
                    autoping=False,
                    autoclose=False,
                    max_msg_size=self._max_message,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                    compress=0,
                )
        except aiohttp.WSServerHandshakeError as exc:
            self.upstream_status = exc.status
            if 400 <= exc.status < 500:
                # The upstream refused the upgrade itself (e.g. 403): pass its status on.
                return error_response(
                    exc.status,
                    "websocket_refused",
                    "the upstream service refused the WebSocket upgrade",
                    request_id,
                    accept=request.headers.get("Accept"),
                )
            raise UpstreamUnavailable("invalid_response", "the upstream service refused the WebSocket upgrade") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise translate_upstream_error(exc) from None

        self.upstream_status = 101
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoping=False,
            autoclose=False,
            max_msg_size=self._max_message,
            compress=False,
        )
        try:
            await client.prepare(request)
            await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
        finally:
            if not upstream.closed:
                await upstream.close()
            if client.prepared and not client.closed:
                await client.close()
        return client


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
