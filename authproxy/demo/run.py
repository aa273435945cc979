"""``authproxy demo``: the development provider, an echo upstream and authproxy itself,
in one process on loopback, so a new user signs in and sees the injected token arrive.

The routes show each mode: ``/`` needs a sign-in and receives the access token,
``/admin/`` admits the group ``admins`` only and carries the signed assertion,
``/public/`` is open, and ``/api/`` takes bearer tokens (a machine client's
client_credentials token from the provider, or a user's access token).
"""

from __future__ import annotations

import asyncio
import errno
import secrets
import socket
import sys
from dataclasses import dataclass
from typing import TextIO

from joserfc.jwk import ECKey

from authproxy.config.schema import Config, LogConfig
from authproxy.demo import echo, idp
from authproxy.logs import configure_logging

HOST = "127.0.0.1"
OPTIONS = {"proxy": "--port", "idp": "--idp-port", "upstream": "--upstream-port", "admin": "--admin-port"}

DEMO_ACCESS_TOKEN_LIFETIME = 120  # seconds


@dataclass(frozen=True, slots=True)
class DemoPorts:
    proxy: int = 8480
    idp: int = 8481
    upstream: int = 8482
    admin: int = 8483


def choose_port(wanted: int, explicit: bool, taken: set[int]) -> int:
    """The wanted port when free; a default that is busy gives way to a free port
    (an explicitly asked one does not: that is an error the caller reports)."""
    if wanted not in taken and _free(wanted):
        return wanted
    if explicit:
        raise OSError(errno.EADDRINUSE, f"port {wanted} on {HOST} is in use")
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def demo_config(ports: DemoPorts, issuer: str, upstream: str) -> Config:
    public = f"http://{HOST}:{ports.proxy}"
    return Config.model_validate(
        {
            "listen": f"{HOST}:{ports.proxy}",
            "admin_listen": f"{HOST}:{ports.admin}",
            "public_url": public,
            "log": {"level": "warning", "format": "text", "access": False},
            "oidc": {
                "provider": "cognito",
                "issuer": issuer,
                "cognito_domain": issuer,  # the dev provider is both, as Cognito's two hosts would be
                "client_id": idp.DEFAULT_CLIENT_ID,
                "client_secret": idp.DEFAULT_CLIENT_SECRET,
                "scopes": ["openid", "email", "profile"],
                "allowed_client_ids": [idp.DEFAULT_CLIENT_ID, idp.DEFAULT_MACHINE_CLIENT_ID],
            },
            # Fresh per run: a restart signs everyone out, which a demo may do.
            "session": {"secrets": [secrets.token_urlsafe(32)]},
            "store": {"backend": "memory"},
            "assertion": {"signing_keys": [ECKey.generate_key("P-256").as_pem(private=True).decode()]},
            "routes": [
                {"name": "public", "match": {"path_prefix": "/public"}, "upstream": upstream, "auth": "public"},
                {"name": "admins", "match": {"path_prefix": "/admin"}, "upstream": upstream, "auth": "login",
                 "allow": {"groups": ["admins"]}, "assertion": True,
                 "inject": {"X-User-Email": "{claims.email}", "X-User-Groups": "{claims.cognito:groups}"}},
                {"name": "api", "match": {"path_prefix": "/api"}, "upstream": upstream, "auth": "bearer",
                 "allow": {"scopes": ["demo-api/read"]},
                 "inject": {"X-Client-Id": "{claims.client_id}", "X-Scope": "{claims.scope}"}},
                {"name": "app", "match": {"path_prefix": "/"}, "upstream": upstream, "auth": "login",
                 "inject": {"Authorization": "Bearer {access_token}", "X-User-Email": "{claims.email}",
                            "X-User-Groups": "{claims.cognito:groups}", "X-User-Sub": "{sub}"}},
            ],
        }
    )


def injected_headers(config: Config) -> list[str]:
    """The header names the proxy adds on some route: what the echo page shows first."""
    names = [name for route in config.routes for name in route.inject]
    if any(route.assertion for route in config.routes):
        names.append("X-Authproxy-Assertion")
    return list(dict.fromkeys(names))


LINKS = (
    ("Home (sign-in required)", "/"),
    ("Admins only", "/admin/"),
    ("Public", "/public/"),
    ("API (bearer only)", "/api/"),
    ("Sign out", "/oauth2/sign_out"),
)


def instructions(public: str, issuer: str) -> str:
    token = f"{issuer}/oauth2/token"
    return "\n".join(
        [
            "",
            "Demo users (click a name, or type it as both username and password):",
            "  alice  alice@example.com  group admins",
            "  bob    bob@example.com    no group (the admins-only page says 403)",
            "",
            "The bearer API with a machine token:",
            f"  TOKEN=$(curl -s -u {idp.DEFAULT_MACHINE_CLIENT_ID}:{idp.DEFAULT_MACHINE_CLIENT_SECRET} "
            f"-d grant_type=client_credentials -d scope=demo-api/read {token} "
            "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
            f'  curl -H "Authorization: Bearer $TOKEN" {public}/api/',
            "",
            "Access tokens live 2 minutes, so refreshes show. Ctrl-C stops the demo.",
        ]
    )


async def run_demo(ports: DemoPorts, explicit: set[str], out: TextIO = sys.stdout) -> int:
    from authproxy.web.server import serve

    configure_logging(LogConfig(level="warning", format="text", access=False), sys.stderr)
    taken: set[int] = set()
    chosen = {}
    for name in ("proxy", "idp", "upstream", "admin"):
        try:
            chosen[name] = choose_port(getattr(ports, name), name in explicit, taken)
        except OSError as exc:
            print(f"authproxy demo: {exc.strerror}; choose another with {OPTIONS[name]}", file=sys.stderr)
            return 1
        taken.add(chosen[name])
    ports = DemoPorts(**chosen)
    public = f"http://{HOST}:{ports.proxy}"
    clients = idp.demo_clients(redirect_uris=[f"{public}/oauth2/callback"], logout_uris=[f"{public}/"])
    # Two-minute access tokens (Cognito's minimum is five): refreshes show within a demo.
    provider = await idp.start(clients, host=HOST, port=ports.idp, announce=lambda text: print(text, file=out, flush=True),
                               access_token_lifetime=DEMO_ACCESS_TOKEN_LIFETIME)
    try:
        config = demo_config(ports, provider.issuer, f"http://{HOST}:{ports.upstream}")
        upstream_runner, _ = await echo.start_echo(host=HOST, port=ports.upstream,
                                                   title="authproxy demo: what the upstream received",
                                                   links=LINKS, injected=injected_headers(config))
    except BaseException:
        await provider.close()
        raise
    try:
        proxy = asyncio.create_task(serve(config))
        await _until_ready(f"http://{HOST}:{ports.admin}/readyz", proxy)
        print(f"\nOpen {public}/", file=out, flush=True)
        print(instructions(public, provider.issuer), file=out, flush=True)
        return await proxy  # serve() stops on SIGINT (Ctrl-C) or SIGTERM and drains
    finally:
        await upstream_runner.cleanup()
        await provider.close()


async def _until_ready(readyz: str, task: asyncio.Task[int]) -> None:
    """Wait until authproxy answers ready (the provider's keys loaded): only then is
    the printed URL worth opening."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            if task.done():
                task.result()
                raise RuntimeError("authproxy stopped during start-up")
            try:
                async with http.get(readyz) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("authproxy did not become ready")
