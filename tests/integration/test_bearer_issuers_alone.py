"""Bearer issuers without an oidc section, through a real authproxy process: an API that only
checks access tokens of issuers it names (machines, partners), with no sign-in, no session
and no provider to wait for. Each issuer's keys are fetched as soon as a configuration names
it, at start-up or at a reload, and never hold readiness back.
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest
import yaml

from tests.support.local_issuer import serve_issuers
from tests.support.polling import settled
from tests.support.processes import ProxyProcess, http_get

API = "https://orders.example.test"


def route(name, upstream, **extra):
    return {"name": name, "match": {"path_prefix": f"/{name}"}, "upstream": upstream.url, "auth": "bearer",
            "bearer_issuers": [name], "inject": {"X-Iss": "{iss}", "X-Sub": "{sub}"}, **extra}


async def call_status(http, url):
    async with http.get(url, headers={"Accept": "application/json"}) as response:
        return response.status


async def call(http, url, token=None):
    headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.timeout(60)
async def test_an_api_of_bearer_issuers_alone_warms_their_keys_and_checks_tokens(upstream, tmp_path):
    server, issuers = await serve_issuers(["partners", "vendors"])
    proxy = None
    try:
        proxy = await asyncio.to_thread(ProxyProcess, {
            "forward_auth": {"callers": ["127.0.0.1/32"]},
            "bearer_issuers": [{"name": "partners", "issuer": issuers["partners"].iss, "audiences": [API]}],
            "routes": [route("partners", upstream)],
        }, tmp_path)
        assert http_get(proxy.admin_url + "/readyz")[0] == 200
        assert await settled(lambda: issuers["partners"].fetches, 1) == 1  # warmed, before any token
        async with aiohttp.ClientSession() as http:
            status, seen = await call(http, proxy.url + "/partners/x", issuers["partners"].access_token(API))
            assert status == 200
            headers = dict(seen["headers"])
            assert headers["X-Iss"] == issuers["partners"].iss and headers["X-Sub"] == "machine-1"
            status, body = await call(http, proxy.url + "/partners/x", issuers["partners"].access_token("https://other"))
            assert status == 401 and "(wrong_audience)" in body["message"], body
            status, body = await call(http, proxy.url + "/partners/x", issuers["vendors"].access_token(API))
            assert status == 401 and "(wrong_issuer)" in body["message"], body  # an issuer this route does not name
            status, body = await call(http, proxy.url + "/partners/x")
            assert status == 401, body
            # forward-auth (nginx auth_request) checks the same tokens, answering the caller's headers
            for token, expected in ((issuers["partners"].access_token(API), 200),
                                    (issuers["partners"].access_token("https://other"), 401)):
                async with http.get(proxy.url + "/oauth2/auth", headers={
                    "X-Original-URI": "/partners/x", "X-Original-Method": "GET", "Authorization": f"Bearer {token}",
                }) as response:
                    assert response.status == expected, await response.text()
                    if expected == 200:
                        assert response.headers["X-Iss"] == issuers["partners"].iss
                        assert response.headers["X-Auth-Request-User"] == "machine-1"
            async with http.get(proxy.url + "/oauth2/start") as response:
                assert response.status == 404  # no sign-in without an oidc section
            assert issuers["vendors"].fetches == 0 and issuers["partners"].fetches == 1

            # A reload names a second issuer: its keys are fetched then, not at its first token.
            config = yaml.safe_load(proxy.config_path.read_text())
            config["bearer_issuers"].append({"name": "vendors", "issuer": issuers["vendors"].iss, "audiences": [API]})
            config["routes"].append(route("vendors", upstream))
            proxy.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            proxy.signal(signal.SIGHUP)
            assert await settled(lambda: issuers["vendors"].fetches, 1) == 1
            status, seen = await call(http, proxy.url + "/vendors/x", issuers["vendors"].access_token(API))
            assert status == 200 and dict(seen["headers"])["X-Iss"] == issuers["vendors"].iss
            status, _ = await call(http, proxy.url + "/partners/x", issuers["partners"].access_token(API))
            assert status == 200
            assert issuers["partners"].fetches == 1  # kept across the reload

            # A reload without vendors forgets its keys: named again, they are fetched again.
            def reload(settings):
                proxy.config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
                proxy.signal(signal.SIGHUP)

            without = {**config, "bearer_issuers": config["bearer_issuers"][:1], "routes": config["routes"][:1]}
            reload(without)
            assert await settled(lambda: call_status(http, proxy.url + "/vendors/x"), 404) == 404
            reload(config)
            assert await settled(lambda: issuers["vendors"].fetches, 2) == 2
            status, _ = await call(http, proxy.url + "/vendors/x", issuers["vendors"].access_token(API))
            assert status == 200
        assert issuers["partners"].fetches == 1
    finally:
        if proxy is not None:
            await asyncio.to_thread(proxy.stop)
        await server.cleanup()


@pytest.mark.timeout(60)
async def test_a_reload_can_name_the_first_bearer_issuer(upstream, tmp_path):
    server, issuers = await serve_issuers(["machines"])
    proxy = None
    try:
        proxy = await asyncio.to_thread(ProxyProcess, {
            "routes": [{"name": "open", "match": {"path_prefix": "/open"}, "upstream": upstream.url, "auth": "public"}],
        }, tmp_path)
        config = yaml.safe_load(proxy.config_path.read_text())
        config["bearer_issuers"] = [{"name": "machines", "issuer": issuers["machines"].iss, "audiences": [API]}]
        config["routes"].append(route("machines", upstream))
        proxy.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        proxy.signal(signal.SIGHUP)
        assert await settled(lambda: issuers["machines"].fetches, 1) == 1
        async with aiohttp.ClientSession() as http:
            status, seen = await call(http, proxy.url + "/machines/x", issuers["machines"].access_token(API))
        assert status == 200 and dict(seen["headers"])["X-Iss"] == issuers["machines"].iss
    finally:
        if proxy is not None:
            await asyncio.to_thread(proxy.stop)
        await server.cleanup()


def test_a_bearer_route_without_oidc_must_name_its_issuers(tmp_path):
    from authproxy.config.load import load_config
    from authproxy.errors import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "bearer_issuers": [{"name": "machines", "issuer": "https://machines.example.test", "audiences": [API]}],
        "routes": [{"name": "api", "upstream": "http://127.0.0.1:1", "auth": "bearer"}],
    }))
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    found = [issue.render(raised.value.filename) for issue in raised.value.issues]
    assert any("routes[0].auth" in problem and "bearer_issuers naming issuers" in problem for problem in found), found

    # the proxy answers {proxy_prefix}/ itself (forward-auth), so no route may live there
    path.write_text(yaml.safe_dump({
        "bearer_issuers": [{"name": "machines", "issuer": "https://machines.example.test", "audiences": [API]}],
        "routes": [{"name": "api", "match": {"path_prefix": "/oauth2/api"}, "upstream": "http://127.0.0.1:1",
                    "auth": "bearer", "bearer_issuers": ["machines"]}],
    }))
    with pytest.raises(ConfigError) as raised:
        load_config(path, {})
    found = [issue.render(raised.value.filename) for issue in raised.value.issues]
    assert any("routes[0].match.path_prefix" in problem and "proxy_prefix" in problem for problem in found), found
