"""authproxy as Envoy's ext_authz HTTP service (and Istio's envoyExtAuthzHttp provider), driven
with the exact requests Envoy sends, under the shipped deploy/envoy/envoy.yaml's settings
(tests/support/envoy.py models Envoy's side from its source; no Envoy binary exists here)."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from tests.support.envoy import EnvoyExtAuthz
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider
from tests.support.processes import ROOT, ProxyProcess, free_port

SESSION_SECRET = "envoy-ext-authz-session-secret-0123456789"
ENVOY = EnvoyExtAuthz(ROOT / "deploy" / "envoy" / "envoy.yaml")
HOST = "app.example.test"
SPOOFED = [("X-Auth-Request-Email", "ceo@example.com"), ("X-Forwarded-User", "ceo"), ("X-Authproxy-Assertion", "forged"),
           ("X-User-Email", "ceo@example.com"), ("X-Amzn-Oidc-Identity", "ceo"), ("X-HTTP-Method-Override", "DELETE")]


@pytest.fixture(scope="module")
def stack(upstream, tmp_path_factory):
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    proxy = ProxyProcess(
        {
            "public_url": public,
            "trusted_proxies": ["127.0.0.1/32"],
            "forward_auth": {"callers": ["127.0.0.1/32"]},  # Envoy
            "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": "${EA_CLIENT_SECRET}",
                     "scopes": ["openid", "email", "profile", "groups"]},
            "session": {"secrets": ["${EA_SESSION_SECRET}"]},
            "routes": [  # the upstream is Envoy's business on this path: never contacted by authproxy
                {"name": "public", "match": {"path_prefix": "/public"}, "upstream": upstream.url, "auth": "public"},
                {"name": "admins", "match": {"path_prefix": "/admins"}, "upstream": upstream.url, "auth": "login",
                 "allow": {"groups": ["admins"]}, "inject": {"Authorization": "Bearer {access_token}"}},
                {"name": "cors", "match": {"path_prefix": "/cors"}, "upstream": upstream.url, "auth": "login",
                 "skip_auth_preflight": True},
                {"name": "posts", "match": {"path_prefix": "/posts", "methods": ["POST"]}, "upstream": upstream.url,
                 "auth": "login", "inject": {"X-User-Email": "{claims.email}"}},
                {"name": "app", "match": {"path_prefix": "/"}, "upstream": upstream.url, "auth": "login",
                 "inject": {"Authorization": "Bearer {access_token}", "X-User-Email": "{claims.email}"}},
            ],
        },
        tmp_path_factory.mktemp("envoy"),
        port=port,
        env={"EA_CLIENT_SECRET": CLIENT_SECRET, "EA_SESSION_SECRET": SESSION_SECRET},
    )
    yield proxy, provider
    proxy.stop()
    provider.stop()


async def session_cookie(proxy, user: str) -> str:
    """``authproxy=<ticket>`` for ``user``, signed in at authproxy directly."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, headers={"Accept": "text/html"}) as browser:
        async with browser.get(proxy.url + "/app/x", allow_redirects=False) as response:
            start = response.headers["Location"]
        async with browser.get(start, allow_redirects=False) as response:
            authorize = response.headers["Location"]
        callback = await sign_in_at_provider(browser, authorize, user, proxy.url + "/oauth2/callback")
        async with browser.get(callback, allow_redirects=False) as response:
            assert response.status == 302
    cookie = jar.filter_cookies(URL(proxy.url))["authproxy"]
    return f"authproxy={cookie.value}"


async def check(proxy, method, path, headers, *, local="127.0.0.1"):
    """Envoy's check request for a client's ``method path`` with ``headers``; the answer."""
    method, check_path, sent = ENVOY.check_request(method, path, HOST, headers)
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as envoy:
        async with envoy.request(method, URL(proxy.url + check_path, encoded=True), headers=sent,
                                 allow_redirects=False, skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent")) as response:
            return response.status, list(response.headers.items()), await response.text()


def named(headers, name):
    return [value for key, value in headers if key.lower() == name.lower()]


async def test_allowed_request_reaches_the_app_with_our_identity_and_none_of_the_clients(stack):
    proxy, provider = stack
    alice = await session_cookie(proxy, "alice")
    client = [("Cookie", f"{alice}; theme=dark"), ("Accept", "application/json"), ("X-Forwarded-Proto", "https"),
              ("User-Agent", "curl/8"), *SPOOFED]
    status, answer, _ = await check(proxy, "GET", "/app/x?a=1", client)
    assert status == 200
    assert named(answer, "Cache-Control") == ["no-store"]
    app = ENVOY.upstream_request_headers(client, answer)
    assert named(app, "Authorization")[0].startswith("Bearer ") and named(app, "X-User-Email") == ["alice@example.com"]
    assert named(app, "X-Auth-Request-User") == ["alice"] and named(app, "X-Auth-Request-Email") == ["alice@example.com"]
    assert named(app, "Cookie") == ["theme=dark"]  # the session ticket stays with authproxy
    for name, value in SPOOFED:
        assert (name, value) not in app, name  # the client's identity headers never reach the app
    assert named(app, "User-Agent") == ["curl/8"]  # everything else passes as sent


async def test_only_our_cookie_means_no_cookie_and_a_post_is_checked_as_a_post(stack):
    proxy, _ = stack
    alice = await session_cookie(proxy, "alice")
    client = [("Cookie", alice), ("Accept", "application/json")]
    status, answer, _ = await check(proxy, "POST", "/posts/1", client)
    assert status == 200
    app = ENVOY.upstream_request_headers(client, answer)
    assert not named(app, "Cookie") and named(app, "X-User-Email") == ["alice@example.com"]
    status, _, _ = await check(proxy, "DELETE", "/posts/1", client)  # the posts route admits POST only,
    assert status == 200  # so the catch-all login route decides: alice may
    status, _, _ = await check(proxy, "DELETE", "/posts/1", [("Accept", "application/json")])
    assert status == 401


async def test_denials_for_browsers_api_clients_and_the_wrong_group(stack):
    proxy, _ = stack
    status, answer, _ = await check(proxy, "GET", "/admins/x?a=1", [("Accept", "text/html"), ("X-Forwarded-Proto", "https")])
    assert status == 302  # Envoy passes a denial on as it is: the browser goes to sign in
    location = named(answer, "Location")[0]
    assert location.startswith(proxy.url + "/oauth2/start?rd=")
    assert quote(f"https://{HOST}/admins/x?a=1", safe="") in location
    status, answer, body = await check(proxy, "GET", "/admins/x", [("Accept", "application/json")])
    assert status == 401 and named(answer, "WWW-Authenticate")[0].startswith("Bearer ")
    bob = await session_cookie(proxy, "bob")
    status, _, body = await check(proxy, "GET", "/admins/x", [("Cookie", bob), ("Accept", "application/json")])
    assert status == 403 and "admins" in body
    status, _, _ = await check(proxy, "GET", "/public/x", [("Accept", "application/json")])
    assert status == 200


async def test_a_client_that_is_not_a_caller_learns_only_whether_it_is_signed_in(stack):
    proxy, _ = stack
    alice = await session_cookie(proxy, "alice")
    status, answer, _ = await check(proxy, "GET", "/admins/x", [("Cookie", alice)], local="127.0.0.2")
    assert status == 200 and named(answer, "X-Auth-Request-User") == ["alice"]
    assert not named(answer, "Authorization") and not named(answer, "X-Envoy-Auth-Headers-To-Remove")


async def test_the_prefix_must_be_literal(stack):
    proxy, _ = stack
    async with aiohttp.ClientSession() as envoy:
        async with envoy.get(URL(proxy.url + "/oauth2//envoy/app/x", encoded=True)) as response:
            assert response.status == 400


async def test_cors_preflights_pass_where_the_route_lets_them(stack):
    proxy, _ = stack
    preflight = [("Origin", "https://other.example.test"), ("Access-Control-Request-Method", "POST")]
    status, answer, _ = await check(proxy, "OPTIONS", "/cors/x", preflight)
    assert status == 200 and not named(answer, "X-Auth-Request-User")
    status, _, _ = await check(proxy, "OPTIONS", "/app/x", [*preflight, ("Accept", "application/json")])
    assert status == 401  # elsewhere a preflight is a request like any other
