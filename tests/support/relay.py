"""A TCP relay in front of a server, which a test makes slow, silent or cut at chosen moments.

Runs its own event loop in a thread, so it keeps relaying while the test's loop waits.
Modes (``set``):

- ``pass``: bytes go both ways as they come (``delay`` seconds added before each chunk:
  a slow store);
- ``silent``: connections are accepted and read, and nothing goes anywhere (a black
  hole: callers time out), open connections included;
- ``cut``: open connections are reset and new ones are reset on accept (callers see a
  connection failure at once).

``connections`` counts connections accepted (by mode at accept time), so a test can say
how hard a client hit a store that was down.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections import Counter

from tests.support.processes import free_port

MODES = ("pass", "silent", "cut")


class Relay:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int | None = None):
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.mode = "pass"
        self.delay = 0.0
        self.connections: Counter[str] = Counter()
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._run, name=f"relay-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise TimeoutError("relay did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, mode: str, delay: float = 0.0) -> None:
        """Switch mode now (``cut`` resets every open connection before this returns)."""
        assert mode in MODES, mode
        done = threading.Event()

        def switch() -> None:
            self.mode, self.delay = mode, delay
            if mode == "cut":
                for writer in list(self._writers):
                    _reset(writer)
                self._writers.clear()
            done.set()

        self._loop.call_soon_threadsafe(switch)
        if not done.wait(5):
            raise TimeoutError("relay did not switch")

    def stop(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    # --- the loop's side -------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for writer in list(self._writers):
                _reset(writer)
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections[self.mode] += 1
        if self.mode == "cut":
            _reset(writer)
            return
        self._writers.add(writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            _reset(writer)
            return
        self._writers.add(upstream_writer)
        pumps = [asyncio.ensure_future(self._pump(reader, upstream_writer)),
                 asyncio.ensure_future(self._pump(upstream_reader, writer))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for end in (writer, upstream_writer):
            self._writers.discard(end)
            end.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                if self.mode == "silent":
                    continue  # swallowed: the caller waits for an answer that never comes
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.mode != "pass":
                    continue
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            return


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a failed network does, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.close()
