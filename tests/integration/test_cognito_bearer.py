"""Bearer routes under the Cognito profile, through a real authproxy process, with the
Cognito-shaped access tokens of moto's cognito-idp (no ``aud``; ``client_id`` and
``token_use`` instead). moto's ``iss`` names the real AWS host, so the configured
issuer is taken from a token; the JWKS comes from moto through ``jwks_uri``, and no
request leaves 127.0.0.1.
"""

from __future__ import annotations

import base64
import json

import aiohttp
import boto3
import pytest

from tests.support.moto import MotoServer
from tests.support.processes import ProxyProcess

PASSWORD = "Secret-Passw0rd!"


def claims_of(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def cognito(upstream, tmp_path_factory):
    server = MotoServer()
    client = boto3.client("cognito-idp", region_name="eu-west-1", endpoint_url=server.url)
    pool = client.create_user_pool(PoolName="authproxy-bearer")["UserPool"]["Id"]
    flows = ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    web = client.create_user_pool_client(UserPoolId=pool, ClientName="web", ExplicitAuthFlows=flows)["UserPoolClient"]["ClientId"]
    mobile = client.create_user_pool_client(UserPoolId=pool, ClientName="mobile", ExplicitAuthFlows=flows)["UserPoolClient"]["ClientId"]
    stranger = client.create_user_pool_client(UserPoolId=pool, ClientName="other", ExplicitAuthFlows=flows)["UserPoolClient"]["ClientId"]
    for user, groups in (("alice", ["admins"]), ("bob", [])):
        client.admin_create_user(UserPoolId=pool, Username=user, UserAttributes=[{"Name": "email", "Value": f"{user}@example.com"}])
        client.admin_set_user_password(UserPoolId=pool, Username=user, Password=PASSWORD, Permanent=True)
        for group in groups:
            try:
                client.create_group(UserPoolId=pool, GroupName=group)
            except client.exceptions.GroupExistsException:
                pass
            client.admin_add_user_to_group(UserPoolId=pool, Username=user, GroupName=group)

    def tokens(app, user="alice"):
        return client.initiate_auth(
            ClientId=app, AuthFlow="USER_PASSWORD_AUTH", AuthParameters={"USERNAME": user, "PASSWORD": PASSWORD}
        )["AuthenticationResult"]

    alice = tokens(web)
    issuer = claims_of(alice["AccessToken"])["iss"]
    proxy = ProxyProcess(
        {
            "oidc": {
                "provider": "cognito",
                "issuer": issuer,
                "cognito_domain": server.url,  # unused by bearer routes; required by the profile
                "jwks_uri": f"{server.url}/{pool}/.well-known/jwks.json",
                "client_id": web,
                "client_auth": "none",
                "allowed_client_ids": [web, mobile],
            },
            "routes": [
                {"name": "admin-api", "match": {"path_prefix": "/admin"}, "upstream": upstream.url, "auth": "bearer",
                 "allow": {"groups": ["admins"]}},
                {"name": "api", "match": {"path_prefix": "/api"}, "upstream": upstream.url, "auth": "bearer",
                 "inject": {"X-User": "{claims.username}", "X-Client": "{claims.client_id}",
                            "X-Groups": "{claims.cognito:groups}"}},
            ],
        },
        tmp_path_factory.mktemp("cognito-bearer"),
    )
    yield {"proxy": proxy, "alice": alice, "mobile": tokens(mobile), "stranger": tokens(stranger), "bob": tokens(web, "bob"),
           "web": web, "mobile_id": mobile}
    proxy.stop()
    server.stop()


async def call(proxy, path, token):
    async with aiohttp.ClientSession() as http, http.get(
        proxy.url + path, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        return response.status, response.headers, await response.text()


async def test_cognito_access_tokens_of_allowed_clients_pass(cognito):
    proxy = cognito["proxy"]
    status, _, body = await call(proxy, "/api/x", cognito["alice"]["AccessToken"])
    assert status == 200, body
    headers = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert headers["x-user"] == "alice" and headers["x-client"] == cognito["web"] and headers["x-groups"] == "admins"
    status, _, body = await call(proxy, "/api/x", cognito["mobile"]["AccessToken"])  # listed in allowed_client_ids
    assert status == 200 and json.loads(body)["headers"]
    assert proxy.metric("authproxy_auth_total", route="api", outcome="bearer") == 2


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        (lambda c: c["alice"]["IdToken"], "wrong_client"),  # ID tokens carry aud, not client_id: never access
        (lambda c: c["stranger"]["AccessToken"], "wrong_client"),  # a client of the pool we do not accept
        (lambda c: c["alice"]["RefreshToken"], "malformed"),  # moto's refresh tokens are opaque
    ],
)
async def test_cognito_rejections(cognito, which, reason):
    status, headers, body = await call(cognito["proxy"], "/api/x", which(cognito))
    assert status == 401 and f'error_description="{reason}"' in headers["WWW-Authenticate"]
    assert which(cognito) not in body


async def test_cognito_groups_rule_on_a_bearer_route(cognito):
    proxy = cognito["proxy"]
    assert (await call(proxy, "/admin/x", cognito["alice"]["AccessToken"]))[0] == 200
    status, _, body = await call(proxy, "/admin/x", cognito["bob"]["AccessToken"])
    assert status == 403 and "admins" in json.loads(body)["message"]
