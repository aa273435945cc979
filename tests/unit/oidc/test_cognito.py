"""A Cognito user pool's issuers (Amazon Cognito API Reference, IssuerConfigurationType;
Developer Guide, "Multi-Region replication for user pools"), the config that names them,
and verification choosing the keys by a token's iss."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from pydantic import ValidationError

from authproxy.config.schema import Allow, OidcConfig
from authproxy.config.validate import provider_issues
from authproxy.oidc.client import basic_credentials
from authproxy.oidc.cognito import AwsIssuer, pool_issuers
from authproxy.oidc.endpoints import for_cognito
from authproxy.oidc.rules import id_token_rules
from authproxy.oidc.verify import TokenInvalid, TokenRules, unverified_issuer, verify_token
from authproxy.policy.allow import AllowRule, email_verified

POOL = "eu-west-1_AbC123"
ORIGINAL = f"https://cognito-idp.eu-west-1.amazonaws.com/{POOL}"
UPDATED = f"https://issuer-cognito-idp.eu-west-1.amazonaws.com/{POOL}"


def cognito(**change):
    return OidcConfig(**{"provider": "cognito", "issuer": ORIGINAL, "cognito_domain": "https://auth.example.com",
                         "client_id": "c", "client_secret": "s", **change})


def test_a_pool_issues_both_forms_and_the_original_in_each_replica_region():
    assert pool_issuers(POOL) == (ORIGINAL, UPDATED)
    assert pool_issuers(POOL, ["us-east-1"])[2] == f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}"
    assert AwsIssuer.parse(UPDATED) == AwsIssuer(POOL, "eu-west-1", True)
    assert AwsIssuer.parse("https://idp.example.com/eu-west-1_AbC123") is None
    with pytest.raises(ValueError):
        pool_issuers("not-a-pool")


@pytest.mark.parametrize("issuer", [ORIGINAL, UPDATED])
def test_an_existing_issuer_config_accepts_every_issuer_of_its_pool(issuer):
    config = cognito(issuer=issuer, cognito_replica_regions=["us-east-1"])
    assert config.issuers[0] == issuer
    assert set(config.issuers) == {ORIGINAL, UPDATED, f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}"}


def test_a_replica_regions_original_issuer_as_the_configured_one():
    replica = f"https://cognito-idp.us-east-1.amazonaws.com/{POOL}"
    assert set(cognito(issuer=replica).issuers) == {replica, ORIGINAL, UPDATED}


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"provider": "generic", "cognito_domain": None}, "provider: cognito"),
        ({"cognito_replica_regions": ["Europe"]}, "region"),
        ({"issuer_aliases": ["https://other/eu-west-1_AbC123"]}, "derived"),
        ({"issuer": "http://127.0.0.1:1/eu-west-1_Dev", "issuer_aliases": ["http://127.0.0.1:2/eu-west-1_Other"]},
         "pool"),
        ({"issuer": "http://127.0.0.1:1/p", "cognito_replica_regions": ["us-east-1"]}, "cognito_replica_regions"),
    ],
)
def test_config_errors_say_what_to_write(settings, words):
    issues = provider_issues(cognito(**settings))
    assert issues and all(issue.path.startswith("oidc.") for issue in issues)
    assert any(words in f"{issue.path}: {issue.message}" for issue in issues), issues


def test_a_development_provider_lists_its_other_form():
    config = cognito(issuer="http://127.0.0.1:1/eu-west-1_Dev", issuer_aliases=["http://127.0.0.1:2/eu-west-1_Dev"])
    assert config.issuers == ("http://127.0.0.1:1/eu-west-1_Dev", "http://127.0.0.1:2/eu-west-1_Dev")
    endpoints = for_cognito(config.issuer, "http://127.0.0.1:3", {}, config.issuers)
    assert endpoints.jwks_uri_for("http://127.0.0.1:2/eu-west-1_Dev") == "http://127.0.0.1:2/eu-west-1_Dev/.well-known/jwks.json"
    assert endpoints.jwks_uri_for("http://127.0.0.1:9/eu-west-1_Dev") is None
    shared = for_cognito(config.issuer, "http://d", {"jwks_uri": "http://k/jwks"}, config.issuers)
    assert {shared.jwks_uri_for(i) for i in config.issuers} == {"http://k/jwks"}


KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)


def signed(claims):
    return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, KEY)


def test_id_token_rules_accept_any_issuer_of_the_pool_and_nothing_else():
    rules = id_token_rules(cognito())
    keys = KeySet([KEY])
    base = {"sub": "u", "aud": "c", "token_use": "id", "iat": 1000, "exp": 5000}
    for iss in (ORIGINAL, UPDATED):
        assert verify_token(signed({**base, "iss": iss}), keys, rules, 1000)["iss"] == iss
    with pytest.raises(TokenInvalid) as caught:
        verify_token(signed({**base, "iss": f"https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other"}), keys, rules, 1000)
    assert caught.value.reason == "wrong_issuer"
    assert unverified_issuer(signed({**base, "iss": UPDATED})) == UPDATED
    assert unverified_issuer("not.a.token") is None


def test_rules_for_one_issuer_widen_to_the_provider_only_when_they_name_it():
    rules = TokenRules(issuer=ORIGINAL)
    assert rules.for_provider((ORIGINAL, UPDATED)).accepts_issuer(UPDATED)
    assert not TokenRules(issuer="https://else").for_provider((ORIGINAL, UPDATED)).accepts_issuer(UPDATED)


def test_basic_credentials_as_cognito_documents_them():
    """Cognito: Basic Base64Encode(client_id:client_secret); RFC 6749 2.3.1 form-urlencodes first."""
    raw = base64.b64decode(basic_credentials("id", "a+b/c=", url_encode=False).removeprefix("Basic ")).decode()
    assert raw == "id:a+b/c="
    encoded = base64.b64decode(basic_credentials("id", "a+b/c=").removeprefix("Basic ")).decode()
    assert encoded == "id:a%2Bb%2Fc%3D"


@pytest.mark.parametrize(
    ("claims", "verified"),
    [({"email_verified": True}, True), ({"email_verified": "true"}, True), ({"email_verified": "True"}, True),
     ({}, False), ({"email_verified": False}, False), ({"email_verified": "false"}, False), ({"email_verified": 1}, False)],
)
def test_email_verified_must_be_true(claims, verified):
    assert email_verified(claims) is verified


def test_email_rules_refuse_an_unverified_or_absent_email_unless_the_route_opts_out():
    federated = {"sub": "x", "email": "carol@example.com"}  # a federated Cognito user: no email_verified
    strict = AllowRule.compile(Allow(email_domains=["example.com"]), "groups")
    assert strict.check(federated).reason == "requires a verified email address"
    assert strict.check({**federated, "email_verified": "true"}) is None
    relaxed = AllowRule.compile(Allow(email_domains=["example.com"], require_verified_email=False), "groups")
    assert relaxed.check(federated) is None
    with pytest.raises(ValidationError, match="emails and email_domains"):
        Allow(groups=["a"], require_verified_email=False)


def test_check_config_warns_where_an_email_rule_meets_a_provider_without_the_claim(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "public_url: https://app.example.com\n"
        "oidc: {issuer: 'https://login.microsoftonline.com/tid/v2.0', client_id: c, client_secret: s}\n"
        "session: {secrets: ['0123456789abcdef0123456789abcdef']}\n"
        "routes:\n"
        "  - {name: mail, upstream: 'http://127.0.0.1:1', auth: login, allow: {email_domains: [example.com]}}\n"
        "  - {name: open-mail, upstream: 'http://127.0.0.1:1', auth: login, match: {path_prefix: /o},\n"
        "     allow: {email_domains: [example.com], require_verified_email: false}}\n"
    )
    result = subprocess.run([sys.executable, "-m", "authproxy", "check-config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "route mail:" in result.stderr and "never sends" in result.stderr
    assert "open-mail" not in result.stderr
