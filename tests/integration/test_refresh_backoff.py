"""After a transient refresh failure the session backs off (issue 17 item 3), through a real
process: while the provider's token endpoint is down, requests keep being served with the
still-valid access token, and the provider is asked again only after a back-off, not once
per request (refresh grants count against a pool's request quota)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.support.processes import StubIdpProcess, stub_idp_proxy

LIFETIME = 8  # seconds; a refresh is due in its second half (refresh_before_expiry clamps to half)


@pytest.fixture
def setup(upstream, tmp_path):
    idp = StubIdpProcess()
    proxy = stub_idp_proxy(upstream.url, idp, tmp_path, {"inject": {"Authorization": "Bearer {access_token}"}})
    yield proxy, idp.url
    proxy.stop()
    idp.stop()


@pytest.mark.timeout(60)
async def test_a_provider_outage_costs_a_few_refresh_grants_not_one_per_request(setup):
    proxy, idp = setup
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(f"{idp}/scenario", params={"name": "good", "expires_in": str(LIFETIME)}) as response:
            assert response.status == 200
        signed_in_at = time.monotonic()
        async with browser.get(proxy.url + "/oauth2/start?rd=/app/x", allow_redirects=False) as response:
            authorize = response.headers["Location"]
        async with browser.get(authorize, allow_redirects=False) as response:
            callback = response.headers["Location"]
        async with browser.get(callback, allow_redirects=False) as response:
            assert response.status == 302
        async with browser.post(f"{idp}/scenario", params={"name": "good", "refresh": "down"}) as response:
            assert response.status == 200
        # the token is due for refresh after half its lifetime, and still valid until its end
        await asyncio.sleep(max(0.0, signed_in_at + LIFETIME / 2 + 0.3 - time.monotonic()))
        served = 0
        # bounded by the token's lifetime, as the proxy records it: in whole seconds from the
        # callback, so up to a second earlier than this clock (taken before the sign-in) says
        while time.monotonic() < signed_in_at + LIFETIME - 1.5:
            async with browser.get(proxy.url + "/app/x", headers={"Accept": "application/json"}) as response:
                assert response.status == 200, await response.text()  # the still-valid token is served
                served += 1
            await asyncio.sleep(0.05)
        async with browser.get(f"{idp}/refreshes") as response:
            attempts = (await response.json())["refreshes"]
    assert served >= 8  # many requests while the refresh fails (about 40 on a quiet machine)...
    assert 1 <= attempts <= 3, attempts  # the first failure starts a back-off (about 0.5-1 s, doubling)
