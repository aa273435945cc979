"""Verification of ID tokens and JWT access tokens (OIDC Core 3.1.3.7, RFC 9068, RFC 8725).

Pure: keys, rules and the clock come in; verified claims or a ``TokenInvalid`` with a
short reason go out. Signatures are checked by joserfc against the provider's JWKS
with an allowlist of asymmetric algorithms, so neither "none" nor an HMAC keyed with
a public key (RFC 8725 2.1, 3.1) can pass.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, DecodeError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from authproxy.errors import TokenInvalid, UnknownSigningKey  # noqa: F401 - re-exported

# Asymmetric algorithms only (RFC 8725 3.1); Cognito signs with RS256.
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
DEFAULT_LEEWAY = 60  # seconds of clock skew tolerated on exp, iat and nbf


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What a token must say to be accepted."""

    issuer: str
    audiences: frozenset[str] | None = None  # "aud" must hold one of these (ID tokens: our client_id)
    authorized_party: str | None = None  # "azp" must equal this when "aud" has several values
    client_ids: frozenset[str] | None = None  # Cognito access tokens carry "client_id", not "aud"
    token_use: str | None = None  # Cognito: "id" or "access"
    token_type: str | None = None  # JOSE "typ", e.g. "at+jwt" (RFC 9068 2.1)
    nonce: str | None = None  # the sign-in transaction's nonce (ID tokens)
    id_token: bool = False  # OIDC Core 2: an ID token must carry a non-empty sub and iat
    leeway: int = DEFAULT_LEEWAY
    algorithms: Collection[str] = ALLOWED_ALGORITHMS
    # Further issuers of the same provider: a Cognito user pool issues under several
    # (see oidc.cognito). "iss" must be ``issuer`` or one of these, exactly.
    issuers: frozenset[str] = frozenset()

    def accepts_issuer(self, iss: object) -> bool:
        return isinstance(iss, str) and (iss == self.issuer or iss in self.issuers)

    def for_provider(self, issuers: Collection[str]) -> TokenRules:
        """These rules widened to every issuer of the provider when they name one of them:
        rules written for "this provider" (by its configured issuer) accept any issuer of
        it, and rules naming some other issuer stay as they are."""
        if self.issuer not in issuers or all(each == self.issuer or each in self.issuers for each in issuers):
            return self  # another provider's rules, or already wide enough (one issuer: always)
        return replace(self, issuers=self.issuers | frozenset(issuers))


class KeyNotInJwks(TokenInvalid):
    """No key of the issuer's JWKS matches the token's kid, even after refetching it: the
    token was not signed by this provider (a definite failure, unlike ``UnknownSigningKey``,
    which may still be a key the provider has just started to use)."""

    def __init__(self, detail: str = ""):
        super().__init__("unknown_key", detail)


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` a token claims, read before its signature is checked, only to choose the
    issuer's keys (Cognito: one JWKS per issuer). None when the token has no readable
    string ``iss``; the signature and claims checks decide everything else."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error, RecursionError):
        return None
    iss = payload.get("iss") if isinstance(payload, dict) else None
    return iss if isinstance(iss, str) else None


def decode_header(token: str) -> dict[str, Any]:
    """The JWS protected header as a JSON object (RFC 7515 5.2 steps 2-4), unchecked."""
    encoded = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise TokenInvalid("malformed") from None
    if not isinstance(header, dict):
        raise TokenInvalid("malformed")
    return header


def check_header(token: str, algorithms: Collection[str]) -> dict[str, Any]:
    """The protected header's shape, before any library reads it: a JSON object whose
    ``alg`` is one we accept and whose ``kid`` and ``typ`` are strings when present, and
    no ``crit`` at all: we understand no JWS extension, so RFC 7515 4.1.11 requires us to
    refuse any token that marks one critical (and a library given a malformed ``crit``
    may fail in ways it does not report as a bad token)."""
    if token.count(".") != 2:
        raise TokenInvalid("malformed")
    header = decode_header(token)
    if "crit" in header:
        raise TokenInvalid("unsupported_critical_header")
    if not isinstance(header.get("alg"), str) or header["alg"] not in algorithms:
        raise TokenInvalid("unacceptable_algorithm_or_key")
    for name in ("kid", "typ"):
        if name in header and not isinstance(header[name], str):
            raise TokenInvalid("malformed_header", f"{name} must be a string")
    return header


def verify_token(token: str, keys: KeySet, rules: TokenRules, now: int) -> dict[str, Any]:
    """The verified claims of ``token``; raises ``TokenInvalid`` (or ``UnknownSigningKey``),
    and nothing else, however the token is malformed: anything a client sends is at worst
    an invalid token (401), never a 500. Fetching keys happens elsewhere, so a provider
    outage is never mistaken for a bad token."""
    check_header(token, rules.algorithms)
    try:
        return _verify(token, keys, rules, now)
    except TokenInvalid:
        raise
    except Exception as exc:  # noqa: BLE001 - a library's surprise about hostile input is a bad token
        raise TokenInvalid("malformed", type(exc).__name__) from None


def _verify(token: str, keys: KeySet, rules: TokenRules, now: int) -> dict[str, Any]:
    try:
        decoded = jwt.decode(token, keys, algorithms=list(rules.algorithms))
    except InvalidKeyIdError:
        raise UnknownSigningKey("unknown_key", "no JWKS key matches the token's kid") from None
    except BadSignatureError:
        raise TokenInvalid("bad_signature") from None
    except DecodeError:
        raise TokenInvalid("malformed") from None
    except JoseError as exc:  # algorithm not allowed, key type mismatch, ...
        raise TokenInvalid("unacceptable_algorithm_or_key", exc.error) from None
    except ValueError:
        raise TokenInvalid("malformed") from None
    header, claims = decoded.header, decoded.claims
    if header.get("alg") not in rules.algorithms:
        raise TokenInvalid("unacceptable_algorithm_or_key")
    if rules.token_type is not None and str(header.get("typ", "")).lower() not in (
        rules.token_type,
        f"application/{rules.token_type}",
    ):
        raise TokenInvalid("wrong_type", f"typ must be {rules.token_type}")
    try:
        check_claims(claims, rules, now)
    except (TypeError, ValueError, OverflowError):  # signed, but claims of the wrong shape (aud: 5, client_id: [..])
        raise TokenInvalid("malformed_claims") from None
    return dict(claims)


def check_claims(claims: Mapping[str, Any], rules: TokenRules, now: int) -> None:
    """The registered-claim rules, in the order OIDC Core 3.1.3.7 lists them."""
    if not rules.accepts_issuer(claims.get("iss")):
        raise TokenInvalid("wrong_issuer")
    if rules.audiences is not None:
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if not rules.audiences.intersection(audiences):
            raise TokenInvalid("wrong_audience")
        if len(audiences) > 1 and rules.authorized_party is not None and claims.get("azp") != rules.authorized_party:
            raise TokenInvalid("wrong_authorized_party")
    if rules.client_ids is not None and claims.get("client_id") not in rules.client_ids:
        raise TokenInvalid("wrong_client")
    if rules.token_use is not None and claims.get("token_use") != rules.token_use:
        raise TokenInvalid("wrong_token_use")
    check_times(claims, rules, now)
    if rules.id_token and (not isinstance(claims.get("sub"), str) or not claims["sub"]):
        raise TokenInvalid("missing_sub")
    if rules.id_token:
        _number(claims, "iat", required=True)  # OIDC Core 2: an ID token carries iat
    if rules.nonce is not None and claims.get("nonce") != rules.nonce:
        raise TokenInvalid("wrong_nonce")


def check_times(claims: Mapping[str, Any], rules: TokenRules, now: int) -> None:
    """The claims whose verdict changes with the clock: ``exp`` (RFC 7519 4.1.4), ``iat``
    not in the future, ``nbf`` (4.1.5), each with ``rules.leeway`` of skew. Split out so a
    token verified earlier (its signature and fixed claims already checked, see
    ``oidc.token_cache``) is still held to them at every use."""
    expires = _number(claims, "exp", required=True)
    if now >= expires + rules.leeway:
        raise TokenInvalid("expired")
    issued = _number(claims, "iat", required=False)
    if issued is not None and issued > now + rules.leeway:
        raise TokenInvalid("issued_in_the_future")
    not_before = _number(claims, "nbf", required=False)
    if not_before is not None and not_before > now + rules.leeway:
        raise TokenInvalid("not_yet_valid")


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    """A NumericDate claim (RFC 7519 2) as a finite float; ``malformed_{name}`` otherwise.
    Python's json reads ``NaN`` and ``Infinity``, which are no dates: an ``exp`` of NaN
    would never expire (every comparison with it is false) and one of Infinity would
    outlive any bound, so both are refused here, as is an integer too large for a float."""
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenInvalid(f"missing_{name}")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenInvalid(f"malformed_{name}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        raise TokenInvalid(f"malformed_{name}") from None
    if not math.isfinite(number):
        raise TokenInvalid(f"malformed_{name}")
    return number
