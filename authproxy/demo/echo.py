"""An echo upstream for the demo: it shows every request it receives. DEVELOPMENT ONLY.

Any method on any path answers with what arrived: method, path, query and every
request header with its full value, since the point of the demo is to see what the
proxy injects (identity headers, tokens, the signed assertion). The page leads with
what authproxy added (the header names it is told, plus the forwarding headers),
then shows what came from the browser. Headers holding a
JWT (``Authorization: Bearer``, ``X-Authproxy-Assertion``, ``X-Id-Token`` or any other
value that looks like one) are decoded *without verification* and shown with their
expiry. HTML when the client prefers it (a browser), JSON otherwise (curl, scripts).

It echoes credentials back by design: never put it behind anything real.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

DEFAULT_TITLE = "authproxy demo upstream"
NOT_VERIFIED = "decoded, not verified"
# Decoded even when the value does not look like a JWT, to say it is not one.
TOKEN_HEADERS = ("authorization", "x-authproxy-assertion", "x-id-token")
# Set by authproxy on every forwarded request (X-Request-Id may also be propagated from the client).
FORWARDING_HEADERS = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")  # a JOSE header starts with '{"'
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class _Settings:
    title: str
    links: tuple[tuple[str, str], ...]
    clock: Callable[[], float]
    injected: frozenset[str]  # lower-case names of the headers the proxy adds


_SETTINGS = web.AppKey("authproxy_echo_settings", _Settings)


def create_echo_app(
    *, title: str = DEFAULT_TITLE, links: Sequence[tuple[str, str]] = (), clock: Callable[[], float] = time.time,
    injected: Sequence[str] = (),
) -> web.Application:
    """The echo upstream; ``links`` (label, href) make a small nav on the HTML page;
    ``injected`` names the headers the proxy adds (its routes' inject names, the assertion),
    which the page shows first, with the forwarding headers."""
    app = web.Application()
    app[_SETTINGS] = _Settings(title, tuple(links), clock, frozenset(name.lower() for name in injected))
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


async def start_echo(
    *, host: str = "127.0.0.1", port: int = 0, title: str = DEFAULT_TITLE, links: Sequence[tuple[str, str]] = (),
    injected: Sequence[str] = (),
) -> tuple[web.AppRunner, int]:
    """Serve the echo upstream in the running loop; returns the runner (``cleanup()`` stops it) and the bound port."""
    runner = web.AppRunner(create_echo_app(title=title, links=links, injected=injected), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


async def _echo(request: web.Request) -> web.Response:
    settings = request.app[_SETTINGS]
    size = 0
    async for chunk in request.content.iter_chunked(65536):  # its size is shown, not its content
        size += len(chunk)
    report = describe(request, settings.clock(), body_bytes=size, injected=settings.injected)
    if prefers_html(request.headers.get("Accept", "")):
        return web.Response(
            text=render_html(report, settings.title, settings.links),
            content_type="text/html",
            charset="utf-8",
            headers=_PAGE_HEADERS,
        )
    return web.json_response(report, dumps=lambda data: json.dumps(data, indent=2), headers={"Cache-Control": "no-store"})


def describe(
    request: web.BaseRequest, now: float, body_bytes: int = 0, injected: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """What arrived, as plain data (the JSON answer; the HTML page renders the same).
    ``added_by_proxy``: the names among ``headers`` that authproxy added, identity first."""
    headers = [[name, value] for name, value in request.headers.items()]
    identity = [name for name, _ in headers if name.lower() in injected]
    forwarding = [name for name, _ in headers if name.lower() in FORWARDING_HEADERS and name.lower() not in injected]
    tokens = [token for name, value in request.headers.items() if (token := token_in_header(name, value, now)) is not None]
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "body_bytes": body_bytes,
        "headers": headers,
        "added_by_proxy": list(dict.fromkeys(identity + forwarding)),
        "tokens": tokens,
    }


def token_in_header(name: str, value: str, now: float) -> dict[str, Any] | None:
    """The decoded JWT in a header, or None when it holds none (and is not a token header)."""
    candidate = value.strip()
    if name.lower() == "authorization":
        scheme, _, rest = candidate.partition(" ")
        if scheme.lower() != "bearer":
            return None
        candidate = rest.strip()
    elif name.lower() not in TOKEN_HEADERS and not _JWT.fullmatch(candidate):
        return None
    found: dict[str, Any] = {"header": name, "note": NOT_VERIFIED}
    decoded = decode_unverified(candidate)
    if decoded is None:
        found["error"] = "not a decodable JWT"
        return found
    jose_header, claims = decoded
    found.update(jose_header=jose_header, claims=claims, expiry=_expiry(claims, now))
    return found


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The JOSE header and claims of a compact JWS, signature NOT checked; None if malformed."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in parts[:2])
    except (binascii.Error, ValueError):  # bad base64, bad UTF-8, bad JSON
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def _expiry(claims: dict[str, Any], now: float) -> dict[str, Any] | None:
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    try:
        when = datetime.fromtimestamp(exp, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        when = "out of range"
    return {"exp_utc": when, "seconds_left": int(exp - now)}


def prefers_html(accept: str) -> bool:
    """Whether ``Accept`` ranks text/html above application/json (RFC 9110 12.5.1):
    the most specific matching range gives each type its q; ties (``*/*``) mean JSON."""
    best = {"text/html": (-1, 0.0), "application/json": (-1, 0.0)}  # (specificity, q)
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            key, _, number = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(number)
                except ValueError:
                    q = 0.0
        for target in best:
            specificity = 2 if media == target else 1 if media == target.split("/")[0] + "/*" else 0 if media == "*/*" else -1
            if specificity > best[target][0]:
                best[target] = (specificity, q)
    return best["text/html"][1] > 0 and best["text/html"][1] > best["application/json"][1]


def render_html(report: dict[str, Any], title: str, links: Sequence[tuple[str, str]]) -> str:
    """The report as one self-contained page; every value is escaped."""
    e = _e
    nav = " · ".join(f'<a href="{e(href)}">{e(label)}</a>' for label, href in links)
    query = f"?{report['query']}" if report["query"] else ""
    added = {name.lower(): rank for rank, name in enumerate(report["added_by_proxy"])}
    ours = sorted((pair for pair in report["headers"] if pair[0].lower() in added), key=lambda pair: added[pair[0].lower()])
    theirs = [pair for pair in report["headers"] if pair[0].lower() not in added]
    sections = "".join(_token_section(token) for token in report["tokens"])
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:1.5rem auto;padding:0 1rem;line-height:1.4}"
        "nav{margin-bottom:1rem}table{border-collapse:collapse;width:100%}"
        "th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}th{white-space:nowrap}"
        "code,pre{word-break:break-all;white-space:pre-wrap}pre{background:#f5f5f5;padding:.5rem}"
        ".warn{background:#fff3cd;border:1px solid #e0c060;padding:.25rem .5rem}"
        ".ours th{background:#e7f1ff}"
        "</style></head><body>"
        + (f"<nav>{nav}</nav>" if nav else "")
        + f"<h1>{e(title)}</h1>"
        f"<p><b>{e(report['method'])}</b> <code>{e(report['path'] + query)}</code> "
        f"({e(str(report['body_bytes']))} body bytes)</p>"
        f"<h2>Added by authproxy ({len(ours)})</h2>"
        + (f"<table class=ours>{_rows(ours)}</table>" if ours else "<p>Nothing: this route adds no identity.</p>")
        + (sections or "<h3>Tokens</h3><p>No JWT in the request headers.</p>")
        + f"<h2>From your browser ({len(theirs)})</h2>"
        "<p>What the client sent, as the upstream received it: authproxy removed its own cookies and any "
        "header that could pose as an identity.</p>"
        f"<table>{_rows(theirs)}</table>"
        + "</body></html>"
    )


def _rows(headers: Sequence[Sequence[str]]) -> str:
    return "".join(f"<tr><th>{_e(name)}</th><td><code>{_e(value)}</code></td></tr>" for name, value in headers)


def _token_section(token: dict[str, Any]) -> str:
    e = _e
    heading = f"<h3>{e(token['header'])}: JWT, <span class=warn>{e(NOT_VERIFIED)}</span></h3>"
    if "error" in token:
        return heading + f"<p>{e(token['error'])}</p>"
    expiry = token["expiry"]
    if expiry is None:
        when = "<p>No exp claim.</p>"
    else:
        left = expiry["seconds_left"]
        status = f"{left} s left" if left > 0 else f"expired {-left} s ago"
        when = f"<p>Expires <b>{e(expiry['exp_utc'])}</b> ({e(status)})</p>"
    return (
        heading
        + when
        + f"<h4>Header</h4><pre>{e(json.dumps(token['jose_header'], indent=2))}</pre>"
        + f"<h4>Claims</h4><pre>{e(json.dumps(token['claims'], indent=2, ensure_ascii=False))}</pre>"
    )


def _e(text: str) -> str:
    return html.escape(text, quote=True)
