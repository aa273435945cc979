"""verify_token on hostile tokens: whatever the header and payload, the outcome is a
``TokenInvalid`` (a 401) or claims that meet every rule, never another exception (a 500)."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given
from hypothesis import strategies as st
from joserfc.jwk import KeySet, RSAKey

from authproxy.oidc.verify import TokenInvalid, TokenRules, verify_token

NOW = 1_800_000_000
ISSUER = "https://idp.example.test"
PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_JWK = RSAKey.import_key(PRIVATE.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo),
                               parameters={"kid": "k1"})
KEYS = KeySet([PUBLIC_JWK])
RULES = TokenRules(issuer=ISSUER, audiences=frozenset({"api"}), token_type="at+jwt")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
header_keys = st.sampled_from(["alg", "kid", "typ", "crit", "cty", "jku", "jwk", "x5u", "x5c", "b64", "zip", "enc"])
plausible_header = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "none", "HS256", "ES256"]) | json_values,
     "kid": st.just("k1") | json_values, "typ": st.just("at+jwt") | json_values},
    optional={"crit": json_values | st.lists(st.text(max_size=5), max_size=3)},
)
headers = plausible_header | st.dictionaries(header_keys | st.text(max_size=6), json_values, max_size=6) | json_values
claim_values = {
    "iss": st.just(ISSUER) | json_values, "aud": st.just("api") | st.just(["api", "x"]) | json_values,
    "exp": st.just(NOW + 60) | json_values, "nbf": json_values, "iat": json_values, "sub": json_values,
    "azp": json_values, "client_id": json_values, "token_use": json_values, "nonce": json_values,
}
payloads = st.fixed_dictionaries({}, optional=claim_values) | json_values


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_of(header: object, payload: object, signed: bool, junk: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    if signed:  # a real RS256 signature, so the claims checks are reached too
        signature = PRIVATE.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = junk
    return f"{signing_input}.{b64(signature)}"


@given(headers, payloads, st.booleans(), st.binary(max_size=300))
def test_any_token_is_invalid_or_fully_verified(header, payload, signed, junk):
    token = token_of(header, payload, signed, junk)
    try:
        claims = verify_token(token, KEYS, RULES, NOW)
    except TokenInvalid:
        return
    # accepted: then every rule held
    assert isinstance(header, dict) and header["alg"] == "RS256" and "crit" not in header
    assert claims["iss"] == ISSUER and NOW < claims["exp"] + RULES.leeway
    audience = claims["aud"]
    assert audience == "api" or "api" in audience


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")))
def test_any_string_is_invalid(text):
    try:
        verify_token(text, KEYS, RULES, NOW)
    except TokenInvalid:
        return
    raise AssertionError("an arbitrary string verified")
