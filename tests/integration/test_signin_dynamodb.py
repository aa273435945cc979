"""Sign-in with sessions in a DynamoDB-compatible table shared by two replicas (moto_server),
`authproxy store init`, encryption at rest, and a store outage."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time

import aiohttp
import boto3
import pytest

from tests.support.signin import sign_in
from tests.support.dynalite import Dynalite
from tests.support.moto import MotoServer
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider
from tests.support.processes import ROOT, ProxyProcess, child_env, free_port
from tests.support.relay import Relay

TABLE = "shared-sessions"


def settings(public, provider, upstream, endpoint, cache_ttl="30s"):
    return {
        "public_url": public,
        "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                 "scopes": ["openid", "email", "profile", "groups", "offline_access"], "authorize_params": {"prompt": "consent"}},
        "session": {"secrets": ["d" * 40]},
        "store": {"backend": "dynamodb", "cache": {"ttl": cache_ttl},
                  "dynamodb": {"table": TABLE, "region": "eu-west-1", "endpoint_url": endpoint, "create_table": True}},
        "routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "login"}],
    }


@pytest.fixture(scope="module")
def replicas(upstream, tmp_path_factory):
    moto = MotoServer()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    workdir = tmp_path_factory.mktemp("dynamodb")
    first = ProxyProcess(settings(public, provider, upstream, moto.url), workdir, name="first", port=port)
    second = ProxyProcess(settings(public, provider, upstream, moto.url, cache_ttl="1s"), workdir, name="second")
    yield first, second, moto, provider
    for process in (first, second, provider, moto):
        process.stop()


def scan(moto):
    client = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=moto.url)
    return client.scan(TableName=TABLE, ConsistentRead=True)["Items"]


async def test_a_session_made_on_one_replica_works_on_the_other_and_is_sealed(replicas):
    first, second, moto, _ = replicas
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser:
        await sign_in(browser, first)
        # cookies are not port-bound: the same browser now talks to the other replica
        async with browser.get(second.url + "/oauth2/userinfo") as response:
            assert response.status == 200 and (await response.json())["sub"] == "alice"
    items = scan(moto)
    assert items and all(set(item) >= {"pk", "sub", "payload", "expires_at", "version"} for item in items)
    dump = repr(items).encode()
    assert b"eyJ" not in dump  # no JWT (the ID token) in the table
    provider_tokens = replicas[3].tokens
    assert provider_tokens and not any(token.encode() in dump for token in provider_tokens)  # nor opaque ones
    assert b"alice@example.com" not in dump  # claims are sealed too; only sub is plain
    cookie_ids = [c.value.split(".")[0] for c in browser.cookie_jar if c.key == "authproxy"]
    assert not any(cookie_id.encode() in dump for cookie_id in cookie_ids)  # the key is a hash of the id


async def test_sign_out_on_one_replica_reaches_the_other_within_its_cache_ttl(replicas):
    first, second, _, _ = replicas
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser:
        await sign_in(browser, first)
        async with browser.get(second.url + "/oauth2/userinfo") as response:
            assert response.status == 200  # now cached on the second replica
        stolen = next(f"authproxy={c.value}" for c in browser.cookie_jar if c.key == "authproxy")
        async with browser.get(first.url + "/oauth2/sign_out", headers={"Sec-Fetch-Site": "same-origin"},
                               allow_redirects=False) as response:
            assert response.status == 302
    async with aiohttp.ClientSession() as thief:  # a copy of the cookie must stop working too
        async with thief.get(first.url + "/oauth2/userinfo", headers={"Cookie": stolen}) as response:
            assert response.status == 401  # at once on the replica that signed out
        await asyncio.sleep(1.2)  # the second replica's cache TTL is 1 s
        async with thief.get(second.url + "/oauth2/userinfo", headers={"Cookie": stolen}) as response:
            assert response.status == 401


async def test_store_outage_cached_sessions_keep_working_others_get_503(upstream, tmp_path):
    moto = MotoServer()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    proxy = ProxyProcess(settings(public, provider, upstream, moto.url), tmp_path, port=port)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser:
            await sign_in(browser, proxy)
            moto.stop()  # the store goes away
            async with browser.get(proxy.url + "/app/page?x=1") as response:
                assert response.status == 200  # served from this replica's cache
        async with aiohttp.ClientSession() as stranger:
            forged = "authproxy=" + "a" * 32 + "." + "b" * 43
            async with stranger.get(proxy.url + "/app/x", headers={"Cookie": forged, "Accept": "application/json"}) as response:
                assert response.status == 503  # cannot be checked: never a silent sign-out
                assert response.headers["Retry-After"] == "5"
                assert (await response.json())["error"] == "session_store_unavailable"
        assert "Traceback" not in proxy.logs()
        assert proxy.metric("authproxy_store_errors_total", backend="dynamodb", operation="get") >= 1  # the outage shows
    finally:
        proxy.stop()
        provider.stop()


async def test_a_store_that_refuses_for_good_is_a_500_not_try_again(upstream, tmp_path):
    """The table is missing (ResourceNotFoundException): retrying cannot help, so the answer
    says so (500, logged with the cause) instead of a 503 "try again" forever."""
    moto = MotoServer()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    config = settings(public, provider, upstream, moto.url)
    config["store"]["dynamodb"]["create_table"] = False  # and nobody ran `authproxy store init`
    proxy = ProxyProcess(config, tmp_path, port=port)
    try:
        async with aiohttp.ClientSession() as stranger:
            cookie = "authproxy=" + "a" * 32 + "." + "b" * 43
            async with stranger.get(proxy.url + "/app/x", headers={"Cookie": cookie, "Accept": "application/json"}) as response:
                assert response.status == 500
                assert "Retry-After" not in response.headers
                assert (await response.json())["error"] == "session_store_rejected"
        assert any(record.get("event") == "store_rejected" and "ResourceNotFoundException" in str(record)
                   for record in proxy.log_records())
    finally:
        proxy.stop()
        provider.stop()
        moto.stop()


async def test_store_outage_and_recovery(upstream, tmp_path):
    """The store stops and comes back (dynalite on disk, same port): no crash, no lost session."""
    store = Dynalite(path=tmp_path / "db")
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    proxy = ProxyProcess(settings(public, provider, upstream, store.url, cache_ttl="1s"), tmp_path, port=port)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser:
            await sign_in(browser, proxy)
            store.stop()
            await asyncio.sleep(1.2)  # the cached copy has expired: the store must answer now
            async with browser.get(proxy.url + "/app/page?x=1", headers={"Accept": "application/json"}) as response:
                assert response.status == 503
            store = Dynalite(path=tmp_path / "db", port=store.port)  # back, with its data
            for _ in range(50):
                async with browser.get(proxy.url + "/app/page?x=1", headers={"Accept": "application/json"}) as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.2)
            assert response.status == 200  # recovered, still signed in
        assert proxy.process.poll() is None and "Traceback" not in proxy.logs()
    finally:
        proxy.stop()
        provider.stop()
        store.stop()


@pytest.mark.timeout(90)
async def test_a_store_known_down_fails_fast_and_is_not_hammered_on_its_way_back(upstream, tmp_path):
    """Issue 13 item 5: the store goes silent (requests time out), then is stopped and
    restarted on disk behind a relay that counts every connection the proxy makes."""
    store = Dynalite(path=tmp_path / "db")
    relay = Relay(store.port)
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"])
    proxy = ProxyProcess(settings(public, provider, upstream, relay.url, cache_ttl="1s"), tmp_path, port=port)

    def stranger():
        return {"Cookie": f"authproxy={secrets.token_urlsafe(24)}.{secrets.token_urlsafe(32)}", "Accept": "application/json"}

    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"}) as browser, \
                aiohttp.ClientSession() as others:
            await sign_in(browser, proxy)
            # a replayed unknown cookie costs one store read, not one per request
            reads = proxy.metric("authproxy_store_operation_duration_seconds_count", backend="dynamodb", operation="get")
            replayed = stranger()
            for _ in range(20):
                async with others.get(proxy.url + "/app/x", headers=replayed) as response:
                    assert response.status == 401
            assert proxy.metric("authproxy_store_operation_duration_seconds_count", backend="dynamodb",
                                operation="get") == reads + 1

            relay.set("silent")  # no answers: every attempt waits for its 2 s timeout
            await asyncio.sleep(1.1)  # past the 1 s cache TTL: the session needs the store now

            async def status_of(headers):
                started = time.perf_counter()
                async with others.get(proxy.url + "/app/x", headers=headers) as response:
                    return response.status, time.perf_counter() - started

            first = await asyncio.gather(*(status_of(stranger()) for _ in range(6)))
            assert {status for status, _ in first} == {503}
            assert proxy.metric("authproxy_store_circuit_open", backend="dynamodb") == 1
            before = sum(relay.connections.values())
            fast = [await status_of(stranger()) for _ in range(50)]
            assert {status for status, _ in fast} == {503}
            latencies = sorted(seconds for _, seconds in fast)
            # Refused at once, not after the store's 2 s timeout; only a request that waits on a probe takes that long.
            assert latencies[len(latencies) // 2] < 1.0 and sum(seconds >= 1.0 for seconds in latencies) <= 3
            assert latencies[-1] < 5.0  # and that one waits for the probe's 2 s timeout, no longer
            assert sum(relay.connections.values()) - before <= 3  # probes, not 150 attempts

            store.stop()  # the store stops and comes back, with its data
            relay.set("pass")
            store = Dynalite(path=tmp_path / "db", port=store.port)
            down_at = time.perf_counter()
            cookie = {"Accept": "application/json"}
            for _ in range(100):
                async with browser.get(proxy.url + "/app/page", headers=cookie) as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.2)
            assert response.status == 200  # still signed in
            recovered = time.perf_counter() - down_at
            assert recovered < 5  # the open period is capped at 1 s
            assert proxy.metric("authproxy_store_circuit_open", backend="dynamodb") == 0
        print(f"first 503s: {max(s for _, s in first):.2f} s; open: median {latencies[25] * 1000:.1f} ms, "
              f"max {latencies[-1] * 1000:.0f} ms; recovered {recovered:.1f} s after restart")
        assert proxy.process.poll() is None and "Traceback" not in proxy.logs()
    finally:
        proxy.stop()
        provider.stop()
        relay.stop()
        store.stop()


@pytest.mark.parametrize("server_kind", ["moto", "dynalite"])
def test_store_init_is_idempotent(tmp_path, server_kind):
    server = MotoServer() if server_kind == "moto" else Dynalite()
    try:
        config = tmp_path / "c.yaml"
        config.write_text(
            "store: {backend: dynamodb, dynamodb: {table: init-test, region: eu-west-1, endpoint_url: '%s'}}\n"
            "routes: [{name: a, upstream: 'http://127.0.0.1:1', auth: public}]\n" % server.url
        )
        for _ in range(2):
            result = subprocess.run([sys.executable, "-m", "authproxy", "store", "init", "--config", str(config)],
                                    cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert "table init-test is ready" in result.stdout
        if server_kind == "dynalite":
            assert "store_ttl_not_enabled" in result.stdout  # dynalite has no TTL: a warning, not a failure
        client = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=server.url)
        assert client.describe_table(TableName="init-test")["Table"]["TableStatus"] == "ACTIVE"
    finally:
        server.stop()
