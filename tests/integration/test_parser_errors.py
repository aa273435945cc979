"""No answer and no log line quotes request bytes (hardening item 2).

aiohttp's default answer to a request its parser refuses quotes the offending bytes, so a
page could pad its own cookies past the header limit and read the HttpOnly session ticket
from the 400 page (the CVE-2012-0053 pattern). Each way the parser can refuse a request is
tried here with random canaries in the request line, header names and values, against the
proxy listener, the admin listener, and the supervisor's admin listener (workers: 2)."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from tests.support.processes import ProxyProcess

ROUTES = [{"name": "app", "upstream": "http://127.0.0.1:9", "auth": "public"}]


def canary() -> str:
    return "CANARY" + secrets.token_hex(8)


def refused_requests(c: list[str]) -> dict[str, bytes]:
    """One request per way to be refused, each carrying canaries ``c[0..3]``."""
    pad = "x" * 9000  # past the default 8 KiB limit
    return {
        "long request line": f"GET /{c[0]}{pad} HTTP/1.1\r\nHost: a\r\nCookie: authproxy={c[1]}\r\n\r\n".encode(),
        "long cookie (CVE-2012-0053)": (f"GET /{c[0]} HTTP/1.1\r\nHost: a\r\nCookie: authproxy={c[1]}; pad={'p' * 4000};"
                                        f" pad2={'q' * 4500}; x={c[2]}\r\n\r\n").encode(),
        "long header value": f"GET /{c[0]} HTTP/1.1\r\nHost: a\r\nX-Pad: {c[1]}{pad}\r\nX-{c[2]}: {c[3]}\r\n\r\n".encode(),
        "long header name": f"GET /{c[0]} HTTP/1.1\r\nHost: a\r\nX-{c[1]}{pad}: {c[2]}\r\n\r\n".encode(),
        "too many headers": (f"GET /{c[0]} HTTP/1.1\r\nHost: a\r\n"
                             + "".join(f"X-{c[1]}-{i}: {c[2]}\r\n" for i in range(150)) + "\r\n").encode(),
        "length and chunked": (f"POST /{c[0]} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
                               f"X-A: {c[1]}\r\n\r\n0\r\n\r\n").encode(),
        "two lengths": f"POST /{c[0]} HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\nX-A: {c[1]}\r\n\r\nab".encode(),
        "bad chunk size": f"POST /{c[0]} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz{c[1]}\r\n\r\n".encode(),
        "space in header name": f"GET /{c[0]} HTTP/1.1\r\nHost: a\r\nBad {c[1]}: {c[2]}\r\n\r\n".encode(),
        "control byte in value": f"GET /{c[0]} HTTP/1.1\r\nHost: a\r\nX-A: {c[1]}\x01{c[2]}\r\n\r\n".encode(),
        "bad method": f"G<{c[0]}> / HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
        "bad version": f"GET /{c[0]} HTTP/9.{c[1]}\r\nHost: a\r\n\r\n".encode(),
        "bare LF line": f"GET /{c[0]} HTTP/1.1\r\nHost: a\nX-A: {c[1]}\r\n\r\n".encode(),
        "obsolete line folding": f"GET /{c[0]} HTTP/1.1\r\nHost: a\r\nX-A: a\r\n {c[1]}\r\n\r\n".encode(),
        "tls on a plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + c[0].encode() + b"\r\n\r\n",
    }


async def exchange(port: int, data: bytes) -> bytes:
    """Everything the server sends back before it closes (or 5 s pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    finally:
        writer.close()


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "supervisor"])
def proxy(request, tmp_path_factory):
    settings = {"routes": ROUTES, "workers": request.param}
    if request.param == 2:
        settings.update(store={"backend": "memory"})
    process = ProxyProcess(settings, tmp_path_factory.mktemp("parser"))
    yield process
    process.stop()


@pytest.mark.parametrize("listener", ["proxy", "admin"])
async def test_no_refusal_quotes_the_request(proxy, listener):
    port = proxy.port if listener == "proxy" else proxy.admin_port
    canaries = [canary() for _ in range(4)]
    answered = {}
    for name, data in refused_requests(canaries).items():
        response = await exchange(port, data)
        answered[name] = response
        head = response.split(b"\r\n", 1)[0]
        assert head.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), (name, response[:300])  # 1.0: the version was unreadable
        for value in canaries:
            assert value.encode() not in response, (name, response[:2000])
    # our own page, with a request id to quote to an operator
    page = answered["long cookie (CVE-2012-0053)"]
    assert b"X-Request-Id:" in page and b"Content-Type: text/html" in page and b"authproxy" in page
    logs = proxy.logs()
    for value in canaries:
        assert value not in logs, value
    assert "malformed_request" in logs
