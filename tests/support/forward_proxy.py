"""An HTTP forward proxy for tests of HTTPS_PROXY/HTTP_PROXY: CONNECT tunnels and
absolute-form requests, each target recorded in ``targets`` ("host:port")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from urllib.parse import urlsplit


class ForwardProxy:
    def __init__(self) -> None:
        self.targets: list[str] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, avoid: Iterable[int] = ()) -> ForwardProxy:
        """Listen on a free port, never one of ``avoid`` (ports a test has picked but not bound yet)."""
        avoid = set(avoid)
        while True:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            if self.port not in avoid:
                return self
            self._server.close()
            await self._server.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                first = b""
            else:  # absolute-form: servers must accept it as it is (RFC 9112 3.2.2)
                parts = urlsplit(target)
                host, port = parts.hostname or "", str(parts.port or 80)
                first = head
            if host not in ("127.0.0.1", "localhost"):  # tests never leave the machine
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            self.targets.append(f"{host}:{port}")
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            else:
                upstream_writer.write(first)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
