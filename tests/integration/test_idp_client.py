"""The provider client against the real oidc-provider: discovery, JWKS, code exchange
with PKCE, refresh, revocation, and the ID token checks on real tokens."""

from __future__ import annotations

import time

import aiohttp
import pytest

from authproxy.oidc.client import IdentityProviderClient, IdpRejected, discover
from authproxy.oidc.endpoints import from_discovery
from authproxy.oidc.flow import Transaction, authorization_url
from authproxy.oidc.verify import TokenInvalid, TokenRules
from tests.support.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider, query_of, sign_in_at_provider

REDIRECT_URI = "http://127.0.0.1:1/oauth2/callback"  # never contacted: the test stops at the redirect


@pytest.fixture(scope="module")
def provider():
    server = OidcProvider([REDIRECT_URI])
    yield server
    server.stop()


@pytest.fixture
async def client(provider):
    async with aiohttp.ClientSession() as session:
        endpoints = from_discovery(await discover(session, provider.issuer), provider.issuer, {})
        yield IdentityProviderClient(
            session, endpoints, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, client_auth="client_secret_basic"
        )


async def sign_in(client, user="alice"):
    transaction = Transaction.start("/", int(time.time()))
    url = authorization_url(
        client.endpoints.authorization,
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        scopes=["openid", "email", "profile", "groups", "offline_access"],
        transaction=transaction,
        extra={"prompt": "consent"},
    )
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:  # cookies on an IP host
        back = await sign_in_at_provider(browser, url, user, REDIRECT_URI)
    params = query_of(back)
    assert params["state"] == transaction.state
    return transaction, params


def id_rules(provider, transaction):
    return TokenRules(
        issuer=provider.issuer, audiences=frozenset({CLIENT_ID}), authorized_party=CLIENT_ID, nonce=transaction.nonce
    )


async def test_discovery_endpoints(client, provider):
    endpoints = client.endpoints
    assert endpoints.authorization == provider.issuer + "/auth"
    assert endpoints.token == provider.issuer + "/token"
    assert endpoints.revocation == provider.issuer + "/token/revocation"
    assert endpoints.iss_parameter_supported is True  # oidc-provider sends RFC 9207 iss


async def test_code_flow_tokens_and_claims(client, provider):
    transaction, params = await sign_in(client)
    assert params["iss"] == provider.issuer
    tokens = await client.exchange_code(params["code"], transaction.code_verifier, REDIRECT_URI)
    assert tokens.refresh_token and tokens.id_token and "access_token" not in repr(tokens)
    claims = await client.verify(tokens.id_token, id_rules(provider, transaction), int(time.time()))
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com" and claims["groups"] == ["admins"]


async def test_code_is_single_use_and_bound_to_the_verifier(client, provider):
    transaction, params = await sign_in(client, "bob")
    with pytest.raises(IdpRejected) as caught:
        await client.exchange_code(params["code"], "x" * 64, REDIRECT_URI)  # wrong PKCE verifier
    assert caught.value.error == "invalid_grant"
    assert await client.exchange_code(params["code"], transaction.code_verifier, REDIRECT_URI)
    with pytest.raises(IdpRejected) as caught:
        await client.exchange_code(params["code"], transaction.code_verifier, REDIRECT_URI)  # replayed
    assert caught.value.error == "invalid_grant"


async def test_wrong_nonce_rejected_on_a_real_token(client, provider):
    transaction, params = await sign_in(client)
    tokens = await client.exchange_code(params["code"], transaction.code_verifier, REDIRECT_URI)
    rules = TokenRules(issuer=provider.issuer, audiences=frozenset({CLIENT_ID}), nonce="not-the-nonce")
    with pytest.raises(TokenInvalid) as caught:
        await client.verify(tokens.id_token, rules, int(time.time()))
    assert caught.value.reason == "wrong_nonce"


async def test_refresh_then_revoke(client, provider):
    transaction, params = await sign_in(client)
    tokens = await client.exchange_code(params["code"], transaction.code_verifier, REDIRECT_URI)
    before = provider.grants("refresh_token")
    refreshed = await client.refresh(tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token
    assert await provider.settled_grants("refresh_token", before + 1) == before + 1
    await client.revoke(refreshed.refresh_token or tokens.refresh_token)
    with pytest.raises(IdpRejected) as caught:
        await client.refresh(refreshed.refresh_token or tokens.refresh_token)
    assert caught.value.error == "invalid_grant"


async def test_unknown_kid_refetches_jwks_at_most_once_per_interval(client, provider):
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    transaction, params = await sign_in(client)
    tokens = await client.exchange_code(params["code"], transaction.code_verifier, REDIRECT_URI)
    await client.verify(tokens.id_token, id_rules(provider, transaction), int(time.time()))
    fetches = client.jwks.fetches
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"}, private=True)
    forged = jwt.encode({"alg": "RS256", "kid": "stranger"}, {"iss": provider.issuer, "aud": CLIENT_ID, "exp": 2**31}, stranger)
    rules = TokenRules(issuer=provider.issuer, audiences=frozenset({CLIENT_ID}))
    for _ in range(3):
        with pytest.raises(TokenInvalid):
            await client.verify(forged, rules, int(time.time()))
    assert client.jwks.fetches - fetches <= 1  # one refetch at most, however many unknown kids arrive
