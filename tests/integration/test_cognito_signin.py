"""The Cognito profile against the development provider in a user pool's layout (hosted UI
on one origin, the issuer with the pool id as its path on another, the updated issuer form
on a third), refresh token rotation on with grace 0, through a real authproxy process.

Each test checks both sides: what the provider sends (it imitates Cognito, see
tests/unit/test_dev_idp.py) and what authproxy does with it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest

from authproxy.demo import idp as dev_idp
from tests.support.processes import ProxyProcess, free_port
from tests.support.forms import Forms

POOL = "eu-west-1_DevPool1"
SECRET = "dev+secret/with=plus"  # Cognito custom secrets may hold '+': sent as Cognito documents, never %2B
SESSION_SECRET = "cognito-session-secret-0123456789-abcdef"


class ProviderThread:
    """The development provider on its own event loop in a thread, for a module of tests."""

    def __init__(self, clients, **options):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            dev_idp.start(clients, port=0, pool_id=POOL, announce=lambda _: None, **options), self.loop
        ).result(15)
        self.idp = self.server.idp
        self.refreshes = 0
        grant = self.idp._refresh_grant

        def counted(client, form):
            self.refreshes += 1
            return grant(client, form)

        self.idp._refresh_grant = counted

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)
        self.loop.close()


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def provider():
    ports = [free_port() for _ in range(2)]
    publics = [f"http://127.0.0.1:{port}" for port in ports]
    clients = [
        dev_idp.WebClient("web", SECRET, [f"{p}/oauth2/callback" for p in publics], [f"{p}/" for p in publics],
                          refresh_token_rotation=True, rotation_grace_period=0),
        dev_idp.WebClient("no-revoke", SECRET, [f"{p}/oauth2/callback" for p in publics], [f"{p}/" for p in publics],
                          refresh_token_rotation=True, revocation_enabled=False),
    ]
    thread = ProviderThread(clients, access_token_lifetime=2)  # short: refreshes are due within a second
    thread.ports = ports
    yield thread
    thread.stop()


def proxy_config(provider, port, upstream, **oidc):
    public = f"http://127.0.0.1:{port}"
    email_rule = {"email_domains": ["example.com"]}
    return {
        "public_url": public,
        "oidc": {
            "provider": "cognito",
            "issuer": provider.server.issuer,
            "cognito_domain": provider.server.domain,
            "client_id": "web",
            "client_secret": SECRET,
            **oidc,
        },
        "session": {"secrets": [SESSION_SECRET]},
        "routes": [
            {"name": "verified", "match": {"path_prefix": "/verified"}, "upstream": upstream.url, "auth": "login",
             "allow": email_rule},
            {"name": "any-email", "match": {"path_prefix": "/any-email"}, "upstream": upstream.url, "auth": "login",
             "allow": {**email_rule, "require_verified_email": False}},
            {"name": "app", "match": {"path_prefix": "/"}, "upstream": upstream.url, "auth": "login",
             "inject": {"Authorization": "Bearer {access_token}"}},
        ],
    }


@pytest.fixture(scope="module")
def proxy(provider, upstream, tmp_path_factory):
    """The pool's updated issuer form listed (as a pool on AWS gets it derived); client_secret_post
    at the token endpoint, so the revocation's Basic is Cognito's rule, not the setting."""
    port = provider.ports[0]
    config = proxy_config(provider, port, upstream, issuer_aliases=[provider.server.updated_issuer],
                          client_auth="client_secret_post")
    process = ProxyProcess(config, tmp_path_factory.mktemp("cognito-signin"), port=port)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def strict_proxy(provider, upstream, tmp_path_factory):
    """Only the original issuer, and an app client with token revocation disabled."""
    port = provider.ports[1]
    config = proxy_config(provider, port, upstream, client_id="no-revoke")
    process = ProxyProcess(config, tmp_path_factory.mktemp("cognito-strict"), port=port)
    yield process
    process.stop()


def browser():
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})


async def sign_in(http, proxy, user, path="/app/x"):
    """Through the hosted UI's page (or silently, when its cookie remembers the user)."""
    async with http.get(proxy.url + path) as page:
        if str(page.url).startswith(proxy.url):
            return page.status, await page.text()  # signed in silently
        assert "/oauth2/authorize" in str(page.url), page.url
        form = next(f for f in Forms(await page.text()).forms if ("pick", user) in f["buttons"])
        action = urljoin(str(page.url), form["action"])
    async with http.post(action, data={**form["hidden"], "pick": user}) as back:
        return back.status, await back.text()


async def upstream_token(http, proxy, path="/app/x"):
    async with http.get(proxy.url + path, allow_redirects=False) as response:
        if response.status != 200:
            return response.status, None
        headers = {name.lower(): value for name, value in json.loads(await response.text())["headers"]}
        return 200, headers["authorization"].removeprefix("Bearer ")


async def until_refreshed(provider, http, proxy, times=1):
    """Ask until the provider has answered ``times`` more refreshes; every answer must be 200."""
    target = provider.refreshes + times
    for _ in range(200):
        status, token = await upstream_token(http, proxy)
        assert status == 200, (status, proxy.logs()[-3000:])
        if provider.refreshes >= target:
            return token
        await asyncio.sleep(0.05)
    raise AssertionError("no refresh happened")


async def test_sign_in_with_a_plus_in_the_secret_and_refreshes_under_rotation_grace_zero(provider, proxy):
    async with browser() as http:
        status, _ = await sign_in(http, proxy, "alice")
        assert status == 200, proxy.logs()[-3000:]
        first = (await upstream_token(http, proxy))[1]
        # grace 0: each refresh kills the token it used; reusing one would end the session
        token = await until_refreshed(provider, http, proxy, times=3)
        assert token != first and claims_of(token)["username"] == "alice"


async def test_a_pool_switched_to_the_updated_issuer_keeps_sessions_and_sign_ins(provider, proxy):
    provider.idp.issuer_format = "original"
    async with browser() as http, browser() as later:
        assert (await sign_in(http, proxy, "alice"))[0] == 200
        assert claims_of((await upstream_token(http, proxy))[1])["iss"] == provider.server.issuer
        provider.idp.issuer_format = "updated"  # the pool is switched (UpdateUserPool IssuerConfiguration)
        try:
            token = await until_refreshed(provider, http, proxy)  # the refreshed ID token names the updated issuer
            assert claims_of(token)["iss"] == provider.server.updated_issuer
            status, _ = await sign_in(later, proxy, "bob")  # and a new sign-in verifies against its JWKS
            assert status == 200
        finally:
            provider.idp.issuer_format = "original"


async def test_an_issuer_outside_the_pool_ends_the_session_with_a_sign_in_not_503s(provider, strict_proxy):
    provider.idp.issuer_format = "original"
    async with browser() as http:
        assert (await sign_in(http, strict_proxy, "alice"))[0] == 200
        provider.idp.issuer_format = "updated"  # not configured here: outside the accepted issuers
        try:
            for _ in range(200):
                status, _ = await upstream_token(http, strict_proxy)
                assert status in (200, 302), strict_proxy.logs()[-3000:]
                if status == 302:
                    break
                await asyncio.sleep(0.05)
            assert status == 302  # a clear re-sign-in
            assert any(r.get("reason") == "wrong_issuer" for r in strict_proxy.log_records())
        finally:
            provider.idp.issuer_format = "original"


async def test_email_rules_want_email_verified_and_a_route_may_opt_out(provider, proxy):
    async with browser() as carol, browser() as alice:
        assert (await sign_in(carol, proxy, "carol"))[0] == 200  # federated: email_verified absent
        async with carol.get(proxy.url + "/verified/x") as response:
            assert response.status == 403 and "verified email" in await response.text()
        async with carol.get(proxy.url + "/any-email/x") as response:
            assert response.status == 200
        assert (await sign_in(alice, proxy, "alice"))[0] == 200
        async with alice.get(proxy.url + "/verified/x") as response:
            assert response.status == 200


async def test_sign_out_revokes_with_basic_and_says_so(provider, proxy):
    async with browser() as http:
        assert (await sign_in(http, proxy, "alice"))[0] == 200
        async with http.get(proxy.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                            allow_redirects=False) as response:
            location = response.headers["Location"]
        # Cognito's /logout, not RP-initiated logout (the discovery's end_session_endpoint is that path)
        assert location.startswith(provider.server.domain + "/logout?")
        assert parse_qs(urlsplit(location).query)["client_id"] == ["web"]
    logouts = [r for r in proxy.log_records() if r.get("message") == "logout" or r.get("event") == "logout"]
    assert logouts and logouts[-1]["refresh_token_revoked"] == "yes", logouts


async def test_a_refused_revocation_is_counted_and_logged(provider, strict_proxy):
    provider.idp.issuer_format = "original"
    before = strict_proxy.metric("authproxy_idp_errors_total", endpoint="revocation")
    async with browser() as http:
        assert (await sign_in(http, strict_proxy, "bob"))[0] == 200
        async with http.get(strict_proxy.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                            allow_redirects=False) as response:
            assert response.status == 302
    assert strict_proxy.metric("authproxy_idp_errors_total", endpoint="revocation") == before + 1
    logouts = [r for r in strict_proxy.log_records() if "refresh_token_revoked" in r]
    assert logouts[-1]["refresh_token_revoked"] == "no"


async def test_the_hosted_ui_cookie_makes_a_new_sign_in_silent(provider, proxy):
    async with browser() as http:
        assert (await sign_in(http, proxy, "alice"))[0] == 200
        http.cookie_jar.clear(lambda cookie: cookie.key != "cognito")  # our session ends; Cognito's does not
        async with http.get(proxy.url + "/app/again") as response:
            assert response.status == 200 and str(response.url) == proxy.url + "/app/again"  # no page shown


async def test_a_provider_error_without_state_is_shown(proxy):
    async with aiohttp.ClientSession() as http, http.get(
        proxy.url + "/oauth2/callback", params={"error": "invalid_scope", "error_description": "x"},
        headers={"Accept": "application/json"},
    ) as response:
        body = await response.json()
    assert response.status == 403 and body["error"] == "idp_error" and "invalid_scope" in body["message"]
