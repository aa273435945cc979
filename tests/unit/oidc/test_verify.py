"""Token verification: each rule of OIDC Core 3.1.3.7 / RFC 8725 as a rejection case.

Tokens here come from an in-process signer because real providers will not mint the
broken shapes; real providers' tokens are verified in the integration tests.
"""

import base64
import hashlib
import hmac
import json

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from authproxy.oidc.verify import TokenInvalid, TokenRules, UnknownSigningKey, verify_token

NOW = 1_800_000_000
ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
SIGNING = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
OTHER = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)  # same kid, different key
EC = ECKey.generate_key("P-256", parameters={"kid": "e1"}, private=True)
JWKS = KeySet.import_key_set({"keys": [SIGNING.as_dict(private=False), EC.as_dict(private=False)]})
ID_RULES = TokenRules(issuer=ISSUER, audiences=frozenset({"client-1"}), authorized_party="client-1", token_use="id", nonce="n-1")
ACCESS_RULES = TokenRules(issuer=ISSUER, client_ids=frozenset({"client-1"}), token_use="access")


def id_claims(**changes):
    claims = {"iss": ISSUER, "aud": "client-1", "sub": "u1", "token_use": "id", "nonce": "n-1",
              "iat": NOW - 10, "exp": NOW + 3600, "email": "a@example.com"}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def sign(claims, key=SIGNING, header=None):
    return jwt.encode(header or {"alg": "RS256", "kid": key.kid}, claims, key)


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_id_token():
    claims = verify_token(sign(id_claims()), JWKS, ID_RULES, NOW)
    assert claims["sub"] == "u1" and claims["email"] == "a@example.com"


def test_valid_cognito_access_token_without_aud():
    token = sign({"iss": ISSUER, "client_id": "client-1", "token_use": "access", "exp": NOW + 60, "scope": "openid"})
    assert verify_token(token, JWKS, ACCESS_RULES, NOW)["client_id"] == "client-1"


def test_ec_key():
    assert verify_token(sign(id_claims(), EC, {"alg": "ES256", "kid": "e1"}), JWKS, ID_RULES, NOW)["sub"] == "u1"


def test_leeway():
    assert verify_token(sign(id_claims(exp=NOW - 30)), JWKS, ID_RULES, NOW)
    assert verify_token(sign(id_claims(iat=NOW + 30, nbf=NOW + 30)), JWKS, ID_RULES, NOW)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        (id_claims(iss="https://evil.example"), "wrong_issuer"),
        (id_claims(iss=ISSUER + "/"), "wrong_issuer"),  # exact match, not a prefix
        (id_claims(aud="client-2"), "wrong_audience"),
        (id_claims(aud=["client-2", "client-3"]), "wrong_audience"),
        (id_claims(aud=["client-1", "client-2"]), "wrong_authorized_party"),
        (id_claims(aud=["client-1", "client-2"], azp="client-2"), "wrong_authorized_party"),
        (id_claims(exp=NOW - 61), "expired"),
        (id_claims(exp=None), "missing_exp"),
        (id_claims(exp="soon"), "malformed_exp"),
        (id_claims(iat=NOW + 120), "issued_in_the_future"),
        (id_claims(nbf=NOW + 120), "not_yet_valid"),
        (id_claims(nonce="n-2"), "wrong_nonce"),
        (id_claims(nonce=None), "wrong_nonce"),
        (id_claims(token_use="access"), "wrong_token_use"),
    ],
)
def test_claim_rejections(claims, reason):
    with pytest.raises(TokenInvalid) as caught:
        verify_token(sign(claims), JWKS, ID_RULES, NOW)
    assert caught.value.reason == reason


@pytest.mark.parametrize(("claims", "reason"), [(id_claims(sub=None), "missing_sub"), (id_claims(sub=""), "missing_sub"),
                                                (id_claims(iat=None), "missing_iat")])
def test_id_tokens_need_sub_and_iat(claims, reason):
    rules = TokenRules(issuer=ISSUER, audiences=frozenset({"client-1"}), id_token=True)
    with pytest.raises(TokenInvalid) as caught:
        verify_token(sign(claims), JWKS, rules, NOW)
    assert caught.value.reason == reason


def test_azp_with_several_audiences_when_right():
    assert verify_token(sign(id_claims(aud=["client-1", "client-2"], azp="client-1")), JWKS, ID_RULES, NOW)


def test_access_token_for_another_client():
    token = sign({"iss": ISSUER, "client_id": "client-9", "token_use": "access", "exp": NOW + 60})
    with pytest.raises(TokenInvalid) as caught:
        verify_token(token, JWKS, ACCESS_RULES, NOW)
    assert caught.value.reason == "wrong_client"


def test_id_token_is_not_an_access_token():
    with pytest.raises(TokenInvalid) as caught:
        verify_token(sign(id_claims()), JWKS, TokenRules(issuer=ISSUER, audiences=frozenset({"client-1"}), token_type="at+jwt"), NOW)
    assert caught.value.reason == "wrong_type"
    at = sign(id_claims(), header={"alg": "RS256", "kid": "k1", "typ": "at+jwt"})
    assert verify_token(at, JWKS, TokenRules(issuer=ISSUER, audiences=frozenset({"client-1"}), token_type="at+jwt"), NOW)


def test_alg_none_rejected():
    token = f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(id_claims())}."
    with pytest.raises(TokenInvalid):
        verify_token(token, JWKS, ID_RULES, NOW)


def test_hs256_signed_with_the_public_key_rejected():
    # The classic confusion attack: an HMAC keyed with the provider's public key, which
    # anyone can fetch. joserfc refuses to build such a key, so the token is made by hand.
    signing_input = f"{b64({'alg': 'HS256', 'kid': 'k1'})}.{b64(id_claims())}"
    mac = hmac.new(SIGNING.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid) as caught:
        verify_token(token, JWKS, ID_RULES, NOW)
    assert caught.value.reason == "unacceptable_algorithm_or_key"


def test_wrong_key_same_kid_is_bad_signature():
    with pytest.raises(TokenInvalid) as caught:
        verify_token(sign(id_claims(), OTHER), JWKS, ID_RULES, NOW)
    assert caught.value.reason == "bad_signature"


def test_unknown_kid_asks_for_a_jwks_refresh():
    stranger = RSAKey.generate_key(2048, parameters={"kid": "new"}, private=True)
    with pytest.raises(UnknownSigningKey):
        verify_token(sign(id_claims(), stranger), JWKS, ID_RULES, NOW)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "....", sign(id_claims())[:-10]])
def test_malformed(token):
    with pytest.raises(TokenInvalid):
        verify_token(token, JWKS, ID_RULES, NOW)


@pytest.mark.parametrize(
    "changes",
    [{"aud": 5}, {"aud": [["authproxy"]]}, {"client_id": ["a", "b"]}, {"exp": 10**400}, {"nbf": {"a": 1}}],
)
def test_signed_claims_of_the_wrong_shape_are_refused_not_crashed(changes):
    rules = TokenRules(issuer=ISSUER, audiences=frozenset({"client-1"}), client_ids=frozenset({"client-1"}))
    claims = {**id_claims(client_id="client-1"), **changes}
    with pytest.raises(TokenInvalid):
        verify_token(sign(claims), JWKS, rules, NOW)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": float("nan")}, "malformed_exp"),  # would never expire: every comparison with NaN is false
        ({"exp": float("inf")}, "malformed_exp"),  # would outlive any bound (and math.ceil(inf) raises)
        ({"exp": float("-inf")}, "malformed_exp"),
        ({"exp": 10**400}, "malformed_exp"),  # no float holds it
        ({"nbf": float("nan")}, "malformed_nbf"),
        ({"nbf": float("-inf")}, "malformed_nbf"),
        ({"iat": float("nan")}, "malformed_iat"),
        ({"iat": float("-inf")}, "malformed_iat"),
    ],
)
def test_time_claims_must_be_finite_numbers(changes, reason):
    claims = {**id_claims(), **changes}
    token = sign(claims)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))  # Python reads NaN and Infinity
    assert payload.keys() >= changes.keys()
    with pytest.raises(TokenInvalid) as caught:
        verify_token(token, JWKS, ID_RULES, NOW)
    assert caught.value.reason == reason
