"""OpenID Connect Back-Channel Logout 1.0 end to end: the real oidc-provider (its
backchannelLogout feature) posts logout tokens to two real authproxy replicas sharing a
DynamoDB table (moto_server); `authproxy store init` upgrades a table of an earlier release."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import subprocess
import sys
import time

import aiohttp
import boto3
import pytest
from joserfc import jws
from joserfc.jwk import RSAKey

from authproxy.oidc.logout import BACKCHANNEL_LOGOUT_EVENT
from authproxy.session.cookies import SessionTicket
from tests.support.moto import MotoServer
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, sign_in_at_provider
from tests.support.processes import ROOT, ProxyProcess, child_env, free_port

TABLE = "backchannel-sessions"
# The provider's own signing key, given to it, so the tests can also sign tokens exactly as it would.
PROVIDER_KEY = RSAKey.generate_key(2048, parameters={"kid": "provider-rsa", "alg": "RS256", "use": "sig"}, private=True)
SECOND_TTL = 1.0  # the second replica's cache TTL: how long it may still serve an ended session


def settings(public, provider, upstream, endpoint, cache_ttl):
    return {
        "public_url": public,
        "oidc": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                 "scopes": ["openid", "email", "profile"]},
        "session": {"secrets": ["e" * 40]},
        "store": {"backend": "dynamodb", "cache": {"ttl": cache_ttl},
                  "dynamodb": {"table": TABLE, "region": "eu-west-1", "endpoint_url": endpoint, "create_table": True}},
        "routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": upstream.url, "auth": "login"}],
    }


@pytest.fixture(scope="module")
def site(upstream, tmp_path_factory):
    moto = MotoServer()
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = OidcProvider([f"{public}/oauth2/callback"], [f"{public}/"],
                            backchannel_logout_uri=f"{public}/oauth2/backchannel_logout",
                            jwks={"keys": [PROVIDER_KEY.as_dict(private=True)]})
    workdir = tmp_path_factory.mktemp("backchannel")
    first = ProxyProcess(settings(public, provider, upstream, moto.url, "30s"), workdir, name="first", port=port)
    second = ProxyProcess(settings(public, provider, upstream, moto.url, f"{SECOND_TTL}s"), workdir, name="second")
    yield first, second, provider, moto, public
    for process in (first, second, provider, moto):
        process.stop()


def browser():
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})


async def sign_in_on(session, proxy, public, user="alice"):
    """Sign in through ``proxy``: the callback (registered at ``public``) is completed on it."""
    session.cookie_jar.clear(lambda morsel: morsel.key == "authproxy")  # else the callback ends that session
    async with session.get(proxy.url + "/oauth2/start", params={"rd": "/app/x"}, allow_redirects=False) as response:
        assert response.status == 302
        authorize = response.headers["Location"]
    callback = await sign_in_at_provider(session, authorize, user, public + "/oauth2/callback")
    async with session.get(proxy.url + callback[len(public):], allow_redirects=False) as response:
        assert response.status == 302, await response.text()
    return next(morsel.value for morsel in session.cookie_jar if morsel.key == "authproxy")


async def status(proxy, cookie):
    async with aiohttp.ClientSession() as client:
        async with client.get(proxy.url + "/oauth2/userinfo", headers={"Cookie": f"authproxy={cookie}"}) as response:
            return response.status


async def refused_within(proxy, cookie, seconds):
    """Poll until ``proxy`` refuses ``cookie``; how long that took."""
    started = time.monotonic()
    while await status(proxy, cookie) != 401:
        assert time.monotonic() - started < seconds, f"still accepted after {seconds}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def accepted_after_a_store_read(proxy, cookie, seconds=SECOND_TTL + 3):
    """Poll until ``proxy`` has read ``cookie``'s session from the store again (its cache
    entry lapsed: a cache miss counted), the cookie accepted at every step."""
    misses = proxy.metric("authproxy_session_cache_misses_total")
    started = time.monotonic()
    while True:
        assert await status(proxy, cookie) == 200
        if proxy.metric("authproxy_session_cache_misses_total") > misses:
            return
        assert time.monotonic() - started < seconds, f"no store read after {seconds}s"
        await asyncio.sleep(0.05)


def stored(moto, cookie):
    client = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=moto.url)
    key = SessionTicket.parse(cookie).key
    return client.get_item(TableName=TABLE, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")


async def post_logout(proxy, body, content_type="application/x-www-form-urlencoded", method="POST"):
    async with aiohttp.ClientSession() as client:
        async with client.request(method, proxy.url + "/oauth2/backchannel_logout", data=body,
                                  headers={"Content-Type": content_type}, allow_redirects=False) as response:
            return response.status, response.headers, await response.text()


def sign(claims, header=None, key=PROVIDER_KEY):
    protected = {"alg": "RS256", "kid": key.kid, "typ": "logout+jwt", **(header or {})}
    return jws.serialize_compact(protected, json.dumps(claims).encode(), key)


def logout_claims(provider, **changes):
    now = int(time.time())
    values = {"iss": provider.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120, "jti": secrets.token_urlsafe(12),
              "sub": "alice", "events": {BACKCHANNEL_LOGOUT_EVENT: {}}}
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def payload(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def test_ending_the_session_at_the_provider_ends_it_on_both_replicas(site):
    first, second, provider, moto, public = site
    async with browser() as one, browser() as other:
        here = await sign_in_on(one, first, public)
        there = await sign_in_on(one, second, public)  # the same provider session, on the other replica
        elsewhere = await sign_in_on(other, first, public)  # alice in another browser: another provider session
        for cookie in (here, there, elsewhere):
            assert await status(first, cookie) == 200 and await status(second, cookie) == 200  # cached on both
            assert stored(moto, cookie)["sid_hash"]["S"] and stored(moto, cookie)["sub_hash"]["S"]
        sent, delivered = len(provider.logout_tokens), provider.events.count("backchannel.success")
        await provider.end_session(one)  # "Yes, sign me out": the provider posts the logout token, awaits our 200

    assert await provider.settled_events("backchannel.success", delivered + 1) == delivered + 1
    token = provider.logout_tokens[sent]  # (read from the same pipe, before the event line)
    claims = payload(token)
    assert claims["sid"] and claims["sub"] == "alice" and "nonce" not in claims
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["typ"] == "logout+jwt"
    # At once on the replica the provider called (its own cache dropped), within its
    # cache TTL on the other; the store holds neither.
    assert await status(first, here) == 401 and await status(first, there) == 401
    assert await refused_within(second, here, SECOND_TTL + 3) <= SECOND_TTL + 3
    assert await refused_within(second, there, SECOND_TTL + 3) <= SECOND_TTL + 3
    assert stored(moto, here) is None and stored(moto, there) is None
    # The other provider session of the same user is not the one that ended.
    assert stored(moto, elsewhere) is not None
    assert await status(first, elsewhere) == 200 and await status(second, elsewhere) == 200
    assert first.metric("authproxy_backchannel_logouts_total", outcome="success") >= 1
    assert first.metric("authproxy_backchannel_logout_sessions_ended_total") >= 2
    # Nothing that names the session or the user reaches the logs.
    records = [record for record in first.log_records() if record.get("event") == "backchannel_logout"]
    assert records and all(record["outcome"] == "success" for record in records)
    logs = first.logs() + second.logs()
    for secret in (token, claims["sid"], claims["jti"], here, there, here.split(".")[1]):
        assert secret not in logs
    assert "alice" not in json.dumps(records)


async def test_a_replayed_logout_token_changes_nothing_on_any_replica(site):
    first, second, provider, moto, public = site
    async with browser() as person:
        before = await sign_in_on(person, first, public)
        # A logout of every session of the user (sub only, no sid), signed with the provider's key.
        token = sign(logout_claims(provider))
        code, headers, body = await post_logout(first, {"logout_token": token})
        assert (code, body) == (200, "") and headers["Cache-Control"] == "no-store"
        assert "Set-Cookie" not in headers and "Location" not in headers
        assert await status(first, before) == 401
        after = await sign_in_on(person, first, public)  # signed in again
        assert await status(first, after) == 200 and await status(second, after) == 200
        for replica in (first, second):  # the replay fails on the replica that took it, and on the other one
            code, headers, body = await post_logout(replica, {"logout_token": token})
            assert code == 400 and headers["Cache-Control"] == "no-store"
            assert json.loads(body) == {"error": "invalid_request", "error_description": "this logout token was already used"}
        # A token the provider itself sent, replayed, is refused the same way.
        if provider.logout_tokens:
            code, _, body = await post_logout(second, {"logout_token": provider.logout_tokens[0]})
            assert code == 400 and json.loads(body)["error"] == "invalid_request"
        assert stored(moto, after) is not None
        await accepted_after_a_store_read(second, after)  # past its cache: the store still has it
        assert await status(first, after) == 200
    assert first.metric("authproxy_backchannel_logouts_total", outcome="replayed") >= 1
    assert second.metric("authproxy_backchannel_logouts_total", outcome="replayed") >= 1


async def test_unsigned_or_wrongly_addressed_tokens_change_nothing(site):
    first, second, provider, moto, public = site
    async with browser() as person:
        cookie = await sign_in_on(person, first, public)
    stranger = RSAKey.generate_key(2048, parameters={"kid": PROVIDER_KEY.kid}, private=True)
    unsigned_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"logout+jwt"}').rstrip(b"=").decode()
    unsigned_body = base64.urlsafe_b64encode(json.dumps(logout_claims(provider)).encode()).rstrip(b"=").decode()
    tokens = {
        "unsigned": f"{unsigned_header}.{unsigned_body}.",
        "another key": sign(logout_claims(provider), key=stranger),
        "another client": sign(logout_claims(provider, aud="another-client")),
        "another issuer": sign(logout_claims(provider, iss="https://op.example.test")),
        "no logout event": sign(logout_claims(provider, events=None)),
        "a nonce": sign(logout_claims(provider, nonce="n")),
        "typed as another JWT": sign(logout_claims(provider), header={"typ": "at+jwt"}),
        "expired": sign(logout_claims(provider, iat=int(time.time()) - 900, exp=int(time.time()) - 600)),
        "neither sub nor sid": sign(logout_claims(provider, sub=None)),
        "no jti": sign(logout_claims(provider, jti=None)),
        "not a JWT": "not-a-token",
    }
    for replica in (first, second):
        for name, token in tokens.items():
            code, headers, body = await post_logout(replica, {"logout_token": token})
            assert code == 400, name
            assert headers["Cache-Control"] == "no-store" and "Set-Cookie" not in headers, name
            answer = json.loads(body)
            assert answer["error"] == "invalid_request" and answer["error_description"], name
        for body, content_type in (({"token": tokens["another client"]}, None),  # no logout_token
                                   ("logout_token=a&logout_token=b", None),  # two of them
                                   (json.dumps({"logout_token": tokens["another client"]}), "application/json")):
            code, headers, text = await post_logout(replica, body, content_type or "application/x-www-form-urlencoded")
            assert code == 400 and json.loads(text)["error"] == "invalid_request"
        code, headers, _ = await post_logout(replica, None, method="GET")
        assert code == 405 and headers["Allow"] == "POST" and "Location" not in headers
    assert stored(moto, cookie) is not None
    await accepted_after_a_store_read(second, cookie)
    assert await status(first, cookie) == 200
    assert first.metric("authproxy_backchannel_logouts_total", outcome="invalid_token") >= len(tokens)
    assert "Traceback" not in first.logs() + second.logs()


async def test_a_logout_token_typed_jwt_is_taken_as_untyped(site):
    """Keycloak before its 2024 fix (keycloak/keycloak#28939) sent logout tokens with typ
    "JWT": they end the sessions like untyped ones (the events claim and the absent nonce still
    keep other JWTs out)."""
    first, second, provider, moto, public = site
    async with browser() as person:
        cookie = await sign_in_on(person, first, public, user="jwt-typed")
    assert await status(first, cookie) == 200
    token = sign(logout_claims(provider, sub="jwt-typed"), header={"typ": "JWT"})
    code, _, body = await post_logout(first, {"logout_token": token})
    assert (code, body) == (200, "")
    assert stored(moto, cookie) is None and await status(first, cookie) == 401


def test_store_init_adds_the_indexes_to_an_older_table(tmp_path):
    moto = MotoServer()
    try:
        client = boto3.client("dynamodb", region_name="eu-west-1", endpoint_url=moto.url)
        client.create_table(TableName="older", AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
        config = tmp_path / "c.yaml"
        config.write_text(
            "store: {backend: dynamodb, dynamodb: {table: older, region: eu-west-1, endpoint_url: '%s'}}\n"
            "routes: [{name: a, upstream: 'http://127.0.0.1:1', auth: public}]\n" % moto.url
        )
        for _ in range(2):  # the upgrade, then nothing left to do
            result = subprocess.run([sys.executable, "-m", "authproxy", "store", "init", "--config", str(config)],
                                    cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            assert "table older is ready" in result.stdout and "sid_hash-index, sub_hash-index" in result.stdout
        table = client.describe_table(TableName="older")["Table"]
        assert sorted(index["IndexName"] for index in table["GlobalSecondaryIndexes"]) == ["sid_hash-index", "sub_hash-index"]
    finally:
        moto.stop()
