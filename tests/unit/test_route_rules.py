"""Route rules, pure parts: allow rules (table-driven), bearer parsing and rules, the
new configuration keys and their cross-checks, the assertion, service tokens, reload."""

import asyncio
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from authproxy import metrics
from authproxy.config import parse_config
from authproxy.config.schema import Allow, OidcConfig, ServiceToken
from authproxy.errors import ConfigError, IdpUnavailable, ServiceTokenUnavailable
from authproxy.oidc.client import TokenResponse
from authproxy.oidc.service_tokens import ServiceTokens
from authproxy.policy.allow import AllowRule
from authproxy.policy.assertion import AssertionSigner
from authproxy.policy.routes import RouteTable
from authproxy.web.gate import bearer_rules, bearer_token
from authproxy.web.reload import Reloader

ALICE = {"sub": "alice", "email": "Alice@Example.com", "email_verified": True, "cognito:groups": ["admins", "ops"],
         "custom:tenant": "t1", "scope": "orders/read orders/write", "flag": True}
BOB = {"sub": "bob", "email": "bob@other.org", "cognito:groups": [], "custom:tenant": "t9", "scope": "orders/read"}


@pytest.mark.parametrize(
    ("allow", "claims", "denied_with"),
    [
        ({"groups": ["admins"]}, ALICE, None),
        ({"groups": ["admins", "billing"]}, BOB, "membership in one of: admins, billing"),
        ({"groups": ["admins"]}, {"sub": "x"}, "membership"),  # no groups claim at all
        ({"emails": ["alice@example.com"]}, ALICE, None),  # case-insensitive
        ({"emails": ["alice@example.com"]}, BOB, "allowed email"),
        ({"email_domains": ["example.com"]}, ALICE, None),
        ({"email_domains": ["example.com"]}, BOB, "email address in: example.com"),
        ({"email_domains": ["example.com"]}, {**ALICE, "email_verified": False}, "verified"),
        ({"email_domains": ["example.com"]}, {"sub": "x", "email": "x@evil.example.com"}, "email address in"),
        ({"claims": {"custom:tenant": ["t1", "t2"]}}, ALICE, None),
        ({"claims": {"custom:tenant": ["t1", "t2"]}}, BOB, "custom:tenant"),
        ({"claims": {"flag": [True]}}, ALICE, None),
        ({"scopes": ["orders/read", "orders/write"]}, ALICE, None),
        ({"scopes": ["orders/read", "orders/write"]}, BOB, "scope: orders/write"),
        # kinds are ANDed: the group passes, the domain does not
        ({"groups": ["admins"], "email_domains": ["other.org"]}, ALICE, "email address in"),
        ({"groups": ["admins"], "email_domains": ["example.com"], "claims": {"custom:tenant": ["t1"]}}, ALICE, None),
    ],
)
def test_allow_rules(allow, claims, denied_with):
    rule = AllowRule.compile(Allow.model_validate(allow), "cognito:groups")
    denial = rule.check(claims)
    if denied_with is None:
        assert denial is None
    else:
        assert denial is not None and denied_with in denial.reason
        assert claims.get("email", "@@") not in denial.reason  # names the rule, not the user's values


def test_denied_scopes_are_listed_for_the_challenge():
    rule = AllowRule.compile(Allow(scopes=["a", "b", "c"]), "groups")
    assert rule.check({"scope": "b"}).missing_scopes == ("a", "c")


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  tok ", "tok"), ("BEARER tok", "tok"), ("Basic dXNlcg==", None),
     ("Bearer", None), ("Bearer   ", None), ("", None), (None, None)],
)
def test_bearer_token_from_authorization(header, token):
    assert bearer_token(header) == token


def test_bearer_rules_per_provider():
    cognito = bearer_rules(OidcConfig(provider="cognito", issuer="https://i", cognito_domain="https://d",
                                      client_id="web", client_secret="s"))
    assert cognito.client_ids == {"web"} and cognito.token_use == "access" and cognito.audiences is None
    listed = bearer_rules(OidcConfig(provider="cognito", issuer="https://i", cognito_domain="https://d",
                                     client_id="web", client_secret="s", allowed_client_ids=["m1", "m2"]))
    assert listed.client_ids == {"m1", "m2"}
    generic = bearer_rules(OidcConfig(issuer="https://i", client_id="web", client_secret="s", audiences=["https://api"]))
    assert generic.audiences == {"https://api"} and generic.token_type == "at+jwt" and generic.client_ids is None
    lax = bearer_rules(OidcConfig(issuer="https://i", client_id="web", client_secret="s", audiences=["a"],
                                  require_at_jwt=False))
    assert lax.token_type is None


# --- configuration ----------------------------------------------------------------

PEM = ECKey.generate_key("P-256").as_pem(private=True).decode()
SIGN_IN = (
    "public_url: https://app.example.com\n"
    "oidc: {issuer: 'https://idp.example.com', client_id: c, client_secret: s, audiences: ['https://api']}\n"
    "session: {secrets: ['" + "z" * 40 + "']}\n"
)


def config_errors(text, env=None):
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml", env or {})
    return str(caught.value)


def test_every_mode_and_rule_parses():
    text = SIGN_IN + "assertion: {signing_keys: ['${KEY}']}\nreload: watch\nroutes:\n" + "\n".join(
        f"  - {{name: r{index}, match: {{path_prefix: /r{index}}}, upstream: 'http://u', auth: {mode}}}"
        for index, mode in enumerate(["public", "login", "bearer", "login_or_bearer", "optional"])
    ) + (
        "\n  - {name: rules, upstream: 'http://u', auth: bearer, assertion: true,"
        " allow: {groups: [admins], emails: [a@b.c], email_domains: [b.c], claims: {'custom:tenant': [t1]},"
        " scopes: [orders/read]}, service_token: {scopes: [orders/write]}, inject: {X-Svc: '{service_token}'}}"
    )
    config = parse_config(text, "test.yaml", {"KEY": PEM})
    assert [route.auth for route in config.routes][:5] == ["public", "login", "bearer", "login_or_bearer", "optional"]
    assert config.reload == "watch" and config.routes[5].allow.scopes == ["orders/read"]
    assert PEM not in repr(config)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("oidc: {issuer: 'https://i', client_id: c, client_secret: s}\nroutes: [{name: a, upstream: 'http://u', auth: bearer}]",
         "needs oidc.audiences"),
        ("routes: [{name: a, upstream: 'http://u', auth: bearer}]", "needs oidc"),
        ("routes: [{name: a, upstream: 'http://u', auth: optional}]", "needs public_url, oidc, session"),
        ("routes: [{name: a, upstream: 'http://u', auth: sometimes}]", "'sometimes' is not allowed"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: public, allow: {groups: [x]}}]", "allow needs an identity"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, allow: {groups: []}}]", "groups is empty"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, allow: {scopes: [x]}}]", "auth: bearer routes"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, allow: {colours: [x]}}]", "unknown key"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, assertion: true}]", "assertion section"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: public, service_token: {}}]", "anonymous callers"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, inject: {X: '{service_token}'}}]",
         "configure service_token"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, service_token: {client_id: m}}]", "together"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, service_token: {},"
         " inject: {Authorization: 'Bearer {access_token}'}}]", "inject already sets Authorization"),
        (SIGN_IN + "assertion: {signing_keys: ['not a key']}\nroutes: [{name: a, upstream: 'http://u', auth: login}]",
         "signing_keys[0]: not a PEM EC private key"),
        (SIGN_IN + "reload: sometimes\nroutes: [{name: a, upstream: 'http://u', auth: login}]", "reload"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: optional, allow: {groups: [x]}}]", "anonymous callers"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: optional, service_token: {}}]",
         "optional route would lend"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, pass_authorization: true}]",
         "pass_authorization is for bearer and public routes"),
        ("oidc: {issuer: 'https://i', client_id: c, client_secret: s, audiences: [c], require_at_jwt: false}\n"
         "routes: [{name: a, upstream: 'http://u', auth: bearer}]", "ID tokens"),
        (SIGN_IN + "forward_auth: {callers: [nonsense]}\nroutes: [{name: a, upstream: 'http://u', auth: login}]",
         "invalid network"),
        (SIGN_IN + "routes: [{name: a, upstream: 'http://u', auth: login, inject: {Content-Length: '{sub}'}}]",
         "frames the request"),
    ],
)
def test_route_rule_config_errors(text, words):
    assert words in config_errors(text)


def test_service_token_on_public_route_is_allowed_on_loopback_only():
    text = SIGN_IN + "listen: '127.0.0.1:8080'\nroutes: [{name: a, upstream: 'http://u', auth: public, service_token: {}}]"
    route = RouteTable(parse_config(text, "t.yaml", {}).routes).routes[0]
    # no template names it: the machine token goes as Authorization
    assert [(name, "service_token" in template.uses) for name, template in route.injections] == [("Authorization", True)]


# --- assertion --------------------------------------------------------------------


def test_assertion_verifies_with_the_published_keys_and_rotation_keeps_old_verifiers():
    old, new = PEM, ECKey.generate_key("P-256").as_pem(private=True).decode()
    signer = AssertionSigner([new, old], "https://app.example.com", 30)
    now = int(time.time())
    token = signer.sign("orders", "alice", "alice@example.com", ["admins"], now)
    import json

    keys = KeySet.import_key_set(json.loads(signer.jwks_document))
    assert len(keys.keys) == 2 and all("d" not in key.as_dict(private=False) for key in keys.keys)
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    claims = decoded.claims
    assert decoded.header["alg"] == "ES256"
    assert claims["iss"] == "https://app.example.com" and claims["aud"] == "orders"
    assert claims["sub"] == "alice" and claims["groups"] == ["admins"] and claims["email"] == "alice@example.com"
    assert 0 < claims["exp"] - claims["iat"] <= 60
    # a verifier that only knows the old key's JWKS cannot be fooled by a token under the new one...
    old_only = KeySet.import_key_set(json.loads(AssertionSigner([old], "x", 30).jwks_document))
    with pytest.raises(Exception):  # noqa: B017 - joserfc raises its own error types
        jwt.decode(token, old_only, algorithms=["ES256"])
    # ...and one that knows both accepts assertions signed by either
    assert jwt.decode(AssertionSigner([old], "x", 30).sign("r", "s", None, [], now), keys, algorithms=["ES256"])


# --- service tokens ------------------------------------------------------------------


class FakeProvider:
    def __init__(self, expires_in=3600, fail=False):
        self.calls = []
        self.expires_in = expires_in
        self.fail = fail

    async def client_credentials(self, scopes, resource, client_id=None, client_secret=None):
        self.calls.append((tuple(scopes), resource, client_id, client_secret))
        await asyncio.sleep(0.05)
        if self.fail:
            raise IdpUnavailable("token", "token: HTTP 503")
        return TokenResponse(f"machine-{len(self.calls)}", None, None, self.expires_in, "Bearer", " ".join(scopes))


async def test_service_tokens_single_flight_cache_and_renewal():
    provider = FakeProvider(expires_in=100)
    clock = [1000.0]
    tokens = ServiceTokens(lambda: provider, clock=lambda: clock[0])
    spec = ServiceToken(scopes=["orders/write"])
    results = await asyncio.gather(*(tokens.token(spec) for _ in range(20)))
    assert set(results) == {"machine-1"} and len(provider.calls) == 1  # one grant for a burst
    clock[0] += 40  # renews 50 s before expiry at the latest (half of 100 s)
    assert await tokens.token(spec) == "machine-1"
    clock[0] += 15
    assert await tokens.token(spec) == "machine-2"
    other = ServiceToken(scopes=["orders/read"], client_id="m", client_secret="m-secret")
    assert await tokens.token(other) == "machine-3"
    assert provider.calls[-1] == (("orders/read",), None, "m", "m-secret")


async def test_service_token_failures_are_held_briefly_then_retried():
    provider = FakeProvider(fail=True)
    clock = [1000.0]
    tokens = ServiceTokens(lambda: provider, clock=lambda: clock[0])
    with pytest.raises(ServiceTokenUnavailable) as caught:
        await tokens.token(ServiceToken())
    assert not caught.value.rejected  # a 503 from the provider is an outage, not a refusal
    provider.fail = False
    with pytest.raises(ServiceTokenUnavailable):  # within the hold: no new grant per request
        await tokens.token(ServiceToken())
    assert len(provider.calls) == 1
    clock[0] += 6
    assert await tokens.token(ServiceToken()) == "machine-2"


async def test_a_waiter_leaving_does_not_cancel_the_grant_for_the_others():
    provider = FakeProvider()
    tokens = ServiceTokens(lambda: provider)
    leaving = asyncio.create_task(tokens.token(ServiceToken()))
    staying = asyncio.create_task(tokens.token(ServiceToken()))
    await asyncio.sleep(0.01)
    leaving.cancel()
    assert await staying == "machine-1" and len(provider.calls) == 1
    assert await tokens.token(ServiceToken()) == "machine-1"  # and it was cached


# --- reload ----------------------------------------------------------------------------


def reloads(result):
    return metrics.CONFIG_RELOADS.labels(result)._value.get()


def test_reload_applies_valid_files_and_refuses_the_rest(tmp_path):
    path = tmp_path / "config.yaml"
    base = "listen: '127.0.0.1:8080'\nroutes:\n  - {name: a, upstream: 'http://127.0.0.1:1', auth: public}\n"
    path.write_text(base)
    from authproxy.config import load_config

    applied = []
    reloader = Reloader(str(path), load_config(path), lambda config, text: applied.append(config))
    ok, failed = reloads("success"), reloads("failure")
    path.write_text(base + "  - {name: b, upstream: 'http://127.0.0.1:2', auth: public}\n")
    assert reloader.reload("signal") and [route.name for route in applied[-1].routes] == ["a", "b"]
    path.write_text(base + "  - {name: c, upstream: 'not a url', auth: public}\n")
    assert not reloader.reload("signal")
    path.write_text(base.replace("8080", "8081"))  # a new socket needs a restart
    assert not reloader.reload("signal")
    assert len(applied) == 1 and reloader.config.routes[-1].name == "b"
    assert reloads("success") == ok + 1 and reloads("failure") == failed + 2


async def test_reload_watch_notices_a_replaced_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("routes: [{name: a, upstream: 'http://127.0.0.1:1', auth: public}]\n")
    from authproxy.config import load_config

    applied = []
    reloader = Reloader(str(path), load_config(path), lambda config, text: applied.append(config))
    watching = asyncio.create_task(reloader.watch(interval=0.02))
    try:
        replacement = tmp_path / "new.yaml"
        replacement.write_text("routes: [{name: z, upstream: 'http://127.0.0.1:1', auth: public}]\n")
        replacement.rename(path)  # how editors and ConfigMaps replace files
        for _ in range(100):
            if applied:
                break
            await asyncio.sleep(0.02)
        assert applied and applied[0].routes[0].name == "z"
    finally:
        watching.cancel()
