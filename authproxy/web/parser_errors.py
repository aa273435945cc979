"""Answers to requests that never reach a handler: aiohttp's parser refused them.

aiohttp's own answer quotes the offending bytes ("Got more than 8190 bytes when
reading: b'Cookie: authproxy=...'"), and logs them with a traceback. A page's own script
can pad its cookies until the Cookie header is too long and then read that answer,
HttpOnly session ticket included (the CVE-2012-0053 pattern). So no answer or log line
of ours ever carries a request byte: the client gets a fixed page with a request id, and
the log gets the kind of refusal and that id.

``SafeServer`` replaces ``web.Server`` for the proxy listener; ``SafeAppRunner`` serves
an ``Application`` (the admin listener) the same way.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from authproxy.logs import log
from authproxy.proxy.headers import request_id_from
from authproxy.proxy.pages import error_response


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
        fields = {"request_id": request_id, "status": status, "kind": type(exc).__name__ if exc else None,
                  "client": request.remote}
        if error == "internal_error" and exc is not None:
            # A bug of ours, not the client's bytes: the traceback is what finds it.
            log().error("unhandled_error", exc_info=exc, extra={"fields": fields})
        else:
            log().warning("request_refused_by_parser", extra={"fields": fields})
        # Without parsed headers there is no Accept to go by: the page is for a browser (the
        # one case where it matters is a page padding its own cookies), and says it plainly.
        response = error_response(status, error, text, request_id, accept="text/html")
        response.force_close()
        return response


class SafeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return SafeRequestHandler(self, loop=self._loop, **self._kwargs)


class SafeAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parser errors as above."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds a plain Server with the app's handler and request factory; only
        # its connection factory (``__call__``) differs, so the class is swapped in place.
        server.__class__ = SafeServer
        return server
