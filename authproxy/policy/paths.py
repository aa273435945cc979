"""Normalisation of the request path, done once per request.

The same normalised path is both matched against routes and forwarded upstream, so
no spelling of a path (``/api/a/../admin``, ``/api/a/%2e%2e/admin``, ``//admin``) can
reach anything other than what its canonical form reaches.

Steps, in order:

1. Reject what no well-formed origin-form target holds (RFC 9112 3.2.1, RFC 3986 3.3):
   control characters, spaces, backslashes, fragments, a missing leading ``/``.
2. Percent-decode octets of unreserved characters (RFC 3986 2.3 and 6.2.2.2), which
   includes ``%2E``; keep every other escape, upper-cased (6.2.2.1). ``%00`` is
   rejected; ``%2F`` and ``%5C`` are kept encoded and reported, since an upstream
   that decodes them would see different segments than we matched.
   A dot segment with path parameters (``..;x``) is rejected: some servers resolve it.
3. Merge repeated slashes (as nginx's merge_slashes does), then remove dot segments
   (RFC 3986 5.2.4).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from authproxy.errors import BadRequest

# Anything outside this set, or "//", or "/." means the slow path must look closer.
_NEEDS_WORK = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/]|//|/\.")
_ESCAPE = re.compile(r"%(.?.?)")
_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\#\"<>^`{|}]")
_MULTI_SLASH = re.compile(r"/{2,}")


class NormalisedPath(NamedTuple):
    path: str  # canonical path, still percent-encoded where needed
    has_encoded_slash: bool  # holds %2F or %5C


def split_target(raw_target: str) -> tuple[str, str]:
    """Split an origin-form (or absolute-form) request target into (path, raw query)."""
    if not raw_target.startswith("/"):
        # absolute-form "http://host/path?q" (RFC 9112 3.2.2): only its path and query matter
        scheme_end = raw_target.find("://")
        if scheme_end <= 0:
            raise BadRequest("request target must be a path starting with '/'")
        slash = raw_target.find("/", scheme_end + 3)
        query_mark = raw_target.find("?", scheme_end + 3)
        if slash == -1 or (query_mark != -1 and query_mark < slash):
            raw_target = "/" + (raw_target[query_mark:] if query_mark != -1 else "")
        else:
            raw_target = raw_target[slash:]
    path, _, query = raw_target.partition("?")
    return path, query


def normalise_path(raw_path: str) -> NormalisedPath:
    """The canonical form of ``raw_path`` (no query); raises ``BadRequest`` on hostile input."""
    if not raw_path.startswith("/"):
        raise BadRequest("request path must start with '/'")
    if _NEEDS_WORK.search(raw_path) is None:
        return NormalisedPath(raw_path, False)
    if _FORBIDDEN.search(raw_path) or not raw_path.isascii():
        raise BadRequest("request path holds characters that are not allowed (control, space, backslash, non-ASCII)")

    encoded_slash = False

    def decode(match: re.Match[str]) -> str:
        nonlocal encoded_slash
        digits = match.group(1)
        if len(digits) != 2 or not (digits[0] in _HEX and digits[1] in _HEX):
            raise BadRequest("request path holds a malformed percent-escape")
        char = chr(int(digits, 16))
        if char in _UNRESERVED:
            return char
        if char == "\x00":
            raise BadRequest("request path holds an encoded NUL byte")
        if char in "/\\":
            encoded_slash = True
        return "%" + digits.upper()

    path = _ESCAPE.sub(decode, raw_path) if "%" in raw_path else raw_path
    if ";" in path and any(segment.partition(";")[0] in (".", "..") for segment in path.split("/")):
        # "..;/" is ".." to Tomcat and Jetty, which drop path parameters before resolving.
        raise BadRequest("request path holds a dot segment with parameters ('..;')")
    path = remove_dot_segments(_MULTI_SLASH.sub("/", path))
    return NormalisedPath(path, encoded_slash)


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on an absolute path; ``..`` above the root stays at the root."""
    if "." not in path:
        return path
    output: list[str] = []
    segments = path.split("/")
    for segment in segments[1:]:
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    # A trailing "." or ".." leaves a directory, so the result ends with "/".
    trailing = "/" if segments[-1] in (".", "..") else ""
    return "/" + "/".join(output) + trailing if output else "/"
