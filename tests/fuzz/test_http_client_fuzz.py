"""The upstream client's response framing on hostile bytes, fed to its connection in any
split: a well-formed response is read exactly (status, headers, body), anything else is a
typed ``UpstreamError``, never another exception; a body never holds more or fewer bytes
than its Content-Length, and bytes after a complete response (a smuggled second one) never
become part of any answer, and the connection is not reused after them."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from authproxy.errors import UpstreamError
from authproxy.proxy.upstream import Origin, UpstreamPool, UpstreamResponse
from authproxy.proxy.upstream.protocol import _Connection

ORIGIN = Origin("http", "127.0.0.1", 9)


class FakeTransport:
    """What the connection writes to and how it is cut; nothing goes on a wire."""

    def __init__(self, connection: _Connection):
        self.connection = connection
        self.closing = False

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.connection.connection_lost, None)


async def exchange(data: bytes, cuts: list[int], head: bool = False, close_after: bool = True):
    """Feed ``data`` in pieces cut at ``cuts``; (status, headers, body, reusable) or the error."""
    pool = UpstreamPool()
    connection = _Connection(pool, ORIGIN)
    transport = FakeTransport(connection)
    connection.connection_made(transport)  # type: ignore[arg-type]
    response = UpstreamResponse(connection, read_timeout=0.05)
    connection.begin(response, head)
    position = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut > position and not transport.closing:
            connection.data_received(data[position:cut])
            position = cut
    if close_after and not transport.closing:
        transport.closing = True
        connection.connection_lost(None)
    try:
        await response._wait_headers()
        body = await response.read()
    except UpstreamError as exc:
        return exc
    reusable = connection.reusable()
    return response.status, response.headers, body, reusable


def run(coroutine):
    return asyncio.run(coroutine)


token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=8).map(lambda t: "X-" + t)
field_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=16).map(str.strip)
bodies = st.binary(max_size=300)


@st.composite
def well_formed(draw):
    """(bytes, status, body, framing) of a response that follows RFC 9112."""
    status = draw(st.sampled_from([200, 201, 204, 301, 304, 400, 404, 500, 503, 599]))
    headers = draw(st.lists(st.tuples(token, field_value), max_size=5))
    body = b"" if status in (204, 304) else draw(bodies)
    framing = "none" if status in (204, 304) else draw(st.sampled_from(["length", "chunked", "close"]))
    lines = [f"HTTP/1.1 {status} Reason\r\n"]
    if draw(st.booleans()):
        lines.insert(0, "HTTP/1.1 100 Continue\r\n\r\n")
    lines += [f"{name}: {value}\r\n" for name, value in headers]
    payload = body
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked\r\n")
        sizes = draw(st.lists(st.integers(1, 50), max_size=10))
        chunks, rest = [], body
        for size in sizes:
            if not rest:
                break
            chunks.append(rest[:size])
            rest = rest[size:]
        if rest:
            chunks.append(rest)
        payload = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    elif framing == "close":
        lines.append("Connection: close\r\n")
    data = "".join(lines).encode() + b"\r\n" + payload
    return data, status, body, framing, headers


@given(well_formed(), st.lists(st.integers(0, 800), max_size=8))
def test_a_well_formed_response_is_read_exactly(case, cuts):
    data, status, body, framing, headers = case
    result = run(exchange(data, cuts, close_after=framing == "close"))
    assert not isinstance(result, BaseException), (data, result)
    got_status, got_headers, got_body, _ = result
    assert got_status == status and got_body == body
    for name, value in headers:
        assert value in got_headers.getall(name)


smuggled = st.sampled_from([
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGG",
    b"HTTP/1.1 302 Found\r\nLocation: /evil\r\n\r\n",
    b"0\r\n\r\n",
    b"garbage",
])


@given(well_formed(), smuggled, st.lists(st.integers(0, 800), max_size=8))
def test_bytes_after_a_complete_response_are_never_an_answer(case, extra, cuts):
    data, status, body, framing, _ = case
    if framing == "close":
        return  # its body runs to the close: the extra bytes are its body, as RFC 9112 6.3 says
    result = run(exchange(data + extra, cuts, close_after=False))
    if isinstance(result, UpstreamError):
        return  # the connection was cut before the answer was whole: an error, never a mix
    got_status, _, got_body, reusable = result
    assert got_status == status and got_body == body and b"SMUGG" not in got_body
    assert not reusable


hostile_pieces = st.sampled_from([
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 999 Nope\r\n", b"HTTP/1.1 101 Switching\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/2 200\r\n", b"Content-Length: 5\r\n", b"Content-Length: 3\r\n",
    b"Content-Length: -1\r\n", b"Content-Length: 1e3\r\n", b"Content-Length:  7 \r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip, chunked\r\n", b"Transfer-Encoding: identity\r\n",
    b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"Upgrade: websocket\r\n", b"X-A: b\r\n",
    b"X-A:\x00b\r\n", b"X A: b\r\n", b" folded\r\n", b"\r\n", b"\n", b"5\r\nhello\r\n", b"0\r\n\r\n", b"zz\r\n",
    b"hello", b"\x00", b"\xff\xfe", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
])


@given(st.lists(hostile_pieces, max_size=12).map(b"".join) | st.binary(max_size=200),
       st.lists(st.integers(0, 400), max_size=6), st.booleans(), st.booleans())
def test_hostile_bytes_give_an_answer_or_a_typed_error(data, cuts, head, close_after):
    result = run(exchange(data, cuts, head=head, close_after=close_after))
    if isinstance(result, UpstreamError):
        return
    status, headers, body, _ = result
    assert 200 <= status <= 599
    if head or status in (204, 304):
        assert body == b""
    lengths = headers.getall("Content-Length", [])
    if lengths and not head and status not in (204, 304) and "Transfer-Encoding" not in headers:
        assert len(lengths) == 1 and len(body) == int(lengths[0])
