"""Graceful shutdown with keep-alive clients (hardening item 5): every response after SIGTERM
says Connection: close, so no client sends a request on a connection that is closing and
gets a reset instead of an answer (RFC 9112 9.6)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.support.processes import ProxyProcess
from tests.support.raw import read_response


async def keep_alive_client(port: int, stop_sending: asyncio.Event, outcome: dict[str, int]) -> None:
    """Sequential requests on one connection until the server says it closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(400):  # bounded in count ...
            writer.write(b"GET /slow/20 HTTP/1.1\r\nHost: a\r\n\r\n")
            await writer.drain()
            try:
                async with asyncio.timeout(10):  # ... and in time
                    status, headers, _ = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                outcome["reset"] += 1  # sent on a connection the server closed without saying so
                return
            outcome[str(status)] = outcome.get(str(status), 0) + 1
            if headers.get("connection", "").lower() == "close":
                outcome["told_to_close"] += 1
                return
            if stop_sending.is_set():
                return
    finally:
        writer.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
async def test_every_response_after_sigterm_says_connection_close(upstream, tmp_path, workers):
    settings = {"workers": workers, "shutdown_timeout": "10s",
                "routes": [{"name": "app", "upstream": upstream.url, "auth": "public"}]}
    proxy = ProxyProcess(settings, tmp_path)
    outcome = {"reset": 0, "told_to_close": 0}
    stop_sending = asyncio.Event()
    try:
        clients = [asyncio.create_task(keep_alive_client(proxy.port, stop_sending, outcome)) for _ in range(8)]
        await asyncio.sleep(0.5)  # every connection busy, a few requests in
        proxy.signal(signal.SIGTERM)
        started = time.monotonic()
        done, pending = await asyncio.wait(clients, timeout=20)
        stop_sending.set()
        assert not pending
        for task in done:
            task.result()
    finally:
        code = proxy.stop()
    assert outcome["reset"] == 0, outcome
    assert outcome["told_to_close"] == 8, outcome  # each connection was told, on a real answer
    assert outcome["200"] >= 8 * 3 and set(outcome) == {"reset", "told_to_close", "200"}, outcome
    assert code == 0 and time.monotonic() - started < 10
