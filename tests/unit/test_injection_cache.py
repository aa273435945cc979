"""The rendered injection block kept per session (``Gate.rendered_headers``): given again
while the session's tokens and claims are those it came from, rendered anew after a
refresh, a new ID token or a configuration reload, never shared between sessions; a
service token and the signed assertion are never kept."""

from __future__ import annotations

import logging

import pytest
import yaml

from authproxy.config import parse_config
from authproxy.config.templates import Template
from authproxy.oidc.client import TokenResponse
from authproxy.policy.routes import Route
from authproxy.session.store import Session
from authproxy.web.gate import Gate, session_identity

NOW = 1_800_000_000
INJECT = {"Authorization": "Bearer {access_token}", "X-Email": "{claims.email}", "X-Groups": "{claims.groups}",
          "X-Id": "{id_token}"}


def config_with(inject: dict[str, str], max_entries: int = 10_000, **route_extra: object):
    document = {
        "public_url": "https://proxy.example.test",
        "oidc": {"issuer": "https://idp.example.test", "client_id": "web", "client_secret": "s" * 16},
        "session": {"secrets": ["x" * 40]},
        "store": {"cache": {"max_entries": max_entries}},
        "routes": [{"name": "app", "match": {"path_prefix": "/app"}, "upstream": "http://127.0.0.1:1", "auth": "login",
                    "inject": inject, **route_extra}],
    }
    return parse_config(yaml.safe_dump(document), "test.yaml", {})


def gate_and_route(inject=INJECT, **kwargs):
    config = config_with(inject, **kwargs)
    return Gate(config, None, None, None, None, clock=lambda: NOW), Route(config.routes[0])


def session(sub="alice", access="AT-1", id_token="IT-1", **claims):
    return Session(sub=sub, claims={"sub": sub, "email": f"{sub}@example.com", "groups": ["admins"], **claims},
                   access_token=access, id_token=id_token, refresh_token="RT-1", access_expires_at=NOW + 300,
                   created_at=NOW, expires_at=NOW + 3600)


@pytest.fixture
def renders(monkeypatch):
    """How many times a template was rendered."""
    count = {"n": 0}
    original = Template.render

    def counting(self, values, claims):
        count["n"] += 1
        return original(self, values, claims)

    monkeypatch.setattr(Template, "render", counting)
    return count


def test_a_session_block_is_rendered_once_and_given_again(renders):
    gate, route = gate_and_route()
    alice = session()
    first = gate.rendered_headers(route, session_identity(alice), "r1")
    assert list(first) == [("Authorization", "Bearer AT-1"), ("X-Email", "alice@example.com"), ("X-Groups", "admins"),
                           ("X-Id", "IT-1")]
    assert renders["n"] == 4
    again = gate.rendered_headers(route, session_identity(alice), "r2")  # a new Identity for the same session
    assert again is first and renders["n"] == 4


def test_a_refresh_renders_the_new_tokens():
    gate, route = gate_and_route()
    alice = session()
    gate.rendered_headers(route, session_identity(alice), "r1")
    refreshed = alice.refreshed(TokenResponse(access_token="AT-2", token_type="Bearer", expires_in=300,
                                              refresh_token="RT-2", id_token=None, scope=None), NOW + 200)
    headers = dict(gate.rendered_headers(route, session_identity(refreshed), "r2"))
    assert headers["Authorization"] == "Bearer AT-2" and headers["X-Id"] == "IT-1"
    # A new verified ID token brings new claims: both show, with the same access token.
    renewed = refreshed.with_verified_id_token("IT-2", {**refreshed.claims, "email": "alice@new.example.com"})
    headers = dict(gate.rendered_headers(route, session_identity(renewed), "r3"))
    assert headers == {"Authorization": "Bearer AT-2", "X-Email": "alice@new.example.com", "X-Groups": "admins",
                       "X-Id": "IT-2"}


def test_claims_read_again_from_the_store_are_rendered_again(renders):
    gate, route = gate_and_route()
    gate.rendered_headers(route, session_identity(session()), "r1")
    # Same tokens, a different claims object (the session read again after the cache TTL,
    # here with a changed claim): never the kept block.
    changed = session(groups=["auditors"])
    assert dict(gate.rendered_headers(route, session_identity(changed), "r2"))["X-Groups"] == "auditors"


def test_two_sessions_never_share_a_block():
    gate, route = gate_and_route()
    alice, bob = session("alice", access="SAME"), session("bob", access="SAME")  # even with one access token
    assert dict(gate.rendered_headers(route, session_identity(alice), "r1"))["X-Email"] == "alice@example.com"
    assert dict(gate.rendered_headers(route, session_identity(bob), "r2"))["X-Email"] == "bob@example.com"
    assert dict(gate.rendered_headers(route, session_identity(alice), "r3"))["X-Email"] == "alice@example.com"


def test_a_reload_renders_the_new_templates():
    alice = session()
    gate, route = gate_and_route()
    assert dict(gate.rendered_headers(route, session_identity(alice), "r1"))["X-Email"] == "alice@example.com"
    # What a reload builds: a new Gate and new routes from the new configuration.
    gate, route = gate_and_route({**INJECT, "X-Email": "mail={claims.email}"})
    assert dict(gate.rendered_headers(route, session_identity(alice), "r2"))["X-Email"] == "mail=alice@example.com"


async def test_the_async_path_gives_the_same_headers():
    gate, route = gate_and_route()
    identity = session_identity(session())
    assert await gate.identity_headers(route, identity, "r1") == list(gate.rendered_headers(route, identity, "r2"))


def test_a_dropped_value_is_logged_on_every_request(caplog):
    gate, route = gate_and_route({"X-Name": "{claims.name}"})
    hostile = session(name="evil\r\nX-Admin: yes")
    with caplog.at_level(logging.WARNING, logger="authproxy"):
        for request_id in ("r1", "r2"):
            assert list(gate.rendered_headers(route, session_identity(hostile), request_id)) == []
    assert [record.fields["request_id"] for record in caplog.records if record.getMessage() == "injection_dropped"] == [
        "r1", "r2"]


async def test_a_service_token_is_never_kept():
    class ServiceTokens:  # a new token each time it is asked, as after its expiry
        issued = 0

        async def token(self, spec):
            self.issued += 1
            return f"ST-{self.issued}"

    config = config_with({"X-Service": "Bearer {service_token}", "X-Email": "{claims.email}"},
                         service_token={"scopes": ["api/read"]})
    gate, route = Gate(config, None, None, ServiceTokens(), None, clock=lambda: NOW), Route(config.routes[0])
    identity = session_identity(session())
    assert gate.rendered_headers(route, identity, "r1") is None  # awaited, each time
    assert dict(await gate.identity_headers(route, identity, "r1"))["X-Service"] == "Bearer ST-1"
    assert dict(await gate.identity_headers(route, identity, "r2"))["X-Service"] == "Bearer ST-2"


def test_the_kept_blocks_are_bounded():
    gate, route = gate_and_route(max_entries=3)
    for n in range(10):
        gate.rendered_headers(route, session_identity(session(f"user{n}", access=f"AT-{n}")), "r")
    assert len(gate._blocks) == 3


def bearer_identity(claims: dict, token: str = "JWT-1"):
    from authproxy.policy.decide import BEARER, Identity

    return Identity(claims["sub"], claims, token, None, BEARER, "oidc", None)


def bearer_gate(inject: dict[str, str]):
    from authproxy.oidc.token_cache import VerifiedTokenCache

    gate, route = gate_and_route(inject)
    gate.verified = VerifiedTokenCache(100, 300)  # as a gate with a provider has (config.verified_tokens)
    return gate, route


def test_a_bearer_block_is_kept_for_the_claims_object_the_token_cache_gives_again(renders):
    gate, route = bearer_gate({"X-Email": "{claims.email}", "X-Sub": "{sub}"})
    claims = {"sub": "bob", "email": "bob@example.com"}
    first = gate.rendered_headers(route, bearer_identity(claims), "r1")
    assert list(first) == [("X-Email", "bob@example.com"), ("X-Sub", "bob")] and renders["n"] == 2
    assert gate.rendered_headers(route, bearer_identity(claims, "JWT-1"), "r2") is first and renders["n"] == 2
    # Another token's claims (equal or not) are another object: rendered for themselves.
    other = gate.rendered_headers(route, bearer_identity({"sub": "eve", "email": "eve@example.com"}), "r3")
    assert dict(other)["X-Sub"] == "eve" and renders["n"] == 4


def test_a_bearer_block_that_names_a_token_is_never_kept(renders):
    gate, route = bearer_gate({"X-Token": "{access_token}", "X-Sub": "{sub}"})
    claims = {"sub": "bob"}
    assert dict(gate.rendered_headers(route, bearer_identity(claims, "JWT-1"), "r1"))["X-Token"] == "JWT-1"
    assert dict(gate.rendered_headers(route, bearer_identity(claims, "JWT-2"), "r2"))["X-Token"] == "JWT-2"
    assert renders["n"] == 4 and not gate._claim_blocks


def test_without_the_verified_token_cache_no_bearer_block_is_kept(renders):
    gate, route = gate_and_route({"X-Sub": "{sub}"})  # no provider here: no cache of verified tokens
    claims = {"sub": "bob"}
    for n in range(3):
        assert dict(gate.rendered_headers(route, bearer_identity(claims), f"r{n}")) == {"X-Sub": "bob"}
    assert renders["n"] == 3 and not gate._claim_blocks
