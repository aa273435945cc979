"""How a response's body ends (proxy/upstream/framing.py), from tables: RFC 9112 6.3 in
order, and every way a response can fail to be framed safely (RFC 9112 11.1-11.2)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from authproxy.proxy.upstream.framing import BodyEnds, Framing, Invalid, response_framing

NONE, LENGTH, CHUNKED, CLOSE, INTERIM = BodyEnds.NONE, BodyEnds.LENGTH, BodyEnds.CHUNKED, BodyEnds.CLOSE, BodyEnds.INTERIM
CL, TE = "Content-Length", "Transfer-Encoding"


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("status", "fields", "head", "expected"),
    [
        # item 1: a response to HEAD has no body, whatever it announces (the length describes the GET)
        (200, [(CL, "1000")], True, Framing(NONE, 1000)),
        (200, [(TE, "chunked")], True, Framing(NONE)),
        (200, [], True, Framing(NONE)),
        # items 1-2: 204 and 304 never have one
        (204, [], False, Framing(NONE)),
        (204, [(CL, "3")], False, Framing(NONE, 3)),
        (304, [(CL, "99")], False, Framing(NONE, 99)),
        (304, [(TE, "chunked")], False, Framing(NONE)),
        # item 4: chunked, in any case and with spaces around it, given once or twice
        (200, [(TE, "chunked")], False, Framing(CHUNKED)),
        (200, [(TE, "Chunked")], False, Framing(CHUNKED)),
        (200, [(TE, " chunked ")], False, Framing(CHUNKED)),
        (200, [(TE, "chunked"), (TE, "chunked")], False, Framing(CHUNKED)),
        (500, [(TE, "chunked")], False, Framing(CHUNKED)),
        # item 6: Content-Length
        (200, [(CL, "3")], False, Framing(LENGTH, 3)),
        (200, [(CL, "0")], False, Framing(LENGTH, 0)),
        (200, [(CL, "3 ")], False, Framing(LENGTH, 3)),
        (200, [(CL, "\t007")], False, Framing(LENGTH, 7)),
        (404, [(CL, "18446744073709551615")], False, Framing(LENGTH, 2**64 - 1)),
        # item 8: neither: the body runs to the close
        (200, [], False, Framing(CLOSE)),
        (200, [("Connection", "keep-alive")], False, Framing(CLOSE)),
        (599, [("X-A", "b")], False, Framing(CLOSE)),
        # 1xx: no body, the final answer follows; its headers frame nothing (RFC 9110 15.2)
        (100, [], False, Framing(INTERIM)),
        (103, [("Link", "</a>")], False, Framing(INTERIM)),
        (100, [(TE, "gzip")], False, Framing(INTERIM)),
        (101, [("Upgrade", "websocket")], False, Framing(INTERIM)),  # the parser refuses it as an upgrade
        (199, [(CL, "3")], True, Framing(INTERIM)),
    ],
)
def test_how_the_body_ends(status, fields, head, expected):
    assert response_framing(status, headers(*fields), head) == expected


@pytest.mark.parametrize(
    ("status", "fields", "head", "reason"),
    [
        (0, [(CL, "2")], False, "status"),
        (99, [], False, "status"),
        (600, [(CL, "0")], False, "status"),
        (999, [], True, "status"),
        (200, [("X-%d" % i, "v") for i in range(257)], False, "too_many_headers"),
        (100, [("X-%d" % i, "v") for i in range(257)], False, "too_many_headers"),  # a 1xx head too
        # only chunked frames a body we can forward: another coding would run to the close, undeclared
        (200, [(TE, "gzip")], False, "transfer_coding"),
        (200, [(TE, "identity")], False, "transfer_coding"),
        (200, [(TE, "")], False, "transfer_coding"),
        (200, [(TE, "gzip, chunked")], False, "transfer_coding"),
        (200, [(TE, "chunked, gzip")], False, "transfer_coding"),
        (200, [(TE, "chunked, chunked")], False, "transfer_coding"),
        (200, [(TE, "gzip"), (TE, "chunked")], False, "transfer_coding"),
        (204, [(TE, "gzip")], False, "transfer_coding"),  # refused even where no body follows
        (304, [(TE, "gzip")], False, "transfer_coding"),
        (200, [(TE, "gzip")], True, "transfer_coding"),
        # RFC 9112 6.1: both is what smuggling looks like
        (200, [(CL, "3"), (TE, "chunked")], False, "length_and_chunked"),
        (200, [(TE, "chunked"), (CL, "3")], False, "length_and_chunked"),
        (204, [(CL, "0"), (TE, "chunked")], True, "length_and_chunked"),
        # RFC 9112 6.3 item 5: one run of digits, given once
        (200, [(CL, "3"), (CL, "4")], False, "content_length_repeated"),
        (200, [(CL, "3"), (CL, "3")], False, "content_length_repeated"),
        (200, [(CL, "3, 3")], False, "content_length"),
        (200, [(CL, "+3")], False, "content_length"),
        (200, [(CL, "-1")], False, "content_length"),
        (200, [(CL, "1_0")], False, "content_length"),
        (200, [(CL, "1e3")], False, "content_length"),
        (200, [(CL, "0x10")], False, "content_length"),
        (200, [(CL, "")], False, "content_length"),
        (200, [(CL, "   ")], False, "content_length"),
        (200, [(CL, "\u0663")], False, "content_length"),  # a digit to str.isdigit, not to HTTP
        (304, [(CL, "abc")], False, "content_length"),
        (200, [(CL, "abc")], True, "content_length"),
    ],
)
def test_why_it_cannot_be_framed(status, fields, head, reason):
    assert response_framing(status, headers(*fields), head) == Invalid(reason)


def test_header_names_are_matched_without_regard_to_case():
    assert response_framing(200, headers(("content-length", "5")), False) == Framing(LENGTH, 5)
    assert response_framing(200, headers(("TRANSFER-ENCODING", "chunked")), False) == Framing(CHUNKED)


def test_the_header_limit_is_a_count_of_lines():
    at_limit = headers(*[("X-A", "v")] * 255, (CL, "0"))
    assert response_framing(200, at_limit, False) == Framing(LENGTH, 0)
    assert response_framing(200, headers(*[("X-A", "v")] * 256, (CL, "0")), False) == Invalid("too_many_headers")
