"""A key set's refetches (oidc/jwks.py) while its JWKS endpoint fails: rate-limited by the last
attempt, not the last success, so a stream of unknown kids costs one fetch per interval; the
first load and the callers' own retries still fetch; concurrent unknown kids share one fetch."""

from __future__ import annotations

import asyncio

import pytest

from authproxy.errors import IdpUnavailable
from authproxy.oidc.jwks import JwksCache, read_key_set, verify_with_keys
from authproxy.oidc.verify import TokenRules, UnknownSigningKey
from tests.support.local_issuer import LocalIssuer

NOW = 1_800_000_000
ISS = "https://machines.example.test"
RULES = TokenRules(issuer=ISS, audiences=frozenset({"api"}))


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Endpoint:
    """A JWKS endpoint: the issuer's current keys, or a failure while ``down``; fetches counted."""

    def __init__(self, issuer: LocalIssuer):
        self.issuer = issuer
        self.down = False
        self.fetches = 0
        self.gate: asyncio.Event | None = None  # when set, each fetch waits for it

    async def __call__(self):
        self.fetches += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise IdpUnavailable("jwks", "jwks: HTTP 503")
        return self.issuer.jwks()


def token(issuer: LocalIssuer) -> str:
    return issuer.token({"sub": "robot", "aud": "api", "exp": NOW + 600, "iat": NOW}, typ=None)


def forged(kid: str) -> str:
    return token(LocalIssuer(ISS, kid=kid))  # the issuer's name, a key it never published


async def test_unknown_kids_against_a_failing_endpoint_cost_one_fetch_per_interval():
    issuer = LocalIssuer(ISS)
    endpoint, clock = Endpoint(issuer), Clock()
    cache = JwksCache(endpoint, min_interval=10, clock=clock)
    await cache.load()
    clock.now += 60
    endpoint.down = True
    for n in range(20):  # back to back: single flight does not help here, the interval must
        with pytest.raises(IdpUnavailable):  # an outage, not a verdict on the token
            await verify_with_keys(cache, forged(f"k-{n}"), RULES, NOW)
    assert endpoint.fetches == 2  # the load, and one refetch for twenty unknown kids
    # known kids are still verified from the copy we have
    assert (await verify_with_keys(cache, token(issuer), RULES, NOW)).claims["sub"] == "robot"
    clock.now += 9.9
    with pytest.raises(IdpUnavailable):
        await verify_with_keys(cache, forged("k-late"), RULES, NOW)
    assert endpoint.fetches == 2
    # The interval over and the issuer back with a new key: one refetch, and its tokens pass.
    clock.now += 0.1
    endpoint.down = False
    issuer.rotate("k2")
    assert (await verify_with_keys(cache, token(issuer), RULES, NOW)).kid == "k2"
    assert endpoint.fetches == 3
    # After a refetch that succeeded, an unknown kid within the interval is a plain unknown key.
    with pytest.raises(UnknownSigningKey):
        await verify_with_keys(cache, forged("k-3"), RULES, NOW)
    assert endpoint.fetches == 3


async def test_a_first_load_that_failed_is_not_repeated_per_token_but_an_explicit_load_is():
    issuer = LocalIssuer(ISS)
    endpoint, clock = Endpoint(issuer), Clock()
    endpoint.down = True
    cache = JwksCache(endpoint, min_interval=10, clock=clock)  # e.g. a Cognito pool's other region, never loaded
    for _ in range(5):
        with pytest.raises(IdpUnavailable):
            await verify_with_keys(cache, token(issuer), RULES, NOW)
    assert endpoint.fetches == 1
    # load() is the start-up path and the callers' retries (the provider link's backoff,
    # RemoteKeys after RETRY_AFTER_FAILURE): it fetches whenever it is called.
    with pytest.raises(IdpUnavailable):
        await cache.load()
    endpoint.down = False
    assert await cache.load() is cache.keys and endpoint.fetches == 3
    assert (await verify_with_keys(cache, token(issuer), RULES, NOW)).claims["sub"] == "robot"


async def test_concurrent_tokens_of_a_new_kid_share_the_refetch_under_way():
    issuer = LocalIssuer(ISS)
    endpoint, clock = Endpoint(issuer), Clock()
    cache = JwksCache(endpoint, min_interval=10, clock=clock)
    await cache.load()
    clock.now += 60
    issuer.rotate("k2")
    endpoint.gate = asyncio.Event()
    first = asyncio.create_task(verify_with_keys(cache, token(issuer), RULES, NOW))
    while endpoint.fetches < 2:  # until the refetch has started (and set its attempt time)
        await asyncio.sleep(0)
    others = [asyncio.create_task(verify_with_keys(cache, token(issuer), RULES, NOW)) for _ in range(5)]
    for _ in range(3):
        await asyncio.sleep(0)  # let them reach the refetch under way
    endpoint.gate.set()
    verified = await asyncio.gather(first, *others)
    assert all(each.kid == "k2" for each in verified)  # none refused for a kid the fetch under way brings
    assert endpoint.fetches == 2


def test_read_key_set_keeps_the_usable_keys_and_names_what_it_skipped(caplog):
    import logging

    issuer = LocalIssuer(ISS)
    odd = {"kty": "OKP", "crv": "Ed-unknown", "x": "AAAA", "kid": "odd"}
    document = {"keys": [odd, *issuer.jwks().as_dict()["keys"]]}
    reported: set = set()
    with caplog.at_level(logging.WARNING, logger="authproxy"):
        for _ in range(3):
            keys = read_key_set(document, "https://machines.example.test/keys", reported)
            assert [key.kid for key in keys] == ["k1"]
    skipped = [record.fields for record in caplog.records if record.getMessage() == "jwks_key_skipped"]
    assert len(skipped) == 1 and skipped[0]["kid"] == "odd" and skipped[0]["kty"] == "OKP"
    with pytest.raises(IdpUnavailable, match="no usable key"):
        read_key_set({"keys": document["keys"][:1]}, "https://machines.example.test/keys", reported)


async def test_the_provider_client_skips_an_unsupported_key_too():
    from aiohttp import ClientSession, web
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    from authproxy.oidc.client import IdentityProviderClient
    from authproxy.oidc.endpoints import from_discovery

    signing = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
    document = {"keys": [{"kty": "AKP", "alg": "ML-DSA-65", "pub": "AAAA", "kid": "pq-1"},
                         {"kty": "EC", "crv": "P-999", "x": "AAAA", "y": "AAAA", "kid": "odd"},
                         signing.as_dict(private=False)]}

    async def keys(_request):
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/keys", keys)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        endpoints = from_discovery({"issuer": ISS, "authorization_endpoint": ISS + "/authorize",
                                    "token_endpoint": ISS + "/token", "jwks_uri": base + "/keys"}, ISS, {})
        async with ClientSession() as http:
            client = IdentityProviderClient(http, endpoints, client_id="web", client_secret=None,
                                            client_auth="client_secret_post")
            await client.jwks.load()
            signed = jwt.encode({"alg": "RS256", "kid": "rsa-1"},
                                {"iss": ISS, "sub": "robot", "aud": "api", "exp": NOW + 600}, signing)
            assert (await client.verify(signed, RULES, NOW))["sub"] == "robot"
    finally:
        await runner.cleanup()
