"""ID tokens a real provider would never mint, from a stub provider, through the real
callback: each is refused with a clear 4xx and no session."""

from __future__ import annotations


import aiohttp
import pytest

from tests.support.processes import StubIdpProcess, stub_idp_proxy


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    idp = StubIdpProcess()
    proxy = stub_idp_proxy(upstream.url, idp, tmp_path_factory.mktemp("hostile-tokens"), {})
    yield proxy, idp.url
    proxy.stop()
    idp.stop()


async def attempt(proxy, idp_url, scenario):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.post(f"{idp_url}/scenario", params={"name": scenario}) as response:
            assert response.status == 200
        async with session.get(proxy.url + "/oauth2/start?rd=/app/x", allow_redirects=False) as response:
            authorize = response.headers["Location"]
        async with session.get(authorize, allow_redirects=False) as response:
            callback = response.headers["Location"]
        async with session.get(callback, allow_redirects=False, headers={"Accept": "application/json"}) as response:
            status = response.status
            body = await response.json() if status != 302 else None
        async with session.get(proxy.url + "/app/x", allow_redirects=False, headers={"Accept": "text/html"}) as response:
            signed_in = response.status == 200
    return status, body, signed_in


async def test_good_token_signs_in(setup):
    proxy, idp = setup
    status, _, signed_in = await attempt(proxy, idp, "good")
    assert status == 302 and signed_in


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("alg_none", "unacceptable_algorithm_or_key"),
        ("hs256_public_key", "unacceptable_algorithm_or_key"),
        ("wrong_nonce", "wrong_nonce"),
        ("wrong_aud", "wrong_audience"),
        ("wrong_iss", "wrong_issuer"),
        ("expired", "expired"),
        ("unknown_kid", "unknown_key"),
        ("no_id_token", None),
        ("no_sub", "missing_sub"),
        ("no_iat", "missing_iat"),
    ],
)
async def test_hostile_id_tokens_are_refused(setup, scenario, reason):
    proxy, idp = setup
    status, body, signed_in = await attempt(proxy, idp, scenario)
    assert status == 400
    assert body["error"] == "token_invalid"
    if reason is not None:
        assert reason in body["message"]
    assert not signed_in
