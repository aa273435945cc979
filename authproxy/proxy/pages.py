"""Error responses made by the proxy itself: an HTML page for browsers, JSON for API clients.

They name what went wrong in words a user can act on and carry the request id so
an operator can find the log line. They never hold a stack trace, an upstream
address, a token or a cookie.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from aiohttp import web

_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Access denied",
    404: "Not found",
    413: "Request body too large",
    417: "Expectation failed",
    502: "Service unavailable",
    503: "Service temporarily unavailable",
    504: "Service did not answer in time",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{status} {title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}
h1{{font-size:1.5rem}}code{{background:#eee;padding:.1rem .3rem}}</style></head>
<body><h1>{status} {title}</h1><p>{message}</p>{who}<ul>{links}</ul>
<p>Request id: <code>{request_id}</code></p></body></html>
"""
# What a person can do next, by status: every page also links the home page.
_RETRY = (502, 503, 504)


def wants_html(accept: str | None) -> bool:
    """A browser navigation asks for text/html; API clients ask for JSON or anything."""
    return bool(accept) and "text/html" in accept  # type: ignore[operator]


def error_response(
    status: int,
    error: str,
    message: str,
    request_id: str,
    *,
    accept: str | None,
    headers: dict[str, str] | None = None,
    signed_in_as: str | None = None,
    links: Sequence[tuple[str, str]] = (),
    retry_after: int | None = None,
) -> web.Response:
    """The proxy's own error response; ``message`` must be safe to show to anyone.

    On the HTML page only: ``signed_in_as`` names the user (so a refused user sees which
    account was refused), and ``links`` (label, href) offer a way out before the home page;
    502-504 pages also offer to try again. ``retry_after``: seconds, sent as Retry-After
    (RFC 9110 10.2.3). Everything shown is escaped."""
    extra = {"Cache-Control": "no-store", "X-Request-Id": request_id, "Server": "authproxy"}
    if headers:
        extra.update(headers)
    if retry_after is not None:
        extra["Retry-After"] = str(retry_after)
    if wants_html(accept):
        title = _TITLES.get(status, "Error")
        who = f"<p>You are signed in as <b>{html.escape(signed_in_as)}</b>.</p>" if signed_in_as else ""
        ways = [*links, *([("Try again", "")] if status in _RETRY else []), ("Go to the home page", "/")]
        body = _PAGE.format(
            status=status,
            title=html.escape(title),
            message=html.escape(message),
            who=who,
            links="".join(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for label, href in ways),
            request_id=html.escape(request_id),
        )
        return web.Response(status=status, text=body, content_type="text/html", headers=extra)
    payload = json.dumps({"error": error, "message": message, "request_id": request_id})
    return web.Response(status=status, text=payload, content_type="application/json", headers=extra)
