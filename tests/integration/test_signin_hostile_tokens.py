"""ID tokens a real provider would never mint, from a stub provider, through the real
callback: each is refused with a clear 4xx and no session."""

from __future__ import annotations

import subprocess
import sys

import aiohttp
import pytest

from tests.support.processes import ROOT, ProxyProcess, child_env, free_port, wait_for_port


@pytest.fixture(scope="module")
def setup(upstream, tmp_path_factory):
    idp_port = free_port()
    idp = subprocess.Popen([sys.executable, "-m", "tests.peers.stub_idp", "--port", str(idp_port)], cwd=ROOT, env=child_env())
    wait_for_port(idp_port, process=idp)
    port = free_port()
    proxy = ProxyProcess(
        {
            "public_url": f"http://127.0.0.1:{port}",
            "oidc": {"issuer": f"http://127.0.0.1:{idp_port}", "client_id": "stub-client", "client_auth": "none"},
            "session": {"secrets": ["x" * 40]},
            "routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "login"}],
        },
        tmp_path_factory.mktemp("hostile-tokens"),
        port=port,
    )
    yield proxy, f"http://127.0.0.1:{idp_port}"
    proxy.stop()
    idp.terminate()
    idp.wait(10)


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
