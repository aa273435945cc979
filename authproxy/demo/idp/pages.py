"""What a browser is shown: plain HTML pages that may not be framed or cached, and redirects."""

from __future__ import annotations

import html

from aiohttp import web

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",  # one-click sign-in buttons must not be framed (clickjacking)
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _page(title: str, body: str, *, status: int) -> web.Response:
    """A plain HTML page; ``body`` is already escaped HTML."""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · authproxy dev-idp</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}"
        ".dev{background:#fff3cd;border:1px solid #e0c060;padding:.5rem .75rem}"
        ".error{color:#a00;font-weight:bold}ul{list-style:none;padding:0}li{margin:.5rem 0}"
        "button{font-size:1rem;padding:.3rem .8rem}input{font-size:1rem}code{word-break:break-all}"
        "</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        "<p class=dev>authproxy dev-idp: a development identity provider that behaves like AWS Cognito. "
        "Not for production.</p>"
        f"{body}</body></html>"
    )
    return web.Response(text=document, content_type="text/html", charset="utf-8", status=status, headers=_PAGE_HEADERS)
