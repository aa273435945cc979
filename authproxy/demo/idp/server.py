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
    """A started provider: ``issuer`` is where it answers; ``close()`` stops it.

    In a pool's layout ``domain`` is the hosted UI's origin (``cognito_domain``), ``issuer``
    the original-form issuer and ``updated_issuer`` the updated form's, each on its own port.
    """

    idp: DevIdp
    runner: web.AppRunner
    issuer: str
    port: int
    domain: str = ""
    updated_issuer: str | None = None
    more_runners: tuple[web.AppRunner, ...] = ()

    async def close(self) -> None:
        for runner in (*self.more_runners, self.runner):
            await runner.cleanup()


async def start(
    clients: Iterable[Client] | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    issuer: str | None = None,
    announce: Callable[[str], None] | None = None,
    pool_id: str | None = None,
    **options: Any,
) -> DevIdpServer:
    """Listen on ``host:port`` (0: a free port) in the running event loop.

    ``issuer`` defaults to ``http://host:port`` with the bound port. With ``pool_id``
    (like ``eu-west-1_DevPool1``), Cognito's layout instead: the hosted UI on
    ``host:port``, the issuer ``http://host:OTHER/{pool_id}`` on a second free port and
    the updated issuer form on a third (``options["issuer_format"]`` picks which one
    new tokens carry). The banner goes to ``announce`` (default: a warning log line),
    once. No access log: authorize URLs carry state and nonce, and nothing of a sign-in
    belongs in logs.
    """
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    origin = f"http://{_url_host(host)}:{bound_port}"
    sockets = [sock]
    if pool_id is not None:
        sockets += [_bind(host, 0), _bind(host, 0)]
        original, updated = (f"http://{_url_host(host)}:{s.getsockname()[1]}/{pool_id}" for s in sockets[1:])
        idp = DevIdp(original, clients if clients is not None else demo_clients(), domain=origin,
                     updated_issuer=updated, **options)
        apps = [idp.app(), idp.issuer_app(), idp.issuer_app()]
    else:
        idp = DevIdp((issuer or origin).rstrip("/"), clients if clients is not None else demo_clients(), **options)
        apps = [idp.app()]
    runners = [web.AppRunner(app, access_log=None) for app in apps]
    try:
        for runner, bound in zip(runners, sockets, strict=True):
            await runner.setup()
            await web.SockSite(runner, bound).start()
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        for bound in sockets:
            bound.close()
        raise
    (announce or LOGGER.warning)(banner(idp.issuer, idp.domain if idp.pool_layout else None))
    return DevIdpServer(idp=idp, runner=runners[0], issuer=idp.issuers["original"], port=bound_port, domain=idp.domain,
                        updated_issuer=idp.issuers.get("updated"), more_runners=tuple(runners[1:]))


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
