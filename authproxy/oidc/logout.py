"""Logout tokens of OpenID Connect Back-Channel Logout 1.0, and the hashes that find a
logout's sessions in the store.

Pure, like oidc/verify.py, whose signature and registered-claim checks come first
(section 2.6 steps 2-4: "in the same way as an ID token": the provider's JWKS, asymmetric
algorithms only, ``iss``, ``aud``, ``exp``); this module adds what makes a JWT a logout
token (steps 5-7, and ``iat`` and ``jti``, which section 2.4 requires) and turns it into
a ``Logout``. The replay check of step 8 needs the shared store (web/backchannel.py).

The lookups never use a ``sid``, a ``sub`` or a ``jti`` as such: the store indexes only
SHA-256 of the provider and the value (``sid_hash``, ``sub_hash``, ``logout_token_hash``), so
its indexes and the logout-token records tell neither, and sessions of two providers never
meet. (A session item also keeps the user's plain ``sub`` attribute, as before this feature;
the provider's session ids and the tokens' ``jti`` are never stored in the clear.)

The provider in those hashes is its configured, canonical issuer (``oidc.issuer``), not the
``iss`` of one token: a provider with several issuers (``issuer_aliases``, a Cognito pool's
replica regions) shares one sid/sub namespace across them, so an ID token from one of its
issuers and a logout token from another still name the same sessions. Each token's own
``iss`` is checked against the provider's accepted issuers during verification.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authproxy.config.schema import OidcConfig
from authproxy.oidc.verify import DEFAULT_LEEWAY, TokenInvalid, TokenRules, decode_header

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"  # section 2.4
LOGOUT_TOKEN_TYPE = "logout+jwt"  # section 2.4: the explicit JOSE type (RFC 8725 3.11)
# "typ" values that type nothing: the generic JWT media type (RFC 7519 5.1). Keycloak before
# its 2024 fix (keycloak/keycloak#28939) sent "typ": "JWT" on logout tokens, and Nimbus
# treats "JWT" as untyped; such a token is checked like one without "typ".
_UNTYPED = frozenset({"jwt", "application/jwt"})
MAX_LOGOUT_TOKEN_LENGTH = 16 * 1024  # characters; a logout token is a few hundred


@dataclass(frozen=True, slots=True)
class Logout:
    """A verified logout token: end the sessions of ``sid`` (when given, and of ``sub`` too
    when both are), else every session of ``sub`` (section 2.7), and remember ``jti`` until
    ``remember_until``. ``issuer``: the provider's configured issuer (the hashes' namespace),
    whichever of its issuers signed the token."""

    issuer: str
    sub: str | None
    sid: str | None
    jti: str
    remember_until: int  # epoch seconds: exp plus the leeway it was accepted with

    def __repr__(self) -> str:  # identifiers never reach a log through a repr
        return f"Logout(by={'sid' if self.sid else 'sub'})"

    @property
    def by(self) -> str:
        """"sid" or "sub": how the sessions are found (a log and metric label)."""
        return "sid" if self.sid is not None else "sub"

    @property
    def token_hash(self) -> str:
        return logout_token_hash(self.issuer, self.jti)


def logout_token_rules(oidc: OidcConfig) -> TokenRules:
    """What the signature check enforces (section 2.6 step 4): our client in ``aud`` (and
    ``azp`` when several audiences), an issuer of the provider, ``exp``. Not ``id_token``:
    a logout token may carry ``sid`` without ``sub``; ``iat`` is checked below."""
    return TokenRules(
        issuer=oidc.issuer,
        issuers=frozenset(oidc.issuers),
        audiences=frozenset({oidc.client_id}),
        authorized_party=oidc.client_id,
    )


def check_logout_token(token: str, claims: Mapping[str, Any], now: int, *, provider: str,
                       leeway: int = DEFAULT_LEEWAY) -> Logout:
    """The logout in ``token``, whose signature and registered claims ``verify_token``
    accepted as ``claims`` (``iss`` among the provider's issuers); raises ``TokenInvalid``
    with a short reason otherwise. ``provider``: the configured ``oidc.issuer``, the
    namespace the logout's hashes are taken in (as the sessions' were)."""
    typ = decode_header(token).get("typ")  # authenticated by the signature check
    # Section 2.4 recommends the explicit type, and 4.1 (cross-JWT confusion) is why: a
    # provider that types its logout tokens can have no other JWT taken for one. Where
    # "typ" is sent it must say so (case-insensitively, with or without "application/",
    # RFC 7515 4.1.9), unless it is the generic "JWT", which types nothing (_UNTYPED). An
    # untyped token still passes by the events and nonce rules below, which no ID token or
    # access token meets.
    if typ is not None and (not isinstance(typ, str) or (
            typ.lower() not in _UNTYPED and typ.lower().removeprefix("application/") != LOGOUT_TOKEN_TYPE)):
        raise TokenInvalid("wrong_type", f"typ must be {LOGOUT_TOKEN_TYPE}")
    issued = claims.get("iat")  # section 2.4: REQUIRED
    if not _finite(issued):  # Python's json takes NaN and Infinity, which compare as nothing should
        raise TokenInvalid("missing_iat" if issued is None else "malformed_iat")
    if issued > now + leeway:
        raise TokenInvalid("issued_in_the_future")
    expires = claims.get("exp")  # verify_token required it; a NaN or an Infinity is refused here too
    if not _finite(expires):
        raise TokenInvalid("missing_exp" if expires is None else "malformed_exp")
    events = claims.get("events")  # step 6: a JSON object with the logout event, whose value is an object
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise TokenInvalid("not_a_logout_token", "no back-channel logout event")
    if "nonce" in claims:  # step 7: prohibited, so a logout token can never pass as an ID token
        raise TokenInvalid("nonce_present")
    sub, sid = claims.get("sub"), claims.get("sid")
    for name, value in (("sub", sub), ("sid", sid)):
        if value is not None and (not isinstance(value, str) or not value):
            raise TokenInvalid(f"malformed_{name}")
    if sub is None and sid is None:  # step 5
        raise TokenInvalid("missing_sub_and_sid")
    jti = claims.get("jti")  # section 2.4: REQUIRED, what step 8's replay check keys on
    if not isinstance(jti, str) or not jti:
        raise TokenInvalid("missing_jti" if jti is None else "malformed_jti")
    # verify_token accepts it while now < exp + leeway: remembered that long, a replay fails
    # here, and after that it fails as expired.
    until = math.ceil(expires) + leeway
    return Logout(issuer=provider, sub=sub, sid=sid, jti=jti, remember_until=until)


def _finite(value: Any) -> bool:
    """A JSON number that is a real one: not a bool, not NaN or an Infinity. (An int is
    finite whatever its size; math.isfinite would overflow converting a huge one.)"""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def sid_hash(issuer: str, sid: str) -> str:
    return _hash("sid", issuer, sid)


def sub_hash(issuer: str, sub: str) -> str:
    return _hash("sub", issuer, sub)


def logout_token_hash(issuer: str, jti: str) -> str:
    return _hash("jti", issuer, jti)


def session_hashes(provider: str, claims: Mapping[str, Any]) -> tuple[str, str]:
    """(sid_hash, sub_hash) of a session from its verified ID token's claims, in the
    namespace of ``provider`` (the configured ``oidc.issuer``, whichever of its issuers
    issued the token); "" where the token has no such claim (a provider without back-channel
    logout sends no sid)."""
    sid, sub = claims.get("sid"), claims.get("sub")
    if not provider:
        return "", ""
    return (sid_hash(provider, sid) if isinstance(sid, str) and sid else "",
            sub_hash(provider, sub) if isinstance(sub, str) and sub else "")


def _hash(kind: str, issuer: str, value: str) -> str:
    # A JSON array keeps the parts apart whatever characters they hold.
    return hashlib.sha256(json.dumps(["authproxy", kind, issuer, value]).encode()).hexdigest()
