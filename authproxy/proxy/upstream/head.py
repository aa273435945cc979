"""The request head, serialised: a pure function of the request line, the headers and
how the body is framed."""

from __future__ import annotations

from multidict import MultiMapping

from authproxy.errors import BadRequest

# Methods whose request means nothing without content: an absent body is sent as
# Content-Length: 0, so the upstream does not wait for one (RFC 9110 8.6).
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


def request_head(method: str, target: str, headers: MultiMapping[str], *, body: bool, has_length: bool) -> bytes:
    """``method target HTTP/1.1``, the headers in their order, and the framing the body
    needs when the headers do not give it (RFC 9112 6.2-6.3): ``Content-Length: 0`` for a
    bodiless request of a method that may carry content, ``Transfer-Encoding: chunked``
    for a body of unknown length (``has_length``: the headers carry its Content-Length).
    ``headers`` is case-insensitive (a ``CIMultiDict``) and left as it is.

    ``BadRequest`` for a line break or NUL in the target or any header: defence in depth
    (the server's parser refuses these already), so no value can start a header or a
    request of its own. Text goes out as it came in (``surrogateescape``)."""
    lines = [f"{method} {target} HTTP/1.1\r\n", *[f"{name}: {value}\r\n" for name, value in headers.items()]]
    if not body:
        if method not in BODYLESS and "Content-Length" not in headers:
            lines.append("Content-Length: 0\r\n")
    elif not has_length:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    text = "".join(lines)
    # One CRLF per line and no NUL.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
        raise BadRequest("a header or the target holds a line break or NUL")
    return text.encode("utf-8", "surrogateescape")
