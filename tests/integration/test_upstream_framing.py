"""Framing between client, proxy and upstream through a real authproxy process: a
compressed request body passes as sent (never inflated past its Content-Length, which
would smuggle a second request), and an upstream failing before its small body arrives
gets an error page rather than a cut connection."""

from __future__ import annotations

import asyncio
import gzip
import hashlib

import aiohttp
import pytest

from tests.support.processes import ProxyProcess, free_port


class RawUpstream:
    """An upstream on 127.0.0.1 that records every request it parses and answers by path."""

    def __init__(self):
        self.requests: list[tuple[bytes, bytes]] = []

    async def start(self):
        async def handle(reader, writer):
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    body = await reader.readexactly(length)
                    self.requests.append((head, body))
                    if head.startswith(b"POST /early"):  # answers before reading the (chunked) body
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
                        await writer.drain()
                        await reader.read(1 << 20)
                        await asyncio.sleep(2)
                        return
                    if head.startswith(b"GET /stall"):
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal")
                        await writer.drain()
                        await asyncio.sleep(5)
                        return
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.port = free_port()
        self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
        return self


@pytest.fixture
async def stack(tmp_path):
    upstream = await RawUpstream().start()
    proxy = await asyncio.to_thread(
        ProxyProcess,
        {"routes": [{"name": "raw", "upstream": f"http://127.0.0.1:{upstream.port}", "auth": "public",
                     "timeouts": {"read": "1s"}, "max_body": "64KiB"}]},
        tmp_path,
    )
    yield proxy, upstream
    await asyncio.to_thread(proxy.stop)
    upstream.server.close()


async def test_a_compressed_body_passes_as_sent_and_smuggles_nothing(stack):
    proxy, upstream = stack
    smuggled = b"GET /admin HTTP/1.1\r\nHost: internal\r\nX-Auth-Request-User: admin\r\nContent-Length: 0\r\n\r\n"
    compressed = gzip.compress(b"A" * 2000 + smuggled)
    async with aiohttp.ClientSession() as http:
        async with http.post(proxy.url + "/upload", data=compressed,
                             headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}) as response:
            assert response.status == 200 and await response.read() == b"ok"
        async with http.get(proxy.url + "/after") as response:  # the same upstream connection, reused
            assert response.status == 200
    for _ in range(100):  # the upstream records a request once it has read it whole
        if len(upstream.requests) >= 2:
            break
        await asyncio.sleep(0.02)
    heads = [head.split(b"\r\n")[0] for head, _ in upstream.requests]
    assert heads == [b"POST /upload HTTP/1.1", b"GET /after HTTP/1.1"]  # no /admin request in between
    assert hashlib.sha256(upstream.requests[0][1]).digest() == hashlib.sha256(compressed).digest()


async def test_upstream_failing_before_its_small_body_arrives_gets_an_error_page(stack):
    proxy, _ = stack
    async with aiohttp.ClientSession() as http:
        async with http.get(proxy.url + "/stall", headers={"Accept": "application/json"}) as response:
            assert response.status == 504
            assert (await response.json())["error"] == "gateway_timeout"


async def test_the_clients_body_failing_after_the_upstream_answered_is_the_clients_fault(stack):
    proxy, _ = stack

    async def too_big():
        for _ in range(8):
            yield b"x" * 16384
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession() as http:
        async with http.post(proxy.url + "/early", data=too_big(), headers={"Accept": "application/json"}) as response:
            assert response.status == 413  # over max_body: not an upstream reset
    for _ in range(100):  # counted just after the response leaves
        if proxy.metric("authproxy_requests_total", code="413") >= 1:
            break
        await asyncio.sleep(0.02)
    assert proxy.metric("authproxy_requests_total", code="413") >= 1
    assert proxy.metric("authproxy_upstream_errors_total") == 0
