"""Bearer tokens from several issuers (issue 14 item 3), in-process: the issuer chosen by
the token's iss among those a route accepts before any key is asked for, each issuer's own
rules and groups claim, allow.issuers, {iss} in templates, and the configuration errors
naming their keys. Real providers (two oidc-provider instances, moto's Cognito) are in
tests/integration/test_bearer_issuers.py."""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from authproxy.config import parse_config
from authproxy.config.schema import Config
from authproxy.config.templates import parse_template
from authproxy.errors import ConfigError
from authproxy.oidc.issuers import Issuer, choose, issuer_rules, table_for
from authproxy.oidc.jwks import JwksCache
from authproxy.policy import decide as d
from authproxy.policy.decide import decide
from authproxy.policy.routes import Route
from authproxy.web.gate import Gate
from tests.support.local_issuer import LocalIssuer

NOW = 1_800_000_000
API = "https://api.example.test"
PEOPLE = LocalIssuer("https://people.example.test")
MACHINES = LocalIssuer("https://machines.example.test")
POOL = LocalIssuer("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123")
POOL_UPDATED = "https://issuer-cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"  # the same pool's other form
STRANGER = LocalIssuer("https://stranger.example.test")
UPSTREAM = "http://127.0.0.1:1"


def person(**changes):
    claims = {"sub": "alice", "aud": API, "exp": NOW + 600, "iat": NOW, "email": "alice@example.com",
              "email_verified": True, "groups": ["admins"], "client_id": "web"}
    return PEOPLE.token({**claims, **changes})


def machine(**changes):
    claims = {"sub": "robot", "aud": API, "client_id": "robot", "exp": NOW + 600, "iat": NOW, "roles": ["reader"]}
    return MACHINES.token({**claims, **changes})


def pool_user(iss=None, **changes):
    claims = {"sub": "u-1", "username": "carol", "client_id": "app", "token_use": "access", "exp": NOW + 600,
              "iat": NOW, "cognito:groups": ["ops"]}
    return POOL.token({**claims, **changes}, typ=None, iss=iss)  # Cognito access tokens carry no at+jwt


def stranger():
    return STRANGER.token({"sub": "eve", "aud": API, "client_id": "robot", "exp": NOW + 600, "iat": NOW})


def route(name, auth="bearer", **extra):
    return {"name": name, "match": {"path_prefix": f"/{name}"}, "upstream": UPSTREAM, "auth": auth, **extra}


def settings(routes=None, issuers=None, **changes):
    return {
        "oidc": {"issuer": PEOPLE.iss, "client_id": "web", "client_secret": "s", "audiences": [API]},
        "bearer_issuers": issuers if issuers is not None else [
            {"name": "machines", "issuer": MACHINES.iss, "audiences": [API], "allowed_client_ids": ["robot"],
             "groups_claim": "roles"},
            {"name": "pool", "provider": "cognito", "issuer": POOL.iss, "allowed_client_ids": ["app"]},
        ],
        "routes": routes or [
            route("people", inject={"X-Iss": "{iss}"}),
            route("machines", bearer_issuers=["machines"], inject={"X-Iss": "{iss}", "X-Sub": "{sub}"}),
            route("both", bearer_issuers=["oidc", "machines", "pool"], inject={"X-Iss": "{iss}"}),
            route("pool-only", bearer_issuers=["oidc", "pool"], allow={"issuers": ["pool"]}),
            route("ops", bearer_issuers=["oidc", "pool"], allow={"groups": ["ops"]}),
        ],
        **changes,
    }


def load(document) -> Config:
    return parse_config(yaml.safe_dump(document), "test.yaml", {})


class Keys:
    """A key source over in-process issuers, recording every ``iss`` it is asked about."""

    def __init__(self, *issuers: LocalIssuer, also: dict[str, LocalIssuer] | None = None):
        self.asked: list[str] = []
        self.caches = {issuer.iss: JwksCache(issuer.fetcher(), min_interval=0) for issuer in issuers}
        for iss, issuer in (also or {}).items():
            self.caches[iss] = JwksCache(issuer.fetcher(), min_interval=0)

    async def key_set(self, iss):
        self.asked.append(iss)
        return self.caches.get(iss)


class Link:
    """What the gate needs of the provider link: the oidc provider's keys and the others'."""

    def __init__(self):
        self.provider_keys = Keys(PEOPLE)
        self.remote = {"machines": Keys(MACHINES), "pool": Keys(POOL, also={POOL_UPDATED: POOL})}

    def remote_keys(self, config):
        return self.remote[config.name]

    def asked(self):
        return self.provider_keys.asked + [iss for keys in self.remote.values() for iss in keys.asked]


def gate_for(document=None, clock=lambda: NOW):
    config = load(document or settings())
    link = Link()
    gate = Gate(config, link, None, None, None, clock)
    routes = {each.name: Route(each) for each in config.routes}
    return gate, routes, link


# --- the choice of issuer (pure) ------------------------------------------------------------

def _unsigned(payload: object) -> str:
    encode = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{encode({'alg': 'ES256'})}.{encode(payload)}.c2ln"


@pytest.mark.parametrize(
    ("names", "token", "chosen"),
    [
        ({"oidc"}, person(), "oidc"),
        ({"oidc"}, machine(), None),  # another issuer's valid token: not this route's
        ({"machines"}, machine(), "machines"),
        ({"machines"}, person(), None),
        ({"oidc", "machines", "pool"}, machine(), "machines"),
        ({"oidc", "machines", "pool"}, pool_user(), "pool"),
        ({"oidc", "machines", "pool"}, pool_user(iss=POOL_UPDATED), "pool"),  # the pool's updated issuer form
        ({"oidc", "machines", "pool"}, stranger(), None),
        ({"oidc", "machines", "pool"}, _unsigned({"iss": 5}), None),
        ({"oidc", "machines", "pool"}, _unsigned(["not", "an", "object"]), None),
        ({"oidc", "machines", "pool"}, "not-a-jwt", None),
        ({"oidc", "machines", "pool"}, _unsigned({"iss": PEOPLE.iss + "/"}), None),  # compared exactly (RFC 7519 4.1.1)
    ],
)
def test_the_issuer_is_chosen_by_iss_among_the_route_s(names, token, chosen):
    gate, _, _ = gate_for()
    found = choose(table_for(gate.issuers, names), token)
    assert (found[1].name if found else None) == chosen


def test_rules_per_issuer_kind():
    config = load(settings())
    machines, pool = config.bearer_issuers
    generic = issuer_rules(machines)
    assert generic.audiences == {API} and generic.client_ids == {"robot"} and generic.token_type == "at+jwt"
    cognito = issuer_rules(pool)
    assert cognito.audiences is None and cognito.client_ids == {"app"} and cognito.token_use == "access"
    assert cognito.accepts_issuer(POOL_UPDATED) and not cognito.accepts_issuer(MACHINES.iss)
    assert cognito.token_type is None  # Cognito's access tokens say typ JWT, never at+jwt


# --- the gate -------------------------------------------------------------------------------

async def test_a_route_accepting_one_issuer_refuses_the_others_valid_token_before_any_key_is_asked():
    gate, routes, link = gate_for()
    for name, token in (("people", machine()), ("people", pool_user()), ("machines", person()),
                        ("machines", pool_user()), ("both", stranger())):
        identity, facts = await gate._bearer(token, routes[name])
        assert identity is None and facts.problem == d.INVALID and facts.detail == "wrong_issuer", name
        answer = decide(routes[name], identity, facts)
        assert answer.challenge == ('Bearer realm="authproxy", error="invalid_token", '
                                    'error_description="wrong_issuer"')
    assert link.asked() == []  # no key source asked, so nothing fetched, for any refused issuer
    # What is no JWT at all is still "malformed", not an issuer question.
    identity, facts = await gate._bearer("opaque-refresh-token", routes["both"])
    assert (facts.problem, facts.detail) == (d.INVALID, "malformed") and link.asked() == []


async def test_a_route_accepting_several_issuers_takes_each_with_its_own_name_and_groups_claim():
    gate, routes, link = gate_for()
    seen = {}
    for token in (person(), machine(), pool_user(), pool_user(iss=POOL_UPDATED)):
        identity, facts = await gate._bearer(token, routes["both"])
        assert facts is d.NOTHING_ELSE, facts
        seen[identity.claims["iss"]] = (identity.issuer, identity.groups_claim, identity.sub)
        headers = await gate.identity_headers(routes["both"], identity, "r-1")
        assert headers == [("X-Iss", identity.claims["iss"])]
    assert seen == {PEOPLE.iss: ("oidc", "groups", "alice"), MACHINES.iss: ("machines", "roles", "robot"),
                    POOL.iss: ("pool", "cognito:groups", "u-1"), POOL_UPDATED: ("pool", "cognito:groups", "u-1")}
    assert link.remote["pool"].asked == [POOL.iss, POOL_UPDATED]  # each iss of the pool has its own key set


@pytest.mark.parametrize(
    ("route_name", "token", "reason"),
    [
        ("machines", lambda: machine(client_id="intruder"), "wrong_client"),  # allowed_client_ids of this issuer
        ("machines", lambda: machine(aud="https://other.example.test"), "wrong_audience"),
        ("machines", lambda: MACHINES.token({"sub": "robot", "aud": API, "client_id": "robot", "exp": NOW + 60},
                                            typ="JWT"), "wrong_type"),  # RFC 9068 2.1
        ("people", lambda: person(aud="https://other.example.test"), "wrong_audience"),
        ("both", lambda: pool_user(client_id="web"), "wrong_client"),  # the pool's client ids, not oidc's
        ("both", lambda: pool_user(token_use="id"), "wrong_token_use"),
        ("both", lambda: machine(exp=NOW - 61), "expired"),
        # signed by the people's key (same kid k1), claiming the machines' issuer: checked with the
        # machines' key of that kid, which the signature does not match (RFC 8725 3.8)
        ("machines", lambda: PEOPLE.token({"sub": "x", "aud": API, "client_id": "robot", "exp": NOW + 60},
                                          iss=MACHINES.iss), "bad_signature"),
    ],
)
async def test_each_issuer_s_own_rules(route_name, token, reason):
    gate, routes, _ = gate_for()
    identity, facts = await gate._bearer(token(), routes[route_name])
    assert identity is None and (facts.problem, facts.detail) == (d.INVALID, reason)


async def test_allow_rules_name_the_issuer_and_read_groups_where_the_issuer_puts_them():
    gate, routes, _ = gate_for()
    people, _ = await gate._bearer(person(), routes["pool-only"])
    refused = decide(routes["pool-only"], people, d.NOTHING_ELSE)
    assert isinstance(refused, d.Forbidden) and refused.denial.reason == "requires an identity from: pool"
    carol, _ = await gate._bearer(pool_user(), routes["pool-only"])
    assert decide(routes["pool-only"], carol, d.NOTHING_ELSE) is d.ALLOW_BEARER
    # groups: cognito:groups for the pool's identities, groups for the oidc provider's
    assert decide(routes["ops"], carol, d.NOTHING_ELSE) is d.ALLOW_BEARER
    alice, _ = await gate._bearer(person(groups=["ops"]), routes["ops"])
    assert decide(routes["ops"], alice, d.NOTHING_ELSE) is d.ALLOW_BEARER
    no_ops, _ = await gate._bearer(person(**{"cognito:groups": ["ops"], "groups": []}), routes["ops"])
    assert isinstance(decide(routes["ops"], no_ops, d.NOTHING_ELSE), d.Forbidden)  # not the oidc issuer's claim


async def test_the_oidc_issuer_before_its_provider_has_loaded_is_not_ready():
    gate, routes, link = gate_for()
    link.provider_keys.caches.clear()  # what ProviderKeys answers before the provider link has loaded
    identity, facts = await gate._bearer(person(), routes["people"])
    assert identity is None and facts.problem == d.NOT_READY


def test_iss_in_templates():
    template = parse_template("{iss}")
    assert template.uses == {"iss"}
    assert template.render({"iss": MACHINES.iss}, {}) == MACHINES.iss
    assert template.render({}, {}) is None  # no issuer (an anonymous caller): the header is left out
    with pytest.raises(ValueError, match="iss"):
        parse_template("{issuer}")


# --- configuration --------------------------------------------------------------------------

def issues_of(document):
    with pytest.raises(ConfigError) as caught:
        load(document)
    return {issue.path: issue.message for issue in caught.value.issues}


MACHINES_ISSUER = {"name": "machines", "issuer": MACHINES.iss, "audiences": [API]}


@pytest.mark.parametrize(
    ("issuers", "routes", "path", "words"),
    [
        ([MACHINES_ISSUER], [route("a", bearer_issuers=["robots"])], "routes[0].bearer_issuers[0]",
         "no bearer issuer is named 'robots' (known: machines, oidc)"),
        ([MACHINES_ISSUER, {**MACHINES_ISSUER, "issuer": "https://other.example.test"}], [route("a")],
         "bearer_issuers[1].name", "named 'machines' already"),
        ([{**MACHINES_ISSUER, "name": "oidc"}], [route("a")], "bearer_issuers[0].name", "oidc section's provider"),
        ([{**MACHINES_ISSUER, "issuer": PEOPLE.iss}], [route("a")], "bearer_issuers[0].issuer",
         "already belong to oidc"),
        ([MACHINES_ISSUER, {**MACHINES_ISSUER, "name": "robots"}], [route("a")], "bearer_issuers[1].issuer",
         "already belong to bearer_issuers[0]"),
        ([{"name": "machines", "issuer": MACHINES.iss}], [route("a")], "bearer_issuers[0].audiences",
         "generic issuer needs audiences"),
        ([{"name": "pool", "provider": "cognito", "issuer": POOL.iss}], [route("a")],
         "bearer_issuers[0].allowed_client_ids", "needs allowed_client_ids"),
        ([{"name": "pool", "provider": "cognito", "issuer": POOL.iss, "allowed_client_ids": ["app"],
           "audiences": [API]}], [route("a")], "bearer_issuers[0].audiences", "carry no aud"),
        ([{"name": "pool", "issuer": POOL.iss, "audiences": [API]}], [route("a")], "bearer_issuers[0].provider",
         "write provider: cognito"),
        ([{**MACHINES_ISSUER, "issuer_aliases": ["https://x.example.test/p"]}], [route("a")],
         "bearer_issuers[0].issuer_aliases", "for provider: cognito"),
        ([MACHINES_ISSUER], [route("a", bearer_issuers=[])], "routes[0].bearer_issuers", "is empty"),
        ([MACHINES_ISSUER], [route("a", auth="public", bearer_issuers=["machines"])], "routes[0].bearer_issuers",
         "applies to bearer and login_or_bearer routes"),
        ([MACHINES_ISSUER], [route("a", allow={"issuers": ["robots"]})], "routes[0].allow.issuers[0]",
         "no bearer issuer is named 'robots'"),
        ([MACHINES_ISSUER], [route("a", allow={"issuers": ["machines"]})], "routes[0].allow.issuers",
         "nobody passes"),  # the route accepts only oidc's tokens
        ([MACHINES_ISSUER], [route("a", allow={"issuers": []})], "routes[0].allow.issuers", "is empty"),
        ([{**MACHINES_ISSUER, "name": "no spaces"}], [route("a")], "bearer_issuers[0].name", "invalid issuer name"),
    ],
)
def test_configuration_errors_name_the_key(issuers, routes, path, words):
    found = issues_of(settings(routes=routes, issuers=issuers))
    assert path in found and words in found[path], found


def test_a_route_of_machines_only_does_not_need_the_oidc_audiences():
    document = settings(routes=[route("a", bearer_issuers=["machines"])], issuers=[MACHINES_ISSUER])
    del document["oidc"]["audiences"]
    config = load(document)  # no error: oidc's rules never apply on this route
    assert Route(config.routes[0]).bearer_issuers == {"machines"}
    document["routes"].append(route("b"))  # a route of the oidc provider's tokens does need them
    assert "routes[1].auth" in issues_of(document)


def test_existing_configurations_mean_the_oidc_issuer_alone():
    config = load(settings(routes=[route("a")], issuers=[]))
    gate = Gate(config, Link(), None, None, None, lambda: NOW)
    assert Route(config.routes[0]).bearer_issuers == {"oidc"} and set(gate.issuers) == {"oidc"}
    assert config.verified_tokens.max_entries == 10_000 and config.verified_tokens.max_age == 300


# --- a further issuer's keys (RemoteKeys), against a local HTTP server ---------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
async def issuer_server():
    """A provider on 127.0.0.1: discovery and a JWKS, each request counted, failures on demand."""
    from aiohttp import web

    state = {"requests": [], "jwks_status": 200, "issuer": None}

    async def discovery(request):
        state["requests"].append(request.path)
        return web.json_response({"issuer": state["issuer"], "jwks_uri": state["issuer"] + "/keys"})

    async def keys(request):
        state["requests"].append(request.path)
        if state["jwks_status"] != 200:
            return web.Response(status=state["jwks_status"])
        return web.json_response(MACHINES.jwks().as_dict())

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/keys", keys)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["issuer"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


async def test_remote_keys_come_from_discovery_once_and_a_failure_is_not_retried_at_once(issuer_server):
    import aiohttp

    from authproxy.config.schema import BearerIssuer
    from authproxy.errors import IdpUnavailable
    from authproxy.oidc.issuers import RETRY_AFTER_FAILURE, RemoteKeys

    config = BearerIssuer(name="machines", issuer=issuer_server["issuer"], audiences=[API])
    clock = Clock()
    async with aiohttp.ClientSession() as http:
        issuer_server["jwks_status"] = 503
        keys = RemoteKeys(http, config, clock=clock)
        with pytest.raises(IdpUnavailable):
            await keys.key_set(config.issuer)
        assert issuer_server["requests"] == ["/.well-known/openid-configuration", "/keys"]
        issuer_server["jwks_status"] = 200
        clock.now += RETRY_AFTER_FAILURE - 0.1
        with pytest.raises(IdpUnavailable):  # a down issuer is not asked once per request
            await keys.key_set(config.issuer)
        assert len(issuer_server["requests"]) == 2
        clock.now += 0.2
        cache = await keys.key_set(config.issuer)
        assert cache.keys is not None and issuer_server["requests"][2:] == ["/keys"]  # discovery kept
        assert await keys.key_set(config.issuer) is cache and len(issuer_server["requests"]) == 3


async def test_remote_keys_refuse_a_discovery_document_of_another_issuer(issuer_server):
    import aiohttp

    from authproxy.config.schema import BearerIssuer
    from authproxy.errors import IdpUnavailable
    from authproxy.oidc.issuers import RemoteKeys

    config = BearerIssuer(name="machines", issuer=issuer_server["issuer"], audiences=[API])
    issuer_server["issuer"] = "https://elsewhere.example.test"  # what the document says it is
    async with aiohttp.ClientSession() as http:
        with pytest.raises(IdpUnavailable, match="another issuer"):  # OpenID Connect Discovery 1.0 4.3
            await RemoteKeys(http, config).key_set(config.issuer)


async def test_the_provider_link_keeps_an_issuer_s_keys_across_reloads():
    from authproxy.web.admin import Readiness
    from authproxy.web.provider import ProviderLink

    config = load(settings())
    link = ProviderLink(config.oidc, object(), Readiness())
    again = load(settings())  # a reload with the same issuers
    assert link.remote_keys(config.bearer_issuers[0]) is link.remote_keys(again.bearer_issuers[0])
    moved = again.bearer_issuers[0].model_copy(update={"jwks_uri": "https://machines.example.test/other-keys"})
    assert link.remote_keys(moved) is not link.remote_keys(config.bearer_issuers[0])
    kept = link.remote_keys(moved)
    link.keep_only([moved])  # the reload that moved the keys: the old source is forgotten
    assert link.remote_keys(moved) is kept
    assert len(link._remote) == 1
    link.keep_only([])  # a reload without bearer issuers
    assert link._remote == {}


# --- JWKS documents joserfc cannot take whole, failures per key set, the warm-up ------------

RSA = None  # an RSA signing key of the machines' issuer, made once (RSA keys are slow to make)


def rsa_key():
    global RSA
    if RSA is None:
        from joserfc.jwk import RSAKey

        RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
    return RSA


def rsa_machine(kid="rsa-1", **changes):
    from joserfc import jwt

    claims = {"iss": MACHINES.iss, "sub": "robot", "aud": API, "client_id": "robot", "exp": NOW + 600, "iat": NOW,
              **changes}
    return jwt.encode({"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims, rsa_key())


# Keys a provider may publish next to the one it signs with: a curve joserfc does not know, a
# key type it does not know (a post-quantum one), an entry without kty, one that is no object.
UNSUPPORTED = [
    {"kty": "EC", "crv": "P-999", "x": "c2VjcmV0LXgtbWF0ZXJpYWw", "y": "c2VjcmV0LXktbWF0ZXJpYWw", "kid": "odd-curve"},
    {"kty": "AKP", "alg": "ML-DSA-44", "pub": "c2VjcmV0LXB1Yi1tYXRlcmlhbA", "kid": "post-quantum"},
    {"kid": "no-kty", "n": "c2VjcmV0LW4tbWF0ZXJpYWw"},
    "not-a-key",
]


@pytest.fixture
async def jwks_server():
    """Key sets on 127.0.0.1 by path: ``documents[path]`` is a JSON document, or a status to answer.
    Every request's path is recorded."""
    from aiohttp import web

    state = {"requests": [], "documents": {}, "base": None}

    async def serve(request):
        state["requests"].append(request.path)
        document = state["documents"].get(request.path, 404)
        if isinstance(document, int):
            return web.Response(status=document)
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["base"] = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


def machines_with_keys_at(url):
    from authproxy.config.schema import BearerIssuer

    return BearerIssuer(name="machines", issuer=MACHINES.iss, jwks_uri=url, audiences=[API],
                        allowed_client_ids=["robot"])


async def test_an_unsupported_key_next_to_the_rsa_key_is_skipped_and_logged_once_by_kid(jwks_server, caplog):
    import logging

    import aiohttp

    from authproxy.logs import JsonFormatter
    from authproxy.oidc.issuers import RemoteKeys

    jwks_server["documents"]["/keys"] = {"keys": [*UNSUPPORTED, rsa_key().as_dict(private=False)]}
    config = machines_with_keys_at(jwks_server["base"] + "/keys")
    async with aiohttp.ClientSession() as http:
        keys = RemoteKeys(http, config)
        issuer = Issuer("machines", config.issuers, issuer_rules(config), "groups", keys)
        with caplog.at_level(logging.WARNING, logger="authproxy"):
            verified = await issuer.verify(rsa_machine(), MACHINES.iss, NOW)
            assert verified.claims["sub"] == "robot"
            await (await keys.key_set(MACHINES.iss)).load()  # a refetch finds the same keys: nothing logged again
    assert jwks_server["requests"] == ["/keys", "/keys"]
    skipped = [record for record in caplog.records if record.getMessage() == "jwks_key_skipped"]
    assert sorted(record.fields["kid"] for record in skipped) == ["-", "no-kty", "odd-curve", "post-quantum"]
    lines = "".join(JsonFormatter().format(record) for record in skipped)
    assert "c2VjcmV0" not in lines and rsa_key().as_dict(private=False)["n"][:20] not in lines  # no key material


# joserfc raises its own errors (JoseError, not ValueError) for these: MissingKeyError, KeyParameterError
@pytest.mark.parametrize("document", [
    {"keys": []},
    {"keys": "not-a-list"},
    {"keys": [{"kty": "RSA", "e": "AQAB", "kid": "no-modulus"}]},
    {"keys": [{"kid": "no-kty"}]},
    {"keys": None},
    {"no": "keys"},
])
async def test_a_key_set_without_a_usable_key_is_an_outage_and_not_asked_again_at_once(jwks_server, document):
    import aiohttp

    from authproxy.oidc.issuers import RETRY_AFTER_FAILURE, RemoteKeys

    jwks_server["documents"]["/keys"] = document
    config = load(settings(routes=[route("machines", bearer_issuers=["machines"])],
                           issuers=[{"name": "machines", "issuer": MACHINES.iss, "audiences": [API],
                                     "jwks_uri": jwks_server["base"] + "/keys"}]))
    clock = Clock()
    async with aiohttp.ClientSession() as http:
        keys = RemoteKeys(http, config.bearer_issuers[0], clock=clock)

        class RealLink(Link):
            def remote_keys(self, _config):
                return keys

        gate = Gate(config, RealLink(), None, None, None, lambda: NOW)
        routes = {each.name: Route(each) for each in config.routes}
        for _ in range(3):  # 503, never a 500; and the issuer is asked once, not once per request
            identity, facts = await gate._bearer(machine(), routes["machines"])
            assert identity is None and facts.problem == d.KEYS_UNAVAILABLE
        assert jwks_server["requests"] == ["/keys"]
        jwks_server["documents"]["/keys"] = MACHINES.jwks().as_dict()
        clock.now += RETRY_AFTER_FAILURE
        identity, facts = await gate._bearer(machine(), routes["machines"])
        assert facts is d.NOTHING_ELSE and identity.sub == "robot" and jwks_server["requests"] == ["/keys", "/keys"]


async def test_one_region_s_failing_keys_do_not_hold_back_another_region_s(jwks_server):
    import aiohttp

    from authproxy.config.schema import BearerIssuer
    from authproxy.errors import IdpUnavailable
    from authproxy.oidc.issuers import RETRY_AFTER_FAILURE, RemoteKeys

    base = jwks_server["base"]
    west, east = f"{base}/eu-west-1/pool", f"{base}/eu-central-1/pool"  # one replicated pool's issuers
    jwks_server["documents"] = {"/eu-west-1/pool/.well-known/jwks.json": 503,
                                "/eu-central-1/pool/.well-known/jwks.json": POOL.jwks().as_dict()}
    config = BearerIssuer(name="pool", provider="cognito", issuer=west, issuer_aliases=[east],
                          allowed_client_ids=["app"])
    clock = Clock()
    async with aiohttp.ClientSession() as http:
        keys = RemoteKeys(http, config, clock=clock)
        with pytest.raises(IdpUnavailable):
            await keys.key_set(west)
        cache = await keys.key_set(east)  # at once: the west region's failure is the west region's
        assert cache.keys is not None
        with pytest.raises(IdpUnavailable, match="moments ago"):  # west still waits out its own failure
            await keys.key_set(west)
        assert jwks_server["requests"] == ["/eu-west-1/pool/.well-known/jwks.json",
                                           "/eu-central-1/pool/.well-known/jwks.json"]
        jwks_server["documents"]["/eu-west-1/pool/.well-known/jwks.json"] = POOL.jwks().as_dict()
        clock.now += RETRY_AFTER_FAILURE
        assert (await keys.key_set(west)).keys is not None


class Warming:
    """A stand-in for RemoteKeys in the provider link's warm-up."""

    def __init__(self, issuer, error=None):
        self.issuer, self.error, self.warmed = issuer, error, False

    async def warm(self):
        if self.error is not None:
            raise self.error
        self.warmed = True


async def test_warming_logs_whatever_an_issuer_s_keys_raise_and_warms_the_others(jwks_server, caplog):
    import logging

    import aiohttp

    from authproxy.errors import IdpUnavailable
    from authproxy.oidc.issuers import RemoteKeys
    from authproxy.web.admin import Readiness
    from authproxy.web.provider import ProviderLink

    jwks_server["documents"]["/keys"] = {"keys": [{"kty": "RSA", "e": "AQAB", "kid": "no-modulus"}]}  # a JoseError
    config = load(settings())
    async with aiohttp.ClientSession() as http:
        link = ProviderLink(config.oidc, http, Readiness())
        real = RemoteKeys(http, machines_with_keys_at(jwks_server["base"] + "/keys"))
        fine = Warming("https://fine.example.test")
        link._remote = {("generic", "real", None): real,
                        ("generic", "bug", None): Warming("https://bug.example.test", RuntimeError("surprise")),
                        ("generic", "down", None): Warming("https://down.example.test", IdpUnavailable("jwks", "down")),
                        ("generic", "fine", None): fine}
        with caplog.at_level(logging.WARNING, logger="authproxy"):
            await link.warm_bearer_issuers()  # raises nothing: the provider's load task lives on
    assert fine.warmed
    logged = {record.fields["issuer"]: record.fields["error"] for record in caplog.records
              if record.getMessage() == "bearer_issuer_unavailable"}
    assert logged.keys() == {MACHINES.iss, "https://bug.example.test", "https://down.example.test"}
    assert logged["https://bug.example.test"] == "RuntimeError"  # the type only: a surprise's text is not logged


async def test_the_provider_load_loop_retries_a_surprise_instead_of_ending(jwks_server, monkeypatch):
    import aiohttp

    from authproxy.oidc.endpoints import from_discovery
    from authproxy.web import provider as provider_module
    from authproxy.web.admin import Readiness
    from authproxy.web.provider import ProviderLink

    monkeypatch.setattr(provider_module, "_RETRY_START", 0)  # no backoff to wait out in a test
    jwks_server["documents"]["/keys"] = PEOPLE.jwks().as_dict()
    config = load(settings(routes=[route("a")], issuers=[]))
    document = {"issuer": PEOPLE.iss, "authorization_endpoint": PEOPLE.iss + "/authorize",
                "token_endpoint": PEOPLE.iss + "/token", "jwks_uri": jwks_server["base"] + "/keys"}
    outcomes = [RuntimeError("a library's surprise"), from_discovery(document, PEOPLE.iss, {})]

    async def endpoints():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async with aiohttp.ClientSession() as http:
        readiness = Readiness()
        link = ProviderLink(config.oidc, http, readiness)
        monkeypatch.setattr(link, "_endpoints", endpoints)
        await link.load()
    assert link.client is not None and link.client.jwks.keys is not None and outcomes == []
