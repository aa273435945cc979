"""Sign-in end to end through a real authproxy process and the real oidc-provider,
driven by an HTTP client through the provider's development login and consent forms."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, query_of, sign_in_at_provider
from tests.support.signin import SESSION_SECRET, setup, sign_in  # noqa: F401 - setup is a fixture

def browser():
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})


async def start(session, proxy, rd="/app/x"):
    """/oauth2/start in this browser; the provider's authorize URL."""
    async with session.get(proxy.url + "/oauth2/start", params={"rd": rd}, allow_redirects=False) as response:
        assert response.status == 302
        return response.headers["Location"]


async def callback_for(session, proxy, user="alice", rd="/app/x"):
    """A sign-in started and completed at the provider; the callback URL, not yet visited."""
    return await sign_in_at_provider(session, await start(session, proxy, rd), user, proxy.url + "/oauth2/callback")


async def test_full_sign_in_session_userinfo_and_sign_out(setup, upstream):
    proxy, provider = setup
    async with browser() as session:
        await sign_in(session, proxy)
        async with session.get(proxy.url + "/app/page?x=1", headers={"Cookie": "theirs=1"}) as response:
            assert response.status == 200
            echo = await response.json()
        cookies = "; ".join(value for name, value in echo["headers"] if name.lower() == "cookie")
        assert "theirs=1" in cookies and "authproxy" not in cookies  # our cookies never go upstream
        async with session.get(proxy.url + "/oauth2/userinfo") as response:
            info = await response.json()
        assert info["sub"] == "alice" and info["email"] == "alice@example.com" and info["groups"] == ["admins"]
        assert "token" not in json.dumps(info)
        # sign out from our own page: session deleted, refresh token revoked, provider logout
        destroyed = provider.events.count("refresh_token.destroyed")
        async with session.get(proxy.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                               allow_redirects=False) as response:
            assert response.status == 302
            location = response.headers["Location"]
        assert location.startswith(provider.issuer + "/session/end?")
        for _ in range(50):  # the provider reports the revocation on its own pipe
            if provider.events.count("refresh_token.destroyed") > destroyed:
                break
            await asyncio.sleep(0.05)
        assert provider.events.count("refresh_token.destroyed") == destroyed + 1
        assert query_of(location)["client_id"] == CLIENT_ID and "id_token_hint" in query_of(location)
        async with session.get(proxy.url + "/app/page", allow_redirects=False) as response:
            assert response.status == 302  # signed out: sent to sign in again
    # the metrics tell the same story
    assert proxy.metric("authproxy_logins_total", result="success") >= 1
    assert proxy.metric("authproxy_logouts_total") >= 1
    assert proxy.metric("authproxy_auth_total", route="app", outcome="session") >= 1
    assert proxy.metric("authproxy_auth_total", route="app", outcome="redirected") >= 1
    assert proxy.metric("authproxy_idp_request_duration_seconds_count", endpoint="token") >= 1
    assert proxy.metric("authproxy_idp_request_duration_seconds_count", endpoint="revocation") >= 1
    assert proxy.metric("authproxy_jwks_refresh_total", result="success") >= 1
    assert proxy.metric("authproxy_session_cache_hits_total") >= 1
    record = await proxy.access_lines(lambda r: r["path"] == "/app/page?x=" and r["status"] == 200)
    assert record and record[0]["user"] == "alice"
    text = proxy.logs()
    assert SESSION_SECRET not in text and CLIENT_SECRET not in text
    assert provider.tokens and not any(token in text for token in provider.tokens)  # no access or refresh token
    assert "eyJ" not in text  # no ID token (a JWT)


SPOOFED = {
    "Authorization": "Bearer EVIL",
    "X-User-Email": "evil@example.com",
    "X_User_Email": "evil@example.com",
    "X-User-Groups": "admins",
    "X-Auth-Request-User": "evil",
    "X-Auth-Request-Email": "evil@example.com",
    "X-Authproxy-Assertion": "evil",
    "X-Forwarded-User": "evil",
    "X-Forwarded-Access-Token": "EVIL",
    "X-Amzn-Oidc-Identity": "evil",
}


@pytest.mark.parametrize("path", ["/app/spoof", "/open/spoof"])
async def test_only_the_proxy_sets_identity_headers(setup, path):
    proxy, provider = setup
    async with browser() as session:
        await sign_in(session, proxy)
        async with session.get(proxy.url + path, headers=SPOOFED) as response:
            assert response.status == 200
            echo = await response.json()
    seen = {}
    for name, value in echo["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert not any("evil" in value.lower() for values in seen.values() for value in values)
    for name in ("x-auth-request-user", "x-auth-request-email", "x-authproxy-assertion", "x-forwarded-user",
                 "x-forwarded-access-token", "x-amzn-oidc-identity", "x-user-email_", "x-missing"):
        assert name not in seen
    if path.startswith("/app"):  # injected from the verified session
        assert seen["x-user-email"] == ["alice@example.com"]
        assert seen["x-user-groups"] == ["admins"]
        scheme, token = seen["authorization"][0].split(" ")
        assert scheme == "Bearer" and await provider.token_printed(token)  # the access token the provider issued
    else:  # a public route injects nothing and passes no client Authorization
        assert "authorization" not in seen and "x-user-email" not in seen and "x-user-groups" not in seen


async def test_api_client_without_session_gets_401(setup):
    proxy, _ = setup
    async with aiohttp.ClientSession() as session:
        unauthorized = proxy.metric("authproxy_auth_total", route="app", outcome="unauthorized")
        async with session.get(proxy.url + "/app/data", headers={"Accept": "application/json"}) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await response.json())["error"] == "unauthorized"
        for _ in range(100):  # counted just after the response leaves
            if proxy.metric("authproxy_auth_total", route="app", outcome="unauthorized") > unauthorized:
                break
            await asyncio.sleep(0.02)
        assert proxy.metric("authproxy_auth_total", route="app", outcome="unauthorized") == unauthorized + 1
        async with session.options(proxy.url + "/app/data", headers={"Origin": "http://x.test",
                                   "Access-Control-Request-Method": "POST"}) as response:
            assert response.status == 200  # this route lets CORS preflights pass unauthenticated
        async with session.options(proxy.url + "/second-host", headers={"Host": "second.test", "Origin": "http://x.test",
                                   "Access-Control-Request-Method": "POST"}) as response:
            assert response.status == 401  # by default a preflight is a request like any other
        async with session.get(proxy.url + "/open/x") as response:
            assert response.status == 200


async def test_replayed_callback_fails_cleanly(setup):
    proxy, provider = setup
    async with browser() as session:
        authorize = await start(session, proxy)
        transaction_cookie = "; ".join(f"{c.key}={c.value}" for c in session.cookie_jar if "-txn-" in c.key)
        callback = await sign_in_at_provider(session, authorize, "bob", proxy.url + "/oauth2/callback")
        async with session.get(callback, allow_redirects=False) as response:
            assert response.status == 302
    grants = await provider.settled_grants("authorization_code", 0)
    # the same response again, with the same transaction cookie: refused before any IdP call
    async with aiohttp.ClientSession() as attacker:
        async with attacker.get(callback, headers={"Cookie": transaction_cookie, "Accept": "application/json"},
                                allow_redirects=False) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "replayed"
    assert provider.grants("authorization_code") == grants


@pytest.mark.parametrize(
    ("mutate", "status", "result"),
    [
        (lambda q: {**q, "state": "forged-state"}, 400, "state_mismatch"),
        (lambda q: {**q, "iss": "http://evil.test"}, 400, "issuer_mismatch"),
        (lambda q: {k: v for k, v in q.items() if k != "iss"}, 400, "issuer_mismatch"),  # promised by discovery (RFC 9207)
        (lambda q: {"state": q["state"], "iss": q["iss"], "error": "access_denied"}, 403, "idp_error"),
    ],
)
async def test_callback_negative_cases(setup, mutate, status, result):
    proxy, provider = setup
    failures = proxy.metric("authproxy_logins_total", result=result)
    async with browser() as session:
        callback = await callback_for(session, proxy)
        params = mutate(query_of(callback))
        grants = await provider.settled_grants("authorization_code", 0)
        async with session.get(proxy.url + "/oauth2/callback", params=params, allow_redirects=False) as response:
            assert response.status == status
            page = await response.text()
        assert "Traceback" not in page
        assert await provider.settled_grants("authorization_code", grants) == grants  # no code exchange
        assert proxy.metric("authproxy_logins_total", result=result) == failures + 1
        async with session.get(proxy.url + "/app/x", allow_redirects=False) as response:
            assert response.status == 302  # no session was created


async def test_missing_transaction_cookie(setup):
    proxy, _ = setup
    async with browser() as session:
        callback = await callback_for(session, proxy)
    async with browser() as other_browser:  # the code arrives in a browser that did not start the sign-in
        async with other_browser.get(callback, allow_redirects=False) as response:
            assert response.status == 400


async def test_parallel_sign_ins_in_one_browser_all_complete(setup):
    proxy, _ = setup
    async with browser() as session:
        authorizes = []
        for target in ("/app/one", "/app/two"):
            async with session.get(proxy.url + "/oauth2/start", params={"rd": target}, allow_redirects=False) as response:
                authorizes.append(response.headers["Location"])
        callbacks = [await sign_in_at_provider(session, url, "alice", proxy.url + "/oauth2/callback") for url in authorizes]
        for callback, target in zip(callbacks, ("/app/one", "/app/two"), strict=True):
            async with session.get(callback, allow_redirects=False) as response:
                assert response.status == 302 and response.headers["Location"] == target


async def test_sign_in_started_on_another_host_lands_back_there(setup):
    proxy, _ = setup
    other = f"second.test:{proxy.port}"
    async with browser() as session:
        async with session.get(proxy.url + "/deep/page?q=1", headers={"Host": other}, allow_redirects=False) as response:
            assert response.status == 302
            start = response.headers["Location"]
        # one callback for every host: the sign-in runs on public_url
        assert start.startswith(proxy.url + "/oauth2/start?")
        assert query_of(start)["rd"] == f"http://{other}/deep/page?q=1"
        async with session.get(start, allow_redirects=False) as response:
            authorize = response.headers["Location"]
        callback = await sign_in_at_provider(session, authorize, "alice", proxy.url + "/oauth2/callback")
        async with session.get(callback, allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Location"] == f"http://{other}/deep/page?q=1"


async def test_open_redirects_become_root(setup):
    proxy, _ = setup
    async with browser() as session:
        callback = await callback_for(session, proxy, rd="https://evil.test/")
        async with session.get(callback, allow_redirects=False) as response:
            assert response.headers["Location"] == "/"


@pytest.mark.parametrize(
    ("headers", "acts"),
    [
        ({"Sec-Fetch-Site": "none"}, True),  # typed into the address bar
        ({"Origin": "ORIGIN"}, True),
        ({"Referer": "ORIGIN/app/page"}, True),
        ({"Origin": "http://evil.test"}, False),
        ({"Referer": "http://evil.test/page"}, False),
        ({}, False),  # no evidence of where it came from: ask
    ],
)
async def test_sign_out_acts_only_for_our_own_pages(setup, headers, acts):
    proxy, _ = setup
    headers = {name: value.replace("ORIGIN", proxy.url) for name, value in headers.items()}
    async with browser() as session:
        await sign_in(session, proxy)
        async with session.get(proxy.url + "/oauth2/sign_out", headers=headers, allow_redirects=False) as response:
            assert response.status == (302 if acts else 200)
            if not acts:
                page = await response.text()
                assert '<form method="post"' in page and response.headers["X-Frame-Options"] == "DENY"
        async with session.get(proxy.url + "/app/page?x=1", allow_redirects=False) as response:
            assert response.status == (302 if acts else 200)
        if not acts:  # the confirmation form's own POST (same origin) does sign out
            async with session.post(proxy.url + "/oauth2/sign_out?rd=/", headers={"Origin": proxy.url},
                                    allow_redirects=False) as response:
                assert response.status == 302
            async with session.get(proxy.url + "/app/page?x=1", allow_redirects=False) as response:
                assert response.status == 302


async def test_session_cookie_attributes_and_relogin_ends_the_old_session(setup):
    proxy, _ = setup
    async with browser() as session:
        async with session.get(proxy.url + "/oauth2/start?rd=/app/x", allow_redirects=False) as response:
            authorize = response.headers["Location"]
            transaction_cookie = next(h for h in response.headers.getall("Set-Cookie") if "-txn-" in h)
        assert "HttpOnly" in transaction_cookie and "SameSite=Lax" in transaction_cookie and "Max-Age=600" in transaction_cookie
        callback = await sign_in_at_provider(session, authorize, "alice", proxy.url + "/oauth2/callback")
        async with session.get(callback, allow_redirects=False) as response:
            set_cookies = response.headers.getall("Set-Cookie")
        session_cookie = next(h for h in set_cookies if h.startswith("authproxy="))
        for attribute in ("HttpOnly", "SameSite=Lax", "Path=/"):
            assert attribute in session_cookie
        old_ticket = session_cookie.split(";")[0]
        assert any("-txn-" in h and "Max-Age=0" in h for h in set_cookies)  # the transaction is cleared
        # signing in again in the same browser (which still sends its current ticket)
        callback = await callback_for(session, proxy)
        async with session.get(callback, allow_redirects=False) as response:
            assert response.status == 302
    async with aiohttp.ClientSession() as thief:
        async with thief.get(proxy.url + "/oauth2/userinfo", headers={"Cookie": old_ticket}) as response:
            assert response.status == 401  # the earlier session ended with the new sign-in


async def test_preflight_reaches_the_upstream_without_a_body(setup):
    proxy, _ = setup
    async with aiohttp.ClientSession() as session:
        async with session.options(proxy.url + "/app/data", data=b"body",
                                   headers={"Origin": "http://x.test", "Access-Control-Request-Method": "POST"}) as response:
            assert response.status == 200
            assert (await response.json())["body_length"] == 0


async def test_many_started_sign_ins_keep_the_cookie_header_small(setup):
    proxy, _ = setup
    async with browser() as session:
        for _ in range(12):
            async with session.get(proxy.url + "/oauth2/start?rd=/app/x", allow_redirects=False) as response:
                authorize = response.headers["Location"]
        pending = [c for c in session.cookie_jar if "-txn-" in c.key and c.value]
        assert len(pending) <= 4
        callback = await sign_in_at_provider(session, authorize, "alice", proxy.url + "/oauth2/callback")
        async with session.get(callback, allow_redirects=False) as response:
            assert response.status == 302  # the newest sign-in still completes


async def test_third_party_sign_out_only_asks(setup):
    proxy, _ = setup
    async with browser() as session:
        await sign_in(session, proxy)
        async with session.get(proxy.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "cross-site"},
                               allow_redirects=False) as response:
            assert response.status == 200 and "<form" in await response.text()
        async with session.get(proxy.url + "/app/page?x=1", allow_redirects=False) as response:
            assert response.status == 200  # still signed in
        assert urlsplit(proxy.url).hostname == "127.0.0.1"
