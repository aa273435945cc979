"""The real oidc-provider as a source of access tokens for bearer routes: RFC 9068 JWT access
tokens for a resource (client_credentials and a user's code flow), and the old opaque tokens
when no resource is asked for."""

from __future__ import annotations

import time

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.oidc_provider import CLIENT_ID, MACHINE_CLIENT_ID, OidcProvider

API = "https://api.example.test"
REPORTS = "https://reports.example.test"
REDIRECT_URI = "http://127.0.0.1:1/oauth2/callback"  # never contacted


@pytest.fixture(scope="module")
def provider():
    server = OidcProvider(
        [REDIRECT_URI],
        resources={
            API: {"scope": "orders/read orders/write", "accessTokenTTL": 600},
            REPORTS: {"scope": "reports/read", "alg": "ES256"},
        },
        machine_clients=[
            {},  # MACHINE_CLIENT_ID: every resource scope
            {"client_id": "reader", "client_secret": "reader-secret-0123456789", "resource_scopes": {API: "orders/read"}},
        ],
    )
    yield server
    server.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def verified(http, provider, token: str, alg: str) -> tuple[dict, dict]:
    """The header and claims of a JWT access token, its signature checked against the provider's JWKS."""
    async with http.get(provider.jwks_uri) as response:
        keys = KeySet.import_key_set(await response.json())
    decoded = jwt.decode(token, keys, algorithms=[alg])
    return decoded.header, decoded.claims


def is_jwt(token: str) -> bool:
    return token.count(".") == 2


async def test_client_credentials_jwt_for_a_resource(http, provider):
    body = await provider.client_credentials_token(http, API, "orders/read orders/write")
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["scope"] == "orders/read orders/write"
    header, claims = await verified(http, provider, body["access_token"], "RS256")
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header["kid"]
    assert claims["aud"] == API
    assert claims["iss"] == provider.issuer
    assert claims["client_id"] == MACHINE_CLIENT_ID and claims["sub"] == MACHINE_CLIENT_ID
    assert claims["scope"] == "orders/read orders/write"
    assert claims["exp"] - claims["iat"] == 600
    assert abs(claims["iat"] - time.time()) < 60
    assert "email" not in claims  # no user behind a machine token
    assert await provider.settled_grants("client_credentials", 1) >= 1


async def test_client_credentials_es256_resource(http, provider):
    body = await provider.client_credentials_token(http, REPORTS, "reports/read")
    header, claims = await verified(http, provider, body["access_token"], "ES256")
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    assert claims["aud"] == REPORTS and claims["scope"] == "reports/read"


async def test_client_credentials_scopes_and_resources_are_limited_per_client(http, provider):
    body = await provider.client_credentials_token(
        http, API, "orders/read orders/write", client_id="reader", client_secret="reader-secret-0123456789"
    )
    _, claims = await verified(http, provider, body["access_token"], "RS256")
    assert claims["scope"] == "orders/read"  # orders/write is not the reader's
    refused = await provider.client_credentials_token(
        http, REPORTS, "reports/read", client_id="reader", client_secret="reader-secret-0123456789"
    )
    assert refused["error"] == "invalid_target"
    unknown = await provider.client_credentials_token(http, "https://unknown.example.test", "x")
    assert unknown["error"] == "invalid_target"
    wrong_secret = await provider.client_credentials_token(http, API, "orders/read", client_secret="wrong")
    assert wrong_secret["error"] == "invalid_client"


async def test_user_jwt_access_token_carries_the_user(http, provider):
    token = await provider.user_access_token(http, "alice", API, "orders/read")
    header, claims = await verified(http, provider, token, "RS256")
    assert header["typ"] == "at+jwt"
    assert claims["aud"] == API
    assert claims["sub"] == "alice" and claims["client_id"] == CLIENT_ID
    assert claims["scope"] == "orders/read"  # only the resource's scopes; openid etc. are not for the API
    assert claims["email"] == "alice@example.com" and claims["groups"] == ["admins"]
    assert claims["exp"] - claims["iat"] == 600

    bob = await provider.user_access_token(http, "bob", API, "orders/read orders/write")
    _, claims = await verified(http, provider, bob, "RS256")
    assert claims["sub"] == "bob" and claims["email"] == "bob@example.com" and claims["groups"] == []
    assert claims["scope"] == "orders/read orders/write"


async def test_user_token_response_has_an_id_token_that_is_not_an_access_token(http, provider):
    tokens = await provider.user_tokens(http, "alice", API, "orders/read")
    assert is_jwt(tokens["id_token"]) and tokens["refresh_token"]
    header, claims = await verified(http, provider, tokens["id_token"], "RS256")
    assert header.get("typ") != "at+jwt"
    assert claims["aud"] == CLIENT_ID and claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    id_token = await provider.user_id_token(http, "bob")
    _, claims = await verified(http, provider, id_token, "RS256")
    assert claims["aud"] == CLIENT_ID and claims["sub"] == "bob"


async def test_without_resource_access_tokens_stay_opaque(http, provider):
    tokens = await provider.user_tokens(http, "alice")
    access = tokens["access_token"]
    assert not is_jwt(access)
    assert await provider.token_printed(access)  # printed by the peer, as before
    assert set(tokens["scope"].split()) >= {"openid", "email", "groups"}
    async with http.get(provider.issuer + "/me", headers={"Authorization": f"Bearer {access}"}) as response:
        assert response.status == 200
        assert (await response.json())["email"] == "alice@example.com"

    machine = await provider.client_credentials_token(http, None, "")
    assert not is_jwt(machine["access_token"])


async def test_jwt_access_tokens_are_not_printed_as_opaque_tokens(http, provider):
    token = await provider.user_access_token(http, "alice", API, "orders/read")
    _, claims = await verified(http, provider, token, "RS256")
    assert token not in provider.tokens and claims["jti"] not in provider.tokens
