"""Logout tokens (OpenID Connect Back-Channel Logout 1.0, 2.4 and 2.6): what is accepted,
what is refused and why, table-driven over the pure checks after a real signature check."""

from __future__ import annotations

import base64
import json
import math

import pytest
from joserfc import jws
from joserfc.jwk import KeySet, RSAKey

from authproxy.config.schema import OidcConfig
from authproxy.oidc.logout import (
    BACKCHANNEL_LOGOUT_EVENT,
    Logout,
    check_logout_token,
    logout_token_hash,
    logout_token_rules,
    session_hashes,
    sid_hash,
    sub_hash,
)
from authproxy.oidc.verify import DEFAULT_LEEWAY, TokenInvalid, verify_token

ISSUER = "https://op.example.test"
CLIENT = "authproxy"
NOW = 1_800_000_000
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
KEYS = KeySet.import_key_set({"keys": [KEY.as_dict(private=False)]})
RULES = logout_token_rules(OidcConfig(issuer=ISSUER, client_id=CLIENT))


def claims(**changes):
    values = {"iss": ISSUER, "aud": CLIENT, "iat": NOW, "exp": NOW + 120, "jti": "j-1", "sub": "alice",
              "sid": "s-1", "events": {BACKCHANNEL_LOGOUT_EVENT: {}}}
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def sign(payload, header=None, key=KEY):
    protected = {"alg": "RS256", "kid": "k1", **({"typ": "logout+jwt"} if header is None else header)}
    # jws, not jwt.encode: that adds typ "JWT" to a header without one
    return jws.serialize_compact(protected, json.dumps(payload).encode(), key)


def logout_of(token, now=NOW, rules=RULES):
    return check_logout_token(token, verify_token(token, KEYS, rules, now), now, provider=ISSUER)


def test_a_typed_logout_token_names_its_sid_and_sub():
    logout = logout_of(sign(claims()))
    assert (logout.issuer, logout.sid, logout.sub, logout.jti, logout.by) == (ISSUER, "s-1", "alice", "j-1", "sid")
    assert logout.remember_until == NOW + 120 + DEFAULT_LEEWAY  # as long as verify_token would accept it
    assert "alice" not in repr(logout) and "s-1" not in repr(logout)  # identifiers never reach a log


@pytest.mark.parametrize("header", [{}, {"typ": "logout+jwt"}, {"typ": "application/logout+jwt"}, {"typ": "Logout+JWT"}])
def test_typ_where_sent_must_say_logout_jwt(header):
    assert logout_of(sign(claims(), header)).jti == "j-1"  # 2.4: RECOMMENDED, so untyped passes too


@pytest.mark.parametrize("typ", ["JWT", "jwt", "application/jwt", "Application/JWT"])
def test_the_generic_jwt_type_counts_as_untyped(typ):
    """Keycloak before its 2024 fix (keycloak/keycloak#28939) sent typ "JWT" on logout tokens,
    and Nimbus reads "JWT" as no type: such a token is checked like an untyped one (the events
    claim and the absent nonce still keep an ID token out)."""
    assert logout_of(sign(claims(), {"typ": typ})).jti == "j-1"
    with pytest.raises(TokenInvalid) as refused:  # an ID token typed JWT is still no logout token
        logout_of(sign(claims(events=None, nonce="n"), {"typ": typ}))
    assert refused.value.reason == "not_a_logout_token"


def test_sub_alone_ends_every_session_of_the_user():
    logout = logout_of(sign(claims(sid=None)))
    assert (logout.sid, logout.sub, logout.by) == (None, "alice", "sub")


def test_sid_alone_is_enough():
    assert logout_of(sign(claims(sub=None))).by == "sid"


@pytest.mark.parametrize("payload,header,reason", [
    (claims(), {"typ": "at+jwt"}, "wrong_type"),  # 4.1: another kind of JWT, typed as such
    (claims(), {"typ": "application/at+jwt"}, "wrong_type"),
    (claims(), {"typ": "secevent+jwt"}, "wrong_type"),
    (claims(), {"typ": "JWS"}, "wrong_type"),
    (claims(), {"typ": "jwt+logout"}, "wrong_type"),
    (claims(), {"typ": ""}, "wrong_type"),
    (claims(events=None), None, "not_a_logout_token"),  # 2.6 step 6
    (claims(events={"http://schemas.openid.net/event/other": {}}), None, "not_a_logout_token"),
    (claims(events={BACKCHANNEL_LOGOUT_EVENT: "yes"}), None, "not_a_logout_token"),  # the value must be an object
    (claims(events=[BACKCHANNEL_LOGOUT_EVENT]), None, "not_a_logout_token"),  # the 2016 draft's array form
    (claims(nonce="n"), None, "nonce_present"),  # step 7
    (claims(sub=None, sid=None), None, "missing_sub_and_sid"),  # step 5
    (claims(sub=""), None, "malformed_sub"),
    (claims(sid=5), None, "malformed_sid"),
    (claims(jti=None), None, "missing_jti"),  # 2.4: REQUIRED
    (claims(jti=""), None, "malformed_jti"),
    (claims(iat=None), None, "missing_iat"),  # 2.4: REQUIRED
    (claims(iat="now"), None, "malformed_iat"),
    (claims(iat=NOW + 3600), None, "issued_in_the_future"),
])
def test_what_makes_a_token_no_logout_token(payload, header, reason):
    with pytest.raises(TokenInvalid) as refused:
        logout_of(sign(payload, header))
    assert refused.value.reason == reason


@pytest.mark.parametrize("payload,reason", [
    (claims(iss="https://other.example.test"), "wrong_issuer"),  # step 4, as for ID tokens
    (claims(aud="another-client"), "wrong_audience"),
    (claims(aud=[CLIENT, "another-client"]), "wrong_authorized_party"),  # several audiences: azp must be us
    (claims(exp=None), "missing_exp"),  # REQUIRED since the 2022 final text
    (claims(exp=NOW - DEFAULT_LEEWAY), "expired"),
])
def test_wrongly_addressed_or_expired_tokens_fail_the_signature_and_claims_check(payload, reason):
    with pytest.raises(TokenInvalid) as refused:
        logout_of(sign(payload))
    assert refused.value.reason == reason


@pytest.mark.parametrize("name,value,reason", [
    ("exp", math.nan, "malformed_exp"),
    ("exp", math.inf, "malformed_exp"),  # math.ceil(inf) would raise OverflowError
    ("exp", -math.inf, "malformed_exp"),
    ("exp", "soon", "malformed_exp"),
    ("exp", None, "missing_exp"),
    ("iat", math.nan, "malformed_iat"),  # NaN > now is False: it would pass as "not in the future"
    ("iat", -math.inf, "malformed_iat"),
    ("iat", math.inf, "malformed_iat"),
    ("iat", True, "malformed_iat"),
])
def test_times_must_be_finite_numbers(name, value, reason):
    """Python's json takes NaN and Infinity: this module's own checks refuse them, whatever
    the signature check (verify_token) let through before them."""
    token = sign(claims())
    with pytest.raises(TokenInvalid) as refused:
        check_logout_token(token, claims(**{name: value}) if value is not None else
                           {key: item for key, item in claims().items() if key != name}, NOW, provider=ISSUER)
    assert refused.value.reason == reason


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_signed_token_with_a_non_finite_exp_is_refused_not_a_crash(literal):
    payload = json.dumps(claims(exp=1)).replace('"exp": 1', f'"exp": {literal}')
    token = jws.serialize_compact({"alg": "RS256", "kid": "k1", "typ": "logout+jwt"}, payload.encode(), KEY)
    with pytest.raises(TokenInvalid):  # whichever check finds it first; never an OverflowError or a pass
        logout_of(token)


def test_a_large_integer_time_is_finite():
    assert check_logout_token(sign(claims()), claims(exp=10**20), NOW, provider=ISSUER).remember_until == \
        10**20 + DEFAULT_LEEWAY


def test_the_logout_is_named_by_the_providers_issuer_whichever_issued_it():
    """A provider with several issuers (Cognito's replica regions, issuer_aliases) has one
    sid/sub namespace: a logout token from its alias finds the sessions whose ID token came
    from its canonical issuer, and the other way round."""
    alias = "https://alias.example.test"
    rules = logout_token_rules(OidcConfig(provider="cognito", issuer=ISSUER, issuer_aliases=[alias], client_id=CLIENT))
    logout = logout_of(sign(claims(iss=alias)), rules=rules)
    assert logout.issuer == ISSUER
    assert (sid_hash(logout.issuer, logout.sid), sub_hash(logout.issuer, logout.sub)) == \
        session_hashes(ISSUER, {"iss": ISSUER, "sub": "alice", "sid": "s-1"}) == \
        session_hashes(ISSUER, {"iss": alias, "sub": "alice", "sid": "s-1"})
    assert logout.token_hash == logout_of(sign(claims()), rules=rules).token_hash  # one jti namespace too
    with pytest.raises(TokenInvalid) as refused:  # an issuer that is not the provider's is still refused
        logout_of(sign(claims(iss="https://other.example.test")), rules=rules)
    assert refused.value.reason == "wrong_issuer"


def test_several_audiences_with_our_azp_pass():
    assert logout_of(sign(claims(aud=[CLIENT, "another-client"], azp=CLIENT))).jti == "j-1"


def test_unsigned_and_foreign_keys_are_refused():
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "logout+jwt"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenInvalid) as refused:
        logout_of(f"{header}.{body}.")  # alg none (RFC 8725 2.1)
    assert refused.value.reason == "unacceptable_algorithm_or_key"
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k1"}, private=True)
    with pytest.raises(TokenInvalid) as refused:
        logout_of(sign(claims(), key=stranger))
    assert refused.value.reason == "bad_signature"


def test_hashes_are_per_kind_and_issuer_and_hide_the_values():
    assert sid_hash(ISSUER, "x") != sub_hash(ISSUER, "x") != logout_token_hash(ISSUER, "x")
    assert sid_hash(ISSUER, "x") != sid_hash("https://other.example.test", "x")
    assert sid_hash(ISSUER, "a\",\"b") != sid_hash(ISSUER + "\",\"a", "b")  # parts cannot run into each other
    digest = sub_hash(ISSUER, "alice")
    assert len(digest) == 64 and "alice" not in digest
    assert Logout(ISSUER, "alice", None, "j", 0).token_hash == logout_token_hash(ISSUER, "j")


def test_session_hashes_from_id_token_claims():
    assert session_hashes(ISSUER, {"iss": ISSUER, "sub": "alice", "sid": "s-1"}) == \
        (sid_hash(ISSUER, "s-1"), sub_hash(ISSUER, "alice"))
    assert session_hashes(ISSUER, {"iss": ISSUER, "sub": "alice"}) == ("", sub_hash(ISSUER, "alice"))  # no sid: Cognito
    assert session_hashes(ISSUER, {"sub": ""}) == ("", "")
    assert session_hashes("", {"iss": ISSUER, "sub": "alice"}) == ("", "")
