"""How a response's body ends, decided from its status, its headers and the request's
method: a pure function (RFC 9112 6.3), or the reason the response cannot be framed.

Framing is never guessed: a wrong guess lets one response's bytes become another's
(response splitting, request smuggling: RFC 9112 11.1-11.2). So only ``chunked`` is an
accepted transfer coding, a Content-Length is one run of digits given once, and both
together are refused, as RFC 9112 6.1 advises. llhttp, which cuts the body, refuses most
of these itself first; this decision stands on its own and agrees with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from multidict import MultiMapping

MAX_HEADERS = 256  # header lines in a response head


class BodyEnds(enum.Enum):
    INTERIM = "interim"  # a 1xx: no body, the final response follows (RFC 9110 15.2)
    NONE = "none"  # a response to HEAD, a 204 or a 304 (RFC 9112 6.3 items 1-2)
    CHUNKED = "chunked"  # at its last chunk (item 4)
    LENGTH = "length"  # after Content-Length bytes (item 6)
    CLOSE = "close"  # at the connection's close (item 8)


@dataclass(slots=True)
class Framing:
    """A value (not frozen only because a frozen dataclass costs twice as much to build,
    and one is built per response)."""

    ends: BodyEnds
    length: int | None = None  # the Content-Length given (for HEAD, 204 and 304 too: it describes, not frames)


@dataclass(frozen=True, slots=True)
class Invalid:
    """The response cannot be framed safely; ``reason`` says why (for tests and logs)."""

    reason: str


INTERIM = Framing(BodyEnds.INTERIM)
UNTIL_CLOSE = Framing(BodyEnds.CLOSE)
_CHUNKED = Framing(BodyEnds.CHUNKED)
_NO_BODY = Framing(BodyEnds.NONE)
_DIGITS = frozenset("0123456789")


def response_framing(status: int, headers: MultiMapping[str], head_request: bool) -> Framing | Invalid:
    """How the body of a response with ``status`` and ``headers`` ends. Of the request,
    only whether it was a HEAD matters: a 2xx to CONNECT (item 2) is never asked for."""
    if not 100 <= status <= 599:
        return Invalid("status")
    if len(headers) > MAX_HEADERS:
        return Invalid("too_many_headers")
    if status < 200:
        return INTERIM  # its headers frame nothing; a body after it is refused by the protocol
    lengths = headers.getall("Content-Length", None)
    length = None
    if lengths is not None:
        if len(lengths) > 1:  # even equal ones: llhttp refuses them, and a list means a merge somewhere
            return Invalid("content_length_repeated")
        value = lengths[0].strip(" \t")
        if not value or not _DIGITS.issuperset(value):  # no sign, no "1_0", no "3, 3"
            return Invalid("content_length")
        length = int(value)
    codings = headers.getall("Transfer-Encoding", None)
    if codings is not None:
        # Only "chunked" frames a body we can forward; another coding (or a list) would be
        # read to the close and passed on undeclared (RFC 9112 6.1, 6.3).
        for coding in codings:
            if coding.strip().lower() != "chunked":
                return Invalid("transfer_coding")
        if length is not None:
            return Invalid("length_and_chunked")
    if head_request or status == 204 or status == 304:
        return _NO_BODY if length is None else Framing(BodyEnds.NONE, length)
    if codings is not None:
        return _CHUNKED
    if length is not None:
        return Framing(BodyEnds.LENGTH, length)
    return UNTIL_CLOSE
