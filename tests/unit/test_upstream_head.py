"""The request head (proxy/upstream/head.py), from tables: the request line, the headers
as given, the body's framing added where the headers leave it out, and no way for a value
to start a header or a request of its own."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from authproxy.errors import BadRequest
from authproxy.proxy.upstream.head import request_head


@pytest.mark.parametrize(
    ("method", "fields", "body", "has_length", "expected"),
    [
        # bodiless requests of methods without content: nothing added
        ("GET", [("Host", "up")], False, False, b"GET /x?y=1 HTTP/1.1\r\nHost: up\r\n\r\n"),
        ("HEAD", [("Host", "up")], False, False, b"HEAD /x?y=1 HTTP/1.1\r\nHost: up\r\n\r\n"),
        ("OPTIONS", [("Host", "up")], False, False, b"OPTIONS /x?y=1 HTTP/1.1\r\nHost: up\r\n\r\n"),
        ("TRACE", [("Host", "up")], False, False, b"TRACE /x?y=1 HTTP/1.1\r\nHost: up\r\n\r\n"),
        # a bodiless POST, PUT, DELETE... says so, or the upstream waits for a body (RFC 9110 8.6)
        ("POST", [("Host", "up")], False, False, b"POST /x?y=1 HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n\r\n"),
        ("DELETE", [("Host", "up")], False, False,
         b"DELETE /x?y=1 HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\n\r\n"),
        ("PUT", [("Host", "up"), ("content-length", "0")], False, False,
         b"PUT /x?y=1 HTTP/1.1\r\nHost: up\r\ncontent-length: 0\r\n\r\n"),  # already said: not twice
        # a body of known length goes as announced; of unknown length, chunked (RFC 9112 7.1)
        ("POST", [("Host", "up"), ("Content-Length", "3")], True, True,
         b"POST /x?y=1 HTTP/1.1\r\nHost: up\r\nContent-Length: 3\r\n\r\n"),
        ("POST", [("Host", "up")], True, False,
         b"POST /x?y=1 HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("GET", [("Host", "up")], True, False,
         b"GET /x?y=1 HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"),
        # headers in their order, repeated names kept, text as it came in (surrogateescape)
        ("GET", [("Host", "up"), ("X-A", "1"), ("Cookie", "a=b"), ("X-A", "2")], False, False,
         b"GET /x?y=1 HTTP/1.1\r\nHost: up\r\nX-A: 1\r\nCookie: a=b\r\nX-A: 2\r\n\r\n"),
        ("GET", [("Host", "up"), ("X-Name", "caf\udcc3\udca9")], False, False,
         b"GET /x?y=1 HTTP/1.1\r\nHost: up\r\nX-Name: caf\xc3\xa9\r\n\r\n"),
        ("GET", [], False, False, b"GET /x?y=1 HTTP/1.1\r\n\r\n"),
    ],
)
def test_request_head(method, fields, body, has_length, expected):
    fields_given = CIMultiDict(fields)
    assert request_head(method, "/x?y=1", fields_given, body=body, has_length=has_length) == expected
    assert fields_given == CIMultiDict(fields)  # the caller's headers are left as they are


@pytest.mark.parametrize(
    ("target", "fields"),
    [
        ("/x HTTP/1.1\r\nHost: evil\r\n\r\nGET /admin", [("Host", "up")]),
        ("/x\n", [("Host", "up")]),
        ("/x\r", [("Host", "up")]),
        ("/x\x00", [("Host", "up")]),
        ("/x", [("Host", "up"), ("X-A", "1\r\nX-Injected: 1")]),
        ("/x", [("Host", "up"), ("X-A", "1\nX-Injected: 1")]),
        ("/x", [("Host", "up"), ("X-A", "1\rX-Injected: 1")]),
        ("/x", [("Host", "up"), ("X-A\r\nX-B", "1")]),
        ("/x", [("Host", "up"), ("X-A", "a\x00b")]),
    ],
)
def test_a_line_break_or_nul_anywhere_is_refused(target, fields):
    with pytest.raises(BadRequest):
        request_head("GET", target, CIMultiDict(fields), body=False, has_length=False)
