"""WebSockets on session routes (hardening item 5), through a real authproxy process,
the real oidc-provider and the test upstream's echo socket:

- a socket lives no longer than its session: signed out, or past the session's lifetime,
  it is closed with 1008 within the cache TTL (before: it stayed open);
- a page of another origin cannot open one with the user's cookie (cross-site WebSocket
  hijacking; before: accepted), and a route may name the origins it admits.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider
from tests.support.processes import ProxyProcess, free_port

SESSION_SECRET = "test-session-secret-0123456789-abcdefghij"
CACHE_TTL = 2.0
LIFETIME = 6.0


def start_proxy(upstream, provider, workdir, port, lifetime: float | None = None) -> ProxyProcess:
    public = f"http://127.0.0.1:{port}"
    session = {"secrets": ["${TEST_SESSION_SECRET}"]}
    if lifetime is not None:
        session["lifetime"] = f"{lifetime}s"
    return ProxyProcess(
        {
            "public_url": public,
            "oidc": {"provider": "generic", "issuer": provider.issuer, "client_id": CLIENT_ID,
                     "client_secret": "${TEST_CLIENT_SECRET}", "scopes": ["openid", "email"]},
            "session": session,
            "store": {"cache": {"ttl": f"{CACHE_TTL}s"}},
            "routes": [
                {"name": "partner", "match": {"path_prefix": "/partner"}, "upstream": upstream.url, "strip_prefix": True,
                 "auth": "login", "websocket_origins": ["https://partner.example", "https://*.tenants.example:8443"]},
                {"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "strip_prefix": True,
                 "auth": "login"},
                {"name": "open", "match": {"path_prefix": "/open"}, "upstream": upstream.url, "strip_prefix": True,
                 "auth": "public"},
            ],
        },
        workdir,
        port=port,
        env={"TEST_CLIENT_SECRET": CLIENT_SECRET, "TEST_SESSION_SECRET": SESSION_SECRET},
    )


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    ports = (free_port(), free_port())
    provider = OidcProvider([f"http://127.0.0.1:{port}/oauth2/callback" for port in ports],
                            [f"http://127.0.0.1:{port}/" for port in ports])
    proxy = start_proxy(upstream, provider, tmp_path_factory.mktemp("ws"), ports[0])
    short = start_proxy(upstream, provider, tmp_path_factory.mktemp("ws-short"), ports[1], lifetime=LIFETIME)
    yield proxy, short
    proxy.stop()
    short.stop()
    provider.stop()


def browser():
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})


async def sign_in(session, proxy, user="alice"):
    async with session.get(proxy.url + "/oauth2/start", params={"rd": "/app/"}, allow_redirects=False) as response:
        authorize = response.headers["Location"]
    callback = await sign_in_at_provider(session, authorize, user, proxy.url + "/oauth2/callback")
    async with session.get(callback, allow_redirects=False) as response:
        assert response.status == 302


async def closing_code(ws, within: float) -> tuple[int | None, float]:
    """Wait for the close frame (bounded); its code and when it came."""
    started = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return ws.close_code if message.type is not aiohttp.WSMsgType.CLOSE else message.data, \
                    time.monotonic() - started


async def test_a_signed_out_session_closes_its_sockets_with_1008(setup):
    proxy, _ = setup
    async with browser() as session:
        await sign_in(session, proxy)
        ws = await session.ws_connect(proxy.ws_url + "/app/ws", headers={"Origin": proxy.url}, autoclose=False)
        other = await session.ws_connect(proxy.ws_url + "/app/ws", autoclose=False)  # no Origin: not a browser
        await ws.send_str("ping")
        assert await ws.receive_str(timeout=5) == "ping"
        async with session.get(proxy.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                               allow_redirects=False) as response:
            assert response.status == 302
        for socket in (ws, other):
            code, after = await closing_code(socket, within=CACHE_TTL * 3)
            assert code == 1008 and after <= CACHE_TTL + 1.0
            await socket.close()
    assert "websocket_session_ended" in proxy.logs()


async def test_a_session_past_its_lifetime_closes_its_sockets(setup):
    _, short = setup
    async with browser() as session:
        await sign_in(session, short)
        signed_in = time.monotonic()
        ws = await session.ws_connect(short.ws_url + "/app/ws", autoclose=False)
        await ws.send_str("still here")
        assert await ws.receive_str(timeout=5) == "still here"
        code, _ = await closing_code(ws, within=LIFETIME + CACHE_TTL * 3)
        assert code == 1008
        assert time.monotonic() - signed_in <= LIFETIME + CACHE_TTL + 1.0
        await ws.close()


async def test_a_socket_stays_open_while_its_session_lives(setup):
    proxy, _ = setup
    async with browser() as session:
        await sign_in(session, proxy)
        ws = await session.ws_connect(proxy.ws_url + "/app/ws", autoclose=False)
        # several checks pass (every CACHE_TTL / 2) while the session lives
        deadline = time.monotonic() + CACHE_TTL * 1.5
        while time.monotonic() < deadline:
            await ws.send_str("x")
            assert await ws.receive_str(timeout=5) == "x"
            await asyncio.sleep(0.2)  # pacing the client, not synchronising with the proxy
        await ws.close()
        assert ws.close_code == 1000


@pytest.mark.parametrize(
    ("path", "origin", "admitted"),
    [
        ("/app/ws", None, True),  # not a browser
        ("/app/ws", "OWN", True),
        ("/app/ws", "http://127.0.0.1:1", True),  # our host, another port: still ours
        ("/app/ws", "http://evil.example", False),
        ("/app/ws", "http://127.0.0.1.evil.example", False),
        ("/app/ws", "null", False),  # a sandboxed frame or a file
        ("/app/ws", "https://partner.example", False),  # named by another route only
        ("/partner/ws", "https://partner.example", True),
        ("/partner/ws", "https://a.tenants.example:8443", True),
        ("/partner/ws", "https://a.tenants.example", False),  # another port
        ("/partner/ws", "http://partner.example", False),  # another scheme
        ("/partner/ws", "OWN", False),  # the list replaces the default
    ],
)
async def test_only_our_origins_open_sockets_on_session_routes(setup, path, origin, admitted):
    proxy, _ = setup
    headers = {} if origin is None else {"Origin": origin.replace("OWN", proxy.url)}
    async with browser() as session:
        await sign_in(session, proxy)
        if admitted:
            async with session.ws_connect(proxy.ws_url + path, headers=headers) as ws:
                await ws.send_str("hello")
                assert await ws.receive_str(timeout=5) == "hello"
        else:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(proxy.ws_url + path, headers=headers)
            assert caught.value.status == 403


async def test_public_routes_do_not_check_origins(setup):
    proxy, _ = setup
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(proxy.ws_url + "/open/ws", headers={"Origin": "http://evil.example"}) as ws:
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=5) == "hello"
