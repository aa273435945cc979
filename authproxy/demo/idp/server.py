"""Running the provider: ``start`` it on a socket (a ``DevIdpServer``), or ``run_dev_idp`` until stopped."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from authproxy.demo.idp.clients import DEFAULT_HOST, DEFAULT_PORT, Client, banner, demo_clients
from authproxy.demo.idp.provider import DevIdp

LOGGER = logging.getLogger("authproxy.demo.idp")  # the same name in every module: one logger for the provider


@dataclass(slots=True)
class DevIdpServer:
    """A started provider: ``issuer`` is where it answers; ``close()`` stops it."""

    idp: DevIdp
    runner: web.AppRunner
    issuer: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(
    clients: Iterable[Client] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    issuer: str | None = None,
    announce: Callable[[str], None] | None = None,
    **options: Any,
) -> DevIdpServer:
    """Listen on ``host:port`` (0: a free port) in the running event loop.

    ``issuer`` defaults to ``http://host:port`` with the bound port. The banner goes to
    ``announce`` (default: a warning log line), once. No access log: authorize URLs
    carry state and nonce, and nothing of a sign-in belongs in logs.
    """
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    issuer = (issuer or f"http://{_url_host(host)}:{bound_port}").rstrip("/")
    idp = DevIdp(issuer, clients if clients is not None else demo_clients(), **options)
    runner = web.AppRunner(idp.app(), access_log=None)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    (announce or LOGGER.warning)(banner(issuer))
    return DevIdpServer(idp=idp, runner=runner, issuer=issuer, port=bound_port)


async def run_dev_idp(
    clients: Iterable[Client] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled), then close. ``options`` as for ``start``."""
    server = await start(clients, host=host, port=port, **options)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await server.close()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
