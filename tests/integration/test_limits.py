"""Client limits: idle timeouts, stalled and abandoned uploads, header size."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.processes import ProxyProcess
from tests.support.raw import read_response


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    server = ProxyProcess(
        {
            "limits": {"client_idle_timeout": "1s", "header_size": "2KiB", "max_headers": 20},
            "routes": [{"name": "all", "upstream": upstream.url, "auth": "public"}],
        },
        tmp_path_factory.mktemp("limits"),
    )
    yield server
    server.stop()


async def test_stalled_upload_gets_408(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    status, _, body = await asyncio.wait_for(read_response(reader), 10)
    writer.close()
    assert status == 408
    assert b"request_timeout" in body


async def test_abandoned_upload_is_logged_as_client_closed(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: h\r\nX-Request-Id: abandoned-1\r\nContent-Length: 1000000\r\n\r\n")
    writer.write(b"a" * 100_000)
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    assert (await proxy.access_record("abandoned-1"))["status"] == 499
    text = proxy.logs()
    assert "Traceback" not in text and "Error handling request" not in text


async def test_idle_keepalive_connection_is_closed(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
    await writer.drain()
    status, _, _ = await asyncio.wait_for(read_response(reader), 5)
    assert status == 200
    # nothing more is sent: the proxy closes the connection after client_idle_timeout
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()


async def test_client_that_stops_reading_is_cut_off(proxy):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"GET /download/300000000 HTTP/1.1\r\nHost: h\r\nX-Request-Id: stalled-reader\r\n\r\n")
    await writer.drain()
    await reader.readexactly(1024)
    await asyncio.sleep(4)  # read nothing for longer than client_idle_timeout (1s)
    received = 1024
    while chunk := await asyncio.wait_for(reader.read(1 << 20), 10):
        received += len(chunk)
    writer.close()
    assert received < 300_000_000  # the proxy gave up on this reader instead of waiting forever
    assert (await proxy.access_record("stalled-reader"))["status"] == 499


async def test_too_many_or_too_large_headers(proxy):
    for extra in (b"X-Big: " + b"a" * 3000 + b"\r\n", b"".join(b"X-H%d: 1\r\n" % i for i in range(40))):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"GET /x HTTP/1.1\r\nHost: h\r\n" + extra + b"\r\n")
        await writer.drain()
        status, _, _ = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
        assert status in (400, 431)
    await asyncio.sleep(0.2)
    events = [r for r in proxy.log_records() if r.get("event") == "malformed_request"]
    assert len(events) == 2 and all(e["level"] == "info" for e in events)
    assert {e["reason"] for e in events} == {"LineTooLong", "BadHttpMessage"}  # too long; too many
    assert not [r for r in proxy.log_records() if r.get("level") == "error"]
