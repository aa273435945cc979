"""The listeners' connection handling, where aiohttp's defaults fall short.

Parser refusals: answers to requests that never reach a handler.

aiohttp's own answer quotes the offending bytes ("Got more than 8190 bytes when
reading: b'Cookie: authproxy=...'"), and logs them with a traceback. A page's own script
can pad its cookies until the Cookie header is too long and then read that answer,
HttpOnly session ticket included (the CVE-2012-0053 pattern). So no answer or log line
of ours ever carries a request byte: the client gets a fixed page with a request id, and
the log gets the kind of refusal and that id.

A refusal also clears the proxy's sign-in transaction cookies, every slot by name with the
attributes they were set with (``SafeServer.refusal_cookies``): the proxy's own cookies are
bounded (session/cookies.py), but with an application's cookies on top they may still be
what tips a Cookie header over the limit, and the browser's next try must then work
rather than meet the same 400 until they expire.

Draining: once SIGTERM arrives (``SafeServer.draining``), every response, including those of
requests already in flight, says ``Connection: close``. Without it a keep-alive client sends
its next request on a connection that is about to close, and gets a reset instead of an
answer (RFC 9112 9.6: the server signals the close in the response).

``SafeServer`` replaces ``web.Server`` for the proxy listener; ``SafeAppRunner`` serves
an ``Application`` (the admin listener) the same way.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from authproxy.logs import log
from authproxy.proxy.headers import request_id_from
from authproxy.proxy.pages import error_response
from authproxy.web.express import ExpressConnection


def refusal(status: int, exc: BaseException | None) -> tuple[str, str]:
    """``(error code, message)`` for a refused request: fixed texts chosen by the kind of
    failure, never the exception's own text (it quotes the request)."""
    if isinstance(exc, LineTooLong):
        return "header_too_large", "the request line or a header is too long"
    if isinstance(exc, BadHttpMessage) or status == 400:
        return "bad_request", "the request could not be parsed as HTTP/1.1"
    if status == 504:
        return "timeout", "the request took too long"
    return "internal_error", "the request could not be handled"


class SafeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,  # aiohttp's text, quoting the request: never used
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: a response already started cannot change
            raise ConnectionError("response already started")
        status = status if 400 <= status <= 599 else 500
        error, text = refusal(status, exc)
        request_id = request_id_from(request.headers)  # no headers were parsed: always a new one
        fields = {"request_id": request_id, "status": status, "reason": type(exc).__name__ if exc else None,
                  "client": request.remote}
        if error == "internal_error" and exc is not None:
            # A bug of ours, not the client's bytes: logged as an error (with its type).
            log().error("unhandled_error", exc_info=exc, extra={"fields": fields})
        else:
            # A client's garbage is not our error: one info event, the kind of refusal only.
            log().info("malformed_request", extra={"fields": fields})
        # Without parsed headers there is no Accept to go by: the page is for a browser (the
        # one case where it matters is a page padding its own cookies), and says it plainly.
        response = error_response(status, error, text, request_id, accept="text/html")
        if status < 500:
            for cookie in getattr(self._manager, "refusal_cookies", ()):
                response.headers.add("Set-Cookie", cookie)
        response.force_close()
        return response


class _EdgeRequest(web.BaseRequest):
    __slots__ = ()

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # Runs as any response is prepared, after aiohttp chose its headers and before they
        # are written: the one place to turn every response into the connection's last.
        if getattr(self._protocol._manager, "draining", False):  # type: ignore[union-attr]
            response.force_close()  # the connection closes after this response ...
            response.headers["Connection"] = "close"  # ... and the client is told so


class SafeServer(web.Server):
    """aiohttp's low-level server with the refusals and draining above; with ``express``,
    connections start in the express lane (web/express.py) and move to aiohttp's own
    handling at the first request that lane does not serve."""

    draining = False  # set once SIGTERM arrives: every response from then on closes its connection
    refusal_cookies: tuple[str, ...] = ()  # Set-Cookie values every refusal page carries
    # Class defaults too: SafeAppRunner swaps this class onto a server it did not build.
    express = False
    _express: set[ExpressConnection] = set()  # never added to: express_opened needs express

    def __init__(self, handler, *, express: bool = False, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(handler, **kwargs)
        # The proxy's handler names the sign-in cookies (fixed at start-up, a reload keeps them).
        sign_in = getattr(handler, "sign_in", None)
        if sign_in is not None:
            self.refusal_cookies = tuple(sign_in.cookies.clear_transactions())
        self.express = express
        self._express: set[ExpressConnection] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def __call__(self) -> asyncio.Protocol:
        if self.express:
            return ExpressConnection(self, **self._kwargs)
        return self.aiohttp_protocol()

    def aiohttp_protocol(self) -> RequestHandler:
        """aiohttp's handling of a connection (a new one, or one the express lane hands over)."""
        return SafeRequestHandler(self, loop=self._loop, **self._kwargs)

    def express_opened(self, connection: ExpressConnection) -> None:
        self._express.add(connection)

    def express_closed(self, connection: ExpressConnection) -> None:
        self._express.discard(connection)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for connection in list(self._express):
            connection.close_if_idle()

    async def shutdown(self, timeout: float | None = None) -> None:
        """aiohttp's connections as aiohttp closes them; the express lane's wait for their
        answers up to ``timeout`` (draining waited already), then are cut."""
        await super().shutdown(timeout)
        deadline = self._loop.time() + (timeout or 0.0)
        while any(connection.busy for connection in self._express) and self._loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self._express):
            connection.abort()
        self._express.clear()

    def _make_request(self, message, payload, protocol, writer, task) -> web.BaseRequest:  # type: ignore[no-untyped-def]
        return _EdgeRequest(message, payload, protocol, writer, task, self._loop)


class SafeAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parser errors as above."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds a plain Server with the app's handler and request factory; only
        # its connection factory (``__call__``) differs, so the class is swapped in place.
        server.__class__ = SafeServer
        return server
