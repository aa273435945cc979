"""The upstream HTTP/1.1 client against raw socket servers on 127.0.0.1 that answer
byte for byte what each case needs: framing, keep-alive, stale connections, failures."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from multidict import CIMultiDict

from authproxy.errors import PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable
from authproxy.proxy.upstream import ClientBodyFailed, Origin, UpstreamPool


class RawServer:
    """Runs ``script(reader, writer, index)`` for each connection; records what arrived."""

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.received: list[bytes] = []

    async def __aenter__(self):
        async def handle(reader, writer):
            index = self.connections
            self.connections += 1
            try:
                await self.script(reader, writer, index, self)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.origin = Origin("http", "127.0.0.1", self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


async def read_request(reader, server=None) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    body = b""
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    if server is not None:
        server.received.append(head + body)
    return head + body


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def call(pool, origin, method="GET", body=None, headers=None, read_timeout=5.0, has_length=False):
    return await pool.request(origin, method, "/x?y=1", CIMultiDict(headers or {"Host": "up"}), body,
                              connect_timeout=2.0, read_timeout=read_timeout, has_length=has_length)


async def chunks(*parts):
    for part in parts:
        yield part


@pytest.fixture
async def pool():
    pool = UpstreamPool()
    yield pool
    await pool.close()


async def test_keep_alive_reuses_one_connection_and_sends_a_clean_head(pool):
    async def script(reader, writer, index, server):
        for _ in range(3):
            await read_request(reader, server)
            writer.write(ok(b"abc", b"X-A: 1\r\nX-A: 2\r\n"))

    async with RawServer(script) as server:
        for _ in range(3):
            response = await call(pool, server.origin)
            assert (response.status, await response.read()) == (200, b"abc")
            assert response.headers.getall("X-A") == ["1", "2"] and response.content_length == 3
            response.release()
    assert server.connections == 1 and pool.connections_opened == 1
    assert server.received[0].startswith(b"GET /x?y=1 HTTP/1.1\r\nHost: up\r\n")


@pytest.mark.parametrize(
    ("answer", "body", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", b"until the end", False),  # RFC 9112 6.3
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"final"), b"final", True),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", b"", True),
    ],
)
async def test_response_framing(pool, answer, body, reused):
    async def script(reader, writer, index, server):
        while True:
            await read_request(reader)
            writer.write(answer)
            if b"close" in answer:
                return

    async with RawServer(script) as server:
        for _ in range(2):
            response = await call(pool, server.origin)
            assert response.status in (200, 204, 304) and await response.read() == body
            response.release()
    assert server.connections == (1 if reused else 2)


async def test_head_response_has_no_body_and_its_connection_is_not_reused(pool):
    async def script(reader, writer, index, server):
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")

    async with RawServer(script) as server:
        for _ in range(2):
            response = await call(pool, server.origin, "HEAD")
            assert response.content_length == 1000 and await response.read() == b""
            response.release()
    assert server.connections == 2


async def stale(reader, writer, index, server):
    """The first connection answers once, then drops the next request unanswered (the
    upstream closed it as idle just when we reused it); later connections answer all."""
    await read_request(reader, server)
    writer.write(ok())
    await writer.drain()
    if index == 0:
        await reader.read(1)
        return
    while True:
        await read_request(reader, server)
        writer.write(ok())


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("HEAD", True), ("POST", False)])
async def test_request_on_a_connection_the_upstream_dropped(pool, method, retried):
    async with RawServer(stale) as server:
        first = await call(pool, server.origin)
        assert await first.read() == b"hello"
        first.release()
        if retried:  # idempotent and bodiless: sent once more on a new connection (RFC 9110 9.2.2)
            second = await call(pool, server.origin, method)
            assert second.status == 200
            second.release()
            assert server.connections == 2
        else:  # never sent twice: a POST may not be idempotent
            with pytest.raises(UpstreamUnavailable) as caught:
                await call(pool, server.origin, method, body=chunks(b"data"),
                           headers={"Host": "up", "Content-Length": "4"}, has_length=True)
            assert caught.value.kind == "reset" and server.connections == 1


async def test_request_bodies_chunked_or_with_length_and_empty_post(pool):
    async def script(reader, writer, index, server):
        for _ in range(3):
            await read_request(reader, server)
            writer.write(ok())

    async with RawServer(script) as server:
        for args in (
            {"body": chunks(b"ab", b"", b"cde")},
            {"body": chunks(b"xyz"), "headers": {"Host": "up", "Content-Length": "3"}, "has_length": True},
            {},
        ):
            response = await call(pool, server.origin, "POST", **args)
            await response.read()
            response.release()
    chunked, sized, empty = server.received
    assert b"transfer-encoding: chunked" in chunked.lower() and chunked.endswith(b"\r\n\r\nabcde")
    assert b"content-length: 3" in sized.lower() and sized.endswith(b"\r\n\r\nxyz")
    assert b"content-length: 0" in empty.lower()  # a bodiless POST says so (RFC 9110 8.6)


async def test_failures_are_typed(pool):
    with contextlib.closing(__import__("socket").socket()) as holder:
        holder.bind(("127.0.0.1", 0))
        closed_port = holder.getsockname()[1]
    with pytest.raises(UpstreamUnavailable) as caught:
        await call(pool, Origin("http", "127.0.0.1", closed_port))
    assert caught.value.kind == "refused"

    async def silent(reader, writer, index, server):
        await read_request(reader)
        await asyncio.sleep(5)

    async with RawServer(silent) as server:
        with pytest.raises(UpstreamTimeout):
            await call(pool, server.origin, read_timeout=0.2)

    async def garbage(reader, writer, index, server):
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")

    async with RawServer(garbage) as server:
        with pytest.raises(UpstreamUnavailable) as caught:
            await call(pool, server.origin)
    assert caught.value.kind == "invalid_response"

    async def truncated(reader, writer, index, server):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")

    async with RawServer(truncated) as server:
        response = await call(pool, server.origin)
        with pytest.raises(UpstreamUnavailable) as caught:
            await response.read()
        response.release()
    assert caught.value.kind == "reset"


async def test_client_body_failures_are_the_clients(pool):
    async def script(reader, writer, index, server):
        await reader.read(100)
        await asyncio.sleep(1)

    async def too_big():
        yield b"a"
        raise PayloadTooLarge("over the limit")

    async def broken():
        yield b"a"
        raise ConnectionResetError("client left")

    async with RawServer(script) as server:
        with pytest.raises(PayloadTooLarge):
            await call(pool, server.origin, "POST", body=too_big())
        with pytest.raises(ClientBodyFailed):
            await call(pool, server.origin, "POST", body=broken())


async def test_early_answer_while_the_body_is_still_uploading(pool):
    async def script(reader, writer, index, server):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
        await writer.drain()

    async def slow_body():
        for _ in range(50):
            yield b"x" * 1024
            await asyncio.sleep(0.01)

    async with RawServer(script) as server:
        response = await call(pool, server.origin, "POST", body=slow_body())
        assert response.status == 413 and await response.read() == b"nope"
        response.release()  # the unfinished upload is abandoned with its connection


async def test_reading_pauses_when_the_consumer_does_not_read(pool):
    size = 16 * 1024 * 1024
    held_back = asyncio.Event()
    sent = [0]

    async def script(reader, writer, index, server):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"z" * 65536
        for _ in range(size // len(block)):
            writer.write(block)
            sent[0] += len(block)
            if writer.transport.get_write_buffer_size() > 0:  # the kernel took no more: the peer stopped reading
                held_back.set()
            await writer.drain()

    async with RawServer(script) as server:
        response = await call(pool, server.origin)
        await asyncio.wait_for(held_back.wait(), 10)  # the client stopped reading, with 16 MiB to come
        assert response._buffered < 1024 * 1024 and sent[0] < size  # flow control held it back
        received = 0
        while chunk := await response.readany():
            received += len(chunk)
        assert received == size
        response.release()


async def test_https_upstream_with_certificate_verification(tmp_path):
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_path, key_path)

    async def handle(reader, writer):
        await read_request(reader)
        writer.write(ok(b"over tls"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
    origin = Origin("https", "127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        trusting = UpstreamPool(ssl_context=ssl.create_default_context(cafile=str(cert_path)))
        response = await call(trusting, origin)
        assert await response.read() == b"over tls"
        response.release()
        await trusting.close()
        default = UpstreamPool()  # the system's CAs do not know this certificate: refused, never sent
        with pytest.raises(UpstreamUnavailable) as caught:
            await call(default, origin)
        assert caught.value.kind == "refused"
        await default.close()
    finally:
        server.close()
        await server.wait_closed()


# --- framing that must never be guessed (request smuggling, RFC 9112 11.2) ------------------------


async def test_a_body_longer_or_shorter_than_announced_never_reaches_the_upstream_as_more(pool):
    async def script(reader, writer, index, server):
        server.received.append(await reader.read(65536))
        await asyncio.sleep(0.3)

    async with RawServer(script) as server:
        for parts in ((b"abcd", b"GET /admin HTTP/1.1\r\n\r\n"), (b"ab",)):
            with pytest.raises(ClientBodyFailed):
                await call(pool, server.origin, "POST", body=chunks(*parts),
                           headers={"Host": "up", "Content-Length": "4"}, has_length=True)
    assert all(b"/admin" not in received for received in server.received)


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"hello") + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nINJECT",  # two answers to one request
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\nContent-Length: 0\r\n\r\n",
        ok(b"hello") + b"HTTP/1.1 302 Fou",  # a partial answer left for the next request
    ],
)
async def test_bytes_after_a_complete_response_end_the_connection(pool, answer):
    async def script(reader, writer, index, server):
        while True:
            await read_request(reader)
            writer.write(answer if index == 0 else ok(b"clean"))

    async with RawServer(script) as server:
        first = await call(pool, server.origin)
        assert first.status in (200, 204) and await first.read() in (b"hello", b"")
        first.release()
        await asyncio.sleep(0.05)
        second = await call(pool, server.origin)  # another client's request: a new connection, a clean answer
        assert (second.status, await second.read()) == (200, b"clean")
        second.release()
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 150 Odd\r\nContent-Length: 4\r\n\r\nBODY" + ok(),
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 70000 + b"\r\nContent-Length: 0\r\n\r\n",
    ],
)
async def test_responses_that_cannot_be_framed_safely_are_invalid(pool, answer):
    async def script(reader, writer, index, server):
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(0.5)

    async with RawServer(script) as server:
        with pytest.raises(UpstreamUnavailable) as caught:
            response = await call(pool, server.origin)
            await response.read()
    assert caught.value.kind == "invalid_response"


async def test_a_long_upload_is_not_timed_out_while_the_upstream_reads_it(pool):
    async def script(reader, writer, index, server):
        await read_request(reader, server)
        writer.write(ok(b"got it"))

    async def slow():
        for _ in range(6):
            yield b"xy"
            await asyncio.sleep(0.1)

    async with RawServer(script) as server:
        response = await call(pool, server.origin, "POST", body=slow(), read_timeout=0.25)  # upload takes 0.6 s
        assert await response.read() == b"got it"
        response.release()
    assert server.received[0].endswith(b"xy" * 6)


async def test_an_upstream_that_stops_reading_times_out_and_leaves_nothing_behind(pool):
    async def script(reader, writer, index, server):
        await asyncio.sleep(3)  # never reads

    async def big():
        for _ in range(256):
            yield b"z" * 65536

    async with RawServer(script) as server:
        with pytest.raises(UpstreamTimeout):
            await call(pool, server.origin, "POST", body=big(), read_timeout=0.3)
        await asyncio.sleep(0.1)
        assert not pool._all  # aborted, not waiting forever to flush
        assert not [task for task in asyncio.all_tasks() if "_send_body" in repr(task.get_coro())]


async def test_a_failed_request_stops_its_upload(pool):
    async def script(reader, writer, index, server):
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()  # reset while the body is still coming

    gate = asyncio.Event()

    async def waiting_body():
        yield b"a"
        await gate.wait()  # the client is slow: the writer sits here
        yield b"b"

    async with RawServer(script) as server:
        with pytest.raises(UpstreamUnavailable):
            await call(pool, server.origin, "POST", body=waiting_body())
    assert not [task for task in asyncio.all_tasks() if "_send_body" in repr(task.get_coro())]


async def test_a_body_ended_by_close_is_not_complete_when_we_cut_it(pool):
    async def script(reader, writer, index, server):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npartial-")
        await writer.drain()
        await asyncio.sleep(3)  # stalls: our read timeout cuts it, which is not the upstream's end

    async with RawServer(script) as server:
        response = await call(pool, server.origin, read_timeout=0.3)
        with pytest.raises(UpstreamTimeout):
            await response.read()
        response.release()


async def test_an_endless_header_line_is_refused_early(pool):
    sent = []

    async def script(reader, writer, index, server):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
        for _ in range(256):  # 16 MiB without a line end
            writer.write(b"a" * 65536)
            await writer.drain()
            sent.append(1)

    async with RawServer(script) as server:
        with pytest.raises(UpstreamUnavailable) as caught:
            await call(pool, server.origin)
    assert caught.value.kind == "invalid_response" and len(sent) < 200  # refused long before the end
