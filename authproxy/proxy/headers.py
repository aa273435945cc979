"""Header rules for forwarded requests and responses (pure functions of values).

Hop-by-hop headers are connection-specific and never forwarded (RFC 9110 7.6.1):
the fixed list below plus every header named in ``Connection``. X-Forwarded-* and
Forwarded are believed only from ``trusted_proxies``; from anyone else they are
replaced, so an upstream never sees a client-chosen address or scheme.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
import secrets
from collections.abc import Callable, Iterable, Sequence

from aiohttp.helpers import rfc822_formatted_time
from multidict import CIMultiDict, CIMultiDictProxy

# RFC 9110 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding
# and Upgrade; Trailer and the Proxy-Auth* pair are hop-by-hop per RFC 7230/2616 too.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Believed only from trusted proxies; from anyone else they are dropped (or replaced).
_FORWARDED = ("X-Forwarded-Port", "X-Forwarded-Prefix", "Forwarded", "X-Real-IP")
# Set by the proxy itself, so the client's values are dropped; Expect is answered here.
# X-Original-URL and X-Rewrite-URL make some frameworks (IIS, Symfony) route by them
# instead of the path we matched, so they never pass.
_REQUEST_DROP = HOP_BY_HOP | {
    "host",
    "expect",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-original-url",
    "x-rewrite-url",
} | {name.lower() for name in _FORWARDED}
_PLAIN_CONNECTION = frozenset({"keep-alive", "close"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


class TrustedProxies:
    """Answers "is this peer a trusted proxy?", caching answers per address."""

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self.networks = tuple(networks)
        self.contains = functools.lru_cache(maxsize=4096)(self._contains)

    def _contains(self, address: str | None) -> bool:
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in Connection (lower-case), which are hop-by-hop too."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(token.strip().lower() for value in values for token in value.split(",") if token.strip())


# Generated ids: a random per-process prefix and a counter. Unique without a syscall
# per request (ids are correlation handles, not secrets).
_ID_PREFIX = secrets.token_hex(10)
_id_counter = itertools.count(1)


def request_id_from(headers: CIMultiDictProxy[str]) -> str:
    """The inbound X-Request-Id when well-formed, else a new unique one (32 hex digits)."""
    inbound = headers.get("X-Request-Id")
    if inbound is not None and _REQUEST_ID.fullmatch(inbound):
        return inbound
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFF:012x}"


def upstream_request_headers(
    headers: CIMultiDictProxy[str],
    *,
    peer: str,
    peer_trusted: bool,
    scheme: str,
    host_header: str,
    upstream_host: str | None,
    request_id: str,
    strip: Callable[[str], bool] | None = None,
    cookies: Callable[[str], str | None] | None = None,
) -> CIMultiDict[str]:
    """Headers for the upstream request.

    ``upstream_host`` is the Host to send (None keeps the client's, for preserve_host).
    ``strip`` decides by name for headers only the proxy may set (identity headers).
    ``cookies``, when given, returns what of a Cookie header the upstream may see (None: not
    the header at all); what is left of several Cookie headers is sent on as one, joined with
    "; " (RFC 6265 5.4 allows only one). Without ``cookies``, Cookie headers pass as they are.
    """
    remove = _REQUEST_DROP | connection_tokens(headers) if "Connection" in headers else _REQUEST_DROP
    out: CIMultiDict[str] = CIMultiDict()
    kept_cookies = 0
    for name, value in headers.items():
        # Names with "_" are dropped, as nginx does by default: CGI/WSGI servers map
        # "_" to "-", so "X_Forwarded_For" would otherwise pass as X-Forwarded-For.
        lower = name.lower()
        if lower in remove or "_" in name or (strip is not None and strip(name)):
            continue
        if lower == "cookie" and cookies is not None:
            kept = cookies(value)
            if kept is None:
                continue
            value = kept
            kept_cookies += 1
        out.add(name, value)
    if kept_cookies > 1:
        out["Cookie"] = "; ".join(out.popall("Cookie"))
    out["Host"] = host_header if upstream_host is None else upstream_host
    if peer_trusted:
        # A trusted proxy appends its peer; we append ours (the trusted proxy itself).
        forwarded_for = ", ".join(headers.getall("X-Forwarded-For", ()))
        out["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
        out["X-Forwarded-Proto"] = headers.get("X-Forwarded-Proto", scheme)
        out["X-Forwarded-Host"] = headers.get("X-Forwarded-Host", host_header)
        for name in _FORWARDED:
            for value in headers.getall(name, ()):
                out.add(name, value)
    else:
        out["X-Forwarded-For"] = peer
        out["X-Forwarded-Proto"] = scheme
        out["X-Forwarded-Host"] = host_header
    out["X-Request-Id"] = request_id
    return out


def response_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], request_id: str, *, date: bool = False
) -> list[tuple[str, str]]:
    """Upstream response headers for the client, in order: hop-by-hop removed, X-Request-Id
    added, and Server set when the upstream sent none (aiohttp would otherwise announce its
    own name and version); with ``date``, Date too when the upstream sent none (RFC 9110
    6.6.1: the express lane writes heads itself, aiohttp's writer adds it)."""
    remove = HOP_BY_HOP
    connection = headers.getall("Connection", None)
    # Usually one "keep-alive" or "close": nothing more to remove, and no list to split.
    if connection is not None and not (len(connection) == 1 and connection[0].lower() in _PLAIN_CONNECTION):
        named = connection_tokens(headers)
        if not named <= HOP_BY_HOP:
            remove = HOP_BY_HOP | named
    kept = [(name, value) for name, value in headers.items() if name.lower() not in remove]
    if "X-Request-Id" not in headers or "x-request-id" in remove:
        kept.append(("X-Request-Id", request_id))
    if "Server" not in headers or "server" in remove:
        kept.append(("Server", "authproxy"))
    if date and ("Date" not in headers or "date" in remove):
        kept.append(("Date", rfc822_formatted_time()))
    return kept


def copy_response_headers(headers: CIMultiDictProxy[str], out: CIMultiDict[str], request_id: str) -> None:
    """``response_headers`` into ``out`` (a response aiohttp writes)."""
    out.extend(response_headers(headers, request_id))


def client_address(peer: str, forwarded_for: Sequence[str], trusted: TrustedProxies) -> str:
    """The original client: the right-most X-Forwarded-For hop that is not a trusted proxy."""
    if not trusted.contains(peer):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not trusted.contains(hop):
            return hop
    return hops[0] if hops else peer


def effective_host(headers: CIMultiDictProxy[str], peer_trusted: bool) -> str:
    """The Host the client asked for: X-Forwarded-Host from a trusted proxy, else Host."""
    if peer_trusted:
        forwarded = headers.get("X-Forwarded-Host")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return headers.get("Host", "")


def effective_scheme(headers: CIMultiDictProxy[str], peer_trusted: bool, own_scheme: str) -> str:
    if peer_trusted:
        forwarded = headers.get("X-Forwarded-Proto")
        if forwarded:
            scheme = forwarded.split(",")[0].strip().lower()
            if scheme in ("http", "https"):
                return scheme
    return own_scheme
