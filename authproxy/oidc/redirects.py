"""Where a user may be sent after signing in or out (the ``rd`` parameter).

An open redirect on the sign-in path would let anyone craft a link through our
domain to a phishing page, so anything not clearly ours becomes "/". Accepted:

- a relative path that starts with exactly one "/" (not "//", not "/\\": browsers
  read both as "another host"), in any percent-encoding;
- an absolute http(s) URL, without credentials, whose host is ours, a route's host,
  or one of ``allowed_redirect_hosts`` ("*.example.com" allowed).

What is kept is short: the path and query (and, for an absolute URL, its scheme and
host), never a fragment (a browser never sends one), non-ASCII and spaces
percent-encoded, at most ``MAX_TARGET_LENGTH`` characters, else "/". The target travels
in a sign-in transaction cookie, and the cookies' size is bounded by construction (see
session/cookies.py): a long ``rd`` must cost the user their deep link, never their
access to the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from authproxy.policy.routes import HostPattern

SAFE_DEFAULT = "/"
MAX_TARGET_LENGTH = 512
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Kept as they are by the re-encoding: RFC 3986 reserved characters, "%" (an existing
# escape) and the unreserved ones; everything else (space, non-ASCII, '"', '<', ...) is quoted.
_KEEP = "!$%&'()*+,/:;=?@[]~-._"


class RedirectPolicy:
    def __init__(self, own_hosts: Iterable[str], allowed_patterns: Iterable[str] = ()):
        self._own = [HostPattern.compile(host.lower()) for host in own_hosts if host]
        self._hosts = [*self._own, *(HostPattern.compile(host.lower()) for host in allowed_patterns)]

    def is_own_host(self, host: str) -> bool:
        """``host`` (no port) is public_url's or a route's: ours, not merely allowed to return to."""
        host = host.lower().rstrip(".")
        return any(pattern.matches(host) for pattern in self._own)

    def safe_target(self, target: str | None) -> str:
        """``target`` (without its fragment) when it is safe and short enough, else "/"."""
        if not target or len(target) > 4 * MAX_TARGET_LENGTH or _CONTROL.search(target):
            return SAFE_DEFAULT
        target = quote(target.partition("#")[0], safe=_KEEP)
        if len(target) > MAX_TARGET_LENGTH:
            return SAFE_DEFAULT
        # Judge every decoding a browser or a later hop might apply.
        decoded = target
        for _ in range(4):  # the original and up to three decodings
            if _CONTROL.search(decoded) or "\\" in decoded:
                return SAFE_DEFAULT
            if decoded.startswith("//") or decoded.startswith("/\\"):
                return SAFE_DEFAULT
            next_decoded = unquote(decoded)
            if next_decoded == decoded:
                break
            decoded = next_decoded
        if target.startswith("/"):
            return target
        return target if self._allowed_absolute(target) else SAFE_DEFAULT

    def _allowed_absolute(self, target: str) -> bool:
        try:
            parts = urlsplit(target)
            host = (parts.hostname or "").rstrip(".")
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
            return False
        return any(pattern.matches(host) for pattern in self._hosts)
