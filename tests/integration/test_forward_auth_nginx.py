"""Forward-auth through real nginx running the shipped deploy/nginx/authproxy.conf (only its
addresses changed), with a real authproxy and the real oidc-provider: nginx asks
/oauth2/auth about every request, sends browsers to sign in, and passes the identity and
the access token authproxy returns to the app. Clients cannot forge any of it."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.spoofing import SPOOFED
from tests.support.signin import SESSION_SECRET
from tests.support.nginx import Nginx, deploy_example
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider
from tests.support.processes import ProxyProcess, free_port


@pytest.fixture(scope="module")
def stack(upstream, tmp_path_factory):
    nginx_port = free_port()
    public = f"http://127.0.0.1:{nginx_port}"  # users only ever see nginx
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    proxy = ProxyProcess(
        {
            "public_url": public,
            "trusted_proxies": ["127.0.0.1/32"],  # nginx
            "forward_auth": {"callers": ["127.0.0.1/32"]},
            "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": "${FA_CLIENT_SECRET}",
                     "scopes": ["openid", "email", "profile", "groups", "offline_access"],
                     "authorize_params": {"prompt": "consent"}},
            "session": {"secrets": ["${FA_SESSION_SECRET}"]},
            "routes": [  # upstreams are not contacted on this path: nginx proxies to the app
                {"name": "public", "match": {"path_prefix": "/public"}, "upstream": upstream.url, "auth": "public"},
                {"name": "other-host", "match": {"host": "open.example.test"}, "upstream": upstream.url, "auth": "public"},
                {"name": "readonly", "match": {"path_prefix": "/ro", "methods": ["GET"]}, "upstream": upstream.url,
                 "auth": "public"},
                {"name": "admins", "match": {"path_prefix": "/admin"}, "upstream": upstream.url, "auth": "login",
                 "allow": {"groups": ["admins"]}, "inject": {"Authorization": "Bearer {access_token}"}},
                {"name": "app", "match": {"path_prefix": "/"}, "upstream": upstream.url, "auth": "login",
                 "inject": {"Authorization": "Bearer {access_token}"}},
            ],
        },
        tmp_path_factory.mktemp("forward-auth"),
        env={"FA_CLIENT_SECRET": CLIENT_SECRET, "FA_SESSION_SECRET": SESSION_SECRET},
    )
    nginx = Nginx(deploy_example(authproxy=proxy.url, app=upstream.url), port=nginx_port)
    yield nginx, proxy, provider
    nginx.stop()
    proxy.stop()
    provider.stop()


def browser():
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})


async def sign_in_through_nginx(session, nginx, user, path="/app/x"):
    async with session.get(nginx.url + path, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        start = response.headers["Location"]
    assert start == f"{nginx.url}/oauth2/start?rd={nginx.url}{path}"  # nginx's @signin location
    async with session.get(start, allow_redirects=False) as response:
        assert response.status == 302
        authorize = response.headers["Location"]
    callback = await sign_in_at_provider(session, authorize, user, nginx.url + "/oauth2/callback")
    async with session.get(callback, allow_redirects=False) as response:  # through nginx to authproxy
        assert response.status == 302, await response.text()
        assert response.headers["Location"] == nginx.url + path


def received(echo):
    return {name.lower(): value for name, value in echo["headers"]}


async def test_browser_signs_in_through_nginx_and_the_app_gets_identity_and_token(stack):
    nginx, proxy, provider = stack
    async with browser() as alice:
        await sign_in_through_nginx(alice, nginx, "alice")
        forged = {"X-User": "ceo", "X-Email": "ceo@example.com", "X-Groups": "root", "Authorization": "Bearer forged",
                  **SPOOFED, "Cookie": "app-pref=dark"}
        async with alice.get(nginx.url + "/app/x", headers=forged) as response:
            assert response.status == 200
            headers = received(await response.json())
        for name, value in SPOOFED.items():
            # the headers that mean identity behind this nginx: its own, and those peers set (the
            # app-specific names of other tests do not; nginx cannot remove a whole prefix)
            if name.lower().startswith(("x-auth-request-", "x-forwarded-", "x-amzn-oidc-", "x_")) or name in (
                "Authorization", "X-Authproxy-Assertion"
            ):
                assert headers.get(name.lower()) != value, name
        # the app's own cookie (and the provider's, same host), never authproxy's session ticket
        assert headers["cookie"].endswith("app-pref=dark") and "authproxy" not in headers["cookie"]
        assert headers["x-user"] == "alice" and headers["x-email"] == "alice@example.com"
        assert headers["x-groups"] == "admins"
        assert headers["authorization"].startswith("Bearer ") and headers["authorization"] != "Bearer forged"
        assert await provider.token_printed(headers["authorization"].removeprefix("Bearer "))  # the session's real access token
        async with alice.get(nginx.url + "/admin/x") as response:
            assert response.status == 200
    assert proxy.metric("authproxy_auth_total", route="app", outcome="session") >= 1


async def test_denied_unauthenticated_and_public_through_nginx(stack):
    nginx, proxy, _ = stack
    async with browser() as bob:
        await sign_in_through_nginx(bob, nginx, "bob")
        async with bob.get(nginx.url + "/admin/x") as response:
            assert response.status == 403  # nginx's own 403 page: authproxy said no
    async with aiohttp.ClientSession() as api:
        async with api.get(nginx.url + "/app/x", headers={"Accept": "application/json"}) as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        async with api.get(nginx.url + "/public/x", headers={"X-User": "ceo", "Authorization": "Bearer forged"}) as response:
            assert response.status == 200
            headers = received(await response.json())
        assert "x-user" not in headers and "authorization" not in headers
        async with api.get(nginx.url + "/oauth2/auth") as response:
            assert response.status == 404  # the subrequest location is internal to nginx
    assert proxy.metric("authproxy_auth_total", route="admins", outcome="forbidden") >= 1


# Each header a client could add to describe another request than the one nginx serves. nginx's
# auth_request subrequest carries every header of the client's request; the shipped file sets
# all of them from its own variables, so none of these may change what authproxy checks.
DESCRIPTIONS = [
    {"X-Forwarded-Uri": "/public/x"},
    {"X-Original-URI": "/public/x"},
    {"X-Forwarded-Uri": "/public/x", "X-Original-URI": "/public/x"},
    {"X-Forwarded-Host": "open.example.test"},
    {"X-Forwarded-Uri": "/public/x", "X-Forwarded-Host": "open.example.test"},
]


@pytest.mark.parametrize("forged", DESCRIPTIONS, ids=lambda forged: "+".join(forged))
async def test_a_client_cannot_describe_another_uri_to_nginx(stack, forged):
    nginx, proxy, _ = stack
    async with aiohttp.ClientSession() as api:
        async with api.get(nginx.url + "/admin/secret", headers={"Accept": "application/json", **forged}) as response:
            assert response.status == 401, await response.text()  # checked as /admin/secret: sign in first
            assert "X-Auth-Request-User" not in response.headers


METHODS = [
    {"X-Forwarded-Method": "GET"},
    {"X-Original-Method": "GET"},
    {"X-Forwarded-Method": "GET", "X-Original-Method": "GET"},
]


@pytest.mark.parametrize("forged", METHODS, ids=lambda forged: "+".join(forged))
async def test_a_client_cannot_describe_another_method_to_nginx(stack, forged):
    nginx, proxy, _ = stack
    async with aiohttp.ClientSession() as api:
        async with api.get(nginx.url + "/ro/x", headers={"Accept": "application/json"}) as response:
            assert response.status == 200  # the route is public for GET ...
        async with api.post(nginx.url + "/ro/write", data=b"x", headers={"Accept": "application/json", **forged}) as response:
            assert response.status == 401, await response.text()  # ... and a POST is checked as a POST


@pytest.mark.parametrize("path", ["/oauth2/%61uth", "/oauth2/auth/", "/oauth2//auth", "/oauth2/./auth"])
async def test_forward_auth_is_not_reachable_around_the_internal_location(stack, path):
    """Only nginx's subrequest may describe a request: through the public /oauth2/ location
    a client's description never arrives, so no tokens or verdicts about made-up requests."""
    nginx, proxy, _ = stack
    async with browser() as alice:
        await sign_in_through_nginx(alice, nginx, "alice")
        async with alice.get(nginx.url + path, allow_redirects=False,
                             headers={"X-Forwarded-Uri": "/app/x", "X-Original-URI": "/app/x"}) as response:
            await response.read()
            assert response.status in (400, 401, 404), response.status
            assert "Authorization" not in response.headers and "X-Auth-Request-User" not in response.headers


async def test_method_overrides_never_reach_the_app_through_nginx(stack):
    nginx, _, _ = stack
    overrides = {"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE", "X-Method-Override": "DELETE"}
    async with aiohttp.ClientSession() as api:
        async with api.post(nginx.url + "/public/x", data=b"x", headers=overrides) as response:
            assert response.status == 200
            headers = received(await response.json())
    assert not {name.lower() for name in overrides} & set(headers)
