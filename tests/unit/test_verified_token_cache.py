"""The cache of verified bearer tokens (issue 15 item 2), through the gate with a movable
clock: a hit does no signature work, exp/nbf still apply at every use, an entry lives until
the token's exp and at most max_age, a key rotated out of the JWKS stops vouching at the
refetch that misses it, entries are bounded, and a token accepted under one issuer's rules
is never a hit for a route of another."""

from __future__ import annotations

import pytest
import yaml

from authproxy import metrics
from authproxy.config import parse_config
from authproxy.oidc import jwks as jwks_module
from authproxy.oidc.jwks import JwksCache
from authproxy.oidc.token_cache import VerifiedTokenCache, token_key
from authproxy.policy import decide as d
from authproxy.policy.routes import Route
from authproxy.web.gate import Gate
from tests.support.local_issuer import LocalIssuer

NOW = 1_800_000_000
API = "https://api.example.test"
LEEWAY = 60  # verify.DEFAULT_LEEWAY


class Clock:
    def __init__(self, now=NOW):
        self.now = now

    def __call__(self):
        return self.now


class Keys:
    def __init__(self, issuer: LocalIssuer):
        self.cache = JwksCache(issuer.fetcher(), min_interval=0)

    async def key_set(self, iss):
        return self.cache


class Link:
    def __init__(self, people: LocalIssuer, machines: LocalIssuer):
        self.provider_keys = Keys(people)
        self.machines = Keys(machines)

    def remote_keys(self, config):
        return self.machines


@pytest.fixture
def people():
    return LocalIssuer("https://people.example.test")


@pytest.fixture
def machines():
    return LocalIssuer("https://machines.example.test")


@pytest.fixture
def signatures(monkeypatch):
    """Every signature verification (joserfc's decode, through verify_token), counted."""
    calls = []
    real = jwks_module.verify_token

    def counting(token, keys, rules, now):
        calls.append(token)
        return real(token, keys, rules, now)

    monkeypatch.setattr(jwks_module, "verify_token", counting)
    return calls


def setup(people, machines, clock, max_entries=10_000, max_age=300):
    config = parse_config(yaml.safe_dump({
        "oidc": {"issuer": people.iss, "client_id": "web", "client_secret": "s", "audiences": [API]},
        "bearer_issuers": [{"name": "machines", "issuer": machines.iss, "audiences": [API]}],
        "verified_tokens": {"max_entries": max_entries, "max_age": max_age},
        "routes": [
            {"name": name, "match": {"path_prefix": f"/{name}"}, "upstream": "http://127.0.0.1:1", "auth": "bearer",
             **({"bearer_issuers": issuers} if issuers else {})}
            for name, issuers in (("people", None), ("machines", ["machines"]), ("both", ["oidc", "machines"]))
        ],
    }), "test.yaml", {})
    link = Link(people, machines)
    gate = Gate(config, link, None, None, None, clock)
    return gate, {route.name: Route(route) for route in config.routes}, link


def token_of(issuer, exp=NOW + 600, **claims):
    return issuer.token({"sub": "s-1", "aud": API, "client_id": "c", "exp": exp, "iat": NOW, **claims})


async def test_a_hit_does_no_signature_work_and_answers_the_same_identity(people, machines, signatures):
    gate, routes, _ = setup(people, machines, Clock())
    token = token_of(people)
    hits = metrics.VERIFIED_TOKENS.hits
    first, facts = await gate._bearer(token, routes["people"])
    assert facts is d.NOTHING_ELSE and len(signatures) == 1
    for _ in range(5):
        again, facts = await gate._bearer(token, routes["people"])
        assert again == first and again.claims is first.claims and facts is d.NOTHING_ELSE
        assert again.access_token == token  # the presented token, for {access_token}: the cache holds none
    assert len(signatures) == 1  # verified once, answered five times from the cache
    assert metrics.VERIFIED_TOKENS.hits - hits == 5 and metrics.VERIFIED_TOKENS.entries == 1


async def test_expiry_is_honoured_on_hits(people, machines, signatures):
    clock = Clock()
    gate, routes, _ = setup(people, machines, clock)
    token = token_of(people, exp=NOW + 100)
    assert (await gate._bearer(token, routes["people"]))[1] is d.NOTHING_ELSE
    clock.now = NOW + 100 + LEEWAY - 1  # still within the leeway of exp (RFC 7519 4.1.4)
    assert (await gate._bearer(token, routes["people"]))[1] is d.NOTHING_ELSE
    assert len(signatures) == 1
    clock.now = NOW + 100 + LEEWAY
    identity, facts = await gate._bearer(token, routes["people"])
    assert identity is None and (facts.problem, facts.detail) == (d.INVALID, "expired")
    assert len(gate.verified) == 0  # the expired entry is gone


@pytest.mark.parametrize(("claims", "reason"), [({"nbf": NOW + 50}, "not_yet_valid"),  # RFC 7519 4.1.5
                                                ({"iat": NOW + 50}, "issued_in_the_future")])
async def test_time_claims_are_checked_again_on_a_hit(people, machines, signatures, claims, reason):
    clock = Clock(NOW + 100)
    gate, routes, _ = setup(people, machines, clock)
    token = token_of(people, **claims)
    assert (await gate._bearer(token, routes["people"]))[1] is d.NOTHING_ELSE
    clock.now = NOW + 50 - LEEWAY  # still acceptable at the edge of the leeway: a hit
    assert (await gate._bearer(token, routes["people"]))[1] is d.NOTHING_ELSE
    clock.now = NOW + 50 - LEEWAY - 1  # the wall clock stepped back further: in the future again
    identity, facts = await gate._bearer(token, routes["people"])
    assert identity is None and facts.detail == reason
    assert len(signatures) == 1  # refused from the cached claims, without signature work
    assert len(gate.verified) == 0


async def test_an_entry_lives_at_most_max_age(people, machines, signatures):
    clock = Clock()
    gate, routes, _ = setup(people, machines, clock, max_age=30)
    token = token_of(people, exp=NOW + 3600)
    await gate._bearer(token, routes["people"])
    clock.now = NOW + 29
    await gate._bearer(token, routes["people"])
    assert len(signatures) == 1
    clock.now = NOW + 30  # the token is still valid, but the cached verdict is too old: verified again
    identity, _ = await gate._bearer(token, routes["people"])
    assert identity is not None and len(signatures) == 2


async def test_a_key_rotated_out_stops_vouching_at_the_next_refetch(people, machines, signatures):
    gate, routes, link = setup(people, machines, Clock())
    old = token_of(people)
    assert (await gate._bearer(old, routes["people"]))[1] is d.NOTHING_ELSE
    # A refetch that still finds the key changes nothing: the entry stays a hit.
    assert await link.provider_keys.cache.refresh_if_allowed()
    assert (await gate._bearer(old, routes["people"]))[1] is d.NOTHING_ELSE and len(signatures) == 1
    # The issuer rotates: a token of the new key makes us refetch, and the old key is gone from the set.
    people.rotate("k2")
    new = token_of(people)
    assert (await gate._bearer(new, routes["people"]))[1] is d.NOTHING_ELSE
    assert people.fetches == 3
    identity, facts = await gate._bearer(old, routes["people"])
    assert identity is None and facts.detail == "unknown_key"  # verified again, against keys without its kid
    # old once; new: unknown kid, refetch, again; old: not a hit any more, unknown kid, refetch, again
    assert len(signatures) == 1 + 2 + 2 and people.fetches == 4


async def test_the_cache_is_bounded_least_recently_used_first(people, machines, signatures):
    gate, routes, _ = setup(people, machines, Clock(), max_entries=3)
    tokens = [token_of(people, sub=f"u{n}") for n in range(5)]
    for token in tokens:
        await gate._bearer(token, routes["people"])
    assert len(gate.verified) == 3 and metrics.VERIFIED_TOKENS.entries == 3
    await gate._bearer(tokens[4], routes["people"])
    assert len(signatures) == 5  # the most recent one was kept
    await gate._bearer(tokens[0], routes["people"])
    assert len(signatures) == 6  # the oldest one was not


async def test_an_entry_answers_only_under_the_rules_that_accepted_it(people, machines, signatures):
    gate, routes, _ = setup(people, machines, Clock())
    token = token_of(machines)
    assert (await gate._bearer(token, routes["both"]))[0].issuer == "machines"
    hits = metrics.VERIFIED_TOKENS.hits
    identity, facts = await gate._bearer(token, routes["people"])  # a route of the oidc issuer's rules only
    assert identity is None and facts.detail == "wrong_issuer"
    assert metrics.VERIFIED_TOKENS.hits == hits  # not a hit: refused as it would be uncached
    assert (await gate._bearer(token, routes["machines"]))[1] is d.NOTHING_ELSE  # the same issuer's rules: a hit
    assert metrics.VERIFIED_TOKENS.hits == hits + 1 and len(signatures) == 1
    # A reload compiles new rules (audiences may have changed): the new gate's cache starts empty.
    reloaded, reloaded_routes, _ = setup(people, machines, Clock())
    await reloaded._bearer(token, reloaded_routes["machines"])
    assert len(signatures) == 2


async def test_the_cache_holds_hashes_never_tokens(people, machines):
    gate, routes, _ = setup(people, machines, Clock())
    token = token_of(people)
    await gate._bearer(token, routes["people"])
    keys = list(gate.verified._entries)
    assert keys == [token_key(token)] and len(keys[0]) == 32  # SHA-256
    assert token.encode() not in b"".join(keys)
    entry = gate.verified._entries[keys[0]]
    assert token not in repr(entry) and entry.value.access_token is None  # nor is it in what an entry keeps


async def test_invalid_tokens_are_not_cached_and_the_cache_can_be_off(people, machines, signatures):
    gate, routes, _ = setup(people, machines, Clock())
    bad = token_of(people, aud="https://other.example.test")
    for _ in range(2):
        assert (await gate._bearer(bad, routes["people"]))[1].detail == "wrong_audience"
    assert len(signatures) == 2 and len(gate.verified) == 0
    off, off_routes, _ = setup(people, machines, Clock(), max_entries=0)
    assert off.verified is None
    token = token_of(people)
    for _ in range(3):
        assert (await off._bearer(token, off_routes["people"]))[1] is d.NOTHING_ELSE
    assert len(signatures) == 5


def test_a_cache_needs_room_for_one():
    with pytest.raises(ValueError, match="max_entries"):
        VerifiedTokenCache(0, 300)


@pytest.mark.parametrize("exp", [float("nan"), float("inf")])
async def test_a_token_whose_exp_is_not_a_finite_number_is_refused_and_never_cached(people, machines, signatures, exp):
    clock = Clock()
    gate, routes, _ = setup(people, machines, clock, max_age=30)
    token = token_of(people, exp=exp)
    for _ in range(2):
        identity, facts = await gate._bearer(token, routes["people"])
        assert identity is None and (facts.problem, facts.detail) == (d.INVALID, "malformed_exp")
    assert len(gate.verified) == 0 and len(signatures) == 2


@pytest.mark.parametrize("claims", [{"exp": float("nan")}, {"exp": float("inf")}, {"exp": 10**400},
                                    {"exp": NOW + 600, "nbf": float("nan")}, {"exp": NOW + 600, "iat": float("inf")}])
async def test_the_cache_keeps_no_entry_it_cannot_bound_by_a_finite_deadline(people, claims):
    from authproxy.oidc.jwks import Verified

    cache = VerifiedTokenCache(10, max_age=30)
    keys = JwksCache(people.fetcher(), min_interval=0)
    await keys.load()
    verified = Verified({"iss": people.iss, "sub": "s-1", **claims}, keys, people.kid, keys.fingerprint(people.kid))
    cache.put(b"k" * 32, "identity", object(), people.iss, verified, LEEWAY, NOW)  # raises nothing either
    assert len(cache) == 0
    assert cache.get(b"k" * 32, NOW + 10**9) is None
