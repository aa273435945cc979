"""Bearer routes accepting access tokens from several issuers (issue 14 item 3), through a real
authproxy process: two real oidc-provider instances (people: the oidc section's provider;
machines: a bearer issuer of its own) and moto's Cognito user pool (a cognito bearer issuer),
plus a third oidc-provider nobody configured. Every call the proxy makes to a provider goes
through a counting forward proxy (HTTP_PROXY), so "refused without a network call" is
counted at the providers' side of the wire, not inferred.
"""

from __future__ import annotations

import base64
import json
import time

import aiohttp
import boto3
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from tests.support.counting_proxy import CountingProxy
from tests.support.moto import MotoServer
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import ProxyProcess, free_port

API = "https://orders.example.test"
OTHER_API = "https://other.example.test"
REDIRECT = "http://127.0.0.1:1/oauth2/callback"  # never contacted
PASSWORD = "Secret-Passw0rd!"
ASSERTION_KEY = ECKey.generate_key("P-256").as_pem(private=True).decode()
RESOURCES = {API: {"scope": "orders/read orders/write", "accessTokenTTL": 600}, OTHER_API: "other/read"}


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def host_of(provider: OidcProvider) -> str:
    return f"127.0.0.1:{provider.port}"


class World:
    def __init__(self, upstream, workdir):
        self._started: list = []  # stopped in reverse, also when start-up fails half-way
        try:
            self._start(upstream, workdir)
        except BaseException:
            self.stop()
            raise

    def _start(self, upstream, workdir):
        self.people = self._keep(OidcProvider([REDIRECT], resources=RESOURCES))
        self.machines = self._keep(OidcProvider([REDIRECT], resources=RESOURCES))
        self.stranger = self._keep(OidcProvider([REDIRECT], resources=RESOURCES))
        self.moto = self._keep(MotoServer())
        cognito = boto3.client("cognito-idp", region_name="eu-west-1", endpoint_url=self.moto.url)
        pool = cognito.create_user_pool(PoolName="authproxy-issuers")["UserPool"]["Id"]
        flows = ["ALLOW_USER_PASSWORD_AUTH"]
        self.app = cognito.create_user_pool_client(UserPoolId=pool, ClientName="app",
                                                   ExplicitAuthFlows=flows)["UserPoolClient"]["ClientId"]
        other = cognito.create_user_pool_client(UserPoolId=pool, ClientName="other",
                                                ExplicitAuthFlows=flows)["UserPoolClient"]["ClientId"]
        cognito.admin_create_user(UserPoolId=pool, Username="carol",
                                  UserAttributes=[{"Name": "email", "Value": "carol@example.com"}])
        cognito.admin_set_user_password(UserPoolId=pool, Username="carol", Password=PASSWORD, Permanent=True)
        cognito.create_group(UserPoolId=pool, GroupName="ops")
        cognito.admin_add_user_to_group(UserPoolId=pool, Username="carol", GroupName="ops")

        def access_token(client_id):
            return cognito.initiate_auth(ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH",
                                         AuthParameters={"USERNAME": "carol", "PASSWORD": PASSWORD},
                                         )["AuthenticationResult"]["AccessToken"]

        self.carol = access_token(self.app)
        self.carol_other_client = access_token(other)
        self.pool_issuer = claims_of(self.carol)["iss"]  # moto names the real AWS host
        self.counting = self._keep(CountingProxy())
        up = upstream.url
        port = free_port()

        def route(name, **extra):
            return {"name": name, "match": {"path_prefix": f"/{name}"}, "upstream": up, "auth": "bearer",
                    "inject": {"X-Iss": "{iss}", "X-Sub": "{sub}"}, **extra}

        self.proxy = self._keep(ProxyProcess(
            {
                "public_url": f"http://127.0.0.1:{port}",
                "forward_auth": {"callers": ["127.0.0.1/32"]},
                "assertion": {"signing_keys": ["${TEST_ASSERTION_KEY}"]},
                "oidc": {"issuer": self.people.issuer, "client_id": "authproxy", "client_secret": "unused-secret",
                         "audiences": [API]},
                "bearer_issuers": [
                    # discovery gives the JWKS location; only the machine client's tokens pass
                    {"name": "machines", "issuer": self.machines.issuer, "audiences": [API],
                     "allowed_client_ids": ["machine"]},
                    {"name": "pool", "provider": "cognito", "issuer": self.pool_issuer,
                     "jwks_uri": f"{self.moto.url}/{pool}/.well-known/jwks.json", "allowed_client_ids": [self.app]},
                ],
                "routes": [
                    route("people"),  # the default: the oidc provider's tokens only
                    route("machines", bearer_issuers=["machines"]),
                    route("both", bearer_issuers=["oidc", "machines", "pool"], assertion=True),
                    route("pool-only", bearer_issuers=["oidc", "pool"], allow={"issuers": ["pool"]}),
                ],
            },
            workdir,
            port=port,
            env={**self.counting.env(), "TEST_ASSERTION_KEY": ASSERTION_KEY},
        ))
        self._tokens: dict[str, str] = {}

    def _keep(self, server):
        self._started.append(server)
        return server

    async def token(self, which: str) -> str:
        """Real access tokens, minted once: alice and bob from the people provider's code flow,
        the machine client's from each oidc-provider's client_credentials grant."""
        if which not in self._tokens:
            async with aiohttp.ClientSession() as http:
                if which in ("alice", "bob"):
                    token = await self.people.user_access_token(http, which, API, "orders/read")
                elif which == "machine":
                    token = (await self.machines.client_credentials_token(http, API, "orders/read"))["access_token"]
                elif which == "machine-other-api":
                    token = (await self.machines.client_credentials_token(http, OTHER_API, "other/read"))["access_token"]
                else:
                    assert which == "stranger"
                    token = (await self.stranger.client_credentials_token(http, API, "orders/read"))["access_token"]
            self._tokens[which] = token
        return self._tokens[which]

    def stop(self):
        while self._started:
            self._started.pop().stop()


@pytest.fixture(scope="module")
def world(upstream, tmp_path_factory):
    built = World(upstream, tmp_path_factory.mktemp("bearer-issuers"))
    yield built
    built.stop()


async def call(world, path, token, url=None):
    async with aiohttp.ClientSession() as http, http.get(
        (url or world.proxy.url) + path, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        body = await response.text()
        return response.status, response.headers, body


def echoed(body: str) -> dict[str, str]:
    return {name.lower(): value for name, value in json.loads(body)["headers"]}


def idp_calls(proxy) -> float:
    return proxy.metric("authproxy_idp_request_duration_seconds_count")


async def test_a_route_accepting_one_issuer_refuses_the_other_issuer_s_valid_token(world):
    alice, machine, carol = await world.token("alice"), await world.token("machine"), world.carol
    assert (await call(world, "/people/x", alice))[0] == 200  # each token is valid where its issuer is accepted
    assert (await call(world, "/machines/x", machine))[0] == 200
    for path, token in (("/people/x", machine), ("/people/x", carol), ("/machines/x", alice), ("/machines/x", carol)):
        status, headers, body = await call(world, path, token)
        assert status == 401, (path, body)
        assert headers["WWW-Authenticate"] == ('Bearer realm="authproxy", error="invalid_token", '
                                               'error_description="wrong_issuer"')
        assert token not in body


async def test_a_route_accepting_several_issuers_takes_each_with_its_iss_injected(world):
    cases = ((await world.token("alice"), world.people.issuer, "alice"),
             (await world.token("machine"), world.machines.issuer, "machine"),
             (world.carol, world.pool_issuer, claims_of(world.carol)["sub"]))
    for token, issuer, sub in cases:
        status, _, body = await call(world, "/both/x", token)
        assert status == 200, body
        headers = echoed(body)
        assert headers["x-iss"] == issuer and headers["x-sub"] == sub
        assert "authorization" not in headers  # the client's token stays with the proxy
    assert world.proxy.metric("authproxy_auth_total", route="both", outcome="bearer") >= 3


async def test_an_unknown_issuer_is_refused_without_a_network_call(world):
    token = await world.token("stranger")  # valid, signed by a real provider nobody configured
    assert claims_of(token)["iss"] == world.stranger.issuer
    before = idp_calls(world.proxy)
    for path in ("/both/x", "/people/x", "/machines/x"):
        status, headers, _ = await call(world, path, token)
        assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert 'error_description="wrong_issuer"' in headers["WWW-Authenticate"]
    assert world.counting.to(host_of(world.stranger)) == []  # nothing asked of its issuer: no discovery, no JWKS
    assert idp_calls(world.proxy) == before  # nor of any other provider
    # The proxy does reach the providers it was told about, through the same counting proxy.
    assert "/.well-known/openid-configuration" in world.counting.to(host_of(world.people))
    assert "/.well-known/openid-configuration" in world.counting.to(host_of(world.machines))


async def test_each_issuer_s_own_rules(world):
    status, headers, _ = await call(world, "/machines/x", await world.token("machine-other-api"))
    assert status == 401 and 'error_description="wrong_audience"' in headers["WWW-Authenticate"]
    status, headers, _ = await call(world, "/both/x", world.carol_other_client)  # not in the pool's allowed_client_ids
    assert status == 401 and 'error_description="wrong_client"' in headers["WWW-Authenticate"]


async def test_allow_rules_name_the_issuer(world):
    status, _, body = await call(world, "/pool-only/x", await world.token("alice"))
    assert status == 403 and "requires an identity from: pool" in json.loads(body)["message"]
    assert (await call(world, "/pool-only/x", world.carol))[0] == 200


async def test_forward_auth_and_the_assertion_work_for_any_issuer(world):
    machine = await world.token("machine")
    async with aiohttp.ClientSession() as http:
        async with http.get(world.proxy.url + "/oauth2/auth", headers={
            "X-Original-URI": "/both/x", "X-Original-Method": "GET", "Authorization": f"Bearer {machine}",
        }) as response:
            assert response.status == 200
            assert response.headers["X-Auth-Request-User"] == "machine"
            assert response.headers["X-Iss"] == world.machines.issuer
            assert "X-Authproxy-Assertion" in response.headers
        async with http.get(world.proxy.url + "/oauth2/auth", headers={
            "X-Original-URI": "/both/x", "X-Original-Method": "GET", "Authorization": f"Bearer {world.carol}",
        }) as response:
            # the pool's groups claim (cognito:groups), not the oidc provider's (groups)
            assert response.status == 200 and response.headers["X-Auth-Request-Groups"] == "ops"
        async with http.get(world.proxy.url + "/.well-known/authproxy/jwks.json") as response:
            keys = KeySet.import_key_set(await response.json())
    status, _, body = await call(world, "/both/x", world.carol)
    assert status == 200
    assertion = jwt.decode(echoed(body)["x-authproxy-assertion"], keys, algorithms=["ES256"]).claims
    # the pool's groups come from its own groups claim (cognito:groups), not the oidc provider's (groups)
    assert assertion["sub"] == claims_of(world.carol)["sub"] and assertion["groups"] == ["ops"]
    assert assertion["aud"] == "both" and abs(assertion["iat"] - time.time()) < 30


async def test_keys_are_fetched_once_per_issuer_and_verified_tokens_are_cached(world):
    machine = await world.token("machine")
    await call(world, "/machines/x", machine)
    hits = world.proxy.metric("authproxy_verified_token_cache_hits_total")
    fetched = len(world.counting.requests)
    for _ in range(10):
        assert (await call(world, "/machines/x", machine))[0] == 200
    assert world.proxy.metric("authproxy_verified_token_cache_hits_total") - hits == 10
    assert len(world.counting.requests) == fetched  # no provider call per request
    jwks = [path for path in world.counting.to(host_of(world.machines)) if path == "/jwks"]
    assert len(jwks) == 1  # the machines issuer's JWKS, fetched once and kept
