"""Where a user may be sent after signing in or out (the ``rd`` parameter).

An open redirect on the sign-in path would let anyone craft a link through our
domain to a phishing page, so anything not clearly ours becomes "/". Accepted:

- a relative path that starts with exactly one "/" (not "//", not "/\\": browsers
  read both as "another host"), in any percent-encoding;
- an absolute http(s) URL, without credentials, whose host is ours, a route's host,
  or one of ``allowed_redirect_hosts`` ("*.example.com" allowed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from authproxy.policy.routes import HostPattern

SAFE_DEFAULT = "/"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class RedirectPolicy:
    def __init__(self, own_hosts: Iterable[str], allowed_patterns: Iterable[str] = ()):
        self._hosts = [HostPattern.compile(host.lower()) for host in (*own_hosts, *allowed_patterns)]

    def safe_target(self, target: str | None) -> str:
        """``target`` when it is safe to redirect to, else "/"."""
        if not target or len(target) > 4096:
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
            return target if not target.startswith("//") else SAFE_DEFAULT
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
