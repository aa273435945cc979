"""Cognito-shaped tokens from moto's cognito-idp, verified by the same code that
verifies real Cognito tokens (moto's JWKS at /{pool_id}/.well-known/jwks.json).

moto's "iss" names the real AWS host, so the issuer comes from the token's own
claim here; in production it comes from configuration.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request

import boto3
import pytest
from joserfc.jwk import KeySet

from authproxy.oidc.verify import TokenInvalid, TokenRules, verify_token
from tests.support.moto import MotoServer


@pytest.fixture(scope="module")
def cognito():
    server = MotoServer()
    client = boto3.client("cognito-idp", region_name="eu-west-1", endpoint_url=server.url)
    pool = client.create_user_pool(PoolName="authproxy-test")["UserPool"]["Id"]
    app = client.create_user_pool_client(
        UserPoolId=pool, ClientName="web", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    )["UserPoolClient"]["ClientId"]
    client.admin_create_user(
        UserPoolId=pool, Username="alice", UserAttributes=[{"Name": "email", "Value": "alice@example.com"}]
    )
    client.admin_set_user_password(UserPoolId=pool, Username="alice", Password="Secret-Passw0rd!", Permanent=True)
    client.create_group(UserPoolId=pool, GroupName="admins")
    client.admin_add_user_to_group(UserPoolId=pool, Username="alice", GroupName="admins")
    tokens = client.initiate_auth(
        ClientId=app, AuthFlow="USER_PASSWORD_AUTH", AuthParameters={"USERNAME": "alice", "PASSWORD": "Secret-Passw0rd!"}
    )["AuthenticationResult"]
    with urllib.request.urlopen(f"{server.url}/{pool}/.well-known/jwks.json", timeout=10) as response:  # noqa: S310
        jwks = KeySet.import_key_set(json.load(response))
    yield {"client_id": app, "tokens": tokens, "jwks": jwks}
    server.stop()


def unverified_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_id_token_verifies_with_cognito_rules(cognito):
    token = cognito["tokens"]["IdToken"]
    issuer = unverified_claims(token)["iss"]
    rules = TokenRules(issuer=issuer, audiences=frozenset({cognito["client_id"]}), token_use="id")
    claims = verify_token(token, cognito["jwks"], rules, int(time.time()))
    assert claims["cognito:username"] == "alice"
    assert claims["token_use"] == "id" and claims["aud"] == cognito["client_id"]


def test_access_token_verifies_by_client_id_not_aud(cognito):
    token = cognito["tokens"]["AccessToken"]
    claims_seen = unverified_claims(token)
    assert "aud" not in claims_seen  # the Cognito shape this profile exists for
    rules = TokenRules(issuer=claims_seen["iss"], client_ids=frozenset({cognito["client_id"]}), token_use="access")
    assert verify_token(token, cognito["jwks"], rules, int(time.time()))["client_id"] == cognito["client_id"]


@pytest.mark.parametrize(
    ("which", "rules_for", "reason"),
    [
        ("AccessToken", "id", "wrong_audience"),  # an access token is never an ID token
        ("IdToken", "access", "wrong_client"),
        ("IdToken", "other-client", "wrong_audience"),
    ],
)
def test_cognito_rejections(cognito, which, rules_for, reason):
    token = cognito["tokens"][which]
    issuer = unverified_claims(token)["iss"]
    client = cognito["client_id"]
    rules = {
        "id": TokenRules(issuer=issuer, audiences=frozenset({client}), token_use="id"),
        "access": TokenRules(issuer=issuer, client_ids=frozenset({client}), token_use="access"),
        "other-client": TokenRules(issuer=issuer, audiences=frozenset({"someone-else"}), token_use="id"),
    }[rules_for]
    with pytest.raises(TokenInvalid) as caught:
        verify_token(token, cognito["jwks"], rules, int(time.time()))
    assert caught.value.reason == reason


def test_expired_after_an_hour(cognito):
    token = cognito["tokens"]["IdToken"]
    claims = unverified_claims(token)
    rules = TokenRules(issuer=claims["iss"], audiences=frozenset({cognito["client_id"]}), token_use="id")
    with pytest.raises(TokenInvalid) as caught:
        verify_token(token, cognito["jwks"], rules, int(claims["exp"]) + 61)
    assert caught.value.reason == "expired"
